"""What to benchmark: the exported files (from ``onnx/manifest.json``) and the test split they are judged on.

Imports no TensorFlow: an edge machine needs only the ``onnx/`` folder and the data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.artifacts import Artifacts
from trainer.data import reload_dataset, split_dataset

VARIANTS = ("fp32", "fp16", "int8")
PROVIDERS = ("cuda", "cpu")


class NothingToBench(RuntimeError):
    pass


@dataclass(frozen=True)
class Case:
    model: str
    variant: str
    provider: str
    path: Path

    @property
    def id(self) -> str:
        return f"{self.model}-{self.variant}-{self.provider}"


@dataclass(frozen=True)
class HeldOutSplit:
    x: np.ndarray  # (N, 28, 28, 1) float32
    y: np.ndarray
    class_names: tuple[str, ...]
    source: str


def read_manifest(artifacts: Artifacts) -> dict:
    path = artifacts.onnx_dir / "manifest.json"
    if not path.exists():
        raise NothingToBench(f"{path}: nothing exported yet; run: fmnist-train all && fmnist-export all"
                             f" (with --artifacts {artifacts.root} if that is not the default)")
    return json.loads(path.read_text())


def discover(artifacts: Artifacts, models: list[str] | None = None, variants: list[str] | None = None,
             providers: list[str] | None = None) -> list[Case]:
    """Every exported (model, variant) on every provider asked for, in manifest order."""
    manifest = read_manifest(artifacts)
    cases = []
    for row in manifest["files"].values():
        if models and row["model"] not in models or variants and row["variant"] not in variants:
            continue
        for provider in providers or PROVIDERS:
            cases.append(Case(row["model"], row["variant"], provider, artifacts.onnx_dir / row["file"]))
    if not cases:
        raise NothingToBench(f"{artifacts.onnx_dir}: no exported file matches models={models} variants={variants}")
    return cases


def load_test_split(artifacts: Artifacts, model: str, data: str | None = None) -> HeldOutSplit:
    """The test split of the data ``model`` was trained on (hash-checked), as the model's input tensor."""
    record = read_manifest(artifacts)["models"][model]
    dataset = reload_dataset(record["data"], record["limit"], data)
    test = split_dataset(dataset).test
    return HeldOutSplit(test.x[..., np.newaxis], test.y, tuple(record["data"]["class_names"]), dataset.source)
