"""Where a result came from: the machine (processor, cores, GPU, software, the yardsticks measured on it)
and the code (commit hash, dirty flag, branch), kept apart as pytest-benchmark keeps ``machine_info`` and
``commit_info``."""

from __future__ import annotations

import socket
import subprocess
from dataclasses import asdict
from pathlib import Path

import onnxruntime as ort

from bench.measure.peaks import best_of, cpu_mhz, measure_yardsticks, theoretical_gops
from trainer.environment import machine_info

REPO = Path(__file__).resolve().parents[2]


def _output(command: list[str], timeout_s: float, cwd: Path | None = None) -> str | None:
    """The command's stripped stdout; None when it is not installed, fails or times out."""
    try:
        out = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def gpu_name() -> str | None:
    out = _output(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], 20)
    return out.splitlines()[0] if out else None


def machine(threads: tuple[int, ...], yardstick_s: float) -> dict:
    """The machine a run measures on, with its yardsticks at each of ``threads`` (bench/measure/peaks.py)."""
    info = machine_info()
    mhz = cpu_mhz()
    info.update(host=socket.gethostname(), gpu=gpu_name(), onnxruntime_providers_available=ort.get_available_providers(),
                cpu_mhz=mhz, theoretical_gops=theoretical_gops(tuple(info["isa"]), info["cores"] or 1, mhz),
                yardsticks=yardsticks(threads, yardstick_s))
    return info


def yardsticks(threads: tuple[int, ...], seconds: float, before: list[dict] | None = None) -> list[dict]:
    """The yardsticks at each of ``threads``, each the best of this measurement and ``before`` (a run measures
    them at its start and again at its end); none at 0 seconds (``--yardstick-s 0``: no row gets a share of peak)."""
    if seconds == 0:
        return before or []
    return best_of(before or [], [asdict(y) for t in dict.fromkeys(threads) for y in measure_yardsticks(t, seconds)])


def commit_info(repo: Path = REPO) -> dict:
    """The code that measured: full hash, whether the work tree had uncommitted changes, and the branch."""
    commit = _output(["git", "rev-parse", "HEAD"], 10, repo)
    if commit is None:
        return {"id": None, "dirty": None, "branch": None}
    status = _output(["git", "status", "--porcelain", "--untracked-files=no"], 10, repo)
    branch = _output(["git", "rev-parse", "--abbrev-ref", "HEAD"], 10, repo)
    return {"id": commit, "dirty": bool(status), "branch": branch}
