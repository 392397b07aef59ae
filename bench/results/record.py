"""Bench results as plain JSON with a schema version (as pytest-benchmark's), and their Markdown table.

Schema 3 adds what MLPerf LoadGen said of each scenario it drove (``loadgen``) and the server scenario's search
(``server``: the max rate under the latency bound and every trial). Schema 2 keeps every timed round
(``times_s``) so a comparison can tell a change from noise, the spread (``iqr_s``) and the CUDA provider's
placement and device-only figures. Schema 1 and 2 reports are still read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from bench.measure.peaks import describe_yardsticks
from trainer.artifacts import clip
from trainer.environment import describe_machine
from trainer.schema import check_fields, mismatch

SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)


class _AsDict:
    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoadGenResult(_AsDict):
    """One LoadGen test in LoadGen's words (read from its logs by bench/measure/loadgen_log.py): a record's
    ``loadgen`` field."""

    scenario: str  # SingleStream | MultiStream | Server | Offline
    mode: str  # PerformanceOnly | AccuracyOnly
    result: str  # VALID | INVALID, as LoadGen says it; "" in AccuracyOnly mode, which judges no speed
    min_duration_met: bool | None
    min_queries_met: bool | None
    early_stopping_met: bool | None
    queries: int
    samples_per_query: int
    # From the scheduled issue of a query to its QuerySamplesComplete, on LoadGen's clock: min, mean, max and the
    # percentiles, ms; in MultiStream per query (all of its samples).
    latency_ms: dict[str, float]
    early_stopping: str = ""  # LoadGen's early-stopping lines
    early_stopping_ms: float | None = None  # its early-stopping estimate of the scenario's percentile (p90; p99 MultiStream)
    samples_per_s: float | None = None  # Offline: samples/s; Server: completed samples/s
    target_qps: float | None = None  # Server: the offered rate (Poisson arrivals)
    latency_bound_ms: float | None = None  # Server: the p99 bound
    latency_bound_met: bool | None = None  # Server: LoadGen's "performance constraints satisfied"
    invalid_reason: str = ""
    logs: str | None = None  # the folder holding LoadGen's summary and detail logs, relative to the run's .loadgen folder
    noop_latency_ms: dict[str, float] | None = None  # LoadGen's own cost, this run: a no-op system under test's p50/p90/p99
    accuracy: float | None = None  # accuracy mode: of the outputs LoadGen logged
    predict_accuracy: float | None = None  # accuracy mode: the same file's predict pass at the same batch size

    @property
    def valid(self) -> bool:
        return self.result == "VALID"


@dataclass
class ServerTrial:
    """One LoadGen Server test at one offered rate: a point of the latency-against-rate curve."""

    target_qps: float  # offered: LoadGen's Poisson arrival rate
    valid: bool  # LoadGen's verdict
    completed_qps: float | None  # LoadGen's completed samples per second
    p50_ms: float | None  # LoadGen's latency percentiles at this rate
    p99_ms: float | None
    queries: int
    duration_s: float  # wall time of the trial, LoadGen's start to its end
    why: str = ""  # an INVALID trial: what LoadGen said was not met


@dataclass
class ServerSearch(_AsDict):
    """What the server scenario's search found (bench/measure/server.py): a server record's ``server`` field."""

    latency_bound_ms: float
    max_qps: float | None  # the highest rate LoadGen called VALID; None: none was
    invalid_above_qps: float | None  # the lowest INVALID rate above it: the true maximum lies in [max_qps, this)
    p50_ms: float | None  # at max_qps (none VALID: at the lowest rate tried)
    p99_ms: float | None
    trials: list[dict] = field(default_factory=list)  # every ServerTrial, in the order run
    search_s: float = 0.0
    budget_s: float = 0.0
    verdict: str = ""


@dataclass
class BenchRecord(_AsDict):
    """One (model, variant, provider, operation, batch) measurement, or the reason it was skipped."""

    model: str
    variant: str
    provider: str  # cpu | cuda | keras | tflite: what was asked for
    operation: str  # predict | evaluate | single-stream | multi-stream | server | offline | accuracy
    batch_size: int
    providers_used: list[str] = field(default_factory=list)  # what really ran, from the session
    # Per timed call: the whole split (predict, evaluate), one query (1 image; 8 in multi-stream), or one batch
    # (offline, accuracy); ``rounds``: the calls timed (a LoadGen scenario: its queries, or its batches)
    images: int = 0
    rounds: int = 0
    median_s: float | None = None  # per call; a LoadGen stream's is LoadGen's p50
    min_s: float | None = None
    max_s: float | None = None
    iqr_s: float | None = None  # interquartile range of the rounds: the run's own noise
    times_s: list[float] | None = None  # every timed round, in order (a LoadGen stream: each query's LoadGen latency)
    throughput_ips: float | None = None  # server: the completed rate at the max VALID rate; offline: LoadGen's samples/s
    latency_ms: dict[str, float] | None = None  # streams and server: p50, p90, p99, mean, queries (LoadGen's ranks)
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
    loadgen: dict | None = None  # a LoadGen scenario: LoadGenResult, what LoadGen said
    server: dict | None = None  # server: ServerSearch, the max rate under the bound and every trial
    skipped: str | None = None
    threads: int = 0  # the runtime's intra-op threads (--threads); 0: its default

    @property
    def id(self) -> str:
        return record_id(self.model, self.variant, self.provider, self.operation, self.batch_size, self.threads)


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
    """Refuse a results file this toolkit cannot read, naming the file, the record and what is wrong: the one
    check behind ``summary``, ``compare`` and ``report``, so no malformed record reaches a table or a figure."""
    if not isinstance(payload, dict):
        raise SchemaError(f"{source}: not a JSON object")
    if payload.get("schema_version") not in READABLE_VERSIONS:
        raise SchemaError(f"{source}: schema_version {clip(str(payload.get('schema_version')), 40)!r}, "
                          f"expected {SCHEMA_VERSION} (or {' or '.join(map(str, READABLE_VERSIONS[:-1]))})")
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
        # LoadGen's result and the server search as their own dataclasses: a table or figure never meets a damaged one.
        if row.get("loadgen") is not None:
            check_fields(row["loadgen"], LoadGenResult, source, SchemaError, f"record {i} loadgen")
        if row.get("server") is not None:
            check_fields(row["server"], ServerSearch, source, SchemaError, f"record {i} server")
            for n, trial in enumerate(row["server"]["trials"]):
                check_fields(trial, ServerTrial, source, SchemaError, f"record {i} server trial {n}")


def markdown(report: BenchRun) -> str:
    machine, commit = report.machine, report.commit or {}
    versions = machine.get("versions", {})
    lines = [
        f"# Bench {report.created_at}",
        "",
        f"{describe_machine(machine)}; GPU: {machine.get('gpu') or 'none'}; "
        f"onnxruntime {versions.get('onnxruntime-gpu') or versions.get('onnxruntime')}; {describe_yardsticks(machine)}; "
        f"commit {commit.get('id') or 'unknown'}" + (" (with uncommitted changes)" if commit.get("dirty") else ""),
        "",
        "| model | variant | runtime (ran on) | operation | batch | median ms | IQR ms | device-only ms | images/s | p50 / p99 ms "
        "| GFLOP/s | accuracy | loss | MB | cold start ms | peak RSS MB | LoadGen |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report.records:
        head = f"| {r.model} | {r.variant} | {r.provider}"
        if r.skipped:
            lines.append(f"{head} | {r.operation} | {r.batch_size} | skipped: {r.skipped} ||||||||||||")
            continue
        ran = ", ".join(r.providers_used) + (f"; {r.placement['label']}" if r.placement and r.placement.get("label") else "")
        quality = r.quality or {}
        cells = [f"{r.median_s * 1000:.1f}", _ms(r.iqr_s, ".2f"), _ms(r.device_median_s, ".2f"), _num(r.throughput_ips, ".0f"),
                 f"{r.latency_ms['p50']:.2f} / {r.latency_ms['p99']:.2f}" if r.latency_ms else "", _num(r.gflops, ".1f"),
                 _num(quality.get("accuracy"), ".4f"), _num(quality.get("loss"), ".4f"),
                 _num(r.model_bytes and r.model_bytes / 1e6, ".2f"), _ms(r.session_create_s, ".0f"),
                 _num(r.peak_rss_mb, ".0f"), loadgen_words(r)]
        lines.append(f"{head} ({ran}) | {r.operation} | {r.batch_size} | {' | '.join(cells)} |")
    logged = [r for r in report.records if r.loadgen and r.loadgen.get("logs")]
    if logged:
        lines += ["", "LoadGen column: what MLPerf LoadGen said of the scenarios it drove; its own summary and detail logs "
                      "are in the folder beside this file named like it with `.loadgen` (one folder per row: "
                      f"`{logged[0].loadgen['logs']}`, ...). LoadGen's own cost is a no-op system under test's latency, "
                      "measured in the same run: it is part of every LoadGen latency."]
    return "\n".join(lines) + "\n"


SUB_MILLISECOND = 1.0  # rows faster than this show LoadGen's own cost beside them


def loadgen_words(record: BenchRecord) -> str:
    """A LoadGen row in a few words: its verdict and the scenario's figure (server: the max rate under the bound;
    accuracy: LoadGen's against predict's), and LoadGen's own cost beside a sub-millisecond latency."""
    lg = record.loadgen
    if not lg:
        return ""
    if record.server:
        found = record.server
        words = (f"max {found['max_qps']:,.0f} q/s with p99 ≤ {found['latency_bound_ms']:g} ms (p99 {_num(found['p99_ms'], '.3g')})"
                 if found.get("max_qps") is not None else f"no rate with p99 ≤ {found['latency_bound_ms']:g} ms")
    elif lg.get("mode") == "AccuracyOnly":
        words = f"accuracy {_num(lg.get('accuracy'), '.4f')} (predict {_num(lg.get('predict_accuracy'), '.4f')})"
    elif lg.get("scenario") == "Offline":
        words = f"{lg.get('result')}, {_num(lg.get('samples_per_s'), ',.0f')} samples/s"
    else:
        key = "p99" if lg.get("scenario") == "MultiStream" else "p90"
        early = f", early stopping {_num(lg.get('early_stopping_ms'), '.3g')}" if lg.get("early_stopping_ms") else ""
        words = f"{lg.get('result')}, {key} {_num((lg.get('latency_ms') or {}).get(key), '.3g')}{early}"
    noop = lg.get("noop_latency_ms") or {}
    if noop and record.latency_ms and record.latency_ms.get("p50", SUB_MILLISECOND) < SUB_MILLISECOND:
        words += f"; LoadGen's own p50 {noop['p50'] * 1000:.1f} µs"
    return words


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def _ms(seconds: float | None, fmt: str) -> str:
    return _num(seconds and seconds * 1000, fmt)
