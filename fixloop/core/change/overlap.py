"""Which lines of which files a change touches, so that two open merge requests never edit the same line.

A change is read either from fixloop's own edits (the file before and after: ``edit_lines``) or from an open
merge request's unified diff as GitLab shows it (``diff_lines``; hunk headers ``@@ -a,b +c,d @@``, GNU diffutils
"Detailed Unified" format). Both give ``Touched``: per path, the line numbers of the file before the change that are
removed or replaced (an insertion touches the line it is inserted before) and the texts of the removed lines.

Two changes ``overlap`` when they touch a common path and share a touched line number or a removed line's text (the
text catches the same pin at a shifted line, when the two were planned on different commits), or when either one's
lines in a common file are unknown (GitLab did not show a large diff: the whole file counts as touched).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass
class FileLines:
    """Lines of one file a change touches: ``numbers`` (1-based, of the file before it), ``removed`` (their
    texts, stripped); ``whole`` when they are unknown (the whole file counts)."""

    numbers: set[int] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    whole: bool = False

    def meets(self, other: FileLines) -> bool:
        if self.whole or other.whole:
            return True
        return bool(self.numbers & other.numbers) or bool(self.removed & other.removed)


Touched = dict[str, FileLines]


def edit_lines(before: str | None, after: str) -> FileLines:
    """The lines of ``before`` that turning it into ``after`` removes or replaces (a new file: line 1)."""
    if before is None:
        return FileLines(numbers={1})
    old, new = before.splitlines(), after.splitlines()
    out = FileLines()
    for tag, i1, i2, _j1, _j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        if i1 == i2:  # an insertion before old line i1 + 1
            out.numbers.add(i1 + 1)
            continue
        out.numbers.update(range(i1 + 1, i2 + 1))
        out.removed.update(line.strip() for line in old[i1:i2] if line.strip())
    return out


def diff_lines(diff: str) -> FileLines:
    """The lines of the old file a unified diff (hunks only, as GitLab's ``diff`` field) removes or replaces; an
    empty or unreadable diff touches the whole file."""
    out = FileLines()
    old_no: int | None = None
    in_run = False  # within a run of removed / added lines that already touched a line
    for line in diff.splitlines():
        m = _HUNK.match(line)
        if m:
            old_no = int(m.group(1)) if m.group(2) != "0" else int(m.group(1)) + 1
            in_run = False
            continue
        if old_no is None or line.startswith("\\"):  # before the first hunk, or "\ No newline at end of file"
            continue
        if line.startswith("-"):
            out.numbers.add(old_no)
            if line[1:].strip():
                out.removed.add(line[1:].strip())
            old_no += 1
            in_run = True
        elif line.startswith("+"):
            if not in_run:  # an insertion before old line old_no
                out.numbers.add(old_no)
                in_run = True
        else:
            old_no += 1
            in_run = False
    if not out.numbers:
        out.whole = True
    return out


def overlap(a: Touched, b: Touched) -> list[str]:
    """The paths where changes ``a`` and ``b`` touch a common line (see the module docstring), sorted."""
    return sorted(p for p in a.keys() & b.keys() if a[p].meets(b[p]))
