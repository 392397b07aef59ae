"""``fmnist-export --onnx PATH --name NAME``: an ONNX classifier from anywhere, brought to the contract.

The file may take NHWC ``(N, 28, 28, 1)`` or NCHW ``(N, 1, 28, 28)`` float32 images (PyTorch's
``torch.onnx.export`` writes NCHW) and give 5 class probabilities or logits. Which of them is read from the
graph (the input's shape; a Softmax node at the output means probabilities, a LogSoftmax log-probabilities)
or said by ``--input-layout`` and ``--output``; where the graph cannot tell and no option says, the import
stops with one line asking for the option, and an option the graph contradicts is refused. Nothing is guessed.

The file is brought to the contract (exporter/contract.py) with graph nodes: a Transpose in front for NCHW,
a Softmax at the end for logits; its input renamed ``image`` and its output ``probabilities``, the batch
dimension ``batch``. What was added is recorded in every variant's ``metadata_props`` with the original
file's sha256. The original file, run with onnxruntime on the test images, is the parity reference where a
Keras export has its Keras model, with the same tolerances; fp16 and int8 follow with the same gates (int8
calibrated on training images from the same data look-up as a Keras export), and all are published at once
into the manifest (exporter/export.py's ``publish_variants``), or nothing is.

Everything about the file is checked before anything is written: its size (from the file system, before
reading it), where its external data lives (inside its folder, named by a relative path), that it parses,
``onnx.checker`` (full check), the operator domains and the opset, and the interface. Each problem is one
:class:`OnnxImportError` line naming the file or option.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TextIO

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from exporter.contract import BATCH_DIM, INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, OUTPUT_SHAPE, ManifestFile
from exporter.convert import MIN_OPSET
from exporter.export import ExportError, ExportOptions, ParityCheck, Publication, check_manifest, publish_variants
from exporter.validate import cpu_session
from exporter.variants import to_fp16, to_int8
from trainer.artifacts import Artifacts, exception_line
from trainer.catalog import YOURS, name_problem
from trainer.data import Dataset, load_dataset, parse_class_map, split_dataset
from trainer.training import SPLIT_PROTOCOL

# Protobuf cannot hold a message over 2 GiB, and the published files hold their weights inline: the file and
# any external data it names count together, read from the file system before anything is read.
MAX_MODEL_BYTES = 2 * 1024**3
# The operators every runtime of the bench runs: ONNX's own domain, and a file's own local functions.
STANDARD_DOMAINS = ("", "ai.onnx")
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
    """What ``fmnist-export --onnx`` was asked: the file, the name, and what the graph may not say itself."""

    path: Path
    name: str
    input_layout: str | None = None  # nhwc | nchw; None: from the graph
    output: str | None = None  # probabilities | logits; None: from the graph
    class_map: str | None = None  # as --class-map
    limit: int | None = None  # as fmnist-train --limit


@dataclass(frozen=True)
class Source:
    """The original file: its graph (external data loaded), its bytes' sha256, and how it was found."""

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
    test_x, test_y = splits.test.x[..., np.newaxis], splits.test.y
    train_x = splits.train.x[..., np.newaxis]
    calibration = train_x[np.random.default_rng(0).choice(len(train_x), size=min(options.calibration_images, len(train_x)),
                                                          replace=False)]
    parity_x = test_x[: options.parity_images]
    original = run_original(source, interface, test_x, request)
    reference = original[: len(parity_x)]
    source_accuracy = float(np.mean(original.argmax(-1) == test_y))
    print(f"[{request.name}] {request.path.name}: {interface.layout.upper()} input ({interface.layout_from}), "
          f"{interface.output} output ({interface.output_from}); added: {'; '.join(interface.added) or 'nothing'}; "
          f"test accuracy of the original {source_accuracy:.4f}", file=log, flush=True)

    # The affine rewrite is written for tf2onnx's BatchNormalization-after-ReLU; a foreign graph is quantized as it is.
    int8 = replace(options.int8, affine_rewrite=False)
    graphs = {"fp32": lambda: copy.deepcopy(adapted), "fp16": lambda: to_fp16(adapted),
              "int8": lambda: to_int8(adapted, calibration, int8)}
    base_props = _metadata_props(request, source, interface, dataset, source_accuracy)

    def props(variant: str) -> dict[str, str]:
        extra = int8.metadata() if variant == "int8" else {"graph": "the imported graph with the contract's nodes added"}
        return {**base_props, "variant": variant, **extra}

    record = {
        "data": _data_record(dataset, splits),
        "limit": request.limit,
        "base_weights": "n/a",
        "keras_file": None,
        "keras_test_accuracy": None,
        "origin": {"kind": "onnx", "path": str(request.path.resolve()), "sha256": source.sha256,
                   "input_layout": interface.layout, "output": interface.output, "added": interface.added,
                   "test_accuracy": source_accuracy},
    }
    publication = Publication(request.name, graphs, props, record, source.opset)
    check = ParityCheck(reference, parity_x, test_x, test_y, reference_name="source")
    return publish_variants(publication, check, artifacts, replace(options, int8=int8), log)


# --------------------------------------------------------------------------- the name

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
    if not path.exists():
        raise OnnxImportError(f"{shown}: no such file")
    if not path.is_file():
        raise OnnxImportError(f"{shown}: not a file")
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
    opset = _default_opset(proto)
    if opset < MIN_OPSET:
        raise OnnxImportError(f"{shown}: opset {opset}; the exporter needs {MIN_OPSET} or later (int8's per-channel "
                              f"quantization): convert it first with onnx.version_converter.convert_version(model, {MIN_OPSET})")
    return Source(path, proto, hashlib.sha256(data).hexdigest(), opset)


def _load_external_data(proto: onnx.ModelProto, path: Path, size: int) -> None:
    """Load the tensors kept in other files, once every location is known to be a relative path inside the
    file's folder, every file there, and the whole under the ceiling: a hostile file must not make us read
    ``/etc/shadow`` or ``../../secret`` into a published graph."""
    shown = f"--onnx {path}"
    folder = path.parent.resolve()
    external = [t for t in _tensors(proto) if t.data_location == TensorProto.EXTERNAL]
    if not external:
        return
    sizes: dict[Path, int] = {}
    for tensor in external:
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
            end = int(info.get("offset", 0)) + int(info.get("length", sizes[target] - int(info.get("offset", 0))))
        except ValueError:
            raise OnnxImportError(f"{where}, with an offset or length that is not a number") from None
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


def _tensors(proto: onnx.ModelProto) -> list[TensorProto]:
    """Every tensor of the model: initializers and tensor attributes, in subgraphs and local functions too."""
    found: list[TensorProto] = []

    def nodes(node_list) -> None:
        for node in node_list:
            for attr in node.attribute:
                if attr.HasField("t"):
                    found.append(attr.t)
                found.extend(attr.tensors)
                if attr.HasField("g"):
                    graph(attr.g)
                for sub in attr.graphs:
                    graph(sub)

    def graph(g: onnx.GraphProto) -> None:
        found.extend(g.initializer)
        found.extend(s.values for s in g.sparse_initializer)
        nodes(g.node)

    graph(proto.graph)
    for function in proto.functions:
        nodes(function.node)
    return found


def _check_domains(proto: onnx.ModelProto, shown: str) -> None:
    """Every node in ONNX's own domain, or a local function of the file whose own nodes are."""
    local = {(f.domain, f.name) for f in proto.functions}

    def check(node_list, where: str) -> None:
        for node in node_list:
            if node.domain not in STANDARD_DOMAINS and (node.domain, node.op_type) not in local:
                raise OnnxImportError(
                    f"{shown}: node {node.name[:60]!r} ({node.op_type[:60]}{where}) is in operator domain {node.domain[:60]!r}; "
                    "only ONNX's standard operators (domain 'ai.onnx') run on every runtime of the bench")
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    check(sub.node, f", in a subgraph of {node.op_type}")

    check(proto.graph.node, "")
    for function in proto.functions:
        check(function.node, f", in local function {function.name[:60]}")


def _default_opset(proto: onnx.ModelProto) -> int:
    return max((o.version for o in proto.opset_import if o.domain in STANDARD_DOMAINS), default=0)


# --------------------------------------------------------------------------- the interface

def read_interface(source: Source, request: ImportRequest) -> Interface:
    """The input layout and the kind of output, from the graph or the options (they must agree)."""
    shown = f"--onnx {source.path}"
    graph = source.proto.graph
    constants = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in constants]  # IR < 4 lists the weights as inputs too
    if len(inputs) != 1:
        raise OnnxImportError(f"{shown}: {len(inputs)} inputs ({_names(inputs)}); expected one image input")
    if len(graph.output) != 1:
        raise OnnxImportError(f"{shown}: {len(graph.output)} outputs ({_names(graph.output)}); expected one output of "
                              f"{OUTPUT_SHAPE[0]} class scores")
    (inp,), (out,) = inputs, graph.output
    layout, layout_from, dims = _layout(inp, request.input_layout, shown)
    output, output_from = _output_kind(graph, out, request.output, shown)
    fixed = dims[0] if isinstance(dims[0], int) else None
    return Interface(inp.name, dims, layout, layout_from, out.name, output, output_from, fixed_batch=fixed)


def _dims(value: onnx.ValueInfoProto) -> list[int | None] | None:
    """A value's dimensions: a number where fixed, None where symbolic or unknown; None without a shape."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]


def _shown_dims(dims: list[int | None] | None) -> str:
    return "unknown" if dims is None else "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _layout(inp: onnx.ValueInfoProto, option: str | None, shown: str) -> tuple[str, str, list[int | None]]:
    kind = inp.type.tensor_type.elem_type
    if kind != TensorProto.FLOAT:
        raise OnnxImportError(f"{shown}: input {inp.name[:60]!r} is {TensorProto.DataType.Name(kind).lower()}; expected float32 "
                              "images in [0, 1]")
    dims = _dims(inp)
    expected = "NHWC (N, 28, 28, 1) or NCHW (N, 1, 28, 28)"
    if dims is None or len(dims) != 4:
        raise OnnxImportError(f"{shown}: input {inp.name[:60]!r} has shape {_shown_dims(dims)}"
                              f"{'' if dims is None else f' (rank {len(dims)})'}; expected {expected}")
    fits = [name for name, shape in LAYOUTS.items() if all(d is None or d == s for d, s in zip(dims[1:], shape))]
    if not fits:
        raise OnnxImportError(f"{shown}: input {inp.name[:60]!r} has shape {_shown_dims(dims)}; expected {expected}")
    if option is not None:
        if option not in fits:
            raise OnnxImportError(f"--input-layout {option}: input {inp.name[:60]!r} of {shown.removeprefix('--onnx ')} has "
                                  f"shape {_shown_dims(dims)}, which is {fits[0].upper()}")
        return option, "--input-layout", dims
    if len(fits) > 1:
        raise OnnxImportError(f"{shown}: input {inp.name[:60]!r} has shape {_shown_dims(dims)}, which does not say its layout; "
                              "say it with --input-layout nhwc or --input-layout nchw")
    return fits[0], f"the graph's input shape {_shown_dims(dims)}", dims


def _output_kind(graph: onnx.GraphProto, out: onnx.ValueInfoProto, option: str | None, shown: str) -> tuple[str, str]:
    kind = out.type.tensor_type.elem_type
    if kind != TensorProto.FLOAT:
        raise OnnxImportError(f"{shown}: output {out.name[:60]!r} is {TensorProto.DataType.Name(kind).lower()}; expected float32 "
                              "class scores")
    dims = _dims(out)
    if dims is not None and (len(dims) != 2 or dims[1] not in (None, OUTPUT_SHAPE[0])):
        classes = f"{dims[1]} classes" if len(dims) == 2 else f"rank {len(dims)}"
        raise OnnxImportError(f"{shown}: output {out.name[:60]!r} has shape {_shown_dims(dims)} ({classes}); expected "
                              f"(N, {OUTPUT_SHAPE[0]}): scores of the study's {OUTPUT_SHAPE[0]} classes")
    producer = next((node for node in graph.node if out.name in node.output), None)
    axis = next((helper.get_attribute_value(a) for a in producer.attribute if a.name == "axis"), -1) if producer else None
    found = None
    if producer is not None and producer.op_type in ("Softmax", "LogSoftmax") and axis in (-1, 1):
        found = "probabilities" if producer.op_type == "Softmax" else "log-probabilities"
    if option is None:
        if found is None:
            what = f"a {producer.op_type} node" if producer is not None else "no node"
            raise OnnxImportError(f"{shown}: cannot tell whether output {out.name[:60]!r} (from {what}) is probabilities or "
                                  "logits; say it with --output probabilities or --output logits")
        return found, f"the graph's final {producer.op_type} node"
    if found == "probabilities" and option == "logits":
        raise OnnxImportError(f"--output logits: output {out.name[:60]!r} of {shown.removeprefix('--onnx ')} comes from a "
                              "Softmax node: it is probabilities already (--output probabilities)")
    if found == "log-probabilities" and option == "probabilities":
        raise OnnxImportError(f"--output probabilities: output {out.name[:60]!r} of {shown.removeprefix('--onnx ')} comes from "
                              "a LogSoftmax node: log-probabilities, which a Softmax turns into probabilities (--output logits)")
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
        if target in _value_names(graph) and target != own:
            free = _free_name(graph, f"{target}_source")
            _rename(graph, target, free)
            new_input = free if new_input == target else new_input
            new_output = free if new_output == target else new_output
    if interface.layout == "nchw":
        graph.node.insert(0, helper.make_node("Transpose", [INPUT_NAME], [new_input], perm=list(NCHW_PERM),
                                              name=_free_node_name(graph, "fmnist_nhwc_to_nchw")))
        added.append(f"Transpose {list(NCHW_PERM)} from NHWC 'image' to the graph's NCHW input {interface.input_name!r}")
    elif new_input != INPUT_NAME:
        _rename(graph, new_input, INPUT_NAME)
        added.append(f"input {interface.input_name!r} renamed 'image'")
    if interface.output == "probabilities":
        if new_output != OUTPUT_NAME:
            _rename(graph, new_output, OUTPUT_NAME)
            added.append(f"output {interface.output_name!r} renamed 'probabilities'")
    else:
        graph.node.append(helper.make_node("Softmax", [new_output], [OUTPUT_NAME], axis=-1,
                                           name=_free_node_name(graph, "fmnist_softmax")))
        added.append(f"Softmax over the {interface.output} of {interface.output_name!r}, as 'probabilities'")
    if interface.fixed_batch is not None:
        added.append(f"batch dimension made dynamic (was fixed at {interface.fixed_batch})")
    # The new interface; the graph's own shape annotations go (they may hold the old fixed batch): runtimes infer them.
    constants = {t.name for t in graph.initializer}
    kept = [v for v in graph.input if v.name in constants]
    del graph.input[:]
    graph.input.extend([helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, *INPUT_SHAPE]), *kept])
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [BATCH_DIM, *OUTPUT_SHAPE])])
    del graph.value_info[:]
    del model.metadata_props[:]
    onnx.checker.check_model(model, full_check=True)
    return model


def _value_names(graph: onnx.GraphProto) -> set[str]:
    """Every value name in ``graph`` and its subgraphs."""
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info)} | {t.name for t in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                names |= _value_names(sub)
    return names


def _free_name(graph: onnx.GraphProto, stem: str) -> str:
    taken = _value_names(graph)
    return next(f"{stem}{i or ''}" for i in range(len(taken) + 1) if f"{stem}{i or ''}" not in taken)


def _free_node_name(graph: onnx.GraphProto, stem: str) -> str:
    taken = {node.name for node in graph.node}
    return next(f"{stem}{i or ''}" for i in range(len(taken) + 1) if f"{stem}{i or ''}" not in taken)


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename value ``old`` to ``new`` wherever it appears, subgraphs included (they may read outer values)."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _rename(sub, old, new)
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new
    for tensor in graph.initializer:
        if tensor.name == old:
            tensor.name = new


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


# --------------------------------------------------------------------------- records

def _metadata_props(request: ImportRequest, source: Source, interface: Interface, dataset: Dataset,
                    source_accuracy: float) -> dict[str, str]:
    producer = " ".join(p for p in (source.proto.producer_name, source.proto.producer_version) if p) or "unknown"
    return {
        "model": request.name,
        "display_name": f"{request.name} {YOURS}",
        "origin": "onnx import (fmnist-export --onnx)",
        "class_names": json.dumps(list(dataset.class_names)),
        "input": "image: float32 [batch, 28, 28, 1], grey pixels in [0, 1] (Fashion-MNIST / 255)",
        "output": "probabilities: float32 [batch, 5], softmax over class_names",
        "source_onnx_file": request.path.name,
        "source_onnx_sha256": source.sha256,
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


def _data_record(dataset: Dataset, splits) -> dict:
    """The data record a trained model's metadata has (trainer/training.py): bench reloads the test split by it."""
    return {
        "source": dataset.source, "sha256": dataset.sha256, "images": len(dataset),
        "class_names": list(dataset.class_names),
        "class_map": list(dataset.class_map) if dataset.class_map else None,
        "split": splits.sizes(), "split_protocol": SPLIT_PROTOCOL,
    }


