"""What this machine can do, per arithmetic: the yardsticks a row's achieved GFLOP/s is a share of.

A share of peak only means something against a peak of the same arithmetic, reached by the kernels the rows run
on. So each yardstick is the fastest large matrix product (the weight a constant the runtime may pre-pack, as it
does a model's weights) or large 3x3 convolution (a runtime's convolution kernels can outrun its matrix product,
as OpenVINO's AMX bf16 ones did) an installed runtime reaches here: ``fp32`` on onnxruntime (MLAS) and OpenVINO
(oneDNN); ``int8`` as a QDQ graph each fuses to its integer kernels (VNNI or AMX where the CPU has them); ``bf16``
on OpenVINO only, and only with native bf16 (onnxruntime's CPU provider has no bf16 GEMM). The fp16 files run on
onnxruntime's CPU provider as float32: they are set against fp32. numpy is never a yardstick: its BLAS is not
what any row runs. :func:`theoretical_gops` gives the ISA's bound beside them, with its assumptions.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from trainer.environment import cpu_flags

SIZE = 2048  # m = n = k: large enough that packing and threading costs vanish, small enough for ~0.1 s a product
CONV_BATCH, CONV_CHANNELS, CONV_SIDE = 32, 128, 28  # a 3x3 convolution of 3.7 G multiply-adds, 'same' padding
# op -> (input shape, weight shape, attributes, multiply-adds of a call)
PROBLEMS = {"MatMul": ((SIZE, SIZE), (SIZE, SIZE), {}, SIZE**3),
            "Conv": ((CONV_BATCH, CONV_CHANNELS, CONV_SIDE, CONV_SIDE), (CONV_CHANNELS, CONV_CHANNELS, 3, 3),
                     {"pads": [1, 1, 1, 1]}, CONV_BATCH * CONV_SIDE**2 * CONV_CHANNELS**2 * 9)}
# (arithmetic, runtime, quantized graph, OpenVINO's inference precision; None: onnxruntime)
CANDIDATES = (("fp32", "onnxruntime", False, None), ("int8", "onnxruntime", True, None),
              ("fp32", "openvino", False, "f32"), ("bf16", "openvino", False, "bf16"),
              ("int8", "openvino", True, "f32"))


@dataclass(frozen=True)
class Yardstick:
    arithmetic: str  # fp32 | fp16 | bf16 | int8
    runtime: str  # onnxruntime | openvino
    gops: float  # giga-operations per second, a multiply-add counted as 2
    threads: int  # the runtime's intra-op threads (0: its default, one per core)


def measure_yardsticks(threads: int = 0, seconds: float = 1.0, repeats: int = 5) -> list[Yardstick]:
    """Every candidate the installed runtimes give on this machine, at ``threads`` (an arithmetic and runtime may
    come twice, as a product and as a convolution: :func:`best_of` keeps the faster): each candidate's fastest
    call of at least ``repeats`` and ``seconds`` of calls. A peak is the best a machine does, and on a shared
    virtual machine the same product varies by 2x from call to call (AMX's most of all): a few calls can miss it."""
    found = []
    for op, (_, _, _, multiply_adds) in PROBLEMS.items():
        for arithmetic, runtime, quantized, precision in CANDIDATES:
            try:
                run = _build(op, quantized, precision, threads)
            except Exception:  # noqa: BLE001 - a runtime without that kernel (bf16 without the hardware)
                continue
            run()  # the first call packs the weight and sizes the buffers
            times, started = [], time.perf_counter()
            while len(times) < repeats or time.perf_counter() - started < seconds:
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            found.append(Yardstick(arithmetic, runtime, 2 * multiply_adds / min(times) / 1e9, threads))
    return found


def peak_gops(yardsticks: list[dict], arithmetic: str, threads: int = 0) -> float | None:
    """The fastest recorded yardstick of ``arithmetic`` at ``threads`` (a results file's ``yardsticks``)."""
    matching = [y["gops"] for y in yardsticks if y["arithmetic"] == arithmetic and y["threads"] == threads]
    return max(matching) if matching else None


def best_of(*measured: list[dict]) -> list[dict]:
    """Each yardstick's best over several measurements (``asdict`` records), in first-seen order: of a product and
    a convolution of the same arithmetic and runtime, and of a run's two measurements.

    A run measures them at its start and again at its end: on a shared VM the vector units run at one speed
    for minutes and then at another (AMX's by 2x), and a peak taken only before the cases can sit below a row
    measured later."""
    best: dict[tuple, dict] = {}
    for record in (r for records in measured for r in records):
        key = (record["arithmetic"], record["runtime"], record["threads"])
        if key not in best or record["gops"] > best[key]["gops"]:
            best[key] = record
    return list(best.values())


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
    return f"yardsticks (the fastest large GEMM or 3x3 convolution an installed runtime reaches here): {measured}{bound_text}"


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


def _build(op: str, quantized: bool, precision: str | None, threads: int) -> Callable[[], object]:
    """One call of ``y = op(a, w)`` on onnxruntime (``precision`` None) or OpenVINO at ``precision``; ``quantized``:
    through u8 activations and s8 weights, as the int8 exports write their layers (QDQ), which each runtime fuses
    into its integer kernels."""
    in_shape, weight_shape, attributes, _ = PROBLEMS[op]
    inputs = np.random.default_rng(0).random(in_shape, dtype=np.float32)
    rng = np.random.default_rng(1)
    weight = (rng.integers(-127, 128, weight_shape, dtype=np.int8) if quantized
              else rng.random(weight_shape, dtype=np.float32))
    nodes = [helper.make_node(op, ["a_dq" if quantized else "a", "w_dq" if quantized else "w"], ["y"], **attributes)]
    constants = [numpy_helper.from_array(weight, "w")]
    if quantized:
        nodes = [helper.make_node("QuantizeLinear", ["a", "a_scale", "a_zero"], ["a_q"]),
                 helper.make_node("DequantizeLinear", ["a_q", "a_scale", "a_zero"], ["a_dq"]),
                 helper.make_node("DequantizeLinear", ["w", "w_scale"], ["w_dq"]), *nodes]
        constants += [numpy_helper.from_array(np.float32(1 / 127), "w_scale"),
                      numpy_helper.from_array(np.float32(1 / 255), "a_scale"), numpy_helper.from_array(np.uint8(0), "a_zero")]
    graph = helper.make_graph(nodes, op.lower(), [helper.make_tensor_value_info("a", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    if precision is None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        return functools.partial(session.run, None, {"a": inputs})
    return _openvino(model, precision, threads, inputs)


def _openvino(model: bytes, precision: str, threads: int, inputs: np.ndarray) -> Callable[[], object]:
    import openvino as ov  # noqa: PLC0415 - optional: a machine without it has onnxruntime's yardsticks

    if precision == "bf16" and not {"avx512_bf16", "amx_bf16"} & set(cpu_flags()):
        raise RuntimeError("no native bf16 here: OpenVINO would run f32 and call it bf16")
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    compiled = core.compile_model(core.read_model(model, b""), "CPU", config)
    if compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() != precision:
        raise RuntimeError(f"OpenVINO did not take {precision}")
    return functools.partial(compiled.create_infer_request().infer, {0: inputs})
