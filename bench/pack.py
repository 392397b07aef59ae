"""``fmnist-bench pack``: everything a device needs to run the bench, in one archive.

The device gets the base install (``pip install fmnist-edge``: no TensorFlow) and this archive: an artifacts
folder cut down to what ``fmnist-bench run`` reads, ``onnx/`` (the live export generation, each file checked
against its sha256 first) and ``data/`` (the training data each model's test split is recomputed from, checked
against the hash its export recorded). The ``.keras`` files are left out: their rows need TensorFlow, which a
device does not have; they are skipped there with that reason.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from bench.measure.cases import read_exports
from exporter.contract import MANIFEST_NAME, verify_file
from trainer.artifacts import Artifacts, atomic_path
from trainer.data import IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS, reload_dataset, source_location


DATA = Artifacts(Path(".")).carried_data_dir().name  # where bench/measure/cases.py looks for it on the device


class PackError(ValueError):
    """The archive cannot be made; the message names the file or option."""


@dataclass(frozen=True)
class Packed:
    archive: Path
    onnx_files: int
    onnx_bytes: int
    data_bytes: int


def pack(artifacts: Artifacts, archive: Path, data: str | None = None) -> Packed:
    """Write ``archive`` (gzip'd tar) holding ``onnx/`` and ``data/``; never overwrite an existing file."""
    if archive.exists() or archive.is_symlink():
        raise PackError(f"{archive}: exists; choose another name (a pack never overwrites)")
    if not archive.parent.is_dir():
        raise PackError(f"{archive.parent}: no such folder")
    onnx_dir, manifest = read_exports(artifacts)
    members = {f"onnx/{MANIFEST_NAME}": onnx_dir / MANIFEST_NAME,
               **{f"onnx/{entry.file}": verify_file(onnx_dir, entry) for entry in manifest.files.values()}}
    onnx_bytes = sum(p.stat().st_size for p in members.values())
    data_members = {name: path for model, record in manifest.models.items()
                    for name, path in _data_files(record, data, model).items()}
    members.update(data_members)
    with atomic_path(archive.with_name(f".{archive.name}.partial")) as partial:
        with tarfile.open(partial, "w:gz") as tar:
            for name, path in members.items():
                tar.add(path.resolve(), arcname=name, recursive=False)  # resolved: the file, never a link to it
        try:
            os.link(partial, archive)  # unlike a rename, never replaces a file another command made meanwhile
        except FileExistsError:
            raise PackError(f"{archive}: exists; choose another name (a pack never overwrites)") from None
    return Packed(archive, len(manifest.files), onnx_bytes, sum(p.stat().st_size for p in data_members.values()))


def _data_files(record: dict, data: str | None, model: str) -> dict[str, Path]:
    """The files the data set of ``record`` was read from (hash-checked here), under ``data/<its name>``."""
    dataset = reload_dataset(record["data"], record["limit"], data)
    source = Path(source_location(dataset.source))
    if source.is_dir():
        return {f"{DATA}/{source.name}/{name}": source / name for name in (IDX_TRAIN_IMAGES, IDX_TRAIN_LABELS)}
    if source.is_file():
        return {f"{DATA}/{source.name}": source}
    raise PackError(f"{model}: its data came from {dataset.source}, not a file this can carry; pass --data")
