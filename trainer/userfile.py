"""Your own Keras models: a model file (``--model-file PATH.py``, docs/train.md) that registers builders as the
six are. **A model file is Python that runs**, with your permissions: give only files you would run yourself.

The file runs as a module of its own; what it registers meanwhile is the user's (trainer/models.py's
``registering_from``), under a name that cannot be one of the six. Each builder is then built once and checked:
one ``(N, 28, 28, 1)`` input, one ``(N, 5)`` softmax output. Anything wrong is a :class:`ModelFileError` naming
the file, and nothing of the file stays registered. Ray workers have not seen the file: :func:`carried` sends
its contents with the task. No Keras import until a file is loaded (trainer/cluster.py imports this module).
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import traceback
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from trainer.artifacts import exception_line
from trainer.catalog import ModelFileError

MAX_FILE_BYTES = 1 << 20  # a model file is source code; a bigger one was not meant
PROBE_IMAGES = 4
SUM_TOLERANCE = 1e-3  # softmax rows sum to 1 in float32 within rounding


@dataclass(frozen=True)
class ModelFile:
    """A model file's contents, as read once on this machine (and sent as such to Ray workers)."""

    path: str
    text: str
    sha256: str

    @property
    def key(self) -> tuple[str, str]:
        return self.path, self.sha256

    @property
    def module_name(self) -> str:
        return f"fmnist_model_file_{self.sha256[:16]}"


# Files run in this process, by key: running one twice would register its models twice.
_LOADED: dict[tuple[str, str], ModelFile] = {}


def load_model_files(paths: Iterable[str | os.PathLike] | None) -> list[str]:
    """Run each model file and check what it registers; returns the names of the models registered.

    Each model is built once and checked now, so a bad builder fails with its file named before the data
    loads; every model of the file is unregistered if one fails."""
    names: list[str] = []
    for path in paths or ():
        model_file = read_model_file(Path(path))
        registered = install(model_file)
        try:
            for name in registered:
                _check_builder(model_file, name)
        except ModelFileError:
            forget(model_file)
            raise
        names += registered
    return names


def read_model_file(path: Path) -> ModelFile:
    shown = f"--model-file {path}"
    if not path.exists():
        raise ModelFileError(f"{shown}: no such file")
    if not path.is_file():
        raise ModelFileError(f"{shown}: not a file")
    if path.suffix != ".py":
        raise ModelFileError(f"{shown}: not a Python file (a model file is a .py file that registers builders)")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ModelFileError(f"{shown}: {size:,} bytes; a model file is source code of at most {MAX_FILE_BYTES:,} bytes")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFileError(f"{shown}: not UTF-8 text") from None
    return ModelFile(str(path.resolve()), text, hashlib.sha256(data).hexdigest())


def install(model_file: ModelFile) -> list[str]:
    """Run ``model_file`` as a module of its own and return the models it registered (once per process)."""
    from trainer import models  # noqa: PLC0415 - Keras only once a model file is given

    if model_file.key in _LOADED:
        return models.registered_from(*model_file.key)
    # A module of its own, importable by name: classes it defines (custom layers) pickle and serialize.
    module = types.ModuleType(model_file.module_name)
    module.__file__ = model_file.path
    sys.modules[model_file.module_name] = module
    try:
        code = compile(model_file.text, model_file.path, "exec")
        with models.registering_from(*model_file.key):  # unregisters what it registered if it fails
            exec(code, module.__dict__)  # noqa: S102 - running the user's own model file is the point
    except ModelFileError:
        raise
    except SyntaxError as exc:
        raise ModelFileError(f"{model_file.path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # whatever the user's code raises: one line, at the file's line
        raise ModelFileError(f"{_where(exc, model_file.path)}: running it failed: {exception_line(exc)}") from None
    finally:
        registered = models.registered_from(*model_file.key)
        if not registered:
            sys.modules.pop(model_file.module_name, None)
    if not registered:
        raise ModelFileError(f"{model_file.path}: registers no model; decorate a builder with @register('NAME') "
                             "(from trainer.models import register)")
    _LOADED[model_file.key] = model_file
    return registered


def _check_builder(model_file: ModelFile, name: str) -> None:
    """Build ``name`` and check its interface: one (N, 28, 28, 1) input, one (N, 5) softmax output."""
    import keras  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from trainer import models  # noqa: PLC0415

    where = f"{model_file.path}: model {name!r}"
    try:
        built = models.create_model(name)
    except Exception as exc:
        raise ModelFileError(f"{_where(exc, model_file.path)}: building {name!r} failed: {exception_line(exc)}") from None
    model = built.model
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"{where}: the builder returned {type(model).__name__}, not a keras.Model")
    spec = models.get_spec(name)
    expected_in, expected_out = (None, *spec.input_shape), (None, spec.num_classes)
    shapes_in = [tuple(t.shape) for t in model.inputs]
    shapes_out = [tuple(t.shape) for t in model.outputs]
    if shapes_in != [expected_in]:
        raise ModelFileError(f"{where}: takes {_shapes(shapes_in)}; expected one input {expected_in} (grey images in [0, 1])")
    if shapes_out != [expected_out]:
        raise ModelFileError(f"{where}: gives {_shapes(shapes_out)}; expected one output {expected_out} (softmax over 5 classes)")
    probe = np.random.default_rng(0).random((PROBE_IMAGES, *spec.input_shape), dtype=np.float32)
    try:
        out = np.asarray(model(probe, training=False), dtype=np.float64)
    except Exception as exc:
        raise ModelFileError(f"{where}: running it on {PROBE_IMAGES} images failed: {exception_line(exc)}") from None
    sums = out.sum(axis=-1)
    if not np.all(np.isfinite(out)) or out.min() < -SUM_TOLERANCE or np.max(np.abs(sums - 1)) > SUM_TOLERANCE:
        raise ModelFileError(f"{where}: its outputs are not softmax probabilities (rows sum to "
                             f"{sums.min():.4g}..{sums.max():.4g}, smallest {out.min():.4g}); "
                             f"end it with Dense({spec.num_classes}, activation='softmax')")


def forget(model_file: ModelFile) -> None:
    """Unregister every model of ``model_file`` (it failed its checks)."""
    from trainer import models  # noqa: PLC0415

    for name in models.registered_from(*model_file.key):
        models.unregister(name)
    _LOADED.pop(model_file.key, None)
    sys.modules.pop(model_file.module_name, None)


def loaded() -> tuple[ModelFile, ...]:
    return tuple(_LOADED.values())


def carried(function: Callable) -> Callable:
    """``function`` as a Ray task that first runs this process's model files on the worker.

    The files' contents travel inside the task (a closure Ray pickles by value), so a worker on another
    machine needs no copy of them; a worker that ran them already (an earlier task) does not run them again.
    Without model files, ``function`` itself."""
    files = loaded()
    if not files:
        return function

    @functools.wraps(function)
    def task(*args, **kwargs):
        for model_file in files:
            install(model_file)
        return function(*args, **kwargs)

    return task


def _where(exc: BaseException, path: str) -> str:
    """``path:LINE`` of the deepest frame of the traceback in the model file, else ``path``."""
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__) if frame.filename == path]
    return f"{path}:{lines[-1]}" if lines else path


def _shapes(shapes: list[tuple]) -> str:
    return ", ".join(map(str, shapes)) if shapes else "nothing"
