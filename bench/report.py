"""Bench results as plain JSON with a schema version and machine info (as pytest-benchmark's), and a Markdown table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
RECORD_FIELDS = {"model", "variant", "provider", "operation", "batch_size", "median_s"}


@dataclass
class BenchRecord:
    """One (model, variant, provider, operation, batch) measurement, or the reason it was skipped."""

    model: str
    variant: str
    provider: str  # cpu | cuda | keras | tflite: what was asked for
    operation: str  # predict | evaluate | single-stream
    batch_size: int
    providers_used: list[str] = field(default_factory=list)  # what really ran, from the session
    images: int = 0
    rounds: int = 0
    median_s: float | None = None  # per call: a whole-split pass, or one single-stream query
    min_s: float | None = None
    max_s: float | None = None
    throughput_ips: float | None = None
    latency_ms: dict | None = None  # single-stream: p50, p90, p99, mean, queries
    gflops: float | None = None
    session_create_s: float | None = None
    model_bytes: int | None = None
    peak_rss_mb: float | None = None  # the process's peak resident memory while this system under test was measured
    quality: dict | None = None  # accuracy, loss, per_class, confusion_matrix
    skipped: str | None = None

    @property
    def id(self) -> str:
        return f"{self.model}-{self.variant}-{self.provider}-{self.operation}-b{self.batch_size}"


@dataclass
class BenchReport:
    machine: dict
    settings: dict
    created_at: str
    records: list[BenchRecord] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, payload: dict, source: str = "report") -> "BenchReport":
        validate(payload, source)
        records = [BenchRecord(**row) for row in payload["records"]]
        return cls(payload["machine"], payload["settings"], payload["created_at"], records, payload["schema_version"])


class SchemaError(ValueError):
    pass


def validate(payload: dict, source: str) -> None:
    """Refuse a report this toolkit cannot read, naming the file and what is wrong."""
    if not isinstance(payload, dict):
        raise SchemaError(f"{source}: not a JSON object")
    if payload.get("schema_version") != SCHEMA_VERSION:
        raise SchemaError(f"{source}: schema_version {payload.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    for key in ("machine", "settings", "created_at", "records"):
        if key not in payload:
            raise SchemaError(f"{source}: missing {key!r}")
    known = set(BenchRecord.__dataclass_fields__)
    for i, row in enumerate(payload["records"]):
        missing, unknown = RECORD_FIELDS - set(row), set(row) - known
        if missing or unknown:
            raise SchemaError(f"{source}: record {i} " + (f"lacks {sorted(missing)}" if missing else f"has unknown {sorted(unknown)}"))
        if not row.get("skipped") and not isinstance(row["median_s"], (int, float)):
            raise SchemaError(f"{source}: record {i} ({row['model']}) has no median_s and is not skipped")


def markdown(report: BenchReport) -> str:
    machine = report.machine
    lines = [
        f"# Bench {report.created_at}",
        "",
        f"{machine.get('cpu')} ({machine.get('cores')} cores); GPU: {machine.get('gpu') or 'none'}; "
        f"onnxruntime {machine.get('versions', {}).get('onnxruntime-gpu') or machine.get('versions', {}).get('onnxruntime')}; "
        f"large SGEMM {machine.get('sgemm_gflops', float('nan')):.1f} GFLOP/s; commit {machine.get('git_commit')}",
        "",
        "| model | variant | runtime (ran on) | operation | batch | median ms | images/s | p50 / p99 ms | GFLOP/s | accuracy | loss | MB | cold start ms | peak RSS MB |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.records:
        if r.skipped:
            lines.append(f"| {r.model} | {r.variant} | {r.provider} | {r.operation} | {r.batch_size} | skipped: {r.skipped} |||||||||")
            continue
        ran = ", ".join(r.providers_used)
        latency = f"{r.latency_ms['p50']:.2f} / {r.latency_ms['p99']:.2f}" if r.latency_ms else ""
        quality = r.quality or {}
        lines.append(
            f"| {r.model} | {r.variant} | {r.provider} ({ran}) | {r.operation} | {r.batch_size} | {r.median_s * 1000:.1f} | "
            f"{_num(r.throughput_ips, '.0f')} | {latency} | {_num(r.gflops, '.1f')} | {_num(quality.get('accuracy'), '.4f')} | "
            f"{_num(quality.get('loss'), '.4f')} | {_num(r.model_bytes and r.model_bytes / 1e6, '.2f')} | {_num(r.session_create_s and r.session_create_s * 1000, '.0f')} | "
            f"{_num(r.peak_rss_mb, '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def load(path: Path) -> BenchReport:
    try:
        return BenchReport.from_dict(json.loads(path.read_text()), str(path))
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path}: not JSON ({exc})") from None
