"""Graph clean-ups that change no value: tf2onnx's Flatten as one static Reshape, and dead nodes removed.

tf2onnx converts Keras' Flatten into ``Shape -> Gather -> Cast -> Slice -> Concat -> Cast -> Reshape``, which
computes ``[batch, features]`` at run time. Six small operators cost nothing at batch 128 but about 5% of
a single-image query on the CPU provider; a constant ``[0, features]`` (0: keep the input's batch
dimension, as ONNX Reshape defines it) says the same thing.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference


def static_reshapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` where every Reshape with a computed target shape that keeps the batch dimension and
    fixes all others gets that shape as a constant; the shape computation is dropped. Returns how many."""
    simplified = onnx.ModelProto()
    simplified.CopyFrom(model)
    constants = {init.name for init in simplified.graph.initializer}
    shapes = value_shapes(simplified)
    replaced = 0
    for node in simplified.graph.node:
        if node.op_type != "Reshape" or node.input[1] in constants:
            continue
        data, out = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not data or not out or out[0] != data[0] or not isinstance(out[0], str) or not known(out[1:]):
            continue
        name = f"{node.name}_static_shape"
        simplified.graph.initializer.append(numpy_helper.from_array(np.array([0, *out[1:]], dtype=np.int64), name))
        node.input[1] = name
        replaced += 1
    return drop_dead_nodes(simplified), replaced


def drop_dead_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove nodes none of whose outputs are used, until none is left, and initializers nothing reads."""
    while True:
        used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
        live = [node for node in model.graph.node if any(o in used for o in node.output)]
        if len(live) == len(model.graph.node):
            break
        del model.graph.node[:]
        model.graph.node.extend(live)
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def value_shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    """Every value's shape, with symbolic dimensions as their names (data propagation follows shape arithmetic)."""
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    return {value.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value.type.tensor_type.shape.dim]
            for value in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}


def known(dims: list[int | str | None] | None) -> bool:
    """Whether every one of ``dims`` is a number (not symbolic, not unknown)."""
    return dims is not None and all(isinstance(d, int) for d in dims)
