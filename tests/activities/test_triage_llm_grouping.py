"""The ``llm`` triage engine under the repository's grouping (issue 22), over real HTTP against the local
OpenAI-compatible endpoint: the prompt says how bumps are grouped, a ``per-package`` answer (one package across
artifacts and manifests) is used, a group mixing two packages (or, per manifest, two artifacts) falls back to
``rules``, and the digest still grows with distinct packages, not signals."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from fixloop.activities.triage import triage
from fixloop.core.models import GROUPINGS, Grouping, Signal, WorkItemKind, fingerprint
from fixloop.core.triage import triage_rules, violations
from fixloop.core.triage.grouping import package_name
from tests.activities.test_triage_llm import digest_of, grouped, numbered, partly_used, placed, sensible, settings
from tests.change.shared_pins import scans
from tests.change.test_grouping import NAMES
from tests.conftest import signals
from tests.llm_server import FakeLlm, answer

ALERTS = ("alertmanager/pythonwebhook_k8s_HighPodMemory_firing.json",)


def storm() -> list[Signal]:
    return scans() + [s for rel in ALERTS for s in signals(rel)]


def per_package(body: dict[str, Any]) -> dict[str, Any]:
    """What a good model answers for a per-package repository: the sensible per-artifact answer, with every bump
    regrouped as one group per (ecosystem, package) across artifacts and targets (``grouped``'s form)."""
    doc = digest_of(body)
    base = grouped(body)
    entries = {e["id"]: e for a in doc["artifacts"] for t in a["targets"] for e in t["entries"]}
    by_package: dict[tuple[str, str], list[str]] = defaultdict(list)
    for g in base["groups"]:
        if g["kind"] == "dependency_bump":
            for i in g["entries"]:
                e = entries[i]
                by_package[(e["ecosystem"], package_name(e["ecosystem"], e["package"]))].append(i)
    groups = [g for g in base["groups"] if g["kind"] != "dependency_bump"]
    for (_eco, name), ids in sorted(by_package.items()):
        groups.append({"kind": "dependency_bump", "title": f"LLM: raise {name} everywhere", "entries": ids})
    return {"groups": groups, "unassigned": []}


def system_of(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "system")


async def test_a_per_package_answer_is_one_bump_per_package_across_artifacts(llm_server: FakeLlm) -> None:
    llm_server.reply = lambda body: answer(numbered(body, per_package(body)))
    found = storm()
    result = await triage(found, engine="llm", llm=settings(llm_server), grouping="per-package", names=NAMES)
    assert {w.engine for w in result.work_items} == {"llm"}
    assert sorted(placed(result)) == sorted({s.fingerprint for s in found})
    assert violations(found, result, NAMES) == []
    bumps = [w for w in result.work_items if w.kind is WorkItemKind.DEPENDENCY_BUMP]
    by_rules = triage_rules(found, grouping="per-package").work_items
    rules = [w for w in by_rules if w.kind is WorkItemKind.DEPENDENCY_BUMP]
    assert sorted(sorted(w.signals) for w in bumps) == sorted(sorted(w.signals) for w in rules)  # the same grouping
    jquery = next(w for w in bumps if "jquery" in w.title)
    assert jquery.grouping == "per-package" and jquery.artifact is None and jquery.service is None
    lodash = next(w for w in bumps if "lodash" in w.title)
    assert {p.fixed_version for p in lodash.packages} == {"4.17.20"}  # computed by code: one version everywhere
    prompt = system_of(llm_server.requests[-1].body)
    assert "groups bumps per package" in prompt and "one dependency_bump per package" in prompt
    assert "{bump_rules}" not in prompt


def mix_two_packages(body: dict[str, Any]) -> dict[str, Any]:
    ans = per_package(body)
    bumps = [g for g in ans["groups"] if g["kind"] == "dependency_bump"]
    bumps[0]["entries"] += bumps[1]["entries"]
    ans["groups"].remove(bumps[1])
    return ans


def one_package_across_artifacts(body: dict[str, Any]) -> dict[str, Any]:
    return per_package(body)


@pytest.mark.parametrize(
    ("grouping", "edit", "reason"),
    [
        ("per-package", mix_two_packages, "(dependency_bump) mixes packages "),
        ("per-manifest", one_package_across_artifacts, "(dependency_bump) mixes artifacts "),
        ("per-service", mix_two_packages, "(dependency_bump) mixes "),
    ],
)
async def test_a_group_mixing_unrelated_fixes_goes_to_rules(
    llm_server: FakeLlm, grouping: Grouping, edit: Any, reason: str
) -> None:
    llm_server.reply = lambda body: answer(numbered(body, edit(body)))
    found = storm()
    result = await triage(found, engine="llm", llm=settings(llm_server), grouping=grouping, names=NAMES)
    partly_used(result, found, reason, grouping=grouping, names=NAMES)


async def test_per_service_the_digest_names_each_targets_service(llm_server: FakeLlm) -> None:
    llm_server.reply = lambda body: answer(sensible(body))
    await triage(storm(), engine="llm", llm=settings(llm_server), grouping="per-service", names=NAMES)
    doc = digest_of(llm_server.requests[-1].body)
    services = {t.get("target"): t.get("service") for a in doc["artifacts"] for t in a["targets"]}
    assert services["services/storefront/package-lock.json"] == "storefront"
    assert services["services/payments/requirements.txt"] == "payments"
    assert "groups bumps per service" in system_of(llm_server.requests[-1].body)
    await triage(storm(), engine="llm", llm=settings(llm_server), names=NAMES)  # per manifest: as before
    assert all("service" not in t for a in digest_of(llm_server.requests[-1].body)["artifacts"] for t in a["targets"])


def entries(body: dict[str, Any]) -> int:
    doc = digest_of(body)
    return sum(len(t["entries"]) for a in doc["artifacts"] for t in a["targets"]) + len(doc["alerts"])


@pytest.mark.parametrize("grouping", GROUPINGS)
async def test_the_digest_grows_with_distinct_packages_not_signals(llm_server: FakeLlm, grouping: Grouping) -> None:
    """Ten re-fingerprinted copies of every signal (ten scans of the same manifests, each a new signal) give the
    digest exactly the entries of one copy: one per distinct package version per manifest."""
    llm_server.reply = lambda body: answer(sensible(body))
    found = storm()
    tenfold = [
        s.model_copy(update={"fingerprint": fingerprint("copy", n, s.fingerprint)}) for n in range(10) for s in found
    ]
    assert len({s.fingerprint for s in tenfold}) == 10 * len({s.fingerprint for s in found})
    llm = settings(llm_server)
    await triage(found, engine="llm", llm=llm, grouping=grouping, names=NAMES)
    once = llm_server.requests[-1]
    result = await triage(tenfold, engine="llm", llm=llm, grouping=grouping, names=NAMES)
    ten = llm_server.requests[-1]
    findings = [s for s in found if s.kind == "finding"]
    versions = {(s.artifact, s.target, s.package, s.installed_version, bool(s.fixed_version)) for s in findings}
    windows = len(triage_rules([s for s in found if s.kind == "alert"]).work_items)
    assert entries(ten.body) == entries(once.body) == len(versions) + windows < len(found)
    assert len(ten.raw) - len(once.raw) < len(once.raw) // 10  # only the counts grow (more digits)
    assert sorted(placed(result)) == sorted({s.fingerprint for s in tenfold})
