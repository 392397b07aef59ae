"""Validation of exported files: ONNX's checker, then parity with the reference model on test images.

As in optimum's exporter: explicit tolerances, and a failure names the model, the variant and the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from exporter.contract import INPUT_NAME, OUTPUT_NAME

PREDICT_BATCH = 256


@dataclass(frozen=True)
class Tolerances:
    fp32_max_abs: float = 1e-4
    fp32_min_agreement: float = 1.0
    fp16_max_abs: float = 1e-2
    fp16_min_agreement: float = 0.995
    int8_max_accuracy_drop_points: float = 1.0


@dataclass
class Parity:
    images: int
    max_abs_diff: float
    argmax_agreement: float
    accuracy_onnx: float | None = None  # on the whole test split
    accuracy_fp32_onnx: float | None = None
    accuracy_change_points: float | None = None  # onnx - fp32 onnx, in percentage points


class ParityError(RuntimeError):
    pass


def check_model(path: Path) -> None:
    onnx.checker.check_model(str(path), full_check=True)


def cpu_session(path: Path | bytes) -> ort.InferenceSession:
    return ort.InferenceSession(str(path) if isinstance(path, Path) else path, providers=["CPUExecutionProvider"])


def run_probabilities(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    out = [session.run([OUTPUT_NAME], {INPUT_NAME: images[i:i + PREDICT_BATCH]})[0]
           for i in range(0, len(images), PREDICT_BATCH)]
    return np.concatenate(out).astype(np.float32)


def compare(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    """Parity of ``candidate`` with ``reference``: shapes first, so an ``(N, 1)`` output can never broadcast
    against ``(N, 5)`` into a false pass, then the values."""
    if reference.shape != candidate.shape:
        raise ParityError(f"output shape {candidate.shape} differs from the Keras model's {reference.shape}")
    return Parity(images=len(reference), max_abs_diff=float(np.max(np.abs(reference - candidate))),
                  argmax_agreement=float(np.mean(reference.argmax(-1) == candidate.argmax(-1))))


def enforce(model: str, variant: str, parity: Parity, tol: Tolerances, reference: str = "keras") -> None:
    """Raise ParityError with the figures when ``parity`` is outside ``tol`` for ``variant``; ``reference``
    names what the probabilities were compared with (the Keras model, or an imported file's original)."""
    problems = []
    if variant in ("fp32", "fp16"):
        max_abs = getattr(tol, f"{variant}_max_abs")
        min_agree = getattr(tol, f"{variant}_min_agreement")
        if not parity.max_abs_diff <= max_abs:
            problems.append(f"max |p_onnx - p_{reference}| {parity.max_abs_diff:.3g} > {max_abs:g}")
        if parity.argmax_agreement < min_agree:
            problems.append(f"argmax agreement {parity.argmax_agreement:.2%} < {min_agree:.2%}")
    if variant == "int8" and parity.accuracy_change_points is not None:
        if parity.accuracy_change_points < -tol.int8_max_accuracy_drop_points:
            problems.append(f"test accuracy {parity.accuracy_onnx:.4f} vs fp32 {parity.accuracy_fp32_onnx:.4f}: "
                            f"{-parity.accuracy_change_points:.2f} points lost > {tol.int8_max_accuracy_drop_points:g} allowed")
    if problems:
        raise ParityError(f"{model} {variant}: parity check failed on {parity.images} test images: " + "; ".join(problems))
