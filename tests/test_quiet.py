"""A quiet terminal (trainer/quiet.py): the runtimes' own log lines stay out unless --verbose, our lines and
every error always pass. The commands run as a user runs them, in a process of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import REPO, write_idx_dir
from trainer import quiet
from trainer.artifacts import Artifacts

# What TensorFlow's native code printed by default on a machine without a GPU driver (trainer/quiet.py).
NOISE = ("cudart_stub", "cuInit", "absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard")


def _command(name: str) -> list[str]:
    """The installed console script (what a user runs), else the module."""
    script = Path(sys.executable).parent / name
    module = {"fmnist-train": "trainer.cli", "fmnist-bench": "bench.cli"}[name]
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def _run(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    child = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "FMNIST_ARTIFACTS")}  # as a user's shell
    child.update(env or {})
    return subprocess.run([*_command(name), *args], capture_output=True, text=True, cwd=REPO, env=child, timeout=600)


def _noise(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if any(marker in line for marker in NOISE)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Artifacts, subprocess.CompletedProcess]:
    """model1 trained one epoch on 200 tiny images by ``fmnist-train``, with the command's output."""
    root = tmp_path_factory.mktemp("quiet")
    art = Artifacts(root / "art")
    result = _run("fmnist-train", "model1", "--epochs", "1", "--limit", "200", "--batch-size", "32", "--quiet",
                  "--data", str(write_idx_dir(root / "idx", n=300)), "--artifacts", str(art.root))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return art, result


@pytest.mark.parametrize("level, dropped", [(3, True), (2, True), (1, True), (0, False)])
def test_pre_init_info_lines_follow_tf_cpp_min_log_level(level: int, dropped: bool):
    line = "I0000 00:00:1795599560.736354   19629 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used."
    assert quiet.is_noise(line, level) is dropped
    assert quiet.is_noise("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR", level) is dropped
    assert quiet.is_noise("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", level) is dropped
    # LiteRT's full-integer conversion (seen in `make demo`'s terminal before it was known)
    assert quiet.is_noise("fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, "
                          "output_inference_type: FLOAT32", level) is dropped


def test_fatal_lines_tracebacks_and_our_errors_always_pass():
    for line in ("F0000 00:00:1795599560.736354   19629 check.cc:12] Check failed: x == y",
                 "Traceback (most recent call last):",
                 "fmnist-train: error: --data /nowhere: no such file or folder",
                 "ERROR: TF Lite could not allocate tensors"):
        assert not quiet.is_noise(line, 3), line
    assert quiet.is_noise("E0000 00:00:1795599574.200678   19629 cuda_platform.cc:52] failed call to cuInit: ...", 3)
    assert not quiet.is_noise("E0000 00:00:1795599574.200678   19629 cuda_platform.cc:52] failed call to cuInit: ...", 2)


def test_native_writes_are_filtered_and_the_rest_kept_in_order(capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    with pytest.raises(RuntimeError, match="boom"), quiet.native_stderr_filtered():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
        os.write(2, b"I0000 00:00:1795599560.736354   19629 cudart_stub.cc:31] Could not find cuda drivers\n")
        os.write(2, b"a real line\n")
        print("python stderr", file=sys.stderr)
        raise RuntimeError("boom")
    # (Under pytest sys.stderr is not fd 2, so the Python line does not pass through the filter; in a command it does.)
    assert sorted(capfd.readouterr().err.splitlines()) == ["a real line", "python stderr"]


def test_verbose_is_read_from_the_options():
    assert quiet.verbose_requested(["model1", "--verbose"])
    assert not quiet.verbose_requested(["model1", "--", "--verbose"]) and not quiet.verbose_requested(["model1"])


@pytest.mark.slow
def test_commands_are_quiet_by_default(trained, tmp_path: Path):
    art, train = trained
    assert _noise(train) == [], _noise(train)
    assert "trained 1 model(s)" in train.stdout
    report = _run("fmnist-bench", "report", "--artifacts", str(art.root), "--out", str(tmp_path / "docs"))
    assert report.returncode == 0, report.stderr[-2000:]
    assert _noise(report) == [], _noise(report)  # the model registry imports TensorFlow: filtered
    assert report.stdout.startswith("wrote ")


@pytest.mark.slow
def test_verbose_lets_the_libraries_speak(tmp_path: Path):
    import tensorflow as tf

    # fmnist-train imports TensorFlow before it reads its options; the report no longer imports it at all.
    result = _run("fmnist-train", "model1", "--data", str(tmp_path / "nowhere"), "--artifacts", str(tmp_path / "art"), "--verbose")
    assert result.returncode == 2, result.stderr[-2000:]
    no_driver = not Path("/proc/driver/nvidia").exists()
    if tf.sysconfig.get_build_info().get("is_cuda_build") and no_driver:
        # A CUDA build of TensorFlow without a driver says so at import: --verbose shows it.
        assert any("cudart_stub" in line for line in _noise(result)), result.stderr[-2000:]


@pytest.mark.slow
def test_a_failing_command_still_prints_its_error_line(tmp_path: Path):
    result = _run("fmnist-train", "model1", "--data", str(tmp_path / "nowhere"), "--artifacts", str(tmp_path / "art"))
    assert result.returncode == 2
    assert "fmnist-train: error: " in result.stderr and "nowhere" in result.stderr
    assert _noise(result) == [], _noise(result)
