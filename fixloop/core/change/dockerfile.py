"""Dockerfiles: each ``FROM`` instruction, the image it names once the ARG defaults are substituted, and where in
the file an edit of that image goes.

Format (Dockerfile reference, docs.docker.com/reference/dockerfile): parser directives (``# escape=`` changes the
line-continuation character from ``\\``) only before anything else; a line ending in the escape character continues
on the next one, and comment or empty lines inside a continuation are left out; ``FROM [--platform=<p>] <image>
[AS <name>]``, where ``<image>`` may use ``$NAME``, ``${NAME}`` or ``${NAME:-word}`` of an ``ARG`` declared before the
first ``FROM`` (only those reach a ``FROM``), or name an earlier stage (``FROM build AS test``: not an image; stage
names are case-insensitive); ``ARG <name>[=<default>] ...``, a default quoted or not, may itself use the ARGs before
it; ``RUN``/``COPY``/``ADD`` here-documents (``<<EOF`` ... ``EOF``) hold lines that are not instructions.
``COPY --from=<stage or image>`` copies files and has no part in which OS the image runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from fixloop.core.change.ops import PolicyViolation

_MAX_PARTS = 64  # ARG defaults built of other ARGs: beyond this many pieces the image is not resolved
_MAX_IMAGE = 512
_DIRECTIVE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9]*)\s*=\s*(.*?)\s*$")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VAR = re.compile(rf"\$(?:\{{(?P<braced>{_NAME})(?::-(?P<word>[^}}$]*))?\}}|(?P<bare>{_NAME}))")
_ARG_ITEM = re.compile(rf"(?P<name>{_NAME})(?:=(?:\"(?P<dq>[^\"]*)\"|'(?P<sq>[^']*)'|(?P<plain>[^\s\"']*)))?(?=\s|$)")
_HEREDOC = re.compile(r"<<-?([\"']?)([A-Za-z_][A-Za-z0-9_]*)\1")


@dataclass(frozen=True)
class Part:
    """A piece of a resolved image: its ``text``, where those characters are in the file (``start``, ``end``;
    None when they are not written in one run, e.g. across a line continuation) and ``arg``, the ARG whose default
    holds them (None: the FROM line itself)."""

    text: str
    start: int | None
    end: int | None
    arg: str | None = None


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` of a Dockerfile: ``index`` (0-based, in file order: ``BumpBaseImage.stage``), ``line`` (0-based
    line index of the FROM keyword), ``image`` (the reference with the ARG defaults substituted; None when it names an
    earlier stage, ``earlier``, or does not resolve), ``written`` (the reference as the FROM line writes it), ``name``
    (its ``AS`` name) and the ``parts`` the image is made of."""

    index: int
    line: int
    image: str | None
    written: str
    name: str | None = None
    earlier: str | None = None
    parts: tuple[Part, ...] = ()

    @property
    def tag_arg(self) -> str | None:
        """The ARG whose default holds the whole tag (the characters after the last ``:``) of the image, so that
        a new tag changes every stage using it; None when the tag is written on the FROM line, or in no one place."""
        if self.image is None or ":" not in self.image:
            return None
        tag, at = len(self.image) - self.image.rindex(":") - 1, 0
        for part in self.parts:
            at += len(part.text)
            if at > len(self.image) - tag:
                return part.arg if at == len(self.image) and len(part.text) >= tag else None
        return None


@dataclass
class _Instruction:
    keyword: str
    text: str  # the logical line: the instruction's physical lines joined, continuations removed
    offsets: list[int]  # the file offset of each character of ``text``
    line: int


def _escape(text: str) -> str:
    """The line-continuation character: ``\\`` unless an ``# escape=`` parser directive at the top says otherwise."""
    for line in text.splitlines():
        m = _DIRECTIVE.match(line)
        if not m:
            break
        if m.group(1).lower() == "escape" and m.group(2) in ("\\", "`"):
            return m.group(2)
    return "\\"


def _instructions(text: str) -> Iterator[_Instruction]:
    """The instructions of a Dockerfile, each with its logical line and where each of its characters is."""
    continuation = re.compile(re.escape(_escape(text)) + r"[ \t]*$")
    heredocs: list[tuple[str, bool]] = []  # terminators still to skip past, and whether tabs are stripped
    pieces: list[tuple[str, int]] = []
    first = 0
    pos = 0
    for n, raw in enumerate(text.splitlines(keepends=True)):
        start, pos = pos, pos + len(raw)
        body = raw.rstrip("\r\n")
        if heredocs and not pieces:
            word, strip = heredocs[0]
            if (body.lstrip("\t") if strip else body) == word:
                heredocs.pop(0)
            continue
        if not body.strip() or body.lstrip().startswith("#"):
            continue  # an empty or comment line, also inside a continuation
        if not pieces:
            first = n
        m = continuation.search(body)
        pieces.append((body[: m.start()] if m else body, start))
        if m:
            continue
        instruction = _joined(pieces, first)
        pieces = []
        if instruction is None:
            continue
        if instruction.keyword in ("RUN", "COPY", "ADD"):
            heredocs += [(h.group(2), h.group().startswith("<<-")) for h in _HEREDOC.finditer(instruction.text)]
        yield instruction
    if pieces and (instruction := _joined(pieces, first)) is not None:
        yield instruction


def _joined(pieces: list[tuple[str, int]], line: int) -> _Instruction | None:
    text = "".join(p for p, _ in pieces)
    offsets = [start + i for p, start in pieces for i in range(len(p))]
    m = re.match(r"\s*([A-Za-z]+)", text)
    return _Instruction(m.group(1).upper(), text, offsets, line) if m else None


def _span(ins: _Instruction, start: int, end: int) -> tuple[int | None, int | None]:
    """The file span of ``ins.text[start:end]``, None when those characters are not one run of the file."""
    if start == end:
        at = ins.offsets[start - 1] + 1 if start else ins.offsets[0]
        return at, at
    a, b = ins.offsets[start], ins.offsets[end - 1] + 1
    return (a, b) if b - a == end - start else (None, None)


_Args = dict[str, tuple[Part, ...] | None]  # the ARGs declared so far: their defaults' parts, None without one


def _parts(ins: _Instruction, start: int, end: int, args: _Args) -> tuple[Part, ...] | None:
    """``ins.text[start:end]`` as parts, its ARG references replaced by their defaults' parts; None when a reference
    has no value, is of another form than ``$NAME``, ``${NAME}``, ``${NAME:-word}``, or the result is too large."""
    token = ins.text[start:end]
    out: list[Part] = []
    at = 0

    def literal(a: int, b: int) -> None:
        if b > a:
            out.append(Part(token[a:b], *_span(ins, start + a, start + b)))

    for m in _VAR.finditer(token):
        literal(at, m.start())
        at = m.end()
        value = args.get(m.group("braced") or m.group("bare"))
        if value and "".join(p.text for p in value):
            out += value
        elif m.group("word"):
            literal(m.start("word"), m.end("word"))
        else:
            return None
    literal(at, len(token))
    text = "".join(p.text for p in out)
    if "$" in text or len(out) > _MAX_PARTS or len(text) > _MAX_IMAGE:
        return None
    return tuple(out)


def _arg_defaults(ins: _Instruction, args: _Args) -> None:
    """Record each ``name=default`` of an ``ARG`` instruction in ``args`` (a name without a default, or with one
    that does not resolve: None). A single-quoted default is taken as written; the others may use earlier ARGs."""
    keyword = re.match(r"\s*[A-Za-z]+", ins.text)
    assert keyword is not None
    for m in _ARG_ITEM.finditer(ins.text, keyword.end()):
        name = m.group("name")
        group = next((g for g in ("dq", "sq", "plain") if m.group(g) is not None), None)
        if group is None:
            args[name] = None
            continue
        a, b = m.span(group)
        parts = (Part(ins.text[a:b], *_span(ins, a, b)),) if group == "sq" else _parts(ins, a, b, args)
        args[name] = None if parts is None else tuple(Part(p.text, p.start, p.end, p.arg or name) for p in parts)


def stages(text: str) -> list[Stage]:
    """The ``FROM`` instructions of a Dockerfile, in order (see the module's docstring for what is resolved)."""
    args: _Args = {}
    out: list[Stage] = []
    names: set[str] = set()
    for ins in _instructions(text):
        if ins.keyword == "ARG":
            if not out:  # only an ARG before the first FROM reaches a FROM
                _arg_defaults(ins, args)
            continue
        if ins.keyword != "FROM":
            continue
        words = list(re.finditer(r"\S+", ins.text))[1:]
        while words and words[0].group().startswith("--"):
            words.pop(0)
        if not words:
            out.append(Stage(len(out), ins.line, None, ""))
            continue
        token = words[0]
        name = words[2].group() if len(words) >= 3 and words[1].group().upper() == "AS" else None
        parts = _parts(ins, token.start(), token.end(), args)
        image = "".join(p.text for p in parts) if parts else None
        earlier = image if image is not None and image.lower() in names else None
        kept = () if earlier or parts is None else parts
        out.append(Stage(len(out), ins.line, None if earlier else image, token.group(), name, earlier, kept))
        if name:
            names.add(name.lower())
    return out


def edit_image(text: str, path: str, index: int, current: str, new: str) -> tuple[str, str | None]:
    """``text`` with the image of stage ``index`` changed from ``current`` to ``new``, by rewriting only the
    characters that differ where they are written: on the FROM line, or in the default of the ARG it is made of
    (every stage using that ARG then changes with it). ``(new text, that ARG's name or None)``. Raises
    ``PolicyViolation`` naming ``path`` when the stage is missing or is not FROM ``current``, or when the characters
    to change are not written in one place (across an ARG and the FROM line, or across a line continuation)."""
    found = stages(text)
    if index >= len(found):
        raise PolicyViolation(f"has {len(found)} FROM lines, no stage {index}", path)
    stage = found[index]
    if stage.image != current:
        shown = stage.image if stage.image is not None else stage.written
        raise PolicyViolation(f"stage {index} is FROM {shown[:100]!r}, expected {current!r}", path)
    head = 0
    while head < min(len(current), len(new)) and current[head] == new[head]:
        head += 1
    tail = 0
    while tail < min(len(current), len(new)) - head and current[-1 - tail] == new[-1 - tail]:
        tail += 1
    a, b = head, len(current) - tail  # current[a:b] becomes new[a:len(new) - tail]
    at = 0
    for part in stage.parts:
        if at <= a and b <= at + len(part.text):
            break
        at += len(part.text)
    else:
        raise PolicyViolation(f"stage {index}'s image is made of several ARGs; refusing to guess which to change", path)
    if part.start is None:
        raise PolicyViolation(f"stage {index}'s image is written across lines; refusing to edit it", path)
    out = text[: part.start + a - at] + new[a : len(new) - tail] + text[part.start + b - at :]
    after = stages(out)
    if len(after) != len(found) or after[index].image != new:
        raise PolicyViolation(f"the edit of stage {index} does not read back as FROM {new!r}; refusing it", path)
    return out, part.arg
