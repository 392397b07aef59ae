"""The export contract: what an exported file looks like and where it lives, in one place.

Exporter writes to it and bench reads by it, so it imports no TensorFlow (bench runs on edge machines with
onnxruntime, numpy and scikit-learn alone): the graph's interface, the variants and their file names, the
manifest's schema and its reader, and the checks that a file or an output keeps to them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Required, TypedDict

import numpy as np

from exporter.publish import known_as
from trainer.data import IMAGE_SHAPE, NUM_CLASSES
from trainer.artifacts import clip
from trainer.schema import check_fields, mismatch

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
BATCH_DIM = "batch"
INPUT_SHAPE = (*IMAGE_SHAPE, 1)  # per image: (28, 28, 1) float32 in [0, 1]
OUTPUT_SHAPE = (NUM_CLASSES,)  # per image: softmax over the 5 classes
VARIANTS = ("fp32", "fp16", "int8")

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA_VERSION = 1
EXPECTED = (f"input {INPUT_NAME!r} float32 [batch, {', '.join(map(str, INPUT_SHAPE))}] and output "
            f"{OUTPUT_NAME!r} [batch, {NUM_CLASSES}] (export with fmnist-export)")
# An imported ONNX file (exporter/onnx_import.py) names its original here; a Keras export names its .keras file's
# sha256 under "source_keras_sha256" instead.
SOURCE_ONNX_PROP = "source_onnx_sha256"


class ContractError(ValueError):
    """A file, a manifest or an output breaks the contract; the message names it and what is wrong."""


def variant_filename(model: str, variant: str) -> str:
    """``model4.onnx`` for fp32 (the plain export), ``model4.int8.onnx`` for the others."""
    if variant not in VARIANTS:
        raise ContractError(f"variant {variant!r}: choose from {', '.join(VARIANTS)}")
    return f"{model}.onnx" if variant == "fp32" else f"{model}.{variant}.onnx"


# --------------------------------------------------------------------------- interface

def check_interface(inputs: Sequence, outputs: Sequence, source: Path | str) -> None:
    """Check a graph's inputs and outputs (onnxruntime ``NodeArg``s: name, shape, type) against the contract."""
    source = shown(source) if isinstance(source, Path) else source
    if len(inputs) != 1 or len(outputs) != 1:
        raise ContractError(f"{source}: {len(inputs)} inputs and {len(outputs)} outputs; expected {EXPECTED}")
    (inp,), (out,) = inputs, outputs
    if inp.name != INPUT_NAME or list(inp.shape[1:]) != list(INPUT_SHAPE) or inp.type != "tensor(float)":
        raise ContractError(f"{source}: input {inp.name!r} is {inp.type} {inp.shape}; expected {EXPECTED}")
    if out.name != OUTPUT_NAME or list(out.shape[1:]) != list(OUTPUT_SHAPE):
        raise ContractError(f"{source}: output {out.name!r} has shape {out.shape}; expected {EXPECTED}")


def check_output(probabilities: np.ndarray, images: int, source: str) -> None:
    """Shape before values: an ``(N, 1)`` output must never broadcast against ``(N, 5)`` into a pass."""
    expected = (images, *OUTPUT_SHAPE)
    if tuple(probabilities.shape) != expected:
        raise ContractError(f"{source}: output shape {tuple(probabilities.shape)}, expected {expected}")


# --------------------------------------------------------------------------- manifest

class ManifestModel(TypedDict, total=False):
    """What the manifest records per model: the data its test split comes from (bench needs no Keras for it)."""

    data: Required[dict]
    limit: Required[int | None]
    base_weights: Required[str | None]
    keras_file: Required[str | None]  # None: an imported ONNX file, which has no Keras source
    keras_test_accuracy: Required[float | None]


@dataclass(frozen=True)
class ManifestFile:
    """One exported file as the manifest records it."""

    file: str
    model: str
    variant: str
    opset: int
    bytes: int
    sha256: str
    validation: dict


@dataclass
class Manifest:
    """``onnx/manifest.json``: every exported file, and per model the data it was trained on (so bench needs no Keras)."""

    models: dict[str, dict] = field(default_factory=dict)
    files: dict[str, ManifestFile] = field(default_factory=dict)
    schema_version: int = MANIFEST_SCHEMA_VERSION

    def to_dict(self) -> dict:
        return {"schema_version": self.schema_version, "models": self.models,
                "files": {name: vars(entry) for name, entry in self.files.items()}}


def read_manifest(onnx_dir: Path) -> Manifest | None:
    """The manifest in ``onnx_dir``, checked against this schema; None when there is none yet."""
    path = onnx_dir / MANIFEST_NAME
    if not path.exists():
        return None
    named = shown(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"{named}: not a readable manifest ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(payload, dict):
        raise ContractError(f"{named}: not a manifest (expected a JSON object)")
    if payload.get("schema_version") != MANIFEST_SCHEMA_VERSION:
        raise ContractError(f"{named}: manifest schema_version {_quoted(payload.get('schema_version'))}, "
                            f"this toolkit reads {MANIFEST_SCHEMA_VERSION}; export again with fmnist-export")
    models, files = payload.get("models"), payload.get("files")
    if not isinstance(models, dict) or not isinstance(files, dict):
        raise ContractError(f"{named}: manifest lacks its 'models' and 'files' objects")
    for name, row in models.items():
        if (problem := mismatch(row, ManifestModel)) is not None:
            raise ContractError(f"{named}: model {_quoted(name)}{' ' if problem[0] not in '.[' else ''}{problem}")
    entries = {}
    for name, row in files.items():
        check_fields(row, ManifestFile, str(named), ContractError, f"file row {_quoted(name)}")
        entry = ManifestFile(**row)
        if (entry.file != name or entry.variant not in VARIANTS or entry.model not in models
                or entry.file != variant_filename(entry.model, entry.variant) or Path(entry.file).name != entry.file):
            raise ContractError(f"{named}: file row {_quoted(name)} is inconsistent (model {_quoted(entry.model)}, "
                                f"variant {_quoted(entry.variant)}, file {_quoted(entry.file)})")
        entries[name] = entry
    return Manifest(models, entries)


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_file(onnx_dir: Path, entry: ManifestFile) -> Path:
    """The file of ``entry``, if it is the very file the manifest describes (sha256); else ContractError."""
    path = onnx_dir / entry.file
    if not path.is_file():
        raise ContractError(f"{shown(path)}: listed in {MANIFEST_NAME} but missing; export again: fmnist-export {entry.model}")
    if sha256_of(path) != entry.sha256:
        raise ContractError(f"{shown(path)}: not the file {MANIFEST_NAME} describes (sha256 differs: replaced, or a half-finished "
                            f"export); export again: fmnist-export {entry.model}")
    return path


def check_file_identity(metadata_props: dict[str, str], entry: ManifestFile, path: Path) -> None:
    """The file's own ``metadata_props`` must name the model and variant the manifest files it under."""
    found = (metadata_props.get("model"), metadata_props.get("variant"))
    if found != (entry.model, entry.variant):
        raise ContractError(f"{shown(path)}: the file says it is {_quoted(found[0])} {_quoted(found[1])}, "
                            f"the manifest lists it as {entry.model} {entry.variant}")


def read_metadata_props(path: Path) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` (its weights left unread), or ContractError for a damaged file."""
    import onnx  # noqa: PLC0415 - numpy alone for the rest of the contract

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a damaged file
        raise ContractError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    return {p.key: p.value for p in model.metadata_props}


def is_imported(metadata_props: dict[str, str]) -> bool:
    """Whether a file came from ``fmnist-export --onnx`` (no Keras source: no .keras file to run or convert)."""
    return SOURCE_ONNX_PROP in metadata_props


def shown(path: Path) -> Path:
    """``path`` as a message names it: a file of the live export under the ``onnx/`` folder the user knows, not
    under the generation the reader resolved that link to (exporter/publish.py)."""
    return known_as(path.parent) / path.name


def _quoted(value: object) -> str:
    """User-controlled text in an error line (a manifest's key or value), cut so a hostile one cannot flood it."""
    return clip(repr(value), 60)
