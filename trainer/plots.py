"""The report's figures: the 2x2 accuracy/loss panel per model and a 5x5 grid of samples."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI and servers have no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from trainer.artifacts import atomic_path  # noqa: E402
from trainer.data import Dataset  # noqa: E402


def accuracy_loss_plot(history: pd.DataFrame, title: str, target: Path) -> None:
    """The report's ``accuracy_loss_plot``: accuracy vs loss (train, val), accuracy and loss vs epoch."""
    epoch = history["epoch"] + 1
    fig, axes = plt.subplots(2, 2, figsize=(12, 10))
    panels = [
        (axes[0, 0], history["accuracy"], history["loss"], "Training Accuracy vs Loss", "Accuracy", "Loss", ["train set"]),
        (axes[0, 1], history["val_accuracy"], history["val_loss"], "Validation Accuracy vs Loss", "Accuracy", "Loss", ["validation set"]),
    ]
    for ax, xs, ys, panel_title, xlabel, ylabel, legend in panels:
        ax.plot(xs, ys, marker=".", color="C0" if legend == ["train set"] else "C1")
        ax.set(title=panel_title, xlabel=xlabel, ylabel=ylabel)
        ax.legend(legend, loc="upper right")
    for ax, metric, ylabel, loc in ((axes[1, 0], "accuracy", "Accuracy", "lower right"), (axes[1, 1], "loss", "Loss", "upper right")):
        ax.plot(epoch, history[metric], label="train set")
        ax.plot(epoch, history[f"val_{metric}"], label="validation set")
        ax.set(title=f"{ylabel} vs Epoch", xlabel="Epoch", ylabel=ylabel)
        ax.legend(loc=loc)
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, target)


def sample_grid(dataset: Dataset, target: Path) -> None:
    """The report's ``display_picture``: the first 25 images with their class."""
    fig, axes = plt.subplots(5, 5, figsize=(8, 8))
    for i, ax in enumerate(axes.flat):
        if i < len(dataset):
            ax.imshow(dataset.x[i], cmap=plt.cm.binary)
            ax.set_title(f"Class {dataset.y[i] + 1}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"Samples from {dataset.source}")
    fig.tight_layout()
    _save(fig, target)


def _save(fig: plt.Figure, target: Path) -> None:
    with atomic_path(target) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
