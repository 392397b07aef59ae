"""The load generator: how queries reach a system under test, whichever system it is.

Scenarios, as in MLPerf LoadGen (their parameters are in ``bench/settings.py``):
- ``predict``: the whole test split at a batch size, to class probabilities (the report's predict);
- ``evaluate``: the same pass plus loss and accuracy (the report's evaluate);
- ``single-stream``: one image per query, one query at a time, after warm-up; per-query latencies.

A scenario never times itself: it returns the call to time, and ``bench/measure/core.py`` times it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from sklearn.metrics import accuracy_score

from bench.measure.quality import cross_entropy
from bench.runtimes.base import SUT


def predict(model: SUT, x: np.ndarray, batch_size: int) -> np.ndarray:
    return model.predict(x, batch_size)


def evaluate(model: SUT, x: np.ndarray, y: np.ndarray, batch_size: int) -> tuple[float, float]:
    """(categorical cross-entropy, accuracy), as Keras' evaluate reports them (without regularisation)."""
    probabilities = predict(model, x, batch_size)
    return cross_entropy(y, probabilities), float(accuracy_score(y, probabilities.argmax(-1)))


def one_query_at_a_time(model: SUT, x: np.ndarray) -> Callable[[], np.ndarray]:
    """A call that sends the next test image, alone, cycling through the split."""
    images = itertools.cycle(x[:, np.newaxis])
    return lambda: model(next(images))


def batch_call(operation: str, model: SUT, x: np.ndarray, y: np.ndarray, batch_size: int) -> Callable[[], object]:
    """The call one round of a batch scenario makes."""
    if operation == "predict":
        return lambda: predict(model, x, batch_size)
    if operation == "evaluate":
        return lambda: evaluate(model, x, y, batch_size)
    raise ValueError(f"{operation!r} is not a batch scenario")
