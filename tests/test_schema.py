"""trainer/schema.py: the one validator of every JSON record the toolkit writes (run metadata, the export
manifest, bench results), checked against the dataclass or TypedDict that writes it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Required, TypedDict

import pytest

from trainer.schema import check_fields, mismatch


class Section(TypedDict, total=False):
    loss: Required[float]
    names: Required[list[str]]
    note: str


@dataclass
class Record:
    model: str
    batch: int
    section: Section
    times: list[float] | None = None
    extra: dict[str, float] = field(default_factory=dict)


def _row(**change) -> dict:
    return {"model": "m", "batch": 128, "section": {"loss": 0.5, "names": ["a"], "other": object()}, **change}


@pytest.mark.parametrize(("change", "message"), [
    ({"model": 3}, "r.json: record 0 model is a number, expected str"),
    ({"batch": 1.5}, "r.json: record 0 batch is a number, expected a whole number"),
    ({"batch": True}, "r.json: record 0 batch is a boolean, expected a whole number"),
    ({"times": [0.1, float("inf")]}, "r.json: record 0 times[1] is inf, expected a finite number"),
    ({"times": "fast"}, "r.json: record 0 times is a string, expected a list"),
    ({"section": {"loss": 0.5}}, "r.json: record 0 section lacks names"),
    ({"section": {"loss": "low", "names": []}}, "r.json: record 0 section.loss is a string, expected a number"),
    ({"section": {"loss": 1.0, "names": [1]}}, "r.json: record 0 section.names[0] is a number, expected str"),
    ({"extra": {"p50": None}}, "r.json: record 0 extra['p50'] is null, expected a number"),
    ({"speed": 1}, "r.json: record 0 has unknown ['speed']"),
])
def test_a_record_is_refused_in_one_line_naming_the_field(change: dict, message: str):
    with pytest.raises(ValueError) as refused:
        check_fields(_row(**change), Record, "r.json", ValueError, "record 0")
    assert str(refused.value) == message


def test_a_record_of_the_schema_passes_and_missing_fields_are_named():
    check_fields(_row(times=None, extra={"p50": 1}), Record, "r.json")  # optional, None, a whole number for a float
    row = _row()
    del row["batch"], row["section"]
    with pytest.raises(ValueError, match=r"^r.json: lacks \['batch', 'section'\]$"):
        check_fields(row, Record, "r.json")
    with pytest.raises(ValueError, match="lacks \\['times'\\]"):
        check_fields(_row(), Record, "r.json", required=("times",))
    assert mismatch({"loss": 1, "names": []}, Section) is None and mismatch([], Section) == "is a list, expected an object"
