"""Applying operations to file texts: deterministic, formatting-preserving, and checked.

Every edit first checks that the file holds the operation's ``current`` value, and raises ``PolicyViolation``
naming the file otherwise. Line-oriented formats (Dockerfile, requirements, go.mod) change only the version token;
JSON files (package.json, package-lock.json) are re-serialised the way npm writes them and refused if that would
change anything else; YAML goes through a ``ruamel.yaml`` round-trip that must reproduce the untouched file exactly
(comments, quotes and indentation kept).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from packaging.utils import canonicalize_name
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, ScalarString

from fixloop.change.ops import (
    BumpBaseImage,
    BumpGoModule,
    BumpNpmPackage,
    BumpPythonPin,
    BumpWorkloadImage,
    Operation,
    PolicyViolation,
    SetHelmValue,
)


def apply(ops: Sequence[Operation], read: Callable[[str], str | None]) -> tuple[dict[str, str], list[str]]:
    """Apply ``ops`` in order to the files ``read`` returns; ``({path: new text} of changed files, notes)``.
    Raises ``PolicyViolation`` when a file is missing, does not hold an operation's current value, or cannot be
    edited without reformatting it."""
    texts: dict[str, str] = {}
    originals: dict[str, str] = {}
    notes: list[str] = []
    for op in ops:
        for path in op.paths():
            if path not in texts:
                text = read(path)
                if text is None:
                    raise PolicyViolation("no such file", path)
                texts[path] = originals[path] = text
        if isinstance(op, BumpBaseImage):
            texts[op.path] = edit_dockerfile(texts[op.path], op)
        elif isinstance(op, BumpPythonPin):
            texts[op.path] = edit_requirements(texts[op.path], op)
        elif isinstance(op, BumpGoModule):
            texts[op.path] = edit_gomod(texts[op.path], op)
        elif isinstance(op, BumpNpmPackage):
            if op.direct:
                texts[op.path] = edit_package_json(texts[op.path], op)
            if op.lockfile:
                texts[op.lockfile], lock_notes = edit_package_lock(texts[op.lockfile], op)
                notes += lock_notes
        elif isinstance(op, BumpWorkloadImage):
            texts[op.path] = edit_yaml(texts[op.path], op.path, lambda docs, o=op: _workload_image(docs, o))
        elif isinstance(op, SetHelmValue):
            texts[op.path] = edit_yaml(texts[op.path], op.path, lambda docs, o=op: _helm_value(docs, o))
        else:  # pragma: no cover - the union is closed
            raise PolicyViolation(f"unknown operation {type(op).__name__}")
    return {p: t for p, t in texts.items() if t != originals[p]}, notes


def _lines(text: str) -> Iterator[tuple[int, str, str]]:
    """``(index, line without its end, line end)`` of each line of ``text``."""
    for i, line in enumerate(text.splitlines(keepends=True)):
        body = line.rstrip("\r\n")
        yield i, body, line[len(body) :]


def _replace_lines(text: str, changes: dict[int, str]) -> str:
    out = []
    for i, body, end in _lines(text):
        out.append(changes.get(i, body) + end)
    return "".join(out)


# ---------------------------------------------------------------- Dockerfile

_FROM = re.compile(r"^(?P<lead>\s*FROM\s+)(?P<flags>(?:--\S+\s+)*)(?P<image>[^\s-]\S*)(?P<rest>.*)$", re.I)


def from_lines(text: str) -> list[tuple[int, str]]:
    """``(line index, image)`` of each ``FROM`` of a Dockerfile, in stage order."""
    return [(i, m["image"]) for i, body, _ in _lines(text) if (m := _FROM.match(body))]


def edit_dockerfile(text: str, op: BumpBaseImage) -> str:
    """The ``op.stage``-th FROM's image replaced (``--platform=...`` and ``AS name`` kept)."""
    stages = from_lines(text)
    if op.stage >= len(stages):
        raise PolicyViolation(f"has {len(stages)} FROM lines, no stage {op.stage}", op.path)
    index, image = stages[op.stage]
    if image != op.current:
        raise PolicyViolation(f"stage {op.stage} is FROM {image[:100]!r}, expected {op.current!r}", op.path)
    body = next(b for i, b, _ in _lines(text) if i == index)
    m = _FROM.match(body)
    assert m is not None
    return _replace_lines(text, {index: m["lead"] + m["flags"] + op.new + m["rest"]})


# ---------------------------------------------------------------- requirements*.txt

_PIN = re.compile(
    r"^(?P<lead>\s*)(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)(?P<extras>\s*\[[^\]]*\])?"
    r"(?P<op>\s*===?\s*)(?P<version>[^\s;#,\\]+)(?P<rest>.*)$"
)


def python_pins(text: str) -> list[tuple[int, str, str, str]]:
    """``(line index, name as written, version, rest of line)`` of each ``name==version`` pin."""
    return [(i, m["name"], m["version"], m["rest"]) for i, body, _ in _lines(text) if (m := _PIN.match(body))]


def edit_requirements(text: str, op: BumpPythonPin) -> str:
    """Every ``op.package==op.current`` pin set to ``op.new`` (name case, extras, markers, comments kept)."""
    want = canonicalize_name(op.package)
    changes = {}
    for i, body, _ in _lines(text):
        m = _PIN.match(body)
        if not m or canonicalize_name(m["name"]) != want:
            continue
        if m["version"] != op.current:
            raise PolicyViolation(f"pins {op.package} at {m['version'][:60]!r}, expected {op.current!r}", op.path)
        if "--hash" in m["rest"] or body.rstrip().endswith("\\"):
            raise PolicyViolation(f"{op.package} is pinned with hashes; regenerate the file instead", op.path)
        changes[i] = body[: m.start("version")] + op.new + body[m.end("version") :]
    if not changes:
        raise PolicyViolation(f"does not pin {op.package}", op.path)
    return _replace_lines(text, changes)


# ---------------------------------------------------------------- go.mod

_BLOCK = re.compile(r"^\s*(?P<verb>[a-z]+)\s*\(\s*(//.*)?$")
_REQUIRE_ONE = re.compile(r"^(?P<lead>\s*require\s+)(?P<mod>\S+)(?P<sp>\s+)(?P<ver>v\S+)(?P<rest>.*)$")
_BLOCK_LINE = re.compile(r"^(?P<lead>\s*)(?P<mod>[^\s()/][^\s]*)(?P<sp>\s+)(?P<ver>v\S+)(?P<rest>.*)$")


def go_requires(text: str) -> list[tuple[int, str, str]]:
    """``(line index, module, version)`` of each ``require`` of a go.mod, single-line and block form."""
    found = []
    block: str | None = None
    for i, body, _ in _lines(text):
        if block is not None:
            if body.strip().startswith(")"):
                block = None
            elif block == "require" and (m := _BLOCK_LINE.match(body)):
                found.append((i, m["mod"], m["ver"]))
        elif m := _BLOCK.match(body):
            block = m["verb"]
        elif m := _REQUIRE_ONE.match(body):
            found.append((i, m["mod"], m["ver"]))
    return found


def edit_gomod(text: str, op: BumpGoModule) -> str:
    """The ``require`` of ``op.module`` set to ``op.new`` (``// indirect`` comments kept)."""
    changes = {}
    bodies = {i: b for i, b, _ in _lines(text)}
    for i, module, version in go_requires(text):
        if module != op.module:
            continue
        if version != op.current:
            raise PolicyViolation(f"requires {op.module} {version[:60]!r}, expected {op.current!r}", op.path)
        body = bodies[i]
        m = _REQUIRE_ONE.match(body) or _BLOCK_LINE.match(body)
        assert m is not None
        changes[i] = body[: m.start("ver")] + op.new + body[m.end("ver") :]
    if not changes:
        raise PolicyViolation(f"does not require {op.module}", op.path)
    return _replace_lines(text, changes)


# ---------------------------------------------------------------- package.json / package-lock.json

DEP_SECTIONS = ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies")
_SPEC = re.compile(r"^(?P<op>\^|~|>=|=)?v?(?P<version>[0-9][^\s|]*)$")


def load_npm_json(text: str, path: str) -> tuple[Any, Callable[[Any], str]]:
    """The parsed document and a serialiser that writes it back the way npm does (its indentation, key order,
    trailing newline). Refused when re-serialising the untouched document would not reproduce it byte for byte."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise PolicyViolation(f"is not valid JSON ({str(e)[:80]})", path) from None
    m = re.match(r"[{\[]\r?\n([ \t]+)", text)
    indent = m.group(1) if m else "  "
    newline = "\r\n" if "\r\n" in text else "\n"
    tail = text[len(text.rstrip()) :]

    def dump(obj: Any) -> str:
        out = json.dumps(obj, indent=indent, ensure_ascii=False)
        return (out.replace("\n", newline) if newline != "\n" else out) + tail

    if dump(doc) != text:
        raise PolicyViolation("is not laid out as npm writes it; refusing to reformat it", path)
    return doc, dump


def spec_version(spec: object) -> tuple[str, str] | None:
    """``(operator, version)`` of a simple npm spec (``3.3.9``, ``^3.3.9``, ``~3.3.9``, ``>=3.3.9``), else None."""
    m = _SPEC.match(spec) if isinstance(spec, str) else None
    return (m["op"] or "", m["version"]) if m else None


def edit_package_json(text: str, op: BumpNpmPackage) -> str:
    """The package's spec in every dependency section set to ``op.new`` (its operator kept)."""
    doc, dump = load_npm_json(text, op.path)
    found = False
    for section in DEP_SECTIONS:
        deps = doc.get(section) if isinstance(doc, dict) else None
        if isinstance(deps, dict) and op.package in deps:
            parsed = spec_version(deps[op.package])
            if parsed is None or parsed[1] != op.current:
                raise PolicyViolation(f"{section} has {op.package} {str(deps[op.package])[:60]!r}", op.path)
            deps[op.package] = parsed[0] + op.new
            found = True
    if not found:
        raise PolicyViolation(f"does not depend on {op.package} directly", op.path)
    return dump(doc)


def edit_package_lock(text: str, op: BumpNpmPackage) -> tuple[str, list[str]]:
    """Every lockfile entry of the package at ``op.current`` (``packages["node_modules/<name>"]``, nested ones, and
    the legacy ``dependencies`` tree) moved to ``op.new``: ``version`` and ``resolved`` updated, ``integrity``
    dropped (fixloop cannot compute it without downloading; a note says so), and for a direct dependency the root
    package's spec too."""
    assert op.lockfile is not None
    doc, dump = load_npm_json(text, op.lockfile)
    entries: list[dict[str, Any]] = []
    packages = doc.get("packages") if isinstance(doc, dict) else None
    if isinstance(packages, dict):
        suffix = "node_modules/" + op.package
        for key, entry in packages.items():
            if (key == suffix or key.endswith("/" + suffix)) and isinstance(entry, dict):
                entries.append(entry)
        root = packages.get("")
        if op.direct and isinstance(root, dict):
            for section in DEP_SECTIONS:
                deps = root.get(section)
                if isinstance(deps, dict) and (parsed := spec_version(deps.get(op.package))):
                    deps[op.package] = parsed[0] + op.new
    stack = [doc.get("dependencies")] if isinstance(doc, dict) else []
    while stack:
        deps = stack.pop()
        if not isinstance(deps, dict):
            continue
        for name, entry in deps.items():
            if isinstance(entry, dict):
                if name == op.package:
                    entries.append(entry)
                stack.append(entry.get("dependencies"))
    matching = [e for e in entries if e.get("version") == op.current]
    if not matching:
        raise PolicyViolation(f"has no entry for {op.package} {op.current}", op.lockfile)
    dropped = False
    for entry in matching:
        entry["version"] = op.new
        resolved = entry.get("resolved")
        if isinstance(resolved, str):
            old_tail = f"-{op.current}.tgz"
            if not resolved.endswith(old_tail):
                raise PolicyViolation(f"resolved URL of {op.package} does not end in {old_tail}", op.lockfile)
            entry["resolved"] = resolved[: -len(old_tail)] + f"-{op.new}.tgz"
        if entry.pop("integrity", None) is not None:
            dropped = True
    notes = []
    if dropped:
        notes.append(
            f"{op.lockfile}: the integrity hash of {op.package} was removed (the old one is wrong for {op.new}); "
            "`npm install --package-lock-only` restores it"
        )
    return dump(doc), notes


# ---------------------------------------------------------------- YAML (ruamel round-trip)

_LAYOUTS = ((2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 6, 4), (4, 4, 0))


def _yaml(layout: tuple[int, int, int], explicit_start: bool) -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=layout[0], sequence=layout[1], offset=layout[2])
    yaml.explicit_start = explicit_start
    return yaml


def edit_yaml(text: str, path: str, mutate: Callable[[list[Any]], int]) -> str:
    """``text`` loaded with ``ruamel.yaml`` (round-trip), changed by ``mutate(documents) -> number of values
    changed`` and dumped with the layout that reproduces the untouched file exactly."""
    explicit = text.lstrip().startswith("---")
    for layout in _LAYOUTS:
        yaml = _yaml(layout, explicit)
        try:
            docs = list(yaml.load_all(text))
        except Exception as e:  # ruamel raises many error types on bad input
            raise PolicyViolation(f"is not valid YAML ({str(e)[:80]})", path) from None
        if _dump(yaml, docs) == text:
            break
    else:
        raise PolicyViolation("ruamel.yaml cannot round-trip it unchanged; refusing to reformat it", path)
    if mutate(docs) == 0:
        raise PolicyViolation("holds no value to change", path)
    return _keep_comment_gaps(text, _dump(yaml, docs), path)


_COMMENT = re.compile(r"^(?P<code>.*?\S)(?P<gap>\s+)(?P<comment>#[^'\"]*)$")


def _keep_comment_gaps(before: str, after: str, path: str) -> str:
    """``after`` with each changed line's gap before its end-of-line comment as it was (ruamel keeps the comment's
    column, which shifts it when the value's length changes). Refused if the dump added or removed lines."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    if len(old) != len(new):
        raise PolicyViolation("the YAML round-trip changed more than the value; refusing to reformat it", path)
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        ma, mb = _COMMENT.match(a.rstrip("\r\n")), _COMMENT.match(b.rstrip("\r\n"))
        if a != b and ma and mb and ma["comment"] == mb["comment"]:
            new[i] = mb["code"] + ma["gap"] + mb["comment"] + b[len(b.rstrip("\r\n")) :]
    return "".join(new)


def _dump(yaml: YAML, docs: list[Any]) -> str:
    buf = io.StringIO()
    yaml.dump_all(docs, buf)
    return buf.getvalue()


def _like(old: object, new: str) -> str:
    """``new`` with ``old``'s quoting; quoted when a plain scalar would not read back as a string (``1.10``)."""
    if isinstance(old, ScalarString):
        return type(old)(new)
    if not isinstance(YAML(typ="safe").load(new), str):
        return DoubleQuotedScalarString(new)
    return new


def _walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _workload_image(docs: list[Any], op: BumpWorkloadImage) -> int:
    changed = 0
    for doc in docs:
        for node in _walk(doc):
            if not isinstance(node, dict):
                continue
            images = node.get("images")  # a Kustomization's images: [{name, newTag}]
            for entry in images if isinstance(images, list) else []:
                if isinstance(entry, dict) and entry.get("name") == op.image and "newTag" in entry:
                    if str(entry["newTag"]) != op.current:
                        raise PolicyViolation(f"newTag of {op.image} is {str(entry['newTag'])[:60]!r}", op.path)
                    entry["newTag"] = _like(entry["newTag"], op.new)
                    changed += 1
            image = node.get("image")
            if isinstance(image, str) and image.rsplit(":", 1)[0] == op.image and ":" in image.split("/")[-1]:
                if image != f"{op.image}:{op.current}":
                    raise PolicyViolation(f"image is {image[:100]!r}, expected tag {op.current!r}", op.path)
                node["image"] = _like(image, f"{op.image}:{op.new}")
                changed += 1
    return changed


def _helm_value(docs: list[Any], op: SetHelmValue) -> int:
    node: Any = docs[0] if docs else None
    keys = op.key.split(".")
    for k in keys[:-1]:
        node = node.get(k) if isinstance(node, dict) else None
    if not isinstance(node, dict) or keys[-1] not in node:
        raise PolicyViolation(f"has no value at {op.key}", op.path)
    if str(node[keys[-1]]) != op.current:
        raise PolicyViolation(f"{op.key} is {str(node[keys[-1]])[:60]!r}, expected {op.current!r}", op.path)
    node[keys[-1]] = _like(node[keys[-1]], op.new)
    return 1
