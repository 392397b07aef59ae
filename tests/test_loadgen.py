"""MLPerf LoadGen as the engine of the scenarios (bench/measure/loadgen.py): each scenario on a tiny model with
shortened settings, accuracy mode checked against predict, the server search (its rules on made-up trials, and a
runtime that cannot meet the bound at any rate, said and not a crash), LoadGen's logs kept beside the results
file, the settings built from bench/settings.py, compare and summary of the new records, and a bench without
LoadGen installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.measure.cases import discover, load_test_split
from bench.measure.core import measure
from bench.measure.loadgen import Engine, import_loadgen
from bench.measure.server import MAX_HALVINGS, BudgetTooShort, search
from bench.results.record import SCHEMA_VERSION, BenchRecord, BenchRun, SchemaError, ServerTrial
from bench.results.store import load, loadgen_folder
from bench.results.summary import latest_records, summary
from bench.runtimes.base import Case
from bench.runtimes.ort import OrtSUT
from bench.settings import LoadGenSettings, RunSettings
from bench.runtimes.trivial import trivial_onnx
from tiny import Constant, held_out_split, run_python
from trainer.artifacts import Artifacts

REPO = Path(__file__).resolve().parents[1]
# Shortened LoadGen settings: tenths of a second per test, a few seconds for the server search.
SHORT = ["--min-duration", "0.2", "--min-queries", "100", "--server-search-s", "8", "--memory", "off", "--rounds", "1",
         "--batch-sizes", "32", "--quiet"]


@pytest.fixture(scope="module")
def every_scenario(tiny_export: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``fmnist-bench run`` of every LoadGen scenario (and predict, to check accuracy mode against) on the
    tiny model's fp32 file, onnxruntime CPU; its results file."""
    report_dir = tmp_path_factory.mktemp("every-scenario")
    assert main(["run", "--artifacts", str(tiny_export.root), "--report-dir", str(report_dir), "--providers", "cpu",
                 "--variants", "fp32", "--operations", "predict,single-stream,multi-stream,server,offline,accuracy",
                 "--latency-bound-ms", "100", *SHORT]) == 0
    (path,) = report_dir.glob("bench-*.json")
    return path


def _by_operation(path: Path) -> dict[str, BenchRecord]:
    report = load(path)
    assert report.schema_version == SCHEMA_VERSION == 3
    return {r.operation: r for r in report.records}


@pytest.mark.slow
def test_single_stream_and_multi_stream_are_loadgens(every_scenario: Path):
    records = _by_operation(every_scenario)
    single, multi = records["single-stream"], records["multi-stream"]
    assert single.loadgen["scenario"] == "SingleStream" and single.loadgen["result"] == "VALID"
    assert single.batch_size == single.images == 1 and single.rounds == len(single.times_s) == single.loadgen["queries"] >= 100
    for key in ("p50", "p90", "p99"):
        assert single.latency_ms[key] == pytest.approx(single.loadgen["latency_ms"][key], rel=1e-12)
    assert single.loadgen["early_stopping_ms"] > 0 and single.loadgen["noop_latency_ms"]["p50"] > 0
    # MultiStream: 8 samples a query, at least the 662 queries its p99 early stopping needs; figures per query.
    assert multi.loadgen["scenario"] == "MultiStream" and multi.batch_size == multi.images == multi.loadgen["samples_per_query"] == 8
    assert multi.loadgen["queries"] == len(multi.times_s) >= 662 and multi.loadgen["result"] == "VALID"
    assert multi.latency_ms["p99"] == pytest.approx(multi.loadgen["latency_ms"]["p99"], rel=1e-12)
    assert multi.throughput_ips == pytest.approx(8 / multi.median_s)


@pytest.mark.slow
def test_offline_sends_every_sample_in_the_runtimes_batches(every_scenario: Path):
    offline = _by_operation(every_scenario)["offline"]
    lg = offline.loadgen
    assert lg["scenario"] == "Offline" and lg["queries"] == 1 and lg["samples_per_query"] >= 100  # the whole split, or more
    assert lg["result"] == "VALID" and offline.batch_size == offline.images == 32
    assert offline.throughput_ips == lg["samples_per_s"] > 0
    assert len(offline.times_s) == offline.rounds >= lg["samples_per_query"] // 32  # one time per batch


@pytest.mark.slow
def test_accuracy_mode_gives_the_accuracy_predict_gives(every_scenario: Path):
    records = _by_operation(every_scenario)
    accuracy, predict = records["accuracy"], records["predict"]
    assert accuracy.loadgen["mode"] == "AccuracyOnly" and accuracy.loadgen["result"] == ""
    assert accuracy.quality["accuracy"] == accuracy.loadgen["accuracy"] == accuracy.loadgen["predict_accuracy"]
    assert accuracy.quality["accuracy"] == predict.quality["accuracy"]
    assert accuracy.quality["confusion_matrix"] == predict.quality["confusion_matrix"]


def test_accuracy_mode_logs_the_runtimes_real_outputs(tiny_export: Artifacts):
    (case,) = discover(tiny_export, variants=["fp32"], providers=["cpu"])
    sut, split = OrtSUT(case.path), load_test_split(tiny_export, "model1")
    run = Engine(LoadGenSettings(min_duration_s=0)).accuracy(sut, split, 16, "accuracy")
    np.testing.assert_allclose(run.outputs, sut.predict(split.x, 16), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_the_server_search_finds_a_valid_rate_under_the_bound(every_scenario: Path):
    server = _by_operation(every_scenario)["server"]
    found = server.server
    assert found["latency_bound_ms"] == 100 and found["max_qps"] is not None and found["search_s"] <= 8
    valid = [t for t in found["trials"] if t["valid"]]
    assert found["max_qps"] == max(t["target_qps"] for t in valid)
    assert found["p99_ms"] <= 100 and found["verdict"].startswith(f"max {found['max_qps']:,.0f} queries/s with p99 ≤ 100 ms")
    assert server.loadgen["scenario"] == "Server" and server.loadgen["target_qps"] == found["max_qps"]
    assert server.throughput_ips == server.loadgen["samples_per_s"]
    assert server.loadgen["logs"].startswith("model1-fp32-cpu-server-b1/trial-")


@pytest.mark.slow
def test_loadgens_logs_are_kept_beside_the_results_file(every_scenario: Path):
    folder = loadgen_folder(every_scenario)
    assert folder.name == every_scenario.stem + ".loadgen" and (folder / "loadgen-noop" / "mlperf_log_summary.txt").is_file()
    for record in load(every_scenario).records:
        if record.loadgen:
            logs = folder / record.loadgen["logs"]
            assert (logs / "mlperf_log_detail.txt").is_file() and not (logs / "mlperf_log_trace.json").exists()
            if record.loadgen["result"]:
                assert f"Result is : {record.loadgen['result']}" in (logs / "mlperf_log_summary.txt").read_text()
    assert (folder / "model1-fp32-cpu-accuracy-b32" / "mlperf_log_accuracy.json").is_file()
    table = every_scenario.with_suffix(".md").read_text()
    assert "| LoadGen |" in table and "accuracy" in table and "max " in table


@pytest.mark.slow
def test_summary_and_compare_read_the_new_records(every_scenario: Path, capsys):
    assert main(["summary", str(every_scenario), "--batch-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "server max q/s" in out and "p90 ms" in out and "LoadGen's own µs" in out
    assert "serving (server, p99 ≤ 100 ms): **onnxruntime CPU fp32**" in out
    assert main(["compare", str(every_scenario), str(every_scenario)]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("model1-fp32-cpu-server-b1"))
    assert "same (p99" in line and "1.000" in line
    assert "not timed: accuracy" in out


def test_a_runtime_that_cannot_meet_the_bound_at_any_rate_is_said(tiny_export: Artifacts, tmp_path: Path, capsys):
    """A bound of 1 µs: no runtime's query is that fast, so one trial, a verdict, exit status 0."""
    report_dir = tmp_path / "reports"
    options = [opt for opt in SHORT if opt != "--quiet"]
    assert main(["run", "--artifacts", str(tiny_export.root), "--report-dir", str(report_dir), "--providers", "cpu",
                 "--variants", "int8", "--operations", "server", "--latency-bound-ms", "0.001", *options]) == 0
    assert "server: cannot meet p99 ≤ 0.001 ms at any rate: a query alone takes" in capsys.readouterr().out
    (path,) = report_dir.glob("bench-*.json")
    (server,) = load(path).records
    assert server.skipped is None and server.server["max_qps"] is None and server.throughput_ips is None
    assert len(server.server["trials"]) == 1 and not server.server["trials"][0]["valid"]
    assert server.loadgen["result"] == "INVALID" and server.loadgen["latency_bound_met"] is False
    (row,) = summary(latest_records([path])).to_dict("records")
    assert row["server max q/s"] == "none" and row["server p99 ms"] is None


@pytest.mark.parametrize("cut_by", ["nothing", "budget", "halvings"])
def test_the_search_goes_coarse_then_fine_within_its_budget(cut_by: str):
    """Made-up trials: VALID up to 730 queries/s."""
    def trial(rate: float) -> ServerTrial:
        ok = rate <= (730 if cut_by != "halvings" else 0)
        return ServerTrial(rate, ok, rate, 1.0, 5.0 if ok else 50.0, 1024, 1.0, "" if ok else "p99 over the latency bound")

    now = [0.0]

    def clock() -> float:
        return now[0]

    def timed(rate: float) -> ServerTrial:
        now[0] += 1.0  # each trial costs a second
        return trial(rate)

    budget = 3.5 if cut_by == "budget" else 100
    found, best = search(timed, lambda rate: 1.0, 1000, 10, budget, alone_ms=0.5, clock=clock)
    rates = [t["target_qps"] for t in found.trials]
    if cut_by == "nothing":
        assert rates[:2] == [1000, 500] and found.invalid_above_qps <= found.max_qps * 1.05
        assert found.max_qps <= 730 < found.invalid_above_qps and found.trials[best]["target_qps"] == found.max_qps
        assert found.verdict.startswith(f"max {found.max_qps:,.0f} queries/s with p99 ≤ 10 ms: p99 5 ms")
    elif cut_by == "budget":
        assert rates[:2] == [1000, 500] and len(rates) == 3 and found.search_s <= budget  # the third ends at 3 s of 3.5
        assert found.max_qps == pytest.approx(707.1, rel=1e-3) and "INVALID at 1,000; the budget ended the bisection" in found.verdict
    else:
        assert len(rates) == 1 + MAX_HALVINGS and found.max_qps is None
        assert found.verdict.startswith("cannot meet p99 ≤ 10 ms at any rate: INVALID down to 16 queries/s, 1/64")
    with pytest.raises(BudgetTooShort, match="takes about 2 s, more than the search's 1 s"):
        search(trial, lambda rate: 2.0, 1000, 10, 1.0)


def test_the_settings_build_loadgens_test_settings():
    lg = import_loadgen()
    short = LoadGenSettings(min_queries=300, min_duration_s=1.5, latency_bound_ms=5)
    single = short.test_settings(lg, "single-stream", samples=6000, expected_latency_s=2e-4)
    assert (single.scenario, single.min_query_count, single.min_duration_ms) == (lg.TestScenario.SingleStream, 300, 1500)
    assert single.single_stream_expected_latency_ns == 200_000
    assert short.test_settings(lg, "multi-stream", samples=6000).min_query_count == 662  # early stopping's floor
    server = short.test_settings(lg, "server", samples=6000, target_qps=123.0)
    assert (server.min_query_count, server.server_target_qps, server.server_target_latency_ns) == (1024, 123.0, 5_000_000)
    assert short.test_settings(lg, "offline", samples=6000).min_query_count == 6000  # every sample
    assert short.test_settings(lg, "accuracy", samples=6000).mode == lg.TestMode.AccuracyOnly
    rules = LoadGenSettings(mlperf_rules=True)
    assert rules.test_settings(lg, "single-stream", samples=6000).min_duration_ms == 600_000
    assert rules.test_settings(lg, "multi-stream", samples=6000).min_query_count == 662
    assert rules.test_settings(lg, "offline", samples=6000).min_query_count == 24_576
    assert not rules.trace and short.trace


@pytest.mark.parametrize(("options", "message"), [
    (["--mlperf-rules", "--min-duration", "1"], "fmnist-bench: error: --min-duration: --mlperf-rules sets LoadGen's minimum"),
    (["--latency-bound-ms", "0"], "argument --latency-bound-ms: '0' must be between"),
    (["--operations", "server,online"], "argument --operations: 'server,online': choose from"),
])
def test_bad_loadgen_options_are_one_line(tiny_export: Artifacts, options: list[str], message: str, capsys):
    try:
        code = main(["run", "--artifacts", str(tiny_export.root), *options])
    except SystemExit as exit_info:
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and len([line for line in err.splitlines() if "error" in line]) == 1


def test_results_of_schema_2_are_still_read_and_a_damaged_loadgen_field_is_refused(tmp_path: Path):
    record = BenchRecord("model4", "int8", "cpu", "single-stream", 1, ["x"], 1, 2, 0.001, times_s=[0.001, 0.001])
    payload = json.loads(BenchRun({"cpu": "x"}, {}, "2026-12-01T00:00:00+00:00", [record]).to_json())
    old = {**payload, "schema_version": 2, "records": [{k: v for k, v in payload["records"][0].items()
                                                         if k not in ("loadgen", "server")}]}
    (tmp_path / "v2.json").write_text(json.dumps(old))
    assert load(tmp_path / "v2.json").records[0].loadgen is None
    payload["records"][0]["loadgen"] = {"scenario": "SingleStream"}
    (tmp_path / "bad.json").write_text(json.dumps(payload))
    with pytest.raises(SchemaError, match=r"record 0 loadgen lacks \['mode'"):
        load(tmp_path / "bad.json")


@pytest.mark.slow
def test_without_loadgen_its_scenarios_are_skipped_and_the_rest_runs(tiny_export: Artifacts, tmp_path: Path):
    run = ["run", "--artifacts", str(tiny_export.root), "--report-dir", str(tmp_path), "--providers", "cpu", "--variants", "fp32",
           "--operations", "predict,single-stream,server", *SHORT]
    result = run_python(f"from bench.cli import main\nassert main({run!r}) == 0\n", forbid=("mlperf_loadgen",),
                        block=("mlperf_loadgen",))
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = tmp_path.glob("bench-*.json")
    records = {r.operation: r for r in load(path).records}
    assert records["predict"].skipped is None and 0 < records["predict"].quality["accuracy"] <= 1
    for operation in ("single-stream", "server"):
        assert records[operation].skipped.startswith("mlcommons-loadgen is not installed, so LoadGen's scenarios are skipped")
    assert not loadgen_folder(path).exists() and not list(tmp_path.glob(".loadgen-*"))


class WithoutTrace(LoadGenSettings):
    """LoadGen's trace off, as --mlperf-rules runs (without its ten-minute tests)."""

    @property
    def trace(self) -> bool:
        return False


@pytest.mark.parametrize("operation", ["single-stream", "offline"])
def test_without_loadgens_trace_the_record_keeps_loadgens_percentiles(operation: str, tmp_path: Path):
    """No per-query latencies: LoadGen's own figures, no rounds kept (compare then judges on the threshold)."""
    case = Case("model9", "fp32", "cpu", trivial_onnx())
    settings = RunSettings(loadgen=WithoutTrace(min_queries=100, min_duration_s=0))
    record = measure(Constant(), case, held_out_split(64), operation, 1 if operation == "single-stream" else 16, settings)
    assert record.times_s is None and record.median_s > 0 and record.throughput_ips > 0
    if operation == "single-stream":
        assert record.latency_ms["p90"] == record.loadgen["latency_ms"]["p90"] and record.rounds == 100
    else:
        assert record.rounds == 4 and record.throughput_ips == record.loadgen["samples_per_s"]
