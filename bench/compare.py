"""Compare two latency reports: ours (``fmnist-bench run``) or pytest-benchmark's saved JSON, in any mix.

Each side becomes {case id: median seconds per call}; the table shows both and new/old, and marks a
regression where new is slower than old by more than the threshold.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from bench.report import BenchReport, SchemaError

# pytest-benchmark names: test_latency[model4-int8-cpu-predict-b128]
_PYTEST_ID = re.compile(r"\[(?P<id>[^\]]+)\]")


def load_medians(path: Path) -> dict[str, float]:
    try:
        payload = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SchemaError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not JSON ({exc})") from None
    if isinstance(payload, dict) and "benchmarks" in payload and "machine_info" in payload:
        medians = {}
        for bench in payload["benchmarks"]:
            found = _PYTEST_ID.search(bench["name"])
            medians[found.group("id") if found else bench["name"]] = float(bench["stats"]["median"])
        return medians
    report = BenchReport.from_dict(payload, str(path))
    return {r.id: r.median_s for r in report.records if not r.skipped}


@dataclass
class Row:
    id: str
    old_s: float | None
    new_s: float | None

    @property
    def ratio(self) -> float | None:
        return self.new_s / self.old_s if self.old_s and self.new_s is not None else None


def compare(old: dict[str, float], new: dict[str, float]) -> list[Row]:
    return [Row(key, old.get(key), new.get(key)) for key in dict.fromkeys([*old, *new])]


def regressions(rows: list[Row], threshold: float) -> list[Row]:
    """Rows where new is slower than old by more than ``threshold`` (0.10 for 10%)."""
    return [row for row in rows if row.ratio is not None and row.ratio > 1 + threshold]


def parse_threshold(text: str) -> float:
    """'10%' or '0.1' -> 0.1"""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"--fail-on-regression {text!r}: expected a percentage like 10%") from None
    if value < 0:
        raise ValueError(f"--fail-on-regression {text!r}: must not be negative")
    return value


def format_table(rows: list[Row], threshold: float | None) -> str:
    flagged = {id(row) for row in regressions(rows, threshold)} if threshold is not None else set()
    width = max([len(row.id) for row in rows] + [4])
    lines = [f"{'case':<{width}}  {'old ms':>10}  {'new ms':>10}  {'new/old':>8}", "-" * (width + 34)]
    for row in rows:
        old = f"{row.old_s * 1000:10.2f}" if row.old_s is not None else f"{'-':>10}"
        new = f"{row.new_s * 1000:10.2f}" if row.new_s is not None else f"{'-':>10}"
        ratio = f"{row.ratio:8.3f}" if row.ratio is not None else f"{'-':>8}"
        mark = "  REGRESSION" if id(row) in flagged else ""
        lines.append(f"{row.id:<{width}}  {old}  {new}  {ratio}{mark}")
    return "\n".join(lines)
