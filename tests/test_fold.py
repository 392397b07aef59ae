"""Exact folding of BatchNormalization-after-ReLU into the next layer (exporter/fold.py) and the static
Flatten (exporter/simplify.py): each rewrite computes what the graph computed, checked with onnxruntime."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporter.cli import main
from exporter.fold import affine_after_maxpool, fold_affine_forward
from exporter.simplify import static_reshapes
from tiny import LENIENT, run_onnx
from trainer.artifacts import Artifacts

RNG = np.random.default_rng(0)


def _const(name: str, shape: tuple[int, ...], low: float | None = None, high: float | None = None) -> onnx.TensorProto:
    value = RNG.uniform(low, high, shape) if low is not None else RNG.normal(size=shape)
    return numpy_helper.from_array(value.astype(np.float32), name)


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], x_shape: list, y_rank: int) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * y_rank)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _bn(prefix: str, source: str, channels_shape: tuple[int, ...], scale_low: float = 0.1) -> tuple[list, list]:
    """Relu -> Mul -> Add as tf2onnx leaves the report's BatchNormalization after ReLU."""
    nodes = [helper.make_node("Relu", [source], [f"{prefix}_r"], name=f"{prefix}_relu"),
             helper.make_node("Mul", [f"{prefix}_r", f"{prefix}_s"], [f"{prefix}_m"], name=f"{prefix}_mul"),
             helper.make_node("Add", [f"{prefix}_m", f"{prefix}_t"], [f"{prefix}_y"], name=f"{prefix}_add")]
    return nodes, [_const(f"{prefix}_s", channels_shape, scale_low, 3.0), _const(f"{prefix}_t", channels_shape)]


def _conv(name: str, source: str, out: str, cin: int, cout: int, pads: int = 1) -> tuple[list, list]:
    node = helper.make_node("Conv", [source, f"{name}_w", f"{name}_b"], [out], name=name, kernel_shape=[3, 3],
                            pads=[pads] * 4)
    return [node], [_const(f"{name}_w", (cout, cin, 3, 3)), _const(f"{name}_b", (cout,))]


def _cnn(scale_low: float = 0.1) -> onnx.ModelProto:
    """Conv -> ReLU -> BN -> Conv(same) -> ReLU -> BN -> MaxPool -> Flatten (tf2onnx's Shape arithmetic) ->
    Dense -> ReLU -> BN -> Dense: every kind of fold Model 4 has."""
    parts = [_conv("c1", "x", "z1", 2, 4), _bn("bn1", "z1", (1, 4, 1, 1), scale_low),
             _conv("c2", "bn1_y", "z2", 4, 6), _bn("bn2", "z2", (1, 6, 1, 1), scale_low)]
    nodes = [n for ns, _ in parts for n in ns]
    inits = [i for _, is_ in parts for i in is_]
    nodes += [helper.make_node("MaxPool", ["bn2_y"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Transpose", ["p"], ["pt"], name="nhwc", perm=[0, 2, 3, 1]),
              helper.make_node("Shape", ["pt"], ["shape"], name="shape"),
              helper.make_node("Slice", ["shape", "zero", "one"], ["batch"], name="batch"),
              helper.make_node("Concat", ["batch", "features"], ["flat_shape"], name="flat_shape", axis=0),
              helper.make_node("Reshape", ["pt", "flat_shape"], ["flat"], name="flatten"),
              helper.make_node("MatMul", ["flat", "d1_w"], ["d1_m"], name="d1"),
              helper.make_node("Add", ["d1_m", "d1_b"], ["z3"], name="d1_bias")]
    inits += [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("zero", [0]), ("one", [1]), ("features", [54]))]
    inits += [_const("d1_w", (54, 8)), _const("d1_b", (8,))]
    bn3, bn3_inits = _bn("bn3", "z3", (8,), scale_low)
    nodes += bn3 + [helper.make_node("MatMul", ["bn3_y", "d2_w"], ["d2_m"], name="d2"),
                    helper.make_node("Add", ["d2_m", "d2_b"], ["y"], name="d2_bias")]
    inits += bn3_inits + [_const("d2_w", (8, 3)), _const("d2_b", (3,))]
    return _model(nodes, inits, ["batch", 2, 6, 6], 2)


X = RNG.normal(size=(5, 2, 6, 6)).astype(np.float32)


@pytest.mark.parametrize("into_conv", [True, False])
def test_fold_is_exact_and_removes_the_affines(tmp_path: Path, into_conv: bool):
    model = _cnn()
    folded, report = fold_affine_forward(model, into_conv=into_conv)
    onnx.checker.check_model(folded, full_check=True)
    ops = [n.op_type for n in folded.graph.node]
    # bn1 -> c2 needs a border correction (c2 pads); bn2 goes through MaxPool and Flatten into d1, bn3 into d2.
    assert (report.into_conv, report.corrections, report.into_dense) == ((1, 1, 2) if into_conv else (0, 0, 2))
    assert ops.count("Mul") == (0 if into_conv else 1)
    assert ops.count("Add") == 2 + (1 if into_conv else 1)  # two dense biases, and bn1's correction map or its Add
    np.testing.assert_allclose(run_onnx(folded, X, tmp_path, "folded"), run_onnx(model, X, tmp_path, "ref"), rtol=1e-4, atol=1e-4)
    assert [n.op_type for n in model.graph.node].count("Mul") == 3  # the source is left alone


def test_conv_without_padding_needs_no_correction(tmp_path: Path):
    parts = [_conv("c1", "x", "z1", 2, 4), _bn("bn1", "z1", (1, 4, 1, 1)), _conv("c2", "bn1_y", "y", 4, 3, pads=0)]
    model = _model([n for ns, _ in parts for n in ns], [i for _, is_ in parts for i in is_], ["batch", 2, 6, 6], 4)
    folded, report = fold_affine_forward(model)
    assert (report.into_conv, report.corrections) == (1, 0)
    assert [n.op_type for n in folded.graph.node] == ["Conv", "Relu", "Conv"]
    np.testing.assert_allclose(run_onnx(folded, X, tmp_path, "folded"), run_onnx(model, X, tmp_path, "ref"), rtol=1e-4, atol=1e-4)


def test_a_negative_scale_does_not_pass_a_maxpool(tmp_path: Path):
    """max(s * x) is s * min(x) for s < 0: that fold would be wrong, so it is not made."""
    model = _cnn()
    for init in model.graph.initializer:
        if init.name == "bn2_s":
            value = numpy_helper.to_array(init).copy()
            value[0, 0] = -1.0
            init.CopyFrom(numpy_helper.from_array(value, "bn2_s"))
    folded, report = fold_affine_forward(model, into_conv=False)
    assert "bn2_mul" in {n.name for n in folded.graph.node}
    np.testing.assert_allclose(run_onnx(folded, X, tmp_path, "folded"), run_onnx(model, X, tmp_path, "ref"), rtol=1e-4, atol=1e-4)


def test_for_int8_scales_go_back_not_forward(tmp_path: Path):
    """Without scales_forward, a dense affine folds only by sending its scale back into the layer before the
    ReLU (per output channel, as int8 weights are scaled): the next Dense weight is left as it was."""
    model = _cnn()
    folded, report = fold_affine_forward(model, into_conv=False, scales_forward=False)
    assert report.into_dense == 2 and report.scaled_back == 2
    weights = {i.name: numpy_helper.to_array(i) for i in folded.graph.initializer}
    original = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    np.testing.assert_array_equal(weights["d2_w"], original["d2_w"])
    np.testing.assert_allclose(weights["d1_w"], original["d1_w"] * original["bn3_s"][None, :], rtol=1e-6)
    np.testing.assert_allclose(run_onnx(folded, X, tmp_path, "folded"), run_onnx(model, X, tmp_path, "ref"), rtol=1e-4, atol=1e-4)


def test_static_reshapes_replace_the_shape_arithmetic(tmp_path: Path):
    model = _cnn()
    simplified, count = static_reshapes(model)
    ops = [n.op_type for n in simplified.graph.node]
    assert count == 1 and "Shape" not in ops and "Slice" not in ops and "Concat" not in ops
    reshape = next(n for n in simplified.graph.node if n.op_type == "Reshape")
    shape = next(numpy_helper.to_array(i) for i in simplified.graph.initializer if i.name == reshape.input[1])
    assert shape.tolist() == [0, 54]  # 0: the batch dimension as it comes
    for batch in (X, X[:1], X[:0]):
        np.testing.assert_allclose(run_onnx(simplified, batch, tmp_path, "s"), run_onnx(model, batch, tmp_path, "ref"), rtol=1e-6, atol=1e-6)


def test_affine_moves_after_a_maxpool(tmp_path: Path):
    model = _cnn()
    moved, count = affine_after_maxpool(model)
    onnx.checker.check_model(moved, full_check=True)
    ops = [n.op_type for n in moved.graph.node]
    assert count == 1 and ops.index("MaxPool") < ops.index("Mul", ops.index("Conv", 1))
    np.testing.assert_allclose(run_onnx(moved, X, tmp_path, "moved"), run_onnx(model, X, tmp_path, "ref"), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("graph, muls", [("depthwise", 0), ("fold", 0), ("converted", 4)])
def test_export_fp32_graphs_pass_the_parity_gate(tiny_model2: Artifacts, tmp_path: Path, graph: str, muls: int):
    """Every --fp32-graph is the same function: the export's parity gate against Keras (1e-4) passes, and
    the file says which layout it has."""
    shutil.copytree(tiny_model2.root, tmp_path / "art")
    art = Artifacts(tmp_path / "art")
    assert main(["model2", "--artifacts", str(art.root), "--variants", "fp32,fp16", "--fp32-graph", graph, *LENIENT]) == 0
    proto = onnx.load(art.onnx_dir / "model2.onnx")
    assert [n.op_type for n in proto.graph.node].count("Mul") == muls
    assert {p.key: p.value for p in proto.metadata_props}["graph"].startswith("tf2onnx" if graph == "converted" else "BatchNorm")


def test_a_channel_affine_into_a_matmul_over_width_is_not_folded(tmp_path: Path):
    """MatMul contracts the last axis (width here), not channels: a per-channel affine cannot fold into it."""
    parts = [_conv("c1", "x", "z1", 2, 4), _bn("bn1", "z1", (1, 4, 1, 1))]
    nodes = [n for ns, _ in parts for n in ns] + [helper.make_node("MatMul", ["bn1_y", "w"], ["m"], name="mm"),
                                                  helper.make_node("Add", ["m", "b"], ["y"], name="mm_bias")]
    model = _model(nodes, [i for _, is_ in parts for i in is_] + [_const("w", (6, 3)), _const("b", (3,))], ["batch", 2, 6, 6], 4)
    folded, report = fold_affine_forward(model)
    assert report.into_dense == 0 and "bn1_mul" in {n.name for n in folded.graph.node}
    np.testing.assert_allclose(run_onnx(folded, X, tmp_path, "folded"), run_onnx(model, X, tmp_path, "ref"), rtol=1e-5, atol=1e-5)
