from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from bench.cli import main
from bench.results.compare import compare
from bench.measure.core import device_median_s
from bench.measure.work import multiply_adds_per_image
from bench.results.record import BenchRecord, BenchRun, SchemaError
from bench.results import store
from bench.results.store import load, load_any
from bench.runtimes.base import InterfaceError
from bench.runtimes.ort import OrtSUT
from tiny import FAST_RUN, child_env, run_python
from trainer.artifacts import Artifacts

REPO = Path(__file__).resolve().parents[1]


def _cuda_extra_installed() -> bool:
    try:
        importlib.metadata.version("nvidia-cublas")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _latest_report(art: Artifacts) -> Path:
    return max(art.reports_dir.glob("bench-*.json"))


@pytest.mark.slow
def test_run_writes_a_versioned_report_with_honest_providers(tiny_export: Artifacts):
    assert main(["run", "--artifacts", str(tiny_export.root), "--no-reference", *FAST_RUN, "--memory", "on",
                 "--yardstick-s", "0"]) == 0
    path = _latest_report(tiny_export)
    report = load(path)
    assert report.schema_version == 3
    assert {"cpu", "cpu_class", "isa", "cores", "versions", "yardsticks", "onnxruntime_providers_available"} <= set(report.machine)
    assert report.machine["yardsticks"] == []  # --yardstick-s 0: none measured, and said so
    assert "installed runtime reaches here): none measured" in path.with_suffix(".md").read_text()
    assert set(report.commit) == {"id", "dirty", "branch"} and len(report.commit["id"]) == 40
    ran = [r for r in report.records if not r.skipped]
    assert {(r.variant, r.operation, r.batch_size) for r in ran if r.provider == "cpu"} >= {
        ("fp32", "predict", 128), ("int8", "evaluate", 100), ("fp16", "single-stream", 1)}
    for r in ran:
        assert len(r.times_s) == r.rounds and r.min_s <= r.median_s <= r.max_s and r.iqr_s >= 0
        assert r.median_s > 0 and r.throughput_ips > 0 and r.gflops > 0 and r.session_create_s > 0 and r.peak_rss_mb > 0
        expected = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[r.provider]
        assert r.providers_used[0] == expected  # a row is reported only for the provider that really ran
    predict = next(r for r in ran if r.operation == "predict" and r.variant == "fp32")
    class_names = json.loads(tiny_export.metadata_file("model1").read_text())["data"]["class_names"]
    assert list(predict.quality["per_class"]) == class_names
    assert sum(c["support"] for c in predict.quality["per_class"].values()) == 100
    assert sum(map(sum, predict.quality["confusion_matrix"])) == 100
    single = next(r for r in ran if r.operation == "single-stream")
    assert single.latency_ms["p50"] <= single.latency_ms["p99"] and single.latency_ms["queries"] >= 5
    for r in report.records:
        if r.provider == "cuda" and r.skipped:
            assert "CUDAExecutionProvider requested but the session runs on CPU only" in r.skipped
            if _cuda_extra_installed() and not Path("/proc/driver/nvidia").exists():
                # With make setup-cuda the toolkit is there: the first missing piece is the driver, named exactly.
                assert "NVIDIA driver not found (libcuda.so.1)" in r.skipped, r.skipped
    assert "| model1 | int8 | cpu (CPUExecutionProvider) | predict | 128 |" in path.with_suffix(".md").read_text()


def _pytest_suite(art: Artifacts, out: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-p", "no:cacheprovider", "-q",
         f"--fmnist-artifacts={art.root}", *options, f"--benchmark-json={out}"],
        capture_output=True, text=True, cwd=REPO, env=child_env(),
    )


@pytest.mark.slow
def test_each_case_reports_its_own_peak_memory(tiny_export: Artifacts, tmp_path: Path):
    """A case measured after a heavy one (Keras loads TensorFlow into the bench's process) reports what it holds
    alone, not the process's history: the same figure as when it is measured first, and far below Keras'."""
    options = ["--operations", "predict", "--batch-sizes", "128", *FAST_RUN, "--memory", "on"]

    def peaks(report_dir: Path, *selection: str) -> dict[str, float]:
        assert main(["run", "--artifacts", str(tiny_export.root), "--report-dir", str(report_dir), *options, *selection]) == 0
        (path,) = report_dir.glob("bench-*.json")
        return {f"{r.variant}-{r.provider}": r.peak_rss_mb for r in load(path).records}

    after_keras = peaks(tmp_path / "a", "--providers", "cpu,keras", "--variants", "fp32,int8")  # fp32-cpu, fp32-keras, int8-cpu
    alone = peaks(tmp_path / "b", "--providers", "cpu", "--variants", "int8")
    assert after_keras["fp32-keras"] > after_keras["int8-cpu"] + 150  # TensorFlow alone is hundreds of MB
    assert abs(after_keras["int8-cpu"] - alone["int8-cpu"]) < 0.15 * alone["int8-cpu"], (after_keras, alone)
    off = peaks(tmp_path / "c", "--providers", "cpu", "--variants", "int8", "--memory", "off")
    assert off == {"int8-cpu": None}


# Fields whose values are clock readings (or derived from them): present in both records, equal nowhere else.
TIMING_FIELDS = {"median_s", "min_s", "max_s", "iqr_s", "times_s", "throughput_ips", "gflops", "latency_ms",
                 "session_create_s", "peak_rss_mb", "first_run_s", "overhead_ms", "profile", "tool"}
# What LoadGen said that does not depend on the clock: the same through either door.
LOADGEN_STABLE = ("scenario", "mode", "samples_per_query", "latency_bound_ms")
# Each LoadGen test's size is set by the settings alone when --min-duration is 0: the queries (or offline batches).
ROUNDS = {"predict": 2, "single-stream": 7, "multi-stream": 662, "server": 1024, "offline": 4, "accuracy": 4}
# The options both doors are given (as --NAME and as --fmnist-NAME), less the selection of each test.
BOTH_DOORS = {"rounds": "2", "min-queries": "7", "min-duration": "0", "server-search-s": "20", "latency-bound-ms": "100"}


def _assert_same_records(ours: dict[str, dict], theirs: dict[str, dict]) -> None:
    """Each case's record through ``fmnist-bench run`` (``ours``) and through ``pytest bench`` (``theirs``), by id:
    the same fields, equal but for the clock's readings."""
    for case in ours:
        a, b = ours[case], theirs[case]
        assert set(a) == set(b)
        for name in a:
            if name in TIMING_FIELDS:
                assert (a[name] is None) == (b[name] is None), (case, name)
                if name == "profile" and a[name]:  # the same op types, their times read off another run
                    types_a, types_b = {p["op_type"] for p in a[name]}, {p["op_type"] for p in b[name]}
                    if "other" in types_a | types_b:  # past the top 8 (fp16's Casts), which are named is the clock's call
                        assert "other" in types_a and "other" in types_b and len(types_a) == len(types_b), case
                    else:
                        assert types_a == types_b, case
            elif name in ("loadgen", "server"):
                assert (a[name] is None) == (b[name] is None), (case, name)
                if name == "loadgen" and a[name]:
                    assert {k: a[name][k] for k in LOADGEN_STABLE} == {k: b[name][k] for k in LOADGEN_STABLE}, case
                    # The record's own folder; a server record's trial in it is the one its search chose.
                    assert a[name]["logs"].split("/")[0] == b[name]["logs"].split("/")[0] == case
                    assert a[name]["noop_latency_ms"] and b[name]["noop_latency_ms"]  # LoadGen's own cost, in both
            else:
                assert a[name] == b[name], (case, name, a[name], b[name])
        assert a["rounds"] == ROUNDS[a["operation"]] == len(b["times_s"]), case


def _run_both_doors(art: Artifacts, tmp_path: Path, options: dict[str, str],
                    cli_options: dict[str, str]) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """``options`` through ``pytest bench`` (its JSON and LoadGen logs in ``tmp_path``), then through ``fmnist-bench
    run`` with ``cli_options`` replacing some of them: the child's result, its JSON and our results file."""
    out = tmp_path / "pb.json"
    result = _pytest_suite(art, out, *(f"--fmnist-{k}={v}" for k, v in options.items()),
                           f"--fmnist-report-dir={tmp_path / 'pytest-logs'}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report_dir = tmp_path / "reports"
    assert main(["run", "--artifacts", str(art.root), "--report-dir", str(report_dir), "--quiet",
                 *(f"--{k}={v}" for k, v in {**options, **cli_options}.items())]) == 0
    return result, out, max(report_dir.glob("bench-*.json"))


@pytest.mark.slow
def test_pytest_benchmark_suite_on_tiny_models_gives_the_same_records_as_fmnist_bench_run(tiny_export: Artifacts,
                                                                                           tmp_path: Path):
    """``pytest bench`` on every variant, onnxruntime (CUDA where there is one) and Keras, at both batch sizes: its
    own benchmarks; then the same cases through ``fmnist-bench run``: the same record, field by field, for the batch
    operations and the single stream, and ids that ``fmnist-bench compare`` joins. One child pytest (TensorFlow
    loaded for Keras' rows, most of its cost) serves both doors' checks."""
    options = {"providers": "cuda,cpu,keras", "operations": "predict,single-stream", "batch-sizes": "128,all",
               "memory": "off", **BOTH_DOORS}  # memory off: Keras' probe loads TensorFlow once more
    # Our door without CUDA: where it cannot run, our results hold its skips, which pytest-benchmark's JSON does not.
    result, out, path = _run_both_doors(tiny_export, tmp_path, options, {"providers": "cpu,keras"})

    # The pytest-benchmark suite's own JSON and output.
    benchmarks = {b["name"]: b for b in json.loads(out.read_text())["benchmarks"]}
    assert {"test_latency[model1-int8-cpu-predict-b128]", "test_latency[model1-fp16-cpu-predict-b100]",
            "test_latency[model1-fp32-cpu-single-stream-b1]", "test_latency[model1-fp32-keras-predict-b128]"} <= set(benchmarks)
    info = benchmarks["test_latency[model1-int8-cpu-predict-b128]"]["extra_info"]
    assert info["providers_used"][0] == "CPUExecutionProvider" and 0 <= info["quality"]["accuracy"] <= 1
    assert len(info["quality"]["per_class"]) == 5 and info["gflops"] > 0 and len(info["times_s"]) == 2
    assert "p99" in benchmarks["test_latency[model1-fp32-cpu-single-stream-b1]"]["extra_info"]["latency_ms"]
    if "test_latency[model1-fp32-cuda-predict-b128]" not in benchmarks:  # no usable CUDA here: skipped, with the reason
        assert "SKIPPED" in result.stdout and "CUDAExecutionProvider requested but the session runs on CPU only" in result.stdout

    # Both doors: the same records.
    ours = {r.id: r.to_dict() for r in load(path).records}
    theirs = {r.id: r.to_dict() for r in load_any(out).records if r.provider != "cuda"}
    rows = [("cpu", variant) for variant in ("fp32", "fp16", "int8")] + [("keras", "fp32")]
    assert set(ours) == set(theirs) == {f"model1-{variant}-{provider}-{operation}" for provider, variant in rows
                                        for operation in ("predict-b128", "predict-b100", "single-stream-b1")}
    _assert_same_records(ours, theirs)
    # The size of what ran: the .keras file for Keras, the .onnx file for onnxruntime.
    assert ours["model1-fp32-keras-predict-b128"]["model_bytes"] == tiny_export.model_file("model1").stat().st_size
    assert ours["model1-fp32-cpu-predict-b128"]["model_bytes"] == (tiny_export.onnx_dir / "model1.onnx").stat().st_size

    # pytest-benchmark's JSON and ours compare by the same ids.
    joined = [r for r in compare(path, out).rows if r.ratio is not None]
    assert {r.id for r in joined} >= {"model1-int8-cpu-predict-b128", "model1-fp32-cpu-single-stream-b1"}


@pytest.mark.slow
def test_both_front_doors_give_the_same_record_for_every_loadgen_scenario(tiny_export: Artifacts, tmp_path: Path):
    """One case through ``fmnist-bench run`` and through ``pytest bench``: the same record, field by field, for
    every scenario MLPerf LoadGen drives (and the batch operations beside them), and LoadGen's logs of each door."""
    options = {"providers": "cpu", "operations": "predict,single-stream,multi-stream,server,offline,accuracy",
               "variants": "fp32", "batch-sizes": "32", "memory": "on", **BOTH_DOORS}
    _, out, path = _run_both_doors(tiny_export, tmp_path, options, {})
    ours = {r.id: r.to_dict() for r in load(path).records}
    theirs = {r.id: r.to_dict() for r in load_any(out).records}
    assert set(ours) == set(theirs) == {f"model1-fp32-cpu-{operation}-b{ {'multi-stream': 8, 'single-stream': 1, 'server': 1}.get(operation, 32) }"
                                        for operation in options["operations"].split(",")}
    _assert_same_records(ours, theirs)
    # LoadGen's logs of each door: beside our results file, and in the pytest suite's report folder
    (pytest_logs,) = (tmp_path / "pytest-logs").glob("pytest-*.loadgen")
    for folder, records in ((pytest_logs, theirs), (store.loadgen_folder(path), ours)):
        for record in records.values():
            if record["loadgen"]:
                assert (folder / record["loadgen"]["logs"] / "mlperf_log_summary.txt").is_file(), (folder, record["operation"])


def test_a_tuning_run_writes_its_report_elsewhere(tiny_export: Artifacts, tmp_path: Path):
    before = sorted(tiny_export.reports_dir.glob("bench-*"))
    tune = tmp_path / "tune-threads1"
    assert main(["run", "--artifacts", str(tiny_export.root), "--no-reference", "--providers", "cpu", "--variants", "fp32",
                 "--operations", "predict", "--batch-sizes", "128", "--threads", "1", "--report-dir", str(tune), *FAST_RUN]) == 0
    (written,) = tune.glob("bench-*.json")
    run = load(written)
    assert run.settings["threads"] == [1] and {r.threads for r in run.records} == {1} and written.with_suffix(".md").exists()
    assert sorted(tiny_export.reports_dir.glob("bench-*")) == before  # what fmnist-train report reads is untouched


def _report(median_s: float) -> dict:
    record = BenchRecord("model4", "int8", "cpu", "predict", 128, ["CPUExecutionProvider"], 6000, 3, median_s, median_s, median_s)
    return json.loads(BenchRun({"cpu": "test"}, {}, "2026-11-24T00:00:00+00:00", [record]).to_json())


@pytest.mark.parametrize(("slower", "exit_code"), [(1.20, 1), (1.05, 0)])
def test_compare_flags_a_20_percent_regression_and_passes_5(tmp_path: Path, slower: float, exit_code: int, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(_report(0.500)))
    new.write_text(json.dumps(_report(0.500 * slower)))
    assert main(["compare", str(old), str(new), "--fail-on-regression", "10%"]) == exit_code
    out = capsys.readouterr().out
    assert "model4-int8-cpu-predict-b128" in out and f"{slower:.3f}" in out
    assert ("REGRESSION" in out) == (exit_code == 1)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.update(schema_version=99), "schema_version '99', expected 3 \\(or 1 or 2\\)"),
        (lambda p: p.pop("machine"), "missing 'machine'"),
        (lambda p: p["records"][0].pop("median_s"), r"record 0 lacks \['median_s'\]"),
        (lambda p: p["records"][0].update(speed=1), r"record 0 has unknown \['speed'\]"),
    ],
)
def test_report_schema_is_validated(tmp_path: Path, mutate, message: str, capsys):
    payload = _report(0.5)
    mutate(payload)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(SchemaError, match=message):
        load(path)
    assert main(["compare", str(path), str(path)]) == 2
    assert f"fmnist-bench: error: {path}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.update(latency_ms="fast"), "record 0 latency_ms is a string, expected an object"),
        (lambda r: r.update(latency_ms={"p50": "0.1"}), r"record 0 latency_ms\['p50'\] is a string, expected a number"),
        (lambda r: r.update(median_s=float("inf")), "record 0 median_s is inf, expected a finite number"),
        (lambda r: r.update(batch_size=1.5), "record 0 batch_size is a number, expected a whole number"),
        (lambda r: r.update(quality={"accuracy": "0.9"}), r"record 0 \(model4\) quality.accuracy is a string, expected a number"),
        (lambda r: r.update(times_s=[0.1, "x"]), r"record 0 times_s\[1\] is a string, expected a number"),
    ],
)
def test_summary_report_and_compare_refuse_a_malformed_record_alike(tmp_path: Path, mutate, message: str, capsys):
    """One validator for every reader: a record whose fields have the wrong types is one line naming the file,
    the record and the field, from summary as from compare (summary once ended in a TypeError)."""
    payload = _report(0.5)
    mutate(payload["records"][0])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload).replace("Infinity", "1e999"))
    for command in (["summary", str(path)], ["compare", str(path), str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"fmnist-bench: error: {path}: ") and re.search(message, err), err
        assert len(err.strip().splitlines()) == 1


def test_a_run_that_measured_nothing_fails_with_the_reasons(tiny_export: Artifacts, tmp_path: Path, capsys):
    """Every requested case skipped (CUDA on a machine without a GPU) is a failure, and writes no results file."""
    if ort.get_device() == "GPU" and Path("/proc/driver/nvidia").exists():
        pytest.skip("a GPU is here: the CUDA cases run")
    report_dir = tmp_path / "reports"
    assert main(["run", "--artifacts", str(tiny_export.root), "--providers", "cuda", "--report-dir", str(report_dir),
                 *FAST_RUN]) == 1
    err = capsys.readouterr().err
    assert "every case was skipped, nothing was measured" in err
    assert "model1 fp32 cuda: CUDAExecutionProvider requested but the session runs on CPU only" in err
    assert not list(report_dir.glob("bench-*"))


def test_a_model_with_a_wrong_input_shape_gives_a_clear_error(tmp_path: Path):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["probabilities"])], "wrong",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 32, 32, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 32, 32, 3])],
    )
    path = tmp_path / "wrong.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    with pytest.raises(InterfaceError, match=r"wrong.onnx: input 'image' is tensor\(float\) \['batch', 32, 32, 3\]; expected input 'image' float32 \[batch, 28, 28, 1\]"):
        OrtSUT(path)
    path.write_bytes(b"not onnx")
    with pytest.raises(InterfaceError, match="wrong.onnx: onnxruntime cannot load it"):
        OrtSUT(path)


@pytest.mark.slow
def test_nothing_exported_says_what_to_run(tmp_path: Path, capsys):
    assert main(["run", "--artifacts", str(tmp_path / "empty")]) == 2
    assert "nothing exported yet; run: fmnist-train all && fmnist-export all" in capsys.readouterr().err
    result = subprocess.run([sys.executable, "-m", "pytest", "bench", "--benchmark-only", "-p", "no:cacheprovider",
                             f"--fmnist-artifacts={tmp_path / 'empty'}"], capture_output=True, text=True, cwd=REPO, env=child_env())
    assert result.returncode != 0 and "nothing exported yet; run: fmnist-train all && fmnist-export all" in result.stdout + result.stderr


def test_device_only_timing_binds_input_and_output(tiny_export: Artifacts):
    """The CUDA rows' device-only figure (IOBinding), exercised on the CPU provider here."""
    sut = OrtSUT(tiny_export.onnx_dir / "model1.onnx")
    x = np.random.default_rng(0).random((10, 28, 28, 1), dtype=np.float32)
    run = sut.device_run(x[:4])
    run()
    np.testing.assert_allclose(run.output(), sut(x[:4]), rtol=1e-6)
    assert device_median_s(sut, x, 4, 3) > 0 and sut.placement is None and not sut.measures_device


def test_multiply_adds_are_counted_from_the_graph(tiny_export: Artifacts):
    # model1 by hand: three convolutions and two dense layers.
    expected = 26 * 26 * 32 * 9 + 11 * 11 * 64 * 32 * 9 + 3 * 3 * 128 * 64 * 9 + 1152 * 128 + 128 * 5
    for name in ("model1.onnx", "model1.fp16.onnx", "model1.int8.onnx"):
        assert multiply_adds_per_image(tiny_export.onnx_dir / name) == expected


@pytest.mark.slow
def test_bench_runs_without_tensorflow(tiny_export: Artifacts, tmp_path: Path):
    art = tmp_path / "art"
    shutil.copytree(tiny_export.root, art)
    result = run_python(f"from bench.cli import main; assert main(['run', '--artifacts', {str(art)!r}, '--no-reference', "
                        "'--variants', 'int8', '--providers', 'cpu', '--rounds', '1', '--min-queries', '2', "
                        "'--min-duration', '0', '--quiet']) == 0")
    assert result.returncode == 0, result.stderr[-2000:] + result.stdout[-2000:]
    assert np.isfinite(load(max((art / "reports").glob("bench-*.json"))).records[0].median_s)


def test_summary_has_one_row_per_runtime_with_the_newest_result(tmp_path: Path, capsys):
    def rec(provider: str, variant: str, median_s: float, accuracy: float) -> BenchRecord:
        return BenchRecord("model4", variant, provider, "predict", 128, ["x"], 6000, 3, median_s, median_s, median_s,
                           throughput_ips=6000 / median_s, quality={"accuracy": accuracy})

    def write(name: str, created_at: str, records: list[BenchRecord]) -> Path:
        path = tmp_path / name
        path.write_text(BenchRun({"cpu": "test", "cores": 2}, {}, created_at, records).to_json())
        return path

    old = write("bench-old.json", "2026-11-24T00:00:00+00:00",
                [rec("keras", "fp32", 2.0, 0.9277), rec("cpu", "fp32", 1.0, 0.9277), rec("cpu", "int8", 0.9, 0.9222)])
    cuda = BenchRecord("model4", "fp32", "cuda", "all", 0, skipped="CUDAExecutionProvider requested but the session runs on CPU only")
    new = write("bench-new.json", "2026-11-24T01:00:00+00:00", [rec("cpu", "int8", 0.5, 0.9285), cuda])
    assert main(["summary", str(new), str(old)]) == 0  # order on the command line does not matter: created_at does
    out = capsys.readouterr().out
    assert "Not timed on cuda (model4 fp32): CUDAExecutionProvider requested but the session runs on CPU only" in out
    lines = {line.split("|")[2].strip(): line for line in out.splitlines() if line.startswith("| model4")}
    assert list(lines) == ["onnxruntime CPU fp32", "onnxruntime CPU int8", "Keras"]
    cells = [cell.strip() for cell in lines["onnxruntime CPU int8"].split("|")[3:-1]]
    assert cells[:4] == ["500.0", "", "12000", "4.00"]  # the newer 0.5 s (no rounds kept: no IQR); Keras' 2.0 s / 0.5 s
    assert cells[-2:] == ["0.9285", "+0.08"]


def test_the_bench_refuses_a_swapped_or_stale_file(tiny_export: Artifacts, tmp_path: Path, capsys):
    art = tmp_path / "art"
    shutil.copytree(tiny_export.root, art)
    onnx_dir = art / "onnx"
    run = ["run", "--artifacts", str(art), "--providers", "cpu", "--variants", "fp32", *FAST_RUN]
    shutil.copyfile(onnx_dir / "model1.int8.onnx", onnx_dir / "model1.onnx")  # another variant's bytes, same name
    assert main(run) == 2
    assert f"{onnx_dir / 'model1.onnx'}: not the file manifest.json describes (sha256 differs" in capsys.readouterr().err

    # The manifest edited to match the swapped file: the file's own metadata still says what it is.
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    manifest["files"]["model1.onnx"]["sha256"] = hashlib.sha256((onnx_dir / "model1.onnx").read_bytes()).hexdigest()
    (onnx_dir / "manifest.json").write_text(json.dumps(manifest))
    assert main(run) == 2
    assert "the file says it is 'model1' 'int8', the manifest lists it as model1 fp32" in capsys.readouterr().err

    # A .keras file changed since the export: the reference rows would not run the model the ONNX files came from.
    shutil.copyfile(tiny_export.onnx_dir / "model1.onnx", onnx_dir / "model1.onnx")
    manifest["files"]["model1.onnx"]["sha256"] = hashlib.sha256((onnx_dir / "model1.onnx").read_bytes()).hexdigest()
    (onnx_dir / "manifest.json").write_text(json.dumps(manifest))
    with open(art / "models" / "model1.keras", "ab") as f:
        f.write(b"\0")
    assert main([*run, "--providers", "keras"]) == 2
    assert "model1.keras: not the model model1.onnx was exported from" in capsys.readouterr().err
    assert main(run) == 0  # the onnxruntime rows alone are still the right files


@pytest.mark.parametrize(("option", "value"), [("--rounds", "0"), ("--min-queries", "0"), ("--min-duration", "nan"),
                                               ("--min-duration", "-1"), ("--threads", "-1"), ("--batch-sizes", "0"),
                                               ("--providers", "cpu,gpu"), ("--rounds", "1e9"), ("--yardstick-s", "-1")])
def test_impossible_run_options_are_refused(option: str, value: str, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", f"{option}={value}"])
    assert exit_info.value.code == 2 and f"argument {option}" in capsys.readouterr().err


def test_a_bad_yardstick_duration_in_the_environment_is_one_line(tiny_export: Artifacts, monkeypatch, capsys):
    monkeypatch.setenv("FMNIST_BENCH_YARDSTICK_S", "soon")
    assert main(["run", "--artifacts", str(tiny_export.root), *FAST_RUN]) == 2
    assert "$FMNIST_BENCH_YARDSTICK_S: " in capsys.readouterr().err


def test_an_unknown_model_is_named(tiny_export: Artifacts, capsys):
    assert main(["run", "--artifacts", str(tiny_export.root), "--models", "model1,modle2", *FAST_RUN]) == 2
    assert "--models modle2: not exported" in capsys.readouterr().err


def test_threads_give_a_row_per_count_with_the_call_overhead_and_the_profile(tiny_export: Artifacts, tmp_path: Path, capsys,
                                                                             monkeypatch: pytest.MonkeyPatch):
    # The run asks for the yardsticks at each thread count; what they measure is test_measure.py's (at one thread
    # each product's five calls take seconds, and a run measures them twice).
    from bench.measure import machine as machine_module  # noqa: PLC0415
    from bench.measure.peaks import Yardstick  # noqa: PLC0415

    monkeypatch.setattr(machine_module, "measure_yardsticks", lambda threads, seconds: [
        Yardstick("fp32", "onnxruntime", 100.0, threads), Yardstick("int8", "onnxruntime", 400.0, threads)])
    report_dir = tmp_path / "threads"
    assert main(["run", "--artifacts", str(tiny_export.root), "--providers", "cpu,keras", "--variants", "fp32,int8",
                 "--operations", "predict,single-stream", "--batch-sizes", "128", "--threads", "1,2", "--yardstick-s", "0.05",
                 "--report-dir", str(report_dir), *FAST_RUN]) == 0
    path = max(report_dir.glob("bench-*.json"))
    run = load(path)
    by_id = {r.id: r for r in run.records}
    for threads in (1, 2):
        for variant in ("fp32", "int8"):
            single = by_id[f"model1-{variant}-cpu-single-stream-b1-t{threads}"]
            assert single.threads == threads and 0 < single.overhead_ms < 10 * single.latency_ms["p50"]
            predict = by_id[f"model1-{variant}-cpu-predict-b128-t{threads}"]
            shares = predict.profile
            assert shares and abs(sum(s["time_share"] for s in shares) - 1) < 1e-6
            assert abs(sum(s["mac_share"] for s in shares) - 1) < 1e-6
            assert "Conv" in shares[0]["op_type"]  # model1's three convolutions are most of its time and work
    assert "model1-fp32-keras-predict-b128" in by_id and not any(i.startswith("model1-fp32-keras") and "-t" in i for i in by_id)
    assert {(y["arithmetic"], y["threads"]) for y in run.machine["yardsticks"]} >= {("fp32", 1), ("fp32", 2), ("int8", 1), ("int8", 2)}
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime CPU int8, 1 thread " in out and "onnxruntime CPU int8, 2 threads" in out
    with pytest.raises(SystemExit) as refused:
        main(["run", "--artifacts", str(tiny_export.root), "--threads", "1,x"])
    assert refused.value.code == 2 and "--threads: '1,x': thread counts are whole numbers" in capsys.readouterr().err


def test_path_options_are_checked_before_any_work(tiny_export: Artifacts, tmp_path: Path, capsys):
    """A file given as a folder, a data path that is not there: one line naming the option, before anything is
    measured (no results file, no yardstick taken)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["run", "--artifacts", str(a_file)], f"--artifacts {a_file}: is a file, not a folder"),
        (["run", "--artifacts", str(tiny_export.root), "--report-dir", str(a_file)], f"--report-dir {a_file}: is a file, not a folder"),
        (["run", "--artifacts", str(tiny_export.root), "--report-dir", str(a_file / "sub")],
         f"--report-dir {a_file / 'sub'}: cannot be made: {a_file} is a file, not a folder"),
        (["run", "--artifacts", str(tiny_export.root), "--data", str(tmp_path / "gone")], f"--data {tmp_path / 'gone'}: no such file or folder"),
        (["pack", str(tmp_path / "x.tar.gz"), "--artifacts", str(tiny_export.root), "--data", str(tmp_path / "gone")],
         f"--data {tmp_path / 'gone'}: no such file or folder"),
    ]
    before = sorted(tiny_export.reports_dir.glob("bench-*"))
    for argv, message in cases:
        assert main([*argv, "--quiet"] if argv[0] == "run" else argv) == 2, argv
        err = capsys.readouterr().err
        assert err.strip() == f"fmnist-bench: error: {message}", err
    assert sorted(tiny_export.reports_dir.glob("bench-*")) == before and not (tmp_path / "x.tar.gz").exists()
