"""The base install is the bench for an edge device (#16): no TensorFlow, and it measures a model made elsewhere.

A fresh virtual environment gets ``pip install <this project>`` with no extras (from pip's cache or index,
as CI has them). Then, as a user would: ``fmnist-train`` and ``fmnist-export`` say in one line which extra
to install; ``fmnist-bench pack`` (full environment) carries a tiny exported model and its data; the data's
original folder is removed; ``fmnist-bench run`` in the bench-only environment measures the packed folder.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from trainer.artifacts import Artifacts

pytestmark = pytest.mark.slow  # real installs / a Ray cluster: CI runs them, `-m 'not slow'` leaves them out

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "trainer", "exporter", "bench")


@pytest.fixture(scope="module")
def bench_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding `pip install .` of a copy of the sources (the copy keeps build files out of the tree)."""
    root = tmp_path_factory.mktemp("edge")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # --no-compile: byte-compiling every module of scipy, scikit-learn and the rest took 20 of the install's 35 s;
    # what the commands import is compiled when they import it.
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile", str(source)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    return venv


def _run(venv: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd or venv,
                          env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(venv)})


def test_the_base_install_has_no_tensorflow(bench_only: Path):
    installed = _run(bench_only, "python", "-m", "pip", "list", "--format=json")
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert "fmnist-edge" in names and ({"onnxruntime", "onnxruntime-gpu"} & names) and "scikit-learn" in names
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "tf-keras"}, sorted(names)
    probe = _run(bench_only, "python", "-c", "import tensorflow")
    assert probe.returncode != 0 and "No module named 'tensorflow'" in probe.stderr


@pytest.mark.parametrize("command", ["fmnist-train", "fmnist-export"])
def test_training_commands_name_the_extra_in_one_line(bench_only: Path, command: str):
    result = _run(bench_only, command, "model1")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"{command}: error: needs the [train] extra (tensorflow, tf2onnx, onnxconverter_common, sympy not installed "
        "here); install it with: pip install 'fmnist-edge[train]'"]


def test_a_packed_export_runs_on_the_bench_only_install(bench_only: Path, tiny_export: Artifacts, tmp_path: Path):
    from bench.cli import main  # the full environment: where the model was trained and exported

    art = tiny_export
    archive = tmp_path / "edge.tar.gz"
    assert main(["pack", str(archive), "--artifacts", str(art.root)]) == 0
    assert main(["pack", str(archive), "--artifacts", str(art.root)]) == 2  # never overwritten
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
    assert "onnx/manifest.json" in names and "onnx/model1.onnx" in names and "onnx/model1.int8.onnx" in names
    assert [n for n in names if n.startswith("data/")] == ["data/idx/train-images-idx3-ubyte.gz",
                                                         "data/idx/train-labels-idx1-ubyte.gz"]
    assert not [n for n in names if n.endswith(".keras")]

    edge = tmp_path / "device"
    edge.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(edge, filter="data")
    data = art.root.parent / "idx"
    data.rename(data.with_name("idx.away"))  # the device has only what the archive carries (the export is shared: put back)
    try:
        result = _run(bench_only, "fmnist-bench", "run", "--artifacts", str(edge), "--models", "model1", "--variants",
                      "fp32,int8", "--operations", "predict", "--batch-sizes", "128", "--rounds", "1", "--quiet")
    finally:
        data.with_name("idx.away").rename(data)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tensorflow" not in result.stderr.lower()
    (report,) = (edge / "reports").glob("bench-*.json")
    records = {(r["variant"], r["provider"]): r for r in json.loads(report.read_text())["records"]}
    for variant in ("fp32", "int8"):
        cpu = records[(variant, "cpu")]
        assert cpu["skipped"] is None and cpu["median_s"] > 0 and 0 <= cpu["quality"]["accuracy"] <= 1
    assert records[("fp32", "keras")]["skipped"].endswith("is not here: the keras row runs the trained model "
                                                         "(copy it beside the ONNX files, or pass --no-reference)")
    assert records[("fp32", "openvino")]["skipped"] == "openvino is not installed (pip install openvino)"


def test_the_bench_says_what_a_device_is_missing(bench_only: Path, tmp_path: Path):
    empty = _run(bench_only, "fmnist-bench", "run", "--artifacts", str(tmp_path / "nothing"), "--quiet")
    assert empty.returncode == 2
    assert empty.stderr.strip().splitlines() == [f"fmnist-bench: error: {tmp_path / 'nothing' / 'onnx'}: nothing exported yet; "
                                                 f"run: fmnist-train all && fmnist-export all (with --artifacts "
                                                 f"{tmp_path / 'nothing'} if that is not the default)"]
