"""REPORT.md's "At a glance" figures on a tiny trained model and synthetic bench results, and a quiet terminal.

The model is trained once, by the real ``fmnist-train`` in a subprocess (which is also the quiet-terminal
check); the bench results are written with BenchRun, so no benchmark runs here.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import pytest

from bench.report.figures import pareto_front, tradeoff_points
from bench.results.record import BenchRecord, BenchRun
from bench.report.document import build
from tiny import run_python
from trainer.artifacts import Artifacts

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def art(tiny_export: Artifacts, tmp_path: Path) -> Artifacts:
    """A copy of the shared tiny export for one test to add its own bench results to."""
    copy = Artifacts(tmp_path / "art")
    # Without the results other tests wrote into the shared export: this test's own go in.
    shutil.copytree(tiny_export.root, copy.root, ignore=shutil.ignore_patterns("litert", "bench-*"))
    return copy


# --------------------------------------------------------------------------------------------------
# Synthetic bench results

CLASSES = 5
TEST_IMAGES = 1000


def _predict(model: str, provider: str, variant: str, ms_per_image: float, accuracy: float | None, mb: float) -> BenchRecord:
    median = ms_per_image * TEST_IMAGES / 1000
    quality = None if accuracy is None else {"accuracy": accuracy, "loss": 0.3, "per_class": {}, "confusion_matrix": []}
    return BenchRecord(model, variant, provider, "predict", 128, [provider], TEST_IMAGES, 3, median, median * 0.98, median * 1.02,
                       median * 0.01, [median * 0.99, median, median * 1.01], TEST_IMAGES / median, None, 1.0,
                       model_bytes=int(mb * 1e6), quality=quality)


def _single(model: str, provider: str, variant: str, p50_ms: float, with_times: bool = True) -> BenchRecord:
    times = [p50_ms * (0.9 + 0.2 * ((i * 37) % 100) / 100) / 1000 for i in range(200)] + [p50_ms * 3 / 1000]
    ordered = sorted(t * 1000 for t in times)
    latency = {"p50": ordered[len(ordered) // 2], "p90": ordered[int(0.9 * len(ordered))], "p99": ordered[int(0.99 * len(ordered))],
               "mean": sum(ordered) / len(ordered), "queries": len(ordered)}
    return BenchRecord(model, variant, provider, "single-stream", 1, [provider], 1, len(times), latency["p50"] / 1000,
                       min(times), max(times), None, times if with_times else None, 1000 / latency["p50"], latency,
                       model_bytes=1_000_000)


# (provider, variant): ms per image, accuracy, MB. LiteRT int8 is fastest but 3 points down: never the headline.
MODEL1 = {("cpu", "fp32"): (0.20, 0.900, 1.0), ("cpu", "fp16"): (0.30, 0.901, 0.5), ("cpu", "int8"): (0.08, 0.897, 0.26),
          ("keras", "fp32"): (4.00, 0.900, 2.9), ("tflite", "fp32"): (0.15, 0.900, 1.0), ("litert", "int8"): (0.05, 0.870, 0.25)}


def _records(single: bool = True, with_times: bool = True) -> list[BenchRecord]:
    records = [_predict("model1", p, v, *row) for (p, v), row in MODEL1.items()]
    records += [_predict("model4", "cpu", "fp32", 0.9, 0.93, 6.0), _predict("model4", "keras", "fp32", 9.0, 0.93, 18.0),
                _predict("model4", "cpu", "int8", 0.4, None, 1.6)]  # no accuracy: listed, not drawn
    records.append(BenchRecord("model4", "fp32", "cuda", "all", 0, skipped="CUDAExecutionProvider requested but the session runs on CPU only"))
    if single:
        records += [_single(m, p, v, ms, with_times) for m, p, v, ms in
                    (("model1", "cpu", "fp32", 0.2), ("model4", "cpu", "fp32", 0.5), ("model4", "cpu", "int8", 0.3),
                     ("model4", "keras", "fp32", 30.0), ("model4", "tflite", "fp32", 0.4))]
    return records


def _write_bench(art: Artifacts, records: list[BenchRecord], name: str = "bench-20260101T000000Z.json") -> None:
    art.ensure(art.reports_dir)
    report = BenchRun({"cpu": "Test CPU", "cores": 2, "sgemm_gflops": 100.0}, {}, "2026-01-01T00:00:00+00:00", records)
    (art.reports_dir / name).write_text(report.to_json())


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _assert_figure(report: str, out: Path, name: str) -> None:
    path = out / "plots" / name
    assert path.exists(), name
    width, height = _png_size(path)
    assert 600 <= width <= 3000 and 250 <= height <= 2500, (name, width, height)
    assert 10_000 < path.stat().st_size < 2_000_000, (name, path.stat().st_size)
    assert f"](plots/{name})" in report, name


# --------------------------------------------------------------------------------------------------
# The report


def test_report_opens_with_a_headline_and_three_figures(art: Artifacts, tmp_path: Path):
    _write_bench(art, _records())
    out = tmp_path / "docs"
    report = build(art, out).read_text()
    assert report.index("## At a glance") < report.index("## Data") < report.index("## Table 1") < report.index("## Latency")
    for heading in ("## Accuracy and loss", "## Best model", "### Table 2: Model 4, optimizers"):
        assert heading in report  # the sections that were there stay
    glance = report.split("## At a glance")[1].split("## Data")[0]
    for name in ("tradeoff.png", "latency-model4.png", "confusion-model1.png"):  # model4 benched: its latency is drawn
        _assert_figure(report, out, name)
    assert "**Best test accuracy: Model 1," in glance
    # Within 0.5 points of fp32 (0.900): int8 (0.897) is fastest; LiteRT int8 (0.870) is faster but never chosen.
    assert "is **onnxruntime CPU int8**: 0.08 ms per image at batch 128" in glance
    assert "**50.0x** Keras predict" in glance  # 4.00 / 0.08
    assert "Not drawn (no accuracy measured): model4-int8-cpu-predict-b128" in glance
    front = glance.split("The front, fastest first:")[1].split("one query at a time")[0]
    assert "LiteRT int8" in front and "onnxruntime CPU int8" in front and "Keras" not in front
    assert ("_No server curve: no server results for Model 4._ Make them with "
            "`fmnist-bench run --models model4 --operations server`") in glance
    assert not list((out / "plots").glob("server-*.png"))


def _server(provider: str, variant: str, capacity_qps: float | None) -> BenchRecord:
    """A server search as bench/measure/server.py records it: VALID up to ``capacity_qps`` (None: never), the
    latency climbing towards the knee."""
    trials = []
    for rate in (2000.0, 1000.0, 500.0, 707.0, 841.0, 771.0):
        valid = capacity_qps is not None and rate <= capacity_qps
        load = rate / (capacity_qps or 100.0)
        trials.append({"target_qps": rate, "valid": valid, "completed_qps": rate * 0.99, "p50_ms": 0.2 + load,
                       "p99_ms": (2 + 7 * load ** 4 if valid else 12 + 40 * load ** 2) if capacity_qps else 50.0, "queries": 1024, "duration_s": 1.0,
                       "why": "" if valid else "p99 over the latency bound"})
    best = max((t for t in trials if t["valid"]), key=lambda t: t["target_qps"], default=min(trials, key=lambda t: t["target_qps"]))
    found = {"latency_bound_ms": 10.0, "max_qps": best["target_qps"] if best["valid"] else None,
             "invalid_above_qps": 841.0, "p50_ms": best["p50_ms"], "p99_ms": best["p99_ms"], "trials": trials,
             "search_s": 6.0, "budget_s": 30.0,
             "verdict": f"max {best['target_qps']:,.0f} queries/s" if best["valid"] else "cannot meet p99 ≤ 10 ms at any rate"}
    return BenchRecord("model4", variant, provider, "server", 1, [provider], 1, 1024, best["p50_ms"] / 1000,
                       times_s=[best["p50_ms"] / 1000] * 3, throughput_ips=best["completed_qps"] if best["valid"] else None,
                       latency_ms={"p50": best["p50_ms"], "p90": best["p99_ms"], "p99": best["p99_ms"], "mean": best["p50_ms"],
                                   "queries": 1024}, server=found)


def test_report_draws_the_server_curve_with_its_bound(art: Artifacts, tmp_path: Path):
    _write_bench(art, _records() + [_server("cpu", "fp32", 780.0), _server("cpu", "int8", 1200.0),
                                    _server("keras", "fp32", None)])
    out = tmp_path / "docs"
    report = build(art, out).read_text()
    _assert_figure(report, out, "server-model4.png")
    glance = report.split("## At a glance")[1].split("## Data")[0]
    assert "whose p99 stays within 10 ms (the dotted line)" in glance
    assert "Max rate under the bound: onnxruntime CPU int8 1,000 queries/s; onnxruntime CPU fp32 771 queries/s." in glance
    assert "No rate tried met the bound: Keras (cannot meet p99 ≤ 10 ms at any rate)." in glance  # the search's own why
    assert "server max q/s" in report.split("## Latency")[1]


def test_report_without_bench_results_says_which_command_makes_the_figures(art: Artifacts, tmp_path: Path):
    out = tmp_path / "docs"
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "tradeoff.png").write_bytes(PNG_SIGNATURE)  # from an earlier report: must not be left to mislead
    report = build(art, out).read_text()
    glance = report.split("## At a glance")[1].split("## Data")[0]
    assert "_No accuracy/speed figure: no bench results yet._ Make it with `fmnist-export all && fmnist-bench run`" in glance
    assert "_No latency figure: no bench results yet._" in glance
    assert "**Best test accuracy: Model 1," in glance
    _assert_figure(report, out, "confusion-model1.png")  # from the trainer's metadata: no bench needed
    assert not (out / "plots" / "tradeoff.png").exists()
    assert "No bench results yet" in report.split("## Latency")[1]


def test_report_without_single_stream_records_names_the_run(art: Artifacts, tmp_path: Path):
    _write_bench(art, _records(single=False))
    out = tmp_path / "docs"
    report = build(art, out).read_text()
    _assert_figure(report, out, "tradeoff.png")
    assert ("_No single-stream latency figure: no single-stream results for Model 4._ "
            "Make them with `fmnist-bench run --models model4 --operations single-stream`") in report
    assert not list((out / "plots").glob("latency-*.png"))


def test_schema_1_reports_without_query_times_still_render(art: Artifacts, tmp_path: Path):
    payload = json.loads(BenchRun({"cpu": "Old CPU", "cores": 2, "git_commit": "abc1234"}, {}, "2025-06-01T00:00:00+00:00",
                                     _records(with_times=False)).to_json())
    payload["schema_version"] = 1
    for row in payload["records"]:  # schema 1 had neither the rounds nor their spread
        row.pop("times_s"), row.pop("iqr_s")
    art.ensure(art.reports_dir)
    (art.reports_dir / "bench-20250601T000000Z.json").write_text(json.dumps(payload))
    out = tmp_path / "docs"
    report = build(art, out).read_text()
    _assert_figure(report, out, "tradeoff.png")
    _assert_figure(report, out, "latency-model4.png")  # p50 and p99 only
    assert "p50 and p99 only (reports of schema 1 kept no per-query times)" in report
    assert "`fmnist-bench run --models model4 --operations single-stream` records them" in report


def test_pareto_front_keeps_what_nothing_beats_on_both_speed_and_accuracy():
    points = [(1.0, 0.90),   # 0: front
              (2.0, 0.95),   # 1: front
              (0.5, 0.85),   # 2: front, the fastest
              (1.5, 0.90),   # 3: slower than 0, no more accurate
              (3.0, 0.95),   # 4: slower than 1, no more accurate
              (0.5, 0.80),   # 5: as fast as 2, less accurate
              (4.0, 0.99),   # 6: front, the most accurate
              (math.nan, 1.0),  # 7: not measured: never on the front
              (2.0, 0.95)]   # 8: equal to 1: both stay
    assert pareto_front(points) == [2, 0, 1, 8, 6]
    assert pareto_front([]) == [] and pareto_front([(1.0, 0.5)]) == [0]
    assert pareto_front([(1.0, 0.9), (1.0, 0.8)]) == [0]  # as fast and more accurate


def test_tradeoff_points_are_per_image_at_the_batch_asked():
    records = {r.id: (r, {}) for r in _records()}
    points, unmeasured = tradeoff_points(records, 128)
    int8 = next(p for p in points if (p.model, p.provider, p.variant) == ("model1", "cpu", "int8"))
    assert int8.ms_per_image == pytest.approx(0.08) and int8.images_per_s == pytest.approx(12_500)
    assert int8.runtime == "onnxruntime CPU int8" and int8.megabytes == pytest.approx(0.26)
    assert unmeasured == ["model4-int8-cpu-predict-b128"]
    assert tradeoff_points(records, 64) == ([], [])


# --------------------------------------------------------------------------------------------------
# A quiet terminal


@pytest.mark.slow
def test_the_report_does_not_load_tensorflow(art: Artifacts, tmp_path: Path):
    """REPORT.md is written where only the bench is installed (an edge device): TensorFlow is never imported."""
    result = run_python(f"from bench.cli import main; assert main(['report', '--artifacts', {str(art.root)!r}, "
                        f"'--out', {str(tmp_path / 'docs')!r}]) == 0")
    assert result.returncode == 0, result.stderr[-2000:]
