"""``fmnist-bench``: measure exported models, and compare latency reports.

    fmnist-bench run                                  # every exported model, variant and provider
    fmnist-bench run --models model4 --providers cpu --rounds 5
    fmnist-bench compare OLD.json NEW.json --fail-on-regression 10%
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from bench import compare as compare_mod
from bench.cases import PROVIDERS, VARIANTS, NothingToBench, discover
from bench.report import SchemaError, markdown
from bench.runner import WHOLE_SPLIT, RunSettings, run
from bench.scenarios import OPERATIONS, SingleStreamSettings
from bench.sut import SessionSettings
from trainer.artifacts import Artifacts, ArtifactsError, write_text_atomic
from trainer.data import DataError


def _list(choices: tuple[str, ...] | None = None):
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        bad = [v for v in values if choices and v not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {','.join(choices or ())}")
        return values
    return parse


def _batch_sizes(text: str) -> tuple[int, ...]:
    sizes = []
    for value in text.split(","):
        value = value.strip()
        if value == "all":
            sizes.append(WHOLE_SPLIT)
        elif value.isdigit() and int(value) > 0:
            sizes.append(int(value))
        else:
            raise argparse.ArgumentTypeError(f"{text!r}: batch sizes are positive integers or 'all'")
    return tuple(sizes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmnist-bench", description="Benchmark exported models; compare reports.")
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="measure accuracy and latency; write reports/bench-<timestamp>.json and .md")
    r.add_argument("--models", type=_list(), help="comma-separated model names (default: every exported one)")
    r.add_argument("--variants", type=_list(VARIANTS), help="default fp32,fp16,int8")
    r.add_argument("--providers", type=_list(PROVIDERS), help="default cuda,cpu")
    r.add_argument("--operations", type=_list(OPERATIONS), default=list(OPERATIONS), help="default predict,evaluate,single-stream")
    r.add_argument("--batch-sizes", type=_batch_sizes, default=(128, WHOLE_SPLIT), help="default 128,all (all: the whole split as one batch)")
    r.add_argument("--rounds", type=int, default=3, help="timed rounds per operation, after one warm-up (default 3)")
    r.add_argument("--min-queries", type=int, default=200, help="single-stream: at least this many queries (default 200)")
    r.add_argument("--min-duration", type=float, default=2.0, help="single-stream: and at least this many seconds (default 2)")
    r.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (default 0: onnxruntime's choice)")
    r.add_argument("--graph-optimization", choices=("disable", "basic", "extended", "all"), default="all")
    r.add_argument("--no-reference", action="store_true", help="skip the Keras and TF Lite rows (no TensorFlow needed)")
    r.add_argument("--artifacts", help="artifacts folder (default: $FMNIST_ARTIFACTS, then ./artifacts)")
    r.add_argument("--data", help="where the training data is now, if it moved")
    r.add_argument("--report-dir", help="where bench-<timestamp>.json/.md go (default: the artifacts' reports/, "
                                        "which fmnist-train report reads; use another for tuning runs)")
    r.add_argument("--quiet", action="store_true")

    s = sub.add_parser("summary", help="one row per model and runtime from one or more of our reports (newest result per case)")
    s.add_argument("reports", nargs="+", metavar="REPORT")
    s.add_argument("--batch-size", type=int, default=128, help="the predict batch size to show (default 128)")

    c = sub.add_parser("compare", help="compare two reports (ours or pytest-benchmark's JSON)")
    c.add_argument("old")
    c.add_argument("new")
    c.add_argument("--fail-on-regression", metavar="PCT", help="exit 1 if any case is slower by more than PCT (e.g. 10%%)")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    artifacts = Artifacts.at(args.artifacts)
    cases = discover(artifacts, args.models, args.variants, args.providers)
    settings = RunSettings(
        batch_sizes=args.batch_sizes, rounds=args.rounds, operations=tuple(args.operations),
        single_stream=SingleStreamSettings(min_queries=args.min_queries, min_duration_s=args.min_duration),
        session=SessionSettings(intra_op_threads=args.threads, graph_optimization=args.graph_optimization),
        references=not args.no_reference,
    )
    report = run(artifacts, cases, settings, args.data, log=None if args.quiet else sys.stdout)
    report_dir = Path(args.report_dir) if args.report_dir else artifacts.reports_dir
    artifacts.ensure(report_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    json_path = report_dir / f"bench-{stamp}.json"
    write_text_atomic(json_path, report.to_json())
    write_text_atomic(json_path.with_suffix(".md"), markdown(report))
    print(f"wrote {json_path} and {json_path.with_suffix('.md').name}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from bench.summary import markdown_summary  # noqa: PLC0415 - pandas only for this command

    print(markdown_summary([Path(p) for p in args.reports], args.batch_size), end="")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    threshold = compare_mod.parse_threshold(args.fail_on_regression) if args.fail_on_regression else None
    rows = compare_mod.compare(compare_mod.load_medians(args.old), compare_mod.load_medians(args.new))
    print(compare_mod.format_table(rows, threshold if threshold is not None else 0.10))
    if threshold is not None:
        slower = compare_mod.regressions(rows, threshold)
        if slower:
            print(f"{len(slower)} regression(s) over {threshold:.0%}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "summary": cmd_summary, "compare": cmd_compare}[args.command](args)
    except (NothingToBench, SchemaError, DataError, ArtifactsError, ValueError) as exc:
        print(f"fmnist-bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
