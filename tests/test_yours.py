"""A model of your own on the same bench (#25): a Keras builder in a model file, and an ONNX file from anywhere.

One artifacts folder gets both, end to end, on tiny data: a model file's builder trained, swept, exported
with every variant and benched; an NCHW-input, logits-output ONNX graph made here with onnx.helper (what
``torch.onnx.export`` writes) imported, exported and benched; REPORT.md showing both beside each other,
marked (yours). Then every kind of bad file: one line, exit status 2, nothing published or registered.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.cli import main as bench_main
from bench.results.store import load
from bench.runtimes import Case, ProviderUnavailable, make_sut
from exporter import onnx_import
from exporter.contract import variant_filename
from exporter.cli import main as export_main
from tiny import write_idx_dir
from trainer import catalog, data, userfile
from trainer.artifacts import Artifacts
from trainer.cli import main as train_main

LENIENT = ["--quiet", "--parity-images", "60", "--calibration-images", "64", "--int8-max-drop", "10"]
FAST_BENCH = ["--rounds", "1", "--min-queries", "5", "--min-duration", "0", "--memory", "off", "--quiet",
              "--operations", "predict,single-stream", "--batch-sizes", "128"]

MODEL_FILE = '''
import keras
from keras import layers
from trainer.models import register


@register("tinynet", display_name="Tiny net")
def build(spec, base_weights="none"):
    return keras.Sequential([
        keras.Input(spec.input_shape, name="image"),
        layers.Conv2D(4, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(spec.num_classes, activation="softmax"),
    ], name=spec.name)
'''


# --------------------------------------------------------------------------- an ONNX graph as PyTorch writes one

def _bar_classifier_weights() -> np.ndarray:
    """Gemm weights (5, 2*28*28) that read tests/conftest.py's images: class c is a bright bar at rows 2+4c..2+4c+3."""
    weights = np.random.default_rng(0).normal(0, 0.002, size=(5, 2, 28, 28)).astype(np.float32)
    for c in range(5):
        weights[c, 0, 2 + 4 * c:6 + 4 * c, 4:24] += 4.0 / 80
    return weights.reshape(5, -1)


def nchw_logits_model(input_dims=("N", 1, 28, 28), classes: int = 5, last_op: str | None = None,
                      domain: str = "", fixed_reshape: bool = False) -> onnx.ModelProto:
    """Conv (NCHW) -> Relu -> Flatten -> Gemm: logits of 5 classes, no Softmax, batch dimension 'N'."""
    conv = np.zeros((2, 1, 3, 3), np.float32)
    conv[0, 0, 1, 1] = 1.0  # channel 0: the image itself
    conv[1] = np.random.default_rng(1).normal(0, 0.1, size=(1, 3, 3))
    gemm = _bar_classifier_weights()
    if classes != 5:
        gemm = np.resize(gemm, (classes, gemm.shape[1]))
    nodes = [helper.make_node("Conv", ["input.1", "conv.weight"], ["conv_out"], pads=[1, 1, 1, 1], name="/conv/Conv"),
             helper.make_node("Relu", ["conv_out"], ["relu_out"], name="/relu/Relu", domain=domain)]
    if fixed_reshape:
        nodes.append(helper.make_node("Reshape", ["relu_out", "shape"], ["flat"], name="/Reshape"))
    else:
        nodes.append(helper.make_node("Flatten", ["relu_out"], ["flat"], name="/Flatten"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1, name="/fc/Gemm"))
    output = "logits"
    if last_op:
        nodes.append(helper.make_node(last_op, ["logits"], ["scores"], axis=-1, name=f"/{last_op}"))
        output = "scores"
    initializers = [numpy_helper.from_array(conv, "conv.weight"), numpy_helper.from_array(gemm, "fc.weight"),
                    numpy_helper.from_array(np.zeros(classes, np.float32), "fc.bias"),
                    numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    graph = helper.make_graph(nodes, "main_graph",
                              [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, list(input_dims))],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [input_dims[0], classes])],
                              initializer=initializers)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="pytorch", producer_version="2.5.0")
    model.ir_version = 8
    return model


def flat_model(input_dims: tuple) -> onnx.ModelProto:
    """Flatten -> Gemm over whatever the input holds: a valid graph with a wrong input shape."""
    features = int(np.prod([d for d in input_dims[1:]]))
    weight = numpy_helper.from_array(np.zeros((5, features), np.float32), "fc.weight")
    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["flat"]),
                               helper.make_node("Gemm", ["flat", "fc.weight"], ["logits"], transB=1)], "flat",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_dims))],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [input_dims[0], 5])],
                              initializer=[weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def original_accuracy(path: Path, idx: Path) -> float:
    """The original file's test accuracy, computed here as a user would: its NCHW input, on the split bench uses."""
    test = data.split_dataset(data.load_dataset(idx)).test
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input.1": test.x[:, np.newaxis, :, :].astype(np.float32)})[0]
    return float(np.mean(logits.argmax(-1) == test.y))


# --------------------------------------------------------------------------- both kinds, end to end

@pytest.fixture(scope="module", autouse=True)
def _forget_user_models():
    """The registry is the process's: what this module's model files registered leaves with it (other modules
    in the same process see the study's six)."""
    yield
    for model_file in userfile.loaded():
        userfile.forget(model_file)


@pytest.fixture(scope="module")
def idx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_idx_dir(tmp_path_factory.mktemp("yours") / "idx", n=600)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model-file") / "tinynet.py"
    path.write_text(MODEL_FILE)
    return path


@pytest.fixture(scope="module")
def yours(tmp_path_factory: pytest.TempPathFactory, idx: Path, model_file: Path) -> dict:
    """One artifacts folder: tinynet trained, swept, exported; torchy.onnx imported; both benched; REPORT.md."""
    root = tmp_path_factory.mktemp("art")
    art = root / "art"
    common = ["--data", str(idx), "--artifacts", str(art)]
    assert train_main(["tinynet", "--model-file", str(model_file), "--epochs", "1", "--batch-size", "64", "--quiet",
                       *common]) == 0
    assert train_main(["sweep", "tinynet", "--model-file", str(model_file), "--grid", "seed=1", "--epochs", "1",
                       "--batch-size", "64", "--quiet", *common]) == 0
    assert export_main(["tinynet", "--model-file", str(model_file), "--artifacts", str(art), *LENIENT]) == 0
    torchy = root / "torchy.onnx"
    onnx.save(nchw_logits_model(), torchy)
    assert export_main(["--onnx", str(torchy), "--name", "torchy", "--output", "logits", *common, *LENIENT]) == 0
    assert bench_main(["run", "--artifacts", str(art), "--providers", "cpu,keras", *FAST_BENCH]) == 0
    assert bench_main(["report", "--artifacts", str(art)]) == 0
    bench = load(max((art / "reports").glob("bench-*.json")))
    return {"art": art, "torchy": torchy, "records": bench.records,
            "manifest": json.loads((art / "onnx" / "manifest.json").read_text()),
            "report": (art / "reports" / "REPORT.md").read_text()}


def _record(records: list, model: str, variant: str, provider: str, operation: str = "predict"):
    return next(r for r in records if (r.model, r.variant, r.provider) == (model, variant, provider)
                and r.operation in (operation, "all"))


@pytest.mark.slow
def test_a_model_file_trains_exports_and_benches_like_the_six(yours: dict, model_file: Path):
    art, manifest = yours["art"], yours["manifest"]
    meta = json.loads((art / "models" / "tinynet.json").read_text())
    assert meta["display_name"] == "Tiny net (yours)"
    assert meta["extra"]["model_file"]["path"] == str(model_file.resolve())
    assert "Tiny net (yours)" in (art / "reports" / "table1.md").read_text()
    rows = (art / "reports" / "experiments.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[1] == "tinynet"
    assert {f for f in manifest["files"] if f.startswith("tinynet")} == {"tinynet.onnx", "tinynet.fp16.onnx", "tinynet.int8.onnx"}
    assert manifest["models"]["tinynet"]["origin"]["kind"] == "model-file"
    props = {p.key: p.value for p in onnx.load(art / "onnx" / "tinynet.onnx").metadata_props}
    assert props["model_file_sha256"] == meta["extra"]["model_file"]["sha256"] and "source_keras_sha256" in props
    for variant in ("fp32", "fp16", "int8"):
        assert not _record(yours["records"], "tinynet", variant, "cpu").skipped
    keras_row = _record(yours["records"], "tinynet", "fp32", "keras")
    assert not keras_row.skipped and keras_row.quality["accuracy"] == pytest.approx(meta["test"]["accuracy"], abs=1e-6)  # Keras keeps it in float32


@pytest.mark.slow
def test_an_nchw_logits_onnx_file_is_imported_with_its_own_accuracy(yours: dict, idx: Path):
    art, manifest = yours["art"], yours["manifest"]
    assert {f for f in manifest["files"] if f.startswith("torchy")} == {"torchy.onnx", "torchy.fp16.onnx", "torchy.int8.onnx"}
    record = manifest["models"]["torchy"]
    assert record["origin"]["kind"] == "onnx" and record["keras_file"] is None
    assert record["data"]["split"]["test"] == 60 and record["limit"] is None
    for file in ("torchy.onnx", "torchy.fp16.onnx", "torchy.int8.onnx"):
        proto = onnx.load(art / "onnx" / file)
        onnx.checker.check_model(proto, full_check=True)
        (inp,), (out,) = proto.graph.input, proto.graph.output
        assert (inp.name, out.name) == ("image", "probabilities")
        assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 28, 28, 1]
        props = {p.key: p.value for p in proto.metadata_props}
        assert props["source_onnx_sha256"] == record["origin"]["sha256"] and props["model"] == "torchy"
        assert "source_keras_sha256" not in props
    fp32 = onnx.load(art / "onnx" / "torchy.onnx")
    assert fp32.graph.node[0].op_type == "Transpose" and fp32.graph.node[-1].op_type == "Softmax"
    added = json.loads({p.key: p.value for p in fp32.metadata_props}["added"])
    assert any("Transpose" in step for step in added) and any("Softmax" in step for step in added)
    validation = manifest["files"]["torchy.onnx"]["validation"]
    assert validation["max_abs_diff"] <= 1e-4 and validation["reference"] == "source"

    accuracy = original_accuracy(yours["torchy"], idx)
    assert accuracy > 0.9  # the designed weights read the bars: a real classifier, not chance
    assert record["origin"]["test_accuracy"] == accuracy
    assert _record(yours["records"], "torchy", "fp32", "cpu").quality["accuracy"] == accuracy
    skipped = _record(yours["records"], "torchy", "fp32", "keras").skipped
    assert skipped == "torchy is an imported ONNX model: it has no Keras source (.keras file) for Keras to run"
    for provider, variant in (("tflite", "fp32"), ("litert", "fp32"), ("litert", "int8")):  # said before any conversion
        with pytest.raises(ProviderUnavailable, match="torchy is an imported ONNX model: it has no Keras source"):
            make_sut(Case("torchy", variant, provider, art / "onnx" / variant_filename("torchy", variant)), Artifacts(art))


@pytest.mark.slow
def test_report_shows_both_beside_the_study_marked_yours(yours: dict):
    report = yours["report"]
    assert "## Table 1: the six models and yours" in report and "Tiny net (yours)" in report
    assert "## Your models" in report
    yours_part = report.split("## Your models")[1].split("\n## ")[0]
    assert "tinynet (yours)" in yours_part and "torchy (yours)" in yours_part and "torchy.onnx" in yours_part
    latency = report.split("## Latency")[1]
    assert "| tinynet (yours)" in latency and "| torchy (yours)" in latency
    assert "**torchy (yours)** (rows within 0.5 points of fp32 accuracy 1.0000)" in latency
    assert "Not timed on keras (torchy (yours) fp32): torchy is an imported ONNX model" in latency


# --------------------------------------------------------------------------- bad ONNX files

def _external(model: onnx.ModelProto, *locations: str) -> onnx.ModelProto:
    tensor = next(t for t in model.graph.initializer if t.name == "fc.weight")
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for location in locations:
        tensor.external_data.add(key="location", value=location)
    return model


def _sparse_oversized(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(onnx_import.MAX_MODEL_BYTES + 1)  # sparse: no disk used, and never read


def _truncated(path: Path) -> None:
    content = nchw_logits_model().SerializeToString()
    path.write_bytes(content[: len(content) // 2])


BAD_FILES = {
    "input shape": (lambda: flat_model(("N", 1, 32, 32)), [], "input 'x' has shape (?, 1, 32, 32); expected NHWC"),
    "input rank": (lambda: flat_model(("N", 784)), [], "input 'x' has shape (?, 784) (rank 2); expected NHWC (N, 28, 28, 1) or NCHW"),
    "ten classes": (lambda: nchw_logits_model(classes=10), [], "has shape (?, 10) (10 classes); expected (N, 5)"),
    "unknown domain": (lambda: nchw_logits_model(domain="com.example.ops"), [], "is in operator domain 'com.example.ops'"),
    "external data above": (lambda: _external(nchw_logits_model(), "../weights.bin"), [], "outside the file's folder"),
    "external data absolute": (lambda: _external(nchw_logits_model(), "/etc/passwd"), [], "outside the file's folder"),
    # A file inside the folder named first, and the one onnx's loader reads (the last) outside it.
    "external data named twice": (lambda: _external(nchw_logits_model(), "net.onnx", "../weights.bin"), [],
                                  "keeps its data in '../weights.bin', outside the file's folder"),
    "oversized": (_sparse_oversized, [], "over the 2,147,483,648-byte ceiling"),
    "truncated": (_truncated, [], "not a readable ONNX file (truncated or damaged"),
    "no option, no softmax": (nchw_logits_model, [], "cannot tell whether output 'logits' (from a Gemm node) is probabilities or logits"),
    "option against the graph": (lambda: nchw_logits_model(last_op="Softmax"), ["--output", "logits"],
                                 "comes from a Softmax node: it is probabilities already"),
    "probabilities that are not": (nchw_logits_model, ["--output", "probabilities"], "are not probabilities"),
    "fixed batch": (lambda: nchw_logits_model(input_dims=(1, 1, 28, 28), fixed_reshape=True), ["--output", "logits"],
                    "does not run at batch 3"),
    "layout against the graph": (nchw_logits_model, ["--output", "logits", "--input-layout", "nhwc"],
                                 "--input-layout nhwc: input 'input.1'"),
    "clashing name": (nchw_logits_model, ["--output", "logits", "--name", "model1"], "--name 'model1' is one of the study's models"),
    "case-clashing name": (nchw_logits_model, ["--output", "logits", "--name", "VGG16"], "is one of the study's models"),
    "unsafe name": (nchw_logits_model, ["--output", "logits", "--name", "../evil"], "is not a safe name"),
    "dotted name": (nchw_logits_model, ["--output", "logits", "--name", "a.int8"], "is not a safe name"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_onnx_file_gets_one_line_and_nothing_is_published(case: str, tmp_path: Path, idx: Path, capsys):
    make, options, message = BAD_FILES[case]
    folder = tmp_path / "from-elsewhere"
    folder.mkdir()
    path = folder / "net.onnx"
    made = make(path) if make in (_sparse_oversized, _truncated) else make()
    if made is not None:
        path.write_bytes(made.SerializeToString())  # as it is: onnx.save would touch external data
    art = tmp_path / "art"
    name = [] if "--name" in options else ["--name", "mine"]
    assert export_main(["--onnx", str(path), *name, *options, "--data", str(idx), "--artifacts", str(art), *LENIENT]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmnist-export: error: ") and len(err.splitlines()) == 1 and message in err, err
    assert not (art / "onnx").exists() and not (art / "onnx.d").exists()


def test_a_graph_that_says_everything_needs_no_option(tmp_path: Path, idx: Path):
    """NCHW from the shape, probabilities from the final Softmax: nothing to say, nothing added but a Transpose."""
    path = tmp_path / "net.onnx"
    onnx.save(nchw_logits_model(last_op="Softmax"), path)
    art = tmp_path / "art"
    assert export_main(["--onnx", str(path), "--name", "mine", "--variants", "fp32", "--data", str(idx),
                        "--artifacts", str(art), *LENIENT]) == 0
    proto = onnx.load(art / "onnx" / "mine.onnx")
    assert [n.op_type for n in proto.graph.node][0] == "Transpose" and proto.graph.node[-1].op_type == "Softmax"
    assert proto.graph.node[-1].output[0] == "probabilities" and len([n for n in proto.graph.node if n.op_type == "Softmax"]) == 1


def test_onnx_options_without_onnx_are_refused(tmp_path: Path, capsys):
    assert export_main(["model1", "--name", "mine", "--artifacts", str(tmp_path)]) == 2
    assert "--name: go with --onnx PATH" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad model files

BAD_MODEL_FILES = {
    "syntax": ("def build(:\n", "syntax error"),
    "raises": ("import nothing_of_that_name\n", "tinyfile.py:1: running it failed: ModuleNotFoundError"),
    "registers nothing": ("x = 1\n", "registers no model; decorate a builder with @register('NAME')"),
    "clashing name": ("from trainer.models import register\n@register('model1')\ndef build(spec, base_weights='none'):\n"
                      "    pass\n", "model name 'model1' is one of the study's models"),
    "unsafe name": ("from trainer.models import register\n@register('my/net')\ndef build(spec, base_weights='none'):\n"
                    "    pass\n", "model name 'my/net' is not a safe name"),
    "wrong input": (MODEL_FILE.replace("keras.Input(spec.input_shape", "keras.Input((32, 32, 3)").replace("tinynet", "wrongin"),
                    "model 'wrongin': takes (None, 32, 32, 3); expected one input (None, 28, 28, 1)"),
    "no softmax": (MODEL_FILE.replace('activation="softmax"', "activation=None").replace("tinynet", "nosoftmax"),
                   "model 'nosoftmax': its outputs are not softmax probabilities"),
    "ten classes": (MODEL_FILE.replace("layers.Dense(spec.num_classes", "layers.Dense(10").replace("tinynet", "tenclasses"),
                    "model 'tenclasses': gives (None, 10); expected one output (None, 5)"),
}


@pytest.mark.parametrize("case", list(BAD_MODEL_FILES))
def test_a_bad_model_file_gets_one_line_and_registers_nothing(case: str, tmp_path: Path, idx: Path, capsys):
    text, message = BAD_MODEL_FILES[case]
    path = tmp_path / "tinyfile.py"
    path.write_text(text)
    before = catalog.list_models()
    art = tmp_path / "art"
    assert train_main(["--model-file", str(path), "all", "--epochs", "1", "--data", str(idx), "--artifacts", str(art)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmnist-train: error: ") and len(err.splitlines()) == 1 and message in err, err
    assert catalog.list_models() == before and not art.exists()


def test_a_ray_task_runs_the_model_file_on_its_worker(model_file: Path):
    """What a Ray worker gets (trainer/cluster.py): the file's contents inside the task, run before the work."""
    from trainer import models

    userfile.load_model_files([model_file])
    task = userfile.carried(lambda name: models.create_model(name).model.output_shape)
    models.unregister("tinynet")  # a fresh worker has not seen the file
    userfile._LOADED.clear()
    assert "tinynet" not in catalog.list_models()
    assert task("tinynet") == (None, 5)
    assert catalog.model_info("tinynet").source_file == str(model_file.resolve())


def test_a_model_file_is_named_in_the_docs():
    """The README and docs/train.md say plainly that a model file is Python that runs."""
    root = Path(__file__).resolve().parents[1]
    for page in ("README.md", "docs/train.md"):
        assert "Python that runs" in (root / page).read_text(), page
    assert len((root / "README.md").read_text().splitlines()) < 150
