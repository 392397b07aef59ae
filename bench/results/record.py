"""Bench results as plain JSON with a schema version (as pytest-benchmark's), and their Markdown table.

Schema 2 keeps every timed round (``times_s``) so a comparison can tell a change from noise, and adds
the spread (``iqr_s``) and the CUDA provider's placement and device-only figures. Schema 1 reports
(median, min and max only) are still read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from bench.measure.peaks import describe_yardsticks
from trainer.artifacts import clip
from trainer.environment import describe_machine
from trainer.schema import check_fields, mismatch

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass
class BenchRecord:
    """One (model, variant, provider, operation, batch) measurement, or the reason it was skipped."""

    model: str
    variant: str
    provider: str  # cpu | cuda | keras | tflite: what was asked for
    operation: str  # predict | evaluate | single-stream
    batch_size: int
    providers_used: list[str] = field(default_factory=list)  # what really ran, from the session
    images: int = 0  # per timed call: the whole split, or 1 for a single-stream query
    rounds: int = 0
    median_s: float | None = None  # per call: a whole-split pass, or one single-stream query
    min_s: float | None = None
    max_s: float | None = None
    iqr_s: float | None = None  # interquartile range of the rounds: the run's own noise
    times_s: list[float] | None = None  # every timed round, in order
    throughput_ips: float | None = None
    latency_ms: dict[str, float] | None = None  # single-stream: p50, p90, p99, mean, queries
    # single-stream: the median query on a trivial model of the same interface, same runtime and call path
    # (bench/runtimes/trivial.py): the runtime's own call overhead, the rest of p50 being the model's compute.
    overhead_ms: float | None = None
    gflops: float | None = None
    session_create_s: float | None = None
    model_bytes: int | None = None  # the file the runtime loaded: .onnx, .keras or the .tflite buffer
    # The case's own peak resident memory: a fresh process that builds it and runs its largest batch (bench/measure/memory.py).
    peak_rss_mb: float | None = None
    quality: dict | None = None  # accuracy, loss, per_class, confusion_matrix
    placement: dict | None = None  # CUDA: nodes per provider and the op types left on CPU
    device_median_s: float | None = None  # CUDA: device-only time per call (IOBinding), without host copies
    first_run_s: float | None = None  # the first call of this shape (CUDA: cuDNN's algorithm search)
    provider_options: dict | None = None
    # The runtime's own profile of one batch, by op type: op_type, time_ms, time_share, mac_share, nodes
    # (bench/measure/profile.py); predict records at the first batch size, where the runtime gives one.
    profile: list[dict[str, str | float | int]] | None = None
    # The runtime's own benchmark tool on the same file and batch (bench/measure/tools.py): its figures and
    # command, or {"tool", "unavailable"}; OpenVINO and LiteRT rows.
    tool: dict[str, str | float | int | None] | None = None
    skipped: str | None = None
    threads: int = 0  # the runtime's intra-op threads (--threads); 0: its default

    @property
    def id(self) -> str:
        return record_id(self.model, self.variant, self.provider, self.operation, self.batch_size, self.threads)

    def to_dict(self) -> dict:
        return asdict(self)


def record_id(model: str, variant: str, provider: str, operation: str, batch: int, threads: int = 0) -> str:
    """``model4-int8-cpu-predict-b128`` (``-t1`` at one thread): the same id in our results and in
    pytest-benchmark's, so ``compare`` joins them."""
    return f"{model}-{variant}-{provider}-{operation}-b{batch}" + (f"-t{threads}" if threads else "")


@dataclass
class BenchRun:
    machine: dict
    settings: dict
    created_at: str
    records: list[BenchRecord] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    commit: dict | None = None  # id, dirty, branch: the code that measured (bench/measure/machine.py)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, allow_nan=False) + "\n"

    @classmethod
    def from_dict(cls, payload: object, source: str = "report") -> "BenchRun":
        validate(payload, source)
        records = [BenchRecord(**row) for row in payload["records"]]
        commit = payload.get("commit")
        if payload["schema_version"] == 1 and commit is None:  # schema 1 kept a short hash inside machine
            commit = {"id": payload["machine"].get("git_commit"), "dirty": None, "branch": None}
        return cls(payload["machine"], payload["settings"], payload["created_at"], records, payload["schema_version"], commit)


class SchemaError(ValueError):
    pass


def validate(payload: object, source: str) -> None:
    """Refuse a results file this toolkit cannot read, naming the file, the record and what is wrong: the same
    check for ``summary``, ``compare`` and ``report``, so no malformed record reaches a table or a figure."""
    if not isinstance(payload, dict):
        raise SchemaError(f"{source}: not a JSON object")
    if payload.get("schema_version") not in READABLE_VERSIONS:
        raise SchemaError(f"{source}: schema_version {clip(str(payload.get('schema_version')), 40)!r}, "
                          f"expected {SCHEMA_VERSION} (or {', '.join(map(str, READABLE_VERSIONS[:-1]))})")
    for key, kind in (("machine", dict), ("settings", dict), ("created_at", str), ("records", list)):
        if not isinstance(payload.get(key), kind):
            raise SchemaError(f"{source}: missing {key!r}" if key not in payload else f"{source}: {key!r} is not a {kind.__name__}")
    for i, row in enumerate(payload["records"]):
        check_fields(row, BenchRecord, source, SchemaError, f"record {i}", required=("median_s",))
        if row.get("skipped"):
            continue
        what = f"{source}: record {i} ({clip(row['model'], 40)})"
        if not row.get("median_s") or row["median_s"] <= 0:
            raise SchemaError(f"{what} has no positive median_s and is not skipped")
        if row.get("times_s") is not None and not (row["times_s"] and all(t > 0 for t in row["times_s"])):
            raise SchemaError(f"{what} has times_s that are not positive numbers")
        for key in ("accuracy", "loss"):  # what the summary, the figures and the recommendation compute with
            if (problem := mismatch((row.get("quality") or {}).get(key), float | None)) is not None:
                raise SchemaError(f"{what} quality.{key} {problem}")


def markdown(report: BenchRun) -> str:
    machine, commit = report.machine, report.commit or {}
    lines = [
        f"# Bench {report.created_at}",
        "",
        f"{describe_machine(machine)}; GPU: {machine.get('gpu') or 'none'}; "
        f"onnxruntime {machine.get('versions', {}).get('onnxruntime-gpu') or machine.get('versions', {}).get('onnxruntime')}; "
        f"{describe_yardsticks(machine)}; "
        + f"commit {commit.get('id') or 'unknown'}"
        + (" (with uncommitted changes)" if commit.get("dirty") else ""),
        "",
        "| model | variant | runtime (ran on) | operation | batch | median ms | IQR ms | device-only ms | images/s | p50 / p99 ms | GFLOP/s | accuracy | loss | MB | cold start ms | peak RSS MB |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.records:
        if r.skipped:
            lines.append(f"| {r.model} | {r.variant} | {r.provider} | {r.operation} | {r.batch_size} | skipped: {r.skipped} |||||||||||")
            continue
        ran = ", ".join(r.providers_used)
        if r.placement and r.placement.get("label"):
            ran += f"; {r.placement['label']}"
        latency = f"{r.latency_ms['p50']:.2f} / {r.latency_ms['p99']:.2f}" if r.latency_ms else ""
        quality = r.quality or {}
        lines.append(
            f"| {r.model} | {r.variant} | {r.provider} ({ran}) | {r.operation} | {r.batch_size} | {r.median_s * 1000:.1f} | "
            f"{_num(r.iqr_s and r.iqr_s * 1000, '.2f')} | {_num(r.device_median_s and r.device_median_s * 1000, '.2f')} | "
            f"{_num(r.throughput_ips, '.0f')} | {latency} | {_num(r.gflops, '.1f')} | "
            f"{_num(quality.get('accuracy'), '.4f')} | {_num(quality.get('loss'), '.4f')} | "
            f"{_num(r.model_bytes and r.model_bytes / 1e6, '.2f')} | {_num(r.session_create_s and r.session_create_s * 1000, '.0f')} | "
            f"{_num(r.peak_rss_mb, '.0f')} |"
        )
    return "\n".join(lines) + "\n"


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)

