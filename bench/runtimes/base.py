"""What every runtime's system under test is: the case it runs, the interface it answers (it never times
itself: ``bench/measure`` does), and how it says it cannot run here. Imports only numpy and the layers below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporter.contract import ContractError
from trainer import quiet


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
        """``-t1`` for one thread; no suffix at the runtime's default, so ids of earlier runs still match."""
        return f"{self.model}-{self.variant}-{self.provider}" + (f"-t{self.threads}" if self.threads else "")


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
    """A TF Lite flatbuffer on an interpreter (TensorFlow's or LiteRT's), its default delegate (XNNPACK): the
    input is resized whenever the batch size changes. Subclasses call ``_open`` first."""

    def _open(self, interpreter: Callable[..., Any], content: bytes, threads: int) -> tuple[dict, dict]:
        """``interpreter(model_content=content)`` ready to run (its creation timed); its input's and output's details."""
        start = time.perf_counter()
        with quiet.native_stderr_filtered():  # the XNNPACK delegate's INFO line, unless --verbose
            self.interpreter = interpreter(model_content=content, num_threads=threads)
            self.interpreter.allocate_tensors()
        self.session_create_s = time.perf_counter() - start
        (inp,), (out,) = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        self._input, self._output, self._batch = inp["index"], out["index"], int(inp["shape"][0])
        self.model_bytes = len(content)  # the flatbuffer that runs, not the .keras it came from
        return inp, out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._batch != len(batch):
            self.interpreter.resize_tensor_input(self._input, batch.shape)
            self.interpreter.allocate_tensors()
            self._batch = len(batch)
        self.interpreter.set_tensor(self._input, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output).copy()
