"""Training as a library: load the data, train one model, write its artifacts and metadata.

The command line (trainer/cli.py) and the sweep (trainer/sweep.py) both call ``train_one``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import keras
import numpy as np
import pandas as pd

from trainer import data as data_mod
from trainer.artifacts import Artifacts, atomic_path, write_json_atomic, writing
from trainer.config import TrainConfig
from trainer.data import Dataset, Splits
from trainer.environment import machine_info
from trainer.evaluation import Evaluation, evaluate
from trainer.fit import FitOutcome, compile_for_training, discard_checkpoint, dtype_policy, fit
from trainer.locks import exclusive
from trainer.models import BuiltModel, create_model, get_spec
from trainer.plots import accuracy_loss_plot
from trainer.reports import RunMetadata

SPLIT_PROTOCOL = "train_test_split(test_size=0.2, random_state=0), then 0.5: test first, val second"
FAILED_DIR = "failed"  # artifacts/failed/<model>-<time>/: a run that trained to no result, kept to look at


class TrainingFailed(RuntimeError):
    """A model trained to no result (a loss or weights not finite); the message says where its files went."""

    def __init__(self, message: str, kept: Path | None = None):
        super().__init__(message)
        self.kept = kept  # the folder its history and model were set aside in; None for a summary of several


def load_data(artifacts: Artifacts, data: str | os.PathLike | None = None, class_map: str | None = None,
              limit: int | None = None, quiet: bool = False, log: TextIO | None = None) -> tuple[Dataset, Splits]:
    """The data set and its split; the artifacts folder is checked first, so that a run fails in a second, not
    after the data has loaded. ``class_map`` is the ``--class-map`` text (None: the report's pairs)."""
    log = log or sys.stdout
    artifacts.ensure(artifacts.root, artifacts.reports_dir, artifacts.plot_file("samples").parent)
    dataset = data_mod.load_dataset(data, data_mod.parse_class_map(class_map)).limit(limit)
    splits = data_mod.split_dataset(dataset).require_every_class()
    if not quiet:
        print(f"data: {dataset.source}, {len(dataset)} images, split {splits.sizes()}", file=log, flush=True)
    return dataset, splits


def model_lock(artifacts: Artifacts, name: str) -> contextlib.AbstractContextManager[None]:
    """The lock of one model's files in one artifacts folder: two runs writing them at once corrupt each other's
    checkpoint and history, so the second is refused at once (LockedError naming the holder). One process may
    nest holds, so the command line can take it before loading the data."""
    return exclusive(artifacts.lock_file(name), f"{name} in {artifacts.root} (its model, history and checkpoint)")


def train_one(config: TrainConfig, dataset: Dataset, splits: Splits, artifacts: Artifacts, quiet: bool = False,
              extra_callbacks: list[keras.callbacks.Callback] | None = None, log: TextIO | None = None,
              feature_cache: bool = True) -> RunMetadata:
    """Train, evaluate and save one model; returns the metadata written beside its ``.keras`` file.

    Resumes from a checkpoint of the same configuration and data; the checkpoint is discarded only
    once the model and its metadata are written, so a kill at any point loses no finished epoch.
    A model whose loss or weights are not finite is not published: TrainingFailed names the folder
    its history and model went to.
    Holds the model's lock (``model_lock``) throughout; a write that fails (a full disk) raises
    ArtifactsError naming the file, and leaves no file half written.
    """
    log = log or sys.stdout
    with model_lock(artifacts, config.model):
        spec = get_spec(config.model)
        keras.utils.set_random_seed(config.seed)
        with dtype_policy(config.precision):  # the layers keep it; the global policy is restored after building
            built = create_model(config.model, base_weights=config.base_weights)
        if not quiet:
            print(f"[{config.model}] {spec.display_name}: {built.model.count_params():,} parameters, "
                  f"{config.epochs} epochs, batch {config.batch_size}, {config.optimizer} lr {config.lr:g}, "
                  f"precision {config.precision}, base weights: {built.base_weights}", file=log, flush=True)

        outcome = fit(built, dataset, splits, config, artifacts, quiet=quiet, extra_callbacks=extra_callbacks, log=log,
                      feature_cache=feature_cache)
        problem = _divergence(built.model, outcome.history, config.epochs)
        if problem:
            raise _set_aside(config, built, artifacts, problem)
        if built.head is not None and feature_cache:
            compile_for_training(built.model, config)  # the full model (base + head) is what gets evaluated
        result = evaluate(built.model, splits.test)

        model_path, plot_path = artifacts.model_file(config.model), artifacts.plot_file(config.model)
        artifacts.ensure(model_path.parent, plot_path.parent)
        with writing(model_path), atomic_path(model_path) as tmp:
            built.model.save(tmp)
        with writing(plot_path):
            accuracy_loss_plot(outcome.history, f"{spec.display_name}: accuracy and loss", plot_path)

        metadata = build_metadata(config, built, dataset, splits, outcome, result, model_path)
        metadata_path = artifacts.metadata_file(config.model)
        with writing(metadata_path):
            metadata.write(metadata_path)
        discard_checkpoint(artifacts, config.model)
        if not quiet:
            print(f"[{config.model}] test accuracy {result.accuracy:.4f}, loss {result.loss:.4f}; "
                  f"evaluate {result.evaluate_s * 1000:.0f} ms, predict {result.predict_s * 1000:.0f} ms; "
                  f"trained in {outcome.training_time_s / 60:.2f} min -> {model_path}", file=log, flush=True)
            print(result.classification_report_text, file=log, flush=True)
        return metadata


def _divergence(model: keras.Model, history: pd.DataFrame, epochs: int) -> str:
    """Why a trained model is no result, "" when it is one: a loss or a weight that is not finite."""
    last = history.iloc[-1]
    epoch = f"epoch {int(last['epoch']) + 1}/{epochs}"
    for name in ("loss", "val_loss"):
        if not np.isfinite(last[name]):
            return f"{name} {last[name]} at {epoch}"
    if not all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights):
        return f"weights not finite after {epoch}"
    return ""


def _set_aside(config: TrainConfig, built: BuiltModel, artifacts: Artifacts, problem: str) -> TrainingFailed:
    """Move a diverged run's history, with its model as it ended, out of the next run's way; the error to raise.
    Its checkpoint goes too: resuming a run that diverged would only diverge again."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    aside = artifacts.root / FAILED_DIR / f"{config.model}-{stamp}"
    artifacts.ensure(aside.parent)
    with writing(aside), tempfile.TemporaryDirectory(prefix=f".{aside.name}.", suffix=".tmp", dir=aside.parent,
                                                      ignore_cleanup_errors=True) as staging:
        built.model.save(Path(staging, f"{config.model}.keras"))
        write_json_atomic(Path(staging, "failure.json"), {"problem": problem, "config": asdict(config)})
        shutil.copyfile(artifacts.history_file(config.model), Path(staging, f"{config.model}.csv"))
        os.replace(staging, aside)  # one rename: the folder is there whole or not at all
    artifacts.history_file(config.model).unlink()
    discard_checkpoint(artifacts, config.model)
    return TrainingFailed(f"{config.model} diverged ({problem}): not published; its history and the model as it "
                          f"ended are in {aside}; try a lower learning rate than {config.lr:g} (--lr)", kept=aside)


def build_metadata(config: TrainConfig, built: BuiltModel, dataset: Dataset, splits: Splits, outcome: FitOutcome,
                   result: Evaluation, model_path: Path) -> RunMetadata:
    """Everything a report or an exporter needs about a trained model, so neither reloads it to find out."""
    spec = get_spec(config.model)
    model = built.model
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    last = outcome.history.iloc[-1]
    return RunMetadata(
        model=config.model,
        display_name=spec.display_name,
        config=asdict(config),
        data={
            "source": dataset.source, "sha256": dataset.sha256, "images": len(dataset),
            "class_names": list(dataset.class_names),
            "class_map": list(dataset.class_map) if dataset.class_map else None,
            "split": splits.sizes(), "split_protocol": SPLIT_PROTOCOL,
        },
        base_weights=built.base_weights,
        params={"total": model.count_params(), "trainable": trainable, "non_trainable": model.count_params() - trainable},
        training={
            "training_time_s": outcome.training_time_s,
            "feature_extraction_s": outcome.feature_extraction_s,
            "features_from_cache": outcome.features_cached,
            "through_frozen_base": outcome.through_frozen_base,
            "epochs_run": len(outcome.history),
            "resumed_from_epoch": outcome.resumed_from_epoch,
            "median_epoch_s": float(outcome.history["epoch_time_s"].median()),
        },
        final_epoch={k: float(last[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
        test=asdict(result),
        model_file={"path": str(model_path), "sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
                    "bytes": model_path.stat().st_size},
        machine=machine_info(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # config["precision"] is what was asked; the policy is what the model's layers were built with
        # (mixed_bfloat16: float32 variables, bfloat16 compute, the softmax output in float32).
        extra={"conv_layers": spec.conv_layers, "precision": config.precision, "dtype_policy": model.dtype_policy.name,
               # A model of the user's: the model file that built it (--model-file).
               **({"model_file": {"path": spec.source_file, "sha256": spec.source_sha256}} if spec.source_file else {})},
    )
