"""Publishing an export all at once: the variants and the manifest appear together, or not at all.

``onnx/`` is a symbolic link to one generation directory in ``onnx.d/``. An export hard-links the live files into
a new generation, writes there, and swaps the link with one ``rename``: a kill at any point leaves the old
generation or the new one, never a new int8 beside an old fp32. Readers resolve the link once (:func:`current`).
One export per ``onnx/`` folder at a time (a lock); a second is told who holds it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from trainer.artifacts import ArtifactsError
from trainer.locks import exclusive


def store_dir(onnx_dir: Path) -> Path:
    return onnx_dir.parent / f"{onnx_dir.name}.d"


def current(onnx_dir: Path) -> Path:
    """The generation ``onnx_dir`` points at now (or ``onnx_dir`` itself in the layout before generations).

    The link is read, not resolved: the generation keeps the user's own path in front (``<artifacts>/onnx.d/gen-...``),
    so :func:`known_as` can turn it back into the name the user knows."""
    return onnx_dir.parent / os.readlink(onnx_dir) if onnx_dir.is_symlink() else onnx_dir


def known_as(folder: Path) -> Path:
    """The name the user knows ``folder`` by: the ``onnx/`` link for a generation (``onnx.d/gen-*``, an internal
    folder no message should send anyone to), else ``folder`` itself. For messages only: a run reads the generation."""
    store = folder.parent
    if folder.name.startswith("gen-") and store.name.endswith(".d"):
        link = store.parent / store.name.removesuffix(".d")
        if link.is_symlink():
            return link
    return folder


@contextlib.contextmanager
def generation(onnx_dir: Path) -> Iterator[Path]:
    """Yield a new generation directory holding the current files; publish it if the block succeeds.

    Write new files into it with a fresh name or after unlinking the old one (the old names are hard
    links shared with the live generation: writing through them would change it in place).
    """
    store = store_dir(onnx_dir)
    with exclusive(store / ".lock", f"the export folder {onnx_dir}"):
        live = _adopt(onnx_dir, store)
        stage = Path(tempfile.mkdtemp(prefix="gen-", dir=store))
        published = False
        try:
            if live is not None:
                for item in live.iterdir():
                    if item.is_file() and not item.name.startswith("."):
                        os.link(item, stage / item.name)
            yield stage
            os.chmod(stage, 0o755)  # mkdtemp makes 0700
            _point(onnx_dir, stage)
            published = True
        finally:
            if not published:
                shutil.rmtree(stage, ignore_errors=True)
        _collect(store, keep={stage.resolve(), *([live.resolve()] if live else [])})


def _adopt(onnx_dir: Path, store: Path) -> Path | None:
    """The live generation; a plain folder from before generations is moved into the store first."""
    if onnx_dir.exists() and not onnx_dir.is_dir():
        raise ArtifactsError(f"artifacts folder {onnx_dir}: exists and is not a folder")
    store.mkdir(parents=True, exist_ok=True)
    if onnx_dir.is_symlink():
        return onnx_dir.resolve() if onnx_dir.exists() else None
    if onnx_dir.is_dir():
        legacy = Path(tempfile.mkdtemp(prefix="gen-", dir=store))
        os.rmdir(legacy)
        os.rename(onnx_dir, legacy)  # a kill right here leaves no onnx/: the next call finds it below
        _point(onnx_dir, legacy)
        return legacy
    generations = [g for g in store.glob("gen-*") if (g / "manifest.json").exists()]
    if generations:  # onnx/ lost between the two steps above: the newest complete generation is the live one
        newest = max(generations, key=lambda g: (g / "manifest.json").stat().st_mtime)
        _point(onnx_dir, newest)
        return newest
    return None


def _point(onnx_dir: Path, target: Path) -> None:
    link = onnx_dir.parent / f".{onnx_dir.name}.link-{os.getpid()}"
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, onnx_dir.parent), link)
    os.replace(link, onnx_dir)  # the one atomic step


def _collect(store: Path, keep: set[Path]) -> None:
    """Remove older generations and stages left by killed exports (we hold the lock: none is being written).

    The previous generation is kept: a bench that resolved the link just before the swap may still read it.
    """
    for old in store.glob("gen-*"):
        if old.is_dir() and old.resolve() not in keep:
            shutil.rmtree(old, ignore_errors=True)
