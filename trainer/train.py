"""``fmnist-train``: train the report's models on Fashion-MNIST and write every artifact the report had.

    fmnist-train all                      # the six models, the report's protocol
    fmnist-train model4 --epochs 5        # one model
    fmnist-train model4 --limit 2000 --epochs 1 --quiet
    fmnist-train sweep model4 --grid optimizer=sgd,adam
    fmnist-train report
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: keep its start-up chatter out

import keras  # noqa: E402

from trainer import data as data_mod  # noqa: E402
from trainer.artifacts import Artifacts, ArtifactsError, atomic_path  # noqa: E402
from trainer.data import DataError, Dataset, Splits  # noqa: E402
from trainer.environment import machine_info  # noqa: E402
from trainer.evaluation import evaluate  # noqa: E402
from trainer.fit import OPTIMIZERS, FitOutcome, TrainConfig, compile_for_training, discard_checkpoint, fit  # noqa: E402
from trainer.models import BaseWeightsError, UnknownModelError, create_model, get_spec, list_models  # noqa: E402
from trainer.plots import accuracy_loss_plot, sample_grid  # noqa: E402
from trainer.reports import RunMetadata, table1, write_table  # noqa: E402
from trainer.sweep import SweepError, parse_grid, run_sweep  # noqa: E402

# Keras' own default learning rate per optimizer: the report used Adam() and 'sgd' as they come.
DEFAULT_LR = {"adam": 1e-3, "sgd": 1e-2}


def resolve_config(name: str, args: argparse.Namespace) -> TrainConfig:
    defaults = get_spec(name).defaults
    optimizer = args.optimizer or defaults.optimizer
    return TrainConfig(
        model=name,
        epochs=args.epochs or defaults.epochs,
        batch_size=args.batch_size or defaults.batch_size,
        optimizer=optimizer,
        lr=args.lr if args.lr is not None else DEFAULT_LR[optimizer],
        seed=args.seed,
        base_weights=args.base_weights,
        limit=args.limit,
    )


def train_one(
    config: TrainConfig,
    dataset: Dataset,
    splits: Splits,
    artifacts: Artifacts,
    quiet: bool = False,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
    log: TextIO | None = None,
    feature_cache: bool = True,
) -> RunMetadata:
    """Train, evaluate and save one model; returns the metadata written beside its ``.keras`` file."""
    log = log or sys.stdout
    spec = get_spec(config.model)
    keras.utils.set_random_seed(config.seed)
    built = create_model(config.model, base_weights=config.base_weights)
    if not quiet:
        print(f"[{config.model}] {spec.display_name}: {built.model.count_params():,} parameters, "
              f"{config.epochs} epochs, batch {config.batch_size}, {config.optimizer} lr {config.lr:g}, "
              f"base weights: {built.base_weights}", file=log, flush=True)

    outcome = fit(built, dataset, splits, config, artifacts, quiet=quiet, extra_callbacks=extra_callbacks, log=log,
                  feature_cache=feature_cache)
    if built.head is not None and feature_cache:
        compile_for_training(built.model, config)  # the full model (base + head) is what gets evaluated
    result = evaluate(built.model, splits.test)

    model_path = artifacts.model_file(config.model)
    artifacts.ensure(model_path.parent, artifacts.plot_file(config.model).parent)
    with atomic_path(model_path) as tmp:
        built.model.save(tmp)
    accuracy_loss_plot(outcome.history, f"{spec.display_name}: accuracy and loss", artifacts.plot_file(config.model))

    metadata = _metadata(config, spec.display_name, spec.conv_layers, built, dataset, splits, outcome, result, model_path)
    metadata.write(artifacts.metadata_file(config.model))
    discard_checkpoint(artifacts, config.model)
    if not quiet:
        print(f"[{config.model}] test accuracy {result.accuracy:.4f}, loss {result.loss:.4f}; "
              f"evaluate {result.evaluate_s * 1000:.0f} ms, predict {result.predict_s * 1000:.0f} ms; "
              f"trained in {outcome.training_time_s / 60:.2f} min -> {model_path}", file=log, flush=True)
        print(result.classification_report_text, file=log, flush=True)
    return metadata


def _metadata(config, display_name, conv_layers, built, dataset, splits, outcome: FitOutcome, result, model_path: Path) -> RunMetadata:
    model = built.model
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    last = outcome.history.iloc[-1]
    return RunMetadata(
        model=config.model,
        display_name=display_name,
        config=asdict(config),
        data={
            "source": dataset.source, "sha256": dataset.sha256, "images": len(dataset),
            "class_names": list(dataset.class_names),
            "class_map": list(dataset.class_map) if dataset.class_map else None,
            "split": splits.sizes(), "split_protocol": "train_test_split(test_size=0.2, random_state=0), then 0.5: test first, val second",
        },
        base_weights=built.base_weights,
        params={"total": model.count_params(), "trainable": trainable, "non_trainable": model.count_params() - trainable},
        training={
            "training_time_s": outcome.training_time_s,
            "feature_extraction_s": outcome.feature_extraction_s,
            "features_from_cache": outcome.features_cached,
            "through_frozen_base": outcome.through_frozen_base,
            "epochs_run": len(outcome.history),
            "resumed_from_epoch": outcome.resumed_from_epoch,
            "median_epoch_s": float(outcome.history["epoch_time_s"].median()),
        },
        final_epoch={k: float(last[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
        test=asdict(result),
        model_file={"path": str(model_path), "sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
                    "bytes": model_path.stat().st_size},
        machine=machine_info(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra={"conv_layers": conv_layers},
    )


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fmnist-train", description="Train the report's Fashion-MNIST models.",
        epilog="Also: 'fmnist-train sweep MODEL --grid NAME=V1,V2' (experiment tables) and 'fmnist-train report'.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help=f"'all' or any of: {', '.join(list_models())}")
    parser.add_argument("--through-base", action="store_true",
                        help="resnet50/vgg16: run the frozen base on every batch, as the report did (slow; to measure the feature cache)")
    add_training_options(parser)
    return parser


def add_training_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=_positive_int, help="epochs (default 50, the report's)")
    parser.add_argument("--batch-size", type=_positive_int, help="batch size (default 128)")
    parser.add_argument("--lr", type=_positive_float, help="learning rate (default: Keras' for the optimizer, 1e-3 for Adam)")
    parser.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="default adam")
    parser.add_argument("--seed", type=int, default=0, help="seed for weights and shuffling (default 0)")
    parser.add_argument("--data", help="folder of IDX .gz files, the report's .npy dict, or .npz (default: $FMNIST_DATA, then Debian's dataset-fashion-mnist)")
    parser.add_argument("--class-map", help="10->5 class mapping: 'pairs' (default, label // 2) or ten comma-separated classes")
    parser.add_argument("--base-weights", default="auto", help="frozen base of resnet50/vgg16: auto (default), imagenet, none, or a weights file")
    parser.add_argument("--artifacts", help="output folder (default: $FMNIST_ARTIFACTS, then ./artifacts)")
    parser.add_argument("--limit", type=_positive_int, help="use only the first N images (smoke runs)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")


def build_sweep_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmnist-train sweep", description="Train a grid of configurations; rows go to reports/experiments.csv.")
    parser.add_argument("model", help=f"any of: {', '.join(list_models())}")
    parser.add_argument("--grid", action="append", required=True, metavar="NAME=V1,V2",
                        help="optimizer, batch_size, lr, epochs or seed; several --grid make a product")
    parser.add_argument("--force", action="store_true", help="rerun configurations already in experiments.csv")
    add_training_options(parser)
    return parser


def _positive(kind: type):
    """An argparse type: a positive int or float, with a one-line error naming the value."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value
    return parse


_positive_int, _positive_float = _positive(int), _positive(float)


def expand_models(names: list[str]) -> list[str]:
    if "all" in names:
        return list_models()
    for name in names:
        get_spec(name)  # raises UnknownModelError naming the choices
    return list(dict.fromkeys(names))


def load_data(args: argparse.Namespace, artifacts: Artifacts, log: TextIO) -> tuple[Dataset, Splits]:
    artifacts.ensure(artifacts.root, artifacts.reports_dir, artifacts.plot_file("samples").parent)
    dataset = data_mod.load_dataset(args.data, data_mod.parse_class_map(args.class_map)).limit(args.limit)
    splits = data_mod.split_dataset(dataset)
    if not args.quiet:
        print(f"data: {dataset.source}, {len(dataset)} images, split {splits.sizes()}", file=log, flush=True)
    return dataset, splits


def run(args: argparse.Namespace, log: TextIO | None = None) -> list[RunMetadata]:
    log = log or sys.stdout
    names = expand_models(args.models)
    artifacts = Artifacts.at(args.artifacts)
    dataset, splits = load_data(args, artifacts, log)
    sample_grid(splits.train, artifacts.plot_file("samples"))

    results, start = [], time.perf_counter()
    for name in names:
        results.append(train_one(resolve_config(name, args), dataset, splits, artifacts, quiet=args.quiet, log=log,
                                 feature_cache=not args.through_base))
    table = table1(artifacts, list_models())
    _, md_path = write_table(table, artifacts.reports_dir / "table1",
                             "Table 1: model performance (ours beside the report's; training time on this machine)")
    print(f"trained {len(results)} model(s) in {(time.perf_counter() - start) / 60:.1f} min; Table 1: {md_path}", file=log)
    return results


def run_sweep_command(args: argparse.Namespace, log: TextIO | None = None) -> list[dict]:
    log = log or sys.stdout
    get_spec(args.model)
    grid = parse_grid(args.grid)
    artifacts = Artifacts.at(args.artifacts)
    dataset, splits = load_data(args, artifacts, log)
    rows = run_sweep(args.model, grid, resolve_config(args.model, args), dataset, splits, artifacts, DEFAULT_LR,
                     lr_given=args.lr is not None, force=args.force, quiet=args.quiet, log=log)
    print(f"sweep: {len(rows)} row(s) written to {artifacts.reports_dir / 'experiments.csv'}", file=log)
    return rows


ERRORS = (DataError, ArtifactsError, UnknownModelError, BaseWeightsError, SweepError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else None
    try:
        if command == "sweep":
            run_sweep_command(build_sweep_parser().parse_args(argv[1:]))
        elif command == "report":
            from trainer.report_md import main as report_main  # noqa: PLC0415

            return report_main(argv[1:])
        else:
            run(build_parser().parse_args(argv))
    except ERRORS as exc:
        print(f"fmnist-train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fmnist-train: interrupted; run the same command again to resume from the last finished epoch", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
