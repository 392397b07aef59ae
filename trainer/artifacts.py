"""Where every command of the toolkit finds and writes its files, and how it writes them.

``--artifacts DIR`` wins, then ``$FMNIST_ARTIFACTS``, then ``artifacts/`` in the current
folder. Imports no TensorFlow (bench uses it on edge machines).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Read once at import: os.umask can only be read by setting it, which is racy once threads run.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class ArtifactsError(OSError):
    """The artifacts folder cannot be used; the message names it."""


def check_folder(path: Path, label: str, make: bool = False, fix: str = "") -> None:
    """Refuse, with one ArtifactsError line naming ``label`` (``--artifacts X`` or ``artifacts folder X``), a
    path that is not a folder; with ``make``, a missing one is fine when nothing but folders stands above it
    (it will be made, or found empty). ``fix`` is said after a missing folder's line."""
    if path.is_dir():
        return
    if path.exists():
        raise ArtifactsError(f"{label}: is a file, not a folder")
    if not make:
        raise ArtifactsError(f"{label}: no such folder" + (f"; {fix}" if fix else ""))
    above = next((p for p in path.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise ArtifactsError(f"{label}: cannot be made: {above} is a file, not a folder")


def check_source(path: Path, label: str) -> None:
    """Refuse, with one ArtifactsError line, a data path that is neither a file nor a folder (which files it
    reads, trainer/data.py says)."""
    if not (path.is_dir() or path.is_file()):
        raise ArtifactsError(f"{label}: {'not a file or folder' if path.exists() else 'no such file or folder'}")


@dataclass(frozen=True)
class Artifacts:
    """The layout of the artifacts folder (documented in artifacts/README.md)."""

    root: Path

    @classmethod
    def at(cls, option: str | os.PathLike | None = None) -> "Artifacts":
        return cls(Path(option if option is not None else os.environ.get("FMNIST_ARTIFACTS") or "artifacts"))

    def model_file(self, name: str) -> Path:
        return self.root / "models" / f"{name}.keras"

    def metadata_file(self, name: str) -> Path:
        return self.root / "models" / f"{name}.json"

    def history_file(self, name: str) -> Path:
        return self.root / "history" / f"{name}.csv"

    def backup_dir(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    def plot_file(self, name: str) -> Path:
        return self.root / "plots" / f"{name}.png"

    def carried_data_dir(self) -> Path:
        """The training data a packed folder carries to a device (``fmnist-bench pack``)."""
        return self.root / "data"

    def features_dir(self) -> Path:
        return self.root / "cache" / "features"

    def lock_file(self, name: str) -> Path:
        """The lock a writer of ``name``'s files holds (trainer/locks.py); a model, or a shared table."""
        return self.root / "locks" / f"{name}.lock"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def experiments_file(self) -> Path:
        """The sweep's rows (trainer/experiments.py reads and writes it)."""
        return self.reports_dir / "experiments.csv"

    @property
    def onnx_dir(self) -> Path:
        return self.root / "onnx"

    def ensure(self, *folders: Path) -> None:
        """Create ``folders`` (the root by default), failing with one line that names the folder when it cannot."""
        for folder in folders or (self.root,):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ArtifactsError(f"artifacts folder {folder}: cannot create it ({exc.strerror})") from None
            if not os.access(folder, os.W_OK):
                raise ArtifactsError(f"artifacts folder {folder}: not writable")


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (same folder: the rename is atomic; same suffixes: Keras insists on
    them); rename it over ``target`` only if the block succeeds. A crash leaves no file that looks finished."""
    target.parent.mkdir(parents=True, exist_ok=True)
    suffixes = "".join(target.suffixes)  # all of them: Keras wants ".weights.h5", not ".h5"
    stem = target.name.removesuffix(suffixes)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffixes}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; finished files get the usual mode
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def writing(target: Path) -> Iterator[None]:
    """Turn an OSError while writing ``target`` (a full disk, a folder gone) into one line that names it; around an
    ``atomic_path`` block, the temporary file is gone by then."""
    try:
        yield
    except ArtifactsError:
        raise
    except OSError as exc:
        raise ArtifactsError(f"{target}: cannot write it ({exc.strerror or clip(str(exc))})") from None


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to about ``limit`` characters, for echoing user input in a one-line error."""
    text = " ".join(str(text).split())  # one line, whatever the input held
    if len(text) <= limit:
        return text
    tail = min(20, limit // 4)
    return f"{text[: limit - tail - 1]}…{text[-tail:]}"


def exception_line(exc: BaseException, limit: int = 200, last: bool = False) -> str:
    """An exception as one line for an error message: its type and its message's first (or ``last``) line, clipped."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {clip(lines[-1] if last else ' '.join(lines), limit)}"


def write_text_atomic(target: Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(target: Path, payload: Any) -> None:
    write_text_atomic(target, json.dumps(payload, indent=2, default=str) + "\n")
