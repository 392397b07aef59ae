"""The work a model does: multiply-adds counted from its ONNX graph, and the rate a measured time gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference


def multiply_adds_per_image(path: Path) -> int:
    """Multiply-accumulates of one image through the Conv, MatMul and Gemm nodes of an ONNX graph."""
    return sum(macs for _, macs in multiply_adds_by_node(path))


def multiply_adds_by_node(path: Path) -> list[tuple[str, int]]:
    """(family, multiply-accumulates of one image) of each Conv ("conv") and MatMul or Gemm ("matmul") node, in
    graph order. Shapes come from ONNX shape inference with the batch fixed to 1. Quantized (QDQ) graphs keep
    the same Conv/MatMul nodes, so every variant of a model counts the same work."""
    model = onnx.load(str(path), load_external_data=False)
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.input, *model.graph.output)}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    # A quantized weight reaches its Conv through DequantizeLinear: follow it to the initializer.
    producer = {out: node for node in model.graph.node for out in node.output}

    def shape_of(name: str) -> list[int] | None:
        while name not in shapes and name in producer and producer[name].op_type in ("DequantizeLinear", "Cast", "Identity"):
            name = producer[name].input[0]
        return shapes.get(name)

    found = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            out, weight = shape_of(node.output[0]), shape_of(node.input[1])
            if out and weight:
                found.append(("conv", int(np.prod(out)) * int(np.prod(weight[1:]))))  # per output: Cin/group * kh * kw
        elif node.op_type in ("MatMul", "Gemm"):
            # The weight is a 2-D initializer; the activation's shape is often not inferable after
            # tf2onnx's Reshape, so count rows from the output when known, else one row per image.
            weight, out = shape_of(node.input[1]), shape_of(node.output[0])
            if weight and len(weight) == 2:
                rows = int(np.prod(out[:-1])) if out and all(out[:-1]) else 1
                found.append(("matmul", rows * weight[0] * weight[1]))
    return found


def achieved_gflops(macs_per_image: int, images: int, seconds: float) -> float:
    return 2 * macs_per_image * images / seconds / 1e9
