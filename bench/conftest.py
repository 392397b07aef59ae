"""The pytest-benchmark suite's options and parametrisation: ``pytest bench --benchmark-only``.

Each ``--fmnist-NAME VALUE`` (or ``$FMNIST_BENCH_NAME``) is ``fmnist-bench run``'s ``--NAME VALUE``,
parsed by the very same parser, with the same defaults (bench/settings.py) and the same case
selection; ``--fmnist-artifacts`` also reads ``$FMNIST_ARTIFACTS``. For example:

    pytest bench --benchmark-only --fmnist-models model4 --fmnist-providers cpu,keras --benchmark-save=baseline
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import pytest

from bench.cli import build_parser, selection
from bench.measure.cases import NothingToBench, read_exports
from bench.measure.core import plan
from bench.results.record import record_id
from bench.runtimes import Case
from bench.settings import RunSettings, SettingsError
from exporter.contract import ContractError
from trainer.artifacts import Artifacts

OPTIONS = ("artifacts", "models", "variants", "providers", "operations", "batch-sizes", "rounds", "min-queries",
           "min-duration", "latency-bound-ms", "server-search-s", "mlperf-rules", "threads", "graph-optimization",
           "cudnn-algo-search", "memory", "profile", "tools", "yardstick-s", "data", "report-dir")
FLAGS = ("mlperf-rules",)  # given as --fmnist-mlperf-rules=1 (or $FMNIST_BENCH_MLPERF_RULES=1)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fmnist-bench", "fmnist-edge benchmark selection (as fmnist-bench run's options)")
    for name in OPTIONS:
        env = "FMNIST_ARTIFACTS" if name == "artifacts" else f"FMNIST_BENCH_{name.upper().replace('-', '_')}"
        group.addoption(f"--fmnist-{name}", default=os.environ.get(env), help=f"fmnist-bench run --{name} (or ${env})")


@dataclass(frozen=True)
class BenchParam:
    case: Case
    operation: str
    batch: int  # resolved: the test split's size for "the whole split as one batch"

    @property
    def id(self) -> str:
        """The same id as ``fmnist-bench run`` gives the record, so ``fmnist-bench compare`` can join them."""
        return record_id(self.case.model, self.case.variant, self.case.provider, self.operation, self.batch,
                         self.case.threads)


@dataclass(frozen=True)
class Selection:
    artifacts: Artifacts
    cases: list[Case]
    settings: RunSettings
    data: str | None
    report_dir: str | None = None  # LoadGen's logs go to <report dir>/pytest-<UTC time>.loadgen/


@cache
def selected(config: pytest.Config) -> Selection:
    argv = ["run"]
    for name in OPTIONS:
        value = config.getoption(f"--fmnist-{name}")
        if name in FLAGS:
            argv += [f"--{name}"] if value not in (None, "", "0", "false", "no") else []
        elif value is not None:
            argv += [f"--{name}", str(value)]
    try:
        args = build_parser().parse_args(argv)
        return Selection(*selection(args), data=args.data, report_dir=args.report_dir)
    except SystemExit:
        raise pytest.UsageError(f"bad --fmnist-* option in: {' '.join(argv[1:])}") from None
    except (NothingToBench, ContractError, SettingsError) as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_param" not in metafunc.fixturenames:
        return
    chosen = selected(metafunc.config)
    _, manifest = read_exports(chosen.artifacts)
    params = [BenchParam(case, operation, batch)
              for case in chosen.cases
              for operation, batch in plan(chosen.settings, manifest.models[case.model]["data"]["split"]["test"])]
    metafunc.parametrize("bench_param", params, ids=[p.id for p in params])
