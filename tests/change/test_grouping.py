"""The grouping policy (issue 22): ``fixloop.yaml`` ``grouping:`` decides which bumps share a work item and a merge
request. On the seeded repository with packages pinned in several services (``tests.change.shared_pins``) and the
bundled real reports: ``per-package`` gives one work item and one change per package with every manifest's diff
(the manifests no scan covered too), raised to one version everywhere; ``per-service`` one per service;
``per-manifest`` today's result. Every signal is in exactly one item or unassigned, and no merge request mixes
unrelated fixes, whatever the grouping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixloop.core.change import Plan, plan
from fixloop.core.change.ops import PolicyViolation
from fixloop.core.change.policy import load_policy
from fixloop.core.models import GROUPINGS, Grouping, Signal, WorkItem, WorkItemKind
from fixloop.core.service import ServiceNames
from fixloop.core.topology import from_policy_text
from fixloop.core.triage import triage_rules, violations
from fixloop.core.triage.grouping import bump_key, one_version, package_name, unrelated
from fixloop.core.verification import VerificationPolicy, describe_plans
from tests.activities.test_triage_rules import all_signals
from tests.change.helpers import SEED, tags
from tests.change.shared_pins import SHARED, scans

DEP = WorkItemKind.DEPENDENCY_BUMP
NAMES = ServiceNames.of(from_policy_text(SEED["fixloop.yaml"]), load_policy(SEED["fixloop.yaml"]).chain.services())


def bumps(grouping: Grouping, found: list[Signal] | None = None, names: ServiceNames | None = None) -> list[WorkItem]:
    result = triage_rules(found if found is not None else scans(), grouping=grouping, names=names)
    return [w for w in result.work_items if w.kind is DEP]


def planned(item: WorkItem) -> Plan:
    result = plan(item, scans(), SHARED, tags=tags)
    assert isinstance(result, Plan), result
    return result


def package_of(item: WorkItem) -> tuple[str | None, str]:
    (key,) = {(p.ecosystem, package_name(p.ecosystem, p.package)) for p in item.packages}
    return key


def test_per_manifest_is_todays_result() -> None:
    for found in (scans(), all_signals()):
        assert triage_rules(found, grouping="per-manifest") == triage_rules(found)
    items = bumps("per-manifest")
    assert all(w.grouping is None for w in items)
    # one item per scanned manifest: storefront's lockfile twice (two scanners, two artifacts), catalog's, payments'
    # requirements.txt, and pip-audit's list, which names no file
    assert sorted((w.artifact or "", w.target or "") for w in items) == [
        ("", ""),
        ("", "services/catalog/package-lock.json"),
        ("myproject", "services/storefront/package-lock.json"),
        ("testdata/fixtures/fs/pip", "services/payments/requirements.txt"),
        ("testdata/fixtures/repo/npm", "services/storefront/package-lock.json"),
    ]
    werkzeug = next(w for w in items if w.target == "services/payments/requirements.txt")
    assert sorted(planned(werkzeug).edits) == ["services/payments/requirements.txt"]  # legacy-api's pin stays
    untargeted = planned(next(w for w in items if w.target is None))
    (django,) = [n for n in untargeted.not_fixable if n.package == "django"]
    assert "pinned at 3.2.9 in several files" in django.reason  # the scan does not say which


def test_per_package_is_one_item_and_one_change_per_package_with_every_manifests_diff() -> None:
    items = bumps("per-package")
    by_package = {package_of(w): w for w in items}
    assert len(by_package) == len(items)  # one item per package
    assert sorted(by_package) == [
        ("npm", "jquery"),
        ("npm", "lodash"),
        ("pypi", "aiohttp"),
        ("pypi", "django"),
        ("pypi", "twisted"),
        ("pypi", "werkzeug"),
    ]
    assert all(w.grouping == "per-package" and w.service is None for w in items)

    jquery = by_package[("npm", "jquery")]
    assert len({s for s in jquery.signals}) == 2  # two scans, two artifacts, one item
    assert jquery.title == "Bump jquery 3.3.9 \u2192 3.4.0 in every manifest (fixes 1 CVE: 1 medium)"
    assert sorted(planned(jquery).edits) == [
        "services/catalog/package-lock.json",
        "services/catalog/package.json",
        "services/storefront/package-lock.json",
        "services/storefront/package.json",
    ]

    # lodash: catalog's 4.17.4 alone needs 4.17.12, storefront's 4.17.13 needs 4.17.20: one version everywhere
    lodash = by_package[("npm", "lodash")]
    assert {(p.installed_version, p.fixed_version) for p in lodash.packages} == {
        ("4.17.4", "4.17.20"),
        ("4.17.13", "4.17.20"),
    }
    assert lodash.title.startswith("Bump lodash 4.17.4, 4.17.13 \u2192 4.17.20 in every manifest")
    change = planned(lodash)
    assert [(op.path, op.current, op.new) for op in change.operations] == [  # type: ignore[union-attr]
        ("services/catalog/package.json", "4.17.4", "4.17.20"),
        ("services/storefront/package.json", "4.17.13", "4.17.20"),
    ]
    assert sorted(change.edits) == ["services/catalog/package-lock.json", "services/storefront/package-lock.json"]
    per_manifest = [w for w in bumps("per-manifest") if w.target == "services/catalog/package-lock.json"]
    catalog_alone = plan(per_manifest[0], scans(), SHARED, tags=tags)
    assert isinstance(catalog_alone, Plan)
    assert {op.describe() for op in catalog_alone.operations} >= {
        "services/catalog/package-lock.json: lodash 4.17.4 -> 4.17.12"
    }

    # Werkzeug: only payments' requirements.txt was scanned; legacy-api's pin is located by the planner, and
    # payments' diff is the one its per-manifest item has
    today = planned(next(w for w in bumps("per-manifest") if w.target == "services/payments/requirements.txt"))
    assert planned(by_package[("pypi", "werkzeug")]).diff == (
        "--- a/services/legacy-api/requirements.txt\n"
        "+++ b/services/legacy-api/requirements.txt\n"
        "@@ -1,3 +1,3 @@\n"
        " # legacy-api runtime dependencies (pinned; updated by merge request)\n"
        " Django==3.2.9\n"
        "-Werkzeug==0.11\n"
        "+Werkzeug==0.15.3\n"
    ) + today.diff
    assert today.diff.startswith("--- a/services/payments/requirements.txt\n") and "+Werkzeug==0.15.3\n" in today.diff
    # django: pip-audit names no file; every manifest pinning it at 3.2.9 is bumped (per-manifest: not fixable)
    django = planned(by_package[("pypi", "django")])
    assert [op.describe() for op in django.operations] == [
        "services/legacy-api/requirements.txt: Django 3.2.9 -> 3.2.10",
        "services/payments/requirements.txt: Django 3.2.9 -> 3.2.10",
    ]
    assert django.not_fixable == []


def test_per_service_is_one_item_per_service_with_all_its_manifests_bumps() -> None:
    items = bumps("per-service", names=NAMES)
    by_service = {w.service: w for w in items}
    assert sorted(by_service, key=lambda s: s or "") == [None, "catalog", "payments", "storefront"]
    storefront = by_service["storefront"]
    assert storefront.grouping == "per-service" and storefront.id.startswith("storefront-dependency-bump-")
    assert storefront.artifact is None  # two scanners' artifacts, one service
    assert storefront.title.startswith("Bump 2 packages in services/storefront/package-lock.json of storefront")
    assert sorted({op.path for op in planned(storefront).operations}) == ["services/storefront/package.json"]
    catalog = planned(by_service["catalog"])
    assert sorted(catalog.edits) == ["services/catalog/package-lock.json", "services/catalog/package.json"]
    assert by_service[None].grouping is None  # pip-audit names no file, so no service: per manifest as today
    without_names = bumps("per-service")
    assert without_names == bumps("per-manifest")  # no service known: nothing changes


@pytest.mark.parametrize("grouping", GROUPINGS)
def test_every_signal_exactly_once_and_no_merge_request_mixes_unrelated_fixes(grouping: Grouping) -> None:
    found = all_signals() + scans()
    result = triage_rules(found, grouping=grouping, names=NAMES)
    assert violations(found, result, NAMES) == []
    placed = [fp for w in result.work_items for fp in w.signals] + [u.fingerprint for u in result.unassigned]
    assert sorted(placed) == sorted({s.fingerprint for s in found})
    today = triage_rules(found, names=NAMES)
    others = [w for w in result.work_items if w.kind is not DEP]
    assert others == [w for w in today.work_items if w.kind is not DEP]  # OS rebuilds stay per image, digests too
    by_fp = {s.fingerprint: s for s in found}
    for w in result.work_items:
        if w.kind is DEP:
            keys = {bump_key(by_fp[fp], grouping, NAMES) for fp in w.signals}
            assert len(keys) == 1, w.title


def test_the_check_names_what_a_wrong_grouping_mixes() -> None:
    result = triage_rules(scans(), grouping="per-package")
    jquery, lodash = (next(w for w in result.work_items if p in w.title) for p in ("jquery", "lodash"))
    merged = jquery.model_copy(update={"signals": jquery.signals + lodash.signals})
    rest = [w for w in result.work_items if w not in (jquery, lodash)]
    wrong = violations(scans(), result.model_copy(update={"work_items": [merged, *rest]}))
    assert wrong == [f"{jquery.id} mixes packages npm jquery, npm lodash"]
    as_manifest = merged.model_copy(update={"grouping": None})
    (line,) = violations(scans(), result.model_copy(update={"work_items": [as_manifest, *rest]}))
    assert line.startswith(f"{jquery.id} mixes manifests ")
    dropped = violations(scans(), result.model_copy(update={"work_items": rest}))
    assert len(jquery.signals) + len(lodash.signals) > 5
    assert len(dropped) == 5 and all("placed nowhere" in d for d in dropped)  # at most five lines about placement
    found = {s.fingerprint: s for s in scans()}
    assert unrelated([found[f] for f in jquery.signals], "per-manifest") is not None  # two scans, two manifests
    assert unrelated([found[f] for f in jquery.signals], "per-package") is None


def test_one_version_is_the_highest_of_each_installed_versions_fix() -> None:
    (lodash,) = [w for w in bumps("per-manifest") if w.target == "services/catalog/package-lock.json"]
    bump = next(p for p in lodash.packages if p.package == "lodash")
    other = bump.model_copy(update={"installed_version": "4.17.13", "fixed_version": "4.17.20"})
    assert [p.fixed_version for p in one_version([bump, other])] == ["4.17.20", "4.17.20"]
    django = bump.model_copy(update={"package": "Django", "ecosystem": "pypi", "fixed_version": "3.2.10"})
    django2 = django.model_copy(update={"package": "django", "fixed_version": "3.2.24"})
    assert [p.fixed_version for p in one_version([django, django2, bump])] == ["3.2.24", "3.2.24", "4.17.12"]


@settings(max_examples=40)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=60), st.sampled_from(GROUPINGS))
def test_any_storm_under_any_grouping_places_each_signal_once_and_ids_follow_the_grouping(
    picks: list[int], grouping: Grouping
) -> None:
    pool = scans() + all_signals()[:400]
    found = [pool[i % len(pool)] for i in picks]
    result = triage_rules(found, grouping=grouping, names=NAMES)
    assert violations(found, result, NAMES) == []
    again = triage_rules(list(reversed(found)), grouping=grouping, names=NAMES)
    assert [w.id for w in again.work_items] == [w.id for w in result.work_items]
    assert len({w.id for w in result.work_items}) == len(result.work_items)


def test_the_grouping_is_a_key_of_fixloop_yaml() -> None:
    assert load_policy(SEED["fixloop.yaml"]).grouping == "per-manifest"  # the default
    assert load_policy(SEED["fixloop.yaml"] + "grouping: per-package\n").grouping == "per-package"
    with pytest.raises(PolicyViolation, match="grouping: 'per-repo' is not one of per-manifest, per-package, per-se"):
        load_policy("grouping: per-repo\n")


def test_the_verification_plan_says_each_touched_service_is_verified() -> None:
    policy = VerificationPolicy()
    one = describe_plans(policy, ["payments"])
    assert one == describe_plans(policy, ["payments"]) and "for service payments:" in one
    both = describe_plans(policy, ["legacy-api", "payments"])
    assert both.startswith("This change touches 2 services (legacy-api, payments): fixloop verifies each on its own")
    assert "for each service:" in both and "one revert merge request undoes it for all" in both
    assert "none could be named" in describe_plans(policy, [])
