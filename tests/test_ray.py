"""Sweeps and `fmnist-train all` on Ray (#15): the same rows as the serial run, a killed worker retried, a head
joined by address. Needs the [ray] extra (CI installs it); without it the tests skip, and --ray says what to
install. A local Ray instance here has the machine's CPUs; each task imports TensorFlow, so these take minutes.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tiny import write_idx_dir
from trainer import cluster
from trainer.cli import main

pytestmark = pytest.mark.slow  # real installs / a Ray cluster: CI runs them, `-m 'not slow'` leaves them out

REPO = Path(__file__).resolve().parents[1]
GRID = ["sweep", "model1", "--grid", "seed=0,1", "--epochs", "1", "--quiet"]


@pytest.fixture(scope="module")
def ray():
    return pytest.importorskip("ray", reason="the [ray] extra is not installed (pip install -e '.[ray]')")


@pytest.fixture(scope="module")
def idx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_idx_dir(tmp_path_factory.mktemp("ray") / "idx", n=400)


@pytest.fixture(scope="module")
def serial_rows(idx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    art = tmp_path_factory.mktemp("serial")
    assert main([*GRID, "--data", str(idx), "--artifacts", str(art)]) == 0
    return _rows(art)


@pytest.fixture(scope="module", autouse=True)
def _shutdown_ray():
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _rows(art: Path) -> dict[str, dict]:
    with open(art / "reports" / "experiments.csv", newline="") as f:
        return {row["key"]: row for row in csv.DictReader(f)}


def _assert_same_results(rows: dict[str, dict], serial: dict[str, dict], art: Path) -> None:
    assert set(rows) == set(serial) and len(rows) == 2
    for key, row in rows.items():
        assert row["data_sha256"] == serial[key]["data_sha256"] and row["seed"] == serial[key]["seed"]
        assert float(row["test_accuracy"]) == pytest.approx(float(serial[key]["test_accuracy"]), abs=1e-6)
        assert float(row["test_loss"]) == pytest.approx(float(serial[key]["test_loss"]), rel=1e-4)
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == art / "experiments"  # the driver's folder, not the worker's
        meta = json.loads((run_dir / "models" / "model1.json").read_text())
        assert meta["model_file"]["path"] == str(run_dir / "models" / "model1.keras")
        assert not (run_dir / "checkpoints").exists() and not (run_dir / "snapshots").exists()


def _sweep_process(idx: Path, art: Path, *ray_option: str) -> subprocess.Popen:
    # As a user's shell has it: not the RAY_AUTH_MODE an in-process local ray.init of an earlier test sets.
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    return subprocess.Popen([sys.executable, "-m", "trainer.cli", *GRID, "--data", str(idx), "--artifacts", str(art),
                             "--ray", *ray_option], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def test_a_sweep_on_a_local_ray_instance_writes_the_serial_rows(ray, idx: Path, serial_rows, tmp_path: Path):
    art = tmp_path / "art"
    assert main([*GRID, "--data", str(idx), "--artifacts", str(art), "--ray"]) == 0
    _assert_same_results(_rows(art), serial_rows, art)
    # Run again: both rows are there, nothing is submitted.
    before = (art / "reports" / "experiments.csv").read_bytes()
    assert main([*GRID, "--data", str(idx), "--artifacts", str(art), "--ray"]) == 0
    assert (art / "reports" / "experiments.csv").read_bytes().count(b"\n") == before.count(b"\n")


def test_all_on_ray_writes_each_model_like_a_serial_run(ray, idx: Path, tmp_path: Path):
    serial, remote = tmp_path / "serial", tmp_path / "ray"
    options = ["model1", "model2", "--epochs", "1", "--limit", "300", "--data", str(idx), "--quiet"]
    assert main([*options, "--artifacts", str(serial)]) == 0
    assert main([*options, "--artifacts", str(remote), "--ray"]) == 0
    for model in ("model1", "model2"):
        ours, theirs = (json.loads((a / "models" / f"{model}.json").read_text()) for a in (remote, serial))
        assert ours["test"]["loss"] == pytest.approx(theirs["test"]["loss"], rel=1e-4)
        assert ours["data"]["sha256"] == theirs["data"]["sha256"]
        assert ours["model_file"]["path"] == str(remote / "models" / f"{model}.keras")
        assert (remote / "models" / f"{model}.keras").is_file() and (remote / "history" / f"{model}.csv").is_file()
    assert (remote / "reports" / "table1.md").is_file()


def test_a_diverged_task_fails_the_run_and_is_kept_here_like_a_serial_run(ray, idx: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture):
    common = ["--epochs", "1", "--limit", "200", "--data", str(idx), "--quiet", "--ray"]
    sweep = tmp_path / "sweep"
    assert main(["sweep", "model1", "--grid", "lr=1e30,0.001", "--artifacts", str(sweep), *common]) == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fmnist-train: error: ")]
    assert "1 of 2 configuration group(s) failed on Ray: optimizer=adam lr=1e+30 " in line
    assert "TrainingFailed: model1 diverged (loss nan at epoch 1/1): not published" in line
    assert [float(row["lr"]) for row in _rows(sweep).values()] == [0.001]  # no row for it, the other's is there
    (kept,) = (sweep / "experiments").glob("model1-*/failed/model1-*")  # in the driver's run folder, not the worker's
    assert f"are in {kept}; " in line and cluster.TASK_DIR_PREFIX not in line
    assert sorted(p.name for p in kept.iterdir()) == ["failure.json", "model1.csv", "model1.keras"]

    models = tmp_path / "models"
    assert main(["model1", "--lr", "1e30", "--artifacts", str(models), *common]) == 1
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fmnist-train: error: ")]
    (kept,) = (models / "failed").iterdir()
    assert "1 of 1 model(s) failed on Ray: model1: TrainingFailed: model1 diverged" in line and f"are in {kept}; " in line
    assert not (models / "models").exists() and not (models / "reports" / "table1.md").exists()


def _wait_for_training_worker(since: float, driver: subprocess.Popen, timeout_s: float = 300) -> int:
    """The pid of a Ray worker training a task: the holder named in the lock file of its temporary run folder."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert driver.poll() is None, driver.communicate()[1][-3000:]
        for lock in Path(tempfile.gettempdir()).glob(f"{cluster.TASK_DIR_PREFIX}*/run/locks/model1.lock"):
            try:
                text = lock.read_text()
                if lock.stat().st_mtime >= since and text.startswith("pid "):
                    return int(text.split()[1])
            except (OSError, ValueError):
                continue
        time.sleep(0.2)
    driver.kill()
    raise AssertionError("no Ray worker started training within the time allowed")


def test_a_sweep_joins_a_started_head_by_address_and_survives_a_killed_worker(ray, idx: Path, serial_rows,
                                                                            tmp_path: Path):
    # One driver for both: each command here starts TensorFlow in the driver and in every Ray worker (a minute).
    ray_bin = Path(sys.executable).with_name("ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.run([str(ray_bin), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                           "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                          capture_output=True, text=True, env=env, timeout=300)
    try:
        assert head.returncode == 0, head.stderr[-3000:]
        art = tmp_path / "art"
        started = time.time()
        driver = _sweep_process(idx, art, f"127.0.0.1:{port}")
        victim = _wait_for_training_worker(started, driver)
        os.kill(victim, signal.SIGKILL)  # mid-task: the worker holds its run's lock while it trains
        out, err = driver.communicate(timeout=600)
        assert driver.returncode == 0, err[-3000:]
        _assert_same_results(_rows(art), serial_rows, art)
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_no_head_at_the_address_is_one_line(ray, idx: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch):
    ray.shutdown()  # the local instance of the tests above: a driver already connected never looks at --ray
    monkeypatch.setenv("RAY_AUTH_MODE", "")
    monkeypatch.delenv("RAY_AUTH_MODE")  # as a user's shell has it; and undone after, whatever the command sets
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    assert main([*GRID, "--data", str(idx), "--artifacts", str(tmp_path / "art"), "--ray", f"127.0.0.1:{port}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fmnist-train: error: --ray 127.0.0.1:{port}: cannot connect"), lines
    assert not ray.is_initialized()


def test_without_ray_installed_the_option_names_the_extra(idx: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    assert main([*GRID, "--data", str(idx), "--artifacts", str(tmp_path / "art"), "--ray"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "fmnist-train: error: --ray needs Ray, which is not installed here; install it with: pip install 'fmnist-edge[ray]'"]
    assert not (tmp_path / "art" / "reports" / "experiments.csv").exists()
