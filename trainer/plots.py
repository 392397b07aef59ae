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
    sets = (("", "Training", "train set"), ("val_", "Validation", "validation set"))  # column prefix, title, legend
    for ax, (prefix, name, label), color in zip(axes[0], sets, ("C0", "C1")):
        ax.plot(history[f"{prefix}accuracy"], history[f"{prefix}loss"], marker=".", color=color)
        ax.set(title=f"{name} Accuracy vs Loss", xlabel="Accuracy", ylabel="Loss")
        ax.legend([label], loc="upper right")
    for ax, metric, loc in zip(axes[1], ("accuracy", "loss"), ("lower right", "upper right")):
        for prefix, _, label in sets:
            ax.plot(epoch, history[f"{prefix}{metric}"], label=label)
        ax.set(title=f"{metric.capitalize()} vs Epoch", xlabel="Epoch", ylabel=metric.capitalize())
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
