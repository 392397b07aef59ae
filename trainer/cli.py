"""``fmnist-train``: train the report's models on Fashion-MNIST and write every artifact the report had.

    fmnist-train all                      # the six models, the report's protocol
    fmnist-train model4 --epochs 5        # one model
    fmnist-train model4 --limit 2000 --epochs 1 --quiet
    fmnist-train sweep model4 --grid optimizer=sgd,adam

Options become a configuration (trainer/config.py); the library does the work (trainer/training.py,
trainer/sweep.py). Options and the files they name are checked before any work; a known error is one line
and exit status 2, a model that trained to no result (not finite) one line and exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from pathlib import Path
import re
import sys
import time
from collections.abc import Callable
from typing import NoReturn, TextIO

from trainer import extras, quiet  # standard library only

extras.require("train", "fmnist-train")  # a bench-only install: one line naming the extra, not a traceback
quiet.configure(quiet.verbose_requested())
quiet.import_tensorflow()  # here, before the modules below import it: its import-time lines are filtered

from trainer import cluster, userfile  # noqa: E402
from trainer import data as data_mod  # noqa: E402
from trainer.artifacts import Artifacts, ArtifactsError, check_folder, clip, writing  # noqa: E402
from trainer.config import DEFAULTS, TrainConfig, resolve_config  # noqa: E402
from trainer.data import DataError, Dataset, Splits  # noqa: E402
from trainer.locks import LockedError, exclusive  # noqa: E402
from trainer.models import BaseWeightsError, ModelFileError, UnknownModelError, get_spec, list_models  # noqa: E402
from trainer.plots import sample_grid  # noqa: E402
from trainer.reports import MetadataError, RunMetadata, table1, trained_models, write_table  # noqa: E402
from trainer.sweep import MAX_COUNT, MAX_SEED, SweepError, parse_grid, run_sweep  # noqa: E402
from trainer.training import TrainingFailed, load_data, model_lock, train_one  # noqa: E402

PROG = "fmnist-train"
REPORT_MOVED = f"{PROG}: error: 'report' moved: run 'fmnist-bench report' (it reads the bench results too)"
BASE_WEIGHTS_WORDS = ("auto", "imagenet", "none")  # --base-weights values that are not a file (trainer/models.py)


class OptionError(ValueError):
    """An option that cannot be used as given; the message names it."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its error line kept to one line and free of huge user text (a pasted file as a value)."""

    def error(self, message: str) -> NoReturn:
        super().error(one_line(message))


def build_parser(sweep: bool = False) -> argparse.ArgumentParser:
    """``fmnist-train MODEL...``, or with ``sweep`` ``fmnist-train sweep MODEL --grid ...``."""
    if sweep:
        parser = _Parser(prog=f"{PROG} sweep", description="Train a grid of configurations; rows go to reports/experiments.csv.")
        parser.add_argument("model", help=f"any of: {', '.join(list_models())}")
        parser.add_argument("--grid", action="append", required=True, metavar="NAME=V1,V2",
                            help="optimizer, batch_size, lr, epochs or seed; several --grid make a product")
        parser.add_argument("--force", action="store_true", help="rerun configurations already in experiments.csv")
    else:
        parser = _Parser(
            prog=PROG, description="Train the report's Fashion-MNIST models.",
            epilog=f"Also: '{PROG} sweep MODEL --grid NAME=V1,V2' (experiment tables). REPORT.md: 'fmnist-bench report'.",
        )
        parser.add_argument("models", nargs="+", metavar="MODEL", help=f"'all' or any of: {', '.join(list_models())}")
    parser.add_argument("--ray", nargs="?", const=cluster.LOCAL, metavar="ADDRESS",
                        help=f"each {'configuration' if sweep else 'model'} one Ray task (needs the [ray] extra): no "
                             "ADDRESS starts a local Ray instance; 'auto' or 'ray://host:port' joins a cluster. "
                             "Give it after the model names.")
    if not sweep:
        parser.add_argument("--through-base", action="store_true", help="resnet50/vgg16: run the frozen base on every "
                            "batch, as the report did (slow; to measure the feature cache)")
    lrs = ", ".join(f"{lr:g} for {name}" for name, lr in DEFAULTS.lr_by_optimizer.items())
    parser.add_argument("--epochs", type=_positive_int, help=f"epochs (default {DEFAULTS.epochs}, the report's)")
    parser.add_argument("--batch-size", type=_positive_int, help=f"batch size (default {DEFAULTS.batch_size})")
    parser.add_argument("--lr", type=_positive_float, help=f"learning rate (default: Keras' for the optimizer, {lrs})")
    parser.add_argument("--optimizer", choices=sorted(DEFAULTS.optimizers), help=f"default {DEFAULTS.optimizer}")
    parser.add_argument("--precision", choices=DEFAULTS.precisions,
                        help=f"default {DEFAULTS.precision}, the study's; bf16: Keras' mixed_bfloat16 "
                             "(bfloat16 compute, float32 weights and output)")
    parser.add_argument("--seed", type=_seed, default=0, help=f"seed for weights and shuffling, 0 to {MAX_SEED} (default 0)")
    parser.add_argument("--data", help="folder of IDX .gz files, the report's .npy dict, or .npz (default: $FMNIST_DATA, then Debian's dataset-fashion-mnist)")
    parser.add_argument("--class-map", help="10->5 class mapping: 'pairs' (default, label // 2) or ten comma-separated classes")
    parser.add_argument("--base-weights", help="frozen base of resnet50/vgg16: auto (default), imagenet, none, or a weights file")
    parser.add_argument("--artifacts", help="output folder (default: $FMNIST_ARTIFACTS, then ./artifacts)")
    parser.add_argument("--limit", type=_positive_int, help="use only the first N images (smoke runs)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress")
    parser.add_argument("--model-file", action="append", metavar="PATH.py",
                        help="a Python file that registers your own models with @register('NAME') "
                             "(from trainer.models import register); it is run, so give only files you trust; repeatable")
    quiet.add_flag(parser)
    return parser


def _number(kind: type, high: int | None = None) -> Callable[[str], int | float]:
    """An argparse type: a finite positive ``kind`` (an int at most MAX_COUNT), or with ``high`` a whole number from
    0 to ``high``; anything else is a one-line error naming the value."""
    def parse(text: str) -> int | float:
        shown = repr(clip(text))
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shown} is not a {'whole number' if kind is int else 'number'}") from None
        if high is not None:
            problem = "" if 0 <= value <= high else f"must be between 0 and {high}"
        elif kind is float and not math.isfinite(value):  # inf trains to NaN and nan compares false with everything
            problem = "must be a finite number"
        elif not value > 0:
            problem = "must be positive"
        else:
            problem = f"must be at most {MAX_COUNT}" if kind is int and value > MAX_COUNT else ""
        if problem:
            raise argparse.ArgumentTypeError(f"{shown} {problem}")
        return value
    return parse


# --seed: what keras.utils.set_random_seed takes.
_positive_int, _positive_float, _seed = _number(int), _number(float), _number(int, high=MAX_SEED)


def one_line(text: object, token_limit: int = 160, line_limit: int = 600) -> str:
    """An error message as one line, free of huge user text.

    A quoted value (how argparse and our messages echo what the user typed) is cut to about 80
    characters; any other huge word (an absurd path) to ``token_limit``, the line to ``line_limit``.
    """
    text = re.sub(r"'([^'\s]{81,})'", lambda m: repr(clip(m.group(1))), " ".join(str(text).split()))
    words = [clip(word, token_limit) if len(word) > token_limit else word for word in text.split()]
    return clip(" ".join(words), line_limit)


def expand_models(names: list[str]) -> list[str]:
    """``all`` -> every registered model; otherwise the names, checked and without repeats."""
    for name in names:
        if name != "all":
            get_spec(name)  # raises UnknownModelError naming the choices: a typo beside 'all' is never ignored
    if "all" in names:
        return list_models()
    return list(dict.fromkeys(names))


def check_options(args: argparse.Namespace, names: list[str]) -> None:
    """Refuse, before any work, an option that none of ``names`` uses and a path option that names nothing usable."""
    transfer = [name for name in list_models() if get_spec(name).transfer]
    if not set(names) & set(transfer):
        for option, given in (("--base-weights", args.base_weights is not None),
                              ("--through-base", getattr(args, "through_base", False))):
            if given:
                raise OptionError(f"{option} applies only to {', '.join(transfer)}, not to {', '.join(names)}")
    # os.path's tests, not Path's: they answer False for a name the system refuses (too long), not raise.
    weights = args.base_weights
    if weights is not None and weights not in BASE_WEIGHTS_WORDS and not os.path.isfile(weights):
        what = "is a folder" if os.path.isdir(weights) else "no such file"
        raise OptionError(f"--base-weights {weights}: {what}; expected {', '.join(BASE_WEIGHTS_WORDS)} or a weights file")
    source = data_mod.resolve_source(args.data)  # the loader's own look-up: a missing --data is its line
    if source is not None and source.is_file() and source.suffix.lower() not in (".npy", ".npz"):
        raise DataError(f"{source}: unsupported data file; expected a folder of IDX .gz files, a .npy dict or a .npz")
    data_mod.parse_class_map(args.class_map)
    if args.artifacts is not None:
        check_folder(Path(args.artifacts), f"--artifacts {args.artifacts}", make=True)


def config_from_args(name: str, args: argparse.Namespace) -> TrainConfig:
    return resolve_config(name, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                          seed=args.seed, base_weights=args.base_weights or "auto", limit=args.limit,
                          precision=args.precision)


def run(args: argparse.Namespace, log: TextIO | None = None) -> list[RunMetadata]:
    """``fmnist-train MODEL...``: train each model in turn, then write Table 1.

    A model that trains to no result does not stop the others; Table 1 shows those that trained, and
    TrainingFailed (ClusterError for a Ray task that failed otherwise) names it at the end.
    """
    log = log or sys.stdout
    userfile.load_model_files(args.model_file)
    names = expand_models(args.models)
    check_options(args, names)
    configs = [config_from_args(name, args) for name in names]
    artifacts = Artifacts.at(args.artifacts)
    artifacts.ensure(artifacts.root)
    with contextlib.ExitStack() as held:
        # Every model's lock first: a second run on the same folder is refused before it loads the
        # data or writes anything, not after hours of training the first models.
        for name in names:
            held.enter_context(model_lock(artifacts, name))
        # Table 1 is written at the end from every model's metadata: a damaged file of another model
        # is named now, before any training, not after it. The models trained here rewrite theirs.
        table1(artifacts, [name for name in trained_models(artifacts) if name not in names])
        dataset, splits = load_data(artifacts, args.data, args.class_map, args.limit, quiet=args.quiet, log=log)
        samples = artifacts.plot_file("samples")
        with writing(samples):
            sample_grid(splits.train, samples)

        start = time.perf_counter()
        if args.ray:
            results, failure = cluster.run_models(configs, dataset, artifacts, args.ray, not args.through_base, log)
        else:
            results, failure = _train_each(configs, dataset, splits, artifacts, args, log)
    if results:
        stem = artifacts.reports_dir / "table1"
        # Runs of other models may finish at the same moment: each rewrites the table from every model's
        # metadata under a short lock, so the last one to write it has read them all.
        with exclusive(artifacts.lock_file("table1"), f"Table 1 in {artifacts.reports_dir}", wait_s=60), writing(stem):
            table = table1(artifacts, trained_models(artifacts))
            _, md_path = write_table(table, stem, "Table 1: model performance (ours beside the report's; training time on this machine)")
        print(f"trained {len(results)} model(s) in {(time.perf_counter() - start) / 60:.1f} min; Table 1: {md_path}", file=log)
    if failure is not None:
        raise failure
    return results


def _train_each(configs: list[TrainConfig], dataset: Dataset, splits: Splits, artifacts: Artifacts,
                args: argparse.Namespace, log: TextIO) -> tuple[list[RunMetadata], TrainingFailed | None]:
    """Train the models in turn: the metadata of those trained, and the error naming those that trained to no result."""
    results, failures = [], []
    for config in configs:
        try:
            results.append(train_one(config, dataset, splits, artifacts, quiet=args.quiet, log=log,
                                     feature_cache=not args.through_base))
        except TrainingFailed as exc:
            failures.append(str(exc))
            if not args.quiet:
                print(f"[{config.model}] failed: {exc}", file=log, flush=True)
    return results, TrainingFailed("; ".join(failures)) if failures else None


def run_sweep_command(args: argparse.Namespace, log: TextIO | None = None) -> list[dict]:
    """``fmnist-train sweep MODEL --grid ...``: the grid's rows not in experiments.csv yet."""
    log = log or sys.stdout
    userfile.load_model_files(args.model_file)
    get_spec(args.model)
    grid = parse_grid(args.grid)
    check_options(args, [args.model])
    artifacts = Artifacts.at(args.artifacts)
    dataset, splits = load_data(artifacts, args.data, args.class_map, args.limit, quiet=args.quiet, log=log)
    rows = run_sweep(grid, config_from_args(args.model, args), dataset, splits, artifacts,
                     lr_given=args.lr is not None, force=args.force, quiet=args.quiet, log=log, ray_address=args.ray)
    print(f"sweep: {len(rows)} row(s) written to {artifacts.experiments_file}", file=log)
    return rows


# MetadataError and ArtifactsError name the file, LockedError the lock and its holder.
ERRORS = (DataError, ArtifactsError, MetadataError, UnknownModelError, BaseWeightsError, SweepError, LockedError,
          cluster.ClusterError, OptionError, ModelFileError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet.configure(quiet.verbose_requested(argv))
    command = argv[0] if argv else None
    try:
        if command == "sweep":
            run_sweep_command(build_parser(sweep=True).parse_args(argv[1:]))
        elif command == "report":
            print(REPORT_MOVED, file=sys.stderr)
            return 2
        else:
            run(build_parser().parse_args(argv))
    except SystemExit as exc:  # argparse: --help (0) or a bad option (2), its line already printed
        return exc.code if isinstance(exc.code, int) else 2
    except (TrainingFailed, *ERRORS) as exc:
        print(f"{PROG}: error: {one_line(exc)}", file=sys.stderr)
        return 1 if isinstance(exc, TrainingFailed) else 2  # 1: the work was done and gave no result
    except OSError as exc:  # a full disk or a folder gone where no caller named the file: still one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: error: {one_line(f'{where}{exc.strerror or exc}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run the same command again to resume from the last finished epoch", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
