"""Training on a Ray cluster: each sweep group (or model) one Ray task; only the driver writes the artifacts.

    fmnist-train sweep model4 --grid batch_size=16,32,64 --ray                # a local Ray instance
    fmnist-train sweep model4 --grid batch_size=16,32,64 --ray auto           # the cluster this machine is in
    fmnist-train all --ray ray://head:10001                                   # a remote cluster (Ray Client)

No shared file system is assumed. The driver puts the data set in Ray's object store once; each task
trains in a temporary folder of its own worker, computes its rows (or metadata), and returns them with
its small artifacts packed as one tar (the ``.keras`` model, metadata, history, plots: no checkpoints).
The driver unpacks each result into its own artifacts folder, swapping a run folder in with one rename
or writing each model file atomically, under the same locks as a serial run, and it alone writes
``experiments.csv`` and Table 1. A task whose worker dies is retried by Ray (``MAX_RETRIES``); a task
that fails in Python is reported with its error and does not stop the others. A model that trains to
no result sends back the folder the trainer set it aside in, kept here as a serial run keeps it, and
ends the run with TrainingFailed as a serial run does. Rows already in ``experiments.csv`` are never
submitted, so an interrupted driver, run again, submits what is missing.

Same results as the serial run: the same configuration keys and data hash; test accuracy as far as
TensorFlow's arithmetic is the same on the worker (same seed, same code, same thread count).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from trainer import userfile
from trainer.artifacts import Artifacts, atomic_path, exception_line, writing
from trainer.data import Dataset, split_dataset

if TYPE_CHECKING:  # the task functions import the trainer on the worker, not here
    from trainer.config import TrainConfig
    from trainer.reports import RunMetadata

RAY_INSTALL = "pip install 'fmnist-edge[ray]'"
LOCAL = "local"  # --ray without an address: start a Ray instance on this machine
MAX_RETRIES = 3  # retries of a task whose worker process or node died (Ray's own mechanism)
CPUS_PER_TASK = 1
# The small artifacts a task sends back; checkpoints, epoch snapshots and locks stay on the worker.
LEFT_ON_WORKER = ("checkpoints", "snapshots", "locks", "cache")
TASK_DIR_PREFIX = "fmnist-ray-"


class ClusterError(RuntimeError):
    """Ray is missing, cannot connect, or tasks failed; the message says which and what to do."""


@dataclass(frozen=True)
class _Diverged:
    """What a task whose model trained to no result sends back: its error, and the folder it was kept in, packed."""

    message: str
    kept: str  # the folder on the worker, as the message names it
    archive: bytes


def connect(address: str) -> object:
    """``ray``, initialised: a local instance for ``LOCAL``, else the cluster at ``address``."""
    _token_auth_like_ray_start(address)  # before Ray is imported: it reads its configuration once
    try:
        import ray  # noqa: PLC0415 - an optional extra
    except ModuleNotFoundError:
        raise ClusterError(f"--ray needs Ray, which is not installed here; install it with: {RAY_INSTALL}") from None
    if not ray.is_initialized():
        _check_reachable(address)
        options = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
        try:
            if address == LOCAL:
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, **options)
            else:
                ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterError(f"--ray {address}: cannot connect ({str(exc).splitlines()[0][:200]}); "
                               "start a head with 'ray start --head' or pass its address") from None
    return ray


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A ``host:port`` with nothing listening: one line now, where ``ray.init`` would retry for minutes."""
    if address in (LOCAL, "auto") or "://" in address:
        return  # Ray's own look-up (the current cluster file, Ray Client) fails fast enough
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--ray {address[:80]}: expected HOST:PORT (the head's GCS port), 'auto' or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(f"--ray {address}: cannot connect ({exc.strerror or exc}); start a head there with "
                           f"'ray start --head --port={port}' or pass its address") from None


def _token_auth_like_ray_start(address: str) -> None:
    """Send this machine's Ray token when joining by address, as ``ray start`` uses it.

    ``ray start --head`` turns token authentication on when ``~/.ray/auth_token`` exists (any local
    ``ray.init`` writes one), and ``ray.init(address="auto")`` follows; an explicit address never does,
    so the driver was refused ("InvalidAuthToken") by a head it had just been told to join. The user's
    own ``RAY_AUTH_MODE`` always wins.
    """
    token = os.environ.get("RAY_AUTH_TOKEN") or Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").is_file()
    if address not in (LOCAL, "auto") and "RAY_AUTH_MODE" not in os.environ and token:
        os.environ["RAY_AUTH_MODE"] = "token"


# --------------------------------------------------------------------------- sweep groups

def run_groups(groups: list, train_group: Callable[..., list[dict]], sweep_name: str, dataset: Dataset,
               artifacts: Artifacts, address: str, log: TextIO) -> Iterator[tuple[object, list[dict]]]:
    """Each sweep group (trainer/sweep.py's ``Group``) as one task running ``train_group`` (passed in: the sweep
    sits above this module); yields (group, rows) as tasks finish, each run folder already installed here.

    Raises ClusterError at the end, naming each group that failed, after yielding all that succeeded (TrainingFailed
    when each of them trained to no result, as a serial sweep does)."""
    from trainer import experiments  # noqa: PLC0415

    if not groups:
        return
    ray, task, data_ref = _task_and_data(address, _train_group_task, dataset)
    futures = {}
    for group in groups:
        print(f"[sweep] {group.shared.model} {group.describe()} -> Ray task", file=log, flush=True)
        futures[task.remote(train_group, group, sweep_name, data_ref)] = group
    failed: list[tuple[str, BaseException]] = []
    for group, result in _as_completed(ray, futures):
        run_dir = experiments.run_dir(artifacts, group.longest, dataset.sha256)
        if isinstance(result, _Diverged):
            result = _keep_diverged(result, run_dir)
        if isinstance(result, BaseException):
            failed.append((f"{group.describe()}: {exception_line(result, 500, last=True)}", result))
            print(f"[sweep] {group.shared.model} {group.describe()}: failed: {exception_line(result, 500, last=True)}", file=log, flush=True)
            continue
        rows, archive = result
        _install_run(archive, run_dir, group.shared.model)
        rows = [{**row, "run_dir": str(run_dir)} for row in rows]
        accuracies = ", ".join(f"{row['test_accuracy']:.4f}" for row in rows)
        print(f"[sweep] {group.shared.model} {group.describe()}: test accuracy {accuracies} -> {run_dir}", file=log, flush=True)
        yield group, rows
    if failed:
        raise _failure(f"{len(failed)} of {len(groups)} configuration group(s) failed on Ray", failed)


def _train_group_task(train_group: Callable[..., list[dict]], group: object, sweep_name: str,
                      dataset: Dataset) -> tuple[list[dict], bytes] | _Diverged:
    """On a worker: train the group in a temporary folder; return its rows and its run folder as a tar."""
    from trainer import quiet  # noqa: PLC0415 - imported on the worker

    quiet.configure(False)
    from trainer.training import TrainingFailed  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix=TASK_DIR_PREFIX) as tmp:
        run = Artifacts(Path(tmp) / "run")
        try:
            rows = train_group(group, sweep_name, dataset, split_dataset(dataset), run, quiet=True, log=io.StringIO())
        except TrainingFailed as exc:
            return _Diverged(str(exc), str(exc.kept), _pack(exc.kept))
        return rows, _pack(run.root)


def _install_run(archive: bytes, run_dir: Path, model: str) -> None:
    """Put a task's run folder at ``run_dir``, under the run's lock as a serial run holds it: each top-level
    entry moved in with one rename, ``models/`` (its metadata says the run is done) last."""
    from trainer.training import model_lock  # noqa: PLC0415

    run_dir.mkdir(parents=True, exist_ok=True)
    with model_lock(Artifacts(run_dir), model):
        staging = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", dir=run_dir.parent))
        try:
            _unpack(archive, staging)
            _relocate_metadata(Artifacts(staging), model, Artifacts(run_dir))
            for entry in sorted(staging.iterdir(), key=lambda e: e.name == "models"):
                target = run_dir / entry.name
                if target.is_dir():
                    shutil.rmtree(target)
                entry.replace(target)
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # an interrupted serial run's, superseded
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- models (fmnist-train all)

def run_models(configs: list["TrainConfig"], dataset: Dataset, artifacts: Artifacts, address: str, feature_cache: bool,
               log: TextIO) -> tuple[list["RunMetadata"], Exception | None]:
    """Each model as one task; its files are written here atomically as each task finishes.

    Returns the metadata of the models trained, and the error naming those that failed (None if none did).
    """
    from trainer.reports import RunMetadata  # noqa: PLC0415

    ray, task, data_ref = _task_and_data(address, _train_model_task, dataset)
    futures = {}
    for config in configs:
        print(f"[{config.model}] -> Ray task", file=log, flush=True)
        futures[task.remote(config, data_ref, feature_cache)] = config
    results, failed = [], []
    for config, result in _as_completed(ray, futures):
        if isinstance(result, _Diverged):
            result = _keep_diverged(result, artifacts.root)
        if isinstance(result, BaseException):
            failed.append((f"{config.model}: {exception_line(result, 500, last=True)}", result))
            print(f"[{config.model}] failed: {exception_line(result, 500, last=True)}", file=log, flush=True)
            continue
        _install_model(result, config.model, artifacts)
        meta = RunMetadata.read(artifacts.metadata_file(config.model))
        print(f"[{config.model}] test accuracy {meta.test['accuracy']:.4f} -> {artifacts.model_file(config.model)}",
              file=log, flush=True)
        results.append(meta)
    return results, _failure(f"{len(failed)} of {len(configs)} model(s) failed on Ray", failed) if failed else None


def _train_model_task(config: "TrainConfig", dataset: Dataset, feature_cache: bool) -> bytes | _Diverged:
    from trainer import quiet  # noqa: PLC0415 - imported on the worker

    quiet.configure(False)
    from trainer.training import TrainingFailed, train_one  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix=TASK_DIR_PREFIX) as tmp:
        run = Artifacts(Path(tmp))
        try:
            train_one(config, dataset, split_dataset(dataset), run, quiet=True, log=io.StringIO(), feature_cache=feature_cache)
        except TrainingFailed as exc:
            return _Diverged(str(exc), str(exc.kept), _pack(exc.kept))
        return _pack(run.root)


def _install_model(archive: bytes, model: str, artifacts: Artifacts) -> None:
    """Write one model's files from a task into ``artifacts``, each atomically, metadata last."""
    from trainer.training import model_lock  # noqa: PLC0415

    with model_lock(artifacts, model), tempfile.TemporaryDirectory(prefix=TASK_DIR_PREFIX) as tmp:
        staging = Artifacts(Path(tmp))
        _unpack(archive, staging.root)
        _relocate_metadata(staging, model, artifacts)
        files = [(staging.model_file(model), artifacts.model_file(model)),
                 (staging.history_file(model), artifacts.history_file(model)),
                 (staging.plot_file(model), artifacts.plot_file(model)),
                 (staging.metadata_file(model), artifacts.metadata_file(model))]  # last: it says the model is done
        for source, target in files:
            if source.exists():
                with writing(target), atomic_path(target) as partial:
                    shutil.copyfile(source, partial)


# --------------------------------------------------------------------------- shared

def _task_and_data(address: str, function: Callable, dataset: Dataset) -> tuple[object, object, object]:
    """``ray`` connected, ``function`` as a retried one-CPU task, and the data set in the object store (once)."""
    ray = connect(address)
    task = userfile.carried(function)  # the workers run the user's model files (--model-file) first
    return ray, ray.remote(num_cpus=CPUS_PER_TASK, max_retries=MAX_RETRIES)(task), ray.put(dataset)


def _as_completed(ray, futures: dict) -> Iterator[tuple[object, object]]:
    """(what was submitted, its result or the exception it failed with), in the order tasks finish."""
    pending = list(futures)
    while pending:
        (done,), pending = ray.wait(pending, num_returns=1)
        try:
            yield futures[done], ray.get(done)
        except ray.exceptions.RayError as exc:
            yield futures[done], exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc


def _keep_diverged(diverged: _Diverged, root: Path) -> BaseException:
    """Keep a diverged task's folder under ``root`` as the trainer keeps it (trainer/training.py's FAILED_DIR),
    whole or not at all; return its error, naming the folder here."""
    from trainer.training import FAILED_DIR, TrainingFailed  # noqa: PLC0415

    kept = root / FAILED_DIR / Path(diverged.kept).name
    kept.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{kept.name}.", suffix=".tmp", dir=kept.parent))
    try:
        _unpack(diverged.archive, staging)
        staging.replace(kept)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TrainingFailed(diverged.message.replace(diverged.kept, str(kept)), kept=kept)


def _failure(summary: str, failed: list[tuple[str, BaseException]]) -> Exception:
    """The error that ends a run with failed tasks: TrainingFailed, as a serial run's, when each trained to no result."""
    from trainer.training import TrainingFailed  # noqa: PLC0415

    diverged = all(isinstance(exc, TrainingFailed) for _, exc in failed)
    return (TrainingFailed if diverged else ClusterError)(f"{summary}: " + "; ".join(text for text, _ in failed))




def _pack(root: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for entry in sorted(root.iterdir()):
            if entry.name not in LEFT_ON_WORKER:
                tar.add(entry, arcname=entry.name)
    return buffer.getvalue()


def _unpack(archive: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(dest, filter="data")  # "data": no absolute paths, links out, or devices


def _relocate_metadata(staging: Artifacts, model: str, final: Artifacts) -> None:
    """The metadata names the ``.keras`` file's path on the worker; here it is where the driver puts it."""
    from trainer.reports import RunMetadata  # noqa: PLC0415

    path = staging.metadata_file(model)
    if path.exists():
        meta = RunMetadata.read(path)
        meta.model_file = {**meta.model_file, "path": str(final.model_file(model))}
        meta.write(path)
