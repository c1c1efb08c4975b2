"""Applying operations to file texts: deterministic, formatting-preserving, and checked.

Every edit first checks that the file holds the operation's ``current`` value, and raises ``PolicyViolation``
naming the file otherwise. Line-oriented formats (requirements, go.mod) change only the version token; a Dockerfile
only the characters of the image that differ, where they are written (the FROM line or an ARG default);
JSON files (package.json, package-lock.json) are re-serialised the way npm writes them and refused if that would
change anything else; YAML goes through a ``ruamel.yaml`` round-trip that must reproduce the untouched file exactly
(comments, quotes and indentation kept). TOML (pyproject.toml, Pipfile) goes through ``tomlkit``, which must write
the untouched file back exactly, and only the pins' strings change: the result must parse (``tomllib``) to the same
document but for them. pom.xml is edited in place, only the version's characters: the POM must stay well-formed with
only the edited element's text changed.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import tomlkit
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, ScalarString
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import String, StringType
from tomlkit.toml_document import TOMLDocument

from fixloop.core.change.dockerfile import edit_image
from fixloop.core.change.ops import (
    BumpBaseImage,
    BumpGoModule,
    BumpMavenDependency,
    BumpNpmPackage,
    BumpPythonPin,
    BumpWorkloadImage,
    FileRemedy,
    Operation,
    PolicyViolation,
    RollbackImage,
    SetHelmValue,
    SetMemory,
    SetReplicas,
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
            texts[op.path], image_notes = edit_dockerfile(texts[op.path], op)
            notes += image_notes
        elif isinstance(op, BumpPythonPin):
            name = op.path.rsplit("/", 1)[-1]
            if name == "pyproject.toml":
                texts[op.path] = edit_pyproject(texts[op.path], op)
            elif name == "Pipfile":
                texts[op.path] = edit_pipfile(texts[op.path], op)
            else:
                texts[op.path] = edit_requirements(texts[op.path], op)
        elif isinstance(op, BumpMavenDependency):
            texts[op.path] = edit_pom(texts[op.path], op)
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


def edit_dockerfile(text: str, op: BumpBaseImage) -> tuple[str, list[str]]:
    """The ``op.stage``-th FROM's image replaced where it is written (``fixloop.core.change.dockerfile``): on the
    FROM line (``--platform=...``, ``AS name`` and line continuations kept), or in the default of the ``ARG`` it
    comes from, with a note that a ``--build-arg`` overrides that default."""
    out, arg = edit_image(text, op.path, op.stage, op.current, op.new)
    if arg is None:
        return out, []
    note = (
        f"{op.path}: the image of stage {op.stage} is the default of ARG {arg}, which is what changed; a build "
        f"that passes --build-arg {arg}=... overrides it and needs the same change"
    )
    return out, [note]


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


def _keep_comment_gaps(before: str, after: str, path: str) -> str:
    """``after`` with each changed line's gap before its end-of-line comment as it was (ruamel keeps the comment's
    column, which shifts it when the value's length changes). Refused if the dump added or removed lines."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    if len(old) != len(new):
        raise PolicyViolation("the YAML round-trip changed more than the value; refusing to reformat it", path)
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        if a != b:
            new[i] = _same_gap(a.rstrip("\r\n"), b.rstrip("\r\n")) + b[len(b.rstrip("\r\n")) :]
    return "".join(new)


def _same_gap(a: str, b: str) -> str:
    """``b`` with the whitespace before its end-of-line comment as in ``a``: the comment is the longest tail starting
    at a ``#`` after whitespace that both lines end with (the changed value, a version or tag, holds no ``#``)."""
    for m in re.finditer(r"(?<=\S)(\s+)#", a):
        tail = a[m.end(1) :]
        if b.endswith(tail) and b[: len(b) - len(tail)].rstrip():
            return b[: len(b) - len(tail)].rstrip() + m.group(1) + tail
    return b


def _dump(yaml: YAML, docs: list[Any]) -> str:
    buf = io.StringIO()
    yaml.dump_all(docs, buf)
    return buf.getvalue()


def _like(old: object, new: str) -> str:
    """``new`` with ``old``'s quoting; quoted when a plain scalar would not read back as a string (``1.10``)."""
    if isinstance(old, ScalarString):
        return type(old)(new)
    if not isinstance(YAML(typ="safe", pure=True).load(new), str):
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
    node: Any = docs[op.document] if op.document < len(docs) else None
    keys = op.key.split(".")
    for k in keys[:-1]:
        node = node.get(k) if isinstance(node, dict) else None
    if not isinstance(node, dict) or keys[-1] not in node:
        raise PolicyViolation(f"has no value at {op.key}", op.path)
    if str(node[keys[-1]]) != op.current:
        raise PolicyViolation(f"{op.key} is {str(node[keys[-1]])[:60]!r}, expected {op.current!r}", op.path)
    node[keys[-1]] = _like(node[keys[-1]], op.new)
    return 1


# ---------------------------------------------------------------- TOML: pyproject.toml (PEP 621, Poetry), Pipfile
#
# PEP 621 (packaging.python.org "pyproject.toml specification"): ``[project] dependencies`` and
# ``[project.optional-dependencies]`` are arrays of PEP 508 requirement strings; PEP 735 ``[dependency-groups]``
# too. Poetry (python-poetry.org/docs/dependency-specification): ``[tool.poetry.dependencies]``,
# ``[tool.poetry.dev-dependencies]`` and ``[tool.poetry.group.<name>.dependencies]`` map a name to a constraint
# string (``"3.8.6"``, ``"^3.8.6"``, ``"~3.8.6"``, ``">=3.8.6"``, ``"==3.8.6"``) or an inline table / sub-table with
# ``version``. Pipfile (github.com/pypa/pipfile): ``[packages]``, ``[dev-packages]`` and other category tables map a
# name to a PEP 440 specifier (``"==3.2.9"``, ``"*"``) or a table with ``version``. The files are read and written
# with ``tomlkit``, which keeps comments, quoting, inline tables, dotted keys and ordering as they are.

_PIPFILE_NOT_PACKAGES = frozenset({"source", "requires", "pipenv", "scripts"})
# One clause naming one version: Poetry's bare/caret/tilde forms and PEP 440's ==, ===, >= and ~=.
_TOML_SPEC = re.compile(r"^\s*(?P<op>===|==|>=|~=|\^|~|=)?\s*(?P<version>[0-9][A-Za-z0-9.+!_-]*)\s*$")
_ONE_LINE = (StringType.SLB, StringType.SLL)


@dataclass(frozen=True)
class TomlPin:
    """One dependency entry of a pyproject.toml or Pipfile: ``name`` as written, ``version`` when its spec names
    one version (a pin or a floor), else None (``*``, a range), ``spec`` as written, ``key`` (its path in the
    document: keys and array indices) and ``offset``, where the version starts in the string."""

    name: str
    version: str | None
    spec: str
    key: tuple[str | int, ...]
    offset: int = 0


def _toml_document(text: str, path: str) -> TOMLDocument:
    """``text`` parsed with ``tomlkit``; ``PolicyViolation`` when it is not valid TOML (checked with ``tomllib``
    too: the stricter reader decides) or ``tomlkit`` would not write it back unchanged."""
    try:
        tomllib.loads(text)
        doc = tomlkit.parse(text)
    except (tomllib.TOMLDecodeError, TOMLKitError) as e:
        raise PolicyViolation(f"is not valid TOML ({str(e)[:80]})", path) from None
    if tomlkit.dumps(doc) != text:
        raise PolicyViolation("tomlkit cannot write it back unchanged; refusing to reformat it", path)
    return doc


def _table(node: object, *keys: str) -> dict[str, Any] | None:
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _plain(item: object) -> String | None:
    """``item`` when it is a one-line string written without escapes (the only strings fixloop edits)."""
    if isinstance(item, String) and item.type in _ONE_LINE and item.as_string()[1:-1] == str(item):
        return item
    return None


def _toml_strings(doc: TOMLDocument, pipfile: bool) -> Iterator[tuple[tuple[str | int, ...], String, str | None]]:
    """``(key path, string, package name or None)`` of each dependency string of the document: a PEP 621 / PEP 735
    requirement (no name: it is in the string), a Poetry constraint or a Pipfile specifier (the name is the key),
    directly or as the ``version`` of a table."""
    arrays: list[tuple[tuple[str, ...], object]] = []
    named: list[tuple[tuple[str, ...], dict[str, Any]]] = []
    if pipfile:
        named = [((k,), v) for k, v in doc.items() if k not in _PIPFILE_NOT_PACKAGES and isinstance(v, dict)]
    else:
        arrays.append((("project", "dependencies"), (_table(doc, "project") or {}).get("dependencies")))
        for section in (("project", "optional-dependencies"), ("dependency-groups",)):
            arrays += [((*section, k), v) for k, v in (_table(doc, *section) or {}).items()]
        poetry = _table(doc, "tool", "poetry") or {}
        for section in ("dependencies", "dev-dependencies"):
            named.append((("tool", "poetry", section), _table(poetry, section) or {}))
        for group, body in (_table(poetry, "group") or {}).items():
            named.append((("tool", "poetry", "group", group, "dependencies"), _table(body, "dependencies") or {}))
    for key, array in arrays:
        for i, item in enumerate(array if isinstance(array, list) else []):
            if (s := _plain(item)) is not None:
                yield (*key, i), s, None
    for key, table in named:
        for name, value in table.items():
            if name == "python" and not pipfile:
                continue
            if (s := _plain(value)) is not None:
                yield (*key, name), s, name
            elif isinstance(value, dict) and (s := _plain(value.get("version"))) is not None:
                yield (*key, name, "version"), s, name


def _pin(key: tuple[str | int, ...], spec: str, name: str | None, pipfile: bool) -> TomlPin | None:
    if name is None:  # a PEP 508 requirement
        try:
            req = Requirement(spec)
        except InvalidRequirement:
            return None
        specs = list(req.specifier)
        if len(specs) == 1 and specs[0].operator in ("==", "===", ">=", "~=") and "*" not in specs[0].version:
            m = re.search(rf"(?:==|>=|~=)=?\s*({re.escape(specs[0].version)})(?=\s*(?:;|,|$|\)))", spec)
            if m:
                return TomlPin(req.name, specs[0].version, spec, key, m.start(1))
        return TomlPin(req.name, None, spec, key)
    m = _TOML_SPEC.match(spec)
    if m is not None and (not pipfile or m["op"] in ("==", "===", ">=", "~=")):
        return TomlPin(name, m["version"], spec, key, m.start("version"))
    return TomlPin(name, None, spec, key)


def _pins(doc: TOMLDocument, path: str) -> list[tuple[TomlPin, String]]:
    pipfile = path.rsplit("/", 1)[-1] == "Pipfile"
    out = []
    for key, string, name in _toml_strings(doc, pipfile):
        if (pin := _pin(key, str(string), name, pipfile)) is not None:
            out.append((pin, string))
    return out


def toml_pins(text: str, path: str) -> list[TomlPin]:
    """The dependency entries of a ``pyproject.toml`` (PEP 621, PEP 735, Poetry) or a ``Pipfile`` (by ``path``'s
    name), section by section, each in file order. Raises ``PolicyViolation`` when the file is not valid TOML."""
    return [pin for pin, _ in _pins(_toml_document(text, path), path)]


def _flatten(node: object, prefix: tuple[object, ...] = ()) -> dict[tuple[object, ...], object]:
    if isinstance(node, dict):
        out: dict[tuple[object, ...], object] = {}
        for k, v in node.items():
            out.update(_flatten(v, (*prefix, k)))
        return out
    if isinstance(node, list):
        out = {}
        for n, v in enumerate(node):
            out.update(_flatten(v, (*prefix, n)))
        return out
    return {prefix: node}


def _set(doc: TOMLDocument, key: tuple[str | int, ...], value: String) -> None:
    node: Any = doc
    for k in key[:-1]:
        node = node[k]
    node[key[-1]] = value


def _edit_toml_pins(text: str, path: str, package: str, current: str, new: str, what: str) -> str:
    doc = _toml_document(text, path)
    want = canonicalize_name(package)
    expected = _flatten(tomllib.loads(text))
    changed = 0
    for pin, string in _pins(doc, path):
        if canonicalize_name(pin.name) != want or pin.version is None:
            continue
        if pin.version != current:
            raise PolicyViolation(f"{what} {package} at {pin.version[:60]!r}, expected {current!r}", path)
        value = str(string)
        if value[pin.offset : pin.offset + len(current)] != current:  # pragma: no cover - _pin found it there
            raise PolicyViolation("the TOML edit does not match the parsed document; refusing it", path)
        value = value[: pin.offset] + new + value[pin.offset + len(current) :]
        _set(doc, pin.key, String(string.type, value, value, string.trivia))
        expected[pin.key] = value
        changed += 1
    if not changed:
        raise PolicyViolation(f"does not pin {package}", path)
    out = tomlkit.dumps(doc)
    # The result must be the same document but for the pins' values (a scanner mistake is refused, never written).
    try:
        after = _flatten(tomllib.loads(out))
    except tomllib.TOMLDecodeError:
        after = {}
    if after != expected:
        raise PolicyViolation("the TOML edit would change more than the pin; refusing it", path)
    return out


def edit_pyproject(text: str, op: BumpPythonPin) -> str:
    """Every PEP 621 / PEP 735 requirement and Poetry constraint of ``op.package`` naming ``op.current`` set to
    ``op.new`` (its operator, extras, markers, quotes and comments kept)."""
    return _edit_toml_pins(text, op.path, op.package, op.current, op.new, "asks for")


def edit_pipfile(text: str, op: BumpPythonPin) -> str:
    """Every Pipfile entry of ``op.package`` pinned (``==``, ``>=``, ``~=``) at ``op.current`` set to ``op.new``."""
    return _edit_toml_pins(text, op.path, op.package, op.current, op.new, "asks for")


def _lock_name_ok(name: object) -> bool:
    return isinstance(name, str) and bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,213}", name))


def python_lock_pins(text: str, path: str) -> dict[str, tuple[str, str]]:
    """``{canonical name: (name as locked, version)}`` of a ``poetry.lock`` / ``uv.lock`` (TOML ``[[package]]``
    name/version) or a ``Pipfile.lock`` (JSON: each category's ``{name: {"version": "==x"}}``); empty when the
    file does not parse. Read only: fixloop never edits these (their hashes need the package manager)."""
    out: dict[str, tuple[str, str]] = {}
    try:
        if path.rsplit("/", 1)[-1] == "Pipfile.lock":
            doc = json.loads(text)
            sections = doc.items() if isinstance(doc, dict) else []
            for category, section in sections:
                if category == "_meta" or not isinstance(section, dict):
                    continue
                for name, entry in section.items():
                    version = entry.get("version") if isinstance(entry, dict) else None
                    if _lock_name_ok(name) and isinstance(version, str) and version.startswith("=="):
                        out.setdefault(canonicalize_name(name), (name, version[2:]))
        else:
            for entry in tomllib.loads(text).get("package") or []:
                name, version = (entry.get("name"), entry.get("version")) if isinstance(entry, dict) else (None, None)
                if _lock_name_ok(name) and isinstance(version, str):
                    out.setdefault(canonicalize_name(name), (name, version))
    except (ValueError, AttributeError):  # json and tomllib errors are ValueErrors
        return {}
    return out


# ---------------------------------------------------------------- pom.xml
#
# POM reference (maven.apache.org/pom.html, maven-4.0.0.xsd): ``<dependency>`` has ``groupId``, ``artifactId`` and
# an optional ``version`` (a version, a range, or a ``${property}`` reference); project ``<properties>`` hold the
# property values; ``<parent>``'s ``relativePath`` defaults to ``../pom.xml``.

_XML_OPAQUE = re.compile(r"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>", re.S)
_XML_TAG = re.compile(r"<(?P<close>/)?(?P<name>[A-Za-z_][\w.:-]*)(?P<attrs>[^<>]*?)(?P<empty>/)?>")
PROPERTY_REF = re.compile(r"^\$\{(?P<name>[A-Za-z_][A-Za-z0-9_.-]{0,127})\}$")


@dataclass
class XmlElement:
    """One element of an XML document: ``path`` of names from the root (``("project", "properties",
    "guava.version")``), the span of its content (``start``, ``end``), its ``parent``'s index, and ``leaf`` (no
    child element)."""

    path: tuple[str, ...]
    start: int
    parent: int | None
    end: int = 0
    leaf: bool = True


def xml_elements(text: str, path: str) -> list[XmlElement]:
    """The elements of a well-formed XML document, in document order. Refused (``PolicyViolation``) when the
    document declares a DOCTYPE or entities (a POM never needs them; they are how XML parsers are attacked) or is
    not well-formed (a stray ``<``, mismatched or unclosed tags)."""
    if re.search(r"<!DOCTYPE|<!ENTITY", text, re.I):
        raise PolicyViolation("declares a DOCTYPE or entities; refusing to read it", path)
    masked = _XML_OPAQUE.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), text)
    elements: list[XmlElement] = []
    stack: list[int] = []
    pos = 0
    for m in _XML_TAG.finditer(masked):
        if "<" in masked[pos : m.start()]:
            raise PolicyViolation("is not well-formed XML (a '<' outside a tag)", path)
        pos = m.end()
        name = m["name"].rsplit(":", 1)[-1]
        if m["close"]:
            if not stack or elements[stack[-1]].path[-1] != name or m["attrs"].strip() or m["empty"]:
                raise PolicyViolation(f"is not well-formed XML (unexpected </{name[:40]}>)", path)
            elements[stack.pop()].end = m.start()
            continue
        parent = stack[-1] if stack else None
        if parent is None and elements:
            raise PolicyViolation("is not well-formed XML (more than one root element)", path)
        if parent is not None:
            elements[parent].leaf = False
        above = elements[parent].path if parent is not None else ()
        elements.append(XmlElement((*above, name), m.end(), parent, m.end()))
        if not m["empty"]:
            stack.append(len(elements) - 1)
    if stack or "<" in masked[pos:]:
        raise PolicyViolation("is not well-formed XML (an element is not closed)", path)
    return elements


def _xml_text(text: str, el: XmlElement) -> tuple[str, int, int]:
    """A leaf element's text stripped, and its span."""
    raw = text[el.start : el.end]
    lead = len(raw) - len(raw.lstrip())
    value = raw.strip()
    return value, el.start + lead, el.start + lead + len(value)


@dataclass(frozen=True)
class PomDependency:
    """A ``<dependency>`` of a POM: ``coordinate`` (``groupId:artifactId``), ``version`` as written (None when it
    has none) and its span, ``managed`` (in ``<dependencyManagement>``), its ``scope`` (None: Maven's ``compile``)
    and ``optional``."""

    coordinate: str
    version: str | None
    start: int
    end: int
    managed: bool
    scope: str | None = None
    optional: bool = False


def pom_dependencies(text: str, path: str) -> list[PomDependency]:
    """Every ``<dependency>`` of a POM (project, ``<dependencyManagement>``, profiles, plugins), in file order."""
    elements = xml_elements(text, path)
    children: dict[int, dict[str, XmlElement]] = {}
    for el in elements:
        if el.parent is not None and el.leaf:
            children.setdefault(el.parent, {}).setdefault(el.path[-1], el)
    out = []
    for n, el in enumerate(elements):
        if el.path[-2:] != ("dependencies", "dependency"):
            continue
        kids = children.get(n, {})
        if "groupId" not in kids or "artifactId" not in kids:
            continue
        group, artifact = _xml_text(text, kids["groupId"])[0], _xml_text(text, kids["artifactId"])[0]
        version, start, end = _xml_text(text, kids["version"]) if "version" in kids else (None, 0, 0)
        scope = _xml_text(text, kids["scope"])[0].strip() or None if "scope" in kids else None
        optional = "optional" in kids and _xml_text(text, kids["optional"])[0].strip() == "true"
        managed = "dependencyManagement" in el.path
        out.append(PomDependency(f"{group}:{artifact}", version, start, end, managed, scope, optional))
    return out


def pom_properties(text: str, path: str) -> dict[str, tuple[str, int, int]]:
    """``{name: (value, start, end)}`` of the project's ``<properties>`` (not a profile's); the first definition of
    a name wins, as in Maven."""
    out: dict[str, tuple[str, int, int]] = {}
    for el in xml_elements(text, path):
        if len(el.path) == 3 and el.path[:2] == ("project", "properties") and el.leaf:
            out.setdefault(el.path[2], _xml_text(text, el))
    return out


def pom_parent(text: str, path: str) -> str | None:
    """The repository path of the POM's parent (``<parent>``'s ``relativePath``, default ``../pom.xml``), or None
    when it has no parent, the parent is not in the repository (``<relativePath/>``), or the path leaves it."""
    elements = xml_elements(text, path)
    if not any(el.path == ("project", "parent") for el in elements):
        return None
    rel = "../pom.xml"
    for el in elements:
        if el.path == ("project", "parent", "relativePath"):
            rel = _xml_text(text, el)[0]
    if not rel:
        return None
    if not rel.endswith(".xml"):
        rel = rel.rstrip("/") + "/pom.xml"
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), rel))
    return None if joined.startswith("../") or joined.startswith("/") or joined == ".." else joined


def edit_pom(text: str, op: BumpMavenDependency) -> str:
    """The ``<version>`` of every ``<dependency>`` of ``op.package`` written as ``op.current`` set to ``op.new``,
    or, with ``op.property``, that project property's value. Nothing else of the file changes."""
    if op.property is not None:
        props = pom_properties(text, op.path)
        if op.property not in props:
            raise PolicyViolation(f"defines no property {op.property}", op.path)
        value, start, end = props[op.property]
        if value != op.current:
            raise PolicyViolation(f"property {op.property} is {value[:60]!r}, expected {op.current!r}", op.path)
        spans = [(start, end)]
    else:
        spans = []
        for dep in pom_dependencies(text, op.path):
            if dep.coordinate != op.package or dep.version is None or PROPERTY_REF.match(dep.version):
                continue
            if dep.version != op.current:
                raise PolicyViolation(f"declares {op.package} {dep.version[:60]!r}, expected {op.current!r}", op.path)
            spans.append((dep.start, dep.end))
        if not spans:
            raise PolicyViolation(f"declares no version of {op.package}", op.path)
    out = text
    for start, end in sorted(spans, reverse=True):
        out = out[:start] + op.new + out[end:]
    before = [(el.path, text[el.start : el.end].strip()) for el in xml_elements(text, op.path) if el.leaf]
    after = [(el.path, out[el.start : el.end].strip()) for el in xml_elements(out, op.path) if el.leaf]
    changed = [b for a, b in zip(before, after, strict=False) if a != b]
    if len(before) != len(after) or len(changed) != len(spans) or any(v != op.new for _, v in changed):
        raise PolicyViolation("the POM edit would change more than the version; refusing it", op.path)
    return out


# ---------------------------------------------------------------- YAML values edited in place (incident operations)
#
# Real manifests mix sequence indentations (``containers:`` at one offset, ``env:`` at another) that no single
# ruamel layout reproduces, so the incident operations do not dump the document: ruamel's round-trip loader finds
# each value's line and column, only that scalar's characters are replaced (its quoting kept), and the result must
# load (safe loader) to the same documents but for the changed values.

_WORKLOAD_KINDS = ("Deployment", "StatefulSet")
_KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


@dataclass(frozen=True)
class YamlChange:
    """One scalar of a YAML file to change: its ``document`` (0-based) and ``where`` in it (keys and list indices),
    the value the file must hold (``current``, compared as text), the value to write (``new``) and what it is, for
    messages (``label``)."""

    document: int
    where: tuple[str | int, ...]
    current: str
    new: str | int
    label: str


def _get(node: Any, where: Sequence[str | int]) -> Any:
    for k in where:
        if isinstance(node, dict) and isinstance(k, str) and k in node:
            node = node[k]
        elif isinstance(node, list) and isinstance(k, int) and 0 <= k < len(node):
            node = node[k]
        else:
            return None
    return node


def _scalar_end(body: str, col: int, flow: bool, path: str, label: str) -> int:
    """The end (exclusive) of the scalar starting at ``col`` of the line ``body``."""
    quote = body[col : col + 1]
    if quote == '"':
        i = col + 1
        while i < len(body):
            if body[i] == "\\":
                i += 2
                continue
            if body[i] == '"':
                return i + 1
            i += 1
    elif quote == "'":
        i = col + 1
        while i < len(body):
            if body[i] == "'":
                if body[i + 1 : i + 2] == "'":
                    i += 2
                    continue
                return i + 1
            i += 1
    elif quote in ("|", ">", "&", "*", "!"):
        raise PolicyViolation(f"{label} is a block scalar, anchor, alias or tagged value; refusing to edit it", path)
    else:
        stop = re.compile(r"\s#|[,\]}]" if flow else r"\s#").search(body, col)
        end = stop.start() if stop else len(body)
        while end > col and body[end - 1] in " \t":
            end -= 1
        return end
    raise PolicyViolation(f"{label} is a multi-line scalar; refusing to edit it", path)


def _token(old_token: str, new: str | int) -> str:
    """``new`` written as ``old_token`` was: in the same quotes, or plain when it reads back as the same type."""
    text = str(new)
    if old_token.startswith('"'):
        return f'"{text}"'
    if old_token.startswith("'"):
        return f"'{text}'"
    loaded = YAML(typ="safe", pure=True).load(text)
    if isinstance(new, int) or isinstance(loaded, str):
        return text
    return f'"{text}"'


def edit_yaml_values(text: str, path: str, find: Callable[[list[Any]], list[YamlChange]]) -> str:
    """``text`` with the scalars ``find(round-trip documents)`` names replaced in place. Raises ``PolicyViolation``
    when the file is not YAML, a value is not the expected one (or not a plain, single-line scalar), or the result
    would load to anything but the same documents with those values changed."""
    yaml = YAML()
    yaml.preserve_quotes = True
    try:
        docs = list(yaml.load_all(text))
        before = list(YAML(typ="safe", pure=True).load_all(text))
    except Exception as e:  # ruamel raises many error types on bad input
        raise PolicyViolation(f"is not valid YAML ({str(e)[:80]})", path) from None
    changes = find(docs)
    if not changes:
        raise PolicyViolation("holds no value to change", path)
    lines = text.splitlines(keepends=True)
    spots = []
    for ch in changes:
        parent, key = _get(docs[ch.document], ch.where[:-1]), ch.where[-1]
        old = _get(parent, [key])
        if old is None or isinstance(old, (dict, list)):
            raise PolicyViolation(f"{ch.label} is not a value", path)
        if str(old) != ch.current:
            raise PolicyViolation(f"{ch.label} is {str(old)[:60]!r}, expected {ch.current!r}", path)
        line, col = parent.lc.value(key) if isinstance(parent, dict) else parent.lc.item(key)
        flow = bool(parent.fa.flow_style())
        spots.append((line, col, flow, ch))
    expected = before
    for line, col, flow, ch in sorted(spots, key=lambda s: (s[0], s[1]), reverse=True):
        body = lines[line].rstrip("\r\n")
        end = _scalar_end(body, col, flow, path, ch.label)
        token = _token(body[col:end], ch.new)
        lines[line] = body[:col] + token + body[end:] + lines[line][len(body) :]
        target = _get(expected[ch.document], ch.where[:-1])
        target[ch.where[-1]] = YAML(typ="safe", pure=True).load(token)
    out = "".join(lines)
    try:
        after = list(YAML(typ="safe", pure=True).load_all(out))
    except Exception as e:  # ruamel raises many error types on bad input
        raise PolicyViolation(f"does not parse after the change ({str(e)[:80]})", path) from None
    if after != expected:
        raise PolicyViolation("the YAML edit would change more than the values; refusing it", path)
    return out


def _is_kustomization(doc: Any, path: str) -> bool:
    return path.rsplit("/", 1)[-1] in _KUSTOMIZATION_FILES or (
        isinstance(doc, dict) and doc.get("kind") == "Kustomization"
    )


def _workloads(docs: list[Any], op: Any) -> list[int]:
    found = [
        i
        for i, doc in enumerate(docs)
        if isinstance(doc, dict)
        and doc.get("kind") in _WORKLOAD_KINDS
        and str(doc.get("apiVersion", "")).startswith("apps/")
        and _get(doc, ["metadata", "name"]) == op.workload
    ]
    if not found:
        raise PolicyViolation(f"declares no Deployment or StatefulSet named {op.workload}", op.path)
    if len(found) > 1:
        raise PolicyViolation(f"declares {len(found)} workloads named {op.workload}; refusing to guess", op.path)
    return found


def _container_at(docs: list[Any], op: Any) -> tuple[int, tuple[str | int, ...]]:
    """``(document, path)`` of the ``op.container`` entry of the pod template of ``op.workload``."""
    (i,) = _workloads(docs, op)
    containers = _get(docs[i], ["spec", "template", "spec", "containers"])
    hits = [n for n, c in enumerate(containers or []) if isinstance(c, dict) and c.get("name") == op.container]
    if len(hits) != 1:
        raise PolicyViolation(f"{op.workload} has no container {op.container}", op.path)
    return i, ("spec", "template", "spec", "containers", hits[0])


def _values_at(docs: list[Any], op: Any) -> tuple[int, tuple[str, ...]]:
    if op.document >= len(docs) or not isinstance(docs[op.document], dict):
        raise PolicyViolation(f"has no document {op.document} holding values", op.path)
    return op.document, tuple(op.values_key.split("."))


def image_site(docs: list[Any], op: Any) -> tuple[YamlChange, str | None]:
    """Where the image tag of ``op`` (a ``RollbackImage``, or anything with its target fields) is: a change whose
    ``current`` is the whole scalar as the file holds it (``new`` unset: the scalar again), and the repository
    prefix (``repo:``) the tag follows in a manifest's ``image:``, None where the scalar is the tag alone."""
    if op.values_key is not None:
        doc, where = _values_at(docs, op)
        value = _get(docs[doc], where)
        if value is None or isinstance(value, (dict, list)):
            raise PolicyViolation(f"has no value at {op.values_key}", op.path)
        return YamlChange(doc, where, str(value), str(value), op.values_key), None
    if _is_kustomization(docs[0] if docs else None, op.path):
        if op.image is None:
            raise PolicyViolation("a Kustomization's images: entry needs the image name", op.path)
        images = _get(docs[0], ["images"]) if docs else None
        hits = [n for n, e in enumerate(images or []) if isinstance(e, dict) and e.get("name") == op.image]
        if len(hits) != 1 or "newTag" not in images[hits[0]]:
            raise PolicyViolation(f"has no images: entry for {op.image} with a newTag", op.path)
        tag = str(images[hits[0]]["newTag"])
        return YamlChange(0, ("images", hits[0], "newTag"), tag, tag, f"newTag of {op.image}"), None
    doc, at = _container_at(docs, op)
    image = _get(docs[doc], (*at, "image"))
    label = f"image of {op.workload}/{op.container}"
    if not isinstance(image, str) or "@" in image or ":" not in image.rsplit("/", 1)[-1]:
        raise PolicyViolation(f"{label} is {str(image)[:100]!r}: not a repository:tag reference", op.path)
    repo = image.rsplit(":", 1)[0]
    if op.image is not None and repo != op.image:
        raise PolicyViolation(f"{label} is {image[:100]!r}, not of {op.image}", op.path)
    return YamlChange(doc, (*at, "image"), image, image, label), repo + ":"


def _remedy_changes(docs: list[Any], op: FileRemedy) -> list[YamlChange]:
    if isinstance(op, RollbackImage):
        site, prefix = image_site(docs, op)
        return [
            YamlChange(site.document, site.where, (prefix or "") + op.from_tag, (prefix or "") + op.to_tag, site.label)
        ]
    if isinstance(op, SetMemory):
        if op.values_key is not None:
            doc, base = _values_at(docs, op)
            label = op.values_key
        else:
            doc, at = _container_at(docs, op)
            base, label = (*at, "resources"), f"resources of {op.workload}/{op.container}"
        limit = _get(docs[doc], (*base, "limits", "memory"))
        request = _get(docs[doc], (*base, "requests", "memory"))
        if limit is None:
            raise PolicyViolation(f"{label} sets no limits.memory", op.path)
        out = [YamlChange(doc, (*base, "limits", "memory"), op.current_limit, op.limit, f"{label}.limits.memory")]
        if (request is None) != (op.current_request is None):
            shown = "none" if request is None else repr(str(request)[:60])
            want = "none" if op.current_request is None else repr(op.current_request)
            raise PolicyViolation(f"{label}.requests.memory is {shown}, expected {want}", op.path)
        if op.current_request is not None and op.request is not None:
            where = (*base, "requests", "memory")
            out.append(YamlChange(doc, where, op.current_request, op.request, f"{label}.requests.memory"))
        return out
    if op.values_key is not None:
        doc, where = _values_at(docs, op)
        label: str = op.values_key
    elif isinstance(op, SetReplicas):
        (doc,) = _workloads(docs, op)
        where, label = ("spec", "replicas"), f"spec.replicas of {op.workload}"
    else:
        hpas = [
            i
            for i, d in enumerate(docs)
            if isinstance(d, dict)
            and d.get("kind") == "HorizontalPodAutoscaler"
            and _get(d, ["spec", "scaleTargetRef", "name"]) == op.workload
            and _get(d, ["spec", "scaleTargetRef", "kind"]) in _WORKLOAD_KINDS
        ]
        if len(hpas) != 1:
            raise PolicyViolation(f"declares no HorizontalPodAutoscaler of {op.workload}", op.path)
        doc, where, label = hpas[0], ("spec", "maxReplicas"), f"spec.maxReplicas of the HPA of {op.workload}"
    if _get(docs[doc], where) is None:
        raise PolicyViolation(f"sets no {label}", op.path)
    new = op.replicas if isinstance(op, SetReplicas) else op.max_replicas
    return [YamlChange(doc, where, str(op.current), new, label)]


def edit_remedy(text: str, op: FileRemedy) -> str:
    """``text`` (the file ``op.path``) with ``op`` applied in place (see ``edit_yaml_values``). Raises
    ``PolicyViolation`` naming the file when it does not hold ``op``'s current values or the edit would change
    anything else."""
    return edit_yaml_values(text, op.path, lambda docs: _remedy_changes(docs, op))


def image_tag(text: str, op: Any) -> str | None:
    """The tag ``text`` gives the image of ``op`` (a ``RollbackImage``, or any object with its ``path``,
    ``workload``, ``container``, ``image``, ``values_key`` and ``document``): the container's ``image:``, the
    Kustomization's ``newTag``, the Helm value; None when the file does not hold it (missing, not YAML, another
    form)."""
    try:
        docs = list(YAML().load_all(text))
        site, prefix = image_site(docs, op)
    except Exception:  # PolicyViolation for a missing site, ruamel's errors for a text that is not YAML
        return None
    if prefix is None:
        return site.current
    return site.current[len(prefix) :] if site.current.startswith(prefix) else None
