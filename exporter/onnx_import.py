"""``fmnist-export --onnx PATH --name NAME``: an ONNX classifier from anywhere, brought to the contract.

What is read from the graph, what is added and what is refused: docs/export.md ("An ONNX file of your own").
Nothing is guessed, and everything about the file is checked before anything is written: each problem is one
:class:`OnnxImportError` line naming the file or the option.
"""

from __future__ import annotations

import collections
import copy
import hashlib
import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TextIO

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from onnx.external_data_helper import uses_external_data

from exporter.contract import (BATCH_DIM, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, OUTPUT_SHAPE, SOURCE_ONNX_PROP,
                               ManifestFile)
from exporter.convert import MIN_OPSET
from exporter.export import (ExportError, ExportOptions, ParityCheck, Publication, check_manifest,
                             evaluation_images, publish_variants)
from exporter.validate import cpu_session
from exporter.variants import to_fp16, to_int8
from trainer.artifacts import Artifacts, exception_line
from trainer.catalog import YOURS, name_problem
from trainer.data import load_dataset, parse_class_map, split_dataset
from trainer.training import SPLIT_PROTOCOL

# Protobuf cannot hold a message over 2 GiB, and the published files hold their weights inline: the file and
# any external data it names count together, read from the file system before anything is read.
MAX_MODEL_BYTES = 2 * 1024**3
STANDARD_DOMAINS = ("", "ai.onnx")  # what every runtime of the bench runs (besides a file's own local functions)
LAYOUTS = {"nhwc": (28, 28, 1), "nchw": (1, 28, 28)}
OUTPUTS = ("probabilities", "logits")
NCHW_PERM = (0, 3, 1, 2)  # NHWC image -> NCHW input
PROBABILITY_TOLERANCE = 1e-3  # rows of probabilities sum to 1 within float32 rounding
RUN_BATCH = 256
BATCH_CHECK = 3  # a batch the original was surely not fixed to


class OnnxImportError(ExportError):
    """The file cannot be imported; the message names it (or the option) and what is wrong."""


@dataclass(frozen=True)
class ImportRequest:
    """What ``fmnist-export --onnx`` was asked; ``input_layout`` and ``output`` None: read from the graph."""

    path: Path
    name: str
    input_layout: str | None = None  # nhwc | nchw
    output: str | None = None  # probabilities | logits
    class_map: str | None = None  # as --class-map
    limit: int | None = None  # as fmnist-train --limit


@dataclass(frozen=True)
class Source:
    """The original file: its graph (external data loaded), its bytes' sha256, and its opset."""

    path: Path
    proto: onnx.ModelProto
    sha256: str
    opset: int


@dataclass
class Interface:
    """The original's interface, and how each part of it was decided (recorded in the metadata)."""

    input_name: str
    input_dims: list[int | None]
    layout: str
    layout_from: str
    output_name: str
    output: str  # probabilities | logits | log-probabilities
    output_from: str
    fixed_batch: int | None = None
    added: list[str] = field(default_factory=list)


def import_onnx(request: ImportRequest, artifacts: Artifacts, options: ExportOptions, log: TextIO | None = None) -> list[ManifestFile]:
    """Check, adapt, validate and publish ``request.path`` as model ``request.name`` (every variant or none)."""
    log = log or sys.stdout
    check_name(request.name, artifacts)
    check_manifest(options.onnx_dir or artifacts.onnx_dir)  # what the end merges into, read before the work
    source = read_source(request.path)
    interface = read_interface(source, request)
    adapted = adapt(source.proto, interface)
    check_batches(adapted, request.path)

    dataset = load_dataset(options.data, parse_class_map(request.class_map)).limit(request.limit)
    splits = split_dataset(dataset)
    test_x, parity_x, calibration = evaluation_images(splits, options)
    original = run_original(source, interface, test_x, request)
    source_accuracy = float(np.mean(original.argmax(-1) == splits.test.y))
    print(f"[{request.name}] {request.path.name}: {interface.layout.upper()} input ({interface.layout_from}), "
          f"{interface.output} output ({interface.output_from}); added: {'; '.join(interface.added) or 'nothing'}; "
          f"test accuracy of the original {source_accuracy:.4f}", file=log, flush=True)

    # The affine rewrite is written for tf2onnx's BatchNormalization-after-ReLU; a foreign graph is quantized as it is.
    int8 = replace(options.int8, affine_rewrite=False)
    graphs = {"fp32": lambda: copy.deepcopy(adapted), "fp16": lambda: to_fp16(adapted),
              "int8": lambda: to_int8(adapted, calibration, int8)}
    producer = " ".join(p for p in (source.proto.producer_name, source.proto.producer_version) if p) or "unknown"
    base_props = {
        "model": request.name,
        "display_name": f"{request.name} {YOURS}",
        "origin": "onnx import (fmnist-export --onnx)",
        "class_names": json.dumps(list(dataset.class_names)),
        "input": "image: float32 [batch, 28, 28, 1], grey pixels in [0, 1] (Fashion-MNIST / 255)",
        "output": "probabilities: float32 [batch, 5], softmax over class_names",
        "source_onnx_file": request.path.name,
        SOURCE_ONNX_PROP: source.sha256,
        "source_onnx_producer": producer,
        "source_input": f"{interface.input_name} {interface.layout.upper()} {_shown_dims(interface.input_dims)} "
                        f"(from {interface.layout_from})",
        "source_output": f"{interface.output_name}: {interface.output} (from {interface.output_from})",
        "added": json.dumps(interface.added),
        "test_accuracy_source_onnx": f"{source_accuracy:.6f}",
        "opset": str(source.opset),
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,  # the package may be onnxruntime-gpu: asked of the module
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

    def props(variant: str) -> dict[str, str]:
        extra = int8.metadata() if variant == "int8" else {"graph": "the imported graph with the contract's nodes added"}
        return {**base_props, "variant": variant, **extra}

    record = {
        # As a trained model's metadata has it (trainer/training.py): the bench reloads the test split by it.
        "data": {"source": dataset.source, "sha256": dataset.sha256, "images": len(dataset),
                 "class_names": list(dataset.class_names),
                 "class_map": list(dataset.class_map) if dataset.class_map else None,
                 "split": splits.sizes(), "split_protocol": SPLIT_PROTOCOL},
        "limit": request.limit,
        "base_weights": "n/a",
        "keras_file": None,
        "keras_test_accuracy": None,
        "origin": {"kind": "onnx", "path": str(request.path.resolve()), "sha256": source.sha256,
                   "input_layout": interface.layout, "output": interface.output, "added": interface.added,
                   "test_accuracy": source_accuracy},
    }
    check = ParityCheck(original[: len(parity_x)], parity_x, test_x, splits.test.y, reference_name="source")
    return publish_variants(Publication(request.name, graphs, props, record, source.opset), check, artifacts,
                            replace(options, int8=int8), log)


def check_name(name: str, artifacts: Artifacts) -> None:
    """A name of the user's that is a safe file-name token, not one of the six, and not a trained Keras model."""
    problem = name_problem(name)
    if problem:
        raise OnnxImportError(f"--name {name[:80]!r} {problem}")
    if artifacts.model_file(name).exists():
        raise OnnxImportError(f"--name {name}: {artifacts.model_file(name)} is a trained Keras model of that name; "
                              "choose another name for the imported file")


# --------------------------------------------------------------------------- the file

def read_source(path: Path) -> Source:
    """The file parsed with its external data, after every check that can be made before reading it."""
    shown = f"--onnx {path}"
    if not path.is_file():
        raise OnnxImportError(f"{shown}: {'not a file' if path.exists() else 'no such file'}")
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise OnnxImportError(f"{shown}: {size:,} bytes, over the {MAX_MODEL_BYTES:,}-byte ceiling (protobuf's 2 GiB); "
                              "not read")
    if size == 0:
        raise OnnxImportError(f"{shown}: empty file")
    data = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and others, for a truncated or damaged file
        raise OnnxImportError(f"{shown}: not a readable ONNX file (truncated or damaged: {exception_line(exc)})") from None
    if not proto.HasField("graph") or not proto.graph.node:
        raise OnnxImportError(f"{shown}: not an ONNX model (no graph; truncated or not ONNX)")
    _load_external_data(proto, path, size)
    _check_domains(proto, shown)  # before the checker, whose word on an unknown domain is less clear
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError
        raise OnnxImportError(f"{shown}: onnx.checker refuses it ({exception_line(exc)})") from None
    opset = max((o.version for o in proto.opset_import if o.domain in STANDARD_DOMAINS), default=0)
    if opset < MIN_OPSET:
        raise OnnxImportError(f"{shown}: opset {opset}; the exporter needs {MIN_OPSET} or later (int8's per-channel "
                              f"quantization): convert it first with onnx.version_converter.convert_version(model, {MIN_OPSET})")
    return Source(path, proto, hashlib.sha256(data).hexdigest(), opset)


def _load_external_data(proto: onnx.ModelProto, path: Path, size: int) -> None:
    """Load the tensors kept in other files, once every location is a relative path to a file inside the file's
    folder and the whole is under the ceiling: a hostile file must not make us read ``/etc/shadow`` or
    ``../../secret`` into a published graph."""
    shown = f"--onnx {path}"
    folder = path.parent.resolve()
    external = [t for t in _tensors(proto) if uses_external_data(t)]
    if not external:
        return
    sizes: dict[Path, int] = {}
    for tensor in external:
        # The last entry of a key wins, as onnx's loader reads them: the checks below see the file it will read.
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        where = f"{shown}: tensor {tensor.name[:60]!r} keeps its data in {location[:80]!r}"
        if (not location or PurePosixPath(location).is_absolute() or PureWindowsPath(location).is_absolute()
                or ".." in PurePosixPath(location.replace("\\", "/")).parts):
            raise OnnxImportError(f"{where}, outside the file's folder; external data must be a relative path inside {folder}")
        target = (folder / location).resolve()
        if not target.is_relative_to(folder):  # a link out of the folder
            raise OnnxImportError(f"{where}, which leads outside the file's folder {folder}")
        if not target.is_file():
            raise OnnxImportError(f"{where}, which is {'not a file' if target.exists() else 'missing'}")
        sizes[target] = target.stat().st_size
        try:
            offset = int(info.get("offset", 0))
            end = offset + int(info.get("length", sizes[target] - offset))
        except ValueError:
            offset = end = -1
        if offset < 0 or end < offset:
            raise OnnxImportError(f"{where}, with an offset or length that is not a byte count")
        if end > sizes[target]:
            raise OnnxImportError(f"{where}, which is truncated ({sizes[target]:,} bytes, the tensor ends at {end:,})")
    total = size + sum(sizes.values())
    if total > MAX_MODEL_BYTES:
        raise OnnxImportError(f"{shown}: {total:,} bytes with its external data, over the {MAX_MODEL_BYTES:,}-byte "
                              "ceiling (protobuf's 2 GiB); not read")
    try:
        onnx.external_data_helper.load_external_data_for_model(proto, str(folder))
    except Exception as exc:
        raise OnnxImportError(f"{shown}: its external data cannot be read ({exception_line(exc)})") from None


def _bodies(*roots: onnx.GraphProto | onnx.FunctionProto) -> Iterator[tuple[onnx.GraphProto | onnx.FunctionProto, str]]:
    """``roots`` (graphs or local functions) and every subgraph inside them, each with where it is, for messages."""
    # First in, first out: the graph before its functions and subgraphs, so a message names the first offender.
    waiting = collections.deque((root, f", in local function {root.name[:60]}" if isinstance(root, onnx.FunctionProto)
                                 else "") for root in roots)
    while waiting:
        body, where = waiting.popleft()
        yield body, where
        for node in body.node:
            for attr in node.attribute:
                subgraphs = [*([attr.g] if attr.HasField("g") else []), *attr.graphs]
                waiting.extend((sub, f", in a subgraph of {node.op_type}") for sub in subgraphs)


def _tensors(proto: onnx.ModelProto) -> Iterator[TensorProto]:
    """Every tensor of the model: initializers and tensor attributes, in subgraphs and local functions too."""
    for body, _ in _bodies(proto.graph, *proto.functions):
        if isinstance(body, onnx.GraphProto):
            yield from body.initializer
            yield from (sparse.values for sparse in body.sparse_initializer)
        for node in body.node:
            for attr in node.attribute:
                yield from [attr.t] if attr.HasField("t") else []
                yield from attr.tensors


def _check_domains(proto: onnx.ModelProto, shown: str) -> None:
    """Every node in ONNX's own domain, or a local function of the file whose own nodes are."""
    local = {(f.domain, f.name) for f in proto.functions}
    for body, where in _bodies(proto.graph, *proto.functions):
        for node in body.node:
            if node.domain not in STANDARD_DOMAINS and (node.domain, node.op_type) not in local:
                raise OnnxImportError(
                    f"{shown}: node {node.name[:60]!r} ({node.op_type[:60]}{where}) is in operator domain {node.domain[:60]!r}; "
                    "only ONNX's standard operators (domain 'ai.onnx') run on every runtime of the bench")


# --------------------------------------------------------------------------- the interface

def read_interface(source: Source, request: ImportRequest) -> Interface:
    """The input layout and the kind of output, from the graph or the options (they must agree)."""
    graph = source.proto.graph
    constants = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in constants]  # IR < 4 lists the weights as inputs too
    if len(inputs) != 1:
        raise OnnxImportError(f"--onnx {source.path}: {len(inputs)} inputs ({_names(inputs)}); "
                              "expected one image input")
    if len(graph.output) != 1:
        raise OnnxImportError(f"--onnx {source.path}: {len(graph.output)} outputs ({_names(graph.output)}); expected one "
                              f"output of {OUTPUT_SHAPE[0]} class scores")
    (inp,), (out,) = inputs, graph.output
    layout, layout_from, dims = _layout(inp, request.input_layout, source.path)
    output, output_from = _output_kind(graph, out, request.output, source.path)
    fixed = dims[0] if isinstance(dims[0], int) else None
    return Interface(inp.name, dims, layout, layout_from, out.name, output, output_from, fixed_batch=fixed)


def _float_dims(value: onnx.ValueInfoProto, role: str, expected: str, path: Path) -> list[int | None] | None:
    """A float32 value's dimensions (None where symbolic or unknown; None without a shape)."""
    tensor = value.type.tensor_type
    if tensor.elem_type != TensorProto.FLOAT:
        raise OnnxImportError(f"--onnx {path}: {role} {value.name[:60]!r} is "
                              f"{TensorProto.DataType.Name(tensor.elem_type).lower()}; expected float32 {expected}")
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def _shown_dims(dims: list[int | None] | None) -> str:
    return "unknown" if dims is None else "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _layout(inp: onnx.ValueInfoProto, option: str | None, path: Path) -> tuple[str, str, list[int | None]]:
    dims = _float_dims(inp, "input", "images in [0, 1]", path)
    said = f"--onnx {path}: input {inp.name[:60]!r} has shape {_shown_dims(dims)}"
    expected = "expected NHWC (N, 28, 28, 1) or NCHW (N, 1, 28, 28)"
    if dims is None or len(dims) != 4:
        raise OnnxImportError(f"{said}{'' if dims is None else f' (rank {len(dims)})'}; {expected}")
    fits = [name for name, shape in LAYOUTS.items() if all(d is None or d == s for d, s in zip(dims[1:], shape))]
    if not fits:
        raise OnnxImportError(f"{said}; {expected}")
    if option is not None:
        if option not in fits:
            raise OnnxImportError(f"--input-layout {option}: input {inp.name[:60]!r} of {path} has "
                                  f"shape {_shown_dims(dims)}, which is {fits[0].upper()}")
        return option, "--input-layout", dims
    if len(fits) > 1:
        raise OnnxImportError(f"{said}, which does not say its layout; "
                              "say it with --input-layout nhwc or --input-layout nchw")
    return fits[0], f"the graph's input shape {_shown_dims(dims)}", dims


def _output_kind(graph: onnx.GraphProto, out: onnx.ValueInfoProto, option: str | None, path: Path) -> tuple[str, str]:
    dims = _float_dims(out, "output", "class scores", path)
    if dims is not None and (len(dims) != 2 or dims[1] not in (None, OUTPUT_SHAPE[0])):
        classes = f"{dims[1]} classes" if len(dims) == 2 else f"rank {len(dims)}"
        raise OnnxImportError(f"--onnx {path}: output {out.name[:60]!r} has shape {_shown_dims(dims)} ({classes}); "
                              f"expected (N, {OUTPUT_SHAPE[0]}): scores of the study's {OUTPUT_SHAPE[0]} classes")
    producer = next((node for node in graph.node if out.name in node.output), None)
    axis = next((helper.get_attribute_value(a) for a in producer.attribute if a.name == "axis"), -1) if producer else None
    found = None
    if producer is not None and producer.op_type in ("Softmax", "LogSoftmax") and axis in (-1, 1):
        found = "probabilities" if producer.op_type == "Softmax" else "log-probabilities"
    if option is None:
        if found is None:
            what = f"a {producer.op_type} node" if producer is not None else "no node"
            raise OnnxImportError(f"--onnx {path}: cannot tell whether output {out.name[:60]!r} (from {what}) is "
                                  "probabilities or logits; say it with --output probabilities or --output logits")
        return found, f"the graph's final {producer.op_type} node"
    said = f"--output {option}: output {out.name[:60]!r} of {path} comes from"
    if found == "probabilities" and option == "logits":
        raise OnnxImportError(f"{said} a Softmax node: it is probabilities already (--output probabilities)")
    if found == "log-probabilities" and option == "probabilities":
        raise OnnxImportError(f"{said} a LogSoftmax node: log-probabilities, which a Softmax turns into probabilities "
                              "(--output logits)")
    return (found or option), "--output"


def _names(values) -> str:
    return ", ".join(repr(v.name[:40]) for v in list(values)[:5]) or "none"


# --------------------------------------------------------------------------- the adapted graph

def adapt(proto: onnx.ModelProto, interface: Interface) -> onnx.ModelProto:
    """The original with the contract's interface: input ``image`` NHWC, output ``probabilities``, batch ``batch``.

    Records in ``interface.added`` what was done, for the metadata."""
    model = copy.deepcopy(proto)
    graph = model.graph
    added = interface.added
    new_input, new_output = interface.input_name, interface.output_name
    # Names the contract needs that the graph uses for something else move aside first.
    for target, own in ((INPUT_NAME, interface.input_name if interface.layout == "nhwc" else None),
                        (OUTPUT_NAME, interface.output_name if interface.output == "probabilities" else None)):
        taken = _value_names(graph)
        if target in taken and target != own:
            free = _free(f"{target}_source", taken)
            _rename(graph, target, free)
            new_input = free if new_input == target else new_input
            new_output = free if new_output == target else new_output
    node_names = {node.name for node in graph.node}
    if interface.layout == "nchw":
        graph.node.insert(0, helper.make_node("Transpose", [INPUT_NAME], [new_input], perm=list(NCHW_PERM),
                                              name=_free("fmnist_nhwc_to_nchw", node_names)))
        added.append(f"Transpose {list(NCHW_PERM)} from NHWC 'image' to the graph's NCHW input {interface.input_name!r}")
    elif new_input != INPUT_NAME:
        _rename(graph, new_input, INPUT_NAME)
        added.append(f"input {interface.input_name!r} renamed 'image'")
    if interface.output != "probabilities":
        graph.node.append(helper.make_node("Softmax", [new_output], [OUTPUT_NAME], axis=-1,
                                           name=_free("fmnist_softmax", node_names)))
        added.append(f"Softmax over the {interface.output} of {interface.output_name!r}, as 'probabilities'")
    elif new_output != OUTPUT_NAME:
        _rename(graph, new_output, OUTPUT_NAME)
        added.append(f"output {interface.output_name!r} renamed 'probabilities'")
    if interface.fixed_batch is not None:
        added.append(f"batch dimension made dynamic (was fixed at {interface.fixed_batch})")
    # The new interface; the graph's own shape annotations go (they may hold the old fixed batch): runtimes infer them.
    constants = {t.name for t in graph.initializer}
    kept = [v for v in graph.input if v.name in constants]
    del graph.input[:], graph.output[:], graph.value_info[:], model.metadata_props[:]
    graph.input.extend([helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, *INPUT_SHAPE]), *kept])
    graph.output.extend([helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, *OUTPUT_SHAPE])])
    onnx.checker.check_model(model, full_check=True)
    return model


def _value_names(graph: onnx.GraphProto) -> set[str]:
    """Every value name in ``graph`` and its subgraphs."""
    names = set()
    for body, _ in _bodies(graph):
        names.update(v.name for v in (*body.input, *body.output, *body.value_info, *body.initializer))
        for node in body.node:
            names.update(node.input, node.output)
    return names


def _free(stem: str, taken: set[str]) -> str:
    return next(name for i in itertools.count() if (name := f"{stem}{i or ''}") not in taken)


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename value ``old`` to ``new`` wherever it appears, subgraphs included (they may read outer values)."""
    for body, _ in _bodies(graph):
        for node in body.node:
            node.input[:] = [new if name == old else name for name in node.input]
            node.output[:] = [new if name == old else name for name in node.output]
        for value in (*body.input, *body.output, *body.value_info, *body.initializer):
            if value.name == old:
                value.name = new


def check_batches(adapted: onnx.ModelProto, path: Path) -> None:
    """The adapted graph must run at batch 1 and at another batch and give (batch, 5): a graph exported with a
    fixed batch (a Reshape to [1, -1]) cannot take the bench's batches."""
    session = cpu_session(adapted.SerializeToString())
    for batch in (1, BATCH_CHECK):
        try:
            out = session.run([OUTPUT_NAME], {INPUT_NAME: np.zeros((batch, *INPUT_SHAPE), np.float32)})[0]
        except Exception as exc:  # onnxruntime's Fail, InvalidArgument, RuntimeException
            raise OnnxImportError(f"--onnx {path}: does not run at batch {batch} ({exception_line(exc)}); export it with a "
                                  "dynamic batch axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}))") from None
        if out.shape != (batch, *OUTPUT_SHAPE):
            raise OnnxImportError(f"--onnx {path}: gives shape {out.shape} for {batch} image(s); expected "
                                  f"({batch}, {OUTPUT_SHAPE[0]})")


# --------------------------------------------------------------------------- the reference

def run_original(source: Source, interface: Interface, images: np.ndarray, request: ImportRequest) -> np.ndarray:
    """The original file's probabilities for ``images`` (NHWC), run with onnxruntime as it is: in its own layout,
    at its own fixed batch if it has one, a softmax applied in numpy to logits (or log-probabilities)."""
    session = cpu_session(source.proto.SerializeToString())
    batch = interface.fixed_batch or RUN_BATCH
    feed = images.transpose(NCHW_PERM) if interface.layout == "nchw" else images
    outputs = []
    for start in range(0, len(feed), batch):
        chunk = feed[start:start + batch]
        pad = batch - len(chunk) if interface.fixed_batch else 0
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        out = np.asarray(session.run([interface.output_name], {interface.input_name: np.ascontiguousarray(chunk)})[0])
        outputs.append(out[: len(out) - pad])
    scores = np.concatenate(outputs).astype(np.float64)
    if scores.shape != (len(images), *OUTPUT_SHAPE):
        raise OnnxImportError(f"--onnx {source.path}: gives shape {scores.shape} for {len(images)} test images; "
                              f"expected ({len(images)}, {OUTPUT_SHAPE[0]})")
    if interface.output == "probabilities":
        sums = scores.sum(axis=-1)
        if not np.all(np.isfinite(scores)) or scores.min() < -PROBABILITY_TOLERANCE or np.max(np.abs(sums - 1)) > PROBABILITY_TOLERANCE:
            said = "--output probabilities" if request.output else f"--onnx {source.path}"
            raise OnnxImportError(f"{said}: its outputs on {len(images)} test images are not probabilities (rows sum to "
                                  f"{sums.min():.4g}..{sums.max():.4g}); pass --output logits")
        return scores.astype(np.float32)
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)
