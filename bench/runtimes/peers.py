"""The runtimes a user would pick instead of onnxruntime, measured by the same core (``bench/measure``):

- ``openvino``: the ``.onnx`` file on OpenVINO's CPU plugin at its own default inference precision (bf16 on CPUs
  with AVX-512 BF16 or AMX, f32 elsewhere; the one it picked is recorded); ``openvino-f32``: forced to f32.
- ``litert``: ``ai-edge-litert``'s interpreter (the successor of ``tf.lite.Interpreter``, default XNNPACK
  delegate) on a conversion of the trained ``.keras`` file: fp32, and full-integer int8 calibrated on training
  images, float32 input and output kept.

Each SUT imports its runtime when built: one not installed is a skipped row naming the package. TensorFlow is
needed only to convert for LiteRT; conversions are cached in ``artifacts/litert/``.
"""

from __future__ import annotations

import importlib
import os
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np

from bench.measure.profile import openvino_profile
from bench.measure.tools import ToolUnavailable, benchmark_app, litert_benchmark
from bench.runtimes.base import SUT, Case, InterfaceError, InterpreterSUT, ProviderUnavailable
from bench.runtimes.reference import tflite_content
from bench.runtimes.trivial import RECIPE as TRIVIAL_RECIPE
from bench.runtimes.trivial import trivial_keras, trivial_onnx
from exporter.contract import (INPUT_SHAPE, OUTPUT_SHAPE, ContractError, check_interface, read_manifest,
                               read_metadata_props, sha256_of, shown)
from exporter.publish import current
from trainer import quiet
from trainer.artifacts import Artifacts, atomic_path, writing
from trainer.data import DataError, reload_dataset, split_dataset

# Our scenarios make one synchronous call at a time (a batch, or one single-stream query), so LATENCY,
# OpenVINO's CPU default, is the hint that uses every core for that one call; THROUGHPUT splits the cores
# into streams that only parallel asynchronous requests would fill.
DEFAULT_HINT = "LATENCY"
# The int8 calibration recipe of the ONNX int8 file (exporter/export.py): 512 training images, drawn with seed 0.
CALIBRATION_IMAGES = 512
CALIBRATION_SEED = 0
# Part of every cache name: bump it when convert_litert's recipe changes, so old conversions are not reused.
LITERT_RECIPE = "r1"
TRAIN_EXTRA = "'fmnist-edge[train]'"  # what brings TensorFlow (pyproject.toml)


class PeerUnavailable(ProviderUnavailable):
    """A peer runtime, or what converting for it needs, is missing here; the message names what to install."""

    def __init__(self, message: str):
        super().__init__(message, "not-installed")


def require(module: str, package: str, needed_for: str = "", install: str | None = None) -> ModuleType:
    """Import ``module`` or raise PeerUnavailable naming the package and what to install (imported here only:
    lazily)."""
    try:
        return quiet.import_tensorflow() if module == "tensorflow" else importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.split(".")[0] == exc.name.split(".")[0]:
            raise PeerUnavailable(f"{needed_for}{package} is not installed (pip install {install or package})") from None
        raise PeerUnavailable(f"{needed_for}{package} cannot be imported ({exc})") from None
    except ImportError as exc:  # installed but broken (a missing shared library, ...): say so, not "not installed"
        raise PeerUnavailable(f"{needed_for}{package} cannot be imported ({str(exc).splitlines()[0][:200]})") from None


class OpenVinoSUT(SUT):
    """The exported ``.onnx`` file compiled by OpenVINO for its CPU plugin, batch dimension left dynamic
    (one compiled model for every batch size, as the onnxruntime session)."""

    def __init__(self, path: Path, variant: str, precision: str = "default", hint: str = DEFAULT_HINT,
                 threads: int = 0):
        ov = require("openvino", "openvino")
        self.path, self.variant, self.precision, self.hint, self.threads = Path(path), variant, precision, hint, threads
        config: dict[str, str] = {"PERFORMANCE_HINT": hint}
        if precision == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        start = time.perf_counter()
        try:
            core = ov.Core()
            compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types for a file it cannot read
            raise InterfaceError(f"{shown(self.path)}: OpenVINO cannot load it ({_ov_error(exc)})") from None
        self.session_create_s = time.perf_counter() - start
        try:
            check_interface([_port(p) for p in compiled.inputs], [_port(p) for p in compiled.outputs], self.path)
        except ContractError as exc:
            raise InterfaceError(str(exc)) from None
        self.request = compiled.create_infer_request()
        self._compile = lambda extra: core.compile_model(core.read_model(str(self.path)), "CPU", {**config, **extra})
        picked = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32", "bf16", "f16"
        ran_hint = compiled.get_property("PERFORMANCE_HINT")
        self.provider_options = {
            "device": "CPU",
            "performance_hint": getattr(ran_hint, "name", str(ran_hint)),
            "inference_precision_asked": precision,
            "inference_precision": picked,
            "inference_num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "num_streams": int(compiled.get_property("NUM_STREAMS")),
            "batch": "dynamic",
            "openvino": ov.__version__.split("-")[0],
        }
        self.providers_used = [f"OpenVINO CPU ({picked}, {self.provider_options['performance_hint']})"]
        self.model_bytes = self.path.stat().st_size
        self.name = "openvino" if precision == "default" else "openvino-f32"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        # share_inputs: no copy of a contiguous slice; the output is copied out (share_outputs=False).
        return self.request.infer({0: batch}, share_inputs=True)[0]

    def trivial(self) -> SUT:
        return OpenVinoSUT(trivial_onnx(), self.variant, self.precision, self.hint, self.threads)

    def tool_figures(self, batch: int, seconds: float) -> dict | None:
        return _tool_dict("benchmark_app", lambda: benchmark_app(
            self.path, batch, self.provider_options["performance_hint"], self.precision, self.threads, seconds))

    def profile(self, batch: np.ndarray) -> list | None:
        return openvino_profile(self._compile({"PERF_COUNT": True}).create_infer_request(), batch, self.path)


def _port(port) -> SimpleNamespace:
    """An OpenVINO port as check_interface reads an onnxruntime NodeArg: name, shape, type."""
    shape = [d.get_length() if d.is_static else "batch" for d in port.get_partial_shape()]
    element = port.get_element_type().get_type_name()
    return SimpleNamespace(name=port.get_any_name(), shape=shape, type="tensor(float)" if element == "f32" else element)


def _ov_error(exc: Exception) -> str:
    """OpenVINO's message without its "Exception from src/...cpp:N:" location lines, on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("Exception from ")]
    return " ".join(lines)[:300] or type(exc).__name__


class LiteRTSUT(InterpreterSUT):
    """A LiteRT flatbuffer on ai-edge-litert's interpreter, default delegate (XNNPACK); the input is
    resized whenever the batch size changes, as TFLiteSUT does."""

    def __init__(self, path_tflite: Path, threads: int | None = None):
        litert = require("ai_edge_litert.interpreter", "ai-edge-litert")
        self.path, self.threads = Path(path_tflite), threads or os.cpu_count()
        try:
            inp, out = self._open(litert.Interpreter, self.path.read_bytes(), self.threads)
        except (ValueError, RuntimeError) as exc:
            raise InterfaceError(f"{self.path}: LiteRT cannot load it ({str(exc).splitlines()[0][-300:]})") from None
        if (inp["dtype"] != np.float32 or tuple(inp["shape"][1:]) != INPUT_SHAPE or out["dtype"] != np.float32
                or tuple(out["shape"][1:]) != OUTPUT_SHAPE):
            raise InterfaceError(f"{self.path}: takes {inp['dtype'].__name__} {list(inp['shape'])} and gives "
                                 f"{out['dtype'].__name__} {list(out['shape'])}; expected float32 [batch, 28, 28, 1] -> [batch, 5]")
        self.providers_used = ["litert (default delegate: XNNPACK)"]
        self.provider_options = {"delegate": "XNNPACK (default)", "num_threads": self.threads, "file": self.path.name}
        self.name = "litert"

    def trivial(self) -> SUT | None:
        cached = self.path.parent / f"trivial.{TRIVIAL_RECIPE}.tflite"
        if not cached.is_file():
            try:
                content = tflite_content(trivial_keras())
            except ModuleNotFoundError:  # no TensorFlow here and no cached conversion: no overhead figure
                return None
            with writing(cached), atomic_path(cached) as tmp:
                tmp.write_bytes(content)
        return LiteRTSUT(cached, self.threads)

    def tool_figures(self, batch: int, seconds: float) -> dict | None:
        if batch != 1:  # litert-benchmark runs the file's own input shape, batch 1: no batch figure to set beside
            return None
        runs = max(100, round(seconds * 1000))  # about ``seconds`` at the sub-millisecond queries of these models
        return _tool_dict("litert-benchmark", lambda: litert_benchmark(self.path, self.threads, runs))


def _tool_dict(name: str, run) -> dict:
    try:
        return run().to_dict()
    except ToolUnavailable as exc:
        return {"tool": name, "unavailable": str(exc)}


def convert_litert(keras_file: Path, variant: str, calibration_images: np.ndarray | None = None) -> bytes:
    """The trained ``.keras`` model as a LiteRT flatbuffer: ``fp32``, or ``int8`` full-integer (weights and
    activations int8, calibrated on ``calibration_images``, (N, 28, 28, 1) float32 TRAINING images; float32
    input and output kept). Needs TensorFlow."""
    tf = require("tensorflow", "tensorflow", f"converting {Path(keras_file).name} for LiteRT needs TensorFlow: ", TRAIN_EXTRA)

    def full_integer(converter) -> None:
        images = np.asarray(calibration_images, dtype=np.float32)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[np.newaxis]] for image in images)
        # Full integer: a layer without an int8 kernel fails the conversion instead of staying float.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32

    return tflite_content(Path(keras_file), full_integer if variant == "int8" else None)


def litert_file(artifacts: Artifacts, case: Case) -> Path:
    """The cached LiteRT conversion for ``case``, converted now (and cached) when missing.

    The cache key is the sha256 of the ``.keras`` file the case's ONNX file was exported from (its metadata): the
    rows run the same trained model as the onnxruntime rows, and a retrained model gets a new file.
    """
    source_sha = read_metadata_props(case.path).get("source_keras_sha256")
    if not source_sha:
        raise PeerUnavailable(f"{case.path.name}: no source_keras_sha256 in its metadata; export again: fmnist-export {case.model}")
    cached = artifacts.root / "litert" / f"{case.model}.{case.variant}.{LITERT_RECIPE}.{source_sha[:16]}.tflite"
    if cached.is_file():
        return cached
    keras_file = artifacts.model_file(case.model)
    if not keras_file.is_file():
        raise PeerUnavailable(f"{keras_file}: missing; LiteRT converts the trained model (no cached {cached.name})")
    if sha256_of(keras_file) != source_sha:
        raise PeerUnavailable(f"{keras_file}: not the model {case.path.name} was exported from (sha256 differs: "
                              f"retrained since?); export again: fmnist-export {case.model}")
    require("tensorflow", "tensorflow", f"converting {keras_file.name} for LiteRT needs TensorFlow: ", TRAIN_EXTRA)
    content = convert_litert(keras_file, case.variant,
                             calibration_images(artifacts, case.model) if case.variant == "int8" else None)
    with writing(cached), atomic_path(cached) as tmp:
        tmp.write_bytes(content)
    for stale in cached.parent.glob(f"{case.model}.{case.variant}.*.tflite"):  # conversions of older .keras files
        if stale != cached:
            stale.unlink(missing_ok=True)
    return cached


def calibration_images(artifacts: Artifacts, model: str, count: int = CALIBRATION_IMAGES) -> np.ndarray:
    """The int8 calibration set: ``count`` images of the model's TRAINING split (never test images), drawn
    as exporter/export.py draws the ONNX int8 file's, from the data the manifest records (hash-checked)."""
    record = read_manifest(current(artifacts.onnx_dir)).models[model]
    try:
        train_x = split_dataset(reload_dataset(record["data"], record["limit"])).train.x
    except DataError as exc:  # the runner cannot pass --data to a SUT: a skipped row that says why
        raise PeerUnavailable(f"LiteRT int8 calibration needs {model}'s training data: {exc}") from None
    rng = np.random.default_rng(CALIBRATION_SEED)
    return train_x[rng.choice(len(train_x), size=min(count, len(train_x)), replace=False)][..., np.newaxis]
