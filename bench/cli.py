"""``fmnist-bench``: measure exported models, summarise and compare the results, write REPORT.md.

    fmnist-bench run                                  # every exported model, variant and runtime
    fmnist-bench run --models model4 --providers cpu --rounds 5
    fmnist-bench run --operations single-stream,multi-stream,server,offline --latency-bound-ms 5   # MLPerf LoadGen
    fmnist-bench summary artifacts/reports/bench-*.json
    fmnist-bench compare OLD.json NEW.json --fail-on-regression 10%
    fmnist-bench report                               # REPORT.md from everything in the artifacts folder
    fmnist-bench doctor                               # can this machine run the CUDA provider?
    fmnist-bench pack edge.tar.gz                     # what a device needs to run the bench (README: On the device)
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
from collections.abc import Callable, Collection
from pathlib import Path

from trainer import quiet

from bench.results import store
from bench.runtimes import REFERENCES, RUNTIMES, Case
from bench.measure.cases import NothingToBench, discover
from bench.measure.loadgen_log import LoadGenError
from bench.pack import PackError, pack
from bench.results.compare import CompareError, compare, format_table, parse_threshold
from bench.results.record import SchemaError
from bench.measure.run import run
from bench.settings import (CUDNN_ALGO_SEARCH, GRAPH_OPTIMIZATION, MAX_QUERIES, MLPERF_BENCHMARK,
                            MULTI_STREAM_MIN_QUERIES, ON_OFF, OPERATIONS, SERVER_MIN_QUERIES, WHOLE_SPLIT, LoadGenSettings,
                            RunSettings, SessionSettings, SettingsError)
from exporter.contract import VARIANTS, ContractError
from trainer.artifacts import Artifacts, ArtifactsError, check_folder, check_source
from trainer.data import DataError

DEFAULT = RunSettings()
ERRORS = (NothingToBench, SchemaError, DataError, ArtifactsError, ContractError, CompareError, SettingsError, PackError,
          LoadGenError)


def _number(kind: type, low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high], else one line naming the value."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a {'whole number' if kind is int else 'number'}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text[:40]!r} must be between {low:g} and {high:g}")
        return value
    return parse


def _csv(expected: str, item: Callable[[str], object] = str,
         choices: Collection[str] = ()) -> Callable[[str], list]:
    """An argparse type: comma-separated values, each through ``item`` (which raises on a bad one) and among
    ``choices`` when given, duplicates dropped; else one line naming the text and what was ``expected``. An empty
    item is skipped in a list of names and refused in a list of numbers (``item`` raises on it)."""
    def parse(text: str) -> list:
        try:
            values = list(dict.fromkeys(item(value.strip()) for value in text.split(",")
                                        if value.strip() or item is not str))
        except (ValueError, argparse.ArgumentTypeError):
            values = []
        if not values or choices and not set(values) <= set(choices):
            raise argparse.ArgumentTypeError(f"{text[:80]!r}: {expected}")
        return values
    return parse


def _choices(choices: Collection[str]) -> Callable[[str], list]:
    return _csv(f"choose from {','.join(choices)}", choices=choices)


def _batch_size(text: str) -> int:
    if text != "all" and not text.isdigit():  # digits only: no sign, no underscores
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number")
    return WHOLE_SPLIT if text == "all" else _number(int, 1, 1_000_000)(text)


def _yardstick_default() -> float:
    """$FMNIST_BENCH_YARDSTICK_S, else RunSettings' default: the test suite shortens the yardsticks of its many
    tiny runs through it (a shorter search reads a lower peak), as the pytest-benchmark suite takes its options."""
    given = os.environ.get("FMNIST_BENCH_YARDSTICK_S")
    try:
        return DEFAULT.yardstick_s if given is None else _number(float, 0, 600)(given)
    except argparse.ArgumentTypeError as exc:
        raise SettingsError(f"$FMNIST_BENCH_YARDSTICK_S: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmnist-bench", description="Benchmark exported models; summarise and compare results.")
    sub = parser.add_subparsers(dest="command", required=True)
    verbose = quiet.add_flag(argparse.ArgumentParser(add_help=False))
    paths = argparse.ArgumentParser(add_help=False, parents=[verbose])
    paths.add_argument("--artifacts", help="artifacts folder (default: $FMNIST_ARTIFACTS, then ./artifacts)")
    paths.add_argument("--data", help="where the training data is now, if it moved")
    loadgen, session = DEFAULT.loadgen, DEFAULT.session

    r = sub.add_parser("run", parents=[paths], help="measure accuracy and latency; write reports/bench-<timestamp>.json and .md")
    r.set_defaults(func=cmd_run)
    r.add_argument("--models", type=_csv("comma-separated model names"),
                   help="comma-separated model names (default: every exported one)")
    r.add_argument("--variants", type=_choices(VARIANTS), help=f"default {','.join(VARIANTS)}")
    r.add_argument("--providers", type=_choices(tuple(RUNTIMES)),
                   help=f"default {','.join(RUNTIMES)} (cuda, cpu: onnxruntime; the others: the runtimes a user would "
                        "pick instead)")
    r.add_argument("--operations", type=_choices(OPERATIONS), default=list(DEFAULT.operations),
                   help=f"any of {','.join(OPERATIONS)} (default {','.join(DEFAULT.operations)}); single-stream, multi-stream, "
                        "server, offline and accuracy (AccuracyOnly) are driven by MLPerf LoadGen")
    r.add_argument("--batch-sizes", default=DEFAULT.batch_sizes, help="default 128,all (all: the whole split as one batch)",
                   type=_csv("batch sizes are whole numbers from 1 to 1000000, or 'all'", _batch_size))
    r.add_argument("--rounds", type=_number(int, 1, 1000), default=DEFAULT.rounds,
                   help=f"timed rounds per batch operation, after {DEFAULT.warmup_rounds} warm-up (default {DEFAULT.rounds})")
    r.add_argument("--min-queries", type=_number(int, 1, MAX_QUERIES),
                   help=f"each LoadGen test: at least this many queries (LoadGen's min_query_count; default {loadgen.min_queries}; "
                        f"multi-stream at least {MULTI_STREAM_MIN_QUERIES} and server at least {SERVER_MIN_QUERIES}, what "
                        "LoadGen's early stopping needs to call them VALID)")
    r.add_argument("--min-duration", type=_number(float, 0, 3600),
                   help=f"each LoadGen test: and at least this many seconds (LoadGen's min_duration; default {loadgen.min_duration_s:g})")
    r.add_argument("--latency-bound-ms", type=_number(float, 1e-6, 60_000), default=loadgen.latency_bound_ms,
                   help=f"server: the p99 latency bound the max rate is searched under (default {loadgen.latency_bound_ms:g})")
    r.add_argument("--server-search-s", type=_number(float, 1e-3, 86_400), default=loadgen.server_search_s,
                   help=f"server: seconds the search for the max rate may take per case (default {loadgen.server_search_s:g})")
    r.add_argument("--mlperf-rules", action="store_true",
                   help=f"MLPerf's own durations and query counts for every LoadGen test (LoadGen's mlperf.conf, "
                        f"{MLPERF_BENCHMARK}'s: 10 minutes each), for a submission-grade run; instead of --min-duration "
                        "and --min-queries")
    r.add_argument("--threads", default=DEFAULT.threads,
                   type=_csv("thread counts are whole numbers from 0 to 1024, e.g. 1,2", _number(int, 0, 1024)),
                   help="intra-op threads, one row per count, e.g. 1,2 (default 0: each runtime's own choice)")
    r.add_argument("--graph-optimization", choices=tuple(GRAPH_OPTIMIZATION), default=session.graph_optimization)
    r.add_argument("--cudnn-algo-search", choices=CUDNN_ALGO_SEARCH, default=session.cudnn_conv_algo_search,
                   help=f"CUDA: cuDNN's convolution algorithm search (default {session.cudnn_conv_algo_search})")
    r.add_argument("--memory", choices=ON_OFF, default=DEFAULT.memory,
                   help="each case's peak resident memory, measured in a fresh process of its own (default on)")
    r.add_argument("--profile", choices=ON_OFF, default=DEFAULT.profile,
                   help="each runtime's own per-operator profile of the first batch size (default on)")
    r.add_argument("--tools", choices=ON_OFF, default=DEFAULT.tools,
                   help="run OpenVINO's benchmark_app and LiteRT's litert-benchmark on the same files, beside their rows "
                        "(default on)")
    r.add_argument("--yardstick-s", type=_number(float, 0, 600),
                   help="seconds of calls per yardstick candidate, at the run's start and again at its end (the best "
                        f"is kept; 0: none, and no row gets a share of peak; default {DEFAULT.yardstick_s:g}, or "
                        "$FMNIST_BENCH_YARDSTICK_S)")
    r.add_argument("--no-reference", action="store_true", help="onnxruntime rows only: skip Keras, TF Lite, OpenVINO and LiteRT")
    r.add_argument("--report-dir", help="where bench-<timestamp>.json/.md go (default: the artifacts' reports/, "
                                        "which fmnist-bench report reads; use another for tuning runs)")
    r.add_argument("--quiet", action="store_true")

    s = sub.add_parser("summary", parents=[verbose],
                       help="one row per model and runtime from one or more of our reports (newest result per case)")
    s.set_defaults(func=cmd_summary)
    s.add_argument("reports", nargs="+", metavar="REPORT")
    s.add_argument("--batch-size", type=_number(int, 1, 1_000_000), default=128, help="the predict batch size to show (default 128)")

    c = sub.add_parser("compare", parents=[verbose], help="compare two results (ours or a pytest-benchmark save of `pytest bench`)")
    c.set_defaults(func=cmd_compare)
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--fail-on-regression", metavar="PCT",
                   help="exit 1 if a case is slower by more than PCT (e.g. 10%%) and beyond the runs' noise")

    sub.add_parser("report", help="write REPORT.md (Tables 1-5, figures, bench summary); see fmnist-bench report --help",
                   add_help=False)
    sub.add_parser("doctor", parents=[verbose], help="what the CUDA provider needs, what this machine has, and the line that "
                                                     "fixes it").set_defaults(func=cmd_doctor)

    p = sub.add_parser("pack", parents=[paths],
                       help="one .tar.gz holding what `fmnist-bench run` needs on a device: the ONNX files and the data")
    p.set_defaults(func=cmd_pack)
    p.add_argument("archive", help="the .tar.gz to write (never overwritten)")
    return parser


def selection(args: argparse.Namespace) -> tuple[Artifacts, list[Case], RunSettings]:
    """What ``run`` measures and how: shared with the pytest suite (bench/conftest.py parses its options
    with this parser), so both front doors select and measure alike."""
    artifacts = Artifacts.at(args.artifacts)
    providers = [p for p in args.providers or RUNTIMES if not (args.no_reference and p in REFERENCES)]
    if args.mlperf_rules:
        given = [option for option, value in (("--min-duration", args.min_duration), ("--min-queries", args.min_queries))
                 if value is not None]
        if given:
            raise SettingsError(f"{given[0]}: --mlperf-rules sets LoadGen's minimum duration and query count (MLPerf's); "
                                f"drop {' and '.join(given)}")
    limits = {"min_queries": args.min_queries, "min_duration_s": args.min_duration}
    settings = RunSettings(
        batch_sizes=tuple(args.batch_sizes), rounds=args.rounds, operations=tuple(args.operations), memory=args.memory,
        profile=args.profile, tools=args.tools, threads=tuple(args.threads),
        yardstick_s=_yardstick_default() if args.yardstick_s is None else args.yardstick_s,
        loadgen=LoadGenSettings(**{k: v for k, v in limits.items() if v is not None}, latency_bound_ms=args.latency_bound_ms,
                                server_search_s=args.server_search_s, mlperf_rules=args.mlperf_rules),
        session=SessionSettings(graph_optimization=args.graph_optimization, cudnn_conv_algo_search=args.cudnn_algo_search),
    )
    return artifacts, discover(artifacts, args.models, args.variants, providers, settings.threads), settings


def check_paths(args: argparse.Namespace) -> None:
    """Each path option of ``run`` and ``pack`` (or the default it stands for) names something of the right kind,
    before any work."""
    root = Artifacts.at(args.artifacts).root
    # A missing folder is one with nothing exported yet: said with the command that fills it (bench/measure/cases.py).
    check_folder(root, f"--artifacts {root}" if args.artifacts else f"artifacts folder {root}", make=True)
    if args.data is not None:
        check_source(Path(args.data), f"--data {args.data}")
    if getattr(args, "report_dir", None):
        check_folder(Path(args.report_dir), f"--report-dir {args.report_dir}", make=True)


def cmd_run(args: argparse.Namespace) -> int:
    check_paths(args)
    artifacts, cases, settings = selection(args)
    report_dir = Path(args.report_dir) if args.report_dir else artifacts.reports_dir
    artifacts.ensure(report_dir)  # before the run: a results folder that cannot be written fails now, not after it
    staging = store.loadgen_staging(report_dir)  # LoadGen's logs, until the results file has its name
    try:
        results = run(artifacts, cases, settings, args.data, log=None if args.quiet else sys.stdout, loadgen_logs=staging)
        if all(record.skipped for record in results.records):
            # A run that measured nothing is a failure, and writes nothing a script could take for a measurement.
            reasons = dict.fromkeys(f"{r.model} {r.variant} {r.provider}{'' if r.operation == 'all' else ' ' + r.operation}: "
                                    f"{r.skipped}" for r in results.records)
            print("fmnist-bench run: error: every case was skipped, nothing was measured:\n  " + "\n  ".join(reasons),
                  file=sys.stderr)
            return 1
        path = store.save(results, report_dir, loadgen_logs=staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # moved beside the results file when there was one
    logs = store.loadgen_folder(path)
    print(f"wrote {path} and {path.with_suffix('.md').name}" + (f"; LoadGen's logs in {logs.name}/" if logs.is_dir() else ""))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from bench.results.summary import markdown_summary  # noqa: PLC0415 - pandas only for this command, not on the edge device

    print(markdown_summary([Path(p) for p in args.reports], args.batch_size), end="")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    threshold = parse_threshold(args.fail_on_regression) if args.fail_on_regression is not None else 0.10
    comparison = compare(Path(args.old), Path(args.new), threshold)
    print(format_table(comparison))
    if args.fail_on_regression is not None and comparison.regressions:
        print(f"fmnist-bench compare: {len(comparison.regressions)} regression(s) over {threshold:.0%} and beyond noise",
              file=sys.stderr)
        return 1
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from bench.runtimes.cuda import main as doctor  # noqa: PLC0415 - loads the CUDA libraries: only for this command

    return doctor()


def cmd_pack(args: argparse.Namespace) -> int:
    check_paths(args)
    packed = pack(Artifacts.at(args.artifacts), Path(args.archive), args.data)
    mib = 1 << 20
    print(f"wrote {packed.archive}: {packed.onnx_files} ONNX files ({packed.onnx_bytes / mib:.1f} MiB) and the data "
          f"({packed.data_bytes / mib:.1f} MiB). On the device (pip install fmnist-edge):\n"
          f"  mkdir edge && tar -xzf {packed.archive.name} -C edge && fmnist-bench run --artifacts edge")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    quiet.configure(quiet.verbose_requested(argv))
    if argv[:1] == ["report"]:
        from bench.report.document import main as report_main  # noqa: PLC0415 - pandas and matplotlib only for this command

        return report_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ERRORS as exc:
        print(f"fmnist-bench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk or an unwritable report folder: one line, not a traceback
        print(f"fmnist-bench: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
