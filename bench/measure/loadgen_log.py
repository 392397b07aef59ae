"""What MLPerf LoadGen wrote, read back: its verdict and figures (``mlperf_log_detail.txt``, the machine-readable
twin of ``mlperf_log_summary.txt``), each sample's completion from its trace (``mlperf_log_trace.json``), and the
outputs it logged in accuracy mode (``mlperf_log_accuracy.json``). LoadGen's Python API returns none of these.

LoadGen's figures are taken as LoadGen states them, never recomputed: a record's p90 is LoadGen's p90, and a
reader can check any row against the summary kept beside the results file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench.results.record import LoadGenResult

DETAIL = "mlperf_log_detail.txt"
SUMMARY = "mlperf_log_summary.txt"
TRACE = "mlperf_log_trace.json"
ACCURACY = "mlperf_log_accuracy.json"
PERCENTILES = ("p50", "p90", "p95", "p97", "p99", "p99.9")  # LoadGen's, as "50.00" ... "99.90" in its keys


class LoadGenError(RuntimeError):
    """LoadGen refused the test or wrote no result; the message is LoadGen's own error line."""


def read_detail(folder: Path) -> dict[str, object]:
    """Every ``:::MLLOG`` entry of the detail log, key -> value (the last one of a key wins). Raises LoadGenError
    with LoadGen's own error line when it logged an error."""
    path = Path(folder) / DETAIL
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise LoadGenError(f"{path}: LoadGen wrote no detail log") from None
    values: dict[str, object] = {}
    for line in text.splitlines():
        _, marker, payload = line.partition(":::MLLOG ")
        if not marker:
            continue
        try:
            entry = json.loads(payload)
        except ValueError:  # a line LoadGen cut short: the others still stand
            continue
        if (entry.get("metadata") or {}).get("is_error"):
            raise LoadGenError(f"LoadGen: {entry.get('key')}: {entry.get('value')}"[:400])
        values[entry.get("key")] = entry.get("value")
    if "result_validity" not in values and values.get("effective_test_mode") != "AccuracyOnly":
        raise LoadGenError(f"{path}: LoadGen logged no result")
    return values


def result(folder: Path, **extra: object) -> LoadGenResult:
    """The test's verdict and figures from its detail log; ``extra``: fields LoadGen does not log."""
    d = read_detail(folder)
    per_query = d.get("effective_scenario") == "MultiStream"  # MultiStream's figures are per query of 8 samples

    def ns(key: str) -> float | None:
        value = d.get(key)
        return float(value) / 1e6 if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    latency = {name: ns(f"result_{name}_query_latency_ns" if per_query else f"result_{name}_latency_ns")
               for name in ("min", "mean", "max")}
    for name in PERCENTILES:
        percent = f"{float(name[1:]):.2f}"
        latency[name] = ns(f"result_{percent}_percentile_per_query_latency_ns" if per_query
                           else f"result_{percent}_percentile_latency_ns")
    # SingleStream logs its p90 estimate as ..._ss, MultiStream its p99 per query as ..._ms; 0 when not reached.
    early = ns("early_stopping_latency_ss") or ns("early_stopping_latency_ms") or None
    samples_per_s = d.get("result_samples_per_second", d.get("result_completed_samples_per_sec"))
    return LoadGenResult(
        scenario=str(d.get("effective_scenario")), mode=str(d.get("effective_test_mode")),
        result=str(d.get("result_validity") or ""), min_duration_met=d.get("result_min_duration_met"),
        min_queries_met=d.get("result_min_queries_met"), early_stopping_met=d.get("early_stopping_met"),
        queries=int(d.get("result_query_count") or 0), samples_per_query=int(d.get("effective_samples_per_query") or 1),
        latency_ms={k: v for k, v in latency.items() if v is not None},
        early_stopping=" ".join(str(d.get("early_stopping_result") or "").split()), early_stopping_ms=early,
        samples_per_s=float(samples_per_s) if isinstance(samples_per_s, (int, float)) else None,
        latency_bound_met=d.get("result_perf_constraints_met"),
        invalid_reason=" ".join(str(d.get("result_invalid_reason") or "").split()), **extra,
    )


def sample_completions(folder: Path) -> list[tuple[int, int]] | None:
    """(query sequence number, latency in ns) of every sample in LoadGen's trace, in the order traced; the latency
    is LoadGen's own (``complete_ns``: from the query's scheduled issue to its completion). None when the trace is
    off or empty. Read line by line: LoadGen writes one event per line, and a few lines are not valid JSON, so the
    file as a whole cannot be parsed."""
    path = Path(folder) / TRACE
    if not path.is_file() or path.stat().st_size == 0:
        return None
    samples = []
    with path.open(encoding="utf-8", errors="replace") as trace:
        for line in trace:
            if line.startswith('{"name":"Sample"') and '"ph":"b"' in line:
                args = json.loads(line.rstrip().rstrip(","))["args"]
                samples.append((int(args["query_seq"]), int(args["complete_ns"])))
    return samples or None


def query_latencies_s(samples: list[tuple[int, int]]) -> list[float]:
    """Each query's latency, s, in issue order: its last sample's (a MultiStream query ends with its slowest)."""
    per_query: dict[int, int] = {}
    for query, latency in samples:
        per_query[query] = max(per_query.get(query, 0), latency)
    return [per_query[q] / 1e9 for q in sorted(per_query)]


def batch_times_s(samples: list[tuple[int, int]]) -> list[float]:
    """An Offline query's batches, s each: the samples of one batch complete together (one QuerySamplesComplete,
    one clock reading), so the distinct completion times, in order, end the batches; the first starts at issue."""
    ends = sorted({latency for _, latency in samples})
    return [(end - start) / 1e9 for start, end in zip([0, *ends], ends)]


def logged_outputs(folder: Path, total: int, values: int) -> np.ndarray:
    """Accuracy mode: the ``values`` float32 probabilities LoadGen logged for each of the ``total`` sample indexes,
    one row per index, in order."""
    path = Path(folder) / ACCURACY
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LoadGenError(f"{path}: not readable as LoadGen's accuracy log ({type(exc).__name__})") from None
    logged = {}
    for entry in entries:
        row = np.frombuffer(bytes.fromhex(entry["data"]), dtype="<f4")
        if row.size != values:
            raise LoadGenError(f"{path}: sample {entry['qsl_idx']} logged {row.size} values, expected {values}")
        logged[int(entry["qsl_idx"])] = row
    missing = sorted(set(range(total)) - set(logged))
    if missing or len(logged) != total:
        raise LoadGenError(f"{path}: LoadGen logged {len(logged)} of {total} samples (first missing: {missing[:3]})")
    return np.stack([logged[i] for i in range(total)])
