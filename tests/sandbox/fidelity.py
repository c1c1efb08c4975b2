"""Comparing a stand-in's response with a recorded real one: same keys, same JSON types.

``shape_mismatches(real, ours)`` walks the recording: every key of a real object must be in ours with the same JSON
type (``null`` in the recording matches anything, as real APIs often omit or null a value); objects are compared
recursively, and the first element of a real array is compared with every element of ours (an empty array on either
side is not compared). ``only=`` limits the keys compared at the top level, for recordings with fields fixloop never
reads (custom fields, agile extras).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "recorded"


def recorded(system: str, name: str) -> Any:
    """The parsed JSON of ``tests/fixtures/recorded/<system>/<name>``."""
    return json.loads((RECORDED / system / name).read_text())


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def shape_mismatches(real: Any, ours: Any, path: str = "$", only: Iterable[str] | None = None) -> list[str]:
    """Where ``ours`` lacks a key of ``real`` or has another JSON type; an empty list when the shapes agree."""
    if real is None:
        return []
    if json_type(real) != json_type(ours):
        return [f"{path}: real is {json_type(real)}, ours is {json_type(ours)}"]
    problems: list[str] = []
    if isinstance(real, dict):
        keys = list(real) if only is None else [k for k in only if k in real]
        for key in keys:
            if key not in ours:
                problems.append(f"{path}.{key}: missing (real has {json_type(real[key])})")
            else:
                problems.extend(shape_mismatches(real[key], ours[key], f"{path}.{key}"))
    elif isinstance(real, list) and real:
        for i, item in enumerate(ours):
            problems.extend(shape_mismatches(real[0], item, f"{path}[{i}]"))
    return problems


def assert_same_shape(real: Any, ours: Any, only: Iterable[str] | None = None) -> None:
    """Fail with every mismatch listed (see ``shape_mismatches``)."""
    problems = shape_mismatches(real, ours, only=only)
    assert not problems, "response differs from the recording:\n" + "\n".join(problems)
