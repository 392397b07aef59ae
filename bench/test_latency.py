"""The pytest-benchmark suite: one benchmark per model x variant x runtime x operation x batch.

    pytest bench --benchmark-only
    pytest bench --benchmark-only --fmnist-models model4 --benchmark-save=baseline
    fmnist-bench compare .benchmarks/.../0001_baseline.json .benchmarks/.../0002_new.json --fail-on-regression 10%

The timing is pytest-benchmark's (``benchmark.pedantic``), the rules and the record ``fmnist-bench run``'s
(bench/measure/core.py): the whole record goes in each benchmark's ``extra_info``. A scenario MLPerf LoadGen
drives is one pytest-benchmark round, LoadGen's whole test, its record holding LoadGen's per-query figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

import pytest

from bench.conftest import BenchParam, selected
from bench.measure.cases import load_test_split
from bench.measure.core import case_memory_mb, measure
from bench.measure.loadgen import SCENARIO_SKIPPED, Engine, LoadGenUnavailable
from bench.runtimes import make_sut
from bench.runtimes.base import ProviderUnavailable
from bench.settings import LOADGEN_OPERATIONS


def _made_once(make: Callable, unavailable: type[Exception]) -> Callable:
    """``make(*key)`` once per key for the session; where it raised ``unavailable``, each test asking for that key
    skips with its reason."""
    @cache
    def attempt(*key):
        try:
            return make(*key), None
        except unavailable as exc:
            return None, str(exc)

    def get(*key):
        made, reason = attempt(*key)
        if reason is not None:
            pytest.skip(reason)
        return made
    return get


@pytest.fixture(scope="session")
def chosen(pytestconfig: pytest.Config):
    return selected(pytestconfig)


@pytest.fixture(scope="session")
def splits(chosen):
    return cache(lambda model: load_test_split(chosen.artifacts, model, chosen.data))


@pytest.fixture(scope="session")
def suts(chosen):
    """One session per case for the whole run."""
    return _made_once(lambda case: make_sut(case, chosen.artifacts, chosen.settings.session), ProviderUnavailable)


@pytest.fixture(scope="session")
def loadgen(chosen):
    """The session's LoadGen, made at its first scenario (its own cost measured then, once), its logs in
    ``<report dir>/pytest-<UTC time>.loadgen/``."""
    def make() -> Engine:
        folder = Path(chosen.report_dir) if chosen.report_dir else chosen.artifacts.reports_dir
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return Engine(chosen.settings.loadgen, folder / f"pytest-{stamp}.loadgen")
    return _made_once(make, LoadGenUnavailable)


@pytest.fixture(scope="session")
def memories(chosen):
    """Each case's own peak resident memory, measured once (bench/measure/memory.py), as ``fmnist-bench run`` does."""
    return cache(lambda case, test_images: case_memory_mb(case, chosen.artifacts, chosen.settings, test_images))


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
