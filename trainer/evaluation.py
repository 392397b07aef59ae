"""Test-split evaluation as the report did it: Keras evaluate and predict, timed, then sklearn's report."""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass

import keras
import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

from trainer.data import Dataset
from trainer.fit import images, one_hot

# The report timed one call each with %%time; we keep that first call and add warm repeats.
TIMING_REPEATS = 3


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    evaluate_s: float  # first call, as the report's %%time
    predict_s: float
    evaluate_warm_median_s: float
    predict_warm_median_s: float
    classification_report: dict
    classification_report_text: str
    confusion_matrix: list[list[int]]


def _timed(call, repeats: int) -> tuple[object, float, float]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return result, times[0], statistics.median(times[1:] or times)


def evaluate(model: keras.Model, test: Dataset, batch_size: int = 32, repeats: int = TIMING_REPEATS) -> Evaluation:
    """``model`` must be compiled with the training loss and accuracy (its test loss includes regularisation, as
    Keras reports it)."""
    x, y_onehot = images(test), one_hot(test.y)
    scores, evaluate_s, evaluate_warm = _timed(lambda: model.evaluate(x, y_onehot, batch_size=batch_size, verbose=0), repeats)
    probabilities, predict_s, predict_warm = _timed(lambda: model.predict(x, batch_size=batch_size, verbose=0), repeats)
    y_pred = np.argmax(probabilities, axis=-1)
    labels = list(range(len(test.class_names)))
    report = functools.partial(classification_report, test.y, y_pred, labels=labels,
                               target_names=[f"Class {i + 1}" for i in labels], zero_division=0)
    return Evaluation(
        loss=float(scores[0]),
        accuracy=float(scores[1]),
        evaluate_s=evaluate_s,
        predict_s=predict_s,
        evaluate_warm_median_s=evaluate_warm,
        predict_warm_median_s=predict_warm,
        classification_report=report(output_dict=True),
        classification_report_text=report(digits=4),
        confusion_matrix=confusion_matrix(test.y, y_pred, labels=labels).tolist(),
    )
