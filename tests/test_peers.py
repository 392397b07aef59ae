"""The peer runtimes (bench/runtimes/peers.py): OpenVINO and LiteRT rows through the real measurement core, the
LiteRT conversion cache, skips that name the missing package, a bench that runs without them, and the
summary's recommendation line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.runtimes import peers
from bench.measure.cases import discover, load_test_split, read_exports
from bench.cli import build_parser, main, selection
from bench.results.record import BenchRecord, BenchRun
from bench.results.store import load
from bench.results.summary import latest_records, recommendations
from bench.runtimes import make_sut
from bench.runtimes.ort import OrtSUT
from tests.conftest import train_and_export_model1
from trainer import data
from trainer.artifacts import Artifacts

REPO = Path(__file__).resolve().parents[1]
FAST_RUN = ["--rounds", "1", "--min-queries", "5", "--min-duration", "0", "--batch-sizes", "128", "--quiet"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return train_and_export_model1(tmp_path_factory.mktemp("peers"))


def _run(art: Artifacts, report_dir: Path, *options: str) -> list[BenchRecord]:
    """One ``fmnist-bench run`` into its own report folder (two runs in one second get names max() misorders)."""
    assert main(["run", "--artifacts", str(art.root), "--report-dir", str(report_dir), *options, *FAST_RUN]) == 0
    (path,) = report_dir.glob("bench-*.json")
    return load(path).records


def _copy_without_litert_cache(exported: Artifacts, dest: Path) -> Artifacts:
    shutil.copytree(exported.root, dest, ignore=shutil.ignore_patterns("litert", "reports"))
    return Artifacts(dest)


def test_peer_rows_run_through_the_measurement_core(exported: Artifacts, tmp_path: Path, monkeypatch, capsys):
    records = _run(exported, tmp_path / "first", "--providers", "openvino,openvino-f32,litert", "--variants", "fp32,int8",
                   "--operations", "predict,single-stream")
    by_id = {r.id: r for r in records}
    assert set(by_id) == {f"model1-{variant}-{provider}-{operation}"
                          for variant in ("fp32", "int8") for provider in ("openvino", "openvino-f32", "litert")
                          for operation in ("predict-b128", "single-stream-b1")}
    assert not [r.id for r in records if r.skipped]
    class_names = json.loads(exported.metadata_file("model1").read_text())["data"]["class_names"]
    litert_dir = exported.root / "litert"
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
            assert r.model_bytes == (exported.onnx_dir / onnx_name).stat().st_size
            asked = "f32" if r.provider == "openvino-f32" else "default"
            assert r.provider_options["inference_precision_asked"] == asked
            assert r.provider_options["performance_hint"] == peers.DEFAULT_HINT
            picked = r.provider_options["inference_precision"]
            assert picked in ("f32", "bf16", "f16") and picked in r.providers_used[0]
            if r.provider == "openvino-f32":
                assert picked == "f32"
    report = load(next((tmp_path / "first").glob("bench-*.json")))
    assert report.machine["int8_gemm_gops"] > 0 and report.machine["sgemm_gflops"] > 0

    # The conversion is cached: a second run converts nothing and leaves the files as they were.
    cached = {p: p.stat().st_mtime_ns for p in litert_dir.glob("*.tflite")}
    assert len(cached) == 2

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again instead of reusing artifacts/litert/")

    monkeypatch.setattr(peers, "convert_litert", no_conversion)
    again = _run(exported, tmp_path / "second", "--providers", "litert", "--variants", "fp32,int8", "--operations", "predict")
    assert len(again) == 2 and not [r for r in again if r.skipped]
    assert {p: p.stat().st_mtime_ns for p in litert_dir.glob("*.tflite")} == cached

    capsys.readouterr()
    assert main(["summary", str(next((tmp_path / "first").glob("bench-*.json")))]) == 0
    out = capsys.readouterr().out
    assert "large int8 GEMM" in out and "% of peak" in out
    names = [line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| model1")]
    picked = by_id["model1-fp32-openvino-predict-b128"].provider_options["inference_precision"]
    assert names == [f"OpenVINO default ({picked})", "OpenVINO int8", "OpenVINO f32", "OpenVINO int8 (f32 hint)",
                     "LiteRT fp32", "LiteRT int8"]  # the registry's order (bench/runtimes/__init__.py)
    assert "**model1**" in out  # no onnxruntime or Keras row: the bound is not known, and says so
    assert "large int8 GEMM (u8 x s8)" in next((tmp_path / "first").glob("bench-*.md")).read_text()


def test_peer_outputs_match_onnxruntime(exported: Artifacts):
    x = load_test_split(exported, "model1").x
    expected = OrtSUT(exported.onnx_dir / "model1.onnx").predict(x, 100)
    (fp32,) = discover(exported, variants=["fp32"], providers=["litert"])
    (int8,) = discover(exported, variants=["int8"], providers=["litert"])
    for sut in (peers.OpenVinoSUT(exported.onnx_dir / "model1.onnx", "fp32", "f32"),
                peers.LiteRTSUT(peers.litert_file(exported, fp32))):
        # Batch sizes that change between calls: the dynamic batch (OpenVINO) and the resize (LiteRT).
        for batch in (7, 100, 1):
            np.testing.assert_allclose(sut.predict(x, batch), expected, atol=1e-5)
    quantized = peers.LiteRTSUT(peers.litert_file(exported, int8)).predict(x, 32)
    assert quantized.shape == (100, 5) and np.allclose(quantized.sum(1), 1, atol=0.02)
    assert (quantized.argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_litert_calibrates_on_training_images_only(exported: Artifacts):
    calibration = peers.calibration_images(exported, "model1")
    _, manifest = read_exports(exported)
    record = manifest.models["model1"]
    splits = data.split_dataset(data.reload_dataset(record["data"], record["limit"]))
    train = {image.tobytes() for image in splits.train.x}
    test = {image.tobytes() for image in splits.test.x}
    assert calibration.shape == (min(peers.CALIBRATION_IMAGES, len(splits.train.x)), 28, 28, 1)
    assert all(image[..., 0].tobytes() in train and image[..., 0].tobytes() not in test for image in calibration)


def test_peers_are_selectable_on_both_front_doors(exported: Artifacts):
    """``--providers`` (and so pytest's ``--fmnist-providers``, parsed by the same parser) selects the peers;
    each runs the fp32 and int8 files, its Case keeping the ONNX file that counts the work."""
    args = build_parser().parse_args(["run", "--artifacts", str(exported.root), "--providers", "openvino,openvino-f32,litert"])
    _, cases, _ = selection(args)
    assert {(c.provider, c.variant, c.path.name) for c in cases} == {
        (p, v, "model1.onnx" if v == "fp32" else "model1.int8.onnx")
        for p in ("openvino", "openvino-f32", "litert") for v in ("fp32", "int8")}
    no_reference = build_parser().parse_args(["run", "--artifacts", str(exported.root), "--no-reference"])
    assert {c.provider for c in selection(no_reference)[1]} == {"cpu", "cuda"}  # onnxruntime only


def test_a_missing_peer_is_a_skipped_row_with_its_reason(exported: Artifacts, tmp_path: Path):
    art = _copy_without_litert_cache(exported, tmp_path / "art")
    run = ["run", "--artifacts", str(art.root), "--variants", "fp32", "--operations", "predict", *FAST_RUN]
    code = f"""
import sys
from bench.cli import main
sys.modules['openvino'] = None
sys.modules['ai_edge_litert'] = None
assert main({run!r} + ['--providers', 'cpu,openvino,litert', '--report-dir', {str(tmp_path / 'a')!r}]) == 0
del sys.modules['ai_edge_litert']
sys.modules['tensorflow'] = None  # LiteRT installed, but nothing cached to run and no TensorFlow to convert
assert main({run!r} + ['--providers', 'litert', '--report-dir', {str(tmp_path / 'b')!r}]) == 1  # measured nothing
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("every case was skipped, nothing was measured:\n  model1 fp32 litert: converting model1.keras for LiteRT needs "
            "TensorFlow: tensorflow is not installed (pip install 'fmnist-edge[train]')") in result.stderr
    assert not list((tmp_path / "b").glob("bench-*"))
    first = {r.provider: r for r in load(next((tmp_path / "a").glob("bench-*.json"))).records}
    assert first["cpu"].skipped is None and first["cpu"].quality["accuracy"] >= 0
    assert first["openvino"].skipped == "openvino is not installed (pip install openvino)"
    assert first["litert"].skipped == "ai-edge-litert is not installed (pip install ai-edge-litert)"
    assert not (art.root / "litert").exists()


def test_the_bench_runs_without_tensorflow_or_openvino(exported: Artifacts, tmp_path: Path):
    """onnxruntime rows need neither; LiteRT rows need TensorFlow only to convert, not to run a cached conversion."""
    art = _copy_without_litert_cache(exported, tmp_path / "art")
    (case,) = discover(art, variants=["fp32"], providers=["litert"])
    converted = peers.litert_file(art, case)  # converted here, where TensorFlow is
    run = ["run", "--artifacts", str(art.root), "--operations", "predict", *FAST_RUN]
    code = f"""
import sys
for name in ('tensorflow', 'keras', 'openvino'):
    sys.modules[name] = None
from bench.cli import main
assert main({run!r} + ['--no-reference', '--variants', 'int8', '--report-dir', {str(tmp_path / 'a')!r}]) == 0
assert main({run!r} + ['--providers', 'litert', '--variants', 'fp32', '--report-dir', {str(tmp_path / 'b')!r}]) == 0
loaded = [m for m in ('tensorflow', 'keras', 'openvino', 'tf2onnx') if sys.modules.get(m) is not None]
assert not loaded, loaded
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    onnxruntime_rows = load(next((tmp_path / "a").glob("bench-*.json"))).records
    assert {r.provider for r in onnxruntime_rows} <= {"cpu", "cuda"}
    assert [r for r in onnxruntime_rows if r.provider == "cpu" and not r.skipped]
    (litert,) = load(next((tmp_path / "b").glob("bench-*.json"))).records
    assert litert.skipped is None and litert.model_bytes == converted.stat().st_size


def test_make_sut_builds_the_peers(exported: Artifacts):
    (case,) = discover(exported, variants=["int8"], providers=["openvino"])
    sut = make_sut(case, exported)
    assert sut.name == "openvino" and sut.model_bytes == case.path.stat().st_size
    assert sut(np.zeros((3, 28, 28, 1), np.float32)).shape == (3, 5)


# --------------------------------------------------------------------------- the summary's recommendation


def _rec(provider: str, variant: str, median_s: float, accuracy: float, p50_ms: float, **extra) -> list[BenchRecord]:
    predict = BenchRecord("model4", variant, provider, "predict", 128, ["x"], 6000, 3, median_s, median_s, median_s,
                          throughput_ips=6000 / median_s, quality={"accuracy": accuracy}, **extra)
    single = BenchRecord("model4", variant, provider, "single-stream", 1, ["x"], 1, 3, p50_ms / 1000, p50_ms / 1000,
                         p50_ms / 1000, latency_ms={"p50": p50_ms, "p90": p50_ms, "p99": p50_ms, "mean": p50_ms, "queries": 3},
                         **extra)
    return [predict, single]


def test_the_recommendation_is_the_fastest_row_within_half_a_point(tmp_path: Path, capsys):
    records = [
        *_rec("keras", "fp32", 2.0, 0.9277, 5.0),
        *_rec("cpu", "fp32", 1.0, 0.9277, 0.5),
        *_rec("cpu", "int8", 0.5, 0.9240, 0.30),  # -0.37 points: eligible; the fastest single-stream that is
        *_rec("openvino", "int8", 0.4, 0.9227, 0.35),  # -0.50 exactly: eligible; the fastest batch row that is
        *_rec("openvino", "fp32", 0.45, 0.9277, 0.40, provider_options={"inference_precision": "bf16"}),
        *_rec("openvino-f32", "int8", 0.3, 0.9220, 0.20),  # -0.57: faster, never recommended
        *_rec("litert", "int8", 0.2, 0.8717, 0.05),  # -5.60 (the BatchNormalization-after-ReLU trap): the fastest, never recommended
    ]
    path = tmp_path / "bench-peers.json"
    path.write_text(BenchRun({"cpu": "test", "cores": 2, "sgemm_gflops": 100.0, "int8_gemm_gops": 400.0}, {},
                                "2026-11-24T00:00:00+00:00", records).to_json())
    (line,) = recommendations(latest_records([path]))
    assert line.startswith("**model4** (rows within 0.5 points of fp32 accuracy 0.9277): ")
    assert "batch processing (predict, batch 128): **OpenVINO int8**, 400.0 ms, 5.00x Keras predict" in line
    assert "single-stream: **onnxruntime CPU int8**, p50 0.300 ms, 16.67x Keras single-stream" in line
    assert "Never recommended here: OpenVINO int8 (f32 hint) (-0.57 points), LiteRT int8 (-5.60 points)" in line

    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[3:-1]]
            for line in out.splitlines() if line.startswith("| model4")}
    assert rows["LiteRT int8"][-2:] == ["0.8717", "-5.60"]  # stays in the table, with its loss
    assert "OpenVINO default (bf16)" in rows
    assert out.rstrip().endswith(line)


def test_no_recommendation_without_an_fp32_accuracy_or_an_eligible_row(tmp_path: Path):
    path = tmp_path / "bench-x.json"
    path.write_text(BenchRun({}, {}, "2026-11-24T00:00:00+00:00",
                                _rec("litert", "int8", 0.2, 0.8717, 0.05)).to_json())
    assert recommendations(latest_records([path])) == [
        "**model4**: no recommendation (no fp32 accuracy at batch 128 to bound the others by)"]
    path.write_text(BenchRun({}, {}, "2026-11-24T00:00:00+00:00",
                                [*_rec("cpu", "fp32", 1.0, 0.9277, 0.5)[1:], *_rec("keras", "fp32", 2.0, 0.9277, 5.0)[:1],
                                 *_rec("litert", "int8", 0.2, 0.8717, 0.05)]).to_json())
    (line,) = recommendations(latest_records([path]))
    # onnxruntime CPU fp32 ran single-stream only (accuracy unknown): never recommended either.
    assert "batch processing (predict, batch 128): **Keras**, 2000.0 ms, 1.00x Keras predict" in line
    assert "Never recommended here: onnxruntime CPU fp32 (accuracy not measured), LiteRT int8 (-5.60 points)" in line
    assert "single-stream: " not in line


def test_reports_from_two_machines_stand_side_by_side(tmp_path: Path, capsys):
    """The same cases measured on two machines: two blocks of rows with a machine column, never one merged row;
    each machine's ratios are to its own Keras, and each gets its own recommendation."""
    paths = []
    for host, keras_s, cpu_s, created in (("edge-a", 2.0, 1.0, "2026-11-24T00:00:00+00:00"),
                                          ("edge-b", 3.0, 0.5, "2026-11-25T00:00:00+00:00")):
        path = tmp_path / f"bench-{host}.json"
        records = [*_rec("keras", "fp32", keras_s, 0.9277, 5.0), *_rec("cpu", "fp32", cpu_s, 0.9277, 0.5)]
        path.write_text(BenchRun({"host": host, "cpu": "test CPU", "cores": 2, "sgemm_gflops": 100.0}, {}, created,
                                    records).to_json())
        paths.append(path)
    assert len(latest_records(paths)) == 8
    assert main(["summary", *map(str, paths)]) == 0
    out = capsys.readouterr().out
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| edge-")]
    by_machine = {(row[0].split(":")[0], row[2]): row for row in rows}
    assert len(rows) == 4 and set(by_machine) == {(h, r) for h in ("edge-a", "edge-b") for r in ("Keras", "onnxruntime CPU fp32")}
    assert by_machine[("edge-a", "onnxruntime CPU fp32")][3] == "1000.0"
    assert by_machine[("edge-b", "onnxruntime CPU fp32")][3] == "500.0"
    assert by_machine[("edge-b", "onnxruntime CPU fp32")][6] == "6.00"  # 3.0 s Keras on edge-b / 0.5 s: never edge-a's Keras
    assert "shown side by side (the machine column), never merged" in out
    assert "On edge-a: test CPU, 2 cores: **model4**" in out and "On edge-b: test CPU, 2 cores: **model4**" in out
