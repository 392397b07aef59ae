"""Issue #14, the trainer's side: a hostile tester's findings, each shown to end in one clean line.

Every refusal here is one line, ``fmnist-train: error: ...`` (or ``fmnist-bench report: error: ...``)
naming the file, the option or the lock, with a non-zero exit and never a traceback; every kill
leaves a state that a rerun finishes from with each epoch exactly once.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import pandas as pd
import pytest

from tiny import write_idx_dir
from trainer import data, experiments
from trainer import fit as fit_mod
from trainer import reports as reports_mod
from trainer import training as training_mod
from trainer.artifacts import Artifacts, atomic_path
from trainer.cli import main
from trainer.config import TrainConfig, resolve_config
from trainer.locks import LockedError, exclusive
from trainer.reports import MetadataError, RunMetadata, table1

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "1", "--batch-size", "32", "--quiet"]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _config(epochs: int) -> TrainConfig:
    return TrainConfig(model="model1", epochs=epochs, batch_size=32, optimizer="adam", lr=1e-3, seed=0, base_weights="none")


@pytest.fixture(scope="module")
def idx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_idx_dir(tmp_path_factory.mktemp("hostile") / "idx")


@pytest.fixture(scope="module")
def tiny(idx: Path) -> tuple[data.Dataset, data.Splits]:
    dataset = data.load_dataset(idx)
    return dataset, data.split_dataset(dataset)


@pytest.fixture(scope="module")
def after_a_killed_holder(idx: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """model1 trained (1 epoch) by the first run on a fresh artifacts folder after another process, holding model1's
    lock there, was SIGKILLed; with what was seen on the way: what a try at the lock got while the holder lived,
    whether its lock file was left, the run's exit status. One training for ``trained`` and for
    test_a_killed_holder_leaves_no_stale_lock, which checks what was seen."""
    root = tmp_path_factory.mktemp("trained") / "art"
    lock = Artifacts(root).lock_file("model1")
    with _held_by_another_process(lock) as holder:
        seen: dict = {"holder_pid": holder.pid, "refused": None}
        try:
            with exclusive(lock, "model1"):
                pass
        except LockedError as exc:
            seen["refused"] = str(exc)
    seen["lock_left"] = lock.exists()
    seen["exit"] = main(["model1", "--data", str(idx), "--artifacts", str(root), *TINY])
    return root, seen


@pytest.fixture(scope="module")
def trained(after_a_killed_holder: tuple[Path, dict]) -> Path:
    """An artifacts folder with model1 trained (1 epoch); copy it before changing it."""
    root, seen = after_a_killed_holder
    assert seen["exit"] == 0
    return root


def _error_line(err: str, prog: str = "fmnist-train") -> str:
    """The one error line of a refused command (argparse's usage line aside), checked for a traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(prog)]
    assert len(lines) == 1 and ": error: " in lines[0], err
    return lines[0]


def _history_epochs(art: Artifacts) -> list[int]:
    return list(pd.read_csv(art.history_file("model1"))["epoch"])


def _leftovers(root: Path) -> list[Path]:
    """Temporary files of atomic writes, which a failed write must not leave behind."""
    return [p for p in root.rglob("*") if ".tmp" in p.name]


# --------------------------------------------------------------------------- 1. two runs on one artifacts folder

HOLDER = ("import sys, time; from pathlib import Path; from trainer.locks import exclusive\n"
          "with exclusive(Path(sys.argv[1]), 'model1 (held by a test)'):\n"
          "    print('held', flush=True); time.sleep(600)\n")


@contextlib.contextmanager
def _held_by_another_process(lock: Path) -> Iterator[subprocess.Popen]:
    """A process that holds ``lock`` until the block ends, when it is SIGKILLed (never a clean release)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)


@pytest.mark.slow
def test_a_second_run_on_the_same_folder_is_refused_naming_the_holder_and_writes_nothing(idx: Path, tmp_path: Path):
    root = tmp_path / "art"
    lock = Artifacts(root).lock_file("model1")
    with exclusive(lock, "model1 (held by this test)"):
        holder_text = lock.read_text()
        result = subprocess.run([sys.executable, "-m", "trainer.cli", "model1", "--data", str(idx), "--artifacts", str(root), *TINY],
                                capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 2
    line = _error_line(result.stderr)
    assert str(lock) in line and f"pid {os.getpid()}" in line and "in use by" in line
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == ["locks", "locks/model1.lock"]
    assert lock.read_text() == holder_text  # the refused run did not even rewrite the holder's name


@pytest.mark.slow
def test_a_killed_holder_leaves_no_stale_lock(after_a_killed_holder: tuple[Path, dict]):
    root, seen = after_a_killed_holder
    assert seen["refused"] is not None and f"pid {seen['holder_pid']} " in seen["refused"]  # refused while it lived
    # SIGKILLed: no cleanup ran, the lock file is still there, yet the next run gets the lock.
    assert seen["lock_left"]
    assert seen["exit"] == 0
    assert _history_epochs(Artifacts(root)) == [0]


def test_a_sweep_refuses_a_run_that_another_process_is_writing(idx: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    art = Artifacts(tmp_path / "art")
    sha256 = data.load_dataset(idx).limit(200).sha256
    run_dir = experiments.run_dir(art, resolve_config("model1", epochs=1, batch_size=32, seed=0, limit=200), sha256)
    lock = Artifacts(run_dir).lock_file("model1")
    argv = ["sweep", "model1", "--grid", "seed=0", "--epochs", "1", "--batch-size", "32", "--limit", "200",
            "--data", str(idx), "--artifacts", str(art.root), "--quiet"]
    with _held_by_another_process(lock) as holder:
        assert main(argv) == 2
    line = _error_line(capsys.readouterr().err)
    assert str(lock) in line and f"pid {holder.pid} " in line
    assert not art.experiments_file.exists() and not (run_dir / "history").exists()


def test_a_lock_held_for_a_moment_is_waited_for(tmp_path: Path):
    lock = tmp_path / "locks" / "experiments.lock"
    releaser = subprocess.Popen([sys.executable, "-c", HOLDER.replace("time.sleep(600)", "time.sleep(1)"), str(lock)],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert releaser.stdout.readline().strip() == "held"
    with exclusive(lock, "the experiment table", wait_s=60):
        pass
    releaser.wait(timeout=60)


# --------------------------------------------------------------------------- 2. kill windows in resume

def _checkpoint_names(art: Artifacts) -> list[str]:
    return sorted(p.name for p in art.backup_dir("model1").iterdir())


def _cli_config(epochs: int) -> TrainConfig:
    """What fmnist-train resolves ``model1 --epochs N --batch-size 32`` to: a checkpoint the command line wrote
    resumes only under it (its base_weights, "auto", is part of the checkpoint's identity)."""
    return resolve_config("model1", epochs=epochs, batch_size=32)


@pytest.fixture(scope="module")
def killed_in_epoch_2(idx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``fmnist-train model1 --epochs 2`` interrupted at the end of epoch 2, in the two states such a kill leaves:
    "both", just after epoch 2's checkpoint was published and before epoch 1's was removed, and "newest", just
    after that removal (where the interrupt came), epoch 2's checkpoint alone. One training for all the tests
    that copy a state and damage it; copy before changing."""
    states = tmp_path_factory.mktemp("killed-in-epoch-2")
    root, both = states / "newest", states / "both"
    discard = fit_mod._discard

    def killed_once_removed(folder: Path) -> None:  # the first removal: epoch 1's checkpoint, after epoch 2's is out
        shutil.copytree(root, both)
        discard(folder)
        raise KeyboardInterrupt

    argv = ["model1", "--data", str(idx), "--artifacts", str(root), "--epochs", "2", "--batch-size", "32", "--quiet"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fit_mod, "_discard", killed_once_removed)
        assert main(argv) == 130
    return {"both": both, "newest": root}


@pytest.mark.slow
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(killed_in_epoch_2: dict[str, Path], idx: Path,
                                                                  tmp_path: Path, capsys: pytest.CaptureFixture):
    root = tmp_path / "art"
    shutil.copytree(killed_in_epoch_2["both"], root)  # killed where epoch 1's checkpoint was to be removed
    argv = ["model1", "--data", str(idx), "--artifacts", str(root), "--epochs", "2", "--batch-size", "32"]
    backup = Artifacts(root).backup_dir("model1")
    assert _checkpoint_names(Artifacts(root)) == ["epoch-0001", "epoch-0002"]
    (backup / "epoch-0002" / "state.json").write_text('{"epo')  # damaged since it was published

    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    notes = [line for line in out.splitlines() if "discarding checkpoint" in line]
    assert notes == [f"[model1] discarding checkpoint {backup / 'epoch-0002'}: its state.json is missing or unreadable"]
    assert f"resuming at epoch 2/2 from {backup / 'epoch-0001'}" in out
    meta = RunMetadata.read(Artifacts(root).metadata_file("model1"))
    assert _history_epochs(Artifacts(root)) == [0, 1] and meta.training["epochs_run"] == 2
    assert meta.training["resumed_from_epoch"] == 1


def _flip_a_byte(path: Path) -> None:
    """Damage no tool would notice on opening the file: one byte of its data changed, its size the same."""
    content = bytearray(path.read_bytes())
    content[-100] ^= 0xFF
    path.write_bytes(bytes(content))


@pytest.mark.slow
@pytest.mark.parametrize(("damage", "note"), [
    ("state.json", "its state.json is missing or unreadable"),
    ("weights", "its state.weights.h5 is missing or damaged"),
    ("history copy", "its history.csv is missing or damaged"),
    ("live history twice", None),
])
def test_a_damaged_checkpoint_is_discarded_in_one_line(damage: str, note: str | None, killed_in_epoch_2: dict[str, Path],
                                                       tiny, tmp_path: Path):
    dataset, splits = tiny
    art = Artifacts(tmp_path / "art")
    shutil.copytree(killed_in_epoch_2["newest"], art.root)  # killed at the end of epoch 2: its checkpoint alone
    assert _checkpoint_names(art) == ["epoch-0002"]
    checkpoint, history = art.backup_dir("model1") / "epoch-0002", art.history_file("model1")
    if damage == "state.json":
        (checkpoint / "state.json").write_bytes(b'{"identity": {"mod')
    elif damage == "weights":
        _flip_a_byte(checkpoint / "state.weights.h5")
    elif damage == "history copy":
        _flip_a_byte(checkpoint / "history.csv")
    else:  # what two runs at once left: the header and every epoch twice; the checkpoint's copy is put back
        text = history.read_text()
        history.write_text(text + text)

    log = io.StringIO()
    meta = training_mod.train_one(_cli_config(2), dataset, splits, art, quiet=True, log=log)
    notes = [line for line in log.getvalue().splitlines() if "checkpoint" in line and "resuming" not in line]
    if note is None:
        assert notes == [] and meta.training["resumed_from_epoch"] == 2
    else:
        assert notes == [f"[model1] discarding checkpoint {checkpoint}: {note}"]
        assert meta.training["resumed_from_epoch"] == 0
    assert _history_epochs(art) == [0, 1] and meta.training["epochs_run"] == 2


class _Recorder:
    """Records the artifacts folder after every write of a training run, and as a kill in the middle of it left it.

    The hooks are the real write functions: our history append; into a checkpoint's temporary folder,
    Keras' ``save_weights``, the copy of the history and the JSON write; the rename that publishes it;
    then train_one's model and metadata writes.
    """

    def __init__(self, root: Path, states: Path):
        self.root, self.states, self.writes = root, states, []
        self.count = 0

    def snapshot(self, label: str, torn: Callable[[bytes], list[bytes]] | None = None, target: Path | None = None) -> None:
        self.count += 1
        base = self.states / f"{self.count:02d}-after-{label}"
        shutil.copytree(self.root, base)
        if torn is None or target is None:
            return
        content = target.read_bytes()
        for i, cut in enumerate(torn(content)):
            state = self.states / f"{self.count:02d}-during-{label}-{i}"
            shutil.copytree(self.root, state)
            (state / target.relative_to(self.root)).write_bytes(cut)

    def written(self, target: Path, torn: Callable[[bytes], list[bytes]] | None, label: str | None = None) -> None:
        self.writes.append(target.name)
        self.snapshot(label or target.name, torn, target)

    def half_deleted(self, folder: Path, label: str, file: str) -> None:
        """The state of a kill while ``folder`` is deleted: renamed aside (as trainer/fit.py does), ``file`` gone."""
        state = self.states / f"{self.count:02d}-during-{label}"
        shutil.copytree(self.root, state)
        moved = state / folder.relative_to(self.root)
        moved = moved.rename(moved.with_name(f".{moved.name}.discarded-1"))
        (moved / file).unlink()


class _AtStart(keras.callbacks.Callback):
    """The state of a kill during the first epoch, before any of its writes."""

    def __init__(self, recorder: _Recorder):
        super().__init__()
        self.recorder = recorder

    def on_train_begin(self, logs=None):
        self.recorder.snapshot("start")


def _half(content: bytes) -> list[bytes]:
    """A big file (weights) being written when the kill came: cut short."""
    return [content[: len(content) // 2]]


def _emptied(content: bytes) -> list[bytes]:
    """A small file (a JSON line) being written when the kill came: open() had truncated it, write() not run yet."""
    return [b""]


@pytest.fixture(scope="module")
def recorded(tiny, tmp_path_factory: pytest.TempPathFactory) -> _Recorder:
    """One training of model1 (``_config(2)``) with its artifacts folder recorded after and during every write."""
    dataset, splits = tiny
    work = tmp_path_factory.mktemp("recorded")
    root = work / "art"
    recorder = _Recorder(root, work / "states")
    backup = Artifacts(root).backup_dir("model1")

    def in_checkpoint(path: object) -> bool:
        """A file in a checkpoint being written (its temporary folder, in the model's checkpoint folder)."""
        return Path(path).parent.parent == backup

    with pytest.MonkeyPatch.context() as patch:
        save_weights, copyfile, replace = keras.Model.save_weights, shutil.copyfile, os.replace
        write_state, append = fit_mod.write_json_atomic, fit_mod._append_whole

        def weights_saved(self, filepath, *args, **kwargs):
            result = save_weights(self, filepath, *args, **kwargs)
            if in_checkpoint(filepath):
                recorder.written(Path(filepath), _half)
            return result

        def copied(src, dst, *args, **kwargs):
            result = copyfile(src, dst, *args, **kwargs)
            if in_checkpoint(dst):
                recorder.written(Path(dst), _half)
            return result

        def state_written(path, payload):
            write_state(path, payload)
            if in_checkpoint(path):
                recorder.written(Path(path), _emptied)

        def replaced(src, dst, *args, **kwargs):
            replace(src, dst, *args, **kwargs)
            if Path(dst).parent == backup:  # a checkpoint published: one rename, nothing to see half done
                recorder.written(Path(dst), None)
                older = sorted(backup.glob("epoch-*"))[:-1]
                if older:  # the one before is deleted next
                    recorder.half_deleted(older[0], f"removal-of-{older[0].name}", "state.weights.h5")

        def row_appended(path, payload):
            before = path.stat().st_size if path.exists() else 0
            append(path, payload)
            recorder.written(path, lambda content: [content[: before + (len(content) - before) // 2]])

        plot = training_mod.accuracy_loss_plot
        write_json = reports_mod.write_json_atomic

        def plotted(*args, **kwargs):
            recorder.snapshot("model file")  # the .keras file is in place, the metadata not yet
            return plot(*args, **kwargs)

        def metadata_written(path, payload):
            write_json(path, payload)
            recorder.snapshot("metadata")
            recorder.half_deleted(backup, "discard", "epoch-0002/state.weights.h5")  # the finished checkpoint

        patch.setattr(keras.Model, "save_weights", weights_saved)
        patch.setattr(shutil, "copyfile", copied)
        patch.setattr(fit_mod, "write_json_atomic", state_written)
        patch.setattr(os, "replace", replaced)
        patch.setattr(fit_mod, "_append_whole", row_appended)
        patch.setattr(training_mod, "accuracy_loss_plot", plotted)
        patch.setattr(reports_mod, "write_json_atomic", metadata_written)
        training_mod.train_one(_config(2), dataset, splits, Artifacts(root), quiet=True, extra_callbacks=[_AtStart(recorder)])
    return recorder


@pytest.fixture(scope="module")
def reruns(recorded: _Recorder, tiny, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Artifacts, object, str]]:
    """Every recorded state copied and trained again with the same configuration, as the next run after that kill:
    by state name, the rerun's artifacts folder, the metadata train_one returned (or the exception it raised) and its
    log. The tests that read them check them; one rerun per state for all of them."""
    dataset, splits = tiny
    work = tmp_path_factory.mktemp("rerun")
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        # The reruns check the epochs, not the figures or timings: skip what costs time and writes no checkpoint.
        patch.setattr(training_mod, "accuracy_loss_plot", lambda history, title, target: target.write_bytes(b"png"))
        patch.setattr(training_mod, "evaluate", functools.partial(training_mod.evaluate, repeats=1))
        patch.setattr(training_mod, "machine_info", lambda: {"cpu": "test", "cores": 1})
        for state in sorted(recorded.states.iterdir()):
            rerun = Artifacts(work / state.name)
            shutil.copytree(state, rerun.root)
            log = io.StringIO()
            try:
                outcome: object = training_mod.train_one(_config(2), dataset, splits, rerun, quiet=True, log=log)
            except Exception as exc:  # noqa: BLE001 - every failure is kept and reported by the tests
                outcome = exc
            results[state.name] = (rerun, outcome, log.getvalue())
    return results


@pytest.mark.slow
def test_a_kill_between_the_history_row_and_the_checkpoint_loses_no_epoch(recorded: _Recorder, reruns):
    # The kill came just after epoch 2's history row was appended (the second append), before its checkpoint.
    state = [s for s in sorted(recorded.states.iterdir()) if s.name.endswith("-after-model1.csv")][1]
    assert _checkpoint_names(Artifacts(state)) == ["epoch-0001"]
    assert _history_epochs(Artifacts(state)) == [0, 1]

    rerun, meta, log = reruns[state.name]
    assert isinstance(meta, RunMetadata), meta
    assert f"resuming at epoch 2/2 from {rerun.backup_dir('model1') / 'epoch-0001'}" in log
    assert meta.training["resumed_from_epoch"] == 1  # epoch 2 trains again, and its row is written once
    assert _history_epochs(rerun) == [0, 1] and meta.training["epochs_run"] == 2


@pytest.mark.slow
def test_a_kill_at_every_write_still_finishes_with_each_epoch_once(recorded: _Recorder, reruns):
    epochs = 2
    # The write order trainer/fit.py documents: each epoch's history row, then its checkpoint written
    # in a temporary folder and published with one rename.
    assert recorded.writes == ["model1.csv", "state.weights.h5", "history.csv", "state.json", "epoch-0001",
                               "model1.csv", "state.weights.h5", "history.csv", "state.json", "epoch-0002"]

    states = sorted(recorded.states.iterdir())
    # The start; after and during each of the 8 writes inside an epoch and after each of the 2 publishing
    # renames; during the removal of epoch 1's checkpoint; 3 after fit().
    assert len(states) == 23
    assert list(reruns) == [state.name for state in states]  # each one was run again
    failures = []
    for state in states:
        rerun, meta, log = reruns[state.name]
        if isinstance(meta, Exception):
            failures.append(f"{state.name}: {type(meta).__name__}: {meta}")
            continue
        seen = _history_epochs(rerun)
        if seen != list(range(epochs)) or meta.training["epochs_run"] != epochs or meta.config["epochs"] != epochs:
            failures.append(f"{state.name}: history epochs {seen}, metadata says {meta.training['epochs_run']} run")
        if rerun.backup_dir("model1").exists() or list(rerun.backup_dir("model1").parent.glob(".*")):
            failures.append(f"{state.name}: a checkpoint was left behind")
        if any("\n" in line or len(line) > 400 for line in log.splitlines()):
            failures.append(f"{state.name}: a note of more than one line")
    assert not failures, "\n".join(failures)


# --------------------------------------------------------------------------- 3. typos and impossible values

@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["all", "modle1"], "unknown model 'modle1'"),
        (["model1", "--lr", "inf"], "--lr: 'inf' must be a finite number"),
        (["model1", "--lr", "nan"], "--lr: 'nan' must be a finite number"),
        (["model1", "--lr", "-0.001"], "--lr: '-0.001' must be positive"),
        (["model1", "--lr", "0"], "--lr: '0' must be positive"),
        (["model1", "--epochs", "0"], "--epochs: '0' must be positive"),
        (["model1", "--batch-size", "1e3"], "--batch-size: '1e3' is not a whole number"),
        (["model1", "--batch-size", str(2**31)], "--batch-size: '2147483648' must be at most 2147483647"),
        (["model1", "--limit", "-5"], "--limit: '-5' must be positive"),
        (["model1", "--seed", "-1"], "--seed: '-1' must be between 0 and 4294967295"),
        (["model1", "--seed", str(2**32)], "--seed: '4294967296' must be between 0 and 4294967295"),
        (["sweep", "modle4", "--grid", "lr=0.1"], "unknown model 'modle4'"),
        (["sweep", "model4", "--grid", "lr=inf"], "--grid 'lr=inf': lr inf is impossible"),
        (["sweep", "model4", "--grid", "lr=0.001,nan"], "--grid 'lr=0.001,nan': lr nan is impossible"),
        (["sweep", "model4", "--grid", "lr=0.001,0"], "lr 0.0 is impossible"),
        (["sweep", "model4", "--grid", "batch_size=32,0"], "batch_size 0 is impossible"),
        (["sweep", "model4", "--grid", "epochs=-1,5"], "epochs -1 is impossible"),
        (["sweep", "model4", "--grid", "seed=-1"], "seed -1 is impossible"),
        (["sweep", "model4", "--grid", f"seed={2**32}"], "seed 4294967296 is impossible"),
        (["sweep", "model4", "--grid", "lr=0.1", "--epochs", "0"], "--epochs: '0' must be positive"),
    ],
)
def test_typos_and_impossible_values_are_refused_before_anything_runs(argv, message, tmp_path: Path, capsys: pytest.CaptureFixture):
    root = tmp_path / "art"
    assert main([*argv, "--data", str(tmp_path / "no-data"), "--artifacts", str(root)]) == 2
    assert message in _error_line(capsys.readouterr().err)
    assert not root.exists()  # refused before the folder, the data or a model was touched


@pytest.mark.parametrize(
    "argv",
    [
        ["x" * 100_000],
        ["model1", "--lr", "x" * 100_000],
        ["model1", "--optimizer", "y" * 100_000],
        ["model1", "--seed", "9" * 100_000],
        ["sweep", "model4", "--grid", "lr=" + "z" * 100_000],
        ["sweep", "model4", "--grid", "lr=" + "9" * 100_000],
        ["sweep", "w" * 100_000, "--grid", "lr=0.1"],
    ],
)
def test_huge_user_text_is_never_echoed_whole(argv, tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main([*argv, "--artifacts", str(tmp_path / "art")]) == 2
    assert len(_error_line(capsys.readouterr().err)) < 400


# --------------------------------------------------------------------------- 4. one line where one line is promised

def _report(argv: list[str]) -> int:
    from bench.report.document import main as report_main

    return report_main(argv)


def test_report_out_pointing_to_a_file_is_one_line(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    a_file = tmp_path / "REPORT"
    a_file.write_text("keep me")
    for out, expected in ((a_file, f"--out {a_file}: is a file, not a folder"),
                          (a_file / "sub", f"--out {a_file / 'sub'}: cannot write the report there (Not a directory)")):
        assert _report(["--artifacts", str(trained), "--out", str(out)]) == 2
        assert expected in _error_line(capsys.readouterr().err, "fmnist-bench report")
    assert a_file.read_text() == "keep me"


def test_report_out_in_an_unwritable_folder_is_one_line(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "locked"
    out.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: the refusal the OS gives anyone else, where it would come
        import bench.report.document

        def refused(path: Path, text: str) -> None:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path.with_name(f".{path.name}.tmp")))

        monkeypatch.setattr(bench.report.document, "write_text_atomic", refused)
    else:
        out.chmod(0o555)
    try:
        assert _report(["--artifacts", str(trained), "--out", str(out)]) == 2
    finally:
        out.chmod(0o755)
    line = _error_line(capsys.readouterr().err, "fmnist-bench report")
    assert f"--out {out}: cannot write the report there (Permission denied)" in line
    assert not (out / "REPORT.md").exists()


def _metadata_damage() -> dict[str, tuple[Callable[[dict], bytes], str]]:
    def dumped(change: Callable[[dict], None]) -> Callable[[dict], bytes]:
        def apply(payload: dict) -> bytes:
            change(payload)
            return json.dumps(payload).encode()
        return apply

    return {
        "not JSON": (lambda p: b'{"model": "model1", "display_na', "not JSON"),
        "not text": (lambda p: b"\xff\xfe\x00\x00binary", "not UTF-8 text"),
        "a JSON list": (lambda p: b"[1, 2, 3]", "a JSON list, expected an object"),
        "another schema": (dumped(lambda p: p.update(schema_version=99)), "metadata schema_version 99, this toolkit reads 1"),
        "a huge schema": (dumped(lambda p: p.update(schema_version="v" * 100_000)), "metadata schema_version 'vvv"),
        "missing keys": (dumped(lambda p: p.pop("test")), "not this toolkit's run metadata: lacks ['test']"),
        "a foreign key": (dumped(lambda p: p.update(weights="elsewhere")), "has unknown ['weights']"),
        "a nested key missing": (dumped(lambda p: p["final_epoch"].pop("accuracy")), "final_epoch lacks accuracy"),
        "a wrong type": (dumped(lambda p: p["final_epoch"].update(accuracy="high")),
                         "final_epoch.accuracy is a string, expected a number"),
        "not finite": (dumped(lambda p: p["test"].update(loss=float("nan"))), "test.loss is nan, expected a finite number"),
        "base weights not text": (dumped(lambda p: p.update(base_weights=7)), "base_weights is a number, expected str"),
    }


@pytest.mark.parametrize("damage", list(_metadata_damage()))
def test_damaged_metadata_is_one_error_naming_the_file_for_every_reader(damage: str, trained: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture):
    from exporter.cli import main as export_main
    from exporter.export import load_source

    root = tmp_path / "art"
    shutil.copytree(trained, root)
    art = Artifacts(root)
    path = art.metadata_file("model1")
    damaged, expected = _metadata_damage()[damage]
    path.write_bytes(damaged(json.loads(path.read_text())))

    with pytest.raises(MetadataError) as caught:
        RunMetadata.read(path)
    assert str(path) in str(caught.value) and expected in str(caught.value) and len(str(caught.value)) < 400
    with pytest.raises(MetadataError):
        table1(art, ["model1"])
    with pytest.raises(MetadataError):
        load_source("model1", art)

    assert _report(["--artifacts", str(root), "--out", str(tmp_path / "out")]) == 2
    assert f"{path}: " in _error_line(capsys.readouterr().err, "fmnist-bench report")
    assert export_main(["model1", "--artifacts", str(root), "--quiet"]) == 2
    assert f"{path}: " in _error_line(capsys.readouterr().err, "fmnist-export")


def test_fmnist_train_names_a_damaged_metadata_file_that_table_1_reads(trained: Path, idx: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture):
    root = tmp_path / "art"
    shutil.copytree(trained, root)
    other = Artifacts(root).metadata_file("model4")
    other.write_text("[]")
    before = _files(root)
    assert main(["model1", "--data", str(idx), "--artifacts", str(root), *TINY]) == 2
    assert f"{other}: not run metadata" in _error_line(capsys.readouterr().err)
    # Named before any training: model1's files, its checkpoints and Table 1 are as they were.
    assert _files(root) == before


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the locks (a run rewrites its holder's name in them) with its content."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file() and "locks" not in p.parts}


def _fail_model_save(patch: pytest.MonkeyPatch) -> None:
    def save(self, filepath, *args, **kwargs):
        Path(filepath).write_bytes(b"PK\x03\x04 the first bytes of a zip")
        raise ENOSPC

    patch.setattr(keras.Model, "save", save)


def _fail_second_history_row(patch: pytest.MonkeyPatch) -> None:
    write_all, calls = fit_mod._write_all, []

    def write(fd: int, payload: bytes) -> None:
        calls.append(payload)
        if len(calls) < 2:
            return write_all(fd, payload)
        os.write(fd, payload[: len(payload) // 2])
        raise ENOSPC

    patch.setattr(fit_mod, "_write_all", write)


def _fail_metadata(patch: pytest.MonkeyPatch) -> None:
    def write_json(path: Path, payload: dict) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text('{"model": "mod')
            raise ENOSPC

    patch.setattr(reports_mod, "write_json_atomic", write_json)


def _fail_second_checkpoint(patch: pytest.MonkeyPatch) -> None:
    """The weights file of epoch 2's checkpoint cut short by the full disk (the next run resumes from epoch 1's)."""
    save_weights, calls = keras.Model.save_weights, []

    def save(self, filepath, *args, **kwargs):
        if Path(filepath).name == "state.weights.h5":
            calls.append(filepath)
            if len(calls) == 2:
                Path(filepath).write_bytes(b"\x89HDF\r\n\x1a\n cut short")
                raise ENOSPC
        return save_weights(self, filepath, *args, **kwargs)

    patch.setattr(keras.Model, "save_weights", save)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fail", "where", "epochs"),
    [(_fail_model_save, "models/model1.keras", 1), (_fail_second_history_row, "history/model1.csv", 2),
     (_fail_metadata, "models/model1.json", 1), (_fail_second_checkpoint, "checkpoints/model1", 2)],
)
def test_a_full_disk_is_one_line_and_leaves_no_half_written_file(fail, where: str, epochs: int, idx: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    root = tmp_path / "art"
    art = Artifacts(root)
    argv = ["model1", "--data", str(idx), "--artifacts", str(root), "--epochs", str(epochs), "--batch-size", "32", "--quiet"]
    with monkeypatch.context() as patch:
        fail(patch)
        assert main(argv) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"{root / where}: cannot write" in line and "No space left on device" in line
    assert _leftovers(root) == []
    assert not art.metadata_file("model1").exists()
    if where != "models/model1.json":  # the model file is written whole before its metadata, never after
        assert not art.model_file("model1").exists()
    history = art.history_file("model1")
    if history.exists():  # whatever rows it has are whole
        text = history.read_text()
        assert text.endswith("\n") and _history_epochs(art) == list(range(len(text.splitlines()) - 1))

    assert main(argv) == 0  # space again: the run finishes, each epoch once
    assert _history_epochs(art) == list(range(epochs))
    assert RunMetadata.read(art.metadata_file("model1")).training["epochs_run"] == epochs


@pytest.mark.parametrize("content", [b"\xff\xfe\x00 binary", b'key,model,sweep\n"a quote never closed', b"a,b\n1,2\n"])
def test_a_damaged_experiment_table_is_one_line_naming_it(content: bytes, trained: Path, idx: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture):
    root = tmp_path / "art"
    shutil.copytree(trained, root)
    store = Artifacts(root).experiments_file
    store.write_bytes(content)
    assert _report(["--artifacts", str(root), "--out", str(tmp_path / "out")]) == 2
    assert f"{store}: not an experiment table" in _error_line(capsys.readouterr().err, "fmnist-bench report")
    argv = ["sweep", "model1", "--grid", "seed=0", "--epochs", "1", "--batch-size", "32", "--limit", "200",
            "--data", str(idx), "--artifacts", str(root), "--quiet"]
    assert main(argv) == 2
    assert f"{store}: not an experiment table" in _error_line(capsys.readouterr().err)
    assert store.read_bytes() == content  # refused, never overwritten
    assert not (root / "experiments").exists()  # and refused before any training


# --------------------------------------------------------------------------- 5. nothing that failed passes

DIVERGING = ["--lr", "1e30", "--batch-size", "32", "--limit", "300", "--epochs", "1", "--quiet"]


def test_a_diverged_model_fails_in_one_line_is_not_published_and_is_kept_aside(trained: Path, idx: Path, tmp_path: Path,
                                                                                 capsys: pytest.CaptureFixture):
    root = tmp_path / "art"
    shutil.copytree(trained, root)  # model1 trained well before: its published files must stay
    art = Artifacts(root)
    published = {p: p.read_bytes() for p in (art.model_file("model1"), art.metadata_file("model1"),
                                              art.reports_dir / "table1.csv", art.reports_dir / "table1.md")}
    assert main(["model1", "--data", str(idx), "--artifacts", str(root), *DIVERGING]) == 1
    out, err = capsys.readouterr()
    line = _error_line(err)
    (kept,) = (root / "failed").iterdir()
    assert kept.name.startswith("model1-")
    assert f"model1 diverged (loss nan at epoch 1/1): not published; its history and the model as it ended are in {kept}; " \
           "try a lower learning rate than 1e+30 (--lr)" in line
    assert "trained" not in out
    assert {p: p.read_bytes() for p in published} == published  # neither the model nor Table 1 changed

    assert sorted(p.name for p in kept.iterdir()) == ["failure.json", "model1.csv", "model1.keras"]
    history = pd.read_csv(kept / "model1.csv")
    assert list(history["epoch"]) == [0] and history["loss"].isna().all()
    failure = json.loads((kept / "failure.json").read_text())
    assert failure["problem"] == "loss nan at epoch 1/1" and failure["config"]["lr"] == 1e30
    assert not art.history_file("model1").exists() and not art.backup_dir("model1").exists()  # a rerun starts afresh
    assert _leftovers(root) == []


@pytest.mark.slow
def test_a_sweep_records_a_diverged_configuration_as_failed_and_writes_no_row_for_it(idx: Path, tmp_path: Path,
                                                                                     capsys: pytest.CaptureFixture):
    art = Artifacts(tmp_path / "art")
    argv = ["sweep", "model1", "--grid", "lr=1e30,0.001", "--epochs", "1", "--batch-size", "32", "--limit", "200",
            "--data", str(idx), "--artifacts", str(art.root), "--quiet"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    line = _error_line(err)
    diverged = "optimizer=adam lr=1e+30 batch_size=32 seed=0 epochs=1"
    assert f"1 of 2 configuration group(s) failed, no row written for them: {diverged}: model1 diverged (loss nan" in line
    assert f"[sweep] model1 {diverged}: failed: model1 diverged" in out

    rows = experiments.read_experiments(art.experiments_file)
    assert list(rows["lr"]) == [0.001]  # the other configuration ran and has its row; no NaN row
    assert rows[["train_loss", "val_loss", "test_loss", "test_accuracy"]].notna().all().all()
    config = resolve_config("model1", epochs=1, batch_size=32, lr=1e30, limit=200)
    run_dir = Artifacts(experiments.run_dir(art, config, data.load_dataset(idx).limit(200).sha256))
    (kept,) = (run_dir.root / "failed").iterdir()
    assert str(kept) in line and not run_dir.model_file("model1").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["model1", "--base-weights", "{missing}"], "--base-weights applies only to resnet50, vgg16, not to model1"),
        (["model1", "model4", "--base-weights", "imagenet"],
         "--base-weights applies only to resnet50, vgg16, not to model1, model4"),
        (["model1", "--through-base"], "--through-base applies only to resnet50, vgg16, not to model1"),
        (["sweep", "model4", "--grid", "seed=0", "--base-weights", "none"],
         "--base-weights applies only to resnet50, vgg16, not to model4"),
        (["vgg16", "--base-weights", "{missing}"],
         "--base-weights {missing}: no such file; expected auto, imagenet, none or a weights file"),
        (["model1", "vgg16", "--base-weights", "{folder}"], "--base-weights {folder}: is a folder; expected"),
        (["sweep", "resnet50", "--grid", "seed=0", "--base-weights", "{folder}"], "--base-weights {folder}: is a folder"),
        (["model1", "--data", "{missing}"], "--data {missing}: no such file or folder"),
        (["sweep", "model1", "--grid", "seed=0", "--data", "{missing}"], "--data {missing}: no such file or folder"),
        (["model1", "--data", "{file}"], "{file}: unsupported data file"),
        (["model1", "--artifacts", "{file}"], "--artifacts {file}: is a file, not a folder"),
        (["sweep", "model1", "--grid", "seed=0", "--artifacts", "{file}"], "--artifacts {file}: is a file, not a folder"),
    ],
)
def test_an_option_that_does_not_apply_or_names_nothing_is_refused_before_any_work(argv, message, idx: Path, tmp_path: Path,
                                                                                  capsys: pytest.CaptureFixture):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    names = {"{missing}": str(tmp_path / "missing"), "{folder}": str(tmp_path), "{file}": str(a_file)}
    argv = [names.get(a, a) for a in argv]
    message = message.format_map({k.strip("{}"): v for k, v in names.items()})
    root = tmp_path / "art"
    defaults = [*(["--data", str(idx)] if "--data" not in argv else []),
                *(["--artifacts", str(root)] if "--artifacts" not in argv else [])]
    assert main([*argv, *defaults, "--epochs", "1", "--quiet"]) == 2
    assert message in _error_line(capsys.readouterr().err)
    assert not root.exists() and a_file.read_text() == "x"  # refused before the artifacts folder, data or a model
