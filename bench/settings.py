"""Every bench default, once: what both front doors (``fmnist-bench run`` and ``pytest bench``) measure with.

As MLPerf LoadGen's ``TestSettings``: the scenario parameters live here and nowhere else; the CLI
and the pytest options take their defaults and help texts from these dataclasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import onnxruntime as ort

WHOLE_SPLIT = 0  # batch size meaning "the whole test split as one batch"
OPERATIONS = ("predict", "evaluate", "single-stream")
GRAPH_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
CUDNN_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")  # cuDNN's convolution algorithm search (CUDA)


class SettingsError(ValueError):
    """A setting out of range; the message names the option."""


@dataclass(frozen=True)
class SessionSettings:
    """The onnxruntime knobs the performance section tried; defaults are what measured best here."""

    intra_op_threads: int = 0  # 0: onnxruntime's default (one per physical core)
    graph_optimization: str = "all"  # disable | basic | extended | all
    # CUDA only: cuDNN's convolution algorithm search on the first run of each shape (recorded in the report).
    cudnn_conv_algo_search: str = "HEURISTIC"

    def __post_init__(self) -> None:
        _require(self.intra_op_threads >= 0, "--threads", self.intra_op_threads, "0 (onnxruntime's choice) or more")
        _require(self.graph_optimization in GRAPH_OPTIMIZATION, "--graph-optimization", self.graph_optimization,
                 " | ".join(GRAPH_OPTIMIZATION))
        _require(self.cudnn_conv_algo_search in CUDNN_ALGO_SEARCH, "--cudnn-algo-search", self.cudnn_conv_algo_search,
                 " | ".join(CUDNN_ALGO_SEARCH))

    def options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.graph_optimization_level = GRAPH_OPTIMIZATION[self.graph_optimization]
        return options


@dataclass(frozen=True)
class SingleStreamSettings:
    """One image per query, one query at a time, as LoadGen's SingleStream: at least ``min_queries``
    queries and at least ``min_duration_s`` seconds, after ``warmup_queries`` untimed ones."""

    warmup_queries: int = 20
    min_queries: int = 200
    min_duration_s: float = 2.0
    max_queries: int = 20_000

    def __post_init__(self) -> None:
        _require(self.warmup_queries >= 1, "--warmup-queries", self.warmup_queries, "at least 1 (it plans the run)")
        _require(1 <= self.min_queries <= self.max_queries, "--min-queries", self.min_queries,
                 f"between 1 and {self.max_queries}")
        _require(math.isfinite(self.min_duration_s) and 0 <= self.min_duration_s <= 3600, "--min-duration",
                 self.min_duration_s, "between 0 and 3600 seconds")

    def planned_queries(self, latency_s: float) -> int:
        """How many queries meet both minimums, given a latency estimate from the warm-up queries."""
        by_duration = math.ceil(self.min_duration_s / latency_s) if latency_s > 0 else self.max_queries
        return min(self.max_queries, max(self.min_queries, by_duration))


MEMORY = ("on", "off")
PROFILE = ("on", "off")


@dataclass(frozen=True)
class RunSettings:
    """What one bench run measures; both front doors build one of these and hand it to ``bench.measure``."""

    batch_sizes: tuple[int, ...] = (128, WHOLE_SPLIT)
    # Each case at each of these intra-op thread counts, a row per count (0: the runtime's default).
    threads: tuple[int, ...] = (0,)
    rounds: int = 5  # timed rounds per batch operation; every one is kept in the report
    warmup_rounds: int = 1
    operations: tuple[str, ...] = OPERATIONS
    single_stream: SingleStreamSettings = field(default_factory=SingleStreamSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    # Each case's peak resident memory, from a fresh process of its own (bench/measure/memory.py); off saves a
    # process start per case.
    memory: str = "on"
    # The runtime's own per-operator profile of the first batch size's predict, from a second, profiling
    # instance (bench/measure/profile.py); off saves it.
    profile: str = "on"
    # The peers' own benchmark tools on the same files and shapes, beside their rows (bench/measure/tools.py).
    tools: str = "on"

    def __post_init__(self) -> None:
        _require(self.memory in MEMORY, "--memory", self.memory, " or ".join(MEMORY))
        _require(self.profile in PROFILE, "--profile", self.profile, " or ".join(PROFILE))
        _require(self.tools in PROFILE, "--tools", self.tools, " or ".join(PROFILE))
        _require(1 <= self.rounds <= 1000, "--rounds", self.rounds, "between 1 and 1000")
        _require(0 <= self.warmup_rounds <= 100, "--warmup-rounds", self.warmup_rounds, "between 0 and 100")
        _require(bool(self.batch_sizes) and all(b >= 0 for b in self.batch_sizes), "--batch-sizes", self.batch_sizes,
                 "positive integers or 'all'")
        _require(bool(self.threads) and all(0 <= t <= 1024 for t in self.threads), "--threads", self.threads,
                 "thread counts from 0 (the runtime's default) to 1024")
        _require(bool(self.operations) and set(self.operations) <= set(OPERATIONS), "--operations", self.operations,
                 ",".join(OPERATIONS))

    def to_dict(self) -> dict:
        values = _as_dict(self)
        values["batch_sizes"] = [b or "whole split" for b in self.batch_sizes]
        return values


def _as_dict(obj) -> dict:
    return {f.name: _as_dict(v) if hasattr((v := getattr(obj, f.name)), "__dataclass_fields__") else
            (list(v) if isinstance(v, tuple) else v) for f in fields(obj)}


def _require(ok: bool, option: str, value: object, expected: str) -> None:
    if not ok:
        raise SettingsError(f"{option} {value!r}: expected {expected}")
