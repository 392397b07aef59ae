"""The measurement core: one (case, operation, batch) measured into one BenchRecord.

Both front doors call :func:`measure`: ``fmnist-bench run`` with :func:`perf_timer`, and the
pytest-benchmark suite with a timer that hands the same calls to ``benchmark.pedantic``. So a case
measured through either door follows the same scenario rules (warm-up, rounds, single-stream's
minimum queries and duration) and yields the same record: the same fields, the same model size of
what actually ran, the same quality figures. Only the clock readings differ.
"""

from __future__ import annotations

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
from bench.measure.work import achieved_gflops, multiply_adds_per_image
from bench.measure.quality import quality
from bench.results.record import BenchRecord
from bench.settings import RunSettings
from bench.runtimes.base import SUT
from exporter.contract import check_output
from trainer.artifacts import Artifacts

# timer(call, rounds, warmup) -> seconds of each of ``rounds`` timed calls, after ``warmup`` untimed ones.
Timer = Callable[[Callable[[], object], int, int], list[float]]


def perf_timer(call: Callable[[], object], rounds: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def case_memory_mb(case: Case, artifacts: Artifacts, settings: RunSettings, test_images: int) -> float | None:
    """The case's own peak resident memory (bench/measure/memory.py) at the largest batch it is measured at, for every
    record of the case; None with ``--memory off``. Raises MemoryProbeError."""
    if settings.memory == "off":
        return None
    return case_peak_rss_mb(case, artifacts, settings.session, max(batch for _, batch in plan(settings, test_images)))


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
            timer: Timer = perf_timer) -> BenchRecord:
    """Measure one scenario of one case; ``batch`` is resolved (never ``WHOLE_SPLIT``)."""
    x, y = split.x, split.y
    if operation == "single-stream":
        query = scenarios.one_query_at_a_time(sut, x)
        # The warm-up queries also plan the run: enough queries for both the minimum count and duration.
        warm = perf_timer(query, settings.single_stream.warmup_queries, 0)
        queries = settings.single_stream.planned_queries(statistics.median(warm))
        times = timer(query, queries, 0)
        latencies_ms = np.asarray(times) * 1000
        extra = {"latency_ms": {"p50": float(np.percentile(latencies_ms, 50)), "p90": float(np.percentile(latencies_ms, 90)),
                                "p99": float(np.percentile(latencies_ms, 99)), "mean": float(latencies_ms.mean()),
                                "queries": len(times)},
                 "first_run_s": warm[0]}
        if sut.measures_device:
            extra["device_median_s"] = device_median_s(sut, x, 1, len(times))
        return _record(sut, case, operation, 1, 1, times, extra)

    call = scenarios.batch_call(operation, sut, x, y, batch)
    first = perf_timer(call, 1, 0)[0] if settings.warmup_rounds else None  # the first call of this shape, on its own
    times = timer(call, settings.rounds, max(0, settings.warmup_rounds - 1))
    if operation == "predict":
        probabilities = scenarios.predict(sut, x, batch)
        check_output(probabilities, len(y), f"{case.id} ({case.path.name})")
        extra = {"quality": quality(y, probabilities, split.class_names)}
    else:
        loss, accuracy = scenarios.evaluate(sut, x, y, batch)
        extra = {"quality": {"accuracy": accuracy, "loss": loss}}
    if sut.measures_device:
        extra["device_median_s"] = device_median_s(sut, x, batch, settings.rounds)
    return _record(sut, case, operation, batch, len(y), times, {**extra, "first_run_s": first})


def device_median_s(sut: SUT, x: np.ndarray, batch: int, rounds: int) -> float:
    """Device-only time of what one call of the scenario computes, as trtexec separates it from copies:
    the median of ``rounds`` IOBinding runs of one ``batch`` (input already on the device, output left
    there, synchronised), times the number of batches in the call (the last, shorter one counted whole)."""
    images = len(x) if batch > 1 else 1
    run = sut.device_run(x[:batch])
    return statistics.median(perf_timer(run, rounds, 1)) * math.ceil(images / batch)


def _record(sut: SUT, case: Case, operation: str, batch: int, images_per_call: int, times: list[float], extra: dict) -> BenchRecord:
    median = statistics.median(times)
    q1, q3 = np.percentile(times, [25, 75])
    macs = _macs(case.path, case.path.stat().st_mtime_ns)
    return BenchRecord(
        model=case.model, variant=case.variant, provider=case.provider, operation=operation, batch_size=batch,
        providers_used=list(sut.providers_used), images=images_per_call, rounds=len(times),
        median_s=median, min_s=min(times), max_s=max(times), iqr_s=float(q3 - q1), times_s=[float(t) for t in times],
        throughput_ips=images_per_call / median, gflops=achieved_gflops(macs, images_per_call, median) if macs else None,
        session_create_s=sut.session_create_s, model_bytes=sut.model_bytes,
        provider_options=sut.provider_options, **extra,
    )
