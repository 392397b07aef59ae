"""Run the scenarios on every case and collect a BenchReport. Shared by ``fmnist-bench run`` and the pytest suite."""

from __future__ import annotations

import shutil
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TextIO

import numpy as np
import onnxruntime as ort

from bench import scenarios
from bench.cases import Case, HeldOutSplit, load_test_split
from bench.metrics import achieved_gflops, multiply_adds_per_image, peak_rss_mb, quality, reset_peak_rss, sgemm_gflops
from bench.report import BenchRecord, BenchReport
from bench.sut import SUT, KerasSUT, OrtSUT, ProviderUnavailable, SessionSettings, TFLiteSUT
from trainer.artifacts import Artifacts
from trainer.environment import git_commit, machine_info

WHOLE_SPLIT = 0  # batch size meaning "the whole test split as one batch"


@dataclass(frozen=True)
class RunSettings:
    batch_sizes: tuple[int, ...] = (128, WHOLE_SPLIT)
    rounds: int = 3
    operations: tuple[str, ...] = scenarios.OPERATIONS
    single_stream: scenarios.SingleStreamSettings = field(default_factory=scenarios.SingleStreamSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    references: bool = True  # Keras and TF Lite rows (need TensorFlow)


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def machine() -> dict:
    info = machine_info()
    info.update(gpu=gpu_name(), onnxruntime_providers_available=ort.get_available_providers(),
                sgemm_gflops=sgemm_gflops(), git_commit=git_commit())
    return info


def measure(sut, model: str, variant: str, provider: str, split: HeldOutSplit, settings: RunSettings,
            macs_per_image: int | None, model_bytes: int | None, log: TextIO | None = None) -> list[BenchRecord]:
    """Every operation of ``settings`` on one system under test."""
    x, y, n = split.x, split.y, len(split.y)
    records = []

    def record(operation: str, batch: int, times: list[float], **extra) -> BenchRecord:
        median = statistics.median(times)
        images_per_call = 1 if operation == "single-stream" else n
        rec = BenchRecord(
            model=model, variant=variant, provider=provider, operation=operation, batch_size=batch,
            providers_used=list(sut.providers_used), images=images_per_call, rounds=len(times),
            median_s=median, min_s=min(times), max_s=max(times), throughput_ips=images_per_call / median,
            gflops=achieved_gflops(macs_per_image, images_per_call, median) if macs_per_image else None,
            session_create_s=sut.session_create_s, model_bytes=model_bytes, peak_rss_mb=peak_rss_mb(), **extra,
        )
        records.append(rec)
        if log:
            print(f"  {rec.id:<42} median {median * 1000:9.2f} ms  {rec.throughput_ips:9.0f} img/s"
                  + (f"  accuracy {rec.quality['accuracy']:.4f}" if rec.quality else ""), file=log, flush=True)
        return rec

    for batch in settings.batch_sizes:
        size = batch or n
        if "predict" in settings.operations:
            times = scenarios.timed(lambda: scenarios.predict(sut, x, size), settings.rounds)
            record("predict", size, times, quality=quality(y, scenarios.predict(sut, x, size), split.class_names))
        if "evaluate" in settings.operations:
            times = scenarios.timed(lambda: scenarios.evaluate(sut, x, y, size), settings.rounds)
            loss, accuracy = scenarios.evaluate(sut, x, y, size)
            record("evaluate", size, times, quality={"accuracy": accuracy, "loss": loss})
    if "single-stream" in settings.operations:
        latencies_ms = scenarios.single_stream(sut, x, settings.single_stream)
        record("single-stream", 1, list(latencies_ms / 1000), latency_ms={
            "p50": float(np.percentile(latencies_ms, 50)), "p90": float(np.percentile(latencies_ms, 90)),
            "p99": float(np.percentile(latencies_ms, 99)), "mean": float(latencies_ms.mean()), "queries": len(latencies_ms),
        })
    return records


REFERENCE_RUNTIMES = {"keras": KerasSUT, "tflite": TFLiteSUT}


def make_sut(case: Case, artifacts: Artifacts, settings: SessionSettings = SessionSettings()) -> SUT:
    """The system under test for a case: an onnxruntime session on its provider, or a TensorFlow
    reference (``keras``, ``tflite``) built from the trained ``.keras`` file. Raises
    ProviderUnavailable, or ImportError where TensorFlow is missing."""
    if case.provider in REFERENCE_RUNTIMES:
        return REFERENCE_RUNTIMES[case.provider](artifacts.model_file(case.model))
    return OrtSUT(case.path, case.provider, settings)


def run(artifacts: Artifacts, cases: list[Case], settings: RunSettings, data: str | None = None,
        log: TextIO | None = None) -> BenchReport:
    """Measure ``cases``; progress goes to ``log`` when one is given."""
    report = BenchReport(machine=machine(), settings=_settings_dict(settings),
                         created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    splits: dict[str, HeldOutSplit] = {}
    for i, case in enumerate(cases, 1):
        split = splits.get(case.model) or splits.setdefault(case.model, load_test_split(artifacts, case.model, data))
        if log:
            print(f"[{i}/{len(cases)}] {case.id} ({len(split.y)} test images)", file=log, flush=True)
        reset_peak_rss()  # the peak then covers this case: its session and its runs
        try:
            sut = make_sut(case, artifacts, settings.session)
        except ProviderUnavailable as exc:
            report.records.append(BenchRecord(case.model, case.variant, case.provider, "all", 0, skipped=str(exc)))
            if log:
                print(f"  skipped: {exc}", file=log, flush=True)
            continue
        report.records += measure(sut, case.model, case.variant, case.provider, split, settings,
                                  multiply_adds_per_image(case.path), case.path.stat().st_size, log)
    if settings.references:
        for model in dict.fromkeys(case.model for case in cases):
            report.records += _reference_rows(model, splits[model], settings, artifacts, log)
    return report


def _reference_rows(model: str, split: HeldOutSplit, settings: RunSettings, artifacts: Artifacts,
                    log: TextIO | None) -> list[BenchRecord]:
    """Keras and TF Lite on the same test split, for the ratios a user cares about."""
    keras_file = artifacts.model_file(model)
    fp32 = artifacts.onnx_dir / f"{model}.onnx"
    macs = multiply_adds_per_image(fp32) if fp32.exists() else None
    rows: list[BenchRecord] = []
    for runtime in REFERENCE_RUNTIMES:
        if log:
            print(f"[reference] {model}-fp32-{runtime}", file=log, flush=True)
        reset_peak_rss()
        try:
            sut = make_sut(Case(model, "fp32", runtime, fp32), artifacts)
        except ImportError as exc:
            rows.append(BenchRecord(model, "fp32", runtime, "all", 0, skipped=f"TensorFlow not installed ({exc})"))
            continue
        size = getattr(sut, "model_bytes", None) or keras_file.stat().st_size
        rows += measure(sut, model, "fp32", runtime, split, settings, macs, size, log)
    return rows


def _settings_dict(settings: RunSettings) -> dict:
    values = asdict(settings)
    values["batch_sizes"] = [b or "whole split" for b in settings.batch_sizes]
    return values

