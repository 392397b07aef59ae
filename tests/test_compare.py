"""``fmnist-bench compare``: a change is a regression only beyond both the threshold and the runs' own noise,
and a comparison that compared nothing fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.results.compare import parse_threshold, ratio_interval
from bench.results.record import BenchRecord, BenchRun

MACHINE = {"cpu": "test CPU", "cores": 2, "gpu": None, "versions": {"onnxruntime-gpu": "1.31.1", "numpy": "2.0"}}


def _record(times_s: list[float], case: str = "predict", skipped: str | None = None) -> BenchRecord:
    if skipped:
        return BenchRecord("model4", "int8", "cpu", "all", 0, skipped=skipped)
    batch, images = (1, 1) if case == "single-stream" else (128, 6000)
    median = float(np.median(times_s))
    return BenchRecord("model4", "int8", "cpu", case, batch, ["CPUExecutionProvider"], images, len(times_s), median,
                       min(times_s), max(times_s), times_s=[float(t) for t in times_s])


def _write(path: Path, records: list[BenchRecord], machine: dict = MACHINE) -> Path:
    path.write_text(BenchRun(machine, {}, "2026-11-25T00:00:00+00:00", records).to_json())
    return path


def _run(tmp_path: Path, old: list[BenchRecord], new: list[BenchRecord], *extra: str, new_machine: dict = MACHINE) -> int:
    return main(["compare", str(_write(tmp_path / "old.json", old)), str(_write(tmp_path / "new.json", new, new_machine)),
                 "--fail-on-regression", "10%", *extra])


def test_two_noisy_runs_of_the_same_model_are_not_flagged(tmp_path: Path, capsys):
    # Rounds as this shared VM gives them: medians 12% apart, but each run's rounds spread by +-30% or more.
    old = [_record([1.00, 1.30, 0.80, 1.50, 0.90]), _record(list(np.random.default_rng(1).lognormal(np.log(2e-4), 0.4, 300)), "single-stream")]
    new = [_record([1.12, 0.85, 1.60, 0.95, 1.40]), _record(list(np.random.default_rng(2).lognormal(np.log(2e-4), 0.4, 300)), "single-stream")]
    assert _run(tmp_path, old, new) == 0
    out = capsys.readouterr().out
    assert "model4-int8-cpu-predict-b128" in out and "1.120" in out and "slower, within noise" in out
    assert "REGRESSION" not in out


def test_a_real_30_percent_slowdown_is_flagged(tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    base = rng.lognormal(np.log(0.65), 0.05, 5)
    single = rng.lognormal(np.log(2e-4), 0.3, 300)
    old = [_record(list(base)), _record(list(single), "single-stream")]
    new = [_record(list(rng.lognormal(np.log(0.65 * 1.3), 0.05, 5))), _record(list(single * 1.3), "single-stream")]
    assert _run(tmp_path, old, new) == 1
    out = capsys.readouterr()
    assert out.out.count("REGRESSION") == 2 and "2 regression(s) over 10% and beyond noise" in out.err


def test_the_interval_of_the_ratio_brackets_the_truth():
    rng = np.random.default_rng(3)
    old = rng.lognormal(0, 0.2, 400)
    low, high = ratio_interval(list(old), list(rng.lognormal(np.log(1.3), 0.2, 400)))
    assert 1.2 < low < 1.3 < high < 1.4
    low, high = ratio_interval(list(old), list(rng.lognormal(0, 0.2, 400)))
    assert low < 1 < high


def test_schema_1_results_are_judged_on_the_threshold_alone_and_say_so(tmp_path: Path, capsys):
    def v1(median: float) -> dict:
        payload = json.loads(BenchRun({"cpu": "x", "git_commit": "abc1234"}, {}, "2026-11-24T00:00:00+00:00",
                                         [_record([median])]).to_json())
        payload["schema_version"] = 1
        for row in payload["records"]:
            for name in ("times_s", "iqr_s", "placement", "device_median_s", "first_run_s", "provider_options"):
                row.pop(name)
        payload.pop("commit")
        return payload

    (tmp_path / "a.json").write_text(json.dumps(v1(0.5)))
    (tmp_path / "b.json").write_text(json.dumps(v1(0.6)))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--fail-on-regression", "10%"]) == 1
    assert "judged on the threshold alone" in capsys.readouterr().out


@pytest.mark.parametrize(("old", "new", "message"), [
    ([_record([1.0])], [BenchRecord("model2", "fp32", "cpu", "predict", 128, ["x"], 1, 1, 1.0, 1.0, 1.0)], "nothing was compared"),
    ([_record([1.0])], [], "nothing was compared"),
    ([_record([1.0])], [_record([], skipped="CUDAExecutionProvider requested but the session runs on CPU only")], "no case was timed in both"),
])
def test_a_comparison_that_compared_nothing_fails(tmp_path: Path, old, new, message: str, capsys):
    assert _run(tmp_path, old, new) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("threshold", ["10", "nan%", "-5%", "0%", "inf%", "10 percent", ""])
def test_thresholds_need_a_sane_percentage(tmp_path: Path, threshold: str, capsys):
    path = _write(tmp_path / "r.json", [_record([1.0])])
    assert main(["compare", str(path), str(path), f"--fail-on-regression={threshold}"]) == 2
    assert "--fail-on-regression" in capsys.readouterr().err
    assert parse_threshold(" 12.5% ") == 0.125


def test_different_machines_are_said_plainly(tmp_path: Path, capsys):
    other = {**MACHINE, "cpu": "another CPU", "versions": {"onnxruntime-gpu": "1.30.0", "numpy": "2.0"}}
    assert _run(tmp_path, [_record([1.0, 1.1, 0.9])], [_record([1.0, 1.1, 0.9])], new_machine=other) == 0
    out = capsys.readouterr().out
    assert "different machines or software: cpu: test CPU vs another CPU; onnxruntime-gpu 1.31.1 vs 1.30.0" in out


def test_a_foreign_pytest_benchmark_save_is_refused(tmp_path: Path, capsys):
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"machine_info": {}, "benchmarks": [{"name": "test_x", "stats": {"median": 1.0}, "extra_info": {}}]}))
    ours = _write(tmp_path / "ours.json", [_record([1.0])])
    assert main(["compare", str(ours), str(foreign)]) == 2
    assert "was not saved by this toolkit's pytest suite" in capsys.readouterr().err
