"""``fixloop.core.change.overlap``: the lines a change touches, read from fixloop's own edit and from GitLab's diff of
an
open merge request, agree; two plans on the same pin overlap, plans on neighbouring lines do not."""

from __future__ import annotations

import difflib

from hypothesis import given, settings
from hypothesis import strategies as st

from fixloop.core.change.overlap import FileLines, diff_lines, edit_lines, overlap

REQUIREMENTS = "aiohttp==3.7.4\nDjango==3.2.9\nlxml==4.6.4\nTwisted==18.9.0\nWerkzeug==0.11\n"
# GitLab's diff of the real fix (tests/activities/test_change_mr.py, "python pin")
GITLAB_DIFF = "@@ -2,4 +2,4 @@\n Django==3.2.9\n lxml==4.6.4\n Twisted==18.9.0\n-Werkzeug==0.11\n+Werkzeug==0.15.3\n"


def _gitlab_diff(before: list[str], after: list[str]) -> str:
    """A unified diff as GitLab's ``diff`` field holds it: hunks only, no ``---``/``+++`` header lines."""
    lines = list(difflib.unified_diff(before, after, lineterm="", n=3))
    return "\n".join(lines[2:]) + "\n"


def test_the_same_pin_bumped_to_another_version_overlaps_a_neighbouring_pin_does_not() -> None:
    theirs = {"requirements.txt": diff_lines(GITLAB_DIFF)}
    spoofed = {"requirements.txt": edit_lines(REQUIREMENTS, REQUIREMENTS.replace("Werkzeug==0.11", "Werkzeug==2.2.3"))}
    neighbour = {"requirements.txt": edit_lines(REQUIREMENTS, REQUIREMENTS.replace("Twisted==18.9.0", "Twisted==20"))}
    assert overlap(spoofed, theirs) == ["requirements.txt"]
    assert overlap(neighbour, theirs) == []
    assert overlap(spoofed, {"other/requirements.txt": theirs["requirements.txt"]}) == []


def test_a_shifted_pin_overlaps_by_its_text_and_an_unshown_diff_by_its_file() -> None:
    shifted = "# pinned\n" + REQUIREMENTS  # main gained a line above since the open MR was planned
    mine = {"requirements.txt": edit_lines(shifted, shifted.replace("Werkzeug==0.11", "Werkzeug==2.2.3"))}
    assert overlap(mine, {"requirements.txt": diff_lines(GITLAB_DIFF)}) == ["requirements.txt"]
    assert overlap(mine, {"requirements.txt": FileLines(whole=True)}) == ["requirements.txt"]
    assert diff_lines("").whole  # a diff GitLab does not show: the whole file


LINES = st.lists(st.sampled_from(["a==1", "b==2", "c==3", "d==4", "", "# x"]), max_size=12)


@settings(max_examples=300)
@given(LINES, LINES)
def test_gitlab_s_diff_and_fixloop_s_edit_touch_the_same_lines(before: list[str], after: list[str]) -> None:
    old, new = "\n".join(before) + "\n", "\n".join(after) + "\n"
    mine = edit_lines(old, new)
    theirs = diff_lines(_gitlab_diff(old.splitlines(), new.splitlines()))
    if old == new:
        assert not mine.numbers and theirs.whole
    else:
        assert mine.numbers == theirs.numbers and mine.removed == theirs.removed
