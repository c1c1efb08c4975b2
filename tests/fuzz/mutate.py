"""Hypothesis strategies that mutate real payloads: the fixtures of ``tests/fixtures`` (see its SOURCES.md), changed
the way a careless sender or an attacker would change them.

``mutated(docs)`` draws one fixture and applies one to four mutations to its decoded JSON: a node replaced by an
arbitrary JSON value, a key or element deleted, a list element repeated many times, a scalar wrapped into a list or
an object, a string grown to tens of kilobytes or filled with markup and control characters, a value nested
thousands of levels deep; then, now and then, a byte-level change of the serialized body (truncation, a flipped
byte, an inserted byte). What is drawn is a ``Mutant``: the body's bytes and a readable description of what was done
(hypothesis prints it for a failing example).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

Path = tuple[str | int, ...]

NODES_CONSIDERED = 400  # a mutation picks among at most this many nodes of the document (sampled evenly)
GROWN_BYTES = 2 << 20  # a repeated list or grown string stays near this size (larger bodies have tests of their own)
DEEP = "\u0000fixloop-deep\u0000"  # a placeholder string, replaced by deep nesting after serialization

TRICKY_STRINGS = [
    "",
    " ",
    "x" * 70_000,
    "\u202egnp.exe",
    "\x00\x01\x1b[31m\r\n",
    "\ud7ff\ue000\uffff",
    "[evil|http://evil.example/x] [~admin] {html}<script>alert(1)</script>{html}",
    "h1. heading\n* list\n|| a || b ||",
    "![x](http://evil.example/p.png) [click](javascript:alert(1)) <img src=x onerror=alert(1)>",
    "{{mono}} *bold* _it_ ??cite?? ^sup^ ~sub~",
    "../../../../etc/passwd",
    "$(rm -rf /); `id`",
    "1e999",
    "-1",
    "9" * 400,
    "2022-10-28T07:26:19Z",
    "fixloop/wi-0123456789abcdef01234567",
    "CVE-2021-44228",
    "pkg:pypi/werkzeug@0.11",
]

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(TRICKY_STRINGS)
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@dataclass(frozen=True)
class Mutant:
    body: bytes
    what: str

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        return f"Mutant({self.what}; {len(self.body)} bytes: {self.body[:120]!r}...)"


def nodes(doc: Any, limit: int = NODES_CONSIDERED) -> list[Path]:
    """Paths to the nodes of ``doc`` (breadth first, the root included), at most ``limit`` of them."""
    out: list[Path] = []
    queue: list[tuple[Path, Any]] = [((), doc)]
    while queue and len(out) < limit:
        path, node = queue.pop(0)
        out.append(path)
        if isinstance(node, dict):
            queue.extend(((*path, k), v) for k, v in node.items())
        elif isinstance(node, list):
            queue.extend(((*path, i), v) for i, v in enumerate(node))
    return out


def _get(doc: Any, path: Path) -> Any:
    for part in path:
        doc = doc[part]
    return doc


def _set(doc: Any, path: Path, value: Any) -> Any:
    """``doc`` with the node at ``path`` replaced by ``value`` (the root replaced: ``value`` itself)."""
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


OPERATIONS = ("replace", "delete", "repeat", "wrap", "grow", "tricky", "deep", "deep", "retype")


@st.composite
def _mutate_once(draw: st.DrawFn, doc: Any) -> tuple[Any, str]:
    path = draw(st.sampled_from(nodes(doc)))
    op = draw(st.sampled_from(OPERATIONS))
    node = _get(doc, path)
    where = "/".join(map(str, path)) or "<root>"
    if op == "replace":
        return _set(doc, path, draw(json_values)), f"replace {where}"
    if op == "delete" and path:
        parent = _get(doc, path[:-1])
        del parent[path[-1]]
        return doc, f"delete {where}"
    if op == "repeat" and isinstance(node, list) and node:
        times = min(draw(st.sampled_from([2, 50, 1_000, 20_000])), max(2, GROWN_BYTES // len(json.dumps(node))))
        return _set(doc, path, node * times), f"repeat {where} x{times}"
    if op == "wrap":
        wrapped = draw(st.sampled_from(["list", "object"]))
        return _set(doc, path, [node] if wrapped == "list" else {"value": node}), f"wrap {where} in a {wrapped}"
    if op == "grow" and isinstance(node, str):
        times = min(draw(st.sampled_from([10, 1_000, 20_000])), max(2, GROWN_BYTES // max(1, len(node))))
        return _set(doc, path, (node or "x") * times), f"grow {where} x{times}"
    if op == "tricky":
        return _set(doc, path, draw(st.sampled_from(TRICKY_STRINGS))), f"tricky string at {where}"
    if op == "deep":
        return _set(doc, path, DEEP), f"deep nesting at {where}"
    if op == "retype":
        value = draw(st.sampled_from([None, 0, -1, 1.5, True, "", [], {}, "0", [None], {"": None}]))
        return _set(doc, path, value), f"retype {where} to {value!r}"
    return _set(doc, path, draw(json_values)), f"replace {where}"


def serialize(doc: Any, depth: int) -> bytes:
    """The document as JSON bytes, each ``DEEP`` placeholder replaced by ``depth`` nested arrays."""
    data = json.dumps(doc, ensure_ascii=False).encode()  # the stdlib: integers beyond 64 bits too
    marker = json.dumps(DEEP).encode()
    return data.replace(marker, b"[" * depth + b"1" + b"]" * depth)


@st.composite
def mutated(draw: st.DrawFn, docs: dict[str, Any]) -> Mutant:
    """One real document of ``docs`` (name -> decoded JSON), mutated one to four times, as bytes."""
    name = draw(st.sampled_from(sorted(docs)))
    doc = copy.deepcopy(docs[name])
    done = []
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        doc, what = draw(_mutate_once(doc))
        done.append(what)
    body = serialize(doc, draw(st.sampled_from([960, 500, 100_000, 200, 1_100, 5_000])))
    byte_op = draw(st.sampled_from(["none"] * 8 + ["truncate", "flip", "insert"]))
    if byte_op != "none" and body:
        at = draw(st.integers(min_value=0, max_value=len(body) - 1))
        if byte_op == "truncate":
            body = body[:at]
        elif byte_op == "flip":
            body = body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
        else:
            body = body[:at] + bytes([draw(st.integers(0, 255))]) + body[at:]
        done.append(f"bytes: {byte_op} at {at}")
    return Mutant(body, f"{name}: {', '.join(done)}")
