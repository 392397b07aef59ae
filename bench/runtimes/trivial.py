"""A trivial model with the study's interface: a single query on it is the runtime's own call overhead.

``image`` (N, 28, 28, 1) -> flatten -> 784 x 5 dense -> softmax -> ``probabilities`` (N, 5): a few nanoseconds of
arithmetic, so a query's time is the call path (binding, copies, dispatch, threads waking). The same SUT class runs
it with the real row's settings, so a single-stream row splits into overhead and compute.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from exporter.contract import INPUT_NAME, OUTPUT_NAME

RECIPE = "r1"  # part of each cached file's name: bump it when the trivial model changes
_WEIGHT = np.random.default_rng(0).standard_normal((784, 5)).astype(np.float32) * 0.01


@cache
def trivial_onnx() -> Path:
    """The trivial model as ONNX, written once per process to a temporary folder."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", [INPUT_NAME, "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=-1)], "trivial",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 28, 28, 1])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 5])],
        initializer=[numpy_helper.from_array(np.int64([0, 784]), "shape"), numpy_helper.from_array(_WEIGHT, "w")])
    path = Path(tempfile.mkdtemp(prefix="fmnist-trivial-")) / f"trivial.{RECIPE}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


@cache
def trivial_keras() -> Path:
    """The trivial model as a ``.keras`` file (needs TensorFlow), written once per process."""
    from trainer import quiet  # noqa: PLC0415

    quiet.import_tensorflow()
    import keras  # noqa: PLC0415

    inputs = keras.Input((28, 28, 1))
    dense = keras.layers.Dense(5, activation="softmax", use_bias=False)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([_WEIGHT])
    path = Path(tempfile.mkdtemp(prefix="fmnist-trivial-")) / f"trivial.{RECIPE}.keras"
    model.save(path)
    return path
