"""One validator for every JSON file this toolkit writes: the dataclass that writes a record is its schema.

Reading a record back (run metadata, the export manifest, bench results) checks the JSON object against its
dataclass from the type annotations: every field without a default is there, none is unknown, and each value
has the annotated type (numbers finite; ``X | None``, ``list[...]``, ``dict[str, ...]`` and a ``TypedDict``'s
required keys looked into). A damaged or foreign file is one line naming the file, the record and the field,
never a ``KeyError`` or ``TypeError`` later in a table or a figure.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import MISSING, fields
from functools import cache

from trainer.artifacts import clip


def check_fields(row: object, cls: type, source: str, error: type[Exception] = ValueError, what: str = "",
                 required: tuple[str, ...] = ()) -> None:
    """Refuse ``row`` unless it is a JSON object that the dataclass ``cls`` can be built from (with ``required``
    there too, though they have defaults); raises ``error`` with one line that starts with ``source`` (a file)
    and names ``what`` (a record: ``record 3``)."""
    where = f"{source}: {what + ' ' if what else ''}"
    if not isinstance(row, dict):
        raise error(f"{where}is {_kind(row)}, not a JSON object")
    hints = _hints(cls)
    known = {f.name for f in fields(cls)}
    missing = [f.name for f in fields(cls) if f.name not in row and
               (f.name in required or f.default is MISSING and f.default_factory is MISSING)]
    if missing:
        raise error(f"{where}lacks {missing}")
    unknown = sorted(clip(str(key), 40) for key in row if key not in known)
    if unknown:
        raise error(f"{where}has unknown {unknown[:5]}")
    for name, value in row.items():
        problem = mismatch(value, hints[name])
        if problem:
            raise error(f"{where}{name}{_joined(problem)}")


def mismatch(value: object, hint: object) -> str | None:
    """Why ``value`` (read from JSON) is not of the annotated type ``hint``, or None when it is."""
    if hint is typing.Any or hint is object:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [mismatch(value, arg) for arg in args if arg is not type(None)]
        return None if None in problems else problems[0]
    if hint is float or hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (hint is int and not isinstance(value, int)):
            return f"is {_kind(value)}, expected {'a whole number' if hint is int else 'a number'}"
        return None if math.isfinite(value) else f"is {value}, expected a finite number"
    if typing.is_typeddict(hint):  # an object with required keys of known types; other keys are its own business
        if not isinstance(value, dict):
            return f"is {_kind(value)}, expected an object"
        missing = sorted(key for key in _required_keys(hint) if key not in value)
        if missing:
            return f"lacks {', '.join(missing)}"
        for key, sub in _hints(hint).items():
            if key in value and (problem := mismatch(value[key], sub)) is not None:
                return f".{key}{_joined(problem)}"
        return None
    if hint in (str, bool):
        return None if isinstance(value, hint) else f"is {_kind(value)}, expected {hint.__name__}"
    container = origin or hint
    if container in (list, dict):
        if not isinstance(value, container):
            return f"is {_kind(value)}, expected {_kind(container())}"
        items = enumerate(value) if container is list else ((clip(repr(key), 40), item) for key, item in value.items())
        for key, item in (items if args else ()):
            if (problem := mismatch(item, args[-1])) is not None:  # list[item] or dict[key, item]
                return f"[{key}]{_joined(problem)}"
        return None
    raise TypeError(f"check_fields cannot check the annotation {hint!r}")  # a programming error, not bad input


def _joined(problem: str) -> str:
    """``times_s[1] is ...`` and ``test.accuracy is ...``, but ``median_s is ...``: an index or a key follows its
    field without a space."""
    return problem if problem.startswith(("[", ".")) else f" {problem}"


@cache
def _hints(cls: type) -> dict[str, object]:
    return typing.get_type_hints(cls)


@cache
def _required_keys(typed_dict: type) -> frozenset[str]:
    """A TypedDict's required keys from its resolved annotations: ``__required_keys__`` cannot tell them when the
    annotations are strings (``from __future__ import annotations``)."""
    hints = typing.get_type_hints(typed_dict, include_extras=True)
    origins = {key: typing.get_origin(hint) for key, hint in hints.items()}
    return frozenset(key for key, origin in origins.items()
                     if origin is typing.Required or (typed_dict.__total__ and origin is not typing.NotRequired))


_KINDS = {type(None): "null", str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list",
          dict: "an object"}


def _kind(value: object) -> str:
    return _KINDS.get(type(value), type(value).__name__)
