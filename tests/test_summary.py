"""``fmnist-bench summary``: one row per model and runtime, the recommendation within half a point of fp32
accuracy, and results of several machines side by side, never merged."""

from __future__ import annotations

from pathlib import Path

from bench.cli import main
from bench.results.record import BenchRecord, BenchRun
from bench.results.summary import latest_records, recommendations


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
