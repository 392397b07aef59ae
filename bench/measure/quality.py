"""How right a run's answers are: accuracy, loss, per-class scores and the confusion matrix (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss, precision_recall_fscore_support


def cross_entropy(y: np.ndarray, probabilities: np.ndarray) -> float:
    """Categorical cross-entropy of integer labels; rows renormalised, since fp16 and int8 outputs
    sum to 1 only within their precision."""
    p = probabilities.astype(np.float64)
    p /= p.sum(axis=1, keepdims=True)
    return float(log_loss(y, p, labels=list(range(p.shape[1]))))


def quality(y: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """Accuracy, loss, per-class precision/recall/F1/support and the confusion matrix."""
    labels = list(range(len(class_names)))
    y_pred = probabilities.argmax(-1)
    precision, recall, f1, support = precision_recall_fscore_support(y, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y, y_pred)),
        "loss": cross_entropy(y, probabilities),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        },
        "confusion_matrix": confusion_matrix(y, y_pred, labels=labels).tolist(),
    }
