"""Export one trained model to validated ONNX variants, and keep ``onnx/manifest.json`` up to date."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import TextIO

import keras
import numpy as np
import onnx
import pandas as pd

from exporter.contract import (MANIFEST_NAME, VARIANTS, Manifest, ManifestFile, read_manifest, sha256_of,
                               variant_filename)
from exporter.convert import DEFAULT_OPSET, float32_model, keras_to_onnx
from exporter.publish import current, generation
from exporter.validate import Tolerances, check_model, compare, cpu_session, enforce, run_probabilities
from exporter.variants import FP32_GRAPHS, Int8Config, cpu_fp32, to_fp16, to_int8
from trainer.artifacts import Artifacts, write_json_atomic, write_text_atomic
from trainer.data import Splits, reload_dataset, split_dataset
from trainer.fit import images
from trainer.catalog import is_yours, label, model_info, model_order
from trainer.models import get_spec, load_trained
from trainer.reports import RunMetadata


class ExportError(RuntimeError):
    """A model cannot be exported; the message names the file and the fix."""


@dataclass(frozen=True)
class ExportOptions:
    variants: tuple[str, ...] = VARIANTS
    opset: int = DEFAULT_OPSET
    parity_images: int = 1000
    calibration_images: int = 512
    tolerances: Tolerances = field(default_factory=Tolerances)
    data: str | None = None
    int8: Int8Config = Int8Config()
    fp32_graph: str = "depthwise"  # a key of FP32_GRAPHS; fp16 follows it, int8 starts from tf2onnx's graph
    onnx_dir: Path | None = None  # default: the artifacts' onnx/


@dataclass
class SourceModel:
    name: str
    model: keras.Model
    meta: RunMetadata
    path: Path


@dataclass(frozen=True)
class Publication:
    """One model's export: a graph builder per variant (fp32 is always built: the others are judged against
    it), each file's ``metadata_props``, and the model's record in the manifest (what bench needs)."""

    name: str
    graphs: dict[str, Callable[[], onnx.ModelProto]]
    props: Callable[[str], dict[str, str]]
    record: dict
    opset: int


@dataclass(frozen=True)
class ParityCheck:
    """What every variant is judged against: ``reference``, the source's probabilities for ``parity_x``
    (Keras, or an imported file's original ONNX), and the labelled test split for accuracy. ``trained``: a
    mixed-precision model's own (``trained_precision``-computed) probabilities for ``parity_x``, when
    ``reference`` comes from its float32 twin; compared and recorded, not gated."""

    reference: np.ndarray
    parity_x: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    reference_name: str = "keras"  # as the parity failure names it: max |p_onnx - p_keras|
    trained: np.ndarray | None = None
    trained_precision: str = "fp32"


def load_source(name: str, artifacts: Artifacts) -> SourceModel:
    """The trained ``.keras`` file and its metadata, or an error that says how to make them."""
    get_spec(name)
    path, meta_path = artifacts.model_file(name), artifacts.metadata_file(name)
    if not path.exists() or not meta_path.exists():
        missing = path if not path.exists() else meta_path
        raise ExportError(f"{missing}: no trained {name}; make it with: fmnist-train {name} --artifacts {artifacts.root}")
    meta = RunMetadata.read(meta_path)  # checked whole, base_weights included (it goes into every file's metadata)
    if sha256_of(path) != meta.model_file["sha256"]:
        raise ExportError(f"{path}: does not match its metadata {meta_path} (sha256 differs); retrain with: fmnist-train {name}")
    try:
        model = load_trained(path)
    except Exception as exc:  # Keras raises many types for a damaged archive
        raise ExportError(f"{path}: cannot load the Keras model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    return SourceModel(name, model, meta, path)


def evaluation_images(splits: Splits, options: ExportOptions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The test images, the first ``parity_images`` of them, and ``calibration_images`` training images drawn
    with seed 0 (bench/runtimes/peers.py draws the same)."""
    test_x, train_x = images(splits.test), images(splits.train)
    picked = np.random.default_rng(0).choice(len(train_x), size=min(options.calibration_images, len(train_x)),
                                             replace=False)
    return test_x, test_x[: options.parity_images], train_x[picked]


def export_model(name: str, artifacts: Artifacts, options: ExportOptions, log: TextIO | None = None) -> list[ManifestFile]:
    # What the end reads (the manifest, the model's metadata) is read first: a damaged file fails before any work.
    check_manifest(options.onnx_dir or artifacts.onnx_dir)
    source = load_source(name, artifacts)
    splits = split_dataset(reload_dataset(source.meta.data, source.meta.config.get("limit"), options.data))
    test_x, parity_x, calibration = evaluation_images(splits, options)
    # The parity reference is the Keras model the ONNX file is: for a model trained in mixed precision
    # (--precision bf16) its float32 twin (float32_model), so the gate keeps fp32's 1e-4 and judges the
    # conversion alone. The trained model's own bf16 outputs differ from any float32 computation by bf16
    # rounding (3e-3 on a tiny one-epoch Model 4, 30 times fp32's tolerance), which a conversion gate cannot
    # tell from a broken graph: they are compared with each variant and recorded, not gated.
    trained = source.model
    source.model = float32_model(trained)
    reference = source.model.predict(parity_x, batch_size=256, verbose=0)
    trained_reference = None
    if source.model is not trained:
        trained_reference = np.asarray(trained.predict(parity_x, batch_size=256, verbose=0), dtype=np.float32)
    return export_variants(source, reference, parity_x, test_x, splits.test.y, calibration, artifacts, options, log,
                           trained_reference=trained_reference)


def check_manifest(onnx_dir: Path) -> None:
    """Read the manifest an export merges into at its end now, so a damaged one fails before the long work,
    named as ``<onnx_dir>/manifest.json``."""
    read_manifest(current(onnx_dir))


def export_variants(source: SourceModel, reference: np.ndarray, parity_x: np.ndarray, test_x: np.ndarray,
                    test_y: np.ndarray, calibration_x: np.ndarray, artifacts: Artifacts, options: ExportOptions,
                    log: TextIO | None = None, trained_reference: np.ndarray | None = None) -> list[ManifestFile]:
    """Convert, check and validate every variant of a Keras model; publish them all only if all pass.

    ``reference``: the Keras model's probabilities for ``parity_x``, taken before conversion;
    ``trained_reference``: as :class:`ParityCheck`'s ``trained``."""
    converted = keras_to_onnx(source.model, options.opset)
    fp32 = cpu_fp32(converted, options.fp32_graph)
    graphs = {"fp32": lambda: fp32, "fp16": lambda: to_fp16(fp32),
              "int8": lambda: to_int8(converted, calibration_x, options.int8)}
    spec = get_spec(source.name)
    versions = {name: pkg_metadata.version(name) for name in ("tensorflow", "tf2onnx", "onnx")}
    input_text = "image: float32 [batch, 28, 28, 1], grey pixels in [0, 1] (Fashion-MNIST / 255)"
    if spec.transfer:
        input_text += "; padded to 32x32x3 inside the graph as the report's np.pad((2,2),(2,2),(1,1))"
    precision = str(source.meta.config.get("precision", "fp32"))

    def props(variant: str) -> dict[str, str]:
        return {
            "model": source.name,
            "display_name": spec.display_name,
            **({"model_file": spec.source_file, "model_file_sha256": spec.source_sha256} if spec.source_file else {}),
            "variant": variant,
            "class_names": json.dumps(source.meta.data["class_names"]),
            "input": input_text,
            "output": "probabilities: float32 [batch, 5], softmax over class_names",
            "source_keras_sha256": source.meta.model_file["sha256"],
            "test_accuracy_keras": f"{source.meta.test['accuracy']:.6f}",
            "base_weights": source.meta.base_weights,
            # What the Keras model trained in (fmnist-train --precision); the graph computes in float32 either way.
            "trained_precision": precision,
            "opset": str(options.opset),
            **{f"{name}_version": version for name, version in versions.items()},
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(options.int8.metadata() if variant == "int8" else {"graph": FP32_GRAPHS[options.fp32_graph]}),
        }

    record = {
        "data": source.meta.data,  # bench finds the test split by it, without Keras
        "limit": source.meta.config.get("limit"),
        "base_weights": source.meta.base_weights,
        "keras_file": str(source.path),
        "keras_test_accuracy": source.meta.test["accuracy"],
    }
    if spec.source_file:  # a model of the user's, from its model file
        record["origin"] = {"kind": "model-file", "path": spec.source_file, "sha256": spec.source_sha256}
    check = ParityCheck(reference, parity_x, test_x, test_y, trained=trained_reference, trained_precision=precision)
    return publish_variants(Publication(source.name, graphs, props, record, options.opset), check, artifacts, options, log)


def publish_variants(publication: Publication, check: ParityCheck, artifacts: Artifacts, options: ExportOptions,
                     log: TextIO | None = None) -> list[ManifestFile]:
    """Write, check and validate every variant into a new generation; publish it only if all pass."""
    log = log or sys.stdout
    name = publication.name
    onnx_dir = options.onnx_dir or artifacts.onnx_dir
    artifacts.ensure(onnx_dir.parent)
    fp32_accuracy = None
    exported: list[ManifestFile] = []
    # Everything is written into a new generation; it replaces the live one in one step, or not at all.
    with generation(onnx_dir) as stage:
        for variant in ("fp32", *[v for v in options.variants if v != "fp32"]):
            proto = publication.graphs[variant]()
            onnx.helper.set_model_props(proto, publication.props(variant))
            keep = variant in options.variants
            path = stage / (variant_filename(name, variant) if keep else f".{name}.fp32-reference.onnx")
            path.unlink(missing_ok=True)  # a hard link into the live generation: never write through it
            onnx.save(proto, path)
            try:
                check_model(path)
                session = cpu_session(path)
                onnx_p = run_probabilities(session, check.parity_x)
                parity = compare(check.reference, onnx_p)
                trained = compare(check.trained, onnx_p) if check.trained is not None else None
                accuracy = float(np.mean(run_probabilities(session, check.test_x).argmax(-1) == check.test_y))
            finally:
                if not keep:
                    path.unlink(missing_ok=True)
            fp32_accuracy = accuracy if variant == "fp32" else fp32_accuracy
            parity.accuracy_onnx, parity.accuracy_fp32_onnx = accuracy, fp32_accuracy
            # Rounded: 100 * (0.39 - 0.40) is -1.0000000000000009, which must not fail a 1.0 threshold.
            parity.accuracy_change_points = round(100 * (accuracy - fp32_accuracy), 6)
            enforce(name, variant, parity, options.tolerances, check.reference_name)
            if not keep:
                continue
            validation = asdict(parity)
            if check.reference_name != "keras":
                validation["reference"] = check.reference_name
            trained_text = ""
            if trained is not None:
                precision = check.trained_precision
                validation["trained_precision"] = {"precision": precision, "max_abs_diff": trained.max_abs_diff,
                                                   "argmax_agreement": trained.argmax_agreement}
                trained_text = (f" (vs the {precision} Keras model itself: max|diff| {trained.max_abs_diff:.2e}, "
                                f"argmax agreement {trained.argmax_agreement:.2%})")
            print(f"[{name}] {variant:>4}: max|diff| {parity.max_abs_diff:.2e}, argmax agreement {parity.argmax_agreement:.2%}"
                  f"{trained_text}, test accuracy {accuracy:.4f} ({parity.accuracy_change_points:+.2f} pt vs fp32), "
                  f"{path.stat().st_size / 1e6:.2f} MB -> {onnx_dir / path.name}", file=log, flush=True)
            exported.append(ManifestFile(file=path.name, model=name, variant=variant, opset=publication.opset,
                                         bytes=path.stat().st_size, sha256=sha256_of(path), validation=validation))
        _update_manifest(stage, exported, name, publication.record)
    return exported


def _update_manifest(stage: Path, exported: list[ManifestFile], name: str, record: dict) -> None:
    """Merge ``exported`` into the stage's manifest; its ``models`` section lets bench find the test data without Keras."""
    manifest = read_manifest(stage) or Manifest()
    manifest.files.update({entry.file: entry for entry in exported})
    manifest.models[name] = record
    # Drop rows whose file is gone (deleted by hand).
    manifest.files = {file: row for file, row in manifest.files.items() if (stage / file).exists()}
    with_files = {row.model for row in manifest.files.values()}
    manifest.models = {model: row for model, row in manifest.models.items() if model in with_files}
    write_json_atomic(stage / MANIFEST_NAME, manifest.to_dict())
    write_text_atomic(stage / "manifest.md", manifest_table(manifest).to_markdown(index=False, disable_numparse=True) + "\n")


def manifest_table(manifest: Manifest) -> pd.DataFrame:
    """The manifest as the README's export table: one row per file, its parity figures and size."""
    rows = []
    for row in sorted(manifest.files.values(), key=lambda r: (model_order(r.model), VARIANTS.index(r.variant))):
        v = row.validation
        transfer = not is_yours(row.model) and model_info(row.model).transfer
        rows.append({
            "model": label(row.model), "variant": row.variant, "MB": round(row.bytes / 1e6, 2),
            # An imported file's reference is its original ONNX file, not Keras: the cell says so.
            f"max abs diff vs Keras ({v['images']} images)": f"{v['max_abs_diff']:.1e}" + (" (vs its source ONNX)" if "reference" in v else ""),
            "argmax agreement": f"{v['argmax_agreement']:.2%}",
            "test accuracy": f"{v['accuracy_onnx']:.4f}",
            "vs fp32 (points)": f"{v['accuracy_change_points']:+.2f}",
            "base weights": manifest.models[row.model]["base_weights"] if transfer else "n/a",
        })
    return pd.DataFrame(rows)
