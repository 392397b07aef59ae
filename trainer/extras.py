"""Which optional part of the install a command needs, said in one line when it is missing.

The base install (``pip install fmnist-edge``) is the bench, for the device a model ships to; training and
export need ``[train]`` (TensorFlow, tf2onnx, ...). The console scripts of those two commands import
TensorFlow at their top, so they ask here first, before any import that would fail with a traceback.
Standard library only.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import NoReturn

# What each extra brings that a command cannot run without (import names, not distribution names).
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("tensorflow", "tf2onnx", "onnxconverter_common", "sympy"),
}
MISSING_EXIT = 2


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here, in the order listed."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def require(extra: str, prog: str) -> None:
    """Exit with one line naming what to install when ``extra`` is not (fully) installed."""
    absent = missing(extra)
    if absent:
        _exit(prog, f"needs the [{extra}] extra ({', '.join(absent)} not installed here); "
                    f"install it with: pip install 'fmnist-edge[{extra}]'")


def _exit(prog: str, message: str) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(MISSING_EXIT)
