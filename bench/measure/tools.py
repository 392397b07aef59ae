"""The peers' own benchmark tools, run on the same files and shapes as our rows: a cross-check no other
toolkit makes of itself.

- OpenVINO's ``benchmark_app``: the same ``.onnx`` file, batch, performance hint and inference precision,
  synchronous requests (one at a time, as our calls), for a fixed time; it times ``infer()`` in its own C++ loop.
- LiteRT's ``litert-benchmark``: the same ``.tflite`` conversion and thread count, batch 1 (it cannot resize the
  input), through LiteRT's CompiledModel API.

Each figure is what the tool printed, kept beside our row with its command (docs/measurement.md explains what
each timer includes); a tool that is not installed, or fails, is a reason, never a number.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from exporter.contract import shown

TIMEOUT_S = 300


@dataclass(frozen=True)
class ToolFigures:
    tool: str  # benchmark_app | litert-benchmark
    batch: int
    median_ms: float  # per call of ``batch`` images
    mean_ms: float | None
    min_ms: float | None
    throughput_ips: float | None  # images per second, as the tool computed it
    command: str

    def to_dict(self) -> dict:
        return asdict(self)


class ToolUnavailable(RuntimeError):
    """The tool is not installed here, or failed; the message says which and why."""


def benchmark_app(onnx_file: Path, batch: int, hint: str, precision: str, threads: int, seconds: float) -> ToolFigures:
    """OpenVINO's benchmark_app on ``onnx_file`` at ``batch``, synchronous, for ``seconds``."""
    command = [_tool("benchmark_app", "openvino"), "-m", str(onnx_file), "-d", "CPU", "-hint", hint.lower(), "-api", "sync",
               "-shape", f"[{batch},28,28,1]", "-t", f"{max(1, round(seconds))}"]
    if precision != "default":
        command += ["-infer_precision", precision]
    if threads:
        command += ["-nthreads", str(threads)]
    out = _run(command)

    def ms(label: str) -> float | None:
        found = re.search(rf"{label}:\s+([\d.]+) (ms|us)", out)
        return float(found[1]) / (1000 if found[2] == "us" else 1) if found else None

    median_ms = ms("Median")
    if median_ms is None:
        raise ToolUnavailable(f"benchmark_app printed no median latency ({_last_line(out)})")
    throughput = re.search(r"Throughput:\s+([\d.]+) FPS", out)
    return ToolFigures("benchmark_app", batch, median_ms, ms("Average"), ms("Min"),
                       float(throughput[1]) if throughput else None, _shown(command))


def litert_benchmark(tflite_file: Path, threads: int, runs: int) -> ToolFigures:
    """LiteRT's litert-benchmark on ``tflite_file`` (batch 1), ``runs`` runs after 20 warm-up ones."""
    with tempfile.TemporaryDirectory(prefix="fmnist-litert-benchmark-") as folder:
        result = Path(folder) / "result.json"
        command = [_tool("litert-benchmark", "ai-edge-litert"), "--model", str(tflite_file), "--num_runs", str(runs),
                   "--warmup_runs", "20", "--num_threads", str(threads), "--result_json", str(result)]
        out = _run(command)
        try:
            latency = json.loads(result.read_text())["latency"]
        except (OSError, ValueError, KeyError):
            raise ToolUnavailable(f"litert-benchmark wrote no result ({_last_line(out)})") from None
    return ToolFigures("litert-benchmark", 1, float(latency["median_ms"]), float(latency["avg_ms"]),
                       float(latency["min_ms"]), 1000 / float(latency["avg_ms"]), _shown(command[:-2]))


def _tool(name: str, package: str) -> str:
    """The tool beside this interpreter (the venv's bin), else on the PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise ToolUnavailable(f"{name} is not installed (it comes with {package})")
    return found


def _run(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolUnavailable(f"{Path(command[0]).name} did not finish ({type(exc).__name__})") from None
    if done.returncode != 0:
        raise ToolUnavailable(f"{Path(command[0]).name} failed with exit status {done.returncode} "
                              f"({_last_line(done.stderr or done.stdout)})")
    return done.stdout + done.stderr


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def _shown(command: list[str]) -> str:
    """The command as a reader would type it: the tool by name, an exported file under the ``onnx/`` folder."""
    return " ".join([Path(command[0]).name, *(str(shown(Path(a))) if a.endswith(".onnx") else a for a in command[1:])])
