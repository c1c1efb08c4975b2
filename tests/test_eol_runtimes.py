"""End of life of a scanned image's language runtime line (issue 22): an image whose reference names an ended
Python, Node.js or Ruby line (``python:3.7.10-slim``, ``node:12-alpine``, ``cgr.dev/chainguard/ruby:latest-3.0``)
is one ``eol_migration`` to the line ``choose_target`` picks from endoflife.date's answer (recorded:
tests/fixtures/recorded/endoflife/, the pinned day of tests/test_lifecycle.py); its ended OS line rides in the same
item (``eol.also``); a runtime endoflife.date did not answer for (no Ruby recording exists) is said to be not
checked, never guessed. Every signal exactly once.

No real scanner report of a ``python:3.7.10`` or ``node:12`` image exists in the public corpus fixloop draws on:
those tests take a real report and change only its artifact's name (each test says which)."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fixloop.activities.work_item import issue_description
from fixloop.app.ingest import parse_document
from fixloop.core.change.facts import Cycle
from fixloop.core.lifecycle import Lifecycles, choose_target, describe, runtime_line
from fixloop.core.models import EndOfLifeFacts, Signal, WorkItemKind
from fixloop.core.triage import triage_rules
from fixloop.integrations.endoflife import parse_cycles
from tests.conftest import fixture, signals
from tests.test_lifecycle import RECORDED, TODAY, os_findings, placed_once, recorded_lines

PYTHON = RECORDED / "norwegianblue_api_python.json"  # /api/python.json, mid-2022: 3.10 ... 2.7
VULNERABLE_IMAGE = "grype/dd-grype-0.28_vulnerable-image.json"  # Grype, debian 10, 3 OS findings
ALPINE_39 = "trivy/trivy-0.22-fulldb_alpine-39.json"  # Trivy, alpine 3.9.4, 10 OS findings
CHAINGUARD_RUBY = "grype/grype-0.61.1_chainguard-ruby-3.0.json"  # Grype, cgr.dev/chainguard/ruby:latest-3.0


def python_lines() -> list[Cycle]:
    return parse_cycles(json.loads(PYTHON.read_bytes()))


def lifecycles(today: date = TODAY, **lines: list[Cycle] | str) -> Lifecycles:
    """The recorded answers of tests/test_lifecycle.py and Python's, with ``lines`` over them."""
    return Lifecycles(today, {**recorded_lines(), "python": python_lines(), **lines})


def renamed(rel: str, artifact: str) -> list[Signal]:
    """The signals of the real report ``rel`` with only its artifact's name changed to ``artifact`` (Grype's
    ``source.target.userInput``, Trivy's ``ArtifactName``)."""
    doc = json.loads(fixture(rel).read_bytes())
    if "matches" in doc:
        doc["source"]["target"]["userInput"] = artifact
    else:
        doc["ArtifactName"] = artifact
    return parse_document(doc, ref=rel, received_at=signals(rel)[0].observed_at).signals


@pytest.mark.parametrize(
    ("image", "line"),
    [
        ("python:3.7.10-slim", ("python", "Python", "3.7.10")),
        ("docker.io/library/python:3.7.10-slim-buster", ("python", "Python", "3.7.10")),
        ("node:12-alpine", ("nodejs", "Node.js", "12")),
        ("ruby:3.0", ("ruby", "Ruby", "3.0")),
        ("cgr.dev/chainguard/ruby:latest-3.0", ("ruby", "Ruby", "3.0")),
        ("python:3.7@sha256:" + "a" * 64, ("python", "Python", "3.7")),
        ("python:latest", None),
        ("node:lts-alpine", None),  # a word names no line
        ("python", None),
        ("debian:10", None),  # an OS image: its line is the scanned OS's
        ("testdata/fixtures/images/distroless-python27.tar.gz", None),  # an archive names no reference
        (None, None),
    ],
)
def test_the_runtime_line_is_read_from_the_image_reference(image: str | None, line: tuple | None) -> None:
    assert runtime_line(image) == line


@given(st.sampled_from(["python", "node", "ruby"]), st.integers(0, 40), st.integers(0, 40), st.text(max_size=12))
def test_any_runtime_tag_gives_its_version_or_nothing(name: str, major: int, minor: int, rest: str) -> None:
    found = runtime_line(f"{name}:{major}.{minor}{rest}")
    if found is not None:
        assert found[2].startswith(f"{major}.{minor}") and len(found[2]) <= 60
        assert found[0] == {"python": "python", "node": "nodejs", "ruby": "ruby"}[name]


def test_python_3_7_10_slim_is_one_migration_to_python_3_10_with_its_debian_10_line() -> None:
    """The real Grype report of ``vulnerable-image:latest`` (Debian 10; its own Python is 3.8: the site-packages
    paths say so) with only ``source.target.userInput`` changed to ``python:3.7.10-slim``, an image on Debian 10 too.
    Python 3.7 ended on 2023-06-27; on the day, only 3.10 of the recorded (2022) answer is still supported, less
    than ``MIN_SUPPORT_LEFT`` (until 2026-10-04): ``choose_target``'s fallback, the one supported longest. Debian 10
    has ended too: the same ``FROM``, one item, the Debian line in ``eol.also``."""
    found = renamed(VULNERABLE_IMAGE, "python:3.7.10-slim")
    chosen = choose_target(next(c for c in python_lines() if c.cycle == "3.7"), python_lines(), TODAY)
    assert chosen is not None and chosen.cycle == "3.10"
    result = triage_rules(found, lifecycles=lifecycles())
    (item,) = [w for w in result.work_items if w.kind is WorkItemKind.EOL_MIGRATION]
    assert set(item.signals) == os_findings(found) and len(item.signals) == 3
    assert item.artifact == "python:3.7.10-slim" and item.eol is not None and item.eol.target is not None
    assert (item.eol.product, item.eol.release, item.eol.cycle, item.eol.eol) == (
        "python",
        "3.7.10",
        "3.7",
        date(2023, 6, 27),
    )
    target = (item.eol.target.product, item.eol.target.cycle, item.eol.target.eol)
    assert target == ("python", "3.10", date(2026, 10, 4))
    assert item.title.startswith("Migrate Python 3.7.10 (end of life 2023-06-27) in python:3.7.10-slim to Python 3.10")
    also = item.eol.also
    assert also is not None and also.product == "debian" and also.ended and also.also is None
    text = describe(item.eol)
    assert "Python 3.7.10, on the Python 3.7 line, reached its end of life on 2023-06-27" in text
    assert "Move it to Python 3.10, supported until 2026-10-04" in text
    assert "Its OS line: Debian 10 (Buster) reached its end of life on 2022-09-10" in text
    assert "https://endoflife.date/python" in issue_description("shop", item)
    assert not [w for w in result.work_items if w.kind is WorkItemKind.OS_REBUILD]
    placed_once(found, result)


def test_node_12_alpine_is_one_migration_to_node_22() -> None:
    """The real Trivy report of the alpine-39 image (Alpine 3.9.4) with only ``ArtifactName`` changed to
    ``node:12-alpine3.9``, a tag of that Alpine line. Node.js 12 ended on 2022-04-30; the oldest line released and
    supported a year after the day is 22 (until 2027-04-30; 20 ends 2026-04-30, 23 is a short-lived odd one)."""
    found = renamed(ALPINE_39, "node:12-alpine3.9")
    result = triage_rules(found, lifecycles=lifecycles())
    (item,) = result.work_items
    assert item.kind is WorkItemKind.EOL_MIGRATION and len(item.signals) == 10 == len(os_findings(found))
    assert item.eol is not None and item.eol.target is not None
    assert (item.eol.product, item.eol.cycle, item.eol.target.cycle) == ("nodejs", "12", "22")
    assert item.title.startswith("Migrate Node.js 12 (end of life 2022-04-30) in node:12-alpine3.9 to Node.js 22 (")
    assert item.eol.also is not None and (item.eol.also.label, item.eol.also.cycle) == ("Alpine", "3.9")
    placed_once(found, result)


def test_the_real_chainguard_ruby_3_0_report_says_ruby_was_not_checked() -> None:
    """No endoflife.date answer for Ruby is recorded: the real Chainguard report (Wolfi, no OS line endoflife.date
    tracks) keeps its rebuild, which says Ruby 3.0's end of life was not checked, and why; never a guessed one."""
    found = signals(CHAINGUARD_RUBY)
    for missing in ("not looked up: endoflife.date unreachable", "endoflife.date has no product ruby", None):
        lines = lifecycles() if missing is None else lifecycles(ruby=missing)
        result = triage_rules(found, lifecycles=lines)
        assert not [w for w in result.work_items if w.kind is WorkItemKind.EOL_MIGRATION]
        (rebuild,) = [w for w in result.work_items if w.kind is WorkItemKind.OS_REBUILD]
        assert rebuild.eol is not None and (rebuild.eol.product, rebuild.eol.release) == ("ruby", "3.0")
        assert not rebuild.eol.ended and rebuild.eol.target is None
        said = missing or "not looked up"
        assert describe(rebuild.eol) == f"End of life of Ruby 3.0: not checked ({said})."
        placed_once(found, result)


def test_an_unchecked_runtime_on_an_ended_os_line_is_the_os_migration_saying_so() -> None:
    """endoflife.date did not answer for Python: the ended Debian 10 line is the migration, as without a runtime,
    and says Python 3.7.10 was not checked."""
    found = renamed(VULNERABLE_IMAGE, "python:3.7.10-slim")
    result = triage_rules(found, lifecycles=lifecycles(python="not looked up: endoflife.date unreachable"))
    (item,) = [w for w in result.work_items if w.kind is WorkItemKind.EOL_MIGRATION]
    assert item.eol is not None and item.eol.product == "debian" and item.eol.also is not None
    assert item.title.startswith("Migrate Debian 10 (end of life 2022-09-10) in python:3.7.10-slim to Debian 13")
    assert describe(item.eol).endswith(
        "Its runtime line: End of life of Python 3.7.10: not checked (not looked up: endoflife.date unreachable)."
    )
    placed_once(found, result)


def test_supported_lines_keep_their_items_and_say_until_when() -> None:
    """On 2022-07-01 Python 3.7 (until 2023-06-27) and Debian 10 (until 2022-09-10) were supported: no migration."""
    found = renamed(VULNERABLE_IMAGE, "python:3.7.10-slim")
    result = triage_rules(found, lifecycles=lifecycles(date(2022, 7, 1)))
    assert not [w for w in result.work_items if w.kind is WorkItemKind.EOL_MIGRATION]
    (digest,) = [w for w in result.work_items if w.eol is not None]
    assert digest.eol is not None and digest.eol.product == "python" and not digest.eol.ended
    assert describe(digest.eol).startswith("Python 3.7.10, on the Python 3.7 line, is supported until 2023-06-27")
    assert "Its OS line: Debian 10 (Buster) is supported until 2022-09-10" in describe(digest.eol)
    placed_once(found, result)


def test_an_archive_scan_names_no_runtime_line() -> None:
    """The real distroless-python27 report: its Python 2.7 is Debian 9's package (``python2.7-minimal``), patched as
    long as Debian 9 was; the scan names an image archive, no reference: the one migration is Debian 9's."""
    found = signals("trivy/trivy-0.22-fulldb_distroless-python27.json")
    assert any(s.package == "python2.7-minimal" for s in found)
    (item,) = [w for w in triage_rules(found, lifecycles=lifecycles()).work_items]
    assert item.eol is not None and item.eol.product == "debian" and item.eol.also is None


def test_an_images_other_line_has_no_other_line_of_its_own() -> None:
    found = renamed(VULNERABLE_IMAGE, "python:3.7.10-slim")
    (item,) = [w for w in triage_rules(found, lifecycles=lifecycles()).work_items if w.eol is not None]
    assert item.eol is not None and item.eol.also is not None
    with pytest.raises(ValidationError, match="no other line of its own"):  # what a payload may carry: one level
        EndOfLifeFacts.model_validate({**item.eol.model_dump(), "also": item.eol.model_dump()})
