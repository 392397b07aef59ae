"""The pytest-benchmark suite: one benchmark per model x variant x runtime x operation x batch.

    pytest bench --benchmark-only
    pytest bench --benchmark-only --fmnist-models model4 --benchmark-save=baseline
    fmnist-bench compare .benchmarks/.../0001_baseline.json .benchmarks/.../0002_new.json --fail-on-regression 10%

The timing is pytest-benchmark's (``benchmark.pedantic``), the rules and the record are the toolkit's
measurement core (bench/measure/core.py), the same as ``fmnist-bench run``'s: the whole record, every
round included, goes in each benchmark's ``extra_info`` and so into pytest-benchmark's saves. A scenario
MLPerf LoadGen drives (single-stream, multi-stream, server, offline, accuracy) is one pytest-benchmark
round, LoadGen's whole test; its record holds LoadGen's own per-query figures, as ``fmnist-bench run``'s.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bench.runtimes import Case

from bench.measure.cases import HeldOutSplit, load_test_split
from bench.conftest import BenchParam, selected
from bench.measure.core import case_memory_mb, measure
from bench.measure.loadgen import SCENARIO_SKIPPED, Engine, LoadGenUnavailable
from bench.runtimes import make_sut
from bench.runtimes.base import ProviderUnavailable
from bench.settings import LOADGEN_OPERATIONS


@pytest.fixture(scope="session")
def chosen(pytestconfig: pytest.Config):
    return selected(pytestconfig)


@pytest.fixture(scope="session")
def splits(chosen):
    cache: dict[str, HeldOutSplit] = {}
    return lambda model: cache.get(model) or cache.setdefault(model, load_test_split(chosen.artifacts, model, chosen.data))


@pytest.fixture(scope="session")
def suts(chosen):
    """One session per case for the whole run; a runtime that cannot run is remembered as its reason."""
    cache: dict[Case, object] = {}

    def get(case: Case):
        if case not in cache:
            try:
                cache[case] = make_sut(case, chosen.artifacts, chosen.settings.session)
            except ProviderUnavailable as exc:
                cache[case] = str(exc)
        if isinstance(cache[case], str):
            pytest.skip(cache[case])
        return cache[case]

    return get


@pytest.fixture(scope="session")
def loadgen(chosen):
    """The session's LoadGen, made at its first scenario (its own cost measured then, once), its logs in
    ``<report dir>/pytest-<UTC time>.loadgen/``; where LoadGen is not installed, the reason its scenarios skip."""
    made: list[Engine | str] = []

    def get() -> Engine:
        if not made:
            folder = Path(chosen.report_dir) if chosen.report_dir else chosen.artifacts.reports_dir
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            try:
                made.append(Engine(chosen.settings.loadgen, folder / f"pytest-{stamp}.loadgen"))
            except LoadGenUnavailable as exc:
                made.append(str(exc))
        if isinstance(made[0], str):
            pytest.skip(made[0])
        return made[0]

    return get


@pytest.fixture(scope="session")
def memories(chosen):
    """Each case's own peak resident memory, measured once (bench/measure/memory.py), as ``fmnist-bench run`` does."""
    cache: dict[Case, float | None] = {}
    return lambda case, test_images: cache[case] if case in cache else cache.setdefault(
        case, case_memory_mb(case, chosen.artifacts, chosen.settings, test_images))


def test_latency(benchmark, bench_param: BenchParam, suts, splits, memories, loadgen, chosen):
    case = bench_param.case
    engine = loadgen() if bench_param.operation in LOADGEN_OPERATIONS else None
    sut = suts(case)
    benchmark.group = f"{case.model}-{bench_param.operation}-b{bench_param.batch}"

    def timer(call, rounds: int, warmup: int) -> list[float]:
        benchmark.pedantic(call, rounds=rounds, warmup_rounds=warmup, iterations=1)
        return list(benchmark.stats.stats.data)

    split = splits(case.model)
    try:
        record = measure(sut, case, split, bench_param.operation, bench_param.batch, chosen.settings, timer, engine=engine)
    except SCENARIO_SKIPPED as exc:
        pytest.skip(str(exc))
    record = dataclasses.replace(record, peak_rss_mb=memories(case, len(split.y)))
    benchmark.extra_info.update(record.to_dict())
