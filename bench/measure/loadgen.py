"""MLPerf LoadGen as the engine of the bench's scenarios, for every runtime's system under test (``sut(batch)``
answers one query with its real outputs). The query sample library is the test split, already in memory.

- single-stream, multi-stream, offline and accuracy answer inside LoadGen's issue callback (single-stream's next
  query is issued when this one completes); server answers from one worker thread, in arrival order, so
  LoadGen's Poisson arrivals are never held up by the runtime.
- Each test logs to a folder of its own; the summary and detail logs stay (a reader can check any row against
  them), the trace is read for each query's latency and deleted (it holds every sample).

``mlperf_loadgen`` is imported when an :class:`Engine` is made; where it is not installed those scenarios are
skipped with the reason, the rest of the bench unchanged.
"""

from __future__ import annotations

import functools
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from bench.measure import loadgen_log
from bench.measure.cases import HeldOutSplit
from bench.measure.server import BudgetTooShort, search
from bench.results.record import LoadGenResult, ServerSearch, ServerTrial
from bench.runtimes.base import SUT, ProviderUnavailable
from bench.settings import NOOP_QUERIES, LoadGenSettings
from exporter.contract import OUTPUT_SHAPE, ContractError

INSTALL = ("pip install mlcommons-loadgen; wheels exist for Linux x86_64, macOS and Windows x86_64, elsewhere "
           "pip builds it from source with a C++ compiler")


class LoadGenUnavailable(ProviderUnavailable):
    """mlperf_loadgen cannot be imported here; the message is the skipped rows' reason."""

    def __init__(self, message: str):
        super().__init__(message, "not-installed")


# Why a LoadGen scenario is skipped: LoadGen not installed, or a server search budget too short for one trial.
SCENARIO_SKIPPED = (LoadGenUnavailable, BudgetTooShort)


def import_loadgen() -> ModuleType:
    """The mlperf_loadgen module (of the mlcommons-loadgen package), or LoadGenUnavailable naming what to install."""
    try:
        import mlperf_loadgen  # noqa: PLC0415 - only where a LoadGen scenario runs
    except ImportError as exc:
        if (getattr(exc, "name", None) or "mlperf_loadgen") == "mlperf_loadgen":
            raise LoadGenUnavailable(f"mlcommons-loadgen is not installed, so LoadGen's scenarios are skipped ({INSTALL})") from None
        raise LoadGenUnavailable(f"mlcommons-loadgen cannot be imported ({str(exc).splitlines()[0][:200]})") from None
    return mlperf_loadgen


@dataclass
class Run:
    """One LoadGen test, read back."""

    result: LoadGenResult
    samples: list[tuple[int, int]] | None  # (query, latency ns) of each sample, from LoadGen's trace; None: trace off
    wall_s: float  # LoadGen's StartTest, start to end
    outputs: np.ndarray | None = None  # accuracy mode: the logged probabilities, one row per sample of the split


class Engine:
    """LoadGen for one bench run: its settings, where its logs go (``logs_dir``; None: a temporary folder, removed),
    and its own cost, measured once (``noop_latency_ms``)."""

    def __init__(self, settings: LoadGenSettings, logs_dir: Path | None = None):
        self.settings = settings
        self.lg = import_loadgen()
        self.logs_dir = Path(logs_dir) if logs_dir is not None else None
        self._error: BaseException | None = None

    @functools.cached_property
    def noop_latency_ms(self) -> dict[str, float]:
        """LoadGen's own cost per query, p50, p90, p99 in ms: SingleStream with the run's log settings (its trace
        included) on a system under test that completes each query inside the issue callback. Measured once."""
        lg = self.lg
        response = np.zeros(OUTPUT_SHAPE, np.float32)
        address, size = response.__array_interface__["data"][0], response.nbytes

        def issue(samples) -> None:
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, address, size) for s in samples])

        settings = self.settings.test_settings(lg, "single-stream", samples=NOOP_QUERIES, expected_latency_s=5e-6)
        settings.min_query_count, settings.min_duration_ms = NOOP_QUERIES, 0
        run = self._test("loadgen-noop", issue, NOOP_QUERIES, settings)
        return {key: run.result.latency_ms[key] for key in ("p50", "p90", "p99")}

    def stream(self, sut: SUT, split: HeldOutSplit, operation: str, expected_latency_s: float, name: str) -> Run:
        """single-stream (one sample per query) or multi-stream (``samples_per_query``, answered as one batch);
        LoadGen issues the next query when this one completes."""
        settings = self.settings.test_settings(self.lg, operation, samples=len(split.y),
                                               expected_latency_s=expected_latency_s)
        return self._test(name, lambda samples: self._respond(sut, split.x, samples), len(split.y), settings)

    def offline(self, sut: SUT, split: HeldOutSplit, batch: int, expected_qps: float, name: str) -> Run:
        """Every sample in one query (more, repeated, when the minimum duration needs them), answered in batches of
        ``batch``. LoadGen issues 1.1 x expected rate x minimum duration samples, so a run faster than expected
        ends before the minimum duration (INVALID): it is asked for half as much again as ``expected_qps`` (the
        warm-up's fastest batch), as submitters over-state it."""
        settings = self.settings.test_settings(self.lg, "offline", samples=len(split.y), expected_qps=1.5 * expected_qps)
        return self._test(name, self._in_batches(sut, split.x, batch), len(split.y), settings)

    def accuracy(self, sut: SUT, split: HeldOutSplit, batch: int, name: str) -> Run:
        """LoadGen's AccuracyOnly mode: every sample of the split once (Offline, in batches of ``batch``); the
        outputs LoadGen logged come back in ``Run.outputs``, one row per sample index."""
        settings = self.settings.test_settings(self.lg, "accuracy", samples=len(split.y))
        return self._test(name, self._in_batches(sut, split.x, batch), len(split.y), settings, keep_accuracy_log=True)

    def server(self, sut: SUT, split: HeldOutSplit, service_s: float, name: str) -> tuple[ServerSearch, Run]:
        """The highest rate LoadGen calls VALID under the latency bound (bench/measure/server.py), starting from the
        capacity one query at a time gives (1 / ``service_s``); the search and the trial its figures come from."""
        settings = self.settings
        runs: list[Run] = []

        def trial(rate: float) -> ServerTrial:
            run = self._server_trial(sut, split, rate, f"{name}/trial-{len(runs) + 1:02d}-{rate:.0f}qps")
            runs.append(run)
            r = run.result
            return ServerTrial(rate, r.valid, r.samples_per_s, r.latency_ms.get("p50"), r.latency_ms.get("p99"), r.queries,
                               run.wall_s, why_invalid(r))

        def cost(rate: float) -> float:
            # LoadGen issues queries for the minimum duration or the minimum count, whichever is longer; the margin
            # is the queue's drain after the last arrival.
            duration = 600.0 if settings.mlperf_rules else settings.min_duration_s
            return 1.25 * max(duration, settings.min_queries_for("server") / rate)

        found, best = search(trial, cost, 1 / service_s, settings.latency_bound_ms, settings.server_search_s,
                             alone_ms=service_s * 1000)
        return found, runs[best]

    def _server_trial(self, sut: SUT, split: HeldOutSplit, target_qps: float, name: str) -> Run:
        """One Server test: Poisson arrivals at ``target_qps``, answered by one worker in arrival order."""
        work: queue.SimpleQueue = queue.SimpleQueue()

        def serve() -> None:
            while (sample := work.get()) is not None:
                self._respond(sut, split.x, [sample])

        def issue(samples) -> None:
            for sample in samples:
                work.put(sample)

        worker = threading.Thread(target=serve, name="loadgen-server-worker", daemon=True)
        worker.start()
        settings = self.settings.test_settings(self.lg, "server", samples=len(split.y), target_qps=target_qps)
        try:
            return self._test(name, issue, len(split.y), settings)
        finally:
            work.put(None)
            worker.join()

    def _respond(self, sut: SUT, x: np.ndarray, samples) -> None:
        """Answer ``samples`` as one batch with the runtime's outputs; after a failure, complete them empty. Nothing
        may raise here: this runs on LoadGen's threads, where a Python exception would end the process, so the
        first one is kept and raised when the test ends (:meth:`_test`)."""
        lg = self.lg
        if self._error is None:
            try:
                first = samples[0].index
                batch = x[first:first + 1] if len(samples) == 1 else x[[s.index for s in samples]]
                out = np.ascontiguousarray(sut(batch), dtype=np.float32)
                if out.shape != (len(samples), *OUTPUT_SHAPE):
                    raise ContractError(f"{getattr(sut, 'name', 'the runtime')} answered {len(samples)} samples with an "
                                        f"output of shape {out.shape}")
            except BaseException as exc:  # noqa: BLE001 - kept and raised after the test
                self._error = exc
        if self._error is not None:
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])
            return
        address, row = out.__array_interface__["data"][0], out.strides[0]
        lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, address + i * row, row) for i, s in enumerate(samples)])

    def _in_batches(self, sut: SUT, x: np.ndarray, batch: int):
        def issue(samples) -> None:
            for start in range(0, len(samples), batch):
                self._respond(sut, x, samples[start:start + batch])
        return issue

    def _test(self, name: str, issue, total: int, settings, keep_accuracy_log: bool = False) -> Run:
        """One LoadGen test with ``issue`` as the system under test, the split (``total`` samples, all in memory)
        as the query sample library; its logs read back, then all but the summary and detail logs (and an accuracy
        run's accuracy log) removed."""
        lg = self.lg
        temporary = self.logs_dir is None
        folder = Path(tempfile.mkdtemp(prefix="fmnist-loadgen-")) if temporary else self.logs_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        # MLPerf's performance sample count (--mlperf-rules) may exceed a small split: every sample is loaded anyway.
        settings.performance_sample_count_override = min(settings.performance_sample_count_override, total)
        self._error = None
        sut = lg.ConstructSUT(issue, lambda: None)
        qsl = lg.ConstructQSL(total, total, lambda indices: None, lambda indices: None)
        try:
            start = time.perf_counter()
            lg.StartTestWithLogSettings(sut, qsl, settings, self.settings.log_settings(lg, folder))
            wall_s = time.perf_counter() - start
        finally:
            lg.DestroyQSL(qsl)
            lg.DestroySUT(sut)
        try:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            result = loadgen_log.result(folder, logs=None if temporary else name)
            if settings.scenario == lg.TestScenario.Server:
                result.target_qps = settings.server_target_qps
                result.latency_bound_ms = settings.server_target_latency_ns / 1e6
            samples = loadgen_log.sample_completions(folder)
            outputs = loadgen_log.logged_outputs(folder, total, OUTPUT_SHAPE[0]) if keep_accuracy_log else None
        finally:
            if temporary:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                kept = {loadgen_log.SUMMARY, loadgen_log.DETAIL, *([loadgen_log.ACCURACY] if keep_accuracy_log else [])}
                for path in folder.iterdir():
                    if path.is_file() and path.name not in kept:
                        path.unlink(missing_ok=True)
        return Run(result, samples, wall_s, outputs)


def why_invalid(result: LoadGenResult) -> str:
    """What LoadGen said was not met, in a few words; empty for a VALID result."""
    if result.valid:
        return ""
    unmet = [what for what, met in (("p99 over the latency bound", result.latency_bound_met),
                                     ("early stopping not satisfied", result.early_stopping_met),
                                     ("minimum duration not met", result.min_duration_met),
                                     ("minimum query count not met", result.min_queries_met)) if met is False]
    unmet += [f"LoadGen: {result.invalid_reason.rstrip('.')}"] if result.invalid_reason else []
    return "; ".join(unmet) or "INVALID"
