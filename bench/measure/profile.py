"""Where the time goes: each runtime's own per-operator profile of one case, by operator type, beside each
type's share of the multiply-adds (of the exported graph: :func:`shares` says how they are matched). onnxruntime
gives one event per node run of its optimised graph (fused, quantized and NCHWc nodes); OpenVINO, with
``PERF_COUNT``, real time per executed node. LiteRT's and TF Lite's Python interpreters offer none.

The profiled session is a second one, never the timed one: a profiler's bookkeeping is not in the rows'
times. It runs the same batch a few times after a warm-up, and the shares are of the summed kernel time.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.measure.work import multiply_adds_by_node
from bench.settings import SessionSettings
from exporter.contract import INPUT_NAME

RUNS = 5  # profiled runs of the batch, after one warm-up
# The runtimes' names for a convolution (Conv, QLinearConv, NhwcFusedConv; OpenVINO's Convolution,
# GroupConvolution) and a matrix product (MatMul, FusedGemm, QGemm, MatMulIntegerToFloat; FullyConnected...).
FAMILIES = {"conv": re.compile(r"Conv$|Convolution$|^ConvInteger$"), "matmul": re.compile(r"MatMul|Gemm|FullyConnected")}


@dataclass(frozen=True)
class OperatorShare:
    op_type: str
    time_ms: float  # per run of the batch, summed over the type's nodes
    time_share: float  # of the summed kernel time, 0..1
    mac_share: float  # of the multiply-adds, 0..1
    nodes: int


def onnxruntime_profile(path: Path, batch: np.ndarray, settings: SessionSettings) -> list[OperatorShare]:
    """onnxruntime's profile of ``batch`` on its CPU provider with the bench's session settings."""
    options = settings.options()
    with tempfile.TemporaryDirectory(prefix="fmnist-profile-") as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        for _ in range(1 + RUNS):
            session.run(None, {INPUT_NAME: batch})
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    kernels = [(e["args"]["op_name"], float(e["dur"]) / 1000) for e in events
               if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time") and "op_name" in e.get("args", {})]
    per_run = len(kernels) // (1 + RUNS)
    return shares(kernels[per_run:], RUNS, multiply_adds_by_node(path))  # the first run is the warm-up


def openvino_profile(request, batch: np.ndarray, path: Path) -> list[OperatorShare]:
    """OpenVINO's profile of ``batch`` on an infer request compiled with ``PERF_COUNT``."""
    request.infer({0: batch})
    kernels = []
    for _ in range(RUNS):
        request.infer({0: batch})
        kernels += [(info.node_type, info.real_time.total_seconds() * 1000) for info in request.get_profiling_info()
                    if info.status.name == "EXECUTED"]
    return shares(kernels, RUNS, multiply_adds_by_node(path))


def shares(kernels: list[tuple[str, float]], runs: int, graph_macs: list[tuple[str, int]]) -> list[OperatorShare]:
    """Time and multiply-adds by op type, from the kernels ``runs`` runs executed, in order: (op type, ms).

    A runtime's optimised graph keeps each convolution and matrix product of the exported graph as one node
    (fused with its activation, quantized, or in a blocked layout), in the same order: when a run's nodes of a
    family are as many as the graph's, each gets its own multiply-adds; otherwise (a runtime fused two into
    one) the family's multiply-adds are spread over its nodes by their time, and the shares say less."""
    time_ms: dict[str, float] = defaultdict(float)
    for op, ms in kernels:
        time_ms[op] += ms / runs
    per_run = kernels[: len(kernels) // runs] if runs else []
    macs: dict[str, float] = defaultdict(float)
    for family in FAMILIES:
        graph = [m for f, m in graph_macs if f == family]
        ran = [(op, ms) for op, ms in per_run if _family(op) == family]
        total_ms = sum(ms for _, ms in ran) or 1.0
        spread = graph if len(ran) == len(graph) else [sum(graph) * ms / total_ms for _, ms in ran]
        for (op, _), m in zip(ran, spread):
            macs[op] += m
    nodes = Counter(op for op, _ in kernels)
    total_time, total_macs = sum(time_ms.values()), sum(macs.values())
    found = [OperatorShare(op, t, t / total_time if total_time else 0.0, macs[op] / total_macs if total_macs else 0.0,
                           round(nodes[op] / runs)) for op, t in time_ms.items()]
    return sorted(found, key=lambda s: -s.time_ms)


def as_records(shares: list[OperatorShare], top: int = 8) -> list[dict]:
    """The ``top`` op types by time, the rest summed as "other": what a results file keeps."""
    kept, rest = shares[:top], shares[top:]
    if rest:
        kept = [*kept, OperatorShare("other", sum(s.time_ms for s in rest), sum(s.time_share for s in rest),
                                     sum(s.mac_share for s in rest), sum(s.nodes for s in rest))]
    return [asdict(s) for s in kept]


def _family(op_type: str) -> str | None:
    return next((family for family, pattern in FAMILIES.items() if pattern.search(op_type)), None)
