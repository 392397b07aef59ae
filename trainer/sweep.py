"""``fmnist-train sweep``: the report's experiment tables as grids of training runs.

    fmnist-train sweep model4 --grid optimizer=sgd,adam
    fmnist-train sweep model4 --grid batch_size=16,32,64,128
    fmnist-train sweep model4 --grid epochs=10,30,50,70        # one 70-epoch run, evaluated at 10/30/50/70

Every row goes to the experiment store (trainer/experiments.py) keyed by its configuration and the data's hash;
a row whose key is there already is not run again unless ``force`` (an interrupted sweep resumes).

Configurations that differ only in the epoch count share one run to the largest count: the weights are kept at
each requested epoch and evaluated there, the same test accuracy as stopping there (``measured_as`` says so).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import keras
import pandas as pd

from trainer import experiments
from trainer.artifacts import Artifacts, atomic_path, clip, writing
from trainer.config import DEFAULTS, TrainConfig
from trainer.data import Dataset, Splits
from trainer.evaluation import evaluate
from trainer.fit import compile_for_training
from trainer.models import get_spec, load_trained
from trainer.locks import exclusive
from trainer.training import TrainingFailed, model_lock, train_one

GRID_TYPES = {"optimizer": str, "batch_size": int, "lr": float, "epochs": int, "seed": int}
MAX_SEED = 2**32 - 1  # keras.utils.set_random_seed takes 0 to 2**32 - 1
MAX_COUNT = 2**31 - 1  # epochs and batch sizes past TensorFlow's int32 shapes are typos
# What a value can be trained with, and that in words: NaN and infinite rates train to NaN and exit 0 otherwise.
_COUNT = (lambda count: 1 <= count <= MAX_COUNT, f"1 to {MAX_COUNT}")
_RANGES = {"batch_size": _COUNT, "epochs": _COUNT, "seed": (lambda seed: 0 <= seed <= MAX_SEED, f"0 to {MAX_SEED}"),
           "lr": (lambda lr: math.isfinite(lr) and lr > 0, "a finite number above 0")}
# How long a finished run waits for another sweep to finish rewriting experiments.csv (milliseconds, normally).
STORE_WAIT_S = 60.0


class SweepError(ValueError):
    """A --grid that cannot be run; the message names it."""


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["optimizer=sgd,adam", "lr=0.01,0.001"]`` -> ``{"optimizer": ["sgd", "adam"], "lr": [0.01, 0.001]}``."""
    grid: dict[str, list] = {}
    for item in items:
        name, _, values = item.partition("=")
        shown = repr(clip(item))  # a pasted file must not become the error line
        if name not in GRID_TYPES or not values:
            raise SweepError(f"--grid {shown}: expected NAME=V1,V2 with NAME one of {', '.join(GRID_TYPES)}")
        try:
            parsed = [GRID_TYPES[name](v.strip()) for v in values.split(",") if v.strip()]
        except ValueError:
            raise SweepError(f"--grid {shown}: {name} takes {GRID_TYPES[name].__name__} values") from None
        if not parsed:
            raise SweepError(f"--grid {shown}: no values")
        if name == "optimizer" and set(parsed) - set(DEFAULTS.optimizers):
            raise SweepError(f"--grid {shown}: optimizers are {' and '.join(DEFAULTS.optimizers)}")
        bad = next((v for v in parsed if name in _RANGES and not _RANGES[name][0](v)), None)
        if bad is not None:
            raise SweepError(f"--grid {shown}: {name} {clip(repr(bad), 40)} is impossible ({_RANGES[name][1]})")
        if name in grid:
            raise SweepError(f"--grid {name} given twice")
        grid[name] = list(dict.fromkeys(parsed))
    if not grid:
        raise SweepError("sweep needs at least one --grid NAME=V1,V2")
    return grid


def sweep_name(grid: dict[str, list]) -> str:
    """How the sweep is named in its rows: ``optimizer=sgd,adam``, the grid as the user wrote it."""
    return " ".join(f"{k}={','.join(map(str, v))}" for k, v in grid.items())


def expand(base: TrainConfig, grid: dict[str, list], lr_given: bool = False) -> list[TrainConfig]:
    """Every combination of the grid applied to ``base``.

    An optimizer without an explicit lr (neither in the grid nor ``lr_given`` by the user) runs at its own
    default rate, as the report's Table 2 did (``base.lr`` would run SGD ten times slower than Keras' default).
    """
    configs = []
    for values in itertools.product(*grid.values()):
        overrides = dict(zip(grid, values))
        if "optimizer" in overrides and "lr" not in overrides and not lr_given:
            overrides["lr"] = DEFAULTS.lr_for(overrides["optimizer"])
        configs.append(replace(base, **overrides))
    return configs


class EpochSnapshots(keras.callbacks.Callback):
    """Keeps the trainable weights at the requested (1-based) epochs; files survive an interrupted run."""

    before_checkpoint = True  # trainer/fit.py: once a checkpoint says an epoch is done, its snapshot is on disk

    def __init__(self, epochs: set[int], folder: Path):
        super().__init__()
        self.epochs, self.folder = epochs, folder

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch{epoch:04d}.weights.h5"

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.epochs:
            with writing(self.path(epoch + 1)), atomic_path(self.path(epoch + 1)) as tmp:
                self.model.save_weights(tmp)


def run_sweep(grid: dict[str, list], base: TrainConfig, dataset: Dataset, splits: Splits, artifacts: Artifacts, *,
              lr_given: bool = False, force: bool = False, quiet: bool = False,
              extra_callbacks: list[keras.callbacks.Callback] | None = None, log: TextIO | None = None,
              ray_address: str | None = None) -> list[dict]:
    """Run what is not in the experiment store yet; return the rows written by this call.

    ``base`` is a resolved configuration (trainer.config.resolve_config); its precision is every row's.
    ``lr_given`` says its lr was the user's, so a swept optimizer keeps it instead of its own default.
    A configuration that trains to no result (TrainingFailed) gets no row; the others run, and
    TrainingFailed names it at the end.

    Each run holds the lock of its own folder from training to its rows, and experiments.csv is rewritten
    under a lock of its own: two sweeps may share a folder, never a run, and neither loses the other's rows.
    ``ray_address`` runs each group as a Ray task instead (trainer/cluster.py); only this process writes the folder.
    """
    log = log or sys.stdout
    model = base.model
    get_spec(model)  # an unknown model fails here, before anything is written
    name = sweep_name(grid)
    store = artifacts.experiments_file
    artifacts.ensure(store.parent)
    pending, done = [], experiments.done_keys(store)
    for group in group_configs(expand(base, grid, lr_given)):
        keys = group.keys(dataset.sha256)
        if not force and all(k in done for k in keys.values()):
            with _storing(artifacts):
                experiments.add_sweep_name(store, list(keys.values()), name)
            print(f"[sweep] {model} {group.describe()}: already in {store}, skipped (--force reruns)", file=log)
        else:
            pending.append(group)

    written: list[dict] = []
    if ray_address is not None:
        from trainer import cluster  # noqa: PLC0415 - Ray only when asked for

        for group, rows in cluster.run_groups(pending, train_group, name, dataset, artifacts, ray_address, log):
            with _storing(artifacts):
                experiments.append_rows(artifacts.experiments_file, rows)
            written += rows
        return written
    failed = []
    for group in pending:
        run_artifacts = Artifacts(experiments.run_dir(artifacts, group.longest, dataset.sha256))
        with model_lock(run_artifacts, model):  # train_one takes it too; held here until the rows are written
            print(f"[sweep] {model} {group.describe()} -> {run_artifacts.root}", file=log, flush=True)
            try:
                rows = train_group(group, name, dataset, splits, run_artifacts, quiet=quiet,
                                   extra_callbacks=extra_callbacks, log=log)
            except TrainingFailed as exc:  # no row: a diverged run is no result; the others still run
                print(f"[sweep] {model} {group.describe()}: failed: {exc}", file=log, flush=True)
                failed.append(f"{group.describe()}: {exc}")
                continue
            with _storing(artifacts):
                experiments.append_rows(artifacts.experiments_file, rows)
        written += rows
    if failed:
        raise TrainingFailed(f"{len(failed)} of {len(pending)} configuration group(s) failed, no row written for "
                             f"them: {'; '.join(failed)}")
    return written


@dataclass(frozen=True)
class Group:
    """Configurations that differ only in their epoch count: one run to the largest, evaluated at each."""

    shared: TrainConfig  # epochs=0
    epochs: tuple[int, ...]

    @property
    def longest(self) -> TrainConfig:
        return replace(self.shared, epochs=max(self.epochs))

    def keys(self, data_sha256: str) -> dict[int, str]:
        return {e: experiments.row_key(replace(self.shared, epochs=e), data_sha256) for e in self.epochs}

    def describe(self) -> str:
        config = self.shared
        precision = f" precision={config.precision}" if config.precision != DEFAULTS.precision else ""
        return (f"optimizer={config.optimizer} lr={config.lr:g} batch_size={config.batch_size} seed={config.seed} "
                f"epochs={','.join(map(str, sorted(self.epochs)))}{precision}")


def group_configs(configs: list[TrainConfig]) -> list[Group]:
    groups: dict[TrainConfig, list[int]] = {}
    for config in configs:
        groups.setdefault(replace(config, epochs=0), []).append(config.epochs)
    return [Group(shared, tuple(epochs)) for shared, epochs in groups.items()]


def train_group(group: Group, name: str, dataset: Dataset, splits: Splits, run_artifacts: Artifacts, *,
                quiet: bool = False, extra_callbacks: list[keras.callbacks.Callback] | None = None,
                log: TextIO | None = None) -> list[dict]:
    """Train one group into ``run_artifacts`` and return its experiment rows (not yet stored)."""
    model, longest = group.shared.model, group.longest
    keys = group.keys(dataset.sha256)
    snapshots = EpochSnapshots(set(group.epochs), run_artifacts.root / "snapshots")
    meta = train_one(longest, dataset, splits, run_artifacts, quiet=quiet,
                     extra_callbacks=[snapshots, *(extra_callbacks or [])], log=log)
    history = pd.read_csv(run_artifacts.history_file(model))
    feature_s = meta.training["feature_extraction_s"]
    rows = []
    for epochs in sorted(group.epochs):
        if epochs == longest.epochs:
            test_loss, test_accuracy, measured_as = meta.test["loss"], meta.test["accuracy"], "own run"
        else:
            test_loss, test_accuracy = _evaluate_snapshot(run_artifacts, model, longest, snapshots.path(epochs), splits)
            measured_as = f"epoch {epochs} of a {longest.epochs}-epoch run"
        at = history[history["epoch"] == epochs - 1].iloc[0]
        rows.append({
            "key": keys[epochs], "model": model, "sweep": name,
            **{k: v for k, v in asdict(replace(group.shared, epochs=epochs)).items() if k != "model"},
            "base_weights": meta.base_weights, "train_accuracy": at["accuracy"], "val_accuracy": at["val_accuracy"],
            "train_loss": at["loss"], "val_loss": at["val_loss"], "test_accuracy": test_accuracy,
            "test_loss": test_loss,
            "training_time_min": (feature_s + history[history["epoch"] < epochs]["epoch_time_s"].sum()) / 60,
            "measured_as": measured_as, "data_sha256": dataset.sha256, "run_dir": str(run_artifacts.root),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
    return rows


@contextlib.contextmanager
def _storing(artifacts: Artifacts) -> Iterator[None]:
    """experiments.csv is read, changed and rewritten whole: one sweep at a time, waiting a little for another."""
    store = artifacts.experiments_file
    with exclusive(artifacts.lock_file("experiments"), f"the experiment table {store}", wait_s=STORE_WAIT_S), \
            writing(store):
        yield


def _evaluate_snapshot(run_artifacts: Artifacts, model: str, config: TrainConfig, weights: Path,
                       splits: Splits) -> tuple[float, float]:
    full = load_trained(run_artifacts.model_file(model))
    trainable = full.get_layer(f"{model}_head") if get_spec(model).transfer else full
    trainable.load_weights(weights)
    compile_for_training(full, config)
    result = evaluate(full, splits.test, repeats=1)
    return result.loss, result.accuracy
