"""The experiment store: ``reports/experiments.csv``, one row per swept configuration.

Its path (``Artifacts.experiments_file``), columns, row keys, and how rows are read and added are
here only, so the sweep that writes rows and the report that reads them cannot drift apart.

A row's key is a hash of its full configuration and the data's hash: the same configuration on the
same data is the same row, whichever sweep asked for it. Imports no TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd

from trainer.artifacts import Artifacts, ArtifactsError, atomic_path
from trainer.config import TrainConfig

EXPERIMENT_COLUMNS = [
    "key", "model", "sweep", "optimizer", "batch_size", "lr", "epochs", "seed", "base_weights", "limit", "precision",
    "train_accuracy", "val_accuracy", "train_loss", "val_loss", "test_accuracy", "test_loss",
    "training_time_min", "measured_as", "data_sha256", "run_dir", "created_at",
]
SWEEP_SEPARATOR = "; "  # between the names of the sweeps one row belongs to
# Columns added after tables were written, with the value every row of an older table had.
LATER_COLUMNS = {"precision": "fp32"}  # every run before --precision trained in float32


class ExperimentsError(ArtifactsError, ValueError):
    """experiments.csv cannot be read as the experiment store; the message names it (a ValueError, as pandas' were)."""


def row_key(config: TrainConfig, data_sha256: str) -> str:
    """The identity of a row: 16 hex digits of its configuration and data (``TrainConfig.identity`` leaves out an
    fp32 precision: rows written before ``--precision`` keep their keys)."""
    return hashlib.sha256(json.dumps([config.identity(), data_sha256], sort_keys=True).encode()).hexdigest()[:16]


def run_dir(artifacts: Artifacts, config: TrainConfig, data_sha256: str) -> Path:
    """The artifacts folder of the training run behind a row (its model, history, snapshots)."""
    return artifacts.root / "experiments" / f"{config.model}-{row_key(config, data_sha256)}"


def read_experiments(path: Path) -> pd.DataFrame:
    """Every row in ``path``, columns in EXPERIMENT_COLUMNS' order; an empty table when there is no file yet."""
    if not path.exists():
        return pd.DataFrame(columns=EXPERIMENT_COLUMNS)
    try:  # keys stay strings (an all-digit hex key is no number), "n/a" (no base weights) stays text
        table = pd.read_csv(path, dtype={"key": str, "sweep": str, "base_weights": str}, keep_default_na=False,
                            na_values=[""])
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=EXPERIMENT_COLUMNS)  # an empty file: no rows yet
    except ValueError as exc:  # pandas' ParserError and a UnicodeDecodeError are ValueErrors
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        message = f"{path}: not an experiment table ({reason}); move it aside to start a new one"
        raise ExperimentsError(message) from None
    # A table from before a column: its rows had the old value.
    table = table.assign(**{column: value for column, value in LATER_COLUMNS.items() if column not in table.columns})
    missing = [c for c in EXPERIMENT_COLUMNS if c not in table.columns]
    if missing:
        raise ExperimentsError(f"{path}: not an experiment table (no {', '.join(missing[:5])}"
                               f"{' ...' if len(missing) > 5 else ''} column); move it aside to start a new one")
    return table.reindex(columns=[*EXPERIMENT_COLUMNS, *(c for c in table.columns if c not in EXPERIMENT_COLUMNS)])


def done_keys(path: Path) -> set[str]:
    """The keys already measured: a sweep skips them unless forced."""
    return set(read_experiments(path)["key"])


def append_rows(path: Path, rows: list[dict]) -> None:
    """Add ``rows``; a row rerun or re-measured (say Table 2's 5-epoch Adam run, again as epoch 5 of
    Table 5's 7-epoch run) replaces the old one but keeps the sweeps it belonged to."""
    table = read_experiments(path)
    earlier = dict(zip(table["key"], table["sweep"].astype(str)))
    for row in rows:
        row["sweep"] = _with_sweep(earlier[row["key"]], row["sweep"]) if row["key"] in earlier else row["sweep"]
    table = table[~table["key"].isin([r["key"] for r in rows])]
    _write(path, pd.concat([table, pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS)], ignore_index=True))


def add_sweep_name(path: Path, keys: list[str], sweep_name: str) -> None:
    """A row shared by two sweeps (Adam, batch 128, lr 0.001 is in Tables 2, 3 and 4) belongs to both."""
    table = read_experiments(path)
    rows = table["key"].isin(keys)
    merged = table.loc[rows, "sweep"].astype(str).map(lambda names: _with_sweep(names, sweep_name))
    if (merged == table.loc[rows, "sweep"]).all():
        return
    table.loc[rows, "sweep"] = merged
    _write(path, table)


def _with_sweep(names: str, sweep_name: str) -> str:
    """``"optimizer=sgd,adam"`` + ``"lr=0.001,0.002"`` -> ``"optimizer=sgd,adam; lr=0.001,0.002"`` (once each)."""
    return SWEEP_SEPARATOR.join(dict.fromkeys([*names.split(SWEEP_SEPARATOR), sweep_name]))


def _write(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
