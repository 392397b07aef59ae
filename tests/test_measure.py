"""The measurement math, pinned: the core is handed a clock that reads known times, and every figure it and
the summary derive from them is checked exactly (median, IQR, percentiles, throughput, GFLOP/s, share of
peak, the ratios to Keras). A p99 computed as a p90, or throughput from the fastest round, fails here.

Single-stream is MLPerf LoadGen's: LoadGen issues and times the queries, the clock times only the warm-up. So
its figures are pinned two ways: ``latency_figures`` on known latencies, and a LoadGen run whose record must
say exactly what LoadGen's own detail log says (p50/p90/p99 of the very per-query latencies in its trace)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.measure.cases import HeldOutSplit
from bench.measure.core import latency_figures, measure, round_figures
from bench.measure.loadgen import Engine
from bench.measure.work import multiply_adds_per_image
from bench.results.record import BenchRecord, BenchRun
from bench.results.summary import latest_records, summary
from bench.runtimes.base import SUT, Case
from bench.settings import LoadGenSettings, RunSettings

CLASSES = tuple(f"Class {i}" for i in range(1, 6))


class StepClock:
    """A clock whose successive timed calls last the given durations: each call reads it twice (start, end)."""

    def __init__(self, durations_s: list[float]):
        self.readings = []
        now = 100.0
        for duration in durations_s:
            self.readings += [now, now + duration]
            now += duration + 1.0
        self.readings.reverse()

    def __call__(self) -> float:
        return self.readings.pop()

    @property
    def unread(self) -> int:
        return len(self.readings)


class Constant(SUT):
    """Answers every image with the same probabilities, instantly: the clock alone decides every time."""

    name, providers_used, session_create_s, model_bytes = "constant", ["test"], 0.5, 1234

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.tile(np.float32([0.1, 0.6, 0.1, 0.1, 0.1]), (len(batch), 1))


class Sleeper(Constant):
    """Takes at least ``seconds`` per query: a duration LoadGen's clock cannot read as shorter."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return super().__call__(batch)


def _dense_model(path: Path) -> Path:
    """image -> Flatten -> MatMul(784 x 5) -> Softmax: 3,920 multiply-adds per image."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)], "dense",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 5])],
        initializer=[numpy_helper.from_array(np.int64([-1, 784]), "shape"),
                     numpy_helper.from_array(np.zeros((784, 5), np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@pytest.fixture
def case(tmp_path: Path) -> Case:
    return Case("model9", "fp32", "cpu", _dense_model(tmp_path / "dense.onnx"))


def _split(images: int) -> HeldOutSplit:
    y = np.arange(images) % 5  # a fifth of them class 2, which Constant always answers
    return HeldOutSplit(np.zeros((images, 28, 28, 1), np.float32), y, CLASSES, "test")


def test_batch_rounds_give_the_median_spread_throughput_and_gflops_of_the_clock(case: Case):
    rounds = [0.30, 0.10, 0.50, 0.20, 0.40]  # seconds; sorted 0.1 .. 0.5: median 0.3, quartiles 0.2 and 0.4
    clock = StepClock([9.0, *rounds])  # the first call of the shape, timed on its own, then the rounds
    settings = RunSettings(rounds=5, warmup_rounds=1)
    record = measure(Constant(), case, _split(250), "predict", 100, settings, clock=clock)
    assert clock.unread == 0
    assert record.times_s == pytest.approx(rounds, abs=1e-12) and record.rounds == 5 and record.images == 250
    assert record.first_run_s == pytest.approx(9.0)
    assert record.median_s == pytest.approx(0.3) and record.iqr_s == pytest.approx(0.2)
    assert (record.min_s, record.max_s) == pytest.approx((0.1, 0.5))
    assert record.throughput_ips == pytest.approx(250 / 0.3)  # the median round, not the fastest (2500/s)
    assert multiply_adds_per_image(case.path) == 784 * 5
    assert record.gflops == pytest.approx(2 * 3920 * 250 / 0.3 / 1e9)
    assert record.quality["accuracy"] == pytest.approx(0.2)
    assert record.quality["per_class"]["Class 2"]["recall"] == 1.0


def test_single_stream_figures_are_loadgens_own(case: Case, tmp_path: Path):
    """LoadGen issues the queries; the record's per-query latencies are LoadGen's (its trace), and the figures
    derived from them are exactly the ones LoadGen's detail log states, query count included."""
    warm = [0.002, 0.004, 0.003, 0.003]
    settings = RunSettings(loadgen=LoadGenSettings(warmup_queries=4, min_queries=300, min_duration_s=0))
    clock = StepClock(warm)
    record = measure(Constant(), case, _split(50), "single-stream", 1, settings, clock=clock,
                     engine=Engine(settings.loadgen, tmp_path / "logs"))
    assert clock.unread == 0  # the clock timed the warm-up, nothing else
    assert record.first_run_s == pytest.approx(0.002)
    lg = record.loadgen
    assert lg["scenario"] == "SingleStream" and lg["result"] == "VALID" and lg["logs"] == "model9-fp32-cpu-single-stream-b1"
    assert record.rounds == len(record.times_s) == lg["queries"] == record.latency_ms["queries"] == 300
    assert record.latency_ms == latency_figures(record.times_s)
    for key in ("p50", "p90", "p99"):  # LoadGen's whole-nanosecond figures, in ms
        assert record.latency_ms[key] == pytest.approx(lg["latency_ms"][key], rel=1e-12)
    assert record.latency_ms["mean"] == pytest.approx(lg["latency_ms"]["mean"], abs=1e-6)  # LoadGen truncates its mean
    assert record.median_s == pytest.approx(lg["latency_ms"]["p50"] / 1000) and record.throughput_ips == pytest.approx(1 / record.median_s)
    assert lg["early_stopping_met"] and 0 < lg["early_stopping_ms"] and "90.0th percentile estimate" in lg["early_stopping"]
    assert {"p50", "p90", "p99"} <= set(lg["noop_latency_ms"]) and lg["noop_latency_ms"]["p50"] > 0
    summary = (tmp_path / "logs" / lg["logs"] / "mlperf_log_summary.txt").read_text()
    assert "Result is : VALID" in summary and f"90.00 percentile latency (ns)   : {round(lg['latency_ms']['p90'] * 1e6)}" in summary


def test_single_stream_runs_long_enough_for_both_minimums(case: Case):
    """The warm-up plans the run (LoadGen generates enough 2 ms queries for 0.3 s, more than the 50 asked for) and
    LoadGen ends it once both minimums are met: at least 50 queries, which together last at least 0.3 s."""
    settings = RunSettings(loadgen=LoadGenSettings(warmup_queries=3, min_queries=50, min_duration_s=0.3))
    clock = StepClock([0.002] * 3)
    record = measure(Sleeper(0.002), case, _split(50), "single-stream", 1, settings, clock=clock)
    assert clock.unread == 0 and record.latency_ms["queries"] > 50 and sum(record.times_s) >= 0.3
    assert record.loadgen["min_duration_met"] and record.loadgen["min_queries_met"] and record.loadgen["result"] == "VALID"
    assert record.loadgen["logs"] is None  # no engine handed in: LoadGen's logs were not kept


def test_the_figures_on_their_own():
    figures = round_figures([4.0, 1.0, 2.0, 3.0], images_per_call=10, macs_per_image=1_000_000)
    assert figures["median_s"] == 2.5 and figures["iqr_s"] == pytest.approx(1.5)
    assert figures["throughput_ips"] == 4.0 and figures["gflops"] == pytest.approx(2 * 1e6 * 10 / 2.5 / 1e9)
    assert round_figures([1.0], 1, None)["gflops"] is None
    # LoadGen's ranks, no interpolation: the query at int(n * p) of the sorted n, here of 1 .. 100 ms.
    latency = latency_figures([i / 1000 for i in range(100, 0, -1)])
    assert latency == pytest.approx({"p50": 51.0, "p90": 91.0, "p99": 100.0, "mean": 50.5, "queries": 100})
    assert latency_figures([0.001, 0.003]) == pytest.approx({"p50": 3.0, "p90": 3.0, "p99": 3.0, "mean": 2.0, "queries": 2})


def _record(provider: str, variant: str, median_s: float, gflops: float, accuracy: float) -> BenchRecord:
    return BenchRecord("model4", variant, provider, "predict", 128, ["x"], 6000, 3, median_s, median_s, median_s,
                       times_s=[median_s] * 3, throughput_ips=6000 / median_s, gflops=gflops,
                       quality={"accuracy": accuracy})


def _single(provider: str, variant: str, p50_ms: float) -> BenchRecord:
    return BenchRecord("model4", variant, provider, "single-stream", 1, ["x"], 1, 200, p50_ms / 1000,
                       times_s=[p50_ms / 1000], latency_ms={"p50": p50_ms, "p90": p50_ms, "p99": 2 * p50_ms,
                                                            "mean": p50_ms, "queries": 200})


def test_the_summary_derives_its_ratios_and_shares_exactly(tmp_path: Path):
    machine = {"cpu": "test", "cores": 2, "sgemm_gflops": 200.0, "int8_gemm_gops": 800.0}
    records = [_record("keras", "fp32", 2.0, 100.0, 0.90), _record("cpu", "fp32", 1.6, 150.0, 0.90),
               _record("cpu", "int8", 0.5, 600.0, 0.899), _single("keras", "fp32", 10.0), _single("cpu", "int8", 0.25)]
    path = tmp_path / "bench.json"
    path.write_text(BenchRun(machine, {}, "2026-12-02T00:00:00+00:00", records).to_json())
    rows = summary(latest_records([path])).set_index("runtime")
    assert rows.loc["onnxruntime CPU int8", "x Keras predict"] == pytest.approx(2.0 / 0.5)
    assert rows.loc["onnxruntime CPU fp32", "x Keras predict"] == pytest.approx(2.0 / 1.6)
    assert rows.loc["onnxruntime CPU fp32", "% of peak"] == pytest.approx(100 * 150 / 200)  # the float yardstick
    assert rows.loc["onnxruntime CPU int8", "% of peak"] == pytest.approx(100 * 600 / 800)  # the int8 one
    assert rows.loc["onnxruntime CPU int8", "vs fp32 (points)"] == pytest.approx(-0.1)
    assert rows.loc["onnxruntime CPU int8", "single-stream p50 ms"] == 0.25
    assert rows.loc["onnxruntime CPU int8", "p99 ms"] == 0.5
    assert math.isnan(rows.loc["onnxruntime CPU fp32", "single-stream p50 ms"])
