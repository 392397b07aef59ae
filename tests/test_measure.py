"""The measurement math, pinned: the core is handed a clock that reads known times, and every figure it and
the summary derive from them is checked exactly (median, IQR, percentiles, throughput, GFLOP/s, share of
peak, the ratios to Keras). A p99 computed as a p90, or throughput from the fastest round, fails here.

Single-stream is MLPerf LoadGen's: LoadGen issues and times the queries, the clock times only the warm-up. So
its figures are pinned two ways: ``latency_figures`` on known latencies, and a LoadGen run whose record must
say exactly what LoadGen's own detail log says (p50/p90/p99 of the very per-query latencies in its trace)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from bench.measure.core import latency_figures, measure, round_figures
from bench.measure.loadgen import Engine
from bench.measure.work import multiply_adds_per_image
from bench.results.record import BenchRecord, BenchRun
from bench.results.summary import latest_records, summary
from bench.runtimes.base import Case
from bench.runtimes.trivial import trivial_onnx
from bench.settings import LoadGenSettings, RunSettings
from tiny import Constant, Sleeper, held_out_split

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


@pytest.fixture
def case(tmp_path: Path) -> Case:
    return Case("model9", "fp32", "cpu", trivial_onnx())  # 3,920 multiply-adds per image


def test_batch_rounds_give_the_median_spread_throughput_and_gflops_of_the_clock(case: Case):
    rounds = [0.30, 0.10, 0.50, 0.20, 0.40]  # seconds; sorted 0.1 .. 0.5: median 0.3, quartiles 0.2 and 0.4
    clock = StepClock([9.0, *rounds])  # the first call of the shape, timed on its own, then the rounds
    settings = RunSettings(rounds=5, warmup_rounds=1)
    record = measure(Constant(), case, held_out_split(250), "predict", 100, settings, clock=clock)
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
    record = measure(Constant(), case, held_out_split(50), "single-stream", 1, settings, clock=clock,
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
    """The warm-up plans the run (LoadGen generates enough 2 ms queries for 0.3 s, more than the 64 asked for) and
    LoadGen ends it once both minimums are met: at least 64 queries (room for LoadGen's early stopping to vouch for
    the p90 when a loaded machine stretches every sleep: with 50 it failed once in a parallel run), which together
    last at least 0.3 s."""
    settings = RunSettings(loadgen=LoadGenSettings(warmup_queries=3, min_queries=64, min_duration_s=0.3))
    clock = StepClock([0.002] * 3)
    record = measure(Sleeper(0.002), case, held_out_split(50), "single-stream", 1, settings, clock=clock)
    assert clock.unread == 0 and record.latency_ms["queries"] >= 64 and sum(record.times_s) >= 0.3
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


def test_each_row_is_a_share_of_the_yardstick_of_its_own_arithmetic(tmp_path: Path):
    """fp32 rows against the fp32 GEMM, int8 against the int8 one, and OpenVINO's bf16 row against bf16:
    never a bf16 row divided by an fp32 figure; no bf16 yardstick here means no share at all."""
    yardsticks = [{"arithmetic": "fp32", "runtime": "onnxruntime", "gops": 200.0, "threads": 0},
                  {"arithmetic": "fp32", "runtime": "openvino", "gops": 250.0, "threads": 0},
                  {"arithmetic": "int8", "runtime": "onnxruntime", "gops": 2000.0, "threads": 0},
                  {"arithmetic": "bf16", "runtime": "openvino", "gops": 400.0, "threads": 0},
                  {"arithmetic": "fp32", "runtime": "onnxruntime", "gops": 120.0, "threads": 1}]
    bf16 = _record("openvino", "fp32", 0.5, 300.0, 0.9)
    bf16.provider_options = {"inference_precision": "bf16"}
    records = [_record("cpu", "fp32", 1.0, 150.0, 0.9), _record("cpu", "int8", 0.5, 500.0, 0.9), bf16]

    def shares(machine: dict) -> dict:
        path = tmp_path / "bench.json"
        path.write_text(BenchRun(machine, {}, "2026-12-02T00:00:00+00:00", records).to_json())
        rows = summary(latest_records([path])).set_index("runtime")
        return {name: (row["% of peak"], row["peak of"]) for name, row in rows.iterrows()}

    found = shares({"cpu": "test", "cores": 2, "yardsticks": yardsticks})
    assert found["onnxruntime CPU fp32"] == (pytest.approx(100 * 150 / 250), "fp32")  # the fastest fp32 GEMM here
    assert found["onnxruntime CPU int8"] == (pytest.approx(100 * 500 / 2000), "int8")
    assert found["OpenVINO default (bf16)"] == (pytest.approx(100 * 300 / 400), "bf16")
    without_bf16 = shares({"cpu": "test", "cores": 2, "yardsticks": [y for y in yardsticks if y["arithmetic"] != "bf16"]})
    share, kind = without_bf16["OpenVINO default (bf16)"]
    assert math.isnan(share) and pd.isna(kind)


def test_yardsticks_are_measured_through_the_runtimes():
    from bench.measure.peaks import measure_yardsticks, theoretical_gops  # noqa: PLC0415

    found = measure_yardsticks(threads=1, seconds=0, repeats=1)
    assert {y.runtime for y in found} <= {"onnxruntime", "openvino"}
    assert {("fp32", "onnxruntime"), ("int8", "onnxruntime")} <= {(y.arithmetic, y.runtime) for y in found}
    assert all(y.gops > 0 and y.threads == 1 for y in found)
    bound = theoretical_gops(("avx2", "fma", "avx512f", "avx512_vnni"), 2, 2000.0)
    assert bound == {"fp32": 2 * 2000 * 64 / 1000, "int8": 2 * 2000 * 256 / 1000}
    assert "bf16" not in bound and theoretical_gops(("avx2",), 2, None) == {}


def test_a_yardstick_is_the_best_of_a_runs_measurements():
    from bench.measure.peaks import best_of  # noqa: PLC0415

    start = [{"arithmetic": "bf16", "runtime": "openvino", "gops": 368.0, "threads": 0},
             {"arithmetic": "int8", "runtime": "onnxruntime", "gops": 1907.0, "threads": 0}]
    end = [{"arithmetic": "bf16", "runtime": "openvino", "gops": 860.0, "threads": 0},
           {"arithmetic": "int8", "runtime": "onnxruntime", "gops": 953.0, "threads": 0},
           {"arithmetic": "int8", "runtime": "onnxruntime", "gops": 500.0, "threads": 1}]
    assert best_of(start, end) == [end[0], start[1], end[2]]  # per arithmetic, runtime and thread count
    assert best_of([], end) == end


def test_the_recommendation_sets_onnxruntime_against_the_best_accurate_peer(tmp_path: Path):
    from bench.results.summary import recommendations  # noqa: PLC0415

    records = [_record("cpu", "fp32", 1.6, 150.0, 0.90), _record("cpu", "int8", 0.5, 600.0, 0.899),
               _record("openvino", "int8", 0.4, 750.0, 0.90), _record("litert", "int8", 0.3, 999.0, 0.80),  # not accurate
               _single("cpu", "int8", 0.20), _single("openvino", "int8", 0.25), _single("litert", "fp32", 0.30)]
    records[-1].quality = None
    litert_fp32 = _record("litert", "fp32", 2.0, 100.0, 0.90)
    path = tmp_path / "bench.json"
    path.write_text(BenchRun({"cpu": "test", "cores": 2}, {}, "2026-12-02T00:00:00+00:00", [*records, litert_fp32]).to_json())
    (line,) = recommendations(latest_records([path]))
    assert "batch 128 0.80x (onnxruntime CPU int8 against OpenVINO int8; the peer ahead" in line  # 0.4 / 0.5
    assert "single-stream 1.25x (onnxruntime CPU int8 against OpenVINO int8; onnxruntime ahead)" in line  # 0.25 / 0.20
    assert "LiteRT int8 (-10.00 points)" in line  # faster but not accurate: never the peer it is set against
