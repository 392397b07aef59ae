"""Keras -> ONNX (fp32) with the toolkit's fixed interface.

Interface (exporter/contract.py): input ``image`` float32 ``[batch, 28, 28, 1]`` in [0, 1] (the trainer's
canonical input; the transfer models pad to 32x32x3 inside the graph), output ``probabilities`` float32
``[batch, 5]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

from exporter.contract import BATCH_DIM, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME  # noqa: E402

DEFAULT_OPSET = 17
# tf2onnx's supported range, and what onnxruntime's quantizer (per-channel QDQ needs 13) accepts.
MIN_OPSET, MAX_OPSET = 13, 18


def keras_to_onnx(model: keras.Model, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Convert ``model`` in inference mode to ONNX with the ``image`` -> ``probabilities`` interface.

    Workaround: ``tf2onnx.convert.from_keras`` fails on Keras 3 models with
    ``KeyError: 'keras_tensor_N'`` (onnx/tensorflow-onnx issue #2448, open upstream;
    Keras 3 support in general is #2329). Converting a
    ``tf.function`` of ``model(x, training=False)`` with an explicit input signature works and
    matches Keras to about 2e-7. Keep this the only place that calls tf2onnx.
    """
    signature = (tf.TensorSpec((None, *INPUT_SHAPE), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=signature)
    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)
    return _fix_interface(proto)


def _fix_interface(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Name the output ``probabilities`` and the dynamic batch dimension ``batch``."""
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ValueError(f"expected one input and one output, got {len(graph.input)} and {len(graph.output)}")
    old_output = graph.output[0].name
    if old_output != OUTPUT_NAME:
        for node in graph.node:
            node.output[:] = [OUTPUT_NAME if name == old_output else name for name in node.output]
        graph.output[0].name = OUTPUT_NAME
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    return proto
