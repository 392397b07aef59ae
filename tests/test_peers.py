"""The peer runtimes (bench/runtimes/peers.py): OpenVINO and LiteRT rows through the real measurement core, the
LiteRT conversion cache, skips that name the missing package, a bench that runs without them, and the peers'
own benchmark tools beside their rows."""

from __future__ import annotations

import pytest

import json
import shutil
from pathlib import Path

import numpy as np

from bench.measure import machine as machine_module
from bench.runtimes import peers
from bench.measure.cases import discover, load_test_split, read_exports
from bench.cli import build_parser, main, selection
from bench.results.record import BenchRecord
from bench.results.store import load
from bench.runtimes import make_sut
from bench.runtimes.ort import OrtSUT
from trainer import data
import tiny
from tiny import run_python
from trainer.artifacts import Artifacts

REPO = Path(__file__).resolve().parents[1]
FAST_RUN = [*tiny.FAST_RUN, "--batch-sizes", "128"]


def _run(art: Artifacts, report_dir: Path, *options: str) -> list[BenchRecord]:
    """One ``fmnist-bench run`` into its own report folder (two runs in one second get names max() misorders)."""
    assert main(["run", "--artifacts", str(art.root), "--report-dir", str(report_dir), *options, *FAST_RUN]) == 0
    (path,) = report_dir.glob("bench-*.json")
    return load(path).records


def _copy_without_litert_cache(tiny_export: Artifacts, dest: Path) -> Artifacts:
    shutil.copytree(tiny_export.root, dest, ignore=shutil.ignore_patterns("litert", "reports"))
    return Artifacts(dest)


@pytest.mark.slow
def test_peer_rows_run_through_the_measurement_core(tiny_export: Artifacts, tmp_path: Path, monkeypatch, capsys):
    # The yardsticks, measured through every installed runtime (OpenVINO's among them) at the run's start and end,
    # with one timed call each rather than five: their precision is test_measure.py's, and five calls of a dozen
    # large products twice a run were a third of this test.
    measure_yardsticks = machine_module.measure_yardsticks
    monkeypatch.setattr(machine_module, "measure_yardsticks",
                        lambda threads, seconds: measure_yardsticks(threads, seconds, repeats=1))
    records = _run(tiny_export, tmp_path / "first", "--providers", "openvino,openvino-f32,litert", "--variants", "fp32,int8",
                   "--operations", "predict,single-stream", "--yardstick-s", "0.05")
    by_id = {r.id: r for r in records}
    assert set(by_id) == {f"model1-{variant}-{provider}-{operation}"
                          for variant in ("fp32", "int8") for provider in ("openvino", "openvino-f32", "litert")
                          for operation in ("predict-b128", "single-stream-b1")}
    assert not [r.id for r in records if r.skipped]
    class_names = json.loads(tiny_export.metadata_file("model1").read_text())["data"]["class_names"]
    litert_dir = tiny_export.root / "litert"
    for r in records:
        assert r.median_s > 0 and r.session_create_s > 0 and r.gflops > 0 and len(r.times_s) == r.rounds
        if r.operation == "predict":
            assert 0 <= r.quality["accuracy"] <= 1 and list(r.quality["per_class"]) == class_names
            assert sum(c["support"] for c in r.quality["per_class"].values()) == 100
        else:
            assert r.latency_ms["queries"] >= 5
        # The size of what ran: the ONNX file for OpenVINO, the .tflite flatbuffer for LiteRT.
        if r.provider == "litert":
            assert r.provider_options["file"].startswith(f"model1.{r.variant}.")
            assert r.model_bytes == (litert_dir / r.provider_options["file"]).stat().st_size
            assert r.providers_used == ["litert (default delegate: XNNPACK)"]
        else:
            onnx_name = "model1.onnx" if r.variant == "fp32" else "model1.int8.onnx"
            assert r.model_bytes == (tiny_export.onnx_dir / onnx_name).stat().st_size
            asked = "f32" if r.provider == "openvino-f32" else "default"
            assert r.provider_options["inference_precision_asked"] == asked
            assert r.provider_options["performance_hint"] == peers.DEFAULT_HINT
            picked = r.provider_options["inference_precision"]
            assert picked in ("f32", "bf16", "f16") and picked in r.providers_used[0]
            if r.provider == "openvino-f32":
                assert picked == "f32"
    report = load(next((tmp_path / "first").glob("bench-*.json")))
    assert {y["arithmetic"] for y in report.machine["yardsticks"]} >= {"fp32", "int8"}

    # The conversion is cached: a second run converts nothing and leaves the files as they were.
    cached = {p: p.stat().st_mtime_ns for p in litert_dir.glob("model1.*.tflite")}
    assert len(cached) == 2 and (litert_dir / "trivial.r1.tflite").is_file()  # the call-overhead model beside them

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again instead of reusing artifacts/litert/")

    monkeypatch.setattr(peers, "convert_litert", no_conversion)
    again = _run(tiny_export, tmp_path / "second", "--providers", "litert", "--variants", "fp32,int8", "--operations", "predict")
    assert len(again) == 2 and not [r for r in again if r.skipped]
    assert {p: p.stat().st_mtime_ns for p in litert_dir.glob("model1.*.tflite")} == cached

    capsys.readouterr()
    assert main(["summary", str(next((tmp_path / "first").glob("bench-*.json")))]) == 0
    out = capsys.readouterr().out
    assert "yardsticks (the fastest large GEMM or 3x3 convolution an installed runtime reaches here): " in out and "% of peak" in out
    names = [line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| model1")]
    picked = by_id["model1-fp32-openvino-predict-b128"].provider_options["inference_precision"]
    assert names == [f"OpenVINO default ({picked})", "OpenVINO int8", "OpenVINO f32", "OpenVINO int8 (f32 hint)",
                     "LiteRT fp32", "LiteRT int8"]  # the registry's order (bench/runtimes/__init__.py)
    assert "**model1**" in out  # no onnxruntime or Keras row: the bound is not known, and says so
    assert "int8 " in next((tmp_path / "first").glob("bench-*.md")).read_text().split("yardsticks", 1)[1].splitlines()[0]


def test_peer_outputs_match_onnxruntime(tiny_export: Artifacts):
    x = load_test_split(tiny_export, "model1").x
    expected = OrtSUT(tiny_export.onnx_dir / "model1.onnx").predict(x, 100)
    (fp32,) = discover(tiny_export, variants=["fp32"], providers=["litert"])
    (int8,) = discover(tiny_export, variants=["int8"], providers=["litert"])
    for sut in (peers.OpenVinoSUT(tiny_export.onnx_dir / "model1.onnx", "fp32", "f32"),
                peers.LiteRTSUT(peers.litert_file(tiny_export, fp32))):
        # Batch sizes that change between calls: the dynamic batch (OpenVINO) and the resize (LiteRT).
        for batch in (7, 100, 1):
            np.testing.assert_allclose(sut.predict(x, batch), expected, atol=1e-5)
    quantized = peers.LiteRTSUT(peers.litert_file(tiny_export, int8)).predict(x, 32)
    assert quantized.shape == (100, 5) and np.allclose(quantized.sum(1), 1, atol=0.02)
    assert (quantized.argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_litert_calibrates_on_training_images_only(tiny_export: Artifacts):
    calibration = peers.calibration_images(tiny_export, "model1")
    _, manifest = read_exports(tiny_export)
    record = manifest.models["model1"]
    splits = data.split_dataset(data.reload_dataset(record["data"], record["limit"]))
    train = {image.tobytes() for image in splits.train.x}
    test = {image.tobytes() for image in splits.test.x}
    assert calibration.shape == (min(peers.CALIBRATION_IMAGES, len(splits.train.x)), 28, 28, 1)
    assert all(image[..., 0].tobytes() in train and image[..., 0].tobytes() not in test for image in calibration)


def test_peers_are_selectable_on_both_front_doors(tiny_export: Artifacts):
    """``--providers`` (and so pytest's ``--fmnist-providers``, parsed by the same parser) selects the peers;
    each runs the fp32 and int8 files, its Case keeping the ONNX file that counts the work."""
    args = build_parser().parse_args(["run", "--artifacts", str(tiny_export.root), "--providers", "openvino,openvino-f32,litert"])
    _, cases, _ = selection(args)
    assert {(c.provider, c.variant, c.path.name) for c in cases} == {
        (p, v, "model1.onnx" if v == "fp32" else "model1.int8.onnx")
        for p in ("openvino", "openvino-f32", "litert") for v in ("fp32", "int8")}
    no_reference = build_parser().parse_args(["run", "--artifacts", str(tiny_export.root), "--no-reference"])
    assert {c.provider for c in selection(no_reference)[1]} == {"cpu", "cuda"}  # onnxruntime only


@pytest.mark.slow
def test_a_missing_peer_is_a_skipped_row_with_its_reason(tiny_export: Artifacts, tmp_path: Path):
    art = _copy_without_litert_cache(tiny_export, tmp_path / "art")
    run = ["run", "--artifacts", str(art.root), "--variants", "fp32", "--operations", "predict", *FAST_RUN]
    result = run_python(f"""
from bench.cli import main
assert main({run!r} + ['--providers', 'cpu,openvino,litert', '--report-dir', {str(tmp_path / 'a')!r}]) == 0
del sys.modules['ai_edge_litert']
sys.modules['tensorflow'] = None  # LiteRT installed, but nothing cached to run and no TensorFlow to convert
assert main({run!r} + ['--providers', 'litert', '--report-dir', {str(tmp_path / 'b')!r}]) == 1  # measured nothing
""", forbid=(), block=("openvino", "ai_edge_litert"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("every case was skipped, nothing was measured:\n  model1 fp32 litert: converting model1.keras for LiteRT needs "
            "TensorFlow: tensorflow is not installed (pip install 'fmnist-edge[train]')") in result.stderr
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").glob("bench-*"))
    first = {r.provider: r for r in load(next((tmp_path / "a").glob("bench-*.json"))).records}
    # The onnxruntime row ran and judged the whole test split: the accuracy the export measured for that file.
    exported_accuracy = read_exports(art)[1].files["model1.onnx"].validation["accuracy_onnx"]
    assert first["cpu"].skipped is None and first["cpu"].quality["accuracy"] == exported_accuracy
    assert first["openvino"].skipped == "openvino is not installed (pip install openvino)"
    assert first["litert"].skipped == "ai-edge-litert is not installed (pip install ai-edge-litert)"
    assert not (art.root / "litert").exists()


@pytest.mark.slow
def test_the_bench_runs_without_tensorflow_or_openvino(tiny_export: Artifacts, tmp_path: Path):
    """onnxruntime rows need neither; LiteRT rows need TensorFlow only to convert, not to run a cached conversion."""
    (case,) = discover(tiny_export, variants=["fp32"], providers=["litert"])
    # Converted here, where TensorFlow is (once a session: the peer rows' cache), and copied with the artifacts.
    cached = peers.litert_file(tiny_export, case)
    art = Artifacts(tmp_path / "art")
    shutil.copytree(tiny_export.root, art.root, ignore=shutil.ignore_patterns("reports"))
    converted = art.root / "litert" / cached.name
    run = ["run", "--artifacts", str(art.root), "--operations", "predict", *FAST_RUN]
    result = run_python(f"""
from bench.cli import main
assert main({run!r} + ['--no-reference', '--variants', 'int8', '--report-dir', {str(tmp_path / 'a')!r}]) == 0
assert main({run!r} + ['--providers', 'litert', '--variants', 'fp32', '--report-dir', {str(tmp_path / 'b')!r}]) == 0
""", forbid=("tensorflow", "keras", "openvino", "tf2onnx"), block=("tensorflow", "keras", "openvino"))
    assert result.returncode == 0, result.stderr[-3000:]
    onnxruntime_rows = load(next((tmp_path / "a").glob("bench-*.json"))).records
    assert {r.provider for r in onnxruntime_rows} <= {"cpu", "cuda"}
    assert [r for r in onnxruntime_rows if r.provider == "cpu" and not r.skipped]
    (litert,) = load(next((tmp_path / "b").glob("bench-*.json"))).records
    assert litert.skipped is None and litert.model_bytes == converted.stat().st_size


def test_make_sut_builds_the_peers(tiny_export: Artifacts):
    (case,) = discover(tiny_export, variants=["int8"], providers=["openvino"])
    sut = make_sut(case, tiny_export)
    assert sut.name == "openvino" and sut.model_bytes == case.path.stat().st_size
    assert sut(np.zeros((3, 28, 28, 1), np.float32)).shape == (3, 5)


# --------------------------------------------------------------------------- the summary's recommendation


@pytest.mark.slow
def test_the_peers_own_tools_run_beside_their_rows(tiny_export: Artifacts, tmp_path: Path):
    """benchmark_app on the same .onnx file and batch, litert-benchmark on the same .tflite at batch 1."""
    report_dir = tmp_path / "tools"
    assert main(["run", "--artifacts", str(tiny_export.root), "--providers", "openvino,litert", "--variants", "int8",
                 "--operations", "predict,single-stream", "--report-dir", str(report_dir), *FAST_RUN,
                 "--tools", "on"]) == 0
    by_id = {r.id: r for r in load(max(report_dir.glob("bench-*.json"))).records}
    for key, tool, batch in (("openvino-predict-b128", "benchmark_app", 128), ("openvino-single-stream-b1", "benchmark_app", 1),
                             ("litert-single-stream-b1", "litert-benchmark", 1)):
        figures = by_id[f"model1-int8-{key}"].tool
        assert figures["tool"] == tool and figures["batch"] == batch and figures["median_ms"] > 0, figures
        assert figures["command"].startswith(tool) and "onnx.d" not in figures["command"]
    assert by_id["model1-int8-litert-predict-b128"].tool is None  # litert-benchmark cannot run batch 128
