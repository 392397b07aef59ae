"""Fixtures every test module may ask for; what they are made from is in tests/tiny.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite's many tiny bench runs (and the commands they start) measure no yardsticks: even at 0.05 s per
# candidate, a dozen large products twice a run cost 10 s, more than the runs themselves. The tests of the
# yardsticks and of the shares of peak ask for them with --yardstick-s.
os.environ.setdefault("FMNIST_BENCH_YARDSTICK_S", "0")

import pytest

from tiny import train_and_export_model1, train_model2, write_idx_dir, write_report_npy
from trainer.artifacts import Artifacts


# The longest files first, by `pytest --durations=0` on the 2-vCPU AMX VM (2026-12-03, 462.56 s in all): `make test`
# hands each worker whole files in collection order (--dist loadfile --no-loadscope-reorder; xdist's own order, most
# tests first, left the Ray file for last while the other worker sat idle), so these start at once and the many
# short files fill the end. The rest keep pytest's order.
LONGEST_FIRST = ("test_train_hostile.py", "test_ray.py", "test_train.py", "test_sweep_report.py", "test_bench.py",
                 "test_edge_install.py", "test_export.py", "test_quiet.py", "test_precision.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order


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


def _built_once(name: str, build: Callable[[Path], Artifacts], tmp_path_factory: pytest.TempPathFactory,
                worker_id: str) -> Artifacts:
    """``build(folder)`` run once for the whole run, and a copy of its artifacts folder for this worker.

    Under xdist the first worker to ask builds it while the others wait on a lock, and each works on a copy of its
    own, so one's results never show in another's.
    """
    if worker_id == "master":
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock  # noqa: PLC0415 - xdist only

    shared = tmp_path_factory.getbasetemp().parent / name  # this run's folder, above the workers' own
    with FileLock(f"{shared}.lock"):
        if not (shared / "built").exists():
            shutil.rmtree(shared, ignore_errors=True)  # a worker that failed half-way
            build(shared)
            (shared / "built").touch()
    own = tmp_path_factory.mktemp(name)
    shutil.copytree(shared, own, symlinks=True, dirs_exist_ok=True)  # onnx/ stays the link to its generation
    return Artifacts(own / "art")


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Artifacts:
    """model1 trained and exported once for the whole run (30 s of Keras and tf2onnx; bench, peers, device and
    report tests share it). Tests add results and caches to it; one that must change or remove its files works on
    a copy."""
    return _built_once("tiny-export", train_and_export_model1, tmp_path_factory, worker_id)


@pytest.fixture(scope="session")
def tiny_model2(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Artifacts:
    """model2 (BatchNorm after each convolution) trained one epoch on 600 tiny images, once for the run: the fold
    and affine tests export copies of it, so every graph they make is judged against the same Keras model."""
    return _built_once("tiny-model2", train_model2, tmp_path_factory, worker_id)
