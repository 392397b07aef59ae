"""Graph rewrites that make the report's BatchNormalization-after-ReLU (tf2onnx's per-channel ``Mul -> Add``)
quantize and run well; docs/graph.md has why.

onnxruntime's quantizer makes the pair one per-tensor int8 scale and a QLinearMul + QLinearAdd (41% of Model 4's
int8 run time). On feature maps (constants [1, C, 1, 1]) the pair is exactly a depthwise 1x1 Conv, which quantizes
per channel, runs as one QLinearConv, and in fp32 stays inside onnxruntime's NCHWc layout. On dense features
([K]) it is folded into the Dense layers (exporter/fold.py); one that cannot be stays in float
(:func:`float_affine_nodes`). Measured on Model 4 (README, performance section): int8 predict 1.23 s -> 0.65 s,
and int8's accuracy change against fp32 from -0.55 to +0.08 points.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization.onnx_model import ONNXModel

from exporter.simplify import drop_dead_nodes


def affine_pairs(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto, np.ndarray, np.ndarray]]:
    """Every ``Mul(x, const) -> Add(., const)`` whose Mul output feeds only that Add, with both constants."""
    graph = ONNXModel(model)
    constants, consumers = graph.get_initializer_name_set(), graph.input_name_to_nodes()
    pairs = []
    for mul in graph.nodes():
        if mul.op_type != "Mul" or not mul.name or len(mul.input) != 2 or mul.input[1] not in constants:
            continue
        users = consumers.get(mul.output[0], [])
        if (len(users) != 1 or users[0].op_type != "Add" or not users[0].name
                or users[0].input[0] != mul.output[0] or users[0].input[1] not in constants):
            continue
        scale, offset = (graph.get_constant_value(name) for name in (mul.input[1], users[0].input[1]))
        if scale.shape == offset.shape:
            pairs.append((mul, users[0], scale, offset))
    return pairs


def channel_affine_to_depthwise(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every per-channel Mul+Add on NCHW feature maps as a depthwise 1x1 Conv; and how many."""
    graph = ONNXModel(copy.deepcopy(model))
    count = 0
    for i, (mul, add, scale, offset) in enumerate(affine_pairs(graph.model)):
        if not (scale.ndim == 4 and scale.shape[0] == 1 and scale.shape[2:] == (1, 1) and scale.dtype == np.float32):
            continue
        channels = scale.shape[1]
        weight = numpy_helper.from_array(scale.reshape(channels, 1, 1, 1), f"affine_depthwise_{i}_weight")
        bias = numpy_helper.from_array(offset.reshape(channels), f"affine_depthwise_{i}_bias")
        graph.initializer_extend([weight, bias])
        # The Conv takes the Mul's place in the node order (its input is ready there) and the Add's output.
        mul.CopyFrom(helper.make_node("Conv", [mul.input[0], weight.name, bias.name], [add.output[0]],
                                      name=f"affine_depthwise_{i}", group=channels, kernel_shape=[1, 1]))
        graph.remove_node(add)
        count += 1
    return drop_dead_nodes(graph.model), count


def float_affine_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the per-feature Mul+Add pairs on dense features ([K] constants): left in float by the quantizer."""
    return [node.name for mul, add, scale, _ in affine_pairs(model) if scale.ndim == 1 for node in (mul, add)]
