"""What every runtime's system under test is: the case it runs, the interface it answers, and how it says
it cannot run here.

A SUT answers queries and never times itself (``bench/measure`` does, for both front doors). This module
imports only numpy and the layers below, so the registry can name every runtime on a machine that has
none of the optional ones installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporter.contract import ContractError


@dataclass(frozen=True)
class Case:
    """One system to measure: ``path`` is the ONNX file that runs (for Keras, TF Lite and LiteRT, the graph
    of that variant that counts its work; they load the trained ``.keras`` file or its conversion).
    ``provider`` is the runtime's key in the registry (``bench/runtimes/__init__.py``)."""

    model: str
    variant: str
    provider: str
    path: Path
    threads: int = 0  # the runtime's intra-op threads (--threads); 0: its own default

    @property
    def id(self) -> str:
        return f"{self.model}-{self.variant}-{self.provider}{thread_suffix(self.threads)}"


def thread_suffix(threads: int) -> str:
    """``-t1`` for a case run at one thread; nothing at the runtime's default, so ids of earlier runs still match."""
    return f"-t{threads}" if threads else ""


class ProviderUnavailable(RuntimeError):
    """The runtime cannot run here; the message is the skipped row's reason.

    ``kind`` is one of: not-installed, not-built, toolkit, cudnn, driver, driver-too-old, no-device,
    device-error, no-keras-source (an imported ONNX model on a row that runs the .keras file), unknown
    (the CUDA kinds come from ``bench/runtimes/cuda.py``).
    """

    def __init__(self, message: str, kind: str = "unknown", log: Iterable[str] = ()):
        super().__init__(message)
        self.kind = kind
        self.log = list(log)


class InterfaceError(ContractError):
    """The file cannot be loaded, or does not take the trainer's images and give 5 probabilities."""


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

    def trivial(self) -> "SUT | None":
        """The same runtime, call path and settings on a trivial model of the same interface
        (bench/runtimes/trivial.py): its single-query time is this runtime's call overhead. None where it
        cannot be built here."""
        return None

    def tool_figures(self, batch: int, seconds: float) -> dict | None:
        """The runtime's own benchmark tool on the same file at ``batch`` (bench/measure/tools.py), as a dict;
        ``{"tool": name, "unavailable": reason}`` when it cannot run; None where the runtime ships none."""
        return None

    def profile(self, batch: np.ndarray) -> list | None:
        """The runtime's own per-operator profile of ``batch`` (bench/measure/profile.py), from a second,
        profiling instance; None where the runtime's Python API gives none."""
        return None


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
