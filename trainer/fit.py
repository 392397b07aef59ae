"""Fitting one model: resumable epochs, per-epoch history, and cached features for frozen bases.

A frozen base in inference mode gives the same features every epoch, so for the transfer
models we compute them once per (model, base weights, data) and train only the head on them.
The head is the very layer object inside the full model, so the full model is trained too.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import keras
import numpy as np
import pandas as pd

from trainer.artifacts import Artifacts, ArtifactsError, atomic_path, clip, write_json_atomic, writing
from trainer.config import DEFAULTS, PRECISION_POLICIES, TrainConfig
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


def compile_for_training(model: keras.Model, config: TrainConfig) -> None:
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer {config.optimizer!r}: choose from {', '.join(OPTIMIZERS)}")
    model.compile(loss="categorical_crossentropy", optimizer=OPTIMIZERS[config.optimizer](learning_rate=config.lr),
                  metrics=["accuracy"])


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Build models under ``precision``'s Keras dtype policy; the global policy is restored on leaving.

    A layer keeps the policy it was built under (its ``.keras`` file records it), so one process can train an
    fp32 model after a bf16 one. The output layers set float32 themselves (trainer/models.py), as Keras advises.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISION_POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def one_hot(labels: np.ndarray) -> np.ndarray:
    return keras.utils.to_categorical(labels, NUM_CLASSES)


def images(dataset: Dataset) -> np.ndarray:
    """The canonical model input: (N, 28, 28, 1) float32."""
    return dataset.x[..., np.newaxis]


class EpochProgress(keras.callbacks.Callback):
    """One line per epoch with the metrics and an ETA from the median epoch time."""

    SHOWN = {"loss": "loss", "accuracy": "acc", "val_loss": "val_loss", "val_accuracy": "val_acc"}

    def __init__(self, label: str, epochs: int, stream: TextIO | None = None):
        super().__init__()
        self.label, self.epochs, self.stream = label, epochs, stream or sys.stdout
        self._times: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._times.append(logs.get("epoch_time_s", 0.0))
        metrics = "".join(f"  {shown} {logs.get(key, float('nan')):.4f}" for key, shown in self.SHOWN.items())
        minutes, seconds = divmod(int(round(statistics.median(self._times) * (self.epochs - epoch - 1))), 60)
        eta = f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
        print(f"[{self.label}] epoch {epoch + 1}/{self.epochs}{metrics}  {self._times[-1]:.1f}s  ETA {eta}",
              file=self.stream, flush=True)


class EpochTimer(keras.callbacks.Callback):
    """Adds ``epoch_time_s`` to the epoch's logs; must come before the loggers that read them."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_time_s"] = time.perf_counter() - self._start


class HistoryLogger(keras.callbacks.Callback):
    """Appends each epoch's row to the history CSV (as CSVLogger: ``epoch``, then the logs sorted by name).

    Unlike CSVLogger's buffered file, each row is one unbuffered append, undone if it fails: a full disk
    leaves no row cut short.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.columns: list[str] | None = None

    def on_train_begin(self, logs=None):
        # Resumed: the checkpoint's copy of the history is in place; keep its columns, whatever their order.
        with contextlib.suppress(FileNotFoundError), open(self.path, newline="", encoding="utf-8") as f:
            self.columns = next(csv.reader(f), None)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        if self.columns is None:
            self.columns = ["epoch", *sorted(logs)]
            writer.writerow(self.columns)
        writer.writerow([epoch, *(_cell(logs.get(key, "NA")) for key in self.columns[1:])])
        _append_whole(self.path, text.getvalue().encode())


def _cell(value: object) -> object:
    return repr(float(value)) if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) else value


def _append_whole(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` entirely or not at all (the file is cut back if a write fails)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    except OSError as exc:
        raise ArtifactsError(f"{path}: cannot write it ({exc.strerror})") from None
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, data)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
                if not size:  # this append created it: leave no empty history behind either
                    path.unlink()
            raise ArtifactsError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# checkpoints/<model>/epoch-0007/ holds all that resuming after epoch 7 needs: state.weights.h5 (the trainable
# model's weights and optimizer state), history.csv (epochs 1-7) and state.json (the epoch, the run's identity,
# the optimizer's step count, each file's sha256). After the epoch's history row it is written in a temporary
# folder (a name starting with ".") and published with one rename; the one before is then renamed aside and
# deleted. Whenever a kill comes, each folder with an epoch name is whole: resuming takes the newest that is
# this run's and loads, and puts its history back.

PREFIX, WEIGHTS, HISTORY, STATE = "epoch-", "state.weights.h5", "history.csv", "state.json"


class Checkpoint(keras.callbacks.Callback):
    """Publishes each finished epoch's checkpoint in ``folder`` and removes the one before."""

    def __init__(self, folder: Path, identity: dict, history: Path):
        super().__init__()
        self.folder, self.identity, self.history = folder, identity, history

    def on_epoch_end(self, epoch, logs=None):
        if not np.isfinite((logs or {}).get("loss", 0.0)):
            return  # a diverged epoch is nothing to resume from; train_one reports it
        target = self.folder / f"{PREFIX}{epoch + 1:04d}"
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.folder))
            try:
                self.model.save_weights(staging / WEIGHTS)
                shutil.copyfile(self.history, staging / HISTORY)
                write_json_atomic(staging / STATE, {
                    "epoch": epoch + 1, "identity": self.identity, "iterations": _steps(self.model.optimizer),
                    "sha256": {name: _sha256(staging / name) for name in (WEIGHTS, HISTORY)}})
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)  # gone once published; a failed write leaves nothing
        except OSError as exc:
            raise ArtifactsError(f"{self.folder}: cannot write the checkpoint of epoch {epoch + 1} "
                                 f"({exc.strerror or exc})") from None
        for older in _checkpoints(self.folder)[1:]:
            _discard(older)


def _resume(config: TrainConfig, folder: Path, history: Path, identity: dict, trainable: keras.Model,
            log: TextIO) -> int:
    """Load the newest checkpoint of this run into ``trainable`` (compiled) and return its epoch; 0 to start over.

    The history becomes the checkpoint's (a kill between an epoch's row and its checkpoint left one row more:
    that epoch trains again). The other checkpoints are removed; those passed over are named in one line.
    """
    _remove_leftovers(folder)
    found, chosen, problems = _checkpoints(folder), None, []
    for checkpoint in found:
        problem = _load(checkpoint, identity, trainable)
        if not problem:
            chosen = checkpoint
            break
        problems.append(f"{checkpoint}: {problem}")
    if problems:
        print(f"[{config.model}] discarding checkpoint {'; '.join(problems)}", file=log)
    for checkpoint in found:
        if checkpoint != chosen:
            _discard(checkpoint)
    if chosen is None:
        history.unlink(missing_ok=True)
        return 0
    with writing(history), atomic_path(history) as tmp:
        shutil.copyfile(chosen / HISTORY, tmp)
    done = _epoch(chosen)
    print(f"[{config.model}] resuming at epoch {done + 1}/{config.epochs} from {chosen}" if done < config.epochs
          else f"[{config.model}] all {done} epochs were done: resuming from {chosen} to evaluate", file=log)
    return done


def _load(checkpoint: Path, identity: dict, trainable: keras.Model) -> str:
    """"" when ``checkpoint`` is this run's, whole, and now loaded into ``trainable``; else why not (nothing loaded)."""
    try:
        state = json.loads((checkpoint / STATE).read_bytes().decode("utf-8"))
        saved, steps, digests = dict(state["identity"]), state["iterations"], dict(state["sha256"])
    except (OSError, ValueError, KeyError, TypeError):  # ValueError: not UTF-8, not JSON, not an object
        return f"its {STATE} is missing or unreadable"
    if saved != identity:  # another precision is another configuration (TrainConfig.identity)
        changed = sorted(k for k in {**identity, **saved} if identity.get(k) != saved.get(k))
        return f"it was made with another configuration or data ({clip(', '.join(changed), 60)} " \
               f"{'differs' if len(changed) == 1 else 'differ'})"
    if state.get("epoch") != _epoch(checkpoint) or set(digests) != {WEIGHTS, HISTORY}:
        return f"its {STATE} does not describe it"
    damaged = [name for name in (WEIGHTS, HISTORY)
               if not (checkpoint / name).is_file() or _sha256(checkpoint / name) != digests[name]]
    if damaged:
        return f"its {' and '.join(damaged)} {'is' if len(damaged) == 1 else 'are'} missing or damaged"
    return _load_weights(trainable, checkpoint / WEIGHTS, steps)


def _load_weights(trainable: keras.Model, path: Path, steps: int) -> str:
    """Load weights and optimizer state; on failure put back what was there (a fresh start needs them)."""
    optimizer = trainable.optimizer
    if not optimizer.built:  # Keras would skip an unbuilt optimizer's state, with a warning only
        optimizer.build(trainable.trainable_variables)
    variables = [*trainable.weights, *optimizer.variables]
    before = [keras.ops.convert_to_numpy(v) for v in variables]
    try:
        trainable.load_weights(path)
        problem = "" if _steps(optimizer) == steps else "its optimizer state did not load"
    except Exception as exc:  # noqa: BLE001 - Keras and h5py raise ValueError, OSError, KeyError... for a misfit
        problem = f"it does not fit this model ({clip(str(exc) or type(exc).__name__, 120)})"
    if problem:
        for variable, value in zip(variables, before):
            variable.assign(value)
    return problem


def _checkpoints(folder: Path) -> list[Path]:
    """The published checkpoints in ``folder``, newest first; temporary and discarded ones start with "."."""
    return sorted((p for p in folder.glob(f"{PREFIX}*") if p.name.removeprefix(PREFIX).isdigit()), key=_epoch,
                  reverse=True)


def _epoch(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix(PREFIX))


def _steps(optimizer: keras.optimizers.Optimizer) -> int:
    return int(keras.ops.convert_to_numpy(optimizer.iterations))


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _discard(folder: Path) -> None:
    """Remove a checkpoint (or a model's folder of them) at once: renamed aside (atomic; never read again), then
    deleted, so a kill while deleting leaves nothing half there."""
    if not folder.exists():
        return
    aside = folder.with_name(f".{folder.name}.discarded-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    folder.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def _remove_leftovers(folder: Path) -> None:
    """What a kill left: a checkpoint half written or half deleted, or the model's folder half discarded."""
    for leftover in [*folder.glob(".*"), *folder.parent.glob(f".{folder.name}.*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def _weights_digest(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def base_features(base: keras.Model, dataset: Dataset, cache_dir: Path, name: str,
                  precision: str = "fp32") -> tuple[np.ndarray, float, bool]:
    """(features of the frozen base for every image, seconds spent computing them, whether they came from the cache).

    Cached under a key of model, base weights, data and a non-fp32 precision (fp32 keys are as before it existed).
    Kept as float32: bf16 values are exact in it, and numpy cannot save bfloat16 without pickling.
    """
    identity = f"{name}:{_weights_digest(base)}:{dataset.sha256}" + (f":{precision}" if precision != "fp32" else "")
    key = hashlib.sha256(identity.encode()).hexdigest()[:20]
    path = cache_dir / f"{name}-{key}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False), 0.0, True
    start = time.perf_counter()
    features = np.asarray(base.predict(images(dataset), batch_size=FEATURE_BATCH, verbose=0), dtype=np.float32)
    elapsed = time.perf_counter() - start
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, features, allow_pickle=False)
    return features, elapsed, False


def fit(built: BuiltModel, dataset: Dataset, splits: Splits, config: TrainConfig, artifacts: Artifacts,
        quiet: bool = False, extra_callbacks: list[keras.callbacks.Callback] | None = None, log: TextIO | None = None,
        feature_cache: bool = True) -> FitOutcome:
    """Train ``built`` per ``config``; resumes from ``artifacts``' checkpoint when one matches.

    ``feature_cache=False`` trains a transfer model through its frozen base on every batch, as the report did:
    the same result, many times slower; kept to measure that claim.
    """
    log = log or sys.stdout
    history, folder = artifacts.history_file(config.model), artifacts.backup_dir(config.model)
    artifacts.ensure(history.parent, folder)
    through_base = built.head is not None and not feature_cache

    if built.head is not None and feature_cache:
        features, feature_s, cached = base_features(built.base, dataset, artifacts.features_dir(), config.model,
                                                    config.precision)
        if not quiet:
            how = "from cache" if cached else f"computed in {feature_s:.1f}s"
            print(f"[{config.model}] frozen-base features {features.shape[1:]} for {len(features)} images {how}",
                  file=log)
        trainable = built.head
        x_train, x_val = features[splits.indices["train"]], features[splits.indices["val"]]
    else:
        feature_s, cached = 0.0, False
        trainable = built.model
        x_train, x_val = images(splits.train), images(splits.val)

    compile_for_training(trainable, config)
    # Every field of the configuration (TrainConfig.identity): a bf16 checkpoint is never resumed as fp32.
    identity = {**config.identity(), "data_sha256": dataset.sha256,
                "mode": "through-base" if through_base else "default"}
    resume_epoch = _resume(config, folder, history, identity, trainable, log)
    extras = list(extra_callbacks or [])
    first = [c for c in extras if getattr(c, "before_checkpoint", False)]
    callbacks: list[keras.callbacks.Callback] = [
        keras.callbacks.TerminateOnNaN(),  # a diverged run stops at once; train_one then fails it
        EpochTimer(),
        # What an epoch's checkpoint vouches for is written before it (the sweep's weight snapshots, the history
        # row); the checkpoint is kept after fit(), until train_one has written everything.
        *first, HistoryLogger(history), Checkpoint(folder, identity, history),
        *([] if quiet else [EpochProgress(config.model, config.epochs, log)]),
        *(c for c in extras if c not in first),
    ]

    # The batch order depends on the seed alone, not on what building the model drew; a resumed run's offset
    # must not push a seed past 2**32.
    keras.utils.set_random_seed((config.seed + resume_epoch) % 2**32)
    start = time.perf_counter()
    # TerminateOnNaN's note ("Batch 3: Invalid loss") goes to Keras' log, not stdout: train_one's error says it.
    interactive = keras.config.is_interactive_logging_enabled()
    keras.config.disable_interactive_logging()
    try:
        trainable.fit(x_train, one_hot(splits.train.y), validation_data=(x_val, one_hot(splits.val.y)),
                      epochs=config.epochs, initial_epoch=resume_epoch, batch_size=config.batch_size,
                      callbacks=callbacks, verbose=0)
    finally:
        if interactive:
            keras.config.enable_interactive_logging()
    return FitOutcome(history=pd.read_csv(history), resumed_from_epoch=resume_epoch, feature_extraction_s=feature_s,
                      features_cached=cached, fit_wall_s=time.perf_counter() - start, through_frozen_base=through_base)


def discard_checkpoint(artifacts: Artifacts, name: str) -> None:
    """Call once the trained model and its metadata are safely written (or a failed run is set aside)."""
    _discard(artifacts.backup_dir(name))
