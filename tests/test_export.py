from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from exporter import cli as export_cli
from exporter import export as export_mod
from exporter import publish
from exporter.cli import main
from exporter.variants import int8_target
from exporter.contract import ContractError, Manifest, ManifestFile, read_manifest, verify_file
from exporter.export import ExportOptions, export_variants, load_source
from exporter.validate import ParityError, Tolerances, cpu_session
from tiny import LENIENT, train, write_idx_dir
from trainer import data
from trainer.artifacts import Artifacts
from trainer.fit import images


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """model1 trained for one epoch on 2,000 tiny images (200 test images); copied per test."""
    root = tmp_path_factory.mktemp("trained")
    return train("model1", root / "art", write_idx_dir(root / "idx", n=2000))


@pytest.fixture
def art(trained: Artifacts, tmp_path: Path) -> Artifacts:
    shutil.copytree(trained.root, tmp_path / "art")
    return Artifacts(tmp_path / "art")


@pytest.fixture(scope="module")
def exported(trained: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """A copy of ``trained`` exported once with every variant (fmnist-export exits 0): read by the test of what an
    export writes, copied by each test that starts from a published export and changes it."""
    root = tmp_path_factory.mktemp("exported")
    shutil.copytree(trained.root, root / "art")
    art = Artifacts(root / "art")
    assert main(["model1", "--artifacts", str(art.root), *LENIENT]) == 0
    return art


def _onnx_files(art: Artifacts) -> list[str]:
    return sorted(p.name for p in art.onnx_dir.glob("*") if not p.name.startswith("manifest.")) if art.onnx_dir.exists() else []


@pytest.mark.slow
def test_every_variant_is_exported_checked_and_described(exported: Artifacts):
    art = exported  # the export's exit status 0 is checked where it is made, in the fixture; read here, not changed
    assert _onnx_files(art) == ["model1.fp16.onnx", "model1.int8.onnx", "model1.onnx"]
    manifest = json.loads((art.onnx_dir / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    table = (art.onnx_dir / "manifest.md").read_text().splitlines()
    assert len(table) == 2 + 3 and "max abs diff vs Keras" in table[0]
    assert [line.split("|")[2].strip() for line in table[2:]] == ["fp32", "fp16", "int8"]
    meta = json.loads(art.metadata_file("model1").read_text())
    for file, variant in (("model1.onnx", "fp32"), ("model1.fp16.onnx", "fp16"), ("model1.int8.onnx", "int8")):
        path = art.onnx_dir / file
        row = manifest["files"][file]
        assert row["variant"] == variant and row["opset"] == 17
        assert row["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() and row["bytes"] == path.stat().st_size
        proto = onnx.load(path)
        onnx.checker.check_model(proto, full_check=True)
        (inp,), (out,) = proto.graph.input, proto.graph.output
        assert inp.name == "image" and out.name == "probabilities"
        assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 28, 28, 1]
        assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["batch", 5]
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT == out.type.tensor_type.elem_type
        props = {p.key: p.value for p in proto.metadata_props}
        assert props["model"] == "model1" and props["variant"] == variant and props["opset"] == "17"
        assert json.loads(props["class_names"])[0].startswith("Class 1")
        assert props["source_keras_sha256"] == meta["model_file"]["sha256"]
        assert float(props["test_accuracy_keras"]) == pytest.approx(meta["test"]["accuracy"], abs=1e-6)
        assert {"tensorflow_version", "tf2onnx_version", "onnx_version", "base_weights", "input"} <= set(props)
        for batch in (1, 7):  # the batch dimension is dynamic
            probs = cpu_session(path).run(["probabilities"], {"image": np.zeros((batch, 28, 28, 1), np.float32)})[0]
            assert probs.shape == (batch, 5)

    validation = {manifest["files"][f]["variant"]: manifest["files"][f]["validation"] for f in manifest["files"]}
    assert validation["fp32"]["max_abs_diff"] <= 1e-4 and validation["fp32"]["argmax_agreement"] == 1.0
    assert validation["fp16"]["max_abs_diff"] <= 1e-2 and validation["fp16"]["argmax_agreement"] >= 0.995
    assert validation["int8"]["accuracy_change_points"] >= -10
    assert validation["fp32"]["images"] == 200


def test_a_model_changed_after_the_reference_fails_parity_and_writes_nothing(art: Artifacts):
    source = load_source("model1", art)
    splits = data.split_dataset(data.reload_dataset(source.meta.data, None))
    x = images(splits.test)
    reference = source.model.predict(x, verbose=0)
    kernel = source.model.layers[-1].kernel
    kernel.assign(np.zeros_like(kernel.numpy()))  # broken after the reference was taken
    with pytest.raises(ParityError, match=r"model1 fp32: parity check failed on 200 test images: max \|p_onnx - p_keras\| .* > 0.0001"):
        export_variants(source, reference, x, x, splits.test.y, x[:32], art, ExportOptions())
    assert _onnx_files(art) == []


def test_a_crash_while_writing_leaves_no_onnx_behind(art: Artifacts, monkeypatch: pytest.MonkeyPatch, capsys):
    real_check = export_mod.check_model

    def crash_on_int8(path: Path) -> None:
        real_check(path)
        if "int8" in path.name:
            raise OSError("disk full")

    monkeypatch.setattr(export_mod, "check_model", crash_on_int8)
    assert main(["model1", "--artifacts", str(art.root), *LENIENT]) == 2  # one line, not a traceback
    assert "fmnist-export: error: model1:  disk full; nothing was published" in capsys.readouterr().err
    assert _onnx_files(art) == []  # fp32 and fp16 had passed, but nothing is half-exported


def test_int8_accuracy_threshold_fails_the_export(art: Artifacts, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    # The option refuses negative drops; an impossible requirement (int8 must gain 50 points) forces the gate.
    monkeypatch.setattr(export_cli, "Tolerances", lambda **_: Tolerances(int8_max_accuracy_drop_points=-50))
    assert main(["model1", "--artifacts", str(art.root), "--quiet", "--variants", "int8",
                 "--parity-images", "200", "--calibration-images", "64"]) == 1
    err = capsys.readouterr().err
    assert "model1 int8: parity check failed" in err and "points lost" in err and "nothing was written for model1" in err
    assert _onnx_files(art) == []


def test_untrained_model_names_the_command_that_makes_it(art: Artifacts, capsys: pytest.CaptureFixture):
    assert main(["model3", "--artifacts", str(art.root), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fmnist-export: error: ") and "no trained model3; make it with: fmnist-train model3" in err


def test_truncated_keras_file_is_refused(art: Artifacts, capsys: pytest.CaptureFixture):
    path = art.model_file("model1")
    path.write_bytes(path.read_bytes()[:1000])
    assert main(["model1", "--artifacts", str(art.root), "--quiet"]) == 2
    assert "model1.keras: does not match its metadata" in capsys.readouterr().err


def test_corrupt_keras_file_is_refused(art: Artifacts, capsys: pytest.CaptureFixture):
    path = art.model_file("model1")
    path.write_bytes(b"not a zip archive")
    meta_path = art.metadata_file("model1")
    meta = json.loads(meta_path.read_text())
    meta["model_file"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    assert main(["model1", "--artifacts", str(art.root), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "model1.keras: cannot load the Keras model" in err and err.count("\n") == 1


def test_unknown_model_and_unwritable_folder(art: Artifacts, capsys: pytest.CaptureFixture):
    assert main(["model9", "--artifacts", str(art.root)]) == 2
    assert "unknown model 'model9'" in capsys.readouterr().err
    art.onnx_dir.write_text("a file where the folder should be")
    assert main(["model1", "--artifacts", str(art.root), *LENIENT]) == 2
    assert "artifacts folder" in capsys.readouterr().err


def test_bad_variant_option_is_refused(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        main(["model1", "--variants", "fp32,bf16"])
    assert exit_info.value.code == 2
    assert "choose from fp32,fp16,int8" in capsys.readouterr().err


@pytest.mark.slow
def test_transfer_model_pads_inside_the_graph(tmp_path: Path):
    # 100 images (10 test images, all compared with Keras): VGG16's base runs over every image to make the head's
    # features, and the padding is in the graph whatever the data; tf2onnx's conversion is the rest of the time.
    art = train("vgg16", tmp_path / "art", write_idx_dir(tmp_path / "idx", n=100))
    assert main(["vgg16", "--artifacts", str(art.root), "--variants", "fp32", "--quiet", "--parity-images", "10"]) == 0
    proto = onnx.load(art.onnx_dir / "vgg16.onnx")
    assert [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", 28, 28, 1]
    assert "Pad" in {node.op_type for node in proto.graph.node}
    assert "32x32x3 inside the graph" in {p.key: p.value for p in proto.metadata_props}["input"]


def test_tolerances_are_explicit():
    assert Tolerances() == Tolerances(1e-4, 1.0, 1e-2, 0.995, 1.0)


def test_int8_format_options_and_a_separate_onnx_dir(art: Artifacts, tmp_path: Path):
    side = tmp_path / "tune" / "onnx"
    assert main(["model1", "--artifacts", str(art.root), *LENIENT, "--variants", "int8",
                 "--int8-format", "qoperator", "--int8-activations", "int8", "--int8-calibration", "percentile",
                 "--onnx-dir", str(side)]) == 0
    proto = onnx.load(side / "model1.int8.onnx")
    assert "QLinearConv" in {node.op_type for node in proto.graph.node}
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["int8_format"] == "qoperator" and props["int8_activations"] == "int8" and props["int8_calibration"] == "percentile"
    assert json.loads((side / "manifest.json").read_text())["models"]["model1"]["data"]["images"] == 2000
    assert _onnx_files(art) == []  # the default folder is untouched


def test_one_failing_model_does_not_stop_the_others(art: Artifacts, capsys: pytest.CaptureFixture):
    assert main(["model3", "model1", "--artifacts", str(art.root), *LENIENT]) == 2
    assert "no trained model3" in capsys.readouterr().err
    assert _onnx_files(art) == ["model1.fp16.onnx", "model1.int8.onnx", "model1.onnx"]


@pytest.mark.parametrize(("option", "value"), [("--opset", "0"), ("--opset", "99"), ("--parity-images", "0"),
                                               ("--calibration-images", "0"), ("--int8-max-drop", "nan"),
                                               ("--int8-max-drop", "-1"), ("--parity-images", "1e9")])
def test_impossible_option_values_are_refused(option: str, value: str, capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as exit_info:
        main(["model1", f"{option}={value}"])
    assert exit_info.value.code == 2 and f"argument {option}" in capsys.readouterr().err


def test_a_typo_beside_all_is_an_error(art: Artifacts, capsys: pytest.CaptureFixture):
    assert main(["all", "modle9", "--artifacts", str(art.root), *LENIENT]) == 2
    assert "unknown model 'modle9'" in capsys.readouterr().err and _onnx_files(art) == []


def _consistent(art: Artifacts) -> dict[str, str]:
    """The live export as the bench sees it: every file the very one its manifest describes."""
    live = publish.current(art.onnx_dir)
    manifest = read_manifest(live)
    return {name: verify_file(live, entry).read_bytes().hex()[:0] + entry.sha256 for name, entry in manifest.files.items()}


@pytest.mark.slow
@pytest.mark.parametrize("crash_at", ["populating", "writing", "before the swap"])
def test_an_export_is_published_whole_or_not_at_all(exported: Artifacts, tmp_path: Path, crash_at: str,
                                                    monkeypatch: pytest.MonkeyPatch):
    # A copy of the module's published export (made by fmnist-export, exit status 0); symlinks=True keeps onnx/ the
    # link to its generation that an export leaves, not a plain folder.
    shutil.copytree(exported.root, tmp_path / "art", symlinks=True)
    art = Artifacts(tmp_path / "art")
    assert art.onnx_dir.is_symlink() and len(list(publish.store_dir(art.onnx_dir).glob("gen-*"))) == 1
    before = _consistent(art)
    crash = RuntimeError(f"killed while {crash_at}")
    if crash_at == "populating":
        monkeypatch.setattr(publish.os, "link", lambda *a: (_ for _ in ()).throw(crash))
    elif crash_at == "writing":
        real_save = export_mod.onnx.save
        monkeypatch.setattr(export_mod.onnx, "save", lambda proto, path: real_save(proto, path) if "fp16" not in str(path) else (_ for _ in ()).throw(crash))
    else:
        monkeypatch.setattr(publish, "_point", lambda *a: (_ for _ in ()).throw(crash))
    with pytest.raises(RuntimeError, match="killed"):
        export_mod.export_model("model1", art, ExportOptions(calibration_images=64, parity_images=200,
                                                             tolerances=export_mod.Tolerances(int8_max_accuracy_drop_points=10)))
    assert _consistent(art) == before  # the old export, whole
    monkeypatch.undo()
    assert main(["model1", "--artifacts", str(art.root), *LENIENT, "--calibration-images", "96"]) == 0
    after = _consistent(art)
    assert set(after) == set(before) and after["model1.int8.onnx"] != before["model1.int8.onnx"]
    assert len(list(publish.store_dir(art.onnx_dir).glob("gen-*"))) == 2  # the live one and the one before


@pytest.mark.slow
def test_the_int8_target_chooses_seven_bit_or_full_range_weights_and_says_so(art: Artifacts, tmp_path: Path):
    """--int8-target avx2: every quantized weight in -64..64 (no u8 x s8 pair sum can saturate int16 without VNNI);
    vnni: full-range weights; auto: by this machine's flags; the file records which."""
    side = tmp_path / "reduced" / "onnx"
    assert main(["model1", "--artifacts", str(art.root), *LENIENT, "--variants", "int8", "--int8-target", "avx2",
                 "--onnx-dir", str(side)]) == 0
    proto = onnx.load(side / "model1.int8.onnx")
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["int8_weights"] == "int7 (reduce_range) per-channel" and props["int8_target"] == "avx2"
    weights = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.data_type == onnx.TensorProto.INT8
               and len(t.dims) == 4]
    assert weights and all(w.min() >= -64 and w.max() <= 64 for w in weights)
    full_side = tmp_path / "full" / "onnx"
    assert main(["model1", "--artifacts", str(art.root), *LENIENT, "--variants", "int8", "--int8-target", "vnni",
                 "--onnx-dir", str(full_side)]) == 0
    full = onnx.load(full_side / "model1.int8.onnx")  # full-range weights for a CPU with VNNI
    assert {p.key: p.value for p in full.metadata_props}["int8_target"] == "vnni"
    assert max(int(np.abs(onnx.numpy_helper.to_array(t)).max()) for t in full.graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and len(t.dims) == 4) > 64
    assert int8_target("auto", ("avx2", "fma")) == "avx2" and int8_target("auto", ("avx2", "avx_vnni")) == "vnni"
    assert int8_target("auto", ("avx2", "avx512f", "avx512_vnni")) == "vnni" and int8_target("auto", ("asimd",)) == "vnni"
    assert int8_target("avx2", ("avx512_vnni",)) == "avx2"


# --------------------------------------------------------------------------- nothing that failed passes

def _publish_manifest(art: Artifacts, manifest: str) -> Path:
    """A live export whose manifest.json holds ``manifest``, published as an export publishes one; its path as the user knows it."""
    with publish.generation(art.onnx_dir) as stage:
        (stage / "manifest.json").write_text(manifest)
    return art.onnx_dir / "manifest.json"


def _no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_mod, "load_source", lambda *a: pytest.fail("the export started"))
    monkeypatch.setattr(export_mod, "keras_to_onnx", lambda *a: pytest.fail("the conversion started"))


def test_a_damaged_manifest_is_named_where_the_user_knows_it_and_fails_before_any_work(art: Artifacts, capsys: pytest.CaptureFixture,
                                                                                       monkeypatch: pytest.MonkeyPatch):
    manifest = _publish_manifest(art, '{"schema_version": 1, "models": ')
    expected = f"{manifest}: not a readable manifest (JSONDecodeError"
    with pytest.raises(ContractError) as caught:  # as bench reads it: the link resolved once, then the manifest
        read_manifest(publish.current(art.onnx_dir))
    assert str(caught.value).startswith(expected) and "onnx.d" not in str(caught.value)
    _no_work(monkeypatch)
    with pytest.raises(ContractError, match="not a readable manifest"):
        export_mod.export_model("model1", art, ExportOptions())
    assert main(["model1", "model2", "--artifacts", str(art.root), *LENIENT]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fmnist-export: error: {expected}") and err.count("\n") == 1 and "onnx.d" not in err


def test_a_file_missing_from_the_live_export_is_named_under_onnx(art: Artifacts):
    row = ManifestFile("model1.onnx", "model1", "fp32", 17, 1, "0" * 64, {})
    record = {"data": {}, "limit": None, "base_weights": "n/a", "keras_file": None, "keras_test_accuracy": None}
    _publish_manifest(art, json.dumps(Manifest({"model1": record}, {row.file: row}).to_dict()))
    live = publish.current(art.onnx_dir)
    with pytest.raises(ContractError) as caught:
        verify_file(live, read_manifest(live).files[row.file])
    assert str(caught.value).startswith(f"{art.onnx_dir / 'model1.onnx'}: listed in manifest.json but missing")


def test_damaged_metadata_fails_before_the_conversion(art: Artifacts, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    """The metadata's base_weights goes into every file at the end of the export: checked at its start."""
    path = art.metadata_file("model1")
    path.write_text(json.dumps({**json.loads(path.read_text()), "base_weights": 5}))
    monkeypatch.setattr(export_mod, "keras_to_onnx", lambda *a: pytest.fail("the conversion started"))
    assert main(["model1", "--artifacts", str(art.root), *LENIENT]) == 2
    assert capsys.readouterr().err == f"fmnist-export: error: {path}: not this toolkit's run metadata: base_weights is a number, expected str\n"


def test_a_file_given_as_the_artifacts_folder_is_called_a_file(tmp_path: Path, capsys: pytest.CaptureFixture):
    a_file = tmp_path / "artifacts.tar"
    a_file.write_text("not a folder")
    assert main(["model1", "--artifacts", str(a_file), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"fmnist-export: error: --artifacts {a_file}: is a file, not a folder\n"


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--artifacts", "{tmp}/absent", "--artifacts {tmp}/absent: no such folder; train into it first"),
    ("--onnx-dir", "{file}", "--onnx-dir {file}: is a file, not a folder"),
    ("--onnx-dir", "{file}/onnx", "--onnx-dir {file}/onnx: cannot be made: {file} is a file, not a folder"),
    ("--data", "{tmp}/absent", "--data {tmp}/absent: no such file or folder"),
])
def test_every_path_option_is_checked_before_any_work(option: str, value: str, message: str, art: Artifacts, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    _no_work(monkeypatch)
    assert main(["model1", "--artifacts", str(art.root), *LENIENT, option, value.format(tmp=tmp_path, file=a_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fmnist-export: error: {message.format(tmp=tmp_path, file=a_file)}") and err.count("\n") == 1
