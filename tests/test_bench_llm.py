"""bench/llm.py's adjusted Rand index (the llm triage's agreement with the rules engine's grouping), checked against
values worked out by hand from the contingency table and against its defining properties."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> object:
    spec = importlib.util.spec_from_file_location("bench_llm", ROOT / "bench" / "llm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_llm", module)
    spec.loader.exec_module(module)
    return module


ari = _bench().adjusted_rand_index  # type: ignore[attr-defined]


def test_known_values() -> None:
    assert ari("aabb", "xxyy") == 1.0  # the same partition, other names
    assert ari("aabb", "xyxy") == pytest.approx(-0.5)  # index 0, rows 2, cols 2, pairs 6 -> (0 - 2/3) / (2 - 2/3)
    # a = {1,2,3}{4,5,6}, b = {1,2}{3,4}{5,6}: index 2, rows 6, cols 3, pairs 15 -> (2 - 1.2) / (4.5 - 1.2)
    assert ari("aaabbb", "xxyyzz") == pytest.approx(0.8 / 3.3)
    assert ari("aaaa", "aaaa") == ari("abcd", "wxyz") == 1.0
    with pytest.raises(ValueError, match="3 labels against 2"):
        ari("abc", "ab")


@given(st.lists(st.integers(0, 4), min_size=2, max_size=40), st.data())
def test_symmetric_bounded_and_one_on_relabelling(a: list[int], data: st.DataObject) -> None:
    b = data.draw(st.lists(st.integers(0, 4), min_size=len(a), max_size=len(a)))
    assert ari(a, b) == pytest.approx(ari(b, a))
    assert ari(a, b) <= 1.0 + 1e-9
    assert ari(a, [x + 10 for x in a]) == 1.0
