"""How the bench's own calls reach a system under test, whichever system it is (their parameters are in
``bench/settings.py``):

- ``predict``: the whole test split at a batch size, to class probabilities (the report's predict);
- ``evaluate``: the same pass plus loss and accuracy (the report's evaluate);
- the warm-up of MLPerf's scenarios (single-stream, multi-stream, server, offline, accuracy), whose queries
  MLPerf LoadGen then issues itself (``bench/measure/loadgen.py``).

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


def warm_up_call(model: SUT, x: np.ndarray, batch: int) -> Callable[[], np.ndarray]:
    """A call that sends the next ``batch`` test images as one query, cycling through the split: the warm-up
    before LoadGen's test, which also tells LoadGen what a query costs."""
    starts = itertools.cycle(range(0, max(1, len(x) - batch + 1), batch))
    return lambda: model(x[(start := next(starts)):start + batch])


def batch_call(operation: str, model: SUT, x: np.ndarray, y: np.ndarray, batch_size: int) -> Callable[[], object]:
    """The call one round of a batch scenario makes."""
    if operation == "predict":
        return lambda: predict(model, x, batch_size)
    if operation == "evaluate":
        return lambda: evaluate(model, x, y, batch_size)
    raise ValueError(f"{operation!r} is not a batch scenario")
