"""Compare two saved results, ours (``fmnist-bench run``) or a pytest-benchmark save of ``pytest bench``.

pytest-benchmark flags a fixed percentage whatever the noise; on a shared machine sub-millisecond latencies
move by tens of percent between rounds, so a fixed gate is either noise or blind. Here a case is a
**regression** only when the ratio of medians (new/old) exceeds ``1 + threshold`` *and* the 95% bootstrap
interval of that ratio, from each run's own rounds, lies wholly above 1. One over the threshold inside the noise
is reported as such; results without rounds (schema 1) are judged on the threshold alone, and say so. A
comparison that compared nothing is an error, not a pass.

A server record (LoadGen's Server scenario) compares its max rate under the latency bound, old/new (above 1: the
new one serves less), within the searches' own brackets (the true maximum lies between the highest VALID and
the lowest INVALID rate tried). An accuracy-mode record is not timed: its accuracy is shown.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.results.record import BenchRecord, BenchRun
from bench.results.store import differences, load_any

CONFIDENCE = 0.95
RESAMPLES = 4000


class CompareError(ValueError):
    """The comparison cannot be made (or made nothing); the message says why."""


@dataclass
class Row:
    id: str
    old: BenchRecord | None
    new: BenchRecord | None
    ratio: float | None = None  # new median / old median
    low: float | None = None  # bootstrap interval of the ratio
    high: float | None = None
    verdict: str = ""  # regression | slower, within noise | faster | same | only in old | only in new | skipped
    unit: str = "ms"  # what old/new show: ms (a median) or q/s (a server's max rate)
    judged: bool = False  # compared in both (what a comparison must have at least one of)

    def shown(self, record: BenchRecord | None) -> str:
        """The old or new column: the median in ms, a server's max rate, or '-'."""
        if record is None or record.skipped:
            return f"{'-':>10}"
        if self.unit == "q/s":
            found = record.server or {}
            return f"{found['max_qps']:>10,.0f}" if found.get("max_qps") is not None else f"{'none':>10}"
        return f"{record.median_s * 1000:10.3f}" if record.median_s is not None else f"{'-':>10}"


def parse_threshold(text: str) -> float:
    """'10%' -> 0.10. The percent sign is required: a bare '10' would otherwise mean 1000%."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", text or "")
    if not match:
        raise CompareError(f"--fail-on-regression {text[:40]!r}: expected a percentage like 10%")
    value = float(match.group(1)) / 100
    if not 0 < value < 10:
        raise CompareError(f"--fail-on-regression {text[:40]!r}: expected more than 0% and less than 1000%")
    return value


def ratio_interval(old: list[float], new: list[float], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                   seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of median(new) / median(old), resampling each run's rounds."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(old, dtype=float), np.asarray(new, dtype=float)
    med_a = np.median(a[rng.integers(0, len(a), (resamples, len(a)))], axis=1)
    med_b = np.median(b[rng.integers(0, len(b), (resamples, len(b)))], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(med_b / med_a, [tail, 100 - tail])
    return float(low), float(high)


def judge(row: Row, threshold: float) -> Row:
    old, new = row.old, row.new
    if old is None or new is None:
        row.verdict = "only in old" if new is None else "only in new"
    elif old.skipped or new.skipped:
        row.verdict = f"skipped in {'old' if old.skipped else 'new'}"
    elif old.server or new.server:
        judge_server(row, threshold)
    elif old.operation == "accuracy":
        before, after = ((r.quality or {}).get("accuracy") for r in (old, new))
        row.verdict = f"not timed: accuracy {_fraction(before)} -> {_fraction(after)}"
    else:
        row.judged, row.ratio = True, new.median_s / old.median_s
        if old.times_s and new.times_s:
            row.low, row.high = ratio_interval(old.times_s, new.times_s)
        row.verdict = _verdict(row, threshold, "slower, within noise")  # schema 1: no rounds, the threshold alone
    return row


def judge_server(row: Row, threshold: float) -> Row:
    """A server record: old max rate / new max rate (above 1: slower), the interval from both searches' brackets."""
    row.unit = "q/s"
    old, new = row.old.server, row.new.server
    if not old or not new:
        row.verdict = "not compared: a server record without its search"
        return row
    if old["latency_bound_ms"] != new["latency_bound_ms"]:
        row.verdict = f"not compared: latency bounds differ ({old['latency_bound_ms']:g} vs {new['latency_bound_ms']:g} ms)"
        return row
    row.judged = True
    bound = f"p99 ≤ {new['latency_bound_ms']:g} ms"
    if old["max_qps"] is None or new["max_qps"] is None:
        row.verdict = ("same: no rate meets " + bound + " in either" if old["max_qps"] is None and new["max_qps"] is None
                       else "REGRESSION: no rate meets " + bound + " now" if new["max_qps"] is None
                       else "faster: a rate meets " + bound + " now")
        return row
    row.ratio = old["max_qps"] / new["max_qps"]
    # Each maximum lies in [highest VALID, lowest INVALID); no INVALID rate reached: unbounded above.
    old_high, new_high = (found["invalid_above_qps"] or math.inf for found in (old, new))
    row.low, row.high = old["max_qps"] / new_high, old_high / new["max_qps"]
    row.verdict = (_verdict(row, threshold, "slower, within the search's resolution")
                   + f" (p99 {_fraction(old['p99_ms'], '.3g')} -> {_fraction(new['p99_ms'], '.3g')} ms at the max rate)")
    return row


def _verdict(row: Row, threshold: float, within: str) -> str:
    """Beyond the threshold and beyond the interval (none: the threshold alone) is a change; the threshold alone is not."""
    if row.ratio > 1 + threshold:
        return "REGRESSION" if row.low is None or row.low > 1 else within
    if row.ratio < 1 / (1 + threshold) and (row.high is None or row.high < 1):
        return "faster"
    return "same"


def _fraction(value: float | None, fmt: str = ".4f") -> str:
    return "?" if value is None else format(value, fmt)


@dataclass
class Comparison:
    old: BenchRun
    new: BenchRun
    rows: list[Row]
    threshold: float
    notes: list[str]

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict.startswith("REGRESSION")]


def compare(old_path: Path, new_path: Path, threshold: float = 0.10) -> Comparison:
    old, new = load_any(old_path), load_any(new_path)
    by_old = {r.id: r for r in old.records}
    by_new = {r.id: r for r in new.records}
    rows = [judge(Row(key, by_old.get(key), by_new.get(key)), threshold) for key in dict.fromkeys([*by_old, *by_new])]
    if not any(r.judged for r in rows):
        timed_old = sum(1 for r in old.records if not r.skipped)
        timed_new = sum(1 for r in new.records if not r.skipped)
        raise CompareError(f"{old_path} and {new_path}: no case was timed in both ({timed_old} timed in old, "
                           f"{timed_new} in new, {len(set(by_old) & set(by_new))} case ids shared): nothing was compared")
    notes = []
    machines = differences(old.machine, new.machine)
    if machines:
        notes.append("different machines or software: " + "; ".join(machines) + " (ratios compare the machines too)")
    if not all(r.old.times_s and r.new.times_s for r in rows if r.ratio is not None and r.unit == "ms"):
        notes.append("some results keep no rounds (schema 1): those are judged on the threshold alone, without noise")
    return Comparison(old, new, rows, threshold, notes)


def format_table(comparison: Comparison) -> str:
    rows = comparison.rows
    width = max([len(row.id) for row in rows] + [4])
    lines = [f"{'case':<{width}}  {'old':>10}  {'new':>10}  {'new/old':>8}  {'interval':>15}  verdict",
             "-" * (width + 70)]
    for row in rows:
        ratio = f"{row.ratio:8.3f}" if row.ratio is not None else f"{'-':>8}"
        interval = f"{row.low:6.3f} - {row.high:6.3f}" if row.low is not None else f"{'-':>15}"
        lines.append(f"{row.id:<{width}}  {row.shown(row.old)}  {row.shown(row.new)}  {ratio}  {interval}  {row.verdict}")
    lines.append("old, new: median ms per call; server rows: the max queries/s under the latency bound, compared as "
                 "old/new (above 1: it serves less), interval from the searches' brackets")
    lines.append(f"regression: new/old over {1 + comparison.threshold:.2f} and its {CONFIDENCE:.0%} bootstrap interval "
                 "above 1 (beyond the runs' own noise)")
    lines += [f"note: {note}" for note in comparison.notes]
    return "\n".join(lines)
