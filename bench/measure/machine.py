"""Where a result came from: the machine (processor, cores, GPU, software, the yardsticks measured on it)
and the code (commit hash, dirty flag, branch), kept apart as pytest-benchmark keeps ``machine_info`` and
``commit_info``."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import onnxruntime as ort

from bench.measure.peaks import as_records, best_of, cpu_mhz, measure_yardsticks, theoretical_gops
from trainer.environment import machine_info

REPO = Path(__file__).resolve().parents[2]


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


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
    return best_of(before or [], as_records([y for t in dict.fromkeys(threads) for y in measure_yardsticks(t, seconds)]))


def commit_info(repo: Path = REPO) -> dict:
    """The code that measured: full hash, whether the work tree had uncommitted changes, and the branch."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=repo, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"id": None, "dirty": None, "branch": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"id": commit, "dirty": bool(status), "branch": git("rev-parse", "--abbrev-ref", "HEAD")}
