"""Which optional part of the install a command needs, said in one line when it is missing.

The base install is the bench; training and export need ``[train]``. Their console scripts import TensorFlow
at their top, so they ask here first, before an import that would fail with a traceback. Standard library only.
"""

from __future__ import annotations

import importlib.util
import sys

# What each extra brings that a command cannot run without (import names, not distribution names).
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("tensorflow", "tf2onnx", "onnxconverter_common", "sympy"),
}


def missing(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here, in the order listed."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def require(extra: str, prog: str) -> None:
    """Exit (status 2) with one line naming what to install when ``extra`` is not (fully) installed."""
    absent = missing(extra)
    if absent:
        print(f"{prog}: error: needs the [{extra}] extra ({', '.join(absent)} not installed here); "
              f"install it with: pip install 'fmnist-edge[{extra}]'", file=sys.stderr)
        raise SystemExit(2)
