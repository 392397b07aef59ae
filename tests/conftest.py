"""Fixtures every test module may ask for; what they are made from is in tests/tiny.py."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite's many tiny bench runs (and the commands they start) measure no yardsticks: even at 0.05 s per
# candidate, a dozen large products twice a run cost 10 s, more than the runs themselves. The tests of the
# yardsticks and of the shares of peak ask for them with --yardstick-s.
os.environ.setdefault("FMNIST_BENCH_YARDSTICK_S", "0")

import pytest

from tiny import train_and_export_model1, write_idx_dir, write_report_npy
from trainer.artifacts import Artifacts


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


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """model1 trained and exported once for the whole run (bench, peers, device and report tests share it).
    Tests add results and caches to it; one that must change or remove its files works on a copy."""
    return train_and_export_model1(tmp_path_factory.mktemp("tiny-export"))
