"""``fmnist-bench run``'s loop: every case through the measurement core, into one BenchRun."""

from __future__ import annotations

import dataclasses
import functools
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from bench.measure.cases import load_test_split
from bench.measure.core import case_memory_mb, measure, plan
from bench.measure.loadgen import SCENARIO_SKIPPED, Engine, LoadGenUnavailable
from bench.measure.machine import commit_info, machine, yardsticks
from bench.measure.memory import MemoryProbeError
from bench.results.record import BenchRecord, BenchRun, loadgen_words
from bench.runtimes import Case, make_sut
from bench.runtimes.base import ProviderUnavailable
from bench.settings import LOADGEN_OPERATIONS, RunSettings
from trainer.artifacts import Artifacts


def run(artifacts: Artifacts, cases: list[Case], settings: RunSettings, data: str | None = None,
        log: TextIO | None = None, loadgen_logs: Path | None = None) -> BenchRun:
    """Measure ``cases``; progress goes to ``log`` when one is given, LoadGen's logs to ``loadgen_logs`` (a folder
    per record) when one is given."""
    results = BenchRun(machine=machine(settings.threads, settings.yardstick_s), settings=settings.to_dict(), commit=commit_info(),
                       created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    engine, no_loadgen = _engine(settings, loadgen_logs, log)
    split_of = functools.cache(functools.partial(load_test_split, artifacts, data=data))  # one load per model
    for i, case in enumerate(cases, 1):
        split = split_of(case.model)
        _say(log, f"[{i}/{len(cases)}] {case.id} ({len(split.y)} test images)")
        try:
            sut = make_sut(case, artifacts, settings.session)
        except ProviderUnavailable as exc:
            results.records.append(_skipped(case, str(exc)))
            _say(log, f"  skipped: {exc}")
            continue
        records = []
        for operation, batch in plan(settings, len(split.y)):
            if operation in LOADGEN_OPERATIONS and engine is None:
                records.append(_skipped(case, no_loadgen, operation, batch))
                continue
            try:
                record = measure(sut, case, split, operation, batch, settings, engine=engine)
            except SCENARIO_SKIPPED as exc:
                records.append(_skipped(case, str(exc), operation, batch))
                _say(log, f"  {case.id}-{operation}-b{batch} skipped: {exc}")
                continue
            records.append(record)
            _say(log, f"  {record.id:<42} median {record.median_s * 1000:9.3f} ms (IQR {_ms(record.iqr_s)})"
                      f"  {_rate(record.throughput_ips)} img/s"
                      + (f"  accuracy {record.quality['accuracy']:.4f}" if record.quality else "")
                      + (f"  LoadGen: {loadgen_words(record)}" if record.loadgen and not record.server else "")
                      + (f"  server: {record.server['verdict']}" if record.server else ""))
        del sut  # before the memory probe, which runs the case again in a process of its own
        if any(not r.skipped for r in records):
            try:
                peak = case_memory_mb(case, artifacts, settings, len(split.y))
                records = [r if r.skipped else dataclasses.replace(r, peak_rss_mb=peak) for r in records]
                if peak is not None:
                    _say(log, f"  peak resident memory of the case in its own process: {peak:.0f} MB")
            except MemoryProbeError as exc:  # the timings stand; the memory column says nothing rather than something wrong
                _say(log, f"  {exc}")
        results.records.extend(records)
    if any(not r.skipped for r in results.records):  # the peaks again, after the cases: each the best of the two
        results.machine["yardsticks"] = yardsticks(settings.threads, settings.yardstick_s, results.machine["yardsticks"])
    return results


def _engine(settings: RunSettings, logs: Path | None, log: TextIO | None) -> tuple[Engine | None, str]:
    """The run's LoadGen, its own cost measured now (once per run), or why the LoadGen scenarios are skipped."""
    if not set(settings.operations) & set(LOADGEN_OPERATIONS):
        return None, ""
    try:
        engine = Engine(settings.loadgen, logs)
    except LoadGenUnavailable as exc:
        _say(log, f"LoadGen scenarios skipped: {exc}")
        return None, str(exc)
    noop = engine.noop_latency_ms
    _say(log, f"LoadGen's own cost (a no-op system under test, SingleStream): p50 {noop['p50'] * 1000:.1f} µs, "
              f"p99 {noop['p99'] * 1000:.1f} µs per query")
    return engine, ""


def _skipped(case: Case, reason: str, operation: str = "all", batch: int = 0) -> BenchRecord:
    return BenchRecord(case.model, case.variant, case.provider, operation, batch, skipped=reason)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.3f}"


def _rate(per_s: float | None) -> str:
    return f"{'-':>9}" if per_s is None else f"{per_s:9.0f}"


def _say(log: TextIO | None, line: str) -> None:
    if log:
        print(line, file=log, flush=True)
