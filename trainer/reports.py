"""Per-model run metadata (JSON with a schema version) and the report's Table 1 built from it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypedDict

import pandas as pd

from trainer.schema import check_fields
from trainer.artifacts import Artifacts, ArtifactsError, atomic_path, clip, write_json_atomic, write_text_atomic
from trainer.catalog import NAME_PATTERN, model_order

METADATA_SCHEMA_VERSION = 1


# What the readers (Table 1, REPORT.md, the exporter) take from a metadata file without asking again, with the
# type they compute with: checked once at read time (trainer/schema.py), so a damaged or foreign file is one
# error naming it, not a KeyError later. A section may hold more than this.
ConfigSection = TypedDict("ConfigSection", {"optimizer": str, "epochs": int})
DataSection = TypedDict("DataSection", {"source": str, "sha256": str, "images": int, "class_names": list[str],
                                        "split": dict[str, int], "split_protocol": str})
TrainingSection = TypedDict("TrainingSection", {"training_time_s": float})
FinalEpochSection = TypedDict("FinalEpochSection", {"loss": float, "accuracy": float, "val_loss": float,
                                                    "val_accuracy": float})
TestSection = TypedDict("TestSection", {"loss": float, "accuracy": float, "evaluate_s": float, "predict_s": float,
                                        "evaluate_warm_median_s": float, "predict_warm_median_s": float,
                                        "classification_report": dict, "confusion_matrix": list[list[int]]})
ModelFileSection = TypedDict("ModelFileSection", {"sha256": str})
MachineSection = TypedDict("MachineSection", {"cpu": str, "cores": int})


class MetadataError(ArtifactsError, ValueError):
    """A ``models/<name>.json`` that cannot be this toolkit's metadata; the message names the file. An
    ArtifactsError, so every command reports it in one line as a damaged artifacts folder."""


_REPORT_COLUMNS = ("train_accuracy", "val_accuracy", "train_loss", "val_loss", "test_accuracy", "training_min")


def _report_row(*values: float | None) -> dict[str, float | None]:
    return dict(zip(_REPORT_COLUMNS, values))


# Table 1 of the report (50 epochs, batch 128, Adam), for side-by-side comparison.
REPORT_TABLE1 = {
    "model1": _report_row(0.9953, 0.8937, 0.0141, 0.6910, 0.9017, 2.29),
    "model2": _report_row(0.9527, 0.9057, 0.1224, 0.2599, 0.9148, 2.27),
    "model3": _report_row(0.9605, 0.9025, 0.0901, 0.2946, 0.9061, 3.11),
    "model4": _report_row(0.9674, 0.9210, 0.1309, 0.2542, 0.9285, 4.53),
    "resnet50": _report_row(0.7398, 0.7350, 0.6461, 0.6525, 0.7443, 8.28),
    "vgg16": _report_row(0.8244, 0.8176, 0.4486, 0.4596, 0.8182, 5.74),
}
# Tables 2-5 of the report: Model 4 with one parameter varied (Adam, batch 128, lr 1e-3, 50 epochs otherwise).
# Table 2 gives no training time.
REPORT_EXPERIMENTS = {
    "optimizer": {"sgd": _report_row(0.9101, 0.8982, 0.2492, 0.2828, 0.9008, None),
                  "adam": _report_row(0.9674, 0.9210, 0.1309, 0.2542, 0.9285, None)},
    "batch_size": {16: _report_row(0.9407, 0.9163, 0.2387, 0.3057, 0.9238, 13.88),
                   32: _report_row(0.9428, 0.9142, 0.2043, 0.2928, 0.9117, 8.36),
                   64: _report_row(0.9581, 0.9128, 0.1691, 0.2910, 0.9218, 5.91),
                   128: _report_row(0.9674, 0.9210, 0.1309, 0.2542, 0.9285, 4.53)},
    "lr": {0.01: _report_row(0.8488, 0.8359, 0.5689, 0.5465, 0.8349, 5.22),
           0.02: _report_row(0.8772, 0.8657, 0.3587, 0.3907, 0.8650, 4.69),
           0.001: _report_row(0.9674, 0.9210, 0.1309, 0.2542, 0.9285, 4.53),
           0.002: _report_row(0.9592, 0.9207, 0.1738, 0.2776, 0.9265, 4.73)},
    "epochs": {10: _report_row(0.8948, 0.8719, 0.2996, 0.3580, 0.8802, 1.00),
               30: _report_row(0.9477, 0.9163, 0.1679, 0.2522, 0.9188, 2.89),
               50: _report_row(0.9674, 0.9210, 0.1309, 0.2542, 0.9285, 4.53),
               70: _report_row(0.9777, 0.9255, 0.1089, 0.2628, 0.9277, 6.71)},
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
        final, optimizer, test_accuracy = meta.final_epoch, meta.config["optimizer"], meta.test["accuracy"]
        report = REPORT_TABLE1.get(name, {})
        rows.append({
            "Model": meta.display_name,
            "Layers": meta.extra.get("conv_layers") or "",
            "Optimizer": optimizer.capitalize() if optimizer == "adam" else optimizer.upper(),
            "Epochs": meta.config["epochs"],
            "Precision": meta.config.get("precision", "fp32"),  # metadata from before --precision: float32
            "Train Accuracy": final["accuracy"],
            "Val Accuracy": final["val_accuracy"],
            "Train Loss": final["loss"],
            "Val Loss": final["val_loss"],
            "Test Accuracy": test_accuracy,
            "Report Test Accuracy": report.get("test_accuracy"),
            "Δ Test Accuracy": test_accuracy - report["test_accuracy"] if report else None,
            "Training Time (min)": meta.training["training_time_s"] / 60,
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
