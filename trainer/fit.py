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

import h5py
import keras
import numpy as np
import pandas as pd

from trainer.artifacts import Artifacts, ArtifactsError, atomic_path, write_json_atomic, write_text_atomic, writing
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


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Build models under ``precision``'s Keras dtype policy; the global policy is restored on leaving.

    A layer keeps the policy it was built under (and its saved ``.keras`` file records it), so the
    policy is needed only while the model is built: one process can then train an fp32 model after a
    bf16 one. ``mixed_bfloat16`` keeps the variables in float32 and computes in bfloat16; the output
    layers set float32 themselves (trainer/models.py), as Keras advises for mixed precision.
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


class Checkpoint(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose failure to write (a full disk) is one line naming the checkpoint folder."""

    def on_epoch_end(self, epoch, logs=None):
        try:
            super().on_epoch_end(epoch, logs)
        except ArtifactsError:
            raise
        except OSError as exc:
            raise ArtifactsError(f"{self.backup_dir}: cannot write the checkpoint ({exc.strerror or exc})") from None


class HistoryLogger(keras.callbacks.Callback):
    """Appends each epoch's row to the history CSV (as CSVLogger: ``epoch``, then the logs sorted by name).

    Unlike CSVLogger, which keeps a buffered file open, each row is one unbuffered append that is
    undone if it fails: a full disk leaves no row cut short, and no buffer is flushed after the error.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.columns: list[str] | None = None

    def on_train_begin(self, logs=None):
        header, _ = _read_history(self.path)  # resumed: the file's columns, whatever order they have
        self.columns = next(csv.reader([header])) if header else None

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


def _fmt_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# --------------------------------------------------------------------------- resume
#
# What keras.callbacks.BackupAndRestore (Keras 3, double_checkpoint=True) writes in the checkpoint
# folder at the end of every epoch, in this order, none of it atomically:
#   1. latest.weights.h5 copied to latest.weights.h5.bkp       (from the second epoch on)
#   2. training_metadata.json copied to training_metadata.json.bkp
#   3. latest.weights.h5 rewritten (weights and optimizer state)
#   4. training_metadata.json rewritten: {"epoch": epochs done}
# then HistoryLogger appends the epoch's row to history/<model>.csv. A kill can stop the run between
# any two of these writes or in the middle of one; _prepare_resume must find a consistent point from
# whatever that leaves (tests/test_train_hostile.py kills it at each one).

WEIGHTS, STATE, PREVIOUS, RUN_FILE = "latest.weights.h5", "training_metadata.json", ".bkp", "run.json"


@dataclass(frozen=True)
class _Pair:
    """One checkpoint: weights and the epoch count that goes with them."""

    label: str
    weights: Path
    state: Path


def _pairs(backup: Path) -> tuple[_Pair, _Pair]:
    return (_Pair("latest", backup / WEIGHTS, backup / STATE),
            _Pair("Keras' copy of the epoch before", backup / (WEIGHTS + PREVIOUS), backup / (STATE + PREVIOUS)))


def _prepare_resume(artifacts: Artifacts, config: TrainConfig, data_sha256: str, mode: str, trainable: keras.Model,
                    log: TextIO) -> int:
    """Return the epoch to resume from, and leave the checkpoint and the history CSV agreeing on it.

    The rule: resume from the newest checkpoint (the latest pair, else Keras' copy of the one before)
    whose two files are whole and whose epochs all have a whole row in the history; drop the history
    rows after it. Why each part:

    - the history row of an epoch is written after its checkpoint, so a kill between the two leaves
      a checkpoint one epoch ahead of the history. Resuming from it would never write that row (the
      final history would lack an epoch and the metadata count one short); the copy of the epoch
      before is exactly one behind, so the run resumes there and trains that epoch again.
    - a kill while Keras rewrites the weights or training_metadata.json damages the latest pair,
      while the copy made just before is whole; a kill while Keras makes that copy damages only the
      copy, and the latest pair is whole.
    - weights are trusted only with the epoch count written after them (the same pair): a copy's
      weights with the latest count, or the reverse, would train an epoch twice or skip one.
    - when no pair qualifies (a kill in the first epoch, a foreign or damaged folder) the checkpoint
      is discarded with one line and the run starts over: slower, never wrong.

    ``trainable`` (compiled) tells what a whole weights file holds. The checkpoint's ``run.json`` guards
    against resuming another configuration's or data's checkpoint.
    """
    backup = artifacts.backup_dir(config.model)
    history = artifacts.history_file(config.model)
    # config.identity(): every field, precision included unless fp32 (as before --precision existed),
    # so a bf16 checkpoint is never resumed as fp32 nor the reverse.
    identity = {"config": config.identity(), "data_sha256": data_sha256, "mode": mode}
    _remove_discarded(backup)
    resume_epoch, reason, pair = 0, "", None
    if backup.is_dir():
        reason = _identity_problem(backup / RUN_FILE, identity)
        if not reason:
            resume_epoch, reason, pair = _resume_point(backup, history, config.epochs, trainable)
        if not resume_epoch:
            print(f"[{config.model}] discarding checkpoint {backup}: {reason}", file=log)
            _discard(backup)
    if not resume_epoch:
        backup.mkdir(parents=True, exist_ok=True)
        write_json_atomic(backup / RUN_FILE, identity)  # atomic: a kill here cannot leave a run.json cut short
        history.unlink(missing_ok=True)
        return 0
    if pair is not None and pair.label != "latest":
        print(f"[{config.model}] checkpoint {backup}: {reason}; using {pair.label}", file=log)
        _restore_previous(backup)
    header, rows = _read_history(history)
    _write_history(history, header, rows[:resume_epoch])
    print(f"[{config.model}] resuming at epoch {resume_epoch + 1}/{config.epochs} from {backup}", file=log)
    return resume_epoch


def _identity_problem(run_file: Path, identity: dict) -> str:
    """Why the checkpoint may not be resumed by this run; "" when it may."""
    try:
        saved = json.loads(run_file.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return f"it has no {RUN_FILE} (a run stopped while it started or finished)"
    except (OSError, ValueError):  # ValueError: not UTF-8 or not JSON, as a kill mid-write left it
        return f"its {RUN_FILE} is unreadable"
    if saved != identity:
        return "it was made with another configuration or data"
    return ""


def _resume_point(backup: Path, history: Path, epochs: int, trainable: keras.Model) -> tuple[int, str, _Pair | None]:
    """(epochs done, what was wrong with the pairs passed over, the pair chosen); 0 and no pair if none qualifies."""
    _, rows = _read_history(history)
    problems: list[str] = []
    expected: dict | None = None
    for pair in _pairs(backup):
        done = _epochs_done(pair.state, epochs)
        if done is None:
            problems.append(f"{pair.state.name} is {'unreadable' if pair.state.exists() else 'missing'}")
            continue
        if done > len(rows):
            problems.append(f"{pair.state.name} counts {done} epoch(s), the history {history.name} has {len(rows)}")
            continue
        if expected is None:
            expected = _expected_layout(trainable, backup)
        if not pair.weights.exists() or _weights_layout(pair.weights) != expected:
            problems.append(f"{pair.weights.name} is {'damaged' if pair.weights.exists() else 'missing'}")
            continue
        return done, "; ".join(problems), pair
    return 0, "; ".join(problems) if any(p.state.exists() for p in _pairs(backup)) else "no epoch had finished", None


def _epochs_done(state: Path, epochs: int) -> int | None:
    """The epoch count in a training_metadata.json, or None if it is unreadable or impossible for this run."""
    try:
        done = json.loads(state.read_bytes().decode("utf-8"))["epoch"]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None
    if isinstance(done, bool) or not isinstance(done, int) or not 1 <= done <= epochs:
        return None
    return done


def _weights_layout(path: Path) -> dict[str, tuple] | None:
    """Every array in a ``.weights.h5`` file by name, with shape and dtype, after reading each; None if damaged.

    A file cut short fails to open or to read; one whose writer died before it was closed may open
    with arrays missing, which the comparison with the expected layout catches.
    """
    layout: dict[str, tuple] = {}

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset):
            item[()]
            layout[name] = (item.shape, str(item.dtype))

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except Exception:  # noqa: BLE001 - h5py raises OSError, KeyError, RuntimeError... for a damaged file
        return None
    return layout


def _expected_layout(model: keras.Model, folder: Path) -> dict[str, tuple] | None:
    """The layout of a whole checkpoint of ``model``: its weights and its optimizer's, as BackupAndRestore saves them."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # as BackupAndRestore does before it loads
    with writing(folder), tempfile.TemporaryDirectory(dir=folder, prefix=".expected-") as tmp:
        path = Path(tmp) / "expected.weights.h5"
        model.save_weights(path)
        return _weights_layout(path)


def _restore_previous(backup: Path) -> None:
    """Make Keras' copy of the epoch before the latest pair, in an order a kill cannot make inconsistent.

    The latest count goes first: until both copies are in place the latest pair has no count, so a
    rerun chooses the copy again; each file is replaced whole.
    """
    (backup / STATE).unlink(missing_ok=True)
    for name in (WEIGHTS, STATE):
        with writing(backup / name), atomic_path(backup / name) as tmp:
            shutil.copyfile(backup / (name + PREVIOUS), tmp)


def _read_history(path: Path) -> tuple[str | None, list[str]]:
    """The history CSV's header line and its whole rows, stopping at the first that is not epoch i on row i.

    A kill during an append leaves a last line without its newline: not whole. Rows after a gap or a
    repeated epoch (two writers at once, before the locks) are not trusted either.
    """
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None, []
    lines = [line.rstrip("\r") for line in text.split("\n")[:-1]]  # the last piece: "" or a line cut short
    header = next(csv.reader(lines[:1]), [])
    if not header or header[0] != "epoch":
        return None, []
    rows: list[str] = []
    for line in lines[1:]:
        cells = next(csv.reader([line]), [])
        if len(cells) != len(header) or cells[0] != str(len(rows)):
            break
        try:
            [float(cell) for cell in cells[1:]]
        except ValueError:
            break
        rows.append(line)
    return lines[0], rows


def _write_history(path: Path, header: str | None, rows: list[str]) -> None:
    if header is None or not rows:
        path.unlink(missing_ok=True)
        return
    with writing(path):
        write_text_atomic(path, "\n".join([header, *rows]) + "\n")


def _discard(folder: Path) -> None:
    """Remove a checkpoint folder all at once: renamed aside first (atomic), then deleted.

    A kill while deleting in place could leave a folder with some files gone, which a rerun would
    have to make sense of; a folder renamed aside is never read again.
    """
    if not folder.exists():
        return
    aside = folder.with_name(f".{folder.name}.discarded-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    folder.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def _remove_discarded(folder: Path) -> None:
    """What a kill during _discard left aside."""
    for aside in folder.parent.glob(f".{folder.name}.discarded-*"):
        shutil.rmtree(aside, ignore_errors=True)


# --------------------------------------------------------------------------- features

def _weights_digest(model: keras.Model) -> str:
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def base_features(base: keras.Model, dataset: Dataset, cache_dir: Path, name: str,
                  precision: str = "fp32") -> tuple[np.ndarray, float, bool]:
    """Features of the frozen base for every image; cached under a key of model, base weights, data and precision.

    A bf16 base computes other features from the same float32 weights, so a non-fp32 precision is
    part of the key (fp32 keys are as before it existed). Features are kept as float32 (bf16 values
    are exact in it; numpy cannot save bfloat16 without pickling).
    Returns (features, seconds spent computing them, whether they came from the cache).
    """
    identity = f"{name}:{_weights_digest(base)}:{dataset.sha256}" + (f":{precision}" if precision != "fp32" else "")
    key = hashlib.sha256(identity.encode()).hexdigest()[:20]
    path = cache_dir / f"{name}-{key}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False), 0.0, True
    start = time.perf_counter()
    features = np.asarray(base.predict(images(dataset), batch_size=FEATURE_BATCH, verbose=0), dtype=np.float32)
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

    if built.head is not None and feature_cache:
        features, feature_s, cached = base_features(built.base, dataset, artifacts.features_dir(), config.model,
                                                    config.precision)
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
    # After compiling: a checkpoint's weights are checked against what this model and optimizer save.
    resume_epoch = _prepare_resume(artifacts, config, dataset.sha256, "through-base" if through_base else "default",
                                   trainable, log)
    extras = list(extra_callbacks or [])
    callbacks: list[keras.callbacks.Callback] = [
        EpochTimer(),
        # Callbacks that write files an epoch's checkpoint vouches for (the sweep's weight snapshots)
        # run before it: a kill after the checkpoint then never finds them missing.
        *(c for c in extras if getattr(c, "before_checkpoint", False)),
        # Kept after fit() (delete_checkpoint=False): a kill while evaluating or saving must not lose
        # the finished epochs. train_one discards it once everything is written.
        Checkpoint(str(artifacts.backup_dir(config.model)), double_checkpoint=True, delete_checkpoint=False),
        HistoryLogger(artifacts.history_file(config.model)),
    ]
    if not quiet:
        callbacks.append(EpochProgress(config.model, config.epochs, log))
    callbacks.extend(c for c in extras if not getattr(c, "before_checkpoint", False))

    # The batch order then depends on the seed alone, not on what building the model drew. Seeds
    # are below 2**32 (the CLI checks); a resumed run's offset must not push one past it.
    keras.utils.set_random_seed((config.seed + resume_epoch) % 2**32)
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
    _discard(artifacts.backup_dir(name))
