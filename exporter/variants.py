"""The graphs that are published: fp32 rewritten for the runtimes (docs/graph.md), and its fp16 and int8 variants.

fp16: onnxconverter-common, float32 input and output kept (meant for the CUDA provider). int8: onnxruntime static
quantization, per-channel weights, calibrated on training images after its pre-processing (which needs sympy).
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxconverter_common import float16
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                      quantize_static)

from exporter.affine import channel_affine_to_depthwise, float_affine_nodes
from exporter.contract import INPUT_NAME
from exporter.fold import affine_after_maxpool, fold_affine_forward
from exporter.simplify import static_reshapes

CALIBRATION_BATCH = 32
# How the fp32 graph lays out BatchNormalization after ReLU; all compute the same function. "fold"'s correction map
# Add runs outside onnxruntime's NCHWc layout, which costs more than the depthwise Conv (docs/performance.md).
FP32_GRAPHS = {
    "depthwise": "BatchNormalization after ReLU: depthwise 1x1 Conv on feature maps, folded into the Dense layers",
    "fold": "BatchNormalization after ReLU: folded into the next Conv (border correction map) and Dense layers",
    "converted": "tf2onnx's graph as converted",
}


def cpu_fp32(converted: onnx.ModelProto, graph: str = "depthwise") -> onnx.ModelProto:
    """The fp32 graph that is published, from tf2onnx's (see FP32_GRAPHS)."""
    return converted if graph == "converted" else _affines_laid_out(converted, into_conv=graph == "fold")


def _affines_laid_out(converted: onnx.ModelProto, into_conv: bool, scales_forward: bool = True) -> onnx.ModelProto:
    """tf2onnx's graph with a static Flatten, BatchNormalization-after-ReLU folded where it can be
    (exporter/fold.py), the rest moved after MaxPools and made depthwise 1x1 Convs (exporter/affine.py)."""
    model = fold_affine_forward(static_reshapes(converted)[0], into_conv=into_conv, scales_forward=scales_forward)[0]
    return channel_affine_to_depthwise(affine_after_maxpool(model)[0])[0]


def to_fp16(fp32: onnx.ModelProto) -> onnx.ModelProto:
    with warnings.catch_warnings():
        # One warning per tiny weight clamped to fp16's range; the parity check judges the result.
        warnings.simplefilter("ignore", UserWarning)
        return float16.convert_float_to_float16(fp32, keep_io_types=True)


class _Calibration(CalibrationDataReader):
    """Equal batches of CALIBRATION_BATCH images (the remainder is left out): onnxruntime's histogram
    calibrators (entropy, percentile) stack the batches' outputs and fail on a shorter last batch."""

    def __init__(self, images: np.ndarray):
        batches = max(1, len(images) // CALIBRATION_BATCH)
        self._batches = iter(np.split(images[: max(CALIBRATION_BATCH, batches * CALIBRATION_BATCH)], batches))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


INT8_FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
INT8_ACTIVATIONS = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                       "percentile": CalibrationMethod.Percentile}


@dataclass(frozen=True)
class Int8Config:
    """How the int8 variant is made. The defaults are QDQ with uint8 activations (U8S8, the pairing
    x86 VNNI kernels take) and min/max calibration; the README's performance section says what the
    alternatives measured."""

    format: str = "qdq"
    activations: str = "uint8"
    calibration: str = "minmax"
    affine_rewrite: bool = True  # see exporter/affine.py
    # Weights in 7 bits (symmetric: -64..64). x86 CPUs without VNNI multiply u8 x s8 with vpmaddubsw, whose int16 pair
    # sums saturate at full-range weights (255 * 127 * 2 > 32767); 255 * 64 * 2 cannot.
    reduce_range: bool = False
    target: str = "vnni"  # the instruction set the file is made for (int8_weights_for): recorded, it set reduce_range

    def metadata(self) -> dict[str, str]:
        return {"int8_format": self.format, "int8_activations": self.activations,
                "int8_calibration": self.calibration,
                "int8_weights": "int7 (reduce_range) per-channel" if self.reduce_range else "int8 per-channel",
                "int8_target": self.target, "int8_affine_rewrite": str(self.affine_rewrite).lower()}


# --int8-target: which int8 weights suit the CPU a model will run on.
INT8_TARGETS = {
    "vnni": False,  # x86 with AVX-512 VNNI, AVX-VNNI or AMX, and Arm: u8 x s8 products accumulate in 32 bits
    "avx2": True,  # x86 without VNNI: vpmaddubsw's int16 pair sums saturate with full-range weights: 7-bit ones
}


def int8_target(name: str, flags: tuple[str, ...]) -> str:
    """``auto``: the target of the CPU with ``flags`` (this machine's, /proc/cpuinfo); else ``name`` itself."""
    if name != "auto":
        return name
    x86 = "avx2" in flags or "avx512f" in flags
    return "avx2" if x86 and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags) else "vnni"


def to_int8(fp32: onnx.ModelProto, calibration_images: np.ndarray, config: Int8Config = Int8Config()) -> onnx.ModelProto:
    """Static quantization with per-channel int8 weights, after onnxruntime's pre-processing.

    ``fp32``: tf2onnx's graph. With the affine rewrite, BatchNormalization after ReLU is folded exactly where
    its scale can go back into the layer before the ReLU (dense features), otherwise made a depthwise 1x1 Conv
    (feature maps), so every weight is quantized per output channel; what is left stays in float."""
    source_model = _affines_laid_out(fp32, into_conv=False, scales_forward=False) if config.affine_rewrite else fp32
    with tempfile.TemporaryDirectory(prefix="fmnist-int8-") as work:
        source, prepared, quantized = (Path(work) / name for name in ("fp32.onnx", "prep.onnx", "int8.onnx"))
        onnx.save(source_model, source)
        quant_pre_process(str(source), str(prepared))
        excluded = float_affine_nodes(onnx.load(prepared)) if config.affine_rewrite else []
        quantize_static(
            str(prepared), str(quantized), _Calibration(calibration_images.astype(np.float32)),
            quant_format=INT8_FORMATS[config.format], per_channel=True,
            activation_type=INT8_ACTIVATIONS[config.activations], weight_type=QuantType.QInt8,
            calibrate_method=CALIBRATION_METHODS[config.calibration], nodes_to_exclude=excluded,
            reduce_range=config.reduce_range,
        )
        return onnx.load(quantized)
