"""What to benchmark: the exported files of ``onnx/manifest.json``, each checked to be the very file the manifest
describes, on every runtime that runs its variant; and the test split they are judged on. Imports no TensorFlow:
an edge machine needs only the ``onnx/`` folder and the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.runtimes import RUNTIMES, Case
from exporter.contract import (VARIANTS, ContractError, Manifest, check_file_identity, is_imported, read_manifest,
                               read_metadata_props, sha256_of, verify_file)
from exporter.publish import current
from trainer.artifacts import Artifacts
from trainer.data import reload_dataset, source_location, split_dataset


class NothingToBench(RuntimeError):
    pass


@dataclass(frozen=True)
class HeldOutSplit:
    x: np.ndarray  # (N, 28, 28, 1) float32
    y: np.ndarray
    class_names: tuple[str, ...]
    source: str


def read_exports(artifacts: Artifacts) -> tuple[Path, Manifest]:
    """The live export generation and its manifest (resolved once, so a run sees one generation)."""
    onnx_dir = current(artifacts.onnx_dir)
    manifest = read_manifest(onnx_dir)
    if manifest is None or not manifest.files:
        raise NothingToBench(f"{artifacts.onnx_dir}: nothing exported yet; run: fmnist-train all && fmnist-export all"
                             f" (with --artifacts {artifacts.root} if that is not the default)")
    return onnx_dir, manifest


def discover(artifacts: Artifacts, models: list[str] | None = None, variants: list[str] | None = None,
             providers: list[str] | None = None, threads: tuple[int, ...] = (0,)) -> list[Case]:
    """Every exported (model, variant) on every runtime asked for, at each thread count (once for a runtime
    that takes none), in manifest order, each file verified against the manifest (sha256) and against its own
    metadata (model and variant)."""
    onnx_dir, manifest = read_exports(artifacts)
    exported = list(dict.fromkeys(f.model for f in manifest.files.values()))
    unknown = [m for m in models or () if m not in exported]
    if unknown:
        raise NothingToBench(f"--models {','.join(unknown)[:200]}: not exported in {artifacts.onnx_dir} "
                             f"(exported: {', '.join(exported)}); export with: fmnist-export MODEL")
    unknown = [v for v in variants or () if v not in VARIANTS]
    if unknown:
        raise NothingToBench(f"--variants {','.join(unknown)[:200]}: choose from {','.join(VARIANTS)}")
    runtimes = [runtime for key, runtime in RUNTIMES.items() if not providers or key in providers]
    cases = []
    for entry in manifest.files.values():
        if models and entry.model not in models or variants and entry.variant not in variants:
            continue
        path = verify_file(onnx_dir, entry)
        props = read_metadata_props(path)
        check_file_identity(props, entry, path)
        chosen = [runtime for runtime in runtimes if entry.variant in runtime.variants]
        # The reference rows must run the very .keras file the ONNX file was exported from. An imported file has
        # none, and a device may be given only the ONNX files: those rows are skipped with the reason (bench/runtimes).
        keras_file = artifacts.model_file(entry.model)
        if (any(runtime.from_keras for runtime in chosen) and not is_imported(props) and keras_file.is_file()
                and sha256_of(keras_file) != props.get("source_keras_sha256")):
            raise ContractError(f"{keras_file}: not the model {path.name} was exported from (sha256 differs: "
                                f"retrained since?); export again: fmnist-export {entry.model}")
        cases += [Case(entry.model, entry.variant, runtime.key, path, count) for runtime in chosen
                  for count in (threads if runtime.threads else (0,))]
    if not cases:
        raise NothingToBench(f"{artifacts.onnx_dir}: no exported file matches models={models} variants={variants} "
                             f"providers={providers} (keras and tflite need the fp32 file; peers the fp32 or int8 one)")
    return cases


def load_test_split(artifacts: Artifacts, model: str, data: str | None = None) -> HeldOutSplit:
    """The test split of the data ``model`` was trained on (hash-checked), as the model's input tensor. Without
    ``data``: where it was recorded, else a folder made by ``fmnist-bench pack`` on the device."""
    _, manifest = read_exports(artifacts)
    record = manifest.models[model]
    if data is None:
        recorded = Path(source_location(record["data"]["source"]))
        carried = artifacts.carried_data_dir() / recorded.name
        data = carried if carried.exists() and not recorded.exists() else None
    dataset = reload_dataset(record["data"], record["limit"], data)
    test = split_dataset(dataset).test
    return HeldOutSplit(test.x[..., np.newaxis], test.y, tuple(record["data"]["class_names"]), dataset.source)
