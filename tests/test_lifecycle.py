"""End of life (issue 22, scope 4): the real container reports of tests/fixtures on ended OS lines become one
``eol_migration`` work item per image, with a named target, from recorded endoflife.date answers and a pinned day;
down or off, the OS items say plainly that the end of life was not checked. The cycle / line boundaries under
hypothesis."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixloop.activities.work_item import issue_description
from fixloop.core.change.facts import Cycle, match_cycle
from fixloop.core.change.versions import newest_on_line
from fixloop.core.lifecycle import Lifecycles, assess, choose_target, describe, reached
from fixloop.core.models import TITLE_MAX, Category, Signal, WorkItemKind
from fixloop.core.triage import os_level, triage, triage_rules
from fixloop.integrations.endoflife import parse_cycles
from tests.conftest import signals
from tests.test_corpus import ALL_INPUTS

RECORDED = Path(__file__).parent / "fixtures" / "recorded" / "endoflife"
# After the newest recording (the API v1 snapshot of 2025-10-18): no line is released after it.
TODAY = date(2025, 11, 1)
V0 = {"ubuntu": "endoflife-rs_api_ubuntu.json", "nodejs": "endoflife-rs_api_nodejs.json"}
V1 = {"debian": "debian", "alpine": "alpine-linux", "centos": "centos", "centos-stream": "centos-stream"}


def recorded_lines() -> dict[str, list[Cycle]]:
    """The recorded release lines of each endoflife.date product (v0 id) fixloop has an answer for."""
    lines = {p: parse_cycles(json.loads((RECORDED / f).read_bytes())) for p, f in V0.items()}
    for product, name in V1.items():
        body = json.loads((RECORDED / f"endoflife-radar_api_v1_{name}.json").read_bytes())
        lines[product] = parse_cycles({"result": body})
    return lines


def recorded(today: date = TODAY) -> Lifecycles:
    return Lifecycles(today=today, lines=recorded_lines())


def os_findings(found: list[Signal]) -> set[str]:
    return {s.fingerprint for s in found if s.category is Category.VULNERABILITY and os_level(s)}


def placed_once(found: list[Signal], result: object) -> None:
    placed = [fp for w in result.work_items for fp in w.signals]  # type: ignore[attr-defined]
    placed += [u.fingerprint for u in result.unassigned]  # type: ignore[attr-defined]
    assert sorted(placed) == sorted({s.fingerprint for s in found})


REPORTS = [
    # report, image, title head, target, OS findings
    (
        "trivy/trivy-0.22-fulldb_centos-7.json",
        "testdata/fixtures/images/centos-7.tar.gz",
        "Migrate CentOS 7.6.1810 (end of life 2024-06-30)",
        "CentOS Stream 9",
        711,
    ),
    (
        "trivy/trivy-head_centos-6.json",
        "testdata/fixtures/images/centos-6.tar.gz",
        "Migrate CentOS 6.10 (end of life 2020-11-30)",
        "CentOS Stream 9",
        2,
    ),
    (
        "trivy/dd-trivy_legacy_many_vulns_debian-10.8.json",
        "debian",
        "Migrate Debian 10.8 (end of life 2022-09-10)",
        "Debian 13 (Trixie)",
        93,
    ),
    (
        "trivy/trivy-0.22-fulldb_alpine-39.json",
        "testdata/fixtures/images/alpine-39.tar.gz",
        "Migrate Alpine 3.9.4 (end of life 2020-11-01)",
        "Alpine 3.22",
        10,
    ),
    (
        "trivy/trivy-0.22-fulldb_distroless-python27.json",
        "testdata/fixtures/images/distroless-python27.tar.gz",
        "Migrate Debian 9.9 (end of life 2020-07-18)",
        "Debian 13 (Trixie)",
        103,
    ),
    (
        "trivy/trivy-0.22-fulldb_ubuntu-1804.json",
        "testdata/fixtures/images/ubuntu-1804.tar.gz",
        "Migrate Ubuntu 18.04 (end of life 2023-05-31)",
        "Ubuntu 22.04 (Jammy Jellyfish)",
        84,
    ),
    (
        "grype/dd-grype-0.28_vulnerable-image.json",
        "vulnerable-image:latest",
        "Migrate Debian 10 (end of life 2022-09-10)",
        "Debian 13 (Trixie)",
        3,
    ),
    (
        "grype/dd-grype-0.7_defectdojo-django-1.13.1.json",
        "defectdojo/defectdojo-django:1.13.1",
        "Migrate Debian 10 (end of life 2022-09-10)",
        "Debian 13 (Trixie)",
        219,
    ),
]


@pytest.mark.parametrize(("report", "image", "head", "target", "count"), REPORTS)
def test_a_real_report_on_an_ended_line_is_one_migration_with_a_named_target(
    report: str, image: str, head: str, target: str, count: int
) -> None:
    found = signals(report)
    result = triage_rules(found, lifecycles=recorded())
    (item,) = [w for w in result.work_items if w.kind is WorkItemKind.EOL_MIGRATION]
    assert set(item.signals) == os_findings(found) and len(item.signals) == count  # fixed and unfixed alike
    assert item.artifact == image and item.eol is not None and item.eol.ended and item.eol.missing is None
    assert item.title.startswith(f"{head} in {image} to {target} (covers ") and len(item.title) <= TITLE_MAX
    assert item.counts is not None and f"(covers {item.counts.text()})" in item.title
    others = [w for w in result.work_items if w is not item]
    assert all(w.kind is not WorkItemKind.OS_REBUILD for w in others)  # no rebuild on the dead line
    assert not [w for w in others if w.kind is WorkItemKind.RISK_DIGEST and w.target is None]  # nor an OS digest
    placed_once(found, result)
    assert f"Move it to {target}" in describe(item.eol) and item.eol.link in describe(item.eol)


def test_centos_7_moves_to_its_successor_and_says_so_on_jira() -> None:
    found = signals("trivy/trivy-0.22-fulldb_centos-7.json")
    (item,) = triage_rules(found, lifecycles=recorded()).work_items
    assert item.eol is not None and item.eol.target is not None
    assert (item.eol.cycle, item.eol.eol, item.eol.target.product, item.eol.target.cycle) == (
        "7",
        date(2024, 6, 30),
        "centos-stream",
        "9",
    )
    text = issue_description("shop", item)
    assert "CentOS 7.6.1810, on the CentOS 7 line, reached its end of life on 2024-06-30" in text
    assert "Move it to CentOS Stream 9, supported until 2027-05-31" in text
    assert "checked on 2025-11-01: https://endoflife.date/centos" in text


def test_centos_6_with_an_end_of_life_finding_and_a_fixed_one_is_one_migration_to_centos_stream_9() -> None:
    """The real CentOS 6.10 golden (issue 22's done-when line): glibc's CVE-2020-29573 marked ``end_of_life`` (no
    fix will come on that line) and openssl's CVE-2019-1559 fixed on it are both closed by the one migration; CentOS
    has no supported line, so the target is its successor's (CentOS Stream), the oldest lasting one on the day."""
    found = signals("trivy/trivy-head_centos-6.json")
    result = triage_rules(found, lifecycles=recorded())
    (item,) = result.work_items
    assert item.kind is WorkItemKind.EOL_MIGRATION and not result.unassigned
    assert sorted(s.fix_status or "" for s in found) == ["end_of_life", "fixed"]
    assert item.eol is not None and item.eol.target is not None
    assert (item.eol.release, item.eol.cycle, item.eol.eol) == ("6.10", "6", date(2020, 11, 30))
    assert (item.eol.target.product, item.eol.target.label, item.eol.target.cycle, item.eol.target.eol) == (
        "centos-stream",
        "CentOS Stream",
        "9",
        date(2027, 5, 31),
    )
    assert item.title == (
        "Migrate CentOS 6.10 (end of life 2020-11-30) in testdata/fixtures/images/centos-6.tar.gz to CentOS Stream 9"
        " (covers 2 CVEs: 2 medium)"
    )
    placed_once(found, result)
    assert sorted(item.signals) == sorted(s.fingerprint for s in found)


@pytest.mark.parametrize(
    "reason",
    [
        "not looked up: endoflife.date unreachable",
        "not looked up: endoflife.date lookups are off (FIXLOOP_ENDOFLIFE_ENABLED)",
    ],
)
def test_down_or_off_the_digest_stays_and_says_it_could_not_check(reason: str) -> None:
    found = signals("trivy/trivy-0.22-fulldb_centos-7.json")
    result = triage_rules(found, lifecycles=Lifecycles(TODAY, {"centos": reason, "centos-stream": reason}))
    kinds = sorted((w.kind.value, len(w.signals)) for w in result.work_items)
    assert kinds == [("os_rebuild", 100), ("risk_digest", 611)]
    assert [w.id for w in result.work_items] == [w.id for w in triage_rules(found).work_items]  # the same loops
    for w in result.work_items:
        assert w.eol is not None and not w.eol.ended and w.eol.missing == reason
        assert f"End of life of CentOS 7.6.1810: not checked ({reason})." in issue_description("shop", w)


def test_a_line_still_supported_on_the_day_keeps_its_items_and_says_until_when() -> None:
    """On 2020-01-01 Debian 10 was supported (until 2022-09-10): the same report gives the digest, not a migration."""
    found = signals("trivy/dd-trivy_legacy_many_vulns_debian-10.8.json")
    (digest,) = triage_rules(found, lifecycles=recorded(date(2020, 1, 1))).work_items
    assert digest.kind is WorkItemKind.RISK_DIGEST and digest.eol is not None and not digest.eol.ended
    supported = "Debian 10.8, on the Debian 10 (Buster) line, is supported until 2022-09-10"
    assert describe(digest.eol).startswith(supported)


def test_every_signal_of_every_fixture_is_placed_once_with_end_of_life_checked() -> None:
    found = [s for rel in ALL_INPUTS for s in signals(rel)]
    result = triage_rules(found, lifecycles=recorded())
    placed_once(found, result)
    migrations = [w for w in result.work_items if w.kind is WorkItemKind.EOL_MIGRATION]
    assert len({w.artifact for w in migrations}) == len(migrations) >= 7  # one per image


async def test_the_llm_engine_gets_migrations_made_by_code_and_never_sees_their_findings() -> None:
    found = signals("grype/dd-grype-0.7_defectdojo-django-1.13.1.json")
    asked: list[str] = []

    async def complete(*, system: str, user: str, schema: type, json_schema: dict | None = None) -> object:
        asked.append(user)
        doc = json.loads(user)
        ids = [e["id"] for a in doc["artifacts"] for t in a["targets"] for e in t["entries"]]
        return schema.model_validate({"assignments": {i: {"unassigned": "ok"} for i in ids}, "groups": []})

    result = await triage(found, engine="llm", complete=complete, max_entries=100, lifecycles=recorded())
    (item,) = result.work_items
    assert item.kind is WorkItemKind.EOL_MIGRATION and item.engine == "rules" and len(item.signals) == 219
    assert "debian 10" not in asked[0] and "python3.6/site-packages" in asked[0]
    placed_once(found, result)

    async def claims(*, system: str, user: str, schema: type, json_schema: dict | None = None) -> object:
        doc = json.loads(user)  # an answer the schema sent would refuse (no eol_migration kind): the checks refuse it
        ids = [e["id"] for a in doc["artifacts"] for t in a["targets"] for e in t["entries"]]
        placed = {i: {"kind": "eol_migration", "group": 1} for i in ids}
        return schema.model_validate({"assignments": placed, "groups": [{"number": 1, "title": "Migrate"}]})

    notes: list[str] = []
    fell_back = await triage(
        found, engine="llm", complete=claims, max_entries=100, lifecycles=recorded(), on_fallback=notes.append
    )
    assert "is an eol_migration: fixloop makes those itself" in notes[0]
    assert [w.id for w in fell_back.work_items] == [w.id for w in triage_rules(found, lifecycles=recorded()).work_items]


# ---------------------------------------------------------------- boundaries

DAYS = st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 1, 1))


@given(DAYS, st.integers(min_value=-800, max_value=800))
def test_an_end_of_life_is_reached_on_its_day_and_after(eol: date, offset: int) -> None:
    today = eol + timedelta(days=offset)
    assert reached(eol, today) is (offset >= 0)
    assert reached(True, today) and not reached(False, today) and not reached(None, today)


LINE = st.tuples(st.integers(0, 30), st.integers(0, 30))


@given(st.lists(LINE, min_size=1, max_size=8, unique=True), LINE, st.integers(0, 30), st.booleans())
def test_a_release_matches_its_own_line_only(
    lines: list[tuple[int, int]], mine: tuple[int, int], patch: int, majors: bool
) -> None:
    """``3.10.4`` is on ``3.10``, never on ``3.1``; when only majors are listed (``10``), ``10.8`` is on ``10``."""
    cycles = [Cycle(cycle=f"{a}.{b}") for a, b in lines] + ([Cycle(cycle=str(a)) for a, _ in lines] if majors else [])
    found = match_cycle(f"{mine[0]}.{mine[1]}.{patch}", cycles)
    if mine in lines:
        assert found is not None and found.cycle == f"{mine[0]}.{mine[1]}"
    elif majors and mine[0] in {a for a, _ in lines}:
        assert found is not None and found.cycle == str(mine[0])
    else:
        assert found is None


@given(
    st.lists(st.tuples(st.integers(1, 40), DAYS, st.one_of(DAYS, st.booleans())), min_size=1, max_size=10),
    st.integers(1, 40),
    DAYS,
)
def test_the_target_is_newer_released_and_supported_on_the_day(
    lines: list[tuple[int, date, date | bool]], mine: int, today: date
) -> None:
    unique = {n: (released, eol) for n, released, eol in lines}
    cycles = [Cycle(cycle=str(n), release_date=released, eol=eol) for n, (released, eol) in unique.items()]
    current = next((c for c in cycles if c.cycle == str(mine)), None)
    target = choose_target(current, cycles, today)
    if target is None:
        return
    assert target.release_date is not None and target.release_date <= today
    assert target.eol is False or (isinstance(target.eol, date) and target.eol > today)
    if current is not None and current.release_date is not None:
        assert target.cycle != current.cycle and target.release_date > current.release_date
    facts = assess("debian", "Debian", str(mine), Lifecycles(today, {"debian": cycles}))
    assert facts.ended is (current is not None and reached(current.eol, today))


SUFFIX = st.sampled_from(["", "-slim", "-alpine", "-bookworm"])


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20), SUFFIX), max_size=12), st.integers(0, 20), SUFFIX)
def test_a_tag_across_lines_stays_on_the_target_line_and_variant(
    tags: list[tuple[int, int, str]], line: int, suffix: str
) -> None:
    listed = [f"{a}.{b}{s}" for a, b, s in tags] + [f"{a}{s}" for a, _, s in tags]
    new = newest_on_line(f"1.2{suffix}", str(line), listed)
    if new is None:
        assert not any(a == line and s == suffix for a, _, s in tags)
        return
    assert new in listed and new.endswith(suffix) and new.split(".")[0].removesuffix(suffix) == str(line)
    assert new.count(".") == 1  # the current tag's precision (two numbers) is listed for that line: it is taken
