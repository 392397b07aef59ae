"""The study's own runtime and its mobile sibling: the trained ``.keras`` model on Keras, and its TF Lite
conversion on TensorFlow's interpreter. The only rows that need TensorFlow, which is imported when one of
them is built, so an edge machine without it never loads it."""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench.runtimes.base import SUT, InterpreterSUT
from bench.runtimes.trivial import trivial_keras
from trainer import quiet


class KerasSUT(SUT):
    """The trained ``.keras`` model: a whole set through ``model.predict`` (as the report timed it),
    a single query through ``model(x, training=False)`` (Keras' advice for small inputs; ``predict``
    costs tens of milliseconds per call)."""

    def __init__(self, path: Path, threads: int = 0):
        # Keras runs TensorFlow's own thread pools, set once per process: a thread count cannot be asked of it
        # here, and its rows record the default they ran with.
        quiet.import_tensorflow()
        from trainer.models import load_trained  # noqa: PLC0415 - TensorFlow only for reference rows

        start = time.perf_counter()
        self.model = load_trained(Path(path))
        self.session_create_s = time.perf_counter() - start
        self.providers_used = ["keras (TensorFlow CPU)"]
        self.model_bytes = Path(path).stat().st_size
        self.name = "keras"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(batch, training=False))

    def predict(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        return self.model.predict(x, batch_size=batch_size, verbose=0)

    def trivial(self) -> SUT:
        return KerasSUT(trivial_keras())


def tflite_content(keras_file: Path, convert=None) -> bytes:
    """The ``.keras`` model as a TF Lite flatbuffer. ``convert(converter)`` may set quantization first.

    Through a SavedModel: converting a tf.function's concrete function directly leaves the weights as
    unresolved resource variables (all-NaN output, or READ_VARIABLE failing). The converter writes its
    INFO lines (quantizer settings) to fd 2 from native code: filtered as noise unless --verbose.
    """
    tf = quiet.import_tensorflow()  # for reference rows only
    from trainer.models import load_trained  # noqa: PLC0415

    model = load_trained(Path(keras_file))
    with tempfile.TemporaryDirectory(prefix="fmnist-tflite-") as saved, quiet.native_stderr_filtered():
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if convert is not None:
            convert(converter)
        return converter.convert()


class TFLiteSUT(InterpreterSUT):
    """TF Lite fp32 of the same ``.keras`` model, on its default CPU delegate (XNNPACK)."""

    def __init__(self, path: Path, threads: int | None = None):
        self.threads = threads or None
        tf = quiet.import_tensorflow()  # for reference rows only
        content = tflite_content(Path(path))
        with warnings.catch_warnings():
            # tf.lite.Interpreter's deprecation banner (LiteRT is its successor); the interpreter still ships in TF 2.21.
            warnings.simplefilter("ignore", UserWarning)
            self._open(tf.lite.Interpreter, content, threads or os.cpu_count())
        self.providers_used = ["tflite (default delegate: XNNPACK)"]
        self.name = "tflite"

    def trivial(self) -> SUT:
        return TFLiteSUT(trivial_keras(), self.threads)
