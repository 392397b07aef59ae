"""The pytest-benchmark suite: one benchmark per model x variant x provider x operation x batch.

    pytest bench --benchmark-only
    pytest bench --benchmark-only --fmnist-models model4 --benchmark-save=baseline
    pytest bench --benchmark-only --benchmark-compare --benchmark-compare-fail=median:10%

Accuracy, per-class metrics, the provider that really ran, GFLOP/s and (single-stream) latency
percentiles go in each benchmark's ``extra_info``, so they are saved with the timings.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bench import scenarios
from bench.cases import Case, HeldOutSplit, load_test_split
from bench.conftest import BenchParam, option
from bench.metrics import achieved_gflops, multiply_adds_per_image, quality
from bench.runner import make_sut
from bench.sut import ProviderUnavailable
from trainer.artifacts import Artifacts


@pytest.fixture(scope="session")
def artifacts(pytestconfig: pytest.Config) -> Artifacts:
    return Artifacts.at(option(pytestconfig, "artifacts"))


@pytest.fixture(scope="session")
def splits(artifacts: Artifacts):
    cache: dict[str, HeldOutSplit] = {}
    return lambda model: cache.get(model) or cache.setdefault(model, load_test_split(artifacts, model))


@pytest.fixture(scope="session")
def suts(artifacts: Artifacts):
    """One session per case for the whole run; a provider that cannot run is remembered as its reason."""
    cache: dict[Case, object] = {}

    def get(case: Case):
        if case not in cache:
            try:
                cache[case] = make_sut(case, artifacts)
            except ProviderUnavailable as exc:
                cache[case] = str(exc)
            except ImportError as exc:
                cache[case] = f"{case.provider} reference needs TensorFlow ({exc})"
        if isinstance(cache[case], str):
            pytest.skip(cache[case])
        return cache[case]

    return get


def test_latency(benchmark, bench_param: BenchParam, suts, splits, pytestconfig: pytest.Config):
    case = bench_param.case
    sut = suts(case)
    split = splits(case.model)
    x, y = split.x, split.y
    batch = bench_param.batch
    benchmark.group = f"{case.model}-{bench_param.operation}-b{batch}"

    if bench_param.operation == "single-stream":
        images = itertools.cycle(x[:, np.newaxis])
        queries = int(option(pytestconfig, "min_queries"))
        # One query per round, so the rounds are the per-query latencies (as LoadGen's SingleStream).
        benchmark.pedantic(lambda: sut(next(images)), rounds=queries, iterations=1, warmup_rounds=20)
        latencies_ms = np.asarray(benchmark.stats.stats.data) * 1000
        benchmark.extra_info["latency_ms"] = {p: float(np.percentile(latencies_ms, int(p[1:]))) for p in ("p50", "p90", "p99")}
        benchmark.extra_info["latency_ms"]["mean"] = float(latencies_ms.mean())
        images_per_call = 1
    elif bench_param.operation == "evaluate":
        loss, accuracy = benchmark(scenarios.evaluate, sut, x, y, batch)
        benchmark.extra_info.update(accuracy=accuracy, loss=loss)
        images_per_call = len(y)
    else:
        probabilities = benchmark(scenarios.predict, sut, x, batch)
        benchmark.extra_info.update(quality(y, probabilities, split.class_names))
        images_per_call = len(y)

    median_s = benchmark.stats.stats.median
    macs = multiply_adds_per_image(case.path)
    benchmark.extra_info.update(
        model=case.model, variant=case.variant, provider=case.provider, providers_used=list(sut.providers_used),
        operation=bench_param.operation, batch_size=batch,
        throughput_ips=images_per_call / median_s, gflops=achieved_gflops(macs, images_per_call, median_s),
        session_create_s=sut.session_create_s, model_bytes=case.path.stat().st_size,
    )
