"""Every bench default, once: what both front doors (``fmnist-bench run`` and ``pytest bench``) measure with.

The CLI and the pytest options take their defaults and help texts from these dataclasses (and check the values
given, bench/cli.py), and MLPerf LoadGen's ``TestSettings`` for every scenario it drives is built here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

import onnxruntime as ort

WHOLE_SPLIT = 0  # batch size meaning "the whole test split as one batch"
# The scenarios MLPerf LoadGen drives (bench/measure/loadgen.py), each with LoadGen's name; "accuracy" is its
# AccuracyOnly mode, run as Offline (every sample once, in the runtime's batches).
LOADGEN_SCENARIOS = {"single-stream": "SingleStream", "multi-stream": "MultiStream", "server": "Server",
                     "offline": "Offline", "accuracy": "Offline"}
LOADGEN_OPERATIONS = tuple(LOADGEN_SCENARIOS)
OPERATIONS = ("predict", "evaluate", *LOADGEN_OPERATIONS)  # the first two: timed rounds of a whole-split pass
# --mlperf-rules takes MLPerf's rules from LoadGen's own copy of mlperf.conf, for the MLPerf benchmark closest to
# ours (image classification): 600 s per scenario, MultiStream's 662 queries, Offline's 24,576 samples.
MLPERF_BENCHMARK = "resnet50"
# The fewest queries with which LoadGen's early stopping can call a run VALID, as LoadGen states them: MultiStream's
# p99 needs 662 (mlperf.conf's MultiStream min_query_count); Server's p99 at 99% confidence needs 459 with no query
# over the bound, so a trial gets 1,024 (three may then be over) or it could never be VALID near the knee.
MULTI_STREAM_MIN_QUERIES = 662
SERVER_MIN_QUERIES = 1024
MAX_QUERIES = 10_000_000
# LoadGen's own cost is measured with this many no-op queries (a few µs each: a fraction of a second in all).
NOOP_QUERIES = 5000
GRAPH_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
CUDNN_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")  # cuDNN's convolution algorithm search (CUDA)
ON_OFF = ("on", "off")


class SettingsError(ValueError):
    """A setting out of range; the message names the option."""


@dataclass(frozen=True)
class SessionSettings:
    """The onnxruntime knobs the performance section tried; defaults are what measured best here."""

    intra_op_threads: int = 0  # 0: onnxruntime's default (one per physical core)
    graph_optimization: str = "all"  # a key of GRAPH_OPTIMIZATION
    # CUDA only: cuDNN's convolution algorithm search on the first run of each shape (recorded in the report).
    cudnn_conv_algo_search: str = "HEURISTIC"

    def options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.graph_optimization_level = GRAPH_OPTIMIZATION[self.graph_optimization]
        return options


@dataclass(frozen=True)
class LoadGenSettings:
    """How MLPerf LoadGen runs each scenario: every LoadGen test lasts at least ``min_queries`` queries and
    ``min_duration_s`` seconds, after ``warmup_queries`` untimed ones that also tell LoadGen what to expect.
    ``mlperf_rules``: MLPerf's own durations and counts instead (mlperf.conf for MLPERF_BENCHMARK: ten minutes
    per test).

    - multi-stream: ``samples_per_query`` images per query (MLPerf's edge setting: 8);
    - server: Poisson arrivals; the highest rate whose p99 stays within ``latency_bound_ms`` (LoadGen: VALID),
      searched for in at most ``server_search_s`` seconds per case (bench/measure/server.py);
    - ``trace``: LoadGen's trace, from which each query's latency is read (the figures' spread and the noise
      ``compare`` judges by); off with ``mlperf_rules``, as submissions run, leaving LoadGen's percentiles only.
    """

    warmup_queries: int = 20
    min_queries: int = 200
    min_duration_s: float = 2.0
    samples_per_query: int = 8
    # LoadGen's default server bound (mlperf.conf: 10 ms), tens of times the onnxruntime rows' single-stream
    # latency; Keras' eager call may miss it on a slow CPU, and its row says so.
    latency_bound_ms: float = 10.0
    server_search_s: float = 30.0
    mlperf_rules: bool = False

    @property
    def trace(self) -> bool:
        return not self.mlperf_rules

    def min_queries_for(self, operation: str) -> int:
        """``min_queries``, raised to what LoadGen's early stopping needs to call a MultiStream or Server run VALID."""
        floor = {"multi-stream": MULTI_STREAM_MIN_QUERIES, "server": SERVER_MIN_QUERIES}.get(operation, 1)
        return max(self.min_queries, floor)

    def test_settings(self, lg: ModuleType, operation: str, *, samples: int, expected_latency_s: float | None = None,
                      expected_qps: float | None = None, target_qps: float | None = None):
        """LoadGen's ``TestSettings`` for one scenario of one case. ``lg``: the mlperf_loadgen module; ``samples``:
        the test split's size (Offline and accuracy issue every one of them at least once); the expectations come
        from the warm-up (LoadGen plans how many queries fill the minimum duration from them)."""
        scenario = LOADGEN_SCENARIOS[operation]
        settings = lg.TestSettings()
        settings.scenario = getattr(lg.TestScenario, scenario)
        settings.mode = lg.TestMode.AccuracyOnly if operation == "accuracy" else lg.TestMode.PerformanceOnly
        if self.mlperf_rules:
            # LoadGen's own mlperf.conf (compiled into it), not a copy of ours: durations, counts, seeds, percentiles.
            settings.FromConfig("", MLPERF_BENCHMARK, scenario, 0)
        else:
            settings.min_duration_ms = round(self.min_duration_s * 1000)
            settings.min_query_count = samples if scenario == "Offline" else self.min_queries_for(operation)
        settings.multi_stream_samples_per_query = self.samples_per_query
        if expected_latency_s:
            settings.single_stream_expected_latency_ns = max(1, round(expected_latency_s * 1e9))
            settings.multi_stream_expected_latency_ns = max(1, round(expected_latency_s * 1e9))
        if expected_qps:
            settings.offline_expected_qps = expected_qps
        if target_qps:
            settings.server_target_qps = target_qps
        settings.server_target_latency_ns = round(self.latency_bound_ms * 1e6)
        return settings

    def log_settings(self, lg: ModuleType, outdir: Path):
        """Where LoadGen writes its summary, detail (and trace) logs: ``outdir``."""
        logs = lg.LogSettings()
        logs.log_output.outdir = str(outdir)
        logs.log_output.copy_summary_to_stdout = False
        logs.enable_trace = self.trace
        return logs


@dataclass(frozen=True)
class RunSettings:
    """What one bench run measures; both front doors build one of these and hand it to ``bench.measure``."""

    batch_sizes: tuple[int, ...] = (128, WHOLE_SPLIT)
    # Each case at each of these intra-op thread counts, a row per count (0: the runtime's default).
    threads: tuple[int, ...] = (0,)
    rounds: int = 5  # timed rounds per batch operation; every one is kept in the report
    warmup_rounds: int = 1
    operations: tuple[str, ...] = ("predict", "evaluate", "single-stream")
    loadgen: LoadGenSettings = field(default_factory=LoadGenSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    # Each case's peak resident memory, from a fresh process of its own (bench/measure/memory.py); off saves a
    # process start per case.
    memory: str = "on"
    # The runtime's own per-operator profile of the first batch size's predict, from a second, profiling
    # instance (bench/measure/profile.py); off saves it.
    profile: str = "on"
    # The peers' own benchmark tools on the same files and shapes, beside their rows (bench/measure/tools.py).
    tools: str = "on"
    # Seconds of calls per yardstick candidate (bench/measure/peaks.py), at the run's start and at its end; 0: none.
    yardstick_s: float = 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "batch_sizes": [b or "whole split" for b in self.batch_sizes]}
