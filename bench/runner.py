"""``fmnist-bench run``'s loop: every case through the measurement core, into one BenchReport."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TextIO

from bench.cases import Case, HeldOutSplit, load_test_split
from bench.measure import measure, plan
from bench.metrics import reset_peak_rss
from bench.report import BenchRecord, BenchReport
from bench.settings import RunSettings
from bench.store import commit_info, machine
from bench.runtimes import make_sut
from bench.sut import ProviderUnavailable
from trainer.artifacts import Artifacts


def run(artifacts: Artifacts, cases: list[Case], settings: RunSettings, data: str | None = None,
        log: TextIO | None = None) -> BenchReport:
    """Measure ``cases``; progress goes to ``log`` when one is given."""
    report = BenchReport(machine=machine(), settings=settings.to_dict(), commit=commit_info(),
                         created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    splits: dict[str, HeldOutSplit] = {}
    for i, case in enumerate(cases, 1):
        split = splits.get(case.model) or splits.setdefault(case.model, load_test_split(artifacts, case.model, data))
        _say(log, f"[{i}/{len(cases)}] {case.id} ({len(split.y)} test images)")
        reset_peak_rss()  # the peak then covers this case: its session and its runs
        try:
            sut = make_sut(case, artifacts, settings.session)
        except ProviderUnavailable as exc:
            report.records.append(_skipped(case, str(exc)))
            _say(log, f"  skipped: {exc}")
            continue
        except ImportError as exc:  # a reference runtime that is not installed
            report.records.append(_skipped(case, f"{case.provider} needs TensorFlow, which is not installed ({exc})"))
            _say(log, f"  skipped: {case.provider} needs TensorFlow")
            continue
        for operation, batch in plan(settings, len(split.y)):
            record = measure(sut, case, split, operation, batch, settings)
            report.records.append(record)
            _say(log, f"  {record.id:<42} median {record.median_s * 1000:9.2f} ms (IQR {record.iqr_s * 1000:.2f})"
                      f"  {record.throughput_ips:9.0f} img/s"
                      + (f"  accuracy {record.quality['accuracy']:.4f}" if record.quality else ""))
    return report


def _skipped(case: Case, reason: str) -> BenchRecord:
    return BenchRecord(case.model, case.variant, case.provider, "all", 0, skipped=reason)


def _say(log: TextIO | None, line: str) -> None:
    if log:
        print(line, file=log, flush=True)
