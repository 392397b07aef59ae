"""The measurement core: one (case, operation, batch) measured into one BenchRecord.

Two engines, one record. The batch operations (predict, evaluate) are timed rounds of a whole-split pass,
read on :func:`perf_timer`'s clock. The scenarios of MLPerf (single-stream, multi-stream, server, offline,
and accuracy mode) are driven by MLPerf LoadGen (bench/measure/loadgen.py): LoadGen issues the queries and
times them, and the record takes LoadGen's per-query latencies (its trace) and LoadGen's own verdict and
percentiles (its detail log); our code only warms the runtime up (on ``clock``) and answers the queries.

Both front doors call :func:`measure`: ``fmnist-bench run`` with :func:`perf_timer`, and the pytest-benchmark
suite with a timer that hands the same calls to ``benchmark.pedantic`` (for a LoadGen scenario, the one call
that runs LoadGen's test). So a case measured through either door follows the same scenario rules and yields
the same record: the same fields, the same model size of what actually ran, the same quality figures. Only
the clock readings differ.
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
from sklearn.metrics import accuracy_score

from bench.measure import scenarios
from bench.runtimes import Case
from bench.measure.cases import HeldOutSplit
from bench.measure.loadgen import Engine, Run, with_cost
from bench.measure.memory import case_peak_rss_mb
from bench.measure.profile import as_records
from bench.measure.work import achieved_gflops, multiply_adds_per_image
from bench.measure.quality import quality
from bench.results.record import BenchRecord, record_id
from bench.settings import LOADGEN_OPERATIONS, RunSettings
from bench.runtimes.base import SUT
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
    """What a batch record derives from its timed rounds: the median round (and its spread), throughput from
    the MEDIAN round (never the fastest: one lucky round is not the rate), and GFLOP/s at that rate."""
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
    """The case's own peak resident memory (bench/measure/memory.py) at the largest batch it is measured at, for every
    record of the case; None with ``--memory off``. Raises MemoryProbeError."""
    if settings.memory == "off":
        return None
    session = dataclasses.replace(settings.session, intra_op_threads=case.threads)
    return case_peak_rss_mb(case, artifacts, session, max(batch for _, batch in plan(settings, test_images)))


def plan(settings: RunSettings, test_images: int) -> list[tuple[str, int]]:
    """The (operation, batch size) pairs one case is measured at, in order; ``WHOLE_SPLIT`` resolved. Offline runs
    at every batch size, accuracy mode at the first; the streams at their own query sizes."""
    wanted = settings.operations
    batches = list(dict.fromkeys(b or test_images for b in settings.batch_sizes))
    pairs = []
    for batch in batches:
        pairs += [(operation, batch) for operation in ("predict", "evaluate", "offline") if operation in wanted]
    if "accuracy" in wanted:
        pairs.append(("accuracy", batches[0]))
    streams = {"single-stream": 1, "multi-stream": settings.loadgen.samples_per_query, "server": 1}
    pairs += [(operation, size) for operation, size in streams.items() if operation in wanted]
    return pairs


@functools.lru_cache(maxsize=64)
def _macs(path: Path, mtime_ns: int) -> int:
    return multiply_adds_per_image(path)


def measure(sut: SUT, case: Case, split: HeldOutSplit, operation: str, batch: int, settings: RunSettings,
            timer: Timer | None = None, clock: Clock = time.perf_counter, engine: Engine | None = None) -> BenchRecord:
    """Measure one scenario of one case; ``batch`` is resolved (never ``WHOLE_SPLIT``). ``timer`` times the
    rounds (pytest-benchmark's, for that front door), ``clock`` everything else (and the rounds by default).
    ``engine``: the run's LoadGen (its logs folder and its own cost, measured once); a LoadGen scenario without one
    makes its own, keeping no logs. Raises one of SCENARIO_SKIPPED (bench/measure/loadgen.py) for a LoadGen scenario
    that cannot run: LoadGen not installed, or a server search budget too short for one trial."""
    if operation in LOADGEN_OPERATIONS:
        return _measure_with_loadgen(sut, case, split, operation, batch, settings, timer, clock,
                                     engine or Engine(settings.loadgen))
    own = functools.partial(perf_timer, clock=clock)
    timer = timer or own
    x, y = split.x, split.y
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
                extra["tool"] = sut.tool_figures(batch, settings.loadgen.min_duration_s)
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
    times = timer(scenarios.warm_up_call(trivial, x, 1), queries, 20)
    return statistics.median(times) * 1000


def _measure_with_loadgen(sut: SUT, case: Case, split: HeldOutSplit, operation: str, batch: int, settings: RunSettings,
                          timer: Timer | None, clock: Clock, engine: Engine) -> BenchRecord:
    """One LoadGen scenario. The warm-up runs on ``clock``: untimed by LoadGen, it tells LoadGen what to expect
    (a query's latency, or the offline rate), and its first call is the record's ``first_run_s``."""
    own = functools.partial(perf_timer, clock=clock)
    x, y = split.x, split.y
    name = record_id(case.model, case.variant, case.provider, operation, batch, case.threads)
    stream = operation in ("single-stream", "multi-stream", "server")
    # A batch warm-up is a few calls (a whole-split batch can take seconds). LoadGen plans how many queries (or
    # offline samples) fill the minimum duration from the expected cost, and a plan from a slow query ends early:
    # INVALID, minimum duration not met. So the fastest warm-up call plans it; the median one is the server's
    # capacity estimate and a query's latency alone.
    warmups = settings.loadgen.warmup_queries if stream else settings.warmup_rounds + 2
    warm = own(scenarios.warm_up_call(sut, x, batch), warmups, 0)
    expected_s, typical_s = min(warm), statistics.median(warm)  # one query of ``batch`` images
    found = None

    def scenario() -> Run:
        nonlocal found
        if operation == "single-stream":
            return engine.single_stream(sut, split, expected_s, name)
        if operation == "multi-stream":
            return engine.multi_stream(sut, split, expected_s, name)
        if operation == "offline":
            return engine.offline(sut, split, batch, batch / expected_s, name)
        if operation == "accuracy":
            return engine.accuracy(sut, split, batch, name)
        found, best = engine.server(sut, split, typical_s, name)
        return best

    runs: list[Run] = []
    call = lambda: runs.append(scenario())  # noqa: E731 - the one call a timer times: LoadGen's whole test
    if timer is not None:
        timer(call, 1, 0)
    else:
        call()
    run = runs[-1]
    result = with_cost(run.result, engine.noop_latency_ms())
    extra: dict = {"first_run_s": warm[0]}
    if operation == "accuracy":
        check_output(run.outputs, len(y), f"{case.id} ({case.path.name}) through LoadGen")
        extra["quality"] = quality(y, run.outputs, split.class_names)
        # The check: the outputs LoadGen logged give the accuracy the predict pass gives at the same batch size.
        predicted = scenarios.predict(sut, x, batch)
        result = dataclasses.replace(result, accuracy=extra["quality"]["accuracy"],
                                     predict_accuracy=float(accuracy_score(y, predicted.argmax(-1))))
    if operation in ("offline", "accuracy"):
        if run.batch_times_s:
            figures = round_figures(run.batch_times_s, batch, _case_macs(case))
        else:  # LoadGen's trace off (--mlperf-rules): the mean batch of LoadGen's whole test
            batches = math.ceil(result.samples_per_query / batch)
            figures = {"rounds": batches, "median_s": run.wall_s / batches, "min_s": None, "max_s": None, "iqr_s": None,
                       "times_s": None, "throughput_ips": batch * batches / run.wall_s, "gflops": None}
        if result.samples_per_s:  # LoadGen's rate over the whole query, not one batch's
            figures.update(throughput_ips=result.samples_per_s,
                           gflops=_gflops_at(case, result.samples_per_s))
        return _loadgen_record(sut, case, operation, batch, batch, figures, result, extra)

    times = run.query_latencies_s
    images = batch  # per query: 1, or samples_per_query
    if times:
        figures = round_figures(times, images, _case_macs(case))
        latency = latency_figures(times)
    else:  # LoadGen's trace off (--mlperf-rules): its percentiles, without each query
        latency = {**{k: result.latency_ms[k] for k in ("p50", "p90", "p99", "mean")}, "queries": result.queries}
        p50_s = latency["p50"] / 1000
        figures = {"rounds": result.queries, "median_s": p50_s, "min_s": result.latency_ms["min"] / 1000,
                   "max_s": result.latency_ms["max"] / 1000, "iqr_s": None, "times_s": None,
                   "throughput_ips": images / p50_s, "gflops": _gflops_at(case, images / p50_s)}
    # A query's median is LoadGen's p50 (its ranked query), so the record and LoadGen's summary say the same.
    median_s = latency["p50"] / 1000
    figures.update(median_s=median_s, throughput_ips=images / median_s, gflops=_gflops_at(case, images / median_s))
    extra["latency_ms"] = latency
    if operation == "single-stream":  # the runtime's own call overhead, and its own tool, beside the row
        extra["overhead_ms"] = call_overhead_ms(sut, x, own)
        extra["tool"] = sut.tool_figures(1, settings.loadgen.min_duration_s) if settings.tools == "on" else None
    if found is not None:
        extra["server"] = found.to_dict()
        rate = found.max_qps and result.samples_per_s  # what LoadGen completed at the max VALID rate
        figures.update(throughput_ips=rate or None, gflops=_gflops_at(case, rate) if rate else None)
    if sut.measures_device and operation != "server":
        device_runs = min(DEVICE_RUNS, len(times) if times else result.queries)
        extra["device_median_s"] = device_median_s(sut, x[:images], images, device_runs)
    return _loadgen_record(sut, case, operation, batch, images, figures, result, extra)


def device_median_s(sut: SUT, x: np.ndarray, batch: int, rounds: int) -> float:
    """Device-only time of what one call of the scenario computes, as trtexec separates it from copies:
    the median of ``rounds`` IOBinding runs of one ``batch`` (input already on the device, output left
    there, synchronised), times the number of batches in the call (the last, shorter one counted whole)."""
    images = len(x) if batch > 1 else 1
    run = sut.device_run(x[:batch])
    return statistics.median(perf_timer(run, rounds, 1)) * math.ceil(images / batch)


def _case_macs(case: Case) -> int:
    return _macs(case.path, case.path.stat().st_mtime_ns)


def _gflops_at(case: Case, images_per_s: float) -> float | None:
    macs = _case_macs(case)
    return achieved_gflops(macs, images_per_s, 1.0) if macs else None


def _record(sut: SUT, case: Case, operation: str, batch: int, images_per_call: int, times: list[float], extra: dict) -> BenchRecord:
    return BenchRecord(
        model=case.model, variant=case.variant, provider=case.provider, operation=operation, batch_size=batch,
        threads=case.threads,
        providers_used=list(sut.providers_used), images=images_per_call,
        **round_figures(times, images_per_call, _case_macs(case)),
        session_create_s=sut.session_create_s, model_bytes=sut.model_bytes,
        provider_options=sut.provider_options, **extra,
    )


def _loadgen_record(sut: SUT, case: Case, operation: str, batch: int, images_per_call: int, figures: dict,
                    result, extra: dict) -> BenchRecord:
    return BenchRecord(
        model=case.model, variant=case.variant, provider=case.provider, operation=operation, batch_size=batch,
        threads=case.threads, providers_used=list(sut.providers_used), images=images_per_call, **figures,
        session_create_s=sut.session_create_s, model_bytes=sut.model_bytes,
        provider_options=sut.provider_options, loadgen=result.to_dict(), **extra,
    )
