"""pytest-benchmark suite options and parametrisation: ``pytest bench --benchmark-only``.

Selection (options, or the environment variables beside them):
  --fmnist-artifacts DIR      $FMNIST_ARTIFACTS, else ./artifacts
  --fmnist-models a,b         $FMNIST_BENCH_MODELS      (default: every exported model)
  --fmnist-variants ...       $FMNIST_BENCH_VARIANTS    (fp32,fp16,int8)
  --fmnist-providers ...      $FMNIST_BENCH_PROVIDERS   (cuda,cpu,keras,tflite; keras/tflite are fp32 references)
  --fmnist-operations ...     $FMNIST_BENCH_OPERATIONS  (predict,evaluate,single-stream)
  --fmnist-batch-sizes ...    $FMNIST_BENCH_BATCH_SIZES (128,all)
  --fmnist-min-queries N      single-stream queries per case (default 200)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from bench.cases import Case, NothingToBench, discover, read_manifest
from bench.scenarios import OPERATIONS
from trainer.artifacts import Artifacts

REFERENCE_PROVIDERS = ("keras", "tflite")
OPTIONS = {
    "artifacts": ("FMNIST_ARTIFACTS", None),
    "models": ("FMNIST_BENCH_MODELS", None),
    "variants": ("FMNIST_BENCH_VARIANTS", "fp32,fp16,int8"),
    "providers": ("FMNIST_BENCH_PROVIDERS", "cuda,cpu,keras,tflite"),
    "operations": ("FMNIST_BENCH_OPERATIONS", ",".join(OPERATIONS)),
    "batch-sizes": ("FMNIST_BENCH_BATCH_SIZES", "128,all"),
    "min-queries": ("FMNIST_BENCH_MIN_QUERIES", "200"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fmnist-bench", "fmnist-edge benchmark selection")
    for name, (env, default) in OPTIONS.items():
        group.addoption(f"--fmnist-{name}", default=os.environ.get(env, default), help=f"${env} (default {default})")


def option(config: pytest.Config, name: str) -> str | None:
    return config.getoption(f"--fmnist-{name.replace('_', '-')}")


def _split(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


@dataclass(frozen=True)
class BenchParam:
    case: Case
    operation: str
    batch: int  # the test split's size for "the whole split as one batch"

    @property
    def id(self) -> str:
        """The same id as ``fmnist-bench run`` gives the record, so ``fmnist-bench compare`` can join them."""
        return f"{self.case.id}-{self.operation}-b{self.batch}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bench_param" not in metafunc.fixturenames:
        return
    config = metafunc.config
    artifacts = Artifacts.at(option(config, "artifacts"))
    providers = _split(option(config, "providers"))
    ort_providers = [p for p in providers if p not in REFERENCE_PROVIDERS]
    try:
        exported = discover(artifacts, _split(option(config, "models")), _split(option(config, "variants")), ort_providers or ["cpu"])
    except NothingToBench as exc:
        raise pytest.UsageError(str(exc)) from None
    cases = exported if ort_providers else []
    for model in dict.fromkeys(c.model for c in exported):
        fp32 = artifacts.onnx_dir / f"{model}.onnx"
        cases += [Case(model, "fp32", ref, fp32) for ref in providers if ref in REFERENCE_PROVIDERS]
    test_images = {model: row["data"]["split"]["test"] for model, row in read_manifest(artifacts)["models"].items()}
    params = []
    for case in cases:
        batches = [test_images[case.model] if b == "all" else int(b) for b in _split(option(config, "batch_sizes"))]
        for operation in _split(option(config, "operations")):
            for batch in ([1] if operation == "single-stream" else dict.fromkeys(batches)):
                params.append(BenchParam(case, operation, batch))
    metafunc.parametrize("bench_param", params, ids=[p.id for p in params])
