"""``fmnist-export``: trained Keras models -> validated ONNX (fp32, fp16, int8); or an ONNX file of yours.

    fmnist-export model4
    fmnist-export all --variants fp32,int8
    fmnist-export mynet --model-file mynet.py                 # a model of yours, trained with the same file
    fmnist-export --onnx net.onnx --name mynet --output logits  # an ONNX file from anywhere (exporter/onnx_import.py)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from trainer import extras, quiet  # standard library only

extras.require("train", "fmnist-export")  # a bench-only install: one line naming the extra, not a traceback
quiet.configure(quiet.verbose_requested())
quiet.import_tensorflow()  # here, before the modules below import it: its import-time lines are filtered

from exporter.contract import VARIANTS, ContractError, shown  # noqa: E402
from exporter.convert import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET  # noqa: E402
from exporter.export import ExportError, ExportOptions, check_manifest, export_model  # noqa: E402
from exporter.onnx_import import LAYOUTS, OUTPUTS, ImportRequest, import_onnx  # noqa: E402
from exporter.validate import ParityError, Tolerances  # noqa: E402
from exporter.variants import (CALIBRATION_METHODS, FP32_GRAPHS, INT8_ACTIVATIONS, INT8_FORMATS, INT8_TARGETS,  # noqa: E402
                               Int8Config, int8_target)
from trainer.environment import cpu_flags  # noqa: E402
from trainer.artifacts import Artifacts, ArtifactsError, check_folder, check_source  # noqa: E402
from trainer.data import DataError  # noqa: E402
from trainer.locks import LockedError  # noqa: E402
from trainer import userfile  # noqa: E402
from trainer.models import ModelFileError, UnknownModelError, get_spec, list_models  # noqa: E402


def _variants(text: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(VARIANTS)}")
    return chosen


def _bounded(kind: type, low: float, high: float | None = None):
    """An argparse type refusing NaN, infinities and values outside [low, high], naming the value."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None
        if not (math.isfinite(value) and value >= low and (high is None or value <= high)):
            raise argparse.ArgumentTypeError(f"{text!r} must be {'between %g and %g' % (low, high) if high is not None else 'at least %g' % low}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmnist-export", description="Export trained models to validated ONNX.")
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"'all' (every trained model) or any of: {', '.join(list_models())}")
    parser.add_argument("--variants", type=_variants, default=VARIANTS, help="comma-separated, default fp32,fp16,int8")
    parser.add_argument("--opset", type=_bounded(int, MIN_OPSET, MAX_OPSET), default=DEFAULT_OPSET, help=f"ONNX opset, {MIN_OPSET}-{MAX_OPSET} (default {DEFAULT_OPSET})")
    parser.add_argument("--artifacts", help="artifacts folder (default: $FMNIST_ARTIFACTS, then ./artifacts)")
    parser.add_argument("--data", help="where the training data is now, if it moved (its hash must match); with --onnx, the data "
                                       "to judge and calibrate on (default: $FMNIST_DATA, then Debian's dataset-fashion-mnist)")
    parser.add_argument("--parity-images", type=_bounded(int, 1), default=1000, help="test images compared with Keras (default 1000)")
    parser.add_argument("--calibration-images", type=_bounded(int, 1), default=512, help="training images for int8 calibration, in batches of 32 (default 512)")
    parser.add_argument("--int8-max-drop", type=_bounded(float, 0.0, 100.0), default=1.0, help="test-accuracy points int8 may lose against fp32 (default 1.0)")
    parser.add_argument("--int8-format", choices=sorted(INT8_FORMATS), default="qdq", help="quantized graph format (default qdq)")
    parser.add_argument("--int8-activations", choices=sorted(INT8_ACTIVATIONS), default="uint8", help="activation type (default uint8)")
    parser.add_argument("--int8-calibration", choices=sorted(CALIBRATION_METHODS), default="minmax",
                        help="how activation ranges are calibrated (default minmax)")
    parser.add_argument("--int8-target", choices=["auto", *INT8_TARGETS], default="auto",
                        help="the CPU the int8 file will run on: vnni (x86 with VNNI or AMX, Arm) takes full-range weights, "
                             "avx2 (x86 without VNNI) 7-bit ones, which its u8 x s8 products cannot saturate; auto (default): "
                             "this machine's")
    parser.add_argument("--int8-reduce-range", action="store_true",
                        help="int8: 7-bit weights whatever the target (as --int8-target avx2)")
    parser.add_argument("--no-affine-rewrite", action="store_true",
                        help="int8: quantize BatchNormalization after ReLU as Mul+Add instead of a depthwise 1x1 Conv (for comparison)")
    parser.add_argument("--fp32-graph", choices=list(FP32_GRAPHS), default="depthwise",
                        help="fp32 and fp16: how BatchNormalization after ReLU is laid out (default depthwise: "
                             "depthwise 1x1 Conv on feature maps, folded into Dense layers; fold: also into the next Conv; "
                             "converted: tf2onnx's graph); all compute the same function")
    parser.add_argument("--onnx-dir", help="where the .onnx files and manifest go (default: the artifacts' onnx/); for trying export settings side by side")
    parser.add_argument("--model-file", action="append", metavar="PATH.py",
                        help="the Python file that registers your model (as fmnist-train took it); it is run, so give "
                             "only files you trust; repeatable")
    yours = parser.add_argument_group("an ONNX file of yours (instead of MODEL names)")
    yours.add_argument("--onnx", metavar="PATH", help="an ONNX classifier: NHWC (N, 28, 28, 1) or NCHW (N, 1, 28, 28) "
                                                      "float32 input, 5 probabilities or logits out")
    yours.add_argument("--name", help="what to call it (a new name: letters, digits, '_' or '-')")
    yours.add_argument("--input-layout", choices=sorted(LAYOUTS), help="its input layout, when its shape does not say")
    yours.add_argument("--output", choices=OUTPUTS, help="what it outputs, when its graph does not end in a Softmax")
    yours.add_argument("--class-map", help="10->5 class mapping of the data, as fmnist-train's (default 'pairs')")
    yours.add_argument("--limit", type=_bounded(int, 1), help="use only the first N images (smoke runs)")
    parser.add_argument("--quiet", action="store_true")
    quiet.add_flag(parser)
    return parser


ONNX_ONLY = ("name", "input_layout", "output", "class_map", "limit")


def _import_request(args: argparse.Namespace) -> ImportRequest | None:
    """The --onnx request, or None for MODEL names; options of the other mode are refused, not ignored."""
    given = [f"--{option.replace('_', '-')}" for option in ONNX_ONLY if getattr(args, option) is not None]
    if args.onnx is None:
        if given:
            raise ExportError(f"{', '.join(given)}: go with --onnx PATH (an ONNX file of yours)")
        if not args.models:
            raise ExportError("nothing to export: give MODEL names (or 'all'), or --onnx PATH --name NAME")
        return None
    if args.models:
        raise ExportError(f"--onnx {args.onnx}: give either MODEL names or --onnx, not both ({' '.join(args.models)[:80]})")
    if args.model_file:
        raise ExportError("--model-file: goes with MODEL names (Keras models of yours), not with --onnx")
    if args.name is None:
        raise ExportError(f"--onnx {args.onnx}: needs --name NAME, the name it gets in the manifest, the bench and the report")
    return ImportRequest(Path(args.onnx), args.name, args.input_layout, args.output, args.class_map, args.limit)


def _models(names: list[str], artifacts: Artifacts) -> list[str]:
    for name in names:
        if name != "all":
            get_spec(name)  # a typo beside 'all' is an error too, never ignored
    if "all" not in names:
        return list(dict.fromkeys(names))
    trained = [name for name in list_models() if artifacts.model_file(name).exists()]
    if not trained:
        raise ExportError(f"{artifacts.root / 'models'}: no trained models; make them with: fmnist-train all")
    return trained


def _check_paths(args: argparse.Namespace, artifacts: Artifacts, onnx_dir: Path) -> None:
    """Each path option (or the default it stands for) names something of the right kind."""
    root = f"--artifacts {artifacts.root}" if args.artifacts else f"artifacts folder {artifacts.root}"
    if args.onnx is None:  # an imported file needs no training: its folder is made
        check_folder(artifacts.root, root, fix=f"train into it first: fmnist-train MODEL --artifacts {artifacts.root}")
    else:
        check_folder(artifacts.root, root, make=True)
    # The onnx folder is made when missing; what is there, or the nearest folder above it that is, must be a folder.
    check_folder(onnx_dir, f"{'--onnx-dir' if args.onnx_dir else 'artifacts folder'} {onnx_dir}", make=True)
    if args.data is not None:  # which files it reads, trainer/data.py says
        check_source(Path(args.data), f"--data {args.data}")


def _int8_config(args: argparse.Namespace) -> Int8Config:
    target = "avx2" if args.int8_reduce_range else int8_target(args.int8_target, cpu_flags())
    return Int8Config(args.int8_format, args.int8_activations, args.int8_calibration, not args.no_affine_rewrite,
                      INT8_TARGETS[target], target)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet.configure(args.verbose)
    options = ExportOptions(
        variants=args.variants, opset=args.opset, parity_images=args.parity_images,
        calibration_images=args.calibration_images, data=args.data,
        int8=_int8_config(args),
        fp32_graph=args.fp32_graph, onnx_dir=Path(args.onnx_dir) if args.onnx_dir else None,
        tolerances=Tolerances(int8_max_accuracy_drop_points=args.int8_max_drop),
    )
    artifacts = Artifacts.at(args.artifacts)
    try:
        # Every path, and the manifest the exports merge into at their end, before any work: one line if one is wrong.
        request = _import_request(args)
        _check_paths(args, artifacts, options.onnx_dir or artifacts.onnx_dir)
        check_manifest(options.onnx_dir or artifacts.onnx_dir)
        jobs: dict[str, Callable] = {}
        if request is not None:
            jobs[request.name] = functools.partial(import_onnx, request, artifacts, options)
        else:
            userfile.load_model_files(args.model_file)
            jobs = {name: functools.partial(export_model, name, artifacts, options) for name in _models(args.models, artifacts)}
    except (ExportError, UnknownModelError, ContractError, ModelFileError, ArtifactsError) as exc:
        print(f"fmnist-export: error: {exc}", file=sys.stderr)
        return 2
    # Every model is tried: one that fails does not stop the others; the exit code reports the worst.
    exit_code = 0
    with open(os.devnull, "w") if args.quiet else contextlib.nullcontext(sys.stdout) as log:
        for name, job in jobs.items():
            try:
                job(log)
            except ParityError as exc:
                print(f"fmnist-export: error: {exc}; nothing was written for {name}", file=sys.stderr)
                exit_code = max(exit_code, 1)
            except (ExportError, DataError, ArtifactsError, ContractError, LockedError) as exc:
                print(f"fmnist-export: error: {exc}", file=sys.stderr)
                exit_code = 2
            except OSError as exc:  # a full disk, a folder that went away: one line, nothing published
                where = shown(Path(exc.filename)) if exc.filename else ""  # a staged file: by the onnx/ path the user knows
                print(f"fmnist-export: error: {name}: {where} {exc.strerror or exc}; nothing was published", file=sys.stderr)
                exit_code = 2
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
