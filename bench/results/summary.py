"""One row per model and runtime from one or more bench reports: the table a reader wants first.

    fmnist-bench summary artifacts/reports/bench-A.json artifacts/reports/bench-B.json

Reports are read oldest first and a case measured twice keeps its newest result, so the CNNs can come from one
run and the transfer models from another. Speed-ups are against Keras ``predict`` of the same model in the same
report. The table ends with one recommendation line per model: the fastest row within 0.5 accuracy points of
fp32, for batch processing, single-stream latency and serving under the bound. pandas is imported here only:
summarising does not happen on the edge device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pandas as pd

from bench.results.record import SUB_MILLISECOND, BenchRecord, record_id
from bench.results.store import differences, load
from bench.measure.peaks import describe_yardsticks, peak_gops
from bench.runtimes import ROWS, RUNTIMES, arithmetic, row_name
from trainer.catalog import label, model_order
from trainer.environment import describe_machine

# A row is recommended only if it loses at most this many accuracy points against fp32; the others stay in
# the table with their loss (LiteRT's full-integer Model 4 loses ~5.6) but are never recommended.
MAX_ACCURACY_LOSS_POINTS = 0.5

Records = dict[tuple[str, str], tuple[BenchRecord, dict]]  # (machine label, case id) -> (record, its machine)
Getter = Callable[..., BenchRecord | None]  # (provider, variant, operation, batch, threads=0) -> record
Row = tuple[str, BenchRecord | None, BenchRecord | None, BenchRecord | None]  # name, predict, single-stream, server


def runtime_name(provider: str, variant: str, record: BenchRecord | None = None) -> str:
    """The row's readable name from the registry; OpenVINO's default-precision row names the precision it reported,
    and a row at a given thread count says it (``onnxruntime CPU int8, 1 thread``)."""
    name = row_name(provider, variant, record.provider_options if record else None)
    threads = record.threads if record else 0
    return f"{name}, {threads} thread{'s' if threads > 1 else ''}" if threads else name


def _peak(record: BenchRecord, machine: dict) -> tuple[str | None, float | None]:
    """The arithmetic a row computes in and the yardstick of that arithmetic (bench/measure/peaks.py); none for a
    GPU row or where that arithmetic has no yardstick: a bf16 row is never divided by an fp32 figure. Results
    written before yardsticks were kept per arithmetic have numpy's SGEMM and onnxruntime's integer GEMM only."""
    kind = arithmetic(record.provider, record.variant, record.provider_options)
    if kind is None:
        return None, None
    if "yardsticks" in machine:
        return kind, peak_gops(machine["yardsticks"], kind, record.threads)
    return kind, machine.get({"fp32": "sgemm_gflops", "int8": "int8_gemm_gops"}.get(kind, ""))


def machine_label(machine: dict) -> str:
    """Which machine measured: its host name where the report has one, its CPU, cores and GPU."""
    host = f"{machine['host']}: " if machine.get("host") else ""
    return host + describe_machine(machine)


def latest_records(paths: list[Path]) -> Records:
    """Each machine's newest result per case (by the report's created_at). Results of different machines are
    never merged: a case measured on two machines is two entries."""
    records: Records = {}
    for report in sorted((load(Path(p)) for p in paths), key=lambda r: r.created_at):
        for record in report.records:
            records[(machine_label(report.machine), record.id)] = (record, report.machine)
    return records


def by_machine(records: Records) -> dict[str, dict[str, tuple[BenchRecord, dict]]]:
    """{machine label: {case id: (record, machine)}}, machines in the order first seen."""
    grouped: dict[str, dict[str, tuple[BenchRecord, dict]]] = {}
    for (machine_name, case_id), value in records.items():
        grouped.setdefault(machine_name, {})[case_id] = value
    return grouped


def _models(by_id: dict[str, BenchRecord]) -> Iterator[tuple[str, Getter]]:
    """Each model (the six in the report's order, then yours) with its :func:`_get`."""
    for model in sorted({record.model for record in by_id.values()}, key=model_order):
        yield model, partial(_get, by_id, model)


def _get(by_id: dict[str, BenchRecord], model: str, provider: str, variant: str, operation: str, batch: int,
         threads: int = 0) -> BenchRecord | None:
    """A model's measured (not skipped) record for a provider, variant, operation, batch size and thread count."""
    record = by_id.get(record_id(model, variant, provider, operation, batch, threads))
    return record if record is not None and not record.skipped else None


def _rows(by_id: dict[str, BenchRecord], get: Getter, batch_size: int) -> Iterator[Row]:
    """Every row a model has, in the registry's order and at each thread count measured: its readable name and its
    predict (at ``batch_size``), single-stream and server records, where any was measured."""
    counts = sorted({record.threads for record in by_id.values()})
    for provider, variant in ROWS:
        for threads in counts:
            found = [get(provider, variant, operation, batch, threads)
                     for operation, batch in (("predict", batch_size), ("single-stream", 1), ("server", 1))]
            if any(found):
                yield runtime_name(provider, variant, next(r for r in found if r)), *found


def summary(records: Records, batch_size: int = 128) -> pd.DataFrame:
    """The table, from :func:`latest_records`: one block of rows per machine, with a machine column when
    there are several (ratios to Keras are always within one machine)."""
    grouped = by_machine(records)
    frames = [_machine_summary(group, batch_size) for group in grouped.values()]
    if len(grouped) > 1:
        frames = [frame.assign(machine=name)[["machine", *frame.columns]] for name, frame in zip(grouped, frames)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _machine_summary(records: dict[str, tuple[BenchRecord, dict]], batch_size: int) -> pd.DataFrame:
    by_id = {key: record for key, (record, _) in records.items()}
    rows = []
    for model, get in _models(by_id):
        keras = get("keras", "fp32", "predict", batch_size)
        fp32_accuracy = _fp32_accuracy(get, batch_size)
        for name, predict, single, server in _rows(by_id, get, batch_size):
            accuracy = (predict.quality or {}).get("accuracy") if predict else None
            kind, peak = _peak(predict, records[predict.id][1]) if predict else (None, None)
            latency = single.latency_ms if single and single.latency_ms else {}
            found = server.server if server and server.server else {}
            rows.append({
                "model": label(model),  # a model of the user's is marked "(yours)"
                "runtime": name,
                f"predict ms (b{batch_size})": predict.median_s * 1000 if predict else None,
                "IQR ms": predict.iqr_s * 1000 if predict and predict.iqr_s is not None else None,
                "images/s": predict.throughput_ips if predict else None,
                "x Keras predict": keras.median_s / predict.median_s if predict and keras else None,
                "single-stream p50 ms": latency.get("p50"),
                "of it call overhead ms": single.overhead_ms if single else None,
                "p90 ms": latency.get("p90"),
                "p99 ms": latency.get("p99"),
                "LoadGen's own µs": _own_cost_us(single),
                # The max rate LoadGen called VALID under the bound; "none" when the search found none.
                "server max q/s": (found["max_qps"] if found.get("max_qps") is not None else "none") if found else None,
                "server p99 ms": found.get("p99_ms") if found.get("max_qps") else None,
                "GFLOP/s": predict.gflops if predict else None,
                "% of peak": 100 * predict.gflops / peak if predict and predict.gflops and peak else None,
                "peak of": kind if peak else None,
                "accuracy": accuracy,
                "vs fp32 (points)": 100 * (accuracy - fp32_accuracy) if accuracy is not None and fp32_accuracy is not None else None,
            })
    return pd.DataFrame(rows)


def _own_cost_us(single: BenchRecord | None) -> float | None:
    """LoadGen's own p50 (a no-op system under test, same run), shown beside a single-stream row under 1 ms."""
    if single is None or not single.loadgen or not single.latency_ms:
        return None
    noop = single.loadgen.get("noop_latency_ms") or {}
    return noop["p50"] * 1000 if "p50" in noop and single.latency_ms["p50"] < SUB_MILLISECOND else None


def _fp32_accuracy(get: Getter, batch_size: int) -> float | None:
    """The accuracy the bound is measured from: onnxruntime CPU fp32, else Keras (the same trained model)."""
    for provider in ("cpu", "keras"):
        record = get(provider, "fp32", "predict", batch_size)
        if record is not None and (record.quality or {}).get("accuracy") is not None:
            return record.quality["accuracy"]
    return None


def recommendations(records: Records, batch_size: int = 128) -> list[str]:
    """One line per model (and machine, where there are several): the fastest row within
    MAX_ACCURACY_LOSS_POINTS of fp32 accuracy for batch processing (predict at ``batch_size``), single-stream
    latency (p50) and serving, each with its ratio to Keras in the same scenario on the same machine.
    A row whose accuracy is unknown, or further below fp32, is never recommended."""
    grouped = by_machine(records)
    prefix = "On {}: " if len(grouped) > 1 else ""
    return [prefix.format(machine_name) + line for machine_name, group in grouped.items()
            for line in _machine_recommendations(group, batch_size)]


def _machine_recommendations(records: dict[str, tuple[BenchRecord, dict]], batch_size: int) -> list[str]:
    by_id = {key: record for key, (record, _) in records.items()}
    lines = []
    for model, get in _models(by_id):
        baseline = _fp32_accuracy(get, batch_size)
        if baseline is None:
            lines.append(f"**{label(model)}**: no recommendation (no fp32 accuracy at batch {batch_size} to bound the others by)")
            continue
        eligible, excluded = [], []
        for name, predict, single, server in _rows(by_id, get, batch_size):
            accuracy = (predict.quality or {}).get("accuracy") if predict else None
            if accuracy is None:
                excluded.append(f"{name} (accuracy not measured)")
            elif 100 * (baseline - accuracy) > MAX_ACCURACY_LOSS_POINTS + 1e-9:
                excluded.append(f"{name} ({100 * (accuracy - baseline):+.2f} points)")
            else:
                eligible.append((name, predict, single, server))
        keras_predict, keras_single = get("keras", "fp32", "predict", batch_size), get("keras", "fp32", "single-stream", 1)
        parts = []
        batched = [(name, p) for name, p, _, _ in eligible if p is not None]
        if batched:
            name, best = min(batched, key=lambda row: row[1].median_s)
            ratio = f", {keras_predict.median_s / best.median_s:.2f}x Keras predict" if keras_predict else ""
            parts.append(f"batch processing (predict, batch {batch_size}): **{name}**, {best.median_s * 1000:.1f} ms{ratio}")
        streamed = [(name, s) for name, _, s, _ in eligible if s is not None and s.latency_ms]
        if streamed:
            name, best = min(streamed, key=lambda row: row[1].latency_ms["p50"])
            p50 = best.latency_ms["p50"]
            ratio = (f", {keras_single.latency_ms['p50'] / p50:.2f}x Keras single-stream"
                     if keras_single and keras_single.latency_ms else "")
            parts.append(f"single-stream: **{name}**, p50 {p50:.3f} ms{ratio}")
        served = [(name, v.server) for name, _, _, v in eligible if v is not None and v.server and v.server.get("max_qps")]
        if served:
            name, best = max(served, key=lambda row: row[1]["max_qps"])
            parts.append(f"serving (server, p99 ≤ {best['latency_bound_ms']:g} ms): **{name}**, "
                         f"{best['max_qps']:,.0f} queries/s (p99 {best['p99_ms']:.3g} ms)")
        if standing := _against_peers(eligible, batch_size):
            parts.append(standing)
        line = f"**{label(model)}** (rows within {MAX_ACCURACY_LOSS_POINTS} points of fp32 accuracy {baseline:.4f}): "
        line += "; ".join(parts) if parts else "no row qualifies"
        if excluded:
            line += f". Never recommended here: {', '.join(excluded)}"
        lines.append(line)
    return lines


def _against_peers(eligible: list[Row], batch_size: int) -> str:
    """The best onnxruntime row against the best peer row (every other runtime), both within the accuracy bound,
    in both scenarios, as speed ratios (above 1: onnxruntime is faster), and which is ahead."""
    def ours(record: BenchRecord) -> bool:
        return not RUNTIMES[record.provider].reference if record.provider in RUNTIMES else False

    said = []
    for scenario, pick, cost in ((f"batch {batch_size}", 1, lambda r: r.median_s),
                                 ("single-stream", 2, lambda r: r.latency_ms["p50"] if r.latency_ms else None)):
        measured = [(row[0], row[pick]) for row in eligible if row[pick] is not None and cost(row[pick])]
        mine = [(name, r) for name, r in measured if ours(r)]
        theirs = [(name, r) for name, r in measured if not ours(r)]
        if not mine or not theirs:
            continue
        (my_name, my_row), (peer_name, peer_row) = (min(side, key=lambda nr: cost(nr[1])) for side in (mine, theirs))
        ratio = cost(peer_row) / cost(my_row)
        verdict = "onnxruntime ahead" if ratio >= 1 else "the peer ahead: its profile in REPORT.md says where the time goes"
        said.append(f"{scenario} {ratio:.2f}x ({my_name} against {peer_name}; {verdict})")
    return ("onnxruntime against the best accurate peer: " + ", ".join(said)) if said else ""


FORMATS = ["", "", ".1f", ".2f", ".0f", ".2f", ".3f", ".3f", ".3f", ".3f", ".1f", ",.0f", ".3g", ".1f", ".1f", "", ".4f", "+.2f"]
NOTES = (
    "\nof it call overhead: the median single query on a trivial model (3,920 multiply-adds) of the same "
    "interface, through the same runtime, call path and settings: what the runtime costs before the model "
    "computes anything.\n"
    "% of peak: GFLOP/s as a share of the fastest large matrix product or convolution that an installed "
    "runtime reaches on the same machine in the row's own arithmetic (the 'peak of' column: fp32, bf16 or "
    "int8; an fp16 file on onnxruntime's CPU provider computes in fp32), measured at the run's start and "
    "end; none for CUDA rows, nor where that arithmetic has no yardstick.\n")
SINGLE_STREAM_NOTE = (
    "\nsingle-stream p50/p90/p99: MLPerf LoadGen's, from a query's scheduled issue to its completion; "
    "LoadGen's own µs: its latency with a system under test that does nothing (same run), part of every "
    f"such latency, shown for rows under {SUB_MILLISECOND:g} ms.\n")
SERVER_NOTE = (
    "\nserver max q/s: the highest rate of Poisson arrivals MLPerf LoadGen called VALID with p99 ≤ "
    "{bounds} ms (one worker, queries in arrival order); server p99 ms: "
    "LoadGen's p99 at that rate; none: no rate tried met the bound (REPORT.md gives each search's "
    "verdict with LoadGen's reasons: on a shared VM, stalls can fail early stopping at any rate).\n")


def markdown_summary(paths: list[Path], batch_size: int = 128) -> str:
    records = latest_records(paths)
    frame = summary(records, batch_size)
    machines: list[dict] = []  # one per machine and software
    for _, machine in records.values():
        if all(differences(machine, seen) for seen in machines):
            machines.append(machine)
    described = [f"{machine_label(m)}, GPU: {m.get('gpu') or 'none'}; {describe_yardsticks(m)}" for m in machines]
    machine_count = len(by_machine(records))
    if machine_count > 1:
        header = (f"**These reports come from {machine_count} machines, shown side by side (the machine "
                  f"column), never merged:** {' / '.join(described)}")
    elif len(machines) > 1:
        header = (f"**These reports come from one machine with different software, and the rows mix them:** "
                  f"{' / '.join(described)} ({'; '.join(differences(machines[0], machines[1]))})")
    else:
        header = "; ".join(described)
    header += f"; from {', '.join(Path(p).name for p in paths)}"
    skipped: dict[tuple[str, str], list[str]] = {}
    for record, _ in records.values():
        if record.skipped:
            skipped.setdefault((record.provider, record.skipped), []).append(f"{label(record.model)} {record.variant}")
    notes = NOTES
    if "single-stream p50 ms" in frame and frame["single-stream p50 ms"].notna().any():
        notes += SINGLE_STREAM_NOTE
    if bounds := sorted({r.server["latency_bound_ms"] for r, _ in records.values() if r.server and not r.skipped}):
        notes += SERVER_NOTE.format(bounds=" or ".join(f"{b:g}" for b in bounds))
    notes += "".join(f"\nNot timed on {provider} ({', '.join(cases)}): {reason}\n" for (provider, reason), cases in skipped.items())
    notes += "".join(f"\n{line}\n" for line in recommendations(records, batch_size))
    shown = frame.copy()
    if "server max q/s" in shown:  # a rate or "none": one text column, the rates written as the other figures are
        shown["server max q/s"] = [f"{v:,.0f}" if isinstance(v, float) and v == v else v for v in shown["server max q/s"]]
    # tabulate's missingval replaces None only: a figure a row does not have (NaN) becomes None first.
    shown = shown.astype(object).where(shown.notna(), None)
    formats = ([""] if machine_count > 1 else []) + FORMATS
    return header + "\n\n" + shown.to_markdown(index=False, floatfmt=formats, missingval="") + "\n" + notes
