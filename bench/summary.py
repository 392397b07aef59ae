"""One row per model and runtime from one or more bench reports: the table a reader wants first.

    fmnist-bench summary artifacts/reports/bench-A.json artifacts/reports/bench-B.json

Reports are read oldest first and a case measured twice keeps its newest result, so the CNNs can
come from one run and the transfer models from another. Speed-ups are against Keras ``predict`` of
the same model in the same report, the ratio the study's readers care about. pandas is imported
here only: running a benchmark needs onnxruntime, numpy and scikit-learn, summarising it does not
happen on the edge device.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.report import BenchRecord
from bench.store import differences, load

RUNTIMES = (("cpu", "fp32"), ("cpu", "fp16"), ("cpu", "int8"), ("cuda", "fp32"), ("cuda", "fp16"), ("cuda", "int8"),
            ("keras", "fp32"), ("tflite", "fp32"))
RUNTIME_NAMES = {"cpu": "onnxruntime CPU", "cuda": "onnxruntime CUDA", "keras": "Keras", "tflite": "TF Lite (XNNPACK)"}


def latest_records(paths: list[Path]) -> dict[str, tuple[BenchRecord, dict]]:
    """{case id: (record, machine)}, the newest report (by its created_at) winning."""
    records: dict[str, tuple[BenchRecord, dict]] = {}
    for report in sorted((load(Path(p)) for p in paths), key=lambda r: r.created_at):
        for record in report.records:
            records[record.id] = (record, report.machine)
    return records


def summary(records: dict[str, tuple[BenchRecord, dict]], batch_size: int = 128) -> pd.DataFrame:
    """The table, from :func:`latest_records`."""
    by_id = {key: record for key, (record, _) in records.items()}
    models = sorted({record.model for record in by_id.values()})  # model1..model4, resnet50, vgg16: the registry's order
    rows = []
    for model in models:
        def get(provider: str, variant: str, operation: str, batch: int) -> BenchRecord | None:
            record = by_id.get(f"{model}-{variant}-{provider}-{operation}-b{batch}")
            return record if record is not None and not record.skipped else None

        keras = get("keras", "fp32", "predict", batch_size)
        fp32 = get("cpu", "fp32", "predict", batch_size)
        for provider, variant in RUNTIMES:
            predict = get(provider, variant, "predict", batch_size)
            single = get(provider, variant, "single-stream", 1)
            if predict is None and single is None:
                continue
            accuracy = (predict.quality or {}).get("accuracy") if predict else None
            fp32_accuracy = (fp32.quality or {}).get("accuracy") if fp32 else None
            rows.append({
                "model": model,
                "runtime": f"{RUNTIME_NAMES[provider]} {variant}" if provider in ("cpu", "cuda") else RUNTIME_NAMES[provider],
                f"predict ms (b{batch_size})": predict.median_s * 1000 if predict else None,
                "IQR ms": predict.iqr_s * 1000 if predict and predict.iqr_s is not None else None,
                "images/s": predict.throughput_ips if predict else None,
                "x Keras predict": keras.median_s / predict.median_s if predict and keras else None,
                "single-stream p50 ms": single.latency_ms["p50"] if single and single.latency_ms else None,
                "p99 ms": single.latency_ms["p99"] if single and single.latency_ms else None,
                "GFLOP/s": predict.gflops if predict else None,
                "accuracy": accuracy,
                "vs fp32 (points)": 100 * (accuracy - fp32_accuracy) if accuracy is not None and fp32_accuracy is not None else None,
            })
    return pd.DataFrame(rows)


def markdown_summary(paths: list[Path], batch_size: int = 128) -> str:
    records = latest_records(paths)
    frame = summary(records, batch_size)
    machines: list[dict] = []
    for _, machine in records.values():
        if all(differences(machine, seen) for seen in machines):
            machines.append(machine)
    described = [f"{m.get('cpu')} ({m.get('cores')} cores), GPU: {m.get('gpu') or 'none'}; "
                 f"large SGEMM {m.get('sgemm_gflops', float('nan')):.0f} GFLOP/s" for m in machines]
    header = "; ".join(described) + f"; from {', '.join(Path(p).name for p in paths)}"
    if len(machines) > 1:
        header = (f"**These reports come from {len(machines)} different machines or software versions, and the rows mix "
                  f"them:** {' / '.join(described)} ({'; '.join(differences(machines[0], machines[1]))}); "
                  f"from {', '.join(Path(p).name for p in paths)}")
    formats = ["", "", ".1f", ".2f", ".0f", ".2f", ".3f", ".3f", ".1f", ".4f", "+.2f"]
    skipped: dict[tuple[str, str], list[str]] = {}
    for record, _ in records.values():
        if record.skipped:
            skipped.setdefault((record.provider, record.skipped), []).append(f"{record.model} {record.variant}")
    notes = "".join(f"\nNot timed on {provider} ({', '.join(cases)}): {reason}\n"
                    for (provider, reason), cases in skipped.items())
    return header + "\n\n" + frame.to_markdown(index=False, floatfmt=formats, missingval="") + "\n" + notes
