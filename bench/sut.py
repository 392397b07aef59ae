"""Systems under test: an onnxruntime session on one provider, and the Keras / TF Lite references.

Everything here but the two reference classes imports only onnxruntime and numpy. The reference
classes import TensorFlow when they are built, so an edge machine without it never loads it.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

INPUT_NAME, OUTPUT_NAME = "image", "probabilities"
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class ProviderUnavailable(RuntimeError):
    """The session did not get the provider it asked for; the message is the loader's reason."""


@dataclass(frozen=True)
class SessionSettings:
    """The onnxruntime knobs the performance section tried; defaults are what measured best here."""

    intra_op_threads: int = 0  # 0: onnxruntime's default (one per physical core)
    graph_optimization: str = "all"  # disable | basic | extended | all

    def options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.graph_optimization]
        return options


@contextlib.contextmanager
def _captured_fd2() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 (onnxruntime's logger writes there)."""
    lines: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def _loader_reason(lines: list[str], provider: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(lines))
    found = re.search(r"Failed to load library \S+ with error: ([^\n]+)", text) or re.search(rf"Failed to create {provider}[^\n]*", text)
    reason = found.group(1) if found and found.groups() else (found.group(0) if found else "no reason logged")
    return f"{provider} requested but the session runs on CPU only: {reason.strip()}"


class InterfaceError(ValueError):
    """The ONNX file does not take the trainer's images or does not give 5 probabilities."""


def _check_interface(session: ort.InferenceSession, path: Path) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    expected = f"input {INPUT_NAME!r} float32 [batch, 28, 28, 1] and output {OUTPUT_NAME!r} [batch, 5] (export with fmnist-export)"
    if len(inputs) != 1 or len(outputs) != 1:
        raise InterfaceError(f"{path}: {len(inputs)} inputs and {len(outputs)} outputs; expected {expected}")
    (inp,), (out,) = inputs, outputs
    if inp.name != INPUT_NAME or list(inp.shape[1:]) != [28, 28, 1] or inp.type != "tensor(float)":
        raise InterfaceError(f"{path}: input {inp.name!r} is {inp.type} {inp.shape}; expected {expected}")
    if out.name != OUTPUT_NAME or list(out.shape[1:]) != [5]:
        raise InterfaceError(f"{path}: output {out.name!r} has shape {out.shape}; expected {expected}")


class SUT:
    """A system under test: ``sut(batch)`` answers one query; ``sut.predict(x, batch_size)`` a whole set."""

    providers_used: list[str]
    session_create_s: float

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        return np.concatenate([self(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


class OrtSUT(SUT):
    """An onnxruntime session on exactly one provider (never a silent CPU fallback)."""

    def __init__(self, path: Path, provider: str = "cpu", settings: SessionSettings = SessionSettings()):
        self.path, self.provider = Path(path), provider
        wanted = PROVIDERS[provider]
        providers = [wanted] if provider == "cpu" else [wanted, PROVIDERS["cpu"]]
        start = time.perf_counter()
        with _captured_fd2() as log:
            try:
                self.session = ort.InferenceSession(str(path), sess_options=settings.options(), providers=providers)
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
                raise InterfaceError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0][-300:]})") from None
        self.session_create_s = time.perf_counter() - start
        _check_interface(self.session, self.path)
        self.providers_used = self.session.get_providers()
        if wanted not in self.providers_used:
            raise ProviderUnavailable(_loader_reason(log, wanted))
        self.name = f"onnxruntime {provider}"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


class KerasSUT(SUT):
    """The trained ``.keras`` model: a whole set through ``model.predict`` (as the report timed it),
    a single query through ``model(x, training=False)`` (Keras' advice for small inputs; ``predict``
    costs tens of milliseconds per call)."""

    provider = "keras"

    def __init__(self, path: Path):
        from trainer.models import load_trained  # noqa: PLC0415 - TensorFlow only for reference rows

        start = time.perf_counter()
        self.model = load_trained(Path(path))
        self.session_create_s = time.perf_counter() - start
        self.providers_used = ["keras (TensorFlow CPU)"]
        self.name = "keras"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(batch, training=False))

    def predict(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        return self.model.predict(x, batch_size=batch_size, verbose=0)


class TFLiteSUT(SUT):
    """TF Lite fp32 of the same ``.keras`` model, on its default CPU delegate (XNNPACK)."""

    provider = "tflite"

    def __init__(self, path: Path, threads: int | None = None):
        import tensorflow as tf  # noqa: PLC0415 - TensorFlow only for reference rows

        from trainer.models import load_trained  # noqa: PLC0415

        model = load_trained(Path(path))
        # Through a SavedModel: converting a tf.function's concrete function directly leaves the
        # weights as unresolved resource variables (all-NaN output, or READ_VARIABLE failing).
        with tempfile.TemporaryDirectory(prefix="fmnist-tflite-") as saved:
            model.export(saved, format="tf_saved_model", verbose=False)
            content = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
        start = time.perf_counter()
        with warnings.catch_warnings():
            # tf.lite.Interpreter's deprecation banner (LiteRT is its successor); the interpreter still ships in TF 2.21.
            warnings.simplefilter("ignore", UserWarning)
            self.interpreter = tf.lite.Interpreter(model_content=content, num_threads=threads or os.cpu_count())
        self.interpreter.allocate_tensors()
        self.session_create_s = time.perf_counter() - start
        self._input = self.interpreter.get_input_details()[0]["index"]
        self._output = self.interpreter.get_output_details()[0]["index"]
        self._batch = None
        self.providers_used = ["tflite (default delegate: XNNPACK)"]
        self.name = "tflite"
        self.model_bytes = len(content)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._batch != len(batch):
            self.interpreter.resize_tensor_input(self._input, batch.shape)
            self.interpreter.allocate_tensors()
            self._batch = len(batch)
        self.interpreter.set_tensor(self._input, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output).copy()
