"""Per-model run metadata (JSON with a schema version) and the report's Table 1 built from it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Required, TypedDict

import pandas as pd

from trainer.schema import check_fields
from trainer.artifacts import Artifacts, ArtifactsError, atomic_path, clip, write_json_atomic, write_text_atomic
from trainer.catalog import NAME_PATTERN, model_order

METADATA_SCHEMA_VERSION = 1


# What the readers (Table 1, REPORT.md, the exporter) take from a metadata file without asking again, with the
# type they compute with: checked once at read time (trainer/schema.py), so a damaged or foreign file is one
# error naming it, not a KeyError later. A section may hold more than this.
class ConfigSection(TypedDict, total=False):
    optimizer: Required[str]
    epochs: Required[int]


class DataSection(TypedDict, total=False):
    source: Required[str]
    sha256: Required[str]
    images: Required[int]
    class_names: Required[list[str]]
    split: Required[dict[str, int]]
    split_protocol: Required[str]


class TrainingSection(TypedDict, total=False):
    training_time_s: Required[float]


class FinalEpochSection(TypedDict, total=False):
    loss: Required[float]
    accuracy: Required[float]
    val_loss: Required[float]
    val_accuracy: Required[float]


class TestSection(TypedDict, total=False):
    loss: Required[float]
    accuracy: Required[float]
    evaluate_s: Required[float]
    predict_s: Required[float]
    evaluate_warm_median_s: Required[float]
    predict_warm_median_s: Required[float]
    classification_report: Required[dict]
    confusion_matrix: Required[list[list[int]]]


class ModelFileSection(TypedDict, total=False):
    sha256: Required[str]


class MachineSection(TypedDict, total=False):
    cpu: Required[str]
    cores: Required[int]


class MetadataError(ArtifactsError, ValueError):
    """A ``models/<name>.json`` that cannot be this toolkit's metadata; the message names the file.

    An ArtifactsError, so every command that reports a damaged artifacts folder in one line (the
    exporter included) reports this too; a ValueError, as the schema check always raised.
    """

# Table 1 of the report (50 epochs, batch 128, Adam), for side-by-side comparison.
REPORT_TABLE1 = {
    "model1": dict(train_accuracy=0.9953, val_accuracy=0.8937, train_loss=0.0141, val_loss=0.6910, test_accuracy=0.9017, training_min=2.29),
    "model2": dict(train_accuracy=0.9527, val_accuracy=0.9057, train_loss=0.1224, val_loss=0.2599, test_accuracy=0.9148, training_min=2.27),
    "model3": dict(train_accuracy=0.9605, val_accuracy=0.9025, train_loss=0.0901, val_loss=0.2946, test_accuracy=0.9061, training_min=3.11),
    "model4": dict(train_accuracy=0.9674, val_accuracy=0.9210, train_loss=0.1309, val_loss=0.2542, test_accuracy=0.9285, training_min=4.53),
    "resnet50": dict(train_accuracy=0.7398, val_accuracy=0.7350, train_loss=0.6461, val_loss=0.6525, test_accuracy=0.7443, training_min=8.28),
    "vgg16": dict(train_accuracy=0.8244, val_accuracy=0.8176, train_loss=0.4486, val_loss=0.4596, test_accuracy=0.8182, training_min=5.74),
}

_COLUMNS = ("train_accuracy", "val_accuracy", "train_loss", "val_loss", "test_accuracy", "training_min")
# Tables 2-5 of the report: Model 4 with one parameter varied (Adam, batch 128, lr 1e-3, 50 epochs otherwise).
# Table 2 gives no training time.
REPORT_EXPERIMENTS = {
    "optimizer": {
        "sgd": dict(zip(_COLUMNS, (0.9101, 0.8982, 0.2492, 0.2828, 0.9008, None))),
        "adam": dict(zip(_COLUMNS, (0.9674, 0.9210, 0.1309, 0.2542, 0.9285, None))),
    },
    "batch_size": {
        16: dict(zip(_COLUMNS, (0.9407, 0.9163, 0.2387, 0.3057, 0.9238, 13.88))),
        32: dict(zip(_COLUMNS, (0.9428, 0.9142, 0.2043, 0.2928, 0.9117, 8.36))),
        64: dict(zip(_COLUMNS, (0.9581, 0.9128, 0.1691, 0.2910, 0.9218, 5.91))),
        128: dict(zip(_COLUMNS, (0.9674, 0.9210, 0.1309, 0.2542, 0.9285, 4.53))),
    },
    "lr": {
        0.01: dict(zip(_COLUMNS, (0.8488, 0.8359, 0.5689, 0.5465, 0.8349, 5.22))),
        0.02: dict(zip(_COLUMNS, (0.8772, 0.8657, 0.3587, 0.3907, 0.8650, 4.69))),
        0.001: dict(zip(_COLUMNS, (0.9674, 0.9210, 0.1309, 0.2542, 0.9285, 4.53))),
        0.002: dict(zip(_COLUMNS, (0.9592, 0.9207, 0.1738, 0.2776, 0.9265, 4.73))),
    },
    "epochs": {
        10: dict(zip(_COLUMNS, (0.8948, 0.8719, 0.2996, 0.3580, 0.8802, 1.00))),
        30: dict(zip(_COLUMNS, (0.9477, 0.9163, 0.1679, 0.2522, 0.9188, 2.89))),
        50: dict(zip(_COLUMNS, (0.9674, 0.9210, 0.1309, 0.2542, 0.9285, 4.53))),
        70: dict(zip(_COLUMNS, (0.9777, 0.9255, 0.1089, 0.2628, 0.9277, 6.71))),
    },
}
# The report's timing of Model 4 on its 6,000 test images (Keras, %%time wall time).
REPORT_MODEL4_EVALUATE_MS, REPORT_MODEL4_PREDICT_MS = 581, 493


@dataclass
class RunMetadata:
    """Everything about one trained model that a report or an exporter needs; written as JSON."""

    model: str
    display_name: str
    config: ConfigSection
    data: DataSection
    base_weights: str
    params: dict
    training: TrainingSection
    final_epoch: FinalEpochSection
    test: TestSection
    model_file: ModelFileSection
    machine: MachineSection
    created_at: str
    schema_version: int = METADATA_SCHEMA_VERSION
    extra: dict = field(default_factory=dict)

    def write(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> "RunMetadata":
        """The metadata in ``path``, or MetadataError naming it (unreadable, not JSON, another schema)."""
        try:
            payload = json.loads(path.read_bytes().decode("utf-8"))
        except OSError as exc:
            raise MetadataError(f"{path}: cannot read the run metadata ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise MetadataError(f"{path}: not run metadata (not UTF-8 text); retrain the model to rewrite it") from None
        except json.JSONDecodeError as exc:
            raise MetadataError(f"{path}: not run metadata (not JSON: {exc.msg} at line {exc.lineno}); "
                                "retrain the model to rewrite it") from None
        if not isinstance(payload, dict):
            raise MetadataError(f"{path}: not run metadata (a JSON {type(payload).__name__}, expected an object)")
        version = payload.get("schema_version")
        if version != METADATA_SCHEMA_VERSION:
            raise MetadataError(f"{path}: metadata schema_version {clip(repr(version), 40)}, "
                                f"this toolkit reads {METADATA_SCHEMA_VERSION}")
        check_fields(payload, cls, str(path), MetadataError, "not this toolkit's run metadata:")
        return cls(**payload)


def trained_models(artifacts: Artifacts) -> list[str]:
    """Every model with run metadata in ``artifacts``: the six in the report's order, then the user's by name
    (trained with ``--model-file``; found by their files, so a report needs no model file to list them)."""
    folder = artifacts.metadata_file("model1").parent
    found = {path.stem for path in folder.glob("*.json") if NAME_PATTERN.fullmatch(path.stem)} if folder.is_dir() else set()
    return sorted(found, key=model_order)


def table1(artifacts: Artifacts, model_names: list[str]) -> pd.DataFrame:
    """Table 1 of the report, from the metadata of every trained model, with the report's numbers beside ours."""
    rows = []
    for name in model_names:
        path = artifacts.metadata_file(name)
        if not path.exists():
            continue
        meta = RunMetadata.read(path)
        ours = dict(
            train_accuracy=meta.final_epoch["accuracy"], val_accuracy=meta.final_epoch["val_accuracy"],
            train_loss=meta.final_epoch["loss"], val_loss=meta.final_epoch["val_loss"],
            test_accuracy=meta.test["accuracy"], training_min=meta.training["training_time_s"] / 60,
        )
        report = REPORT_TABLE1.get(name, {})
        rows.append({
            "Model": meta.display_name,
            "Layers": meta.extra.get("conv_layers") or "",
            "Optimizer": meta.config["optimizer"].capitalize() if meta.config["optimizer"] == "adam" else meta.config["optimizer"].upper(),
            "Epochs": meta.config["epochs"],
            # Metadata written before --precision has none: those models trained in float32.
            "Precision": meta.config.get("precision", "fp32"),
            "Train Accuracy": ours["train_accuracy"],
            "Val Accuracy": ours["val_accuracy"],
            "Train Loss": ours["train_loss"],
            "Val Loss": ours["val_loss"],
            "Test Accuracy": ours["test_accuracy"],
            "Report Test Accuracy": report.get("test_accuracy"),
            "Δ Test Accuracy": ours["test_accuracy"] - report["test_accuracy"] if report else None,
            "Training Time (min)": ours["training_min"],
            "Report Training Time (min)": report.get("training_min"),
            "Base weights": meta.base_weights,
        })
    return pd.DataFrame(rows)


def write_table(frame: pd.DataFrame, stem: Path, caption: str) -> tuple[Path, Path]:
    """Write ``stem``.csv and ``stem``.md (a caption, then the table)."""
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with atomic_path(csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    write_text_atomic(md_path, f"{caption}\n\n{frame.to_markdown(index=False, floatfmt='.4f')}\n")
    return csv_path, md_path
