"""What machine and software a result came from. Imports no TensorFlow."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "tf2onnx", "onnx", "onnxruntime", "onnxruntime-gpu")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The vector instructions that decide which kernels the runtimes pick (int8: VNNI or not; bf16: native or
# emulated; AMX tiles), as /proc/cpuinfo names them.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
             "avx512_fp16", "asimd", "asimddp", "bf16", "i8mm", "sve")


def cpu_flags() -> tuple[str, ...]:
    """The ISA_FLAGS this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    found = set(line.split(":", 1)[-1].split())
    return tuple(flag for flag in ISA_FLAGS if flag in found)


def cpu_class(flags: tuple[str, ...] | None = None) -> str:
    """The CPU class a figure depends on, in a few words: ``AVX-512 VNNI BF16 AMX``, ``AVX2 (no AVX-512, no VNNI)``."""
    flags = cpu_flags() if flags is None else flags
    if "avx512f" in flags:
        extras = [name for name, flag in (("VNNI", "avx512_vnni"), ("BF16", "avx512_bf16"), ("AMX", "amx_tile"))
                  if flag in flags]
        return " ".join(["AVX-512", *extras])
    if "avx2" in flags:
        return "AVX2 VNNI (no AVX-512)" if "avx_vnni" in flags else "AVX2 (no AVX-512, no VNNI)"
    if "asimd" in flags:
        return " ".join(["Arm NEON", *[name for name, flag in (("dot product", "asimddp"), ("I8MM", "i8mm"),
                                                             ("BF16", "bf16"), ("SVE", "sve")) if flag in flags]])
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
    return {
        "cpu": cpu_model(),
        "cpu_class": cpu_class(),
        "isa": list(cpu_flags()),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "versions": package_versions(),
    }


def describe_machine(machine: dict) -> str:
    """A recorded machine in words, its CPU class beside the model: ``Intel Xeon (AVX-512 VNNI BF16 AMX), 2 cores``
    (records written before the class was kept give the model and cores only)."""
    cpu_class = f" ({machine['cpu_class']})" if machine.get("cpu_class") else ""
    gpu = f", {machine['gpu']}" if machine.get("gpu") else ""
    return f"{machine.get('cpu')}{cpu_class}, {machine.get('cores')} cores{gpu}"
