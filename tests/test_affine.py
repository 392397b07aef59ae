"""The int8 graph rewrite of BatchNormalization-after-ReLU (exporter/affine.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporter.affine import channel_affine_to_depthwise, float_affine_nodes
from exporter.cli import main
from tiny import LENIENT, run_onnx
from trainer.artifacts import Artifacts


def _affine_graph(scale_shape: tuple[int, ...], input_shape: list) -> onnx.ModelProto:
    """x -> Relu -> Mul(scale) -> Add(offset) -> y, the shape tf2onnx gives the report's BN after ReLU."""
    rng = np.random.default_rng(0)
    scale = numpy_helper.from_array(rng.uniform(0.01, 3, scale_shape).astype(np.float32), "scale")
    offset = numpy_helper.from_array(rng.normal(size=scale_shape).astype(np.float32), "offset")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Mul", ["r", "scale"], ["m"], name="bn_mul"),
         helper.make_node("Add", ["m", "offset"], ["y"], name="bn_add")],
        "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, input_shape)], [scale, offset])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_channel_affine_becomes_an_equal_depthwise_conv(tmp_path: Path):
    model = _affine_graph((1, 3, 1, 1), ["batch", 3, 5, 5])
    rewritten, count = channel_affine_to_depthwise(model)
    onnx.checker.check_model(rewritten, full_check=True)
    assert count == 1
    assert [n.op_type for n in rewritten.graph.node] == ["Relu", "Conv"]
    assert [a.i for a in rewritten.graph.node[1].attribute if a.name == "group"] == [3]
    assert {i.name for i in rewritten.graph.initializer} == {"affine_depthwise_0_weight", "affine_depthwise_0_bias"}
    x = np.random.default_rng(1).normal(size=(4, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(rewritten, x, tmp_path, "dw"), run_onnx(model, x, tmp_path, "ref"), rtol=1e-6, atol=1e-6)
    assert [n.op_type for n in model.graph.node] == ["Relu", "Mul", "Add"]  # the source is left alone


def test_dense_affine_stays_in_float(tmp_path: Path):
    model = _affine_graph((8,), ["batch", 8])
    rewritten, count = channel_affine_to_depthwise(model)
    assert count == 0 and [n.op_type for n in rewritten.graph.node] == ["Relu", "Mul", "Add"]
    assert float_affine_nodes(model) == ["bn_mul", "bn_add"]
    assert float_affine_nodes(_affine_graph((1, 3, 1, 1), ["batch", 3, 5, 5])) == []


@pytest.mark.slow
@pytest.mark.parametrize("rewrite", [True, False])
def test_int8_model2_quantizes_its_batchnorm_as_depthwise_conv(tiny_model2: Artifacts, tmp_path: Path, rewrite: bool):
    shutil.copytree(tiny_model2.root, tmp_path / "art")
    art = Artifacts(tmp_path / "art")
    flags = [] if rewrite else ["--no-affine-rewrite"]
    assert main(["model2", "--artifacts", str(art.root), "--variants", "int8", *LENIENT, *flags]) == 0
    proto = onnx.load(art.onnx_dir / "model2.int8.onnx")
    ops = [n.op_type for n in proto.graph.node]
    depthwise = [n for n in proto.graph.node if n.op_type == "Conv" and n.name.startswith("affine_depthwise_")]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["int8_affine_rewrite"] == str(rewrite).lower()
    if rewrite:
        # Model 2's four BatchNormalization layers: the two before a MaxPool and a Conv become depthwise Convs
        # (after the MaxPool); the two before a Dense layer are folded (exporter/fold.py), so no Mul is left.
        assert len(depthwise) == 2 and ops.count("Mul") == 0
    else:
        assert not depthwise and ops.count("Mul") == 4
