"""What machine and software a result came from. Imports no TensorFlow."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu")
# The vector instructions that decide which kernels the runtimes pick (int8: VNNI or not; bf16: native or
# emulated; AMX tiles), as /proc/cpuinfo names them.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
             "avx512_fp16", "asimd", "asimddp", "bf16", "i8mm", "sve")
# The words cpu_class adds after its family's name, for each flag present.
_AVX512_EXTRAS = {"avx512_vnni": "VNNI", "avx512_bf16": "BF16", "amx_tile": "AMX"}
_NEON_EXTRAS = {"asimddp": "dot product", "i8mm": "I8MM", "bf16": "BF16", "sve": "SVE"}


def _cpuinfo(*keys: str) -> str | None:
    """The value of the first line of Linux's /proc/cpuinfo that starts with one of ``keys``; None elsewhere."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[-1].strip() for line in lines if line.startswith(keys)), None)


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> tuple[str, ...]:
    """The ISA_FLAGS this CPU reports (empty where /proc/cpuinfo is not)."""
    found = set((_cpuinfo("flags", "Features") or "").split())
    return tuple(flag for flag in ISA_FLAGS if flag in found)


def cpu_class(flags: tuple[str, ...] | None = None) -> str:
    """The CPU class a figure depends on, in a few words: ``AVX-512 VNNI BF16 AMX``, ``AVX2 (no AVX-512, no VNNI)``."""
    flags = cpu_flags() if flags is None else flags
    if "avx512f" in flags:
        return " ".join(["AVX-512", *(name for flag, name in _AVX512_EXTRAS.items() if flag in flags)])
    if "avx2" in flags:
        return "AVX2 VNNI (no AVX-512)" if "avx_vnni" in flags else "AVX2 (no AVX-512, no VNNI)"
    if "asimd" in flags:
        return " ".join(["Arm NEON", *(name for flag, name in _NEON_EXTRAS.items() if flag in flags)])
    return platform.machine() or "unknown"


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine_info() -> dict[str, object]:
    return {"cpu": cpu_model(), "cpu_class": cpu_class(), "isa": list(cpu_flags()), "cores": os.cpu_count(),
            "platform": platform.platform(), "versions": package_versions()}


def describe_machine(machine: dict) -> str:
    """A recorded machine in words, its CPU class beside the model: ``Intel Xeon (AVX-512 VNNI BF16 AMX), 2 cores``
    (records written before the class was kept give the model and cores only)."""
    cpu_class = f" ({machine['cpu_class']})" if machine.get("cpu_class") else ""
    gpu = f", {machine['gpu']}" if machine.get("gpu") else ""
    return f"{machine.get('cpu')}{cpu_class}, {machine.get('cores')} cores{gpu}"
