"""One row per model and runtime from one or more bench reports: the table a reader wants first.

    fmnist-bench summary artifacts/reports/bench-A.json artifacts/reports/bench-B.json

Reports are read oldest first and a case measured twice keeps its newest result, so the CNNs can
come from one run and the transfer models from another. Speed-ups are against Keras ``predict`` of
the same model in the same report, the ratio the study's readers care about. The table ends with one
recommendation line per model: the fastest row within 0.5 accuracy points of fp32, for batch processing
and for single-stream latency. pandas is imported here only: running a benchmark needs onnxruntime,
numpy and scikit-learn, summarising it does not happen on the edge device.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from bench.results.record import BenchRecord
from bench.results.store import differences, load
from bench.runtimes import ROWS, row_name
from trainer.catalog import label, model_order
from trainer.environment import describe_machine

# A row is recommended only if it loses at most this many accuracy points against fp32; the others stay in
# the table with their loss (LiteRT's full-integer Model 4 loses ~5.6) but are never recommended.
MAX_ACCURACY_LOSS_POINTS = 0.5


def runtime_name(provider: str, variant: str, record: BenchRecord | None = None) -> str:
    """The row's readable name from the registry; OpenVINO's default-precision row names the precision it reported."""
    return row_name(provider, variant, record.provider_options if record else None)


def _peak(provider: str, variant: str, machine: dict) -> float | None:
    """The large-GEMM figure a row's GFLOP/s is a share of: SGEMM for float rows, the int8 GEMM for int8
    ones; none for CUDA (both yardsticks are the CPU's)."""
    if provider == "cuda":
        return None
    return machine.get("int8_gemm_gops" if variant == "int8" else "sgemm_gflops")


Records = dict[tuple[str, str], tuple[BenchRecord, dict]]  # (machine label, case id) -> (record, its machine)


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
    for (label, case_id), value in records.items():
        grouped.setdefault(label, {})[case_id] = value
    return grouped


def summary(records: Records, batch_size: int = 128) -> pd.DataFrame:
    """The table, from :func:`latest_records`: one block of rows per machine, with a machine column when
    there are several (ratios to Keras are always within one machine)."""
    grouped = by_machine(records)
    frames = [_machine_summary(group, batch_size) for group in grouped.values()]
    if len(grouped) > 1:
        frames = [frame.assign(machine=label)[["machine", *frame.columns]] for label, frame in zip(grouped, frames)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _machine_summary(records: dict[str, tuple[BenchRecord, dict]], batch_size: int) -> pd.DataFrame:
    by_id = {key: record for key, (record, _) in records.items()}
    machines = {key: machine for key, (_, machine) in records.items()}
    models = sorted({record.model for record in by_id.values()}, key=model_order)  # the six in the report's order, then yours
    rows = []
    for model in models:
        get = _getter(by_id, model)
        keras = get("keras", "fp32", "predict", batch_size)
        fp32_accuracy = _fp32_accuracy(get, batch_size)
        for provider, variant in ROWS:
            predict = get(provider, variant, "predict", batch_size)
            single = get(provider, variant, "single-stream", 1)
            if predict is None and single is None:
                continue
            accuracy = (predict.quality or {}).get("accuracy") if predict else None
            peak = _peak(provider, variant, machines[predict.id]) if predict else None
            rows.append({
                "model": label(model),  # a model of the user's is marked "(yours)"
                "runtime": runtime_name(provider, variant, predict or single),
                f"predict ms (b{batch_size})": predict.median_s * 1000 if predict else None,
                "IQR ms": predict.iqr_s * 1000 if predict and predict.iqr_s is not None else None,
                "images/s": predict.throughput_ips if predict else None,
                "x Keras predict": keras.median_s / predict.median_s if predict and keras else None,
                "single-stream p50 ms": single.latency_ms["p50"] if single and single.latency_ms else None,
                "p99 ms": single.latency_ms["p99"] if single and single.latency_ms else None,
                "GFLOP/s": predict.gflops if predict else None,
                "% of peak": 100 * predict.gflops / peak if predict and predict.gflops and peak else None,
                "accuracy": accuracy,
                "vs fp32 (points)": 100 * (accuracy - fp32_accuracy) if accuracy is not None and fp32_accuracy is not None else None,
            })
    return pd.DataFrame(rows)


Getter = Callable[[str, str, str, int], BenchRecord | None]  # (provider, variant, operation, batch) -> record


def _getter(by_id: dict[str, BenchRecord], model: str) -> Getter:
    """A model's measured (not skipped) record for a provider, variant, operation and batch size."""
    def get(provider: str, variant: str, operation: str, batch: int) -> BenchRecord | None:
        record = by_id.get(f"{model}-{variant}-{provider}-{operation}-b{batch}")
        return record if record is not None and not record.skipped else None
    return get


def _fp32_accuracy(get: Getter, batch_size: int) -> float | None:
    """The accuracy the bound is measured from: onnxruntime CPU fp32, else Keras (the same trained model)."""
    for provider in ("cpu", "keras"):
        record = get(provider, "fp32", "predict", batch_size)
        if record is not None and (record.quality or {}).get("accuracy") is not None:
            return record.quality["accuracy"]
    return None


def recommendations(records: Records, batch_size: int = 128) -> list[str]:
    """One line per model (and machine, where there are several): the fastest row within
    MAX_ACCURACY_LOSS_POINTS of fp32 accuracy for batch processing (predict at ``batch_size``) and for
    single-stream latency (p50), each with its ratio to Keras in the same scenario on the same machine.
    A row whose accuracy is unknown, or further below fp32, is never recommended."""
    grouped = by_machine(records)
    lines = []
    for label, group in grouped.items():
        prefix = f"On {label}: " if len(grouped) > 1 else ""
        lines += [prefix + line for line in _machine_recommendations(group, batch_size)]
    return lines


def _machine_recommendations(records: dict[str, tuple[BenchRecord, dict]], batch_size: int) -> list[str]:
    by_id = {key: record for key, (record, _) in records.items()}
    lines = []
    for model in sorted({record.model for record in by_id.values()}, key=model_order):
        get = _getter(by_id, model)
        baseline = _fp32_accuracy(get, batch_size)
        if baseline is None:
            lines.append(f"**{label(model)}**: no recommendation (no fp32 accuracy at batch {batch_size} to bound the others by)")
            continue
        eligible, excluded = [], []
        for provider, variant in ROWS:
            predict, single = get(provider, variant, "predict", batch_size), get(provider, variant, "single-stream", 1)
            accuracy = (predict.quality or {}).get("accuracy") if predict else None
            if predict is None and single is None:
                continue
            name = runtime_name(provider, variant, predict or single)
            if accuracy is None:
                excluded.append(f"{name} (accuracy not measured)")
            elif 100 * (baseline - accuracy) > MAX_ACCURACY_LOSS_POINTS + 1e-9:
                excluded.append(f"{name} ({100 * (accuracy - baseline):+.2f} points)")
            else:
                eligible.append((name, predict, single))
        keras_predict, keras_single = get("keras", "fp32", "predict", batch_size), get("keras", "fp32", "single-stream", 1)
        parts = []
        batched = [(name, p) for name, p, _ in eligible if p is not None]
        if batched:
            name, best = min(batched, key=lambda row: row[1].median_s)
            ratio = f", {keras_predict.median_s / best.median_s:.2f}x Keras predict" if keras_predict else ""
            parts.append(f"batch processing (predict, batch {batch_size}): **{name}**, {best.median_s * 1000:.1f} ms{ratio}")
        streamed = [(name, s) for name, _, s in eligible if s is not None and s.latency_ms]
        if streamed:
            name, best = min(streamed, key=lambda row: row[1].latency_ms["p50"])
            p50 = best.latency_ms["p50"]
            ratio = (f", {keras_single.latency_ms['p50'] / p50:.2f}x Keras single-stream"
                     if keras_single and keras_single.latency_ms else "")
            parts.append(f"single-stream: **{name}**, p50 {p50:.3f} ms{ratio}")
        line = f"**{label(model)}** (rows within {MAX_ACCURACY_LOSS_POINTS} points of fp32 accuracy {baseline:.4f}): "
        line += "; ".join(parts) if parts else "no row qualifies"
        if excluded:
            line += f". Never recommended here: {', '.join(excluded)}"
        lines.append(line)
    return lines


def markdown_summary(paths: list[Path], batch_size: int = 128) -> str:
    records = latest_records(paths)
    frame = summary(records, batch_size)
    machines: list[dict] = []
    for _, machine in records.values():
        if all(differences(machine, seen) for seen in machines):
            machines.append(machine)
    described = [f"{machine_label(m)}, GPU: {m.get('gpu') or 'none'}; "
                 f"large SGEMM {m.get('sgemm_gflops', float('nan')):.0f} GFLOP/s"
                 + (f", large int8 GEMM {m['int8_gemm_gops']:.0f} GOP/s" if m.get("int8_gemm_gops") else "")
                 for m in machines]
    header = "; ".join(described) + f"; from {', '.join(Path(p).name for p in paths)}"
    machine_count = len(by_machine(records))
    if machine_count > 1:
        header = (f"**These reports come from {machine_count} machines, shown side by side (the machine "
                  f"column), never merged:** {' / '.join(described)}; from {', '.join(Path(p).name for p in paths)}")
    elif len(machines) > 1:
        header = (f"**These reports come from one machine with different software, and the rows mix them:** "
                  f"{' / '.join(described)} ({'; '.join(differences(machines[0], machines[1]))}); "
                  f"from {', '.join(Path(p).name for p in paths)}")
    formats = ([""] if machine_count > 1 else []) + ["", "", ".1f", ".2f", ".0f", ".2f", ".3f", ".3f", ".1f", ".1f", ".4f", "+.2f"]
    skipped: dict[tuple[str, str], list[str]] = {}
    for record, _ in records.values():
        if record.skipped:
            skipped.setdefault((record.provider, record.skipped), []).append(f"{label(record.model)} {record.variant}")
    notes = "".join(f"\nNot timed on {provider} ({', '.join(cases)}): {reason}\n"
                    for (provider, reason), cases in skipped.items())
    peak = ("\n% of peak: GFLOP/s as a share of the large SGEMM (float rows) or of the large int8 GEMM (int8 rows) "
            "measured on the same machine (a bf16 row can pass 100%); none for CUDA rows.\n")
    advice = "".join(f"\n{line}\n" for line in recommendations(records, batch_size))
    return header + "\n\n" + frame.to_markdown(index=False, floatfmt=formats, missingval="") + "\n" + peak + notes + advice
