"""Tiny data sets that the tests make themselves, in every format the toolkit reads."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest


def make_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 28x28 images whose class is visible (a bright bar at a label-dependent row), plus noise."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row = 2 + 2 * int(label)
        images[i, row:row + 2, 4:24] = 255
    return images


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_idx_dir(folder: Path, n: int = 400, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.random.default_rng(seed).integers(0, 10, size=n).astype(np.uint8)
    write_idx(folder / "train-images-idx3-ubyte.gz", make_images(labels, seed))
    write_idx(folder / "train-labels-idx1-ubyte.gz", labels)
    return folder


def write_report_npy(path: Path, n: int = 300, seed: int = 1) -> Path:
    """The report's format: np.save of a dict, features float in [0, 1], target 1..5."""
    target = np.random.default_rng(seed).integers(1, 6, size=n)
    features = make_images((target - 1) * 2, seed).astype(np.float64) / 255.0
    np.save(path, {"features": features, "target": target}, allow_pickle=True)
    return path


@pytest.fixture
def idx_dir(tmp_path: Path) -> Path:
    return write_idx_dir(tmp_path / "idx")


@pytest.fixture
def report_npy(tmp_path: Path) -> Path:
    return write_report_npy(tmp_path / "fashion_mnist_dataset_train.npy")


@pytest.fixture
def artifacts_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "artifacts"
    monkeypatch.setenv("FMNIST_ARTIFACTS", str(folder))
    return folder


def train_and_export_model1(root: Path) -> "Artifacts":
    """model1, trained one epoch on 1,000 tiny images and exported in all three variants (bench and peer tests)."""
    from exporter.cli import main as export_main  # noqa: PLC0415 - TensorFlow only for the tests that need it
    from trainer import data
    from trainer.artifacts import Artifacts
    from trainer.config import TrainConfig
    from trainer.training import train_one

    dataset = data.load_dataset(write_idx_dir(root / "idx", n=1000))
    art = Artifacts(root / "art")
    config = TrainConfig(model="model1", epochs=1, batch_size=64, optimizer="adam", lr=1e-3, seed=0, base_weights="none")
    train_one(config, dataset, data.split_dataset(dataset), art, quiet=True)
    assert export_main(["model1", "--artifacts", str(art.root), "--quiet", "--calibration-images", "64", "--int8-max-drop", "10"]) == 0
    return art
