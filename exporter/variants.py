"""fp16 and int8 variants of an fp32 ONNX model, with the tools that already do the job.

fp16: onnxconverter-common, float32 input and output kept (meant for the CUDA provider).
int8: onnxruntime static quantization, QDQ, per-channel weights, calibrated on training images
after onnxruntime's quantization pre-processing (which needs sympy).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxconverter_common import float16
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

from exporter.convert import INPUT_NAME

VARIANTS = ("fp32", "fp16", "int8")
CALIBRATION_BATCH = 32


def variant_filename(model: str, variant: str) -> str:
    return f"{model}.onnx" if variant == "fp32" else f"{model}.{variant}.onnx"


def to_fp16(fp32: onnx.ModelProto) -> onnx.ModelProto:
    with warnings.catch_warnings():
        # One warning per tiny weight clamped to fp16's range; the parity check judges the result.
        warnings.simplefilter("ignore", UserWarning)
        return float16.convert_float_to_float16(fp32, keep_io_types=True)


class _Calibration(CalibrationDataReader):
    def __init__(self, images: np.ndarray):
        self._batches: Iterator[np.ndarray] = iter(np.array_split(images, max(1, len(images) // CALIBRATION_BATCH)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


INT8_FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
INT8_ACTIVATIONS = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}


def to_int8(fp32: onnx.ModelProto, calibration_images: np.ndarray, quant_format: str = "qdq",
            activations: str = "uint8") -> onnx.ModelProto:
    """Static quantization with per-channel int8 weights; by default QDQ with uint8 activations
    (U8S8, the pairing x86 VNNI kernels take; see the README's performance section)."""
    with tempfile.TemporaryDirectory(prefix="fmnist-int8-") as work:
        source, prepared, quantized = (Path(work) / name for name in ("fp32.onnx", "prep.onnx", "int8.onnx"))
        onnx.save(fp32, source)
        quant_pre_process(str(source), str(prepared))
        quantize_static(
            str(prepared), str(quantized), _Calibration(calibration_images.astype(np.float32)),
            quant_format=INT8_FORMATS[quant_format], per_channel=True,
            activation_type=INT8_ACTIVATIONS[activations], weight_type=QuantType.QInt8,
        )
        return onnx.load(quantized)
