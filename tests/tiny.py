"""What the tests make for themselves: tiny data sets in every format the toolkit reads, a tiny trained and
exported model, and helpers several test modules share. Imported as ``tiny`` (pytest puts tests/ on the path)."""

from __future__ import annotations

import gzip
import os
import time
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

    from bench.measure.cases import HeldOutSplit

    from trainer.artifacts import Artifacts

REPO = Path(__file__).resolve().parents[1]


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


# fmnist-export's options for models trained on tiny data: fewer parity and calibration images, and an int8
# file judged leniently (a one-epoch model on 2,000 images is not the accuracy gate's subject).
LENIENT = ["--quiet", "--parity-images", "200", "--calibration-images", "64", "--int8-max-drop", "10"]


def train(name: str, folder: Path, idx: Path) -> "Artifacts":
    """``name`` trained one epoch (batch 64, Adam) on the IDX data in ``idx``, into the artifacts folder ``folder``."""
    from trainer import data  # noqa: PLC0415 - TensorFlow only for the tests that train
    from trainer.artifacts import Artifacts
    from trainer.config import TrainConfig
    from trainer.training import train_one

    dataset = data.load_dataset(idx)
    art = Artifacts(folder)
    config = TrainConfig(model=name, epochs=1, batch_size=64, optimizer="adam", lr=1e-3, seed=0, base_weights="none")
    train_one(config, dataset, data.split_dataset(dataset), art, quiet=True)
    return art


def train_and_export_model1(root: Path) -> "Artifacts":
    """model1, trained one epoch on 1,000 tiny images (in ``root/idx``) and exported in all three variants."""
    from exporter.cli import main as export_main  # noqa: PLC0415

    art = train("model1", root / "art", write_idx_dir(root / "idx", n=1000))
    assert export_main(["model1", "--artifacts", str(art.root), "--quiet", "--calibration-images", "64", "--int8-max-drop", "10"]) == 0
    return art


def train_model2(root: Path) -> "Artifacts":
    """model2, trained one epoch on 600 tiny images (in ``root/idx``), not exported."""
    return train("model2", root / "art", write_idx_dir(root / "idx", n=600))


# A tiny `fmnist-bench run`: one round, a few queries, no peers' tools, no memory probe (a process per case: the
# tests of memory ask for it with --memory on). Yardsticks are off for the whole suite (tests/conftest.py).
FAST_RUN = ["--rounds", "1", "--min-queries", "5", "--min-duration", "0", "--tools", "off", "--memory", "off", "--quiet"]


def run_onnx(model: "onnx.ModelProto", x: np.ndarray, folder: Path, name: str) -> np.ndarray:
    """The graph's output for input ``x`` (its input named ``x``) on onnxruntime's CPU provider."""
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415

    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child pytest or command, without pytest-xdist's worker variables (a child
    pytest-benchmark that sees them turns itself off)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST"))}
    return {**env, **extra}


def run_python(code: str, forbid: tuple[str, ...] = ("tensorflow", "keras"), block: tuple[str, ...] = (),
               cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with the modules in ``block`` made unimportable, and fail it when any of
    ``forbid`` was imported by the end: how a test shows a path runs without TensorFlow (an edge device)."""
    prologue = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in block)
    epilogue = (f"\nloaded = [m for m in {forbid!r} if sys.modules.get(m) is not None]\n"
                "assert not loaded, f'imported {loaded}'\n")
    return subprocess.run([sys.executable, "-c", prologue + code + epilogue], capture_output=True, text=True, cwd=cwd,
                          env=child_env())


def crash_after(epoch: int):
    """A Keras callback that stands in for a kill: KeyboardInterrupt at the end of ``epoch`` (0-based), after that
    epoch's checkpoint is written."""
    import keras  # noqa: PLC0415 - only the training tests need it

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, done, logs=None):
            if done == epoch:
                raise KeyboardInterrupt

    return Crash()


# Systems under test that the measurement tests time with a clock of their own (the bench's SUT interface).
from bench.runtimes.base import SUT  # noqa: E402


class Constant(SUT):
    """Answers every image with the same probabilities, instantly: the clock alone decides every time."""

    name, providers_used, session_create_s, model_bytes = "constant", ["test"], 0.5, 1234

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.tile(np.float32([0.1, 0.6, 0.1, 0.1, 0.1]), (len(batch), 1))


class Sleeper(Constant):
    """Takes at least ``seconds`` per query: a duration LoadGen's clock cannot read as shorter."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return super().__call__(batch)


def held_out_split(images: int) -> "HeldOutSplit":
    """A test split of ``images`` blank images, their labels cycling through the five classes."""
    from bench.measure.cases import HeldOutSplit  # noqa: PLC0415
    y = np.arange(images) % 5  # a fifth of them class 2, which Constant always answers
    return HeldOutSplit(np.zeros((images, 28, 28, 1), np.float32), y, tuple(f"Class {i}" for i in range(1, 6)), "test")
