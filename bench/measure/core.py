"""The measurement core: one (case, operation, batch) measured into one BenchRecord.

Both front doors call :func:`measure`: ``fmnist-bench run`` with :func:`perf_timer`, and the
pytest-benchmark suite with a timer that hands the same calls to ``benchmark.pedantic``. So a case
measured through either door follows the same scenario rules (warm-up, rounds, single-stream's
minimum queries and duration) and yields the same record: the same fields, the same model size of
what actually ran, the same quality figures. Only the clock readings differ.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.measure import scenarios
from bench.runtimes import Case
from bench.measure.cases import HeldOutSplit
from bench.measure.memory import case_peak_rss_mb
from bench.measure.profile import as_records
from bench.measure.work import achieved_gflops, multiply_adds_per_image
from bench.measure.quality import quality
from bench.results.record import BenchRecord
from bench.settings import RunSettings
from bench.runtimes.base import SUT
from exporter.contract import check_output
from trainer.artifacts import Artifacts

# timer(call, rounds, warmup) -> seconds of each of ``rounds`` timed calls, after ``warmup`` untimed ones.
Timer = Callable[[Callable[[], object], int, int], list[float]]
Clock = Callable[[], float]  # seconds on a monotonic clock: time.perf_counter, or a test's own


def perf_timer(call: Callable[[], object], rounds: int, warmup: int, clock: Clock = time.perf_counter) -> list[float]:
    """Seconds of each of ``rounds`` calls of ``call`` read on ``clock``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(rounds):
        t0 = clock()
        call()
        times.append(clock() - t0)
    return times


def round_figures(times_s: list[float], images_per_call: int, macs_per_image: int | None) -> dict:
    """What a batch record derives from its timed rounds: the median round (and its spread), throughput from
    the MEDIAN round (never the fastest: one lucky round is not the rate), and GFLOP/s at that rate."""
    median = statistics.median(times_s)
    q1, q3 = np.percentile(times_s, [25, 75])
    return {"rounds": len(times_s), "median_s": median, "min_s": min(times_s), "max_s": max(times_s),
            "iqr_s": float(q3 - q1), "times_s": [float(t) for t in times_s], "throughput_ips": images_per_call / median,
            "gflops": achieved_gflops(macs_per_image, images_per_call, median) if macs_per_image else None}


def latency_figures(times_s: list[float]) -> dict[str, float]:
    """A single-stream record's latency in ms: p50, p90, p99 (numpy's linear interpolation between the
    ranked queries, as MLPerf's percentiles), the mean, and the number of queries."""
    latencies_ms = np.asarray(times_s) * 1000
    p50, p90, p99 = (float(v) for v in np.percentile(latencies_ms, [50, 90, 99]))
    return {"p50": p50, "p90": p90, "p99": p99, "mean": float(latencies_ms.mean()), "queries": len(times_s)}


def case_memory_mb(case: Case, artifacts: Artifacts, settings: RunSettings, test_images: int) -> float | None:
    """The case's own peak resident memory (bench/measure/memory.py) at the largest batch it is measured at, for every
    record of the case; None with ``--memory off``. Raises MemoryProbeError."""
    if settings.memory == "off":
        return None
    session = dataclasses.replace(settings.session, intra_op_threads=case.threads)
    return case_peak_rss_mb(case, artifacts, session, max(batch for _, batch in plan(settings, test_images)))


def plan(settings: RunSettings, test_images: int) -> list[tuple[str, int]]:
    """The (operation, batch size) pairs one case is measured at, in order; ``WHOLE_SPLIT`` resolved."""
    pairs = []
    for batch in dict.fromkeys(b or test_images for b in settings.batch_sizes):
        pairs += [(operation, batch) for operation in ("predict", "evaluate") if operation in settings.operations]
    if "single-stream" in settings.operations:
        pairs.append(("single-stream", 1))
    return pairs


@functools.lru_cache(maxsize=64)
def _macs(path: Path, mtime_ns: int) -> int:
    return multiply_adds_per_image(path)


def measure(sut: SUT, case: Case, split: HeldOutSplit, operation: str, batch: int, settings: RunSettings,
            timer: Timer | None = None, clock: Clock = time.perf_counter) -> BenchRecord:
    """Measure one scenario of one case; ``batch`` is resolved (never ``WHOLE_SPLIT``). ``timer`` times the
    rounds (pytest-benchmark's, for that front door), ``clock`` everything else (and the rounds by default)."""
    own = functools.partial(perf_timer, clock=clock)
    timer = timer or own
    x, y = split.x, split.y
    if operation == "single-stream":
        query = scenarios.one_query_at_a_time(sut, x)
        # The warm-up queries also plan the run: enough queries for both the minimum count and duration.
        warm = own(query, settings.single_stream.warmup_queries, 0)
        queries = settings.single_stream.planned_queries(statistics.median(warm))
        times = timer(query, queries, 0)
        extra = {"latency_ms": latency_figures(times), "first_run_s": warm[0], "overhead_ms": call_overhead_ms(sut, x, own),
                 "tool": sut.tool_figures(1, settings.single_stream.min_duration_s) if settings.tools == "on" else None}
        if sut.measures_device:
            extra["device_median_s"] = device_median_s(sut, x, 1, len(times))
        return _record(sut, case, operation, 1, 1, times, extra)

    call = scenarios.batch_call(operation, sut, x, y, batch)
    first = own(call, 1, 0)[0] if settings.warmup_rounds else None  # the first call of this shape, on its own
    times = timer(call, settings.rounds, max(0, settings.warmup_rounds - 1))
    if operation == "predict":
        probabilities = scenarios.predict(sut, x, batch)
        check_output(probabilities, len(y), f"{case.id} ({case.path.name})")
        extra = {"quality": quality(y, probabilities, split.class_names)}
        if batch == plan(settings, len(y))[0][1]:  # the first batch size: profile and cross-check it
            shares = sut.profile(x[:batch]) if settings.profile == "on" else None
            extra["profile"] = as_records(shares) if shares else None
            if settings.tools == "on":
                extra["tool"] = sut.tool_figures(batch, settings.single_stream.min_duration_s)
    else:
        loss, accuracy = scenarios.evaluate(sut, x, y, batch)
        extra = {"quality": {"accuracy": accuracy, "loss": loss}}
    if sut.measures_device:
        extra["device_median_s"] = device_median_s(sut, x, batch, settings.rounds)
    return _record(sut, case, operation, batch, len(y), times, {**extra, "first_run_s": first})


def call_overhead_ms(sut: SUT, x: np.ndarray, timer: Timer, queries: int = 200) -> float | None:
    """The median single query, in ms, on the trivial model through the same runtime and call path as ``sut``."""
    trivial = sut.trivial()
    if trivial is None:
        return None
    times = timer(scenarios.one_query_at_a_time(trivial, x), queries, 20)
    return statistics.median(times) * 1000


def device_median_s(sut: SUT, x: np.ndarray, batch: int, rounds: int) -> float:
    """Device-only time of what one call of the scenario computes, as trtexec separates it from copies:
    the median of ``rounds`` IOBinding runs of one ``batch`` (input already on the device, output left
    there, synchronised), times the number of batches in the call (the last, shorter one counted whole)."""
    images = len(x) if batch > 1 else 1
    run = sut.device_run(x[:batch])
    return statistics.median(perf_timer(run, rounds, 1)) * math.ceil(images / batch)


def _record(sut: SUT, case: Case, operation: str, batch: int, images_per_call: int, times: list[float], extra: dict) -> BenchRecord:
    return BenchRecord(
        model=case.model, variant=case.variant, provider=case.provider, operation=operation, batch_size=batch,
        threads=case.threads,
        providers_used=list(sut.providers_used), images=images_per_call,
        **round_figures(times, images_per_call, _macs(case.path, case.path.stat().st_mtime_ns)),
        session_create_s=sut.session_create_s, model_bytes=sut.model_bytes,
        provider_options=sut.provider_options, **extra,
    )
