"""Exact folding of the report's BatchNormalization-after-ReLU (tf2onnx's per-channel ``Mul -> Add``) into the
layers around it; the algebra, and why each fold is exact, is in docs/graph.md.

- into a Dense layer (``MatMul`` + bias ``Add``), through MaxPool (positive scales only), Transpose and Reshape:
  the scale back into the layer before the ReLU where it can go (``s * ReLU(z) = ReLU(s * z)`` for ``s > 0``),
  else forward into the weight's rows; the shift forward into the bias;
- into the next Conv (``--fp32-graph fold``): ``W * s`` over input channels, ``b + sum(W * t)``, and a constant
  correction map after it where 'same' padding zeros the normalised border.

Only a Mul/Add pair whose output feeds exactly one such chain is folded; anything else is left as it is.
:func:`affine_after_maxpool` moves what is left past a following MaxPool, where it touches a quarter of the values.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization.onnx_model import ONNXModel

from exporter.affine import affine_pairs
from exporter.simplify import Shapes, drop_dead_nodes, known, value_shapes

# Operators an affine map may pass through on its way to the next linear layer: they move or select
# features but do not mix them (MaxPool only when every scale is positive).
_PASS_THROUGH = ("MaxPool", "Transpose", "Reshape")


@dataclass
class FoldReport:
    into_conv: int = 0
    into_dense: int = 0
    corrections: int = 0  # convolutions that needed a border correction map
    scaled_back: int = 0  # of into_dense: the scale went into the layer before the ReLU, the shift forward


def fold_affine_forward(model: onnx.ModelProto, into_conv: bool = True,
                        scales_forward: bool = True) -> tuple[onnx.ModelProto, FoldReport]:
    """A copy of ``model`` with every foldable per-channel Mul+Add folded into the next Conv or MatMul.

    ``into_conv=False`` folds into Dense layers only (no correction maps). ``scales_forward=False`` is for a
    graph that will be quantized: a scale folded forward multiplies the next layer's weight *rows*, while
    int8 weights are scaled per *column* (output channel), so the rows with the smallest scales would lose
    bits (Model 4's first dense BatchNormalization spans a factor of 253: -33 accuracy points with 7-bit
    weights). Then only affines whose scale can go back into the layer before the ReLU are folded.
    """
    graph = ONNXModel(copy.deepcopy(model))
    report = FoldReport()
    # The pairs are found once: a fold edits nodes in place, and never another pair's nodes or constants.
    for mul, add, scale, offset in affine_pairs(graph.model):
        positive = bool((scale > 0).all())
        chain = _chain_to_linear(graph, add.output[0], positive)
        if chain is None:
            continue
        shapes = value_shapes(graph.model)  # again after each fold: a correction map renames a Conv's output
        *passes, linear = chain
        if linear.op_type == "Conv":
            if not (into_conv and scales_forward and scale.ndim == 4 and all(p.op_type == "MaxPool" for p in passes)
                    and _is_plain_conv(graph, linear, shapes)):
                continue
            report.corrections += _fold_into_conv(graph, linear, shapes, scale.reshape(-1), offset.reshape(-1))
            report.into_conv += 1
        else:
            per_row = _through(passes, shapes, scale, offset)
            if _dense_bias(graph, linear) is None or per_row is None:
                continue  # no bias to take the shift, or the features cannot be followed to the Dense rows
            row_scale, row_offset = per_row
            producer = _layer_before_relu(graph, mul.input[0]) if positive else None
            if producer is not None:
                # s * ReLU(z) = ReLU(s * z) for s > 0: the scale goes back into the layer before the ReLU, per
                # output channel (which its int8 weights are scaled by anyway); only the shift goes forward.
                _scale_outputs(graph, producer, scale.reshape(-1))
                row_scale = np.ones_like(row_scale)
                report.scaled_back += 1
            elif not scales_forward:
                continue
            _fold_into_dense(graph, linear, row_scale, row_offset)
            report.into_dense += 1
        graph.replace_input_of_all_nodes(add.output[0], mul.input[0])  # the pair's users read its input instead
        graph.remove_nodes([mul, add])
    return drop_dead_nodes(graph.model), report


def affine_after_maxpool(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` where each per-channel Mul+Add with only positive scales that feeds only a MaxPool runs
    after it instead: ``max(s * x + t) = s * max(x) + t`` for ``s > 0``, so the affine touches a quarter of the
    values (2x2 pooling). Returns how many were moved."""
    graph = ONNXModel(copy.deepcopy(model))
    moved = 0
    for mul, add, scale, _ in affine_pairs(graph.model):
        pool = _only_consumer(graph, add.output[0])
        if pool is None or pool.op_type != "MaxPool" or not (scale > 0).all() or len(pool.output) != 1:
            continue
        # x -> Mul -> Add -> MaxPool -> y   becomes   x -> MaxPool -> Mul -> Add -> y
        source, pooled, result = mul.input[0], pool.output[0], add.output[0]
        pool.input[0], pool.output[0] = source, result
        mul.input[0] = result
        add.output[0] = pooled
        moved += 1
    graph.topological_sort()  # the MaxPool now comes before the pair it followed
    return graph.model, moved


# --------------------------------------------------------------------------- finding what folds
# Each lookup asks ONNXModel for fresh maps: a fold rewires the graph, and these graphs have tens of nodes.

def _only_consumer(graph: ONNXModel, name: str) -> onnx.NodeProto | None:
    # A Shape node reads only the shape (tf2onnx's Flatten computes its target shape that way).
    users = [node for node in graph.input_name_to_nodes().get(name, []) if node.op_type != "Shape"]
    return users[0] if len(users) == 1 and not graph.is_graph_output(name) else None


def _chain_to_linear(graph: ONNXModel, name: str, positive: bool) -> list[onnx.NodeProto] | None:
    """The pass-through nodes from ``name`` to the Conv or MatMul that takes it (as its data input)."""
    chain = []
    while (node := _only_consumer(graph, name)) is not None:
        chain.append(node)
        if node.op_type in ("Conv", "MatMul"):
            return chain if node.input[0] == name else None
        if node.op_type not in _PASS_THROUGH or (node.op_type == "MaxPool" and not positive):
            return None
        name = node.output[0]
    return None


def _layer_before_relu(graph: ONNXModel, name: str) -> onnx.NodeProto | None:
    """The Conv, or the Dense layer's bias Add, whose output goes only through a ReLU to ``name``;
    None unless its weight and bias are constants used nowhere else."""
    relu = graph.output_name_to_node().get(name)
    if relu is None or relu.op_type != "Relu" or _only_consumer(graph, relu.output[0]) is None:
        return None
    layer = graph.get_parent(relu, 0)
    if layer is None or _only_consumer(graph, layer.output[0]) is None:
        return None
    if layer.op_type == "Conv" and len(layer.input) == 3 and all(_private_constant(graph, n) for n in layer.input[1:]):
        return layer
    if layer.op_type == "Add" and _private_constant(graph, layer.input[1]):
        matmul = graph.get_parent(layer, 0)
        if matmul is not None and matmul.op_type == "MatMul" and _private_constant(graph, matmul.input[1]):
            return layer
    return None


def _private_constant(graph: ONNXModel, name: str) -> bool:
    """A constant only one node reads: its value can be rewritten in place."""
    return graph.get_initializer(name) is not None and len(graph.input_name_to_nodes().get(name, [])) == 1


def _dense_bias(graph: ONNXModel, matmul: onnx.NodeProto) -> onnx.NodeProto | None:
    """The ``Add(MatMul, const)`` that is the layer's bias, when the weight is a constant too."""
    add = _only_consumer(graph, matmul.output[0])
    if (_private_constant(graph, matmul.input[1]) and add is not None and add.op_type == "Add"
            and add.input[0] == matmul.output[0] and _private_constant(graph, add.input[1])):
        return add
    return None


def _is_plain_conv(graph: ONNXModel, conv: onnx.NodeProto, shapes: Shapes) -> bool:
    attrs = _attributes(conv)
    return (len(conv.input) == 3 and all(_private_constant(graph, name) for name in conv.input[1:])
            and attrs.get("group", 1) == 1 and set(attrs.get("dilations", [1, 1])) == {1}
            and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
            and len(shapes.get(conv.input[0]) or []) == 4 and known(shapes[conv.input[0]][2:]))


def _through(passes: list[onnx.NodeProto], shapes: Shapes, scale: np.ndarray,
             offset: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The scale and offset as one value per row of the Dense weight the chain ends in: the constants are
    broadcast over the feature map and moved by the same MaxPool/Transpose/Reshape. None when a shape on the
    way is unknown, or the result is not constant along every axis but the one the MatMul contracts."""
    moved = []
    for value in (scale, offset):
        for node in passes:
            shape = shapes.get(node.output[0] if node.op_type == "MaxPool" else node.input[0])
            if not shape or not known(shape[1:]):
                return None
            value = np.broadcast_to(value, [1, *shape[1:]])  # MaxPool keeps each channel's value
            if node.op_type == "Transpose":
                value = value.transpose(_attributes(node)["perm"])
            elif node.op_type == "Reshape":
                out = shapes.get(node.output[0])
                if not out or not known(out[1:]):
                    return None
                value = value.reshape(1, *out[1:])
        rows = value.reshape(-1, value.shape[-1]) if value.ndim > 1 else value[None]
        if not np.array_equal(rows, np.broadcast_to(rows[:1], rows.shape)):
            return None
        moved.append(rows[0])
    return moved[0], moved[1]


# --------------------------------------------------------------------------- folding

def _fold_into_conv(graph: ONNXModel, conv: onnx.NodeProto, shapes: Shapes, s: np.ndarray, t: np.ndarray) -> int:
    """Fold into ``conv``; returns 1 when a border correction map was added after it."""
    attrs = _attributes(conv)
    weight, bias = (graph.get_constant_value(name) for name in conv.input[1:])
    shift = weight.astype(np.float64) * t[None, :, None, None]  # [O, C, kh, kw]: each tap's share of the shift
    _set(graph, conv.input[1], (weight * s[None, :, None, None]).astype(weight.dtype))
    _set(graph, conv.input[2], (bias + shift.sum(axis=(1, 2, 3))).astype(bias.dtype))
    pads = attrs.get("pads", [0, 0, 0, 0])
    if not any(pads):
        return 0
    # What the folded convolution adds at each output position from taps that fall on padding: the same
    # convolution of a map of ones padded with zeros tells where taps fall inside, so the correction is
    # the shift over those inside taps minus the full shift.
    height, width = shapes[conv.input[0]][2:]
    ones = np.ones((1, 1, height, width))
    inside = _conv2d(ones, shift.sum(axis=1, keepdims=True), attrs)  # [1, O, H', W']
    correction = (inside[0] - shift.sum(axis=(1, 2, 3))[:, None, None])[None].astype(np.float32)
    if not np.any(correction):
        return 0
    # The correction Add, right after the Conv, takes over the Conv's output name: its users need no rewiring.
    name, output = f"{conv.name}_fold_border", conv.output[0]
    graph.add_initializer(numpy_helper.from_array(correction, f"{name}_map"))
    conv.output[0] = f"{output}_uncorrected"
    nodes = graph.nodes()
    nodes.insert(list(nodes).index(conv) + 1, helper.make_node("Add", [conv.output[0], f"{name}_map"], [output], name=name))
    return 1


def _conv2d(x: np.ndarray, w: np.ndarray, attrs: dict) -> np.ndarray:
    """A plain NCHW convolution in float64 (for the correction map only): x [1, C, H, W], w [O, C, kh, kw]."""
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    stride_h, stride_w = attrs.get("strides", [1, 1])
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, w.shape[2:], axis=(2, 3))[:, :, ::stride_h, ::stride_w]
    return np.einsum("nchwij,ocij->nohw", windows, w)


def _scale_outputs(graph: ONNXModel, layer: onnx.NodeProto, s: np.ndarray) -> None:
    """Multiply a Conv's, or a Dense layer's (``layer`` is its bias Add), output channels by ``s``."""
    if layer.op_type == "Conv":
        weight, bias, weight_factor = layer.input[1], layer.input[2], s[:, None, None, None]
    else:
        weight, bias, weight_factor = graph.get_parent(layer, 0).input[1], layer.input[1], s[None, :]
    for name, factor in ((weight, weight_factor), (bias, s)):
        value = graph.get_constant_value(name)
        _set(graph, name, (value * factor).astype(value.dtype))


def _fold_into_dense(graph: ONNXModel, matmul: onnx.NodeProto, s: np.ndarray, t: np.ndarray) -> None:
    weight, bias_name = graph.get_constant_value(matmul.input[1]), _dense_bias(graph, matmul).input[1]
    bias = graph.get_constant_value(bias_name)
    s, t = (np.broadcast_to(v, weight.shape[:1]) for v in (s, t))  # one value per weight row (or one for all)
    _set(graph, matmul.input[1], (s[:, None] * weight).astype(weight.dtype))
    _set(graph, bias_name, (bias + t.astype(np.float64) @ weight).astype(bias.dtype))


def _set(graph: ONNXModel, name: str, value: np.ndarray) -> None:
    """Replace a constant's value in place (a fresh name is not needed: each weight here has one user)."""
    graph.get_initializer(name).CopyFrom(numpy_helper.from_array(value, name))


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
