"""The load generator: how queries are sent to a system under test, independent of which system.

Scenarios, as in MLPerf LoadGen:
- ``predict``: the whole test split at a batch size, to class probabilities (the report's predict);
- ``evaluate``: the same pass plus loss and accuracy (the report's evaluate);
- ``single-stream``: one image per query, one query at a time, after warm-up, for at least
  ``min_queries`` queries and ``min_duration_s`` seconds; per-query latency percentiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score

from bench.metrics import cross_entropy
from bench.sut import SUT

OPERATIONS = ("predict", "evaluate", "single-stream")


def predict(model: SUT, x: np.ndarray, batch_size: int) -> np.ndarray:
    return model.predict(x, batch_size)


def evaluate(model: SUT, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
    """(categorical cross-entropy, accuracy), as Keras' evaluate reports them (without regularisation)."""
    probabilities = predict(model, x, batch_size)
    return cross_entropy(y, probabilities), float(accuracy_score(y, probabilities.argmax(-1)))


@dataclass(frozen=True)
class SingleStreamSettings:
    warmup_queries: int = 20
    min_queries: int = 200
    min_duration_s: float = 2.0
    max_queries: int = 20_000


def single_stream(model: SUT, x: np.ndarray, settings: SingleStreamSettings = SingleStreamSettings()) -> np.ndarray:
    """Per-query latencies in milliseconds, cycling through the test images."""
    for i in range(settings.warmup_queries):
        model(x[i % len(x)][np.newaxis])
    latencies_ms: list[float] = []
    start = time.perf_counter()
    while len(latencies_ms) < settings.max_queries and (
        len(latencies_ms) < settings.min_queries or time.perf_counter() - start < settings.min_duration_s
    ):
        image = x[len(latencies_ms) % len(x)][np.newaxis]
        t0 = time.perf_counter()
        model(image)
        latencies_ms.append((time.perf_counter() - t0) * 1000)
    return np.asarray(latencies_ms)


def timed(call: Callable[[], object], rounds: int, warmup: int = 1) -> list[float]:
    """Wall time in seconds of ``rounds`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times
