"""Training on a Ray cluster: each sweep group (or model) one Ray task; only the driver writes the artifacts.

    fmnist-train sweep model4 --grid batch_size=16,32,64 --ray                # a local Ray instance
    fmnist-train sweep model4 --grid batch_size=16,32,64 --ray auto           # the cluster this machine is in
    fmnist-train all --ray ray://head:10001                                   # a remote cluster (Ray Client)

No shared file system is assumed. The data set goes to Ray's object store once; each task trains in a temporary
folder of its worker and returns its result with its small files packed as one tar. The driver moves each file in
with one rename, under the same locks as a serial run, and alone writes ``experiments.csv`` and Table 1. Ray
retries a task whose worker dies; a task that fails in Python is reported and does not stop the others; a model
that trains to no result is kept, and ends the run, as a serial run does. Rows already in ``experiments.csv``
are never submitted, so an interrupted driver, run again, submits what is missing.
"""

from __future__ import annotations

import contextlib
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
from typing import TextIO

from trainer import experiments, userfile
from trainer.artifacts import Artifacts, exception_line, writing
from trainer.config import TrainConfig
from trainer.data import Dataset, split_dataset
from trainer.reports import RunMetadata

RAY_INSTALL = "pip install 'fmnist-edge[ray]'"
LOCAL = "local"  # --ray without an address: start a Ray instance on this machine
MAX_RETRIES = 3  # retries of a task whose worker process or node died (Ray's own mechanism)
CPUS_PER_TASK = 1
LEFT_ON_WORKER = ("checkpoints", "snapshots", "locks", "cache")  # not sent back
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
        local = {"num_cpus": os.cpu_count(), "include_dashboard": False} if address == LOCAL else {"address": address}
        try:
            ray.init(**local, **options)
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
    """Send this machine's Ray token when joining by address, as ``ray start`` does.

    ``ray start --head`` turns token authentication on when ``~/.ray/auth_token`` exists (any local ``ray.init``
    writes one), and ``ray.init(address="auto")`` follows; an explicit address never did, so the driver was
    refused ("InvalidAuthToken") by the head it was told to join. The user's own ``RAY_AUTH_MODE`` wins.
    """
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    token = os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file()
    if address not in (LOCAL, "auto") and "RAY_AUTH_MODE" not in os.environ and token:
        os.environ["RAY_AUTH_MODE"] = "token"


def run_groups(groups: list, train_group: Callable[..., list[dict]], sweep_name: str, dataset: Dataset,
               artifacts: Artifacts, address: str, log: TextIO) -> Iterator[tuple[object, list[dict]]]:
    """Each sweep group (trainer/sweep.py's ``Group``) as one task running ``train_group`` (passed in: the sweep
    sits above this module); yields (group, rows) as tasks finish, each run folder already installed here.

    Raises ClusterError at the end, naming each group that failed, after yielding all that succeeded (TrainingFailed
    when each of them trained to no result, as a serial sweep does)."""
    if not groups:
        return
    ray = connect(address)
    for group in groups:
        print(f"[sweep] {group.shared.model} {group.describe()} -> Ray task", file=log, flush=True)
    run_dir = {group: experiments.run_dir(artifacts, group.longest, dataset.sha256) for group in groups}
    failed: list[tuple[str, BaseException]] = []
    for group, result in _run_tasks(ray, [(g, (g, sweep_name)) for g in groups], train_group, dataset, run_dir.get):
        said = f"[sweep] {group.shared.model} {group.describe()}:"
        if isinstance(result, BaseException):
            _note_failure(failed, group.describe(), f"{said} failed:", result, log)
            continue
        rows, archive = result
        _install(archive, group.shared.model, Artifacts(run_dir[group]))
        rows = [{**row, "run_dir": str(run_dir[group])} for row in rows]
        accuracies = ", ".join(f"{row['test_accuracy']:.4f}" for row in rows)
        print(f"{said} test accuracy {accuracies} -> {run_dir[group]}", file=log, flush=True)
        yield group, rows
    if failed:
        raise _failure(f"{len(failed)} of {len(groups)} configuration group(s) failed on Ray", failed)


def run_models(configs: list[TrainConfig], dataset: Dataset, artifacts: Artifacts, address: str, feature_cache: bool,
               log: TextIO) -> tuple[list[RunMetadata], Exception | None]:
    """Each model as one task, its files written here as each task finishes; returns the metadata of the models
    trained, and the error naming those that failed (None if none did)."""
    from trainer.training import train_one  # noqa: PLC0415 - it imports TensorFlow

    ray = connect(address)
    for config in configs:
        print(f"[{config.model}] -> Ray task", file=log, flush=True)
    results, failed = [], []
    jobs = [(config, (config,)) for config in configs]
    for config, result in _run_tasks(ray, jobs, train_one, dataset, lambda _: artifacts.root,
                                     feature_cache=feature_cache):
        if isinstance(result, BaseException):
            _note_failure(failed, config.model, f"[{config.model}] failed:", result, log)
            continue
        _install(result[1], config.model, artifacts)
        meta = RunMetadata.read(artifacts.metadata_file(config.model))
        print(f"[{config.model}] test accuracy {meta.test['accuracy']:.4f} -> {artifacts.model_file(config.model)}",
              file=log, flush=True)
        results.append(meta)
    return results, _failure(f"{len(failed)} of {len(configs)} model(s) failed on Ray", failed) if failed else None


def _run_tasks(ray, jobs: list[tuple[object, tuple]], train: Callable, dataset: Dataset,
               kept_under: Callable[[object], Path], **options) -> Iterator[tuple[object, object]]:
    """Each job's ``train(*args, dataset, splits, artifacts, ..., **options)`` as a retried one-CPU Ray task, the data
    set put in the object store once; yields (job, (result, its folder packed) or the exception it failed with) in
    the order tasks finish. A diverged task's folder is kept under ``kept_under(job)``, its error naming it."""
    # The workers run the user's model files (--model-file) first.
    task = ray.remote(num_cpus=CPUS_PER_TASK, max_retries=MAX_RETRIES)(userfile.carried(_on_worker))
    data = ray.put(dataset)
    futures = {task.remote(train, args, data, options): job for job, args in jobs}
    pending = list(futures)
    while pending:
        (done,), pending = ray.wait(pending, num_returns=1)
        try:
            result = ray.get(done)
        except ray.exceptions.RayError as exc:
            result = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
        if isinstance(result, _Diverged):
            result = _keep_diverged(result, kept_under(futures[done]))
        yield futures[done], result


def _on_worker(train: Callable, args: tuple, dataset: Dataset, options: dict) -> tuple[object, bytes] | _Diverged:
    """On a worker: train in a temporary folder; return the result and the folder packed."""
    from trainer import quiet  # noqa: PLC0415 - imported on the worker

    quiet.configure(False)
    from trainer.training import TrainingFailed  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix=TASK_DIR_PREFIX) as tmp:
        run = Artifacts(Path(tmp) / "run")
        try:
            result = train(*args, dataset, split_dataset(dataset), run, quiet=True, log=io.StringIO(), **options)
        except TrainingFailed as exc:
            return _Diverged(str(exc), str(exc.kept), _pack(exc.kept))
        return result, _pack(run.root)


def _note_failure(failed: list[tuple[str, BaseException]], name: str, said: str, exc: BaseException,
                  log: TextIO) -> None:
    text = exception_line(exc, 500, last=True)
    failed.append((f"{name}: {text}", exc))
    print(f"{said} {text}", file=log, flush=True)


def _failure(summary: str, failed: list[tuple[str, BaseException]]) -> Exception:
    """The error that ends a run with failed tasks: TrainingFailed, as a serial run's, if each trained to no result."""
    from trainer.training import TrainingFailed  # noqa: PLC0415

    diverged = all(isinstance(exc, TrainingFailed) for _, exc in failed)
    return (TrainingFailed if diverged else ClusterError)(f"{summary}: " + "; ".join(text for text, _ in failed))


def _install(archive: bytes, model: str, artifacts: Artifacts) -> None:
    """Move one model's files from a task into ``artifacts`` under its lock, as a serial run holds it: each with one
    rename, the metadata (it says the model is done) last. A checkpoint of an interrupted serial run is superseded."""
    from trainer.training import discard_checkpoint, model_lock  # noqa: PLC0415

    with model_lock(artifacts, model), _unpacked(archive, artifacts.root / "models") as tmp:
        staging = Artifacts(tmp)
        if staging.metadata_file(model).exists():  # it names the .keras file's path on the worker: now it is here
            meta = RunMetadata.read(staging.metadata_file(model))
            meta.model_file = {**meta.model_file, "path": str(artifacts.model_file(model))}
            meta.write(staging.metadata_file(model))
        for file in (Artifacts.model_file, Artifacts.history_file, Artifacts.plot_file, Artifacts.metadata_file):
            source, target = file(staging, model), file(artifacts, model)
            if source.exists():
                with writing(target):
                    target.parent.mkdir(exist_ok=True)
                    source.replace(target)
        discard_checkpoint(artifacts, model)


def _keep_diverged(diverged: _Diverged, root: Path) -> BaseException:
    """Keep a diverged task's folder under ``root`` as the trainer keeps it (trainer/training.py's FAILED_DIR),
    whole or not at all; return its error, naming the folder here."""
    from trainer.training import FAILED_DIR, TrainingFailed  # noqa: PLC0415

    kept = root / FAILED_DIR / Path(diverged.kept).name
    with _unpacked(diverged.archive, kept) as staging:
        staging.replace(kept)
    return TrainingFailed(diverged.message.replace(diverged.kept, str(kept)), kept=kept)


def _pack(root: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for entry in sorted(root.iterdir()):
            if entry.name not in LEFT_ON_WORKER:
                tar.add(entry, arcname=entry.name)
    return buffer.getvalue()


@contextlib.contextmanager
def _unpacked(archive: bytes, beside: Path) -> Iterator[Path]:
    """``archive`` unpacked in a temporary folder beside ``beside`` (renames from it are atomic); gone on leaving."""
    beside.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{beside.name}.", suffix=".tmp", dir=beside.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            tar.extractall(staging, filter="data")  # "data": no absolute paths, links out, or devices
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
