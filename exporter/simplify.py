"""Graph clean-ups that change no value: tf2onnx's Flatten as one static Reshape, and dead nodes removed.

tf2onnx converts Keras' Flatten into ``Shape -> Gather -> Cast -> Slice -> Concat -> Cast -> Reshape``, which
computes ``[batch, features]`` at run time. Six small operators cost nothing at batch 128 but about 5% of
a single-image query on the CPU provider; a constant ``[0, features]`` (0: keep the input's batch
dimension, as ONNX Reshape defines it) says the same thing.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference
from onnxruntime.quantization.onnx_model import ONNXModel

Shapes = dict[str, list[int | str | None]]  # value name -> its dimensions (a symbolic one by its name, unknown None)


def static_reshapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` where every Reshape with a computed target shape that keeps the batch dimension and
    fixes all others gets that shape as a constant; the shape computation is dropped. Returns how many."""
    graph = ONNXModel(copy.deepcopy(model))
    constants = graph.get_initializer_name_set()
    shapes = value_shapes(graph.model)
    replaced = 0
    for node in graph.nodes():
        if node.op_type != "Reshape" or node.input[1] in constants:
            continue
        data, out = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not data or not out or out[0] != data[0] or not isinstance(out[0], str) or not known(out[1:]):
            continue
        name = f"{node.name}_static_shape"
        graph.add_initializer(numpy_helper.from_array(np.array([0, *out[1:]], dtype=np.int64), name))
        node.input[1] = name
        replaced += 1
    return drop_dead_nodes(graph.model), replaced


def drop_dead_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove nodes none of whose outputs are used, until none is left, and initializers nothing reads.

    ONNXModel's own clean-up removes unused Constant nodes only; tf2onnx's Flatten arithmetic, once its shape
    is a constant, is a chain of ordinary nodes, which empties from its end one pass at a time."""
    graph = ONNXModel(model)
    while True:
        consumers = graph.input_name_to_nodes()
        dead = [node for node in graph.nodes()
                if not graph.get_children(node, consumers) and not any(map(graph.is_graph_output, node.output))]
        if not dead:
            break
        graph.remove_nodes(dead)
    graph.remove_unused_constant()
    return model


def value_shapes(model: onnx.ModelProto) -> Shapes:
    """Every value's shape, with symbolic dimensions as their names (data propagation follows shape arithmetic)."""
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    return {value.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim]
            for value in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}


def known(dims: list[int | str | None] | None) -> bool:
    """Whether every one of ``dims`` is a number (not symbolic, not unknown)."""
    return dims is not None and all(isinstance(d, int) for d in dims)
