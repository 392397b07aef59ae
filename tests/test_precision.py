"""``--precision fp32|bf16``: mixed-precision training, its records, its checkpoints, and its fp32 export."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import onnx
import pandas as pd
import pytest

from exporter.cli import main as export_main
from exporter.convert import _check_float32, float32_model
from tiny import crash_after
from tiny import write_idx_dir
from trainer import data, experiments
from trainer.artifacts import Artifacts
from trainer.cli import main as train_main
from trainer.config import TrainConfig, resolve_config
from trainer.fit import base_features, dtype_policy
from trainer.models import load_trained
from trainer.reports import RunMetadata
from trainer.training import train_one

TINY = ["--epochs", "1", "--batch-size", "32", "--quiet"]
LENIENT = ["--quiet", "--parity-images", "40", "--calibration-images", "64", "--int8-max-drop", "100"]
LOW_PRECISION = {onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT16}


@pytest.fixture(scope="module")
def idx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_idx_dir(tmp_path_factory.mktemp("idx") / "idx", n=400)


@pytest.fixture(scope="module")
def bf16(idx: Path, tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """model1 trained by the command line in bf16: one epoch on 400 tiny images (40 test images)."""
    art = Artifacts(tmp_path_factory.mktemp("bf16") / "art")
    assert train_main(["model1", "--data", str(idx), "--artifacts", str(art.root), "--precision", "bf16", *TINY]) == 0
    assert keras.config.dtype_policy().name == "float32"  # restored after building
    return art


# --------------------------------------------------------------------------- the option

def test_the_default_is_fp32_and_other_precisions_are_refused_in_one_line(capsys: pytest.CaptureFixture):
    assert resolve_config("model4").precision == "fp32"
    assert resolve_config("model4", precision="bf16").dtype_policy == "mixed_bfloat16"
    with pytest.raises(ValueError, match="--precision 'fp16': choose from fp32, bf16"):
        TrainConfig("model4", 1, 32, "adam", 1e-3, 0, precision="fp16")
    for argv in (["model1", "--precision", "fp16"], ["sweep", "model1", "--grid", "epochs=1", "--precision", "fp16"]):
        assert train_main(argv) == 2
        err = capsys.readouterr().err
        (line,) = [line for line in err.splitlines() if "error:" in line]  # argparse's usage, then one error line
        assert "--precision: invalid choice: 'fp16'" in line and "'bf16'" in line and "Traceback" not in err


def test_an_fp32_configuration_keeps_its_old_identity_and_bf16_gets_another():
    fp32 = resolve_config("model4", epochs=5)
    old = {k: v for k, v in asdict(fp32).items() if k != "precision"}  # TrainConfig before --precision
    assert fp32.identity() == old
    expected = hashlib.sha256(json.dumps([old, "abc"], sort_keys=True).encode()).hexdigest()[:16]
    assert experiments.row_key(fp32, "abc") == expected  # existing experiments.csv rows keep their keys
    bf16 = resolve_config("model4", epochs=5, precision="bf16")
    assert bf16.identity()["precision"] == "bf16" and experiments.row_key(bf16, "abc") != expected


def test_an_experiment_table_from_before_precision_reads_as_fp32(tmp_path: Path):
    path = tmp_path / "experiments.csv"
    old_columns = [c for c in experiments.EXPERIMENT_COLUMNS if c != "precision"]
    row = {c: "x" for c in old_columns} | {"key": "0123456789abcdef", "sweep": "epochs=1", "limit": ""}
    pd.DataFrame([row], columns=old_columns).to_csv(path, index=False)
    table = experiments.read_experiments(path)
    assert list(table.columns) == experiments.EXPERIMENT_COLUMNS and list(table["precision"]) == ["fp32"]
    new = dict(row, key="fedcba9876543210", precision="bf16")
    experiments.append_rows(path, [new])
    again = pd.read_csv(path, dtype=str)
    assert list(again.columns) == experiments.EXPERIMENT_COLUMNS
    assert dict(zip(again["key"], again["precision"])) == {"0123456789abcdef": "fp32", "fedcba9876543210": "bf16"}


# --------------------------------------------------------------------------- training

@pytest.mark.slow
def test_a_bf16_model_computes_in_bf16_on_float32_weights_with_a_float32_output(bf16: Artifacts, idx: Path):
    meta = RunMetadata.read(bf16.metadata_file("model1"))
    assert meta.config["precision"] == "bf16"
    assert meta.extra["precision"] == "bf16" and meta.extra["dtype_policy"] == "mixed_bfloat16"
    table = pd.read_csv(bf16.reports_dir / "table1.csv")
    assert list(table["Precision"]) == ["bf16"]
    assert "| bf16" in (bf16.reports_dir / "table1.md").read_text()

    model = load_trained(bf16.model_file("model1"))  # the saved file keeps the policy
    *hidden, output = model.layers
    assert {layer.dtype_policy.name for layer in hidden} == {"mixed_bfloat16"}
    assert {layer.compute_dtype for layer in hidden} == {"bfloat16"}
    assert output.dtype_policy.name == "float32" and output.compute_dtype == "float32"
    assert {w.dtype for w in model.weights} == {"float32"}
    x = data.split_dataset(data.load_dataset(idx)).test.x[..., np.newaxis]
    probabilities = model.predict(x, verbose=0)
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(-1), 1, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("first", "second"), [("bf16", "fp32"), ("fp32", "bf16")])
def test_a_checkpoint_is_never_resumed_under_another_precision_and_each_trains_after_the_other_in_one_process(
        first: str, second: str, bf16: Artifacts, idx: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    # One training serves both: the run that discards the checkpoint is the command line's, and its model, metadata
    # and Table 1 show the precision it trained in, right after a run in the other (``bf16``: a whole bf16 run too).
    dataset = data.load_dataset(idx)
    splits = data.split_dataset(dataset)
    art = Artifacts(tmp_path / "art")
    config = resolve_config("model1", epochs=2, batch_size=64, precision=first)  # as the command line resolves it
    with pytest.raises(KeyboardInterrupt):
        train_one(config, dataset, splits, art, quiet=True, extra_callbacks=[crash_after(0)])
    assert json.loads((art.backup_dir("model1") / "epoch-0001" / "state.json").read_text())["epoch"] == 1
    assert keras.config.dtype_policy().name == "float32"  # restored even though the run died

    capsys.readouterr()
    assert train_main(["model1", "--data", str(idx), "--artifacts", str(art.root), "--epochs", "2", "--batch-size", "64",
                       "--precision", second, "--quiet"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "discarding checkpoint" in line]
    assert len(lines) == 1 and "another configuration" in lines[0] and "(precision differs)" in lines[0]
    meta = RunMetadata.read(art.metadata_file("model1"))
    assert meta.training["resumed_from_epoch"] == 0 and meta.config["precision"] == second
    assert list(pd.read_csv(art.history_file("model1"))["epoch"]) == [0, 1]

    policy = {"fp32": "float32", "bf16": "mixed_bfloat16"}[second]
    model = load_trained(art.model_file("model1"))
    *hidden, output = model.layers
    assert {layer.dtype_policy.name for layer in hidden} == {policy} and output.dtype_policy.name == "float32"
    assert meta.extra["dtype_policy"] == policy
    assert list(pd.read_csv(art.reports_dir / "table1.csv")["Precision"]) == [second]
    # Metadata written before --precision (no such field) is an fp32 model in Table 1.
    payload = json.loads(art.metadata_file("model1").read_text())
    del payload["config"]["precision"]
    art.metadata_file("model1").write_text(json.dumps(payload))
    from trainer.reports import table1

    assert list(table1(art, ["model1"])["Precision"]) == ["fp32"]


@pytest.mark.slow
def test_a_sweep_records_its_precision_in_each_row(idx: Path, tmp_path: Path):
    art = tmp_path / "art"
    assert train_main(["sweep", "model1", "--grid", "epochs=1", "--data", str(idx), "--artifacts", str(art),
                       "--precision", "bf16", "--batch-size", "64", "--quiet"]) == 0
    rows = experiments.read_experiments(Artifacts(art).experiments_file)
    assert list(rows["precision"]) == ["bf16"]
    config = resolve_config("model1", epochs=1, batch_size=64, precision="bf16")
    assert rows.loc[0, "key"] == experiments.row_key(config, data.load_dataset(idx).sha256)
    meta = RunMetadata.read(Artifacts(Path(rows.loc[0, "run_dir"])).metadata_file("model1"))
    assert meta.config["precision"] == "bf16"


def test_frozen_base_features_are_cached_per_precision_as_float32(idx: Path, tmp_path: Path):
    dataset = data.load_dataset(idx).limit(64)
    features = {}
    for precision in ("fp32", "bf16"):
        keras.utils.set_random_seed(0)
        with dtype_policy(precision):
            base = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])
        features[precision], _, cached = base_features(base, dataset, tmp_path, "tiny", precision)
        assert not cached and features[precision].dtype == np.float32
    assert len(list(tmp_path.glob("tiny-*.npy"))) == 2  # same weights, other precision: another cache entry
    assert not np.array_equal(features["fp32"], features["bf16"])
    np.testing.assert_allclose(features["fp32"], features["bf16"], atol=0.05)


# --------------------------------------------------------------------------- export

def test_a_bf16_model_exports_to_the_fp32_interface_and_passes_the_parity_gate(bf16: Artifacts, idx: Path):
    assert export_main(["model1", "--artifacts", str(bf16.root), *LENIENT]) == 0
    manifest = json.loads((bf16.onnx_dir / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["model1.fp16.onnx", "model1.int8.onnx", "model1.onnx"]

    fp32 = manifest["files"]["model1.onnx"]["validation"]
    assert fp32["max_abs_diff"] <= 1e-4 and fp32["argmax_agreement"] == 1.0  # the gate: against the float32 twin
    trained = fp32["trained_precision"]  # and against the bf16 Keras model itself: recorded
    assert trained["precision"] == "bf16" and 0 < trained["max_abs_diff"] < 0.05

    proto = onnx.load(bf16.onnx_dir / "model1.onnx")
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["trained_precision"] == "bf16"
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT == out.type.tensor_type.elem_type
    floats = {i.data_type for i in proto.graph.initializer} - {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    assert floats == {onnx.TensorProto.FLOAT}
    inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=True).graph
    value_types = {v.type.tensor_type.elem_type for v in (*inferred.input, *inferred.output, *inferred.value_info)}
    assert value_types and not value_types & LOW_PRECISION
    for node in inferred.node:
        for attribute in node.attribute:
            assert not (attribute.name == "to" and attribute.i in LOW_PRECISION), node.name
            assert not (attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type in LOW_PRECISION), node.name

    # The file computes what the trained weights compute in float32.
    import onnxruntime as ort

    x = data.split_dataset(data.load_dataset(idx)).test.x[..., np.newaxis]
    session = ort.InferenceSession(str(bf16.onnx_dir / "model1.onnx"), providers=["CPUExecutionProvider"])
    onnx_p = session.run(["probabilities"], {"image": x})[0]
    twin = float32_model(load_trained(bf16.model_file("model1")))
    np.testing.assert_allclose(onnx_p, twin.predict(x, verbose=0), atol=1e-5)


def test_the_float32_twin_has_the_trained_weights_and_only_float32_layers(bf16: Artifacts):
    model = load_trained(bf16.model_file("model1"))
    twin = float32_model(model)
    assert twin is not model and {layer.dtype_policy.name for layer in twin.layers} == {"float32"}
    for a, b in zip(model.weights, twin.weights, strict=True):
        assert a.path == b.path and np.array_equal(np.asarray(a), np.asarray(b))
    assert float32_model(twin) is twin  # a float32 model is exported as it is


def test_an_fp32_graph_with_a_bf16_tensor_is_refused():
    weight = onnx.helper.make_tensor("w", onnx.TensorProto.BFLOAT16, [1], [1.0])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Cast", ["x"], ["y"], to=onnx.TensorProto.BFLOAT16)], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.BFLOAT16, [1])], [weight])
    with pytest.raises(ValueError, match="low-precision tensors .*initializer w"):
        _check_float32(onnx.helper.make_model(graph))
