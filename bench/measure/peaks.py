"""What this machine can do, per arithmetic: the yardsticks a row's achieved GFLOP/s is a share of.

A share of peak only means something against a peak of the same arithmetic, reached by the kernels the
rows run on. So each yardstick is the fastest large matrix product (2048 x 2048 x 2048, the weight a
constant the runtime may pre-pack, as it does a model's weights) that an installed runtime reaches here:

- ``fp32``: onnxruntime's ``MatMul`` (MLAS) and OpenVINO's at ``INFERENCE_PRECISION_HINT=f32`` (oneDNN);
- ``int8``: onnxruntime's QDQ ``MatMul`` (fused to its u8 x s8 integer GEMM: VNNI or AMX where the CPU has
  them) and OpenVINO's (low-precision transformations to its int8 GEMM);
- ``bf16``: OpenVINO's at ``INFERENCE_PRECISION_HINT=bf16``, only on a CPU with native bf16 (AVX-512 BF16 or
  AMX); onnxruntime's CPU provider has no bf16 GEMM;
- ``fp16``: onnxruntime's ``MatMul`` on float16, where its CPU provider has the kernel.

numpy is never a yardstick: its BLAS, and the kernel its environment selects (``OPENBLAS_CORETYPE``), are
not what any row runs. Beside them, :func:`theoretical_gops` gives the ISA's bound from the CPU's flags,
logical CPUs and clock, an upper bound stated with its assumptions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from trainer.environment import cpu_flags

SIZE = 2048  # m = n = k: large enough that packing and threading costs vanish, small enough for ~0.1 s a product
ARITHMETICS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class Yardstick:
    arithmetic: str  # fp32 | fp16 | bf16 | int8
    runtime: str  # onnxruntime | openvino
    gops: float  # giga-operations per second, a multiply-add counted as 2
    threads: int  # the runtime's intra-op threads (0: its default, one per core)


def measure_yardsticks(threads: int = 0, repeats: int = 5) -> list[Yardstick]:
    """Every yardstick the installed runtimes give on this machine, at ``threads``."""
    found = []
    for arithmetic, runtime, build in _candidates():
        try:
            run = build(threads)
        except Exception:  # noqa: BLE001 - a runtime without that kernel (fp16 on x86, bf16 without hardware)
            continue
        run()  # the first call packs the weight and sizes the buffers
        seconds = min(_seconds(run) for _ in range(repeats))
        found.append(Yardstick(arithmetic, runtime, 2 * SIZE**3 / seconds / 1e9, threads))
    return found


def peak_gops(yardsticks: list[dict], arithmetic: str, threads: int = 0) -> float | None:
    """The fastest recorded yardstick of ``arithmetic`` at ``threads`` (a results file's ``yardsticks``)."""
    matching = [y["gops"] for y in yardsticks if y["arithmetic"] == arithmetic and y["threads"] == threads]
    return max(matching) if matching else None


def as_records(yardsticks: list[Yardstick]) -> list[dict]:
    return [asdict(y) for y in yardsticks]


def describe_yardsticks(machine: dict) -> str:
    """The yardsticks a results file recorded, in words: ``fp32 207 GFLOP/s (onnxruntime), int8 2080 GOP/s ...``."""
    if "yardsticks" not in machine:  # results written before: numpy's SGEMM and onnxruntime's integer GEMM
        return (f"large SGEMM {machine.get('sgemm_gflops', float('nan')):.0f} GFLOP/s"
                + (f", large int8 GEMM {machine['int8_gemm_gops']:.0f} GOP/s" if machine.get("int8_gemm_gops") else ""))
    parts = []
    for threads in sorted({y["threads"] for y in machine["yardsticks"]}):
        best: dict[str, dict] = {}
        for y in machine["yardsticks"]:
            if y["threads"] == threads and y["gops"] > best.get(y["arithmetic"], {}).get("gops", 0):
                best[y["arithmetic"]] = y
        measured = ", ".join(f"{kind} {y['gops']:.0f} {'GOP/s' if kind == 'int8' else 'GFLOP/s'} ({y['runtime']})"
                             for kind, y in sorted(best.items()))
        parts.append((f"at {threads} thread{'s' if threads > 1 else ''}: " if threads else "") + measured)
    measured = "; ".join(parts) or "none measured"
    bound = machine.get("theoretical_gops") or {}
    bound_text = (f"; the ISA's bound at {machine.get('cpu_mhz'):.0f} MHz, every logical CPU a core with two FMA ports: "
                  + ", ".join(f"{kind} {gops:.0f}" for kind, gops in sorted(bound.items())) if bound else "")
    return f"yardsticks (the fastest large GEMM an installed runtime reaches here): {measured}{bound_text}"


def theoretical_gops(flags: tuple[str, ...], logical_cpus: int, mhz: float | None) -> dict[str, float]:
    """The ISA's bound per arithmetic, in GOP/s: logical CPUs x clock x operations per cycle, assuming every
    logical CPU is a core of its own with two vector FMA ports (and one AMX unit), at the clock /proc/cpuinfo
    reports. Virtual machines may share cores between logical CPUs and run at another clock: an upper bound."""
    if not mhz:
        return {}
    per_cycle: dict[str, float] = {}
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 0
    if lanes:
        per_cycle["fp32"] = 2 * 2 * lanes  # two FMA ports, a multiply-add is 2 operations
        # u8 x s8: VNNI's vpdpbusd does 4 multiply-adds per 32-bit lane; without it vpmaddubsw + vpmaddwd, about half
        per_cycle["int8"] = 2 * 2 * lanes * (4 if {"avx512_vnni", "avx_vnni"} & set(flags) else 2)
    if "avx512_bf16" in flags:
        per_cycle["bf16"] = 2 * 2 * lanes * 2  # vdpbf16ps: 2 multiply-adds per 32-bit lane
    if "amx_bf16" in flags:
        per_cycle["bf16"] = 2 * 512  # one AMX unit: 512 bf16 multiply-adds a cycle
    if "amx_int8" in flags:
        per_cycle["int8"] = 2 * 1024  # 1,024 int8 multiply-adds a cycle
    return {arithmetic: ops * logical_cpus * mhz / 1000 for arithmetic, ops in per_cycle.items()}


def cpu_mhz() -> float | None:
    """The clock /proc/cpuinfo reports (the first CPU's), in MHz; None where it says none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def _candidates() -> list[tuple[str, str, Callable[[int], Callable[[], object]]]]:
    return [("fp32", "onnxruntime", lambda t: _ort(_matmul(TensorProto.FLOAT), t)),
            ("fp16", "onnxruntime", lambda t: _ort(_matmul(TensorProto.FLOAT16), t, TensorProto.FLOAT16)),
            ("int8", "onnxruntime", lambda t: _ort(_qdq_matmul(), t)),
            ("fp32", "openvino", lambda t: _openvino(_matmul(TensorProto.FLOAT), "f32", t)),
            ("bf16", "openvino", lambda t: _openvino(_matmul(TensorProto.FLOAT), "bf16", t)),
            ("int8", "openvino", lambda t: _openvino(_qdq_matmul(), "f32", t))]


def _input(elem: int = TensorProto.FLOAT) -> np.ndarray:
    dtype = np.float16 if elem == TensorProto.FLOAT16 else np.float32
    return np.random.default_rng(0).random((SIZE, SIZE)).astype(dtype)


def _matmul(elem: int) -> bytes:
    weight = _input(elem)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", elem, [SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", elem, [SIZE, SIZE])],
                              initializer=[numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _qdq_matmul() -> bytes:
    """A float product through u8 activations and s8 weights, as the int8 exports write their layers (QDQ)."""
    weight = np.random.default_rng(1).integers(-127, 128, (SIZE, SIZE), dtype=np.int8)
    nodes = [helper.make_node("QuantizeLinear", ["a", "a_scale", "a_zero"], ["a_q"]),
             helper.make_node("DequantizeLinear", ["a_q", "a_scale", "a_zero"], ["a_dq"]),
             helper.make_node("DequantizeLinear", ["w", "w_scale"], ["w_dq"]),
             helper.make_node("MatMul", ["a_dq", "w_dq"], ["y"])]
    constants = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.float32(1 / 127), "w_scale"),
                 numpy_helper.from_array(np.float32(1 / 255), "a_scale"), numpy_helper.from_array(np.uint8(0), "a_zero")]
    graph = helper.make_graph(nodes, "int8_gemm", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [SIZE, SIZE])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [SIZE, SIZE])], initializer=constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _ort(model: bytes, threads: int, elem: int = TensorProto.FLOAT) -> Callable[[], object]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
    feed = {"a": _input(elem)}
    return lambda: session.run(None, feed)


def _openvino(model: bytes, precision: str, threads: int) -> Callable[[], object]:
    import openvino as ov  # noqa: PLC0415 - optional: a machine without it has onnxruntime's yardsticks

    if precision == "bf16" and not _native_bf16():
        raise RuntimeError("no native bf16 here: OpenVINO would run f32 and call it bf16")
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    compiled = core.compile_model(core.read_model(model, b""), "CPU", config)
    if compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() != precision:
        raise RuntimeError(f"OpenVINO did not take {precision}")
    request = compiled.create_infer_request()
    feed = {0: _input()}
    return lambda: request.infer(feed)


def _native_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def _seconds(call: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0
