"""The grouping policy end to end on the sandbox (issue 22): the triage activity reads ``grouping:`` from the GitOps
repository's ``fixloop.yaml`` (GitLab), and each ``per-package`` work item is one merge request, opened by the real
``change.plan`` and ``gitlab.open_merge_request`` activities, with every manifest's diff as GitLab shows it; without
the key the result is today's (``per-manifest``). The repository is the seeded one with packages pinned in several
services (``tests.change.shared_pins``)."""

from __future__ import annotations

from temporalio.testing import ActivityEnvironment

from fixloop.activities.triage import TriageActivities
from fixloop.core.models import Signal, TriageResult, WorkItemKind
from fixloop.core.triage import triage_rules, violations
from fixloop.integrations.gitlab.api import GitLabSettings
from fixloop.workflows.contracts.triage import GroupSignalsInput
from tests.activities.sandbox_world import World, configured
from tests.activities.test_change_mr import mr_diffs, open_all
from tests.change.shared_pins import ADDED, SHARED, scans


async def triaged(w: World, found: list[Signal]) -> TriageResult:
    acts = TriageActivities(gitlab=configured(GitLabSettings, w.env))
    return await ActivityEnvironment().run(acts.group_signals, GroupSignalsInput(scope="s", signals=found))


def share_pins(w: World, grouping: str | None) -> None:
    policy = SHARED["fixloop.yaml"] + (f"grouping: {grouping}\n" if grouping else "")
    w.bot.commit_files("main", {**ADDED, "fixloop.yaml": policy}, "catalog admin UI, legacy-api requirements")


async def test_per_package_from_fixloop_yaml_is_one_merge_request_per_package_with_every_manifests_diff(
    world: World,
) -> None:
    share_pins(world, "per-package")
    found = scans()
    result = await triaged(world, found)
    assert violations(found, result) == []
    bumps = [w for w in result.work_items if w.kind is WorkItemKind.DEPENDENCY_BUMP]
    assert len(bumps) == 6 and {w.grouping for w in bumps} == {"per-package"}
    # located at triage: a package in one service's files is named after it (its id and title), the others none
    services = {next(p.package for p in w.packages).lower(): w.service for w in bumps}
    assert services == {
        "jquery": None,
        "lodash": None,
        "werkzeug": None,
        "django": None,
        "aiohttp": "payments",
        "twisted": "payments",
    }
    opened = {}
    for item in bumps:
        own = [s for s in found if s.fingerprint in set(item.signals)]
        _, planned, mr = await open_all(world, item, own)
        opened[item.id] = (planned, mr)
    assert len({mr.iid for _, mr in opened.values()}) == len(bumps)  # one merge request per package

    jquery = next(w for w in bumps if "jquery" in w.title)
    planned, mr = opened[jquery.id]
    assert planned.title == "Bump jquery 3.3.9 \u2192 3.4.0 in 2 manifests (fixes 1 CVE: 1 medium)"
    assert planned.services == ["catalog", "storefront"] and planned.service is None
    diffs = mr_diffs(world, mr.iid)
    assert sorted(diffs) == [
        "services/catalog/package-lock.json",
        "services/catalog/package.json",
        "services/storefront/package-lock.json",
        "services/storefront/package.json",
    ]
    for path, diff in diffs.items():
        assert '-    "jquery": "3.3.9"' in diff or '-        "jquery": "3.3.9"' in diff, path
    assert "This change touches 2 services (catalog, storefront)" in (planned.description or "")

    werkzeug = next(w for w in bumps if "Werkzeug" in w.title)
    planned, mr = opened[werkzeug.id]
    assert planned.services == ["legacy-api", "payments"]
    assert {p: d.count("+Werkzeug==0.15.3") for p, d in mr_diffs(world, mr.iid).items()} == {
        "services/legacy-api/requirements.txt": 1,  # no scan covered it
        "services/payments/requirements.txt": 1,
    }


async def test_without_the_key_the_activity_groups_per_manifest_as_today(world: World) -> None:
    share_pins(world, None)
    found = scans()
    result = await triaged(world, found)
    today = triage_rules(found)
    assert [w.signals for w in result.work_items] == [w.signals for w in today.work_items]
    assert all(w.grouping is None for w in result.work_items)
    assert violations(found, result) == []
