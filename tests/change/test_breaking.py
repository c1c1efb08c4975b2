"""Breaking bumps up front, and the policy's ``max_jump``: the demo's Werkzeug 0.11 -> 0.15.3 (a 0.x minor jump) is
called out first in its MR, with the release lines it skips; Celery's advisories planned on PyPI's recorded release
list (``tests/fixtures/recorded/pypi``) under each ``max_jump``, what stays open named in the MR and its plain-text
callouts (the Jira comment); a model's draft that leaves the breaking bump out drops its callout; hostile text
stays inert."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fixloop.core.change import NotLocated, Plan, plan
from fixloop.core.change.draft import keep_operations
from fixloop.core.change.facts import ChangeFacts, Link, PackageRelease
from fixloop.core.change.mr import BREAKING_MARK, TITLE_MAX, callouts, closed_findings, render
from fixloop.core.change.ops import PolicyViolation
from fixloop.core.change.plan import Jump, ReleaseList
from fixloop.core.change.policy import load_policy
from fixloop.core.change.versions import within
from fixloop.core.models import Severity, Signal, WorkItemKind, fingerprint
from fixloop.core.triage import triage_rules
from fixloop.integrations.pypi import parse_versions
from tests.change.helpers import SEED, work_item
from tests.change.markup_checks import markdown_constructs
from tests.conftest import signals

RECORDED = Path(__file__).parents[1] / "fixtures" / "recorded" / "pypi"
CELERY = json.loads((RECORDED / "dependabot-fixtures_pypi_celery.json").read_bytes())  # GET /pypi/celery/json
REQUIREMENTS = "services/worker/requirements.txt"
UNASKED = "not looked up"  # plan() without a release lookup
WERKZEUG_CALLOUT = (
    "> **Breaking:** `Werkzeug` `0.11` \u2192 `0.15.3` is a 0.x minor jump (skips 0.12 by the versions the advisories "
    "name; no release list was read: not looked up): read its release notes before approving."
)


def pypi(listed: dict[str, tuple[str, ...]]):  # noqa: ANN201 - a ReleaseLookup
    asked: list[str] = []

    def lookup(ecosystem: str, package: str) -> ReleaseList:
        asked.append(package)
        return ReleaseList("PyPI", listed.get(package), None if package in listed else "PyPI lists no such project")

    lookup.asked = asked  # type: ignore[attr-defined]
    return lookup


def celery_signals(installed: str = "2.2.7", which: tuple[int, ...] = (0, 1)) -> list[Signal]:
    """Celery's two advisories as a scanner reports them for ``installed`` (the shape of a real Trivy pip finding):
    CVE-2011-4356 (NVD: "Celery 2.1 and 2.2 before 2.2.8, 2.3 before 2.3.4, and 2.4 before 2.4.4": three release
    lines) and CVE-2021-23727 (celery before 5.2.2)."""
    base = signals("trivy/trivy-0.22-fulldb_pip.json")[0]
    advisories = [
        ("CVE-2011-4356", ["2.2.8", "2.3.4", "2.4.4"], Severity.MEDIUM),
        ("CVE-2021-23727", ["5.2.2"], Severity.HIGH),
    ]
    return [
        base.model_copy(
            update={
                "fingerprint": fingerprint("celery", cve, installed),
                "advisory_id": cve,
                "title": f"{cve} in celery {installed}",
                "package": "celery",
                "installed_version": installed,
                "fixed_version": fixed[0],
                "fixed_versions": fixed,
                "severity": severity,
                "url": None,
            }
        )
        for i, (cve, fixed, severity) in enumerate(advisories)
        if i in which
    ]


def planned(found: list[Signal], max_jump: str | None = None, installed: str = "2.2.7", **listed: tuple[str, ...]):  # noqa: ANN201
    (item,) = triage_rules(found).work_items
    repo = {REQUIREMENTS: f"# the worker's pins\ncelery=={installed}\nkombu==1.5.1\n"}
    policy = load_policy(f"max_jump: {max_jump}\n" if max_jump else None)
    lookup = pypi(listed)
    return item, plan(item, found, repo, policy=policy, releases=lookup), lookup


def test_the_demo_payments_bump_is_called_out_first_with_the_lines_the_advisories_name() -> None:
    item, found = work_item("trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP)
    result = plan(item, found, SEED)
    assert isinstance(result, Plan)
    assert result.jumps == [
        Jump(package="Werkzeug", current="0.11", new="0.15.3", kind="0.x minor", skipped=["0.12"], unlisted=UNASKED)
    ]
    mr = render(item, result, found)
    assert mr.description.startswith(WERKZEUG_CALLOUT + "\n\nfixloop work item ")
    assert mr.title == BREAKING_MARK + (
        "Bump Werkzeug 0.11 \u2192 0.15.3 in services/payments (fixes 5 advisories: 1 high, 1 medium, 3 unknown)"
    )
    # the same line in plain text for the Jira comment, the registry's release notes linked when it has them
    facts = ChangeFacts(
        looked_up_on="2026-01-05",
        releases=[
            PackageRelease(
                ecosystem="pypi",
                package="Werkzeug",
                version="0.15.3",
                links=[Link(label="changelog", url="https://werkzeug.palletsprojects.com/changes/")],
            )
        ],
    )
    assert callouts(result, facts, markup=False) == [
        "Breaking: Werkzeug 0.11 \u2192 0.15.3 is a 0.x minor jump (skips 0.12 by the versions the advisories name; "
        "no release list was read: not looked up): read the changelog (https://werkzeug.palletsprojects.com/changes/) "
        "before approving."
    ]
    linked = render(item, result, found, facts=facts).description.splitlines()[0]
    assert linked.endswith(": read the [changelog](https://werkzeug.palletsprojects.com/changes/) before approving.")


def test_a_major_jump_names_the_release_lines_pypi_lists_between() -> None:
    listed = parse_versions(CELERY, "celery")
    item, result, lookup = planned(celery_signals(), celery=listed)
    assert isinstance(result, Plan) and [op.new for op in result.operations] == ["5.2.2"]  # the lowest fixing both
    assert lookup.asked == ["celery"]
    (jump,) = result.jumps
    assert (jump.kind, jump.skipped, jump.registry) == ("major", ["3.x", "4.x"], "PyPI")  # 4.4.0rc5 is no line
    mr = render(item, result, celery_signals())
    assert mr.description.startswith(
        "> **Breaking:** `celery` `2.2.7` \u2192 `5.2.2` is a major jump (skips 3.x and 4.x by PyPI's release list): "
        "read its release notes before approving.\n\n"
    )
    assert mr.title.startswith("Breaking: Bump celery 2.2.7 \u2192 5.2.2 in services/worker (fixes 2 CVEs")
    # no release list: the lines the advisories name (none between 2.x and 5.x), and why
    _, unlisted, _ = planned(celery_signals())
    assert isinstance(unlisted, Plan)
    assert unlisted.jumps[0].skipped == [] and unlisted.jumps[0].unlisted == "PyPI lists no such project"
    said = "(the advisories name no release line between them; no release list was read: PyPI lists no such project)"
    assert said in render(item, unlisted, celery_signals()).description


def test_max_jump_minor_proposes_the_highest_release_of_the_line_and_names_what_stays_open() -> None:
    listed = parse_versions(CELERY, "celery")
    found = celery_signals()
    item, result, _ = planned(found, "minor", celery=listed)
    assert isinstance(result, Plan) and [(op.current, op.new) for op in result.operations] == [("2.2.7", "2.5.5")]
    assert result.jumps == [] and [(h.advisory, h.needs) for h in result.held_back] == [("CVE-2021-23727", "5.2.2")]
    assert [(n.package, n.reason) for n in result.not_fixable] == [
        ("celery", "not fixed within max_jump: minor: CVE-2021-23727 needs 5.2.2")
    ]
    assert result.edits[REQUIREMENTS] == "# the worker's pins\ncelery==2.5.5\nkombu==1.5.1\n"
    mr = render(item, result, found)
    assert mr.title == "Bump celery 2.2.7 \u2192 2.5.5 in services/worker (fixes 1 CVE: 1 medium)"  # no breaking mark
    lines = mr.description.splitlines()
    assert lines[0] == (
        "> **Not fixed within `max_jump: minor`:** `celery`: [CVE-2021-23727](https://nvd.nist.gov/vuln/detail/"
        "CVE-2021-23727) needs `5.2.2`; they stay open on the work item."
    )
    table = [line for line in lines if line.startswith("| [CVE-")]
    assert table == [
        "| [CVE-2011-4356](https://nvd.nist.gov/vuln/detail/CVE-2011-4356) | `celery` | `2.2.7` \u2192 `2.5.5` "
        "| medium |"
    ]
    assert "### Not fixed by this MR\n- `celery`: not fixed within max\\_jump: minor: CVE-2021-23727 needs 5.2.2\n" in (
        mr.description
    )
    assert callouts(result, None, markup=False) == [
        "Not fixed within max_jump: minor: celery: CVE-2021-23727 needs 5.2.2; they stay open on the work item."
    ]


def test_max_jump_patch_stays_on_the_line_and_without_a_list_takes_the_advisories_versions() -> None:
    listed = parse_versions(CELERY, "celery")
    _, patch, _ = planned(celery_signals(), "patch", celery=listed)
    assert isinstance(patch, Plan) and patch.operations[0].new == "2.2.10"  # 2.2's newest: fixed since 2.2.8
    _, line23, _ = planned(celery_signals("2.3.1"), "patch", "2.3.1", celery=listed)
    assert isinstance(line23, Plan) and line23.operations[0].new == "2.3.5"
    _, unlisted, _ = planned(celery_signals(), "minor")  # PyPI unknown: the highest version an advisory names
    assert isinstance(unlisted, Plan) and unlisted.operations[0].new == "2.4.4"


def test_nothing_fixable_within_the_jump_is_no_merge_request_and_says_why() -> None:
    listed = parse_versions(CELERY, "celery")
    item, result, _ = planned(celery_signals("2.5.5", (1,)), "minor", "2.5.5", celery=listed)
    assert isinstance(result, NotLocated)
    assert result.reason == (
        "celery: no version within max_jump: minor fixes any of its advisories: CVE-2021-23727 needs 5.2.2"
    )
    _, major, _ = planned(celery_signals("2.5.5", (1,)), None, "2.5.5", celery=listed)  # the default: today's
    assert isinstance(major, Plan) and major.operations[0].new == "5.2.2"


def test_a_draft_leaving_the_breaking_bump_out_drops_its_callout_and_mark() -> None:
    item, found = work_item("pip-audit/dd-pip-audit_legacy-list-format_many_vulns.json", WorkItemKind.DEPENDENCY_BUMP)
    result = plan(item, found, SEED)
    assert isinstance(result, Plan)
    assert [(j.package, j.kind, j.prerelease) for j in result.jumps] == [("Twisted", "major", True)]
    full = render(item, result, found)
    assert full.description.startswith(
        "> **Breaking:** `Twisted` `18.9.0` \u2192 `20.3.0rc1` is a major jump to a pre-release (skips 19.x by the "
        "versions the advisories name; no release list was read: not looked up): read its release notes before "
        "approving.\n\nfixloop work item "
    )
    kept = keep_operations(result, [op for op in result.operations if op.package != "Twisted"], SEED)  # type: ignore[union-attr]
    text = render(item, kept, found)
    assert text.description.startswith("fixloop work item ") and not text.title.startswith(BREAKING_MARK)


def test_the_callout_is_inert_and_the_mark_only_fits_the_title() -> None:
    item, found = work_item("trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP)
    result = plan(item, found, SEED)
    assert isinstance(result, Plan)
    hostile = Jump(
        package="Werkzeug",
        current="0.11",
        new="0.15.3",
        kind="major",
        skipped=["1.x"],
        registry="<img src=x> [r](javascript:x)",
        unlisted="@all #12 *x*",
    )
    evil = result.model_copy(update={"jumps": [hostile]})
    first = render(item, evil, found).description.splitlines()[0]
    assert first.startswith("> **Breaking:** ")
    prose = first.removeprefix("> **Breaking:** ").replace("`Werkzeug` `0.11` \u2192 `0.15.3`", "")
    assert markdown_constructs(prose) == [], prose
    long = render(item, result, found, drafted_title="x" * (TITLE_MAX - 3))
    assert long.title == "x" * (TITLE_MAX - 3)  # the mark does not fit: the description says it
    marked = render(item, result, found, drafted_title="Breaking change: Werkzeug 0.15")
    assert marked.title == "Breaking change: Werkzeug 0.15"  # never twice


_VERSION = st.one_of(
    st.lists(st.integers(min_value=0, max_value=10**30), min_size=1, max_size=4).map(lambda ns: ".".join(map(str, ns))),
    st.sampled_from(["0.11.16", "0.12", "1.0", "2.0.0rc1", "0.15.3", "v3", "latest", "0.11.6-r0"]),
    st.text(max_size=30),
)


@settings(max_examples=150)
@given(
    fixes=st.lists(st.lists(_VERSION, min_size=1, max_size=3), min_size=5, max_size=5),
    listed=st.none() | st.lists(_VERSION, max_size=40),
    max_jump=st.sampled_from([None, "major", "minor", "patch"]),
)
def test_any_advisory_versions_and_release_list_give_a_plan_within_the_jump_or_a_reason(
    fixes: list[list[str]], listed: list[str] | None, max_jump: str | None
) -> None:
    item, base = work_item("trivy/trivy-0.22-fulldb_pip.json", WorkItemKind.DEPENDENCY_BUMP)
    found = [
        s.model_copy(update={"fixed_versions": f, "fixed_version": f[0]}) for s, f in zip(base, fixes, strict=True)
    ]
    lookup = pypi({"Werkzeug": tuple(listed)} if listed is not None else {})
    try:
        result = plan(item, found, SEED, policy=load_policy(f"max_jump: {max_jump}\n" if max_jump else None),
                      releases=lookup)  # fmt: skip
    except PolicyViolation:  # a version the requirements grammar takes but the file's parse refuses
        return
    if isinstance(result, NotLocated):
        assert result.reason
        return
    (op,) = result.operations
    assert within(max_jump or "major", "0.11", op.new)
    mr = render(item, result, found)
    held = {h.fingerprint for h in result.held_back}
    closed = {s.fingerprint for s, _ in closed_findings(item, result, found)}
    assert closed and not closed & held and closed | held == {s.fingerprint for s in found}
    assert mr.description.startswith("> **") == bool(result.jumps or result.held_back)
