"""Systems under test: an onnxruntime session on one provider, and the Keras / TF Lite references.

A SUT answers queries and never times itself (``bench/measure.py`` does, for both front doors).
Everything here but the two reference classes imports only onnxruntime and numpy; the reference
classes import TensorFlow when they are built, so an edge machine without it never loads it.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from bench.providers import DeviceRun, ProviderUnavailable, device_timer, node_placement, open_session
from bench.settings import SessionSettings
from exporter.contract import INPUT_NAME, OUTPUT_NAME, ContractError, check_interface
from trainer import quiet

__all__ = ["SUT", "OrtSUT", "InterpreterSUT", "KerasSUT", "TFLiteSUT", "InterfaceError", "ProviderUnavailable"]


class InterfaceError(ContractError):
    """The ONNX file cannot be loaded, or does not take the trainer's images and give 5 probabilities."""


class SUT:
    """A system under test: ``sut(batch)`` answers one query; ``sut.predict(x, batch_size)`` a whole set."""

    name: str
    providers_used: list[str]
    session_create_s: float
    model_bytes: int  # the size of what this runtime loaded
    provider_options: dict | None = None
    placement: dict | None = None  # CUDA: which nodes onnxruntime put on which provider
    measures_device = False  # whether device_run() gives device-only timing (CUDA)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        return np.concatenate([self(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


class OrtSUT(SUT):
    """An onnxruntime session on exactly one provider (never a silent CPU fallback)."""

    def __init__(self, path: Path, provider: str = "cpu", settings: SessionSettings = SessionSettings()):
        self.path, self.provider = Path(path), provider
        self.provider_options = settings.cuda_options() if provider == "cuda" else None
        start = time.perf_counter()
        try:
            self.session = open_session(self.path, settings.options(), provider, self.provider_options)
        except ProviderUnavailable:
            raise
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
            raise InterfaceError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0][-300:]})") from None
        self.session_create_s = time.perf_counter() - start
        try:
            check_interface(self.session.get_inputs(), self.session.get_outputs(), self.path)
        except ContractError as exc:
            raise InterfaceError(str(exc)) from None
        self.providers_used = self.session.get_providers()
        self.model_bytes = self.path.stat().st_size
        self.name = f"onnxruntime {provider}"
        if provider == "cuda":
            # A "CUDA" session may run some nodes on the CPU (int8 QDQ: QLinearConv has no CUDA kernel):
            # the profile of one run says which, and the report labels the case with it.
            where = node_placement(self.path, settings.options(), provider, self.provider_options,
                                   np.zeros((1, *self.session.get_inputs()[0].shape[1:]), np.float32))
            self.placement = {"nodes_by_provider": where.nodes_by_provider, "cpu_op_types": where.cpu_op_types,
                              "copies": where.copies, "label": where.label()}
            self.measures_device = True

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def device_run(self, batch: np.ndarray) -> DeviceRun:
        """One call on ``batch`` already on the session's device, output left there (IOBinding)."""
        return device_timer(self.session, INPUT_NAME, OUTPUT_NAME, batch)


class KerasSUT(SUT):
    """The trained ``.keras`` model: a whole set through ``model.predict`` (as the report timed it),
    a single query through ``model(x, training=False)`` (Keras' advice for small inputs; ``predict``
    costs tens of milliseconds per call)."""

    def __init__(self, path: Path):
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


class InterpreterSUT(SUT):
    """A TF Lite flatbuffer on an interpreter (TensorFlow's or LiteRT's): the input is resized whenever
    the batch size changes. Subclasses set ``interpreter``, ``_input``, ``_output`` and ``_batch``."""

    interpreter: object
    _input: int
    _output: int
    _batch: int | None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._batch != len(batch):
            self.interpreter.resize_tensor_input(self._input, batch.shape)
            self.interpreter.allocate_tensors()
            self._batch = len(batch)
        self.interpreter.set_tensor(self._input, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output).copy()


class TFLiteSUT(InterpreterSUT):
    """TF Lite fp32 of the same ``.keras`` model, on its default CPU delegate (XNNPACK)."""

    def __init__(self, path: Path, threads: int | None = None):
        import tensorflow as tf  # noqa: PLC0415 - TensorFlow only for reference rows

        from trainer.models import load_trained  # noqa: PLC0415

        model = load_trained(Path(path))
        # Through a SavedModel: converting a tf.function's concrete function directly leaves the
        # weights as unresolved resource variables (all-NaN output, or READ_VARIABLE failing).
        # The converter and the interpreter write their INFO lines (XNNPACK delegate, quantizer settings)
        # to fd 2 from native code: filtered as noise unless --verbose.
        with tempfile.TemporaryDirectory(prefix="fmnist-tflite-") as saved, quiet.native_stderr_filtered():
            model.export(saved, format="tf_saved_model", verbose=False)
            content = tf.lite.TFLiteConverter.from_saved_model(saved).convert()
        start = time.perf_counter()
        with warnings.catch_warnings(), quiet.native_stderr_filtered():
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
        self.model_bytes = len(content)  # the flatbuffer that runs, not the .keras it came from
