"""The measurement core: one (case, operation, batch) measured into one BenchRecord.

The batch operations (predict, evaluate) are timed rounds of a whole-split pass. MLPerf's scenarios are driven by
MLPerf LoadGen (bench/measure/loadgen.py), which issues and times the queries: the record takes its per-query
latencies, verdict and percentiles; our code only warms the runtime up (on ``clock``) and answers the queries.
Both front doors call :func:`measure` (pytest-benchmark with a timer handing the same calls to
``benchmark.pedantic``), so either yields the same record; only the clock readings differ.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score

from bench.measure import loadgen_log
from bench.measure.cases import HeldOutSplit
from bench.measure.loadgen import Engine, Run
from bench.measure.memory import case_peak_rss_mb
from bench.measure.profile import as_records
from bench.measure.quality import cross_entropy, quality
from bench.measure.work import achieved_gflops, multiply_adds_per_image
from bench.results.record import BenchRecord, ServerSearch, record_id
from bench.runtimes import Case
from bench.runtimes.base import SUT
from bench.settings import LOADGEN_OPERATIONS, RunSettings
from exporter.contract import check_output
from trainer.artifacts import Artifacts

# timer(call, rounds, warmup) -> seconds of each of ``rounds`` timed calls, after ``warmup`` untimed ones.
Timer = Callable[[Callable[[], object], int, int], list[float]]
Clock = Callable[[], float]  # seconds on a monotonic clock: time.perf_counter, or a test's own
# Device-only timing (CUDA) of a stream: the median of at most this many IOBinding runs.
DEVICE_RUNS = 1000


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
    """The median round (and its spread), throughput from the MEDIAN round (never the fastest: one lucky round
    is not the rate), and GFLOP/s at that rate."""
    median = statistics.median(times_s)
    q1, q3 = np.percentile(times_s, [25, 75])
    return {"rounds": len(times_s), "median_s": median, "min_s": min(times_s), "max_s": max(times_s),
            "iqr_s": float(q3 - q1), "times_s": [float(t) for t in times_s], "throughput_ips": images_per_call / median,
            "gflops": achieved_gflops(macs_per_image, images_per_call, median) if macs_per_image else None}


def latency_figures(times_s: list[float]) -> dict[str, float]:
    """A stream's latency per query in ms: p50, p90, p99, the mean, and the number of queries. A percentile is
    the ranked query LoadGen reports (``sorted[int(n * p)]``, no interpolation), so fed LoadGen's per-query
    latencies these are LoadGen's own figures."""
    ranked = np.sort(np.asarray(times_s, dtype=float)) * 1000
    n = len(ranked)
    p50, p90, p99 = (float(ranked[min(n - 1, int(n * p))]) for p in (0.50, 0.90, 0.99))
    return {"p50": p50, "p90": p90, "p99": p99, "mean": float(ranked.mean()), "queries": n}


def case_memory_mb(case: Case, artifacts: Artifacts, settings: RunSettings, test_images: int) -> float | None:
    """The case's own peak resident memory (bench/measure/memory.py) at the largest batch it is measured at;
    None with ``--memory off``. Raises MemoryProbeError."""
    if settings.memory == "off":
        return None
    session = dataclasses.replace(settings.session, intra_op_threads=case.threads)
    return case_peak_rss_mb(case, artifacts, session, max(batch for _, batch in plan(settings, test_images)))


def plan(settings: RunSettings, test_images: int) -> list[tuple[str, int]]:
    """The (operation, batch size) pairs one case is measured at, in order; ``WHOLE_SPLIT`` resolved. Offline runs
    at every batch size, accuracy mode at the first; the streams at their own query sizes."""
    wanted = settings.operations
    batches = list(dict.fromkeys(b or test_images for b in settings.batch_sizes))
    pairs = [(operation, batch) for batch in batches for operation in ("predict", "evaluate", "offline")
             if operation in wanted]
    if "accuracy" in wanted:
        pairs.append(("accuracy", batches[0]))
    streams = {"single-stream": 1, "multi-stream": settings.loadgen.samples_per_query, "server": 1}
    return pairs + [(operation, size) for operation, size in streams.items() if operation in wanted]


def measure(sut: SUT, case: Case, split: HeldOutSplit, operation: str, batch: int, settings: RunSettings,
            timer: Timer | None = None, clock: Clock = time.perf_counter, engine: Engine | None = None) -> BenchRecord:
    """Measure one scenario of one case at a resolved ``batch``. ``timer`` times the rounds (pytest-benchmark's),
    ``clock`` everything else (and the rounds by default). ``engine``: the run's LoadGen; without one a LoadGen
    scenario makes its own, keeping no logs. Raises one of SCENARIO_SKIPPED (bench/measure/loadgen.py)."""
    if operation in LOADGEN_OPERATIONS:
        return _measure_with_loadgen(sut, case, split, operation, batch, settings, timer, clock,
                                     engine or Engine(settings.loadgen))
    own = functools.partial(perf_timer, clock=clock)
    x, y = split.x, split.y
    call = {"predict": lambda: sut.predict(x, batch), "evaluate": lambda: evaluate(sut, x, y, batch)}[operation]
    first = own(call, 1, 0)[0] if settings.warmup_rounds else None  # the first call of this shape, on its own
    times = (timer or own)(call, settings.rounds, max(0, settings.warmup_rounds - 1))
    if operation == "predict":
        probabilities = sut.predict(x, batch)
        check_output(probabilities, len(y), f"{case.id} ({case.path.name})")
        extra = {"quality": quality(y, probabilities, split.class_names)}
        if batch == plan(settings, len(y))[0][1]:  # the first batch size: profile and cross-check it
            shares = sut.profile(x[:batch]) if settings.profile == "on" else None
            extra["profile"] = as_records(shares) if shares else None
            if settings.tools == "on":
                extra["tool"] = sut.tool_figures(batch, settings.loadgen.min_duration_s)
    else:
        loss, accuracy = evaluate(sut, x, y, batch)
        extra = {"quality": {"accuracy": accuracy, "loss": loss}}
    if sut.measures_device:
        extra["device_median_s"] = device_median_s(sut, x, batch, settings.rounds)
    figures = round_figures(times, len(y), _case_macs(case))
    return _record(sut, case, operation, batch, len(y), figures, {**extra, "first_run_s": first})


def evaluate(sut: SUT, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
    """(categorical cross-entropy, accuracy), as Keras' evaluate reports them (without regularisation)."""
    probabilities = sut.predict(x, batch_size)
    return cross_entropy(y, probabilities), float(accuracy_score(y, probabilities.argmax(-1)))


def warm_up_call(sut: SUT, x: np.ndarray, batch: int) -> Callable[[], np.ndarray]:
    """A call that sends the next ``batch`` test images as one query, cycling through the split: the warm-up
    before LoadGen's test, which also tells LoadGen what a query costs."""
    starts = itertools.cycle(range(0, max(1, len(x) - batch + 1), batch))
    return lambda: sut(x[(start := next(starts)):start + batch])


def _measure_with_loadgen(sut: SUT, case: Case, split: HeldOutSplit, operation: str, batch: int, settings: RunSettings,
                          timer: Timer | None, clock: Clock, engine: Engine) -> BenchRecord:
    """One LoadGen scenario. The warm-up runs on ``clock``: untimed by LoadGen, it tells LoadGen what to expect
    (a query's latency, or the offline rate), and its first call is the record's ``first_run_s``."""
    own = functools.partial(perf_timer, clock=clock)
    x, y = split.x, split.y
    name = record_id(case.model, case.variant, case.provider, operation, batch, case.threads)
    # A batch warm-up is a few calls (a whole-split batch can take seconds). LoadGen plans how many queries (or
    # offline samples) fill the minimum duration from the expected cost, and a plan from a slow query ends early:
    # INVALID, minimum duration not met. So the fastest warm-up call plans it; the median one is the server's
    # capacity estimate and a query's latency alone.
    stream = operation in ("single-stream", "multi-stream", "server")
    warmups = settings.loadgen.warmup_queries if stream else settings.warmup_rounds + 2
    warm = own(warm_up_call(sut, x, batch), warmups, 0)
    expected_s = min(warm)  # one query of ``batch`` images

    def scenario() -> tuple[ServerSearch | None, Run]:
        if operation in ("single-stream", "multi-stream"):
            return None, engine.stream(sut, split, operation, expected_s, name)
        if operation == "offline":
            return None, engine.offline(sut, split, batch, batch / expected_s, name)
        if operation == "accuracy":
            return None, engine.accuracy(sut, split, batch, name)
        return engine.server(sut, split, statistics.median(warm), name)

    outcomes: list[tuple[ServerSearch | None, Run]] = []
    call = lambda: outcomes.append(scenario())  # noqa: E731 - the one call a timer times: LoadGen's whole test
    if timer is None:
        call()
    else:
        timer(call, 1, 0)
    found, run = outcomes[-1]
    result = dataclasses.replace(run.result, noop_latency_ms=dict(engine.noop_latency_ms))
    extra: dict = {"first_run_s": warm[0]}
    if operation == "accuracy":
        check_output(run.outputs, len(y), f"{case.id} ({case.path.name}) through LoadGen")
        extra["quality"] = quality(y, run.outputs, split.class_names)
        # The check: the outputs LoadGen logged give the accuracy the predict pass gives at the same batch size.
        result = dataclasses.replace(result, accuracy=extra["quality"]["accuracy"],
                                     predict_accuracy=float(accuracy_score(y, sut.predict(x, batch).argmax(-1))))
    if not stream:
        if run.samples:
            figures = round_figures(loadgen_log.batch_times_s(run.samples), batch, _case_macs(case))
        else:  # LoadGen's trace off (--mlperf-rules): the mean batch of LoadGen's whole test
            batches = math.ceil(result.samples_per_query / batch)
            figures = {"rounds": batches, "median_s": run.wall_s / batches, "min_s": None, "max_s": None, "iqr_s": None,
                       "times_s": None, "throughput_ips": batch * batches / run.wall_s, "gflops": None}
        if result.samples_per_s:  # LoadGen's rate over the whole query, not one batch's
            figures.update(throughput_ips=result.samples_per_s, gflops=_gflops_at(case, result.samples_per_s))
        return _record(sut, case, operation, batch, batch, figures, {**extra, "loadgen": result.to_dict()})

    if run.samples:
        times = loadgen_log.query_latencies_s(run.samples)
        figures = round_figures(times, batch, _case_macs(case))
        latency = latency_figures(times)
    else:  # LoadGen's trace off (--mlperf-rules): its percentiles, without each query
        latency = {**{k: result.latency_ms[k] for k in ("p50", "p90", "p99", "mean")}, "queries": result.queries}
        figures = {"rounds": result.queries, "min_s": result.latency_ms["min"] / 1000,
                   "max_s": result.latency_ms["max"] / 1000, "iqr_s": None, "times_s": None}
    # A query's median is LoadGen's p50 (its ranked query), so the record and LoadGen's summary say the same.
    median_s = latency["p50"] / 1000
    figures.update(median_s=median_s, throughput_ips=batch / median_s, gflops=_gflops_at(case, batch / median_s))
    extra["latency_ms"] = latency
    if operation == "single-stream":  # the runtime's own call overhead, and its own tool, beside the row
        trivial = sut.trivial()  # the overhead: the median single query on it, through the same call path
        overhead_s = statistics.median(own(warm_up_call(trivial, x, 1), 200, 20)) if trivial is not None else None
        extra["overhead_ms"] = None if overhead_s is None else overhead_s * 1000
        extra["tool"] = sut.tool_figures(1, settings.loadgen.min_duration_s) if settings.tools == "on" else None
    if found is not None:
        extra["server"] = found.to_dict()
        rate = found.max_qps and result.samples_per_s  # what LoadGen completed at the max VALID rate
        figures.update(throughput_ips=rate or None, gflops=_gflops_at(case, rate) if rate else None)
    elif sut.measures_device:
        extra["device_median_s"] = device_median_s(sut, x[:batch], batch, min(DEVICE_RUNS, latency["queries"]))
    return _record(sut, case, operation, batch, batch, figures, {**extra, "loadgen": result.to_dict()})


def device_median_s(sut: SUT, x: np.ndarray, batch: int, rounds: int) -> float:
    """Device-only time of what one call of the scenario computes, as trtexec separates it from copies:
    the median of ``rounds`` IOBinding runs of one ``batch`` (input already on the device, output left
    there, synchronised), times the number of batches in the call (the last, shorter one counted whole)."""
    images = len(x) if batch > 1 else 1
    run = sut.device_run(x[:batch])
    return statistics.median(perf_timer(run, rounds, 1)) * math.ceil(images / batch)


@functools.lru_cache(maxsize=64)
def _macs(path: Path, mtime_ns: int) -> int:
    return multiply_adds_per_image(path)


def _case_macs(case: Case) -> int:
    return _macs(case.path, case.path.stat().st_mtime_ns)


def _gflops_at(case: Case, images_per_s: float) -> float | None:
    macs = _case_macs(case)
    return achieved_gflops(macs, images_per_s, 1.0) if macs else None


def _record(sut: SUT, case: Case, operation: str, batch: int, images_per_call: int, figures: dict,
            extra: dict) -> BenchRecord:
    return BenchRecord(
        model=case.model, variant=case.variant, provider=case.provider, operation=operation, batch_size=batch,
        threads=case.threads, providers_used=list(sut.providers_used), images=images_per_call, **figures,
        session_create_s=sut.session_create_s, model_bytes=sut.model_bytes,
        provider_options=sut.provider_options, **extra,
    )
