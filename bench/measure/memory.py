"""Peak resident memory of one case, measured in a fresh process of its own.

In one bench process resident memory only grows (TensorFlow, OpenVINO and every earlier session's arena stay
mapped, and resetting the high-water mark resets it to the current size), so a case's figure read there was the
run's history (328, 846 ... 1865 MB across Model 4's rows, in the order they ran). Here a child process builds
that one system under test as the timed run does, predicts one batch and reports its own peak (VmHWM): what a
process serving that case alone would hold. Once per case, a process start each (``--memory off`` skips it).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.runtimes import Case
from bench.settings import SessionSettings
from exporter.contract import INPUT_SHAPE
from trainer.artifacts import Artifacts

PROBE_TIMEOUT_S = 600


class MemoryProbeError(RuntimeError):
    """The child process failed; the message is its last error line."""


def case_peak_rss_mb(case: Case, artifacts: Artifacts, session: SessionSettings, batch: int) -> float:
    """The peak resident memory, in MiB, of a fresh process that builds ``case`` and predicts one ``batch``."""
    request = {"model": case.model, "variant": case.variant, "provider": case.provider, "path": str(case.path.resolve()),
               "threads": case.threads,
               "artifacts": str(artifacts.root.resolve()), "session": session.__dict__, "batch": batch}
    result = subprocess.run([sys.executable, "-m", "bench.measure.memory", json.dumps(request)], capture_output=True, text=True,
                            timeout=PROBE_TIMEOUT_S)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        raise MemoryProbeError(f"{case.id}: memory probe failed: {lines[-1][:300]}")
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"])


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MiB: read in the probe process of its own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _probe(request: dict) -> float:
    from bench.runtimes import make_sut  # noqa: PLC0415 - imported in the child, where its memory counts

    case = Case(request["model"], request["variant"], request["provider"], Path(request["path"]), request["threads"])
    sut = make_sut(case, Artifacts(Path(request["artifacts"])), SessionSettings(**request["session"]))
    sut(np.zeros((request["batch"], *INPUT_SHAPE), dtype=np.float32))
    return peak_rss_mb()


if __name__ == "__main__":
    from trainer import quiet  # noqa: PLC0415

    quiet.configure(quiet.verbose_requested([]))
    print(json.dumps({"peak_rss_mb": _probe(json.loads(sys.argv[1]))}))
