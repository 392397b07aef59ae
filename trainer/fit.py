"""Fitting one model: resumable epochs, per-epoch history, and cached features for frozen bases.

A frozen base in inference mode gives the same features every epoch, so for the transfer
models we compute them once per (model, base weights, data) and train only the head on them.
The head is the very layer object inside the full model, so the full model is trained too.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import keras
import numpy as np
import pandas as pd

from trainer.artifacts import Artifacts, atomic_path
from trainer.config import DEFAULTS, TrainConfig
from trainer.data import NUM_CLASSES, Dataset, Splits
from trainer.models import BuiltModel

FEATURE_BATCH = 256
OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
if set(OPTIMIZERS) != set(DEFAULTS.optimizers):  # the CLI offers config's names; each must build here
    raise RuntimeError(f"trainer.fit builds {sorted(OPTIMIZERS)}, trainer.config knows {sorted(DEFAULTS.optimizers)}")


@dataclass
class FitOutcome:
    history: pd.DataFrame  # one row per epoch, every session of a resumed run included
    resumed_from_epoch: int  # 0 for a fresh run
    feature_extraction_s: float  # 0 when features came from the cache
    features_cached: bool
    fit_wall_s: float  # this session's fit() only
    through_frozen_base: bool = False  # a transfer model trained the report's way (no feature cache)

    @property
    def training_time_s(self) -> float:
        """Feature extraction plus the sum of epoch times over all sessions of the run."""
        return self.feature_extraction_s + float(self.history["epoch_time_s"].sum())


def make_optimizer(name: str, lr: float) -> keras.optimizers.Optimizer:
    try:
        return OPTIMIZERS[name](learning_rate=lr)
    except KeyError:
        raise ValueError(f"--optimizer {name!r}: choose from {', '.join(OPTIMIZERS)}") from None


def compile_for_training(model: keras.Model, config: TrainConfig) -> None:
    model.compile(
        loss="categorical_crossentropy",
        optimizer=make_optimizer(config.optimizer, config.lr),
        metrics=["accuracy"],
    )


def one_hot(labels: np.ndarray) -> np.ndarray:
    return keras.utils.to_categorical(labels, NUM_CLASSES)


def images(dataset: Dataset) -> np.ndarray:
    """The canonical model input: (N, 28, 28, 1) float32."""
    return dataset.x[..., np.newaxis]


# --------------------------------------------------------------------------- callbacks

class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_time_s`` to the epoch's logs; must come before the loggers that read them."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_time_s"] = time.perf_counter() - self._start


class EpochProgress(keras.callbacks.Callback):
    """One line per epoch with the metrics and an ETA from the median epoch time."""

    def __init__(self, label: str, epochs: int, stream: TextIO | None = None):
        super().__init__()
        self.label, self.epochs, self.stream = label, epochs, stream or sys.stdout
        self._times: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._times.append(logs.get("epoch_time_s", 0.0))
        eta_s = statistics.median(self._times) * (self.epochs - epoch - 1)
        print(
            f"[{self.label}] epoch {epoch + 1}/{self.epochs}"
            f"  loss {logs.get('loss', float('nan')):.4f}  acc {logs.get('accuracy', float('nan')):.4f}"
            f"  val_loss {logs.get('val_loss', float('nan')):.4f}  val_acc {logs.get('val_accuracy', float('nan')):.4f}"
            f"  {self._times[-1]:.1f}s  ETA {_fmt_duration(eta_s)}",
            file=self.stream, flush=True,
        )


def _fmt_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# --------------------------------------------------------------------------- resume

def _prepare_resume(artifacts: Artifacts, config: TrainConfig, data_sha256: str, mode: str, log: TextIO) -> int:
    """Return the epoch to resume from, and make the history CSV agree with it.

    ``BackupAndRestore`` keeps the weights, optimizer and epoch; we only guard it against a
    checkpoint from another configuration and trim history rows it did not keep.
    """
    backup = artifacts.backup_dir(config.model)
    history = artifacts.history_file(config.model)
    run_file = backup / "run.json"
    identity = {"config": asdict(config), "data_sha256": data_sha256, "mode": mode}
    resume_epoch = 0
    if run_file.exists():
        if json.loads(run_file.read_text()) == identity:
            state = backup / "training_metadata.json"
            resume_epoch = json.loads(state.read_text())["epoch"] if state.exists() else 0
        else:
            print(f"[{config.model}] discarding checkpoint {backup}: it was made with another configuration or data", file=log)
            shutil.rmtree(backup)
    backup.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(identity))
    if resume_epoch and history.exists():
        kept = pd.read_csv(history)
        kept = kept[kept["epoch"] < resume_epoch]
        with atomic_path(history) as tmp:
            kept.to_csv(tmp, index=False)
        print(f"[{config.model}] resuming at epoch {resume_epoch + 1}/{config.epochs} from {backup}", file=log)
    else:
        history.unlink(missing_ok=True)
    return resume_epoch


# --------------------------------------------------------------------------- features

def _weights_digest(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def base_features(base: keras.Model, dataset: Dataset, cache_dir: Path, name: str) -> tuple[np.ndarray, float, bool]:
    """Features of the frozen base for every image; cached under a key of model, base weights and data.

    Returns (features, seconds spent computing them, whether they came from the cache).
    """
    key = hashlib.sha256(f"{name}:{_weights_digest(base)}:{dataset.sha256}".encode()).hexdigest()[:20]
    path = cache_dir / f"{name}-{key}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False), 0.0, True
    start = time.perf_counter()
    features = base.predict(images(dataset), batch_size=FEATURE_BATCH, verbose=0)
    elapsed = time.perf_counter() - start
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, features, allow_pickle=False)
    return features, elapsed, False


# --------------------------------------------------------------------------- fit

def fit(
    built: BuiltModel,
    dataset: Dataset,
    splits: Splits,
    config: TrainConfig,
    artifacts: Artifacts,
    quiet: bool = False,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
    log: TextIO | None = None,
    feature_cache: bool = True,
) -> FitOutcome:
    """Train ``built`` per ``config``; resumes from ``artifacts``' checkpoint when one matches.

    ``feature_cache=False`` trains a transfer model through its frozen base on every batch, as the
    report did: the same result, many times slower; kept to measure that claim.
    """
    log = log or sys.stdout
    artifacts.ensure(artifacts.history_file(config.model).parent, artifacts.backup_dir(config.model).parent)
    through_base = built.head is not None and not feature_cache
    resume_epoch = _prepare_resume(artifacts, config, dataset.sha256, "through-base" if through_base else "default", log)

    if built.head is not None and feature_cache:
        features, feature_s, cached = base_features(built.base, dataset, artifacts.features_dir(), config.model)
        if not quiet:
            how = "from cache" if cached else f"computed in {feature_s:.1f}s"
            print(f"[{config.model}] frozen-base features {features.shape[1:]} for {len(features)} images {how}", file=log)
        trainable = built.head
        x_train, x_val = features[splits.indices["train"]], features[splits.indices["val"]]
    else:
        feature_s, cached = 0.0, False
        trainable = built.model
        x_train, x_val = images(splits.train), images(splits.val)

    compile_for_training(trainable, config)
    callbacks: list[keras.callbacks.Callback] = [
        EpochTimer(),
        # Kept after fit() (delete_checkpoint=False): a kill while evaluating or saving must not lose
        # the finished epochs. train_one discards it once everything is written.
        keras.callbacks.BackupAndRestore(str(artifacts.backup_dir(config.model)), double_checkpoint=True, delete_checkpoint=False),
        keras.callbacks.CSVLogger(str(artifacts.history_file(config.model)), append=True),
    ]
    if not quiet:
        callbacks.append(EpochProgress(config.model, config.epochs, log))
    callbacks.extend(extra_callbacks or [])

    # The batch order then depends on the seed alone, not on what building the model drew.
    keras.utils.set_random_seed(config.seed + resume_epoch)
    start = time.perf_counter()
    trainable.fit(
        x_train, one_hot(splits.train.y),
        validation_data=(x_val, one_hot(splits.val.y)),
        epochs=config.epochs, batch_size=config.batch_size,
        callbacks=callbacks, verbose=0,
    )
    fit_wall_s = time.perf_counter() - start
    return FitOutcome(
        history=pd.read_csv(artifacts.history_file(config.model)),
        resumed_from_epoch=resume_epoch,
        feature_extraction_s=feature_s,
        features_cached=cached,
        fit_wall_s=fit_wall_s,
        through_frozen_base=through_base,
    )


def discard_checkpoint(artifacts: Artifacts, name: str) -> None:
    """Call once the trained model and its metadata are safely written."""
    shutil.rmtree(artifacts.backup_dir(name), ignore_errors=True)
