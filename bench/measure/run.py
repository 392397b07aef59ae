"""``fmnist-bench run``'s loop: every case through the measurement core, into one BenchRun."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import TextIO

from bench.runtimes import Case

from bench.measure.cases import HeldOutSplit, load_test_split
from bench.measure.core import case_memory_mb, measure, plan
from bench.measure.memory import MemoryProbeError
from bench.results.record import BenchRecord, BenchRun
from bench.settings import RunSettings
from bench.measure.machine import commit_info, machine
from bench.runtimes import make_sut
from bench.runtimes.base import ProviderUnavailable
from trainer.artifacts import Artifacts


def run(artifacts: Artifacts, cases: list[Case], settings: RunSettings, data: str | None = None,
        log: TextIO | None = None) -> BenchRun:
    """Measure ``cases``; progress goes to ``log`` when one is given."""
    results = BenchRun(machine=machine(settings.threads), settings=settings.to_dict(), commit=commit_info(),
                       created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    splits: dict[str, HeldOutSplit] = {}
    for i, case in enumerate(cases, 1):
        split = splits.get(case.model) or splits.setdefault(case.model, load_test_split(artifacts, case.model, data))
        _say(log, f"[{i}/{len(cases)}] {case.id} ({len(split.y)} test images)")
        try:
            sut = make_sut(case, artifacts, settings.session)
        except ProviderUnavailable as exc:
            results.records.append(_skipped(case, str(exc)))
            _say(log, f"  skipped: {exc}")
            continue
        records = []
        for operation, batch in plan(settings, len(split.y)):
            record = measure(sut, case, split, operation, batch, settings)
            records.append(record)
            _say(log, f"  {record.id:<42} median {record.median_s * 1000:9.2f} ms (IQR {record.iqr_s * 1000:.2f})"
                      f"  {record.throughput_ips:9.0f} img/s"
                      + (f"  accuracy {record.quality['accuracy']:.4f}" if record.quality else ""))
        del sut  # before the memory probe, which runs the case again in a process of its own
        try:
            peak = case_memory_mb(case, artifacts, settings, len(split.y))
            records = [dataclasses.replace(r, peak_rss_mb=peak) for r in records]
        except MemoryProbeError as exc:  # the timings stand; the memory column says nothing rather than something wrong
            _say(log, f"  {exc}")
        if records and records[0].peak_rss_mb is not None:
            _say(log, f"  peak resident memory of the case in its own process: {records[0].peak_rss_mb:.0f} MB")
        results.records.extend(records)
    return results


def _skipped(case: Case, reason: str) -> BenchRecord:
    return BenchRecord(case.model, case.variant, case.provider, "all", 0, skipped=reason)


def _say(log: TextIO | None, line: str) -> None:
    if log:
        print(line, file=log, flush=True)
