"""Stages 1-3 of the RemediationWorkflow on the sandbox: ``jira.open_work_item``, ``change.plan`` and
``gitlab.open_merge_request`` for real reports against the seeded GitOps repository, the merge request's whole diff
read back through GitLab, and re-running the same work item changing nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from fixloop.activities import merge_request as gitlab
from fixloop.activities.plan import RegistryTags
from fixloop.core.change.mr import read_back
from fixloop.core.gate import Approval, ApproverPolicy, MergeRequestState, MrState, decider_refusal
from fixloop.core.models import Signal, WorkItem, WorkItemKind, fingerprint
from fixloop.core.service import service_of_paths
from fixloop.core.triage import triage_rules
from fixloop.integrations.errors import AuthError, HttpStatusError
from fixloop.integrations.registry import RegistryClient, RegistrySettings
from fixloop.workflows.contracts.merge_request import (
    CheckUserInput,
    MergeRequestRef,
    MergeRequestStateInput,
    OpenMergeRequestInput,
    OpenRevertInput,
)
from fixloop.workflows.contracts.plan import PlanChangeInput, PlannedChange
from fixloop.workflows.contracts.work_item import IssueRef, OpenWorkItemInput
from tests.activities.sandbox_world import World, running_world
from tests.change.helpers import work_item
from tests.conftest import signals as signals_of

OS, DEP = WorkItemKind.OS_REBUILD, WorkItemKind.DEPENDENCY_BUMP
SCOPE = "platform/gitops"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with running_world(tmp_path / "sandbox") as w:
        yield w


async def open_all(
    w: World, item: WorkItem, signals: list[Signal]
) -> tuple[IssueRef, PlannedChange, MergeRequestRef]:
    """Stages 1-3 as the workflow runs them."""
    issue = await w.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=item))
    planned = await w.change.plan(
        PlanChangeInput(scope=SCOPE, work_item=item, jira_key=issue.key, signals=signals)
    )
    assert planned.located, planned.reason
    mr = await w.gitlab.open_merge_request(
        OpenMergeRequestInput(scope=SCOPE, work_item=item, change=planned, jira_key=issue.key)
    )
    return issue, planned, mr


def mr_diffs(w: World, iid: int) -> dict[str, str]:
    """``{path: diff}`` of merge request ``iid`` as GitLab shows it (``GET .../merge_requests/:iid/changes``)."""
    return {c["new_path"]: c["diff"] for c in w.project().mergerequests.get(iid).changes()["changes"]}


CASES = {
    "alpine base image": (
        "trivy/trivy-head_alpine-39.json",
        OS,
        None,
        {
            "services/catalog/Dockerfile": (
                "@@ -1,4 +1,4 @@\n"
                "-FROM alpine:3.9.4\n"
                "+FROM alpine:3.9.6\n"
                " \n"
                " RUN apk add --no-cache ca-certificates tzdata \\\n"
                "     && addgroup -S app && adduser -S -G app app\n"
            )
        },
    ),
    "debian base image": (
        "trivy/trivy-0.22-fulldb_fluentd-multiple-lockfiles.json",
        OS,
        None,
        {
            "services/legacy-api/Dockerfile": (
                "@@ -1,4 +1,4 @@\n"
                "-FROM debian:10.2\n"
                "+FROM debian:10.13\n"
                " \n"
                " RUN apt-get update \\\n"
                "     && apt-get install -y --no-install-recommends ca-certificates libidn2-0 e2fsprogs \\\n"
            )
        },
    ),
    "python pin": (
        "trivy/trivy-0.22-fulldb_pip.json",
        DEP,
        None,
        {
            "services/payments/requirements.txt": (
                "@@ -6,4 +6,4 @@\n Django==3.2.9\n lxml==4.6.4\n Twisted==18.9.0\n-Werkzeug==0.11\n+Werkzeug==0.15.3\n"
            )
        },
    ),
    "npm package with lockfile": (
        "trivy/trivy-head_npm.json",
        DEP,
        None,
        {
            "services/storefront/package-lock.json": (
                "@@ -8,7 +8,7 @@\n"
                '       "name": "storefront",\n'
                '       "version": "3.2.0",\n'
                '       "dependencies": {\n'
                '-        "jquery": "3.3.9"\n'
                '+        "jquery": "3.4.0"\n'
                "       },\n"
                '       "devDependencies": {\n'
                '         "@babel/core": "7.8.3"\n'
                "@@ -26,8 +26,8 @@\n"
                "       }\n"
                "     },\n"
                '     "node_modules/jquery": {\n'
                '-      "version": "3.3.9",\n'
                '-      "resolved": "https://registry.npmjs.org/jquery/-/jquery-3.3.9.tgz"\n'
                '+      "version": "3.4.0",\n'
                '+      "resolved": "https://registry.npmjs.org/jquery/-/jquery-3.4.0.tgz"\n'
                "     },\n"
                '     "node_modules/lodash": {\n'
                '       "version": "4.17.13",\n'
                "@@ -45,8 +45,8 @@\n"
                "       }\n"
                "     },\n"
                '     "jquery": {\n'
                '-      "version": "3.3.9",\n'
                '-      "resolved": "https://registry.npmjs.org/jquery/-/jquery-3.3.9.tgz"\n'
                '+      "version": "3.4.0",\n'
                '+      "resolved": "https://registry.npmjs.org/jquery/-/jquery-3.4.0.tgz"\n'
                "     },\n"
                '     "lodash": {\n'
                '       "version": "4.17.13",\n'
            ),
            "services/storefront/package.json": (
                "@@ -9,7 +9,7 @@\n"
                '     "start": "node dist/server.js"\n'
                "   },\n"
                '   "dependencies": {\n'
                '-    "jquery": "3.3.9"\n'
                '+    "jquery": "3.4.0"\n'
                "   },\n"
                '   "devDependencies": {\n'
                '     "@babel/core": "7.8.3"\n'
            ),
        },
    ),
    "go module": (
        "trivy/trivy-head_gomod.json",
        DEP,
        "go.mod",
        {
            "services/inventory/go.mod": (
                "@@ -3,7 +3,7 @@\n"
                " go 1.17\n"
                " \n"
                " require (\n"
                "-\tgithub.com/docker/distribution v2.7.1+incompatible\n"
                "-\tgithub.com/open-policy-agent/opa v0.35.0\n"
                "-\tgolang.org/x/text v0.3.6\n"
                "+\tgithub.com/docker/distribution v2.8.0+incompatible\n"
                "+\tgithub.com/open-policy-agent/opa v0.37.0\n"
                "+\tgolang.org/x/text v0.3.7\n"
                " )\n"
            )
        },
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_merge_request_diff_is_exactly_the_fix_and_a_rerun_changes_nothing(world: World, case: str) -> None:
    report, kind, target, expected = CASES[case]
    item, signals = work_item(report, kind, target)
    main_before = world.bot.branch_head("main")

    issue, planned, mr = await open_all(world, item, signals)
    assert issue.created and planned.base_sha == main_before
    assert mr.branch == planned.branch == f"fixloop/{item.id}" and mr.project == SCOPE
    assert mr_diffs(world, mr.iid) == expected  # the whole diff of every file, as GitLab shows it

    again_issue, again_planned, again_mr = await open_all(world, item, signals)
    assert (again_issue.key, again_issue.created) == (issue.key, False)
    assert again_planned == planned
    assert again_mr == mr  # same branch head (no new commit), same MR
    assert world.bot.branch_head(mr.branch) == mr.head_sha
    assert world.bot.branch_head("main") == main_before
    project = world.project()
    assert [m.iid for m in project.mergerequests.list(source_branch=mr.branch, state="all")] == [mr.iid]
    assert [c.id for c in project.mergerequests.get(mr.iid).commits()] == [mr.head_sha]  # one fixloop commit
    assert [c["id"] for c in project.repository_compare(main_before, mr.branch)["commits"]] == [mr.head_sha]
    assert mr_diffs(world, mr.iid) == expected


async def test_planning_heartbeats_at_each_step(world: World) -> None:
    """Under Temporal (an activity context) ``change.plan`` heartbeats from its worker thread at each step: the
    head, the policy, the listing, every file read, the registry lookup, the outcome, the merge request's text and
    the delivery's files, in that order (the UI shows the last; a dead worker is noticed within ``PLAN_HEARTBEAT``)."""
    item, signals = work_item("trivy/trivy-head_alpine-39.json", OS, None)
    env = ActivityEnvironment()
    beats: list[str] = []
    env.on_heartbeat = lambda *details: beats.extend(details)
    planned = await env.run(world.change.plan, PlanChangeInput(scope=SCOPE, work_item=item, signals=signals))
    assert planned.located and planned.base_sha
    base = planned.base_sha[:12]
    assert beats[:3] == ["read the head of the default branch", "read fixloop.yaml", f"list the repository at {base}"]
    located = beats.index("located")
    assert beats.index("read services/catalog/Dockerfile") < beats.index("list the tags of alpine") < located
    assert beats[located + 1] == "write the merge request"
    assert "read apps/production/kustomization.yaml" in beats[located:]  # its delivery: the environments' files


async def test_a_work_item_whose_fix_is_not_in_the_repository_is_not_located(world: World) -> None:
    for report, kind, reason in (
        (
            "trivy/trivy-0.22-fulldb_fluentd-multiple-lockfiles.json",
            DEP,
            "activesupport: fixloop does not edit gem manifests yet",
        ),
        ("trivy/trivy-0.22-fulldb_debian-stretch.json", OS, "no Dockerfile fixloop may change has a FROM on debian 9."),
    ):
        item, signals = work_item(report, kind)
        planned = await world.change.plan(PlanChangeInput(scope=SCOPE, work_item=item, signals=signals))
        assert not planned.located and planned.branch is None and planned.changes == []
        assert planned.reason is not None and planned.reason.startswith(reason)
        assert planned.base_sha == world.bot.branch_head("main")
    assert world.project().mergerequests.list(get_all=True) == []


async def test_description_has_the_findings_table_the_jira_key_and_the_machine_block(world: World) -> None:
    item, signals = work_item("trivy/trivy-head_alpine-39.json", OS)
    issue, planned, mr = await open_all(world, item, signals)
    got = world.bot.get_merge_request(mr.iid)
    assert (
        got.title == planned.title == "Bump alpine base image 3.9.4 \u2192 3.9.6 (fixes 3 CVEs: 1 critical, 2 medium)"
    )
    assert got.description == planned.description and got.description is not None
    # the change is to services/catalog: the description names the work item after its service, not the tarball
    assert item.service is None and planned.service == "catalog"
    assert got.description.startswith(
        f"fixloop work item `{item.id}`: Rebuild catalog on a patched base image (fixes 3 CVEs: 1 critical, 2 medium)\n"
    )
    assert f"Jira: {issue.key}\n" in got.description  # the sandbox's Jira is http: the key, not a link
    assert "| Advisory | Package | Installed \u2192 fixed | Severity |\n|---|---|---|---|\n" in got.description
    assert "| [CVE-2019-14697](https://nvd.nist.gov/vuln/detail/CVE-2019-14697) | `musl` |" in got.description
    assert sorted(got.labels) == sorted(planned.labels) and "fixloop" in got.labels
    block = read_back(got.description)
    assert block is not None and block["work_item"] == item.id and block["branch"] == mr.branch
    commit = world.project().commits.get(mr.head_sha)
    assert commit.message == f"{planned.title}\n\nFixloop-Work-Item: {item.id}\nRefs: {issue.key}\n"


async def test_a_jira_site_with_https_is_linked_from_the_description(world: World) -> None:
    item, signals = work_item("trivy/trivy-0.22-fulldb_pip.json", DEP)
    world.change.jira_url = "https://acme.atlassian.net"
    planned = await world.change.plan(
        PlanChangeInput(scope=SCOPE, work_item=item, jira_key="OPS-7", signals=signals)
    )
    assert planned.description is not None
    assert "Jira: [OPS-7](https://acme.atlassian.net/browse/OPS-7)\n" in planned.description
    assert planned.risks == ["Werkzeug 0.11 \u2192 0.15.3: 0.x minor version change (may break the API)"]


async def test_main_changing_the_same_line_after_planning_gives_a_conflicting_mr_not_a_rebase(world: World) -> None:
    """The change applies at the commit it was planned on: what the reviewer sees is exactly what was validated, and
    GitLab reports the conflict with the newer main (the next loop re-plans on the new head)."""
    item, signals = work_item("trivy/trivy-head_alpine-39.json", OS)
    issue = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=item))
    planned = await world.change.plan(
        PlanChangeInput(scope=SCOPE, work_item=item, jira_key=issue.key, signals=signals)
    )
    path = "services/catalog/Dockerfile"
    old = world.bot.read_file(path, "main")
    assert old is not None
    world.bot.commit_files("main", {path: old.replace("alpine:3.9.4", "alpine:3.9.5", 1)}, "Bump alpine by hand")
    assert world.bot.branch_head("main") != planned.base_sha

    mr = await world.gitlab.open_merge_request(
        OpenMergeRequestInput(scope=SCOPE, work_item=item, change=planned, jira_key=issue.key)
    )
    assert mr_diffs(world, mr.iid) == CASES["alpine base image"][3]
    got = world.bot.get_merge_request(mr.iid)
    assert got.has_conflicts and got.detailed_merge_status == "conflict"
    again = await world.gitlab.open_merge_request(
        OpenMergeRequestInput(scope=SCOPE, work_item=item, change=planned, jira_key=issue.key)
    )
    assert again == mr


async def test_a_change_that_no_longer_matches_its_base_is_a_non_retryable_policy_violation(world: World) -> None:
    item, signals = work_item("trivy/trivy-0.22-fulldb_pip.json", DEP)
    planned = await world.change.plan(PlanChangeInput(scope=SCOPE, work_item=item, signals=signals))
    (op,) = planned.changes
    tampered = planned.model_copy(update={"changes": [op.model_copy(update={"current": "0.10"})]})
    with pytest.raises(ApplicationError) as raised:
        await world.gitlab.open_merge_request(
            OpenMergeRequestInput(scope=SCOPE, work_item=item, change=tampered)
        )
    assert raised.value.non_retryable and raised.value.type == "PolicyViolation"
    assert "services/payments/requirements.txt" in raised.value.message
    assert world.bot.branch_head(planned.branch or "") is None  # nothing was pushed


async def test_approval_by_the_reviewer_at_the_head_is_one_human_approval_with_that_sha(world: World) -> None:
    item, signals = work_item("trivy/trivy-head_npm.json", DEP)
    _, _, mr = await open_all(world, item, signals)
    ask = MergeRequestStateInput(project=mr.project, iid=mr.iid)
    before = await world.gitlab.merge_request_state(ask)
    assert before == MergeRequestState(
        state=MrState.OPENED,
        head_sha=mr.head_sha,
        author_id=2,  # the bot opened it
        author=world.gitlab.settings.bot_username,
        reset_approvals_on_push=True,  # the project's approval configuration, read with it
        policy=ApproverPolicy(bot_username=world.gitlab.settings.bot_username),
    )

    reviewer = world.project(world.reviewer_token)
    reviewer.mergerequests.get(mr.iid).approve(sha=mr.head_sha)
    state = await world.gitlab.merge_request_state(ask)
    assert state.state is MrState.OPENED and state.head_sha == mr.head_sha
    assert state.approvals == [Approval(by="reviewer", sha=mr.head_sha, bot=False, user_id=3)]
    # an approver policy: an allowed list, else the group (the sandbox's platform/reviewers holds the reviewer)
    for policy, allowed in (({"approvers": ["reviewer"]}, True), ({"approver_group": "platform/reviewers"}, True),
                            ({"approvers": ["alice"]}, False)):  # fmt: skip
        gated = gitlab.MergeRequestActivities(world.gitlab.settings.model_copy(update=policy))
        assert [a.allowed for a in (await gated.merge_request_state(ask)).approvals] == [allowed]

    # GitLab refuses the author's own approval, so the bot flag is shown with a worker whose bot is "reviewer"
    as_bot = gitlab.MergeRequestActivities(world.gitlab.settings.model_copy(update={"bot_username": "reviewer"}))
    assert [a.bot for a in (await as_bot.merge_request_state(ask)).approvals] == [True]

    reviewer.mergerequests.get(mr.iid).merge(sha=mr.head_sha)
    merged = await world.gitlab.merge_request_state(ask)
    assert merged.state is MrState.MERGED and merged.merged_at is not None
    assert merged.merge_sha is not None and merged.merge_sha == world.bot.get_merge_request(mr.iid).merged_commit_sha
    assert world.bot.branch_head("main") == merged.merge_sha


async def test_the_revert_of_a_failed_change_is_titled_as_a_rollback_and_says_what_comes_back(world: World) -> None:
    """The revert merge request of a merged fix (on the sandbox's GitLab): ``Revert "<title>" — <why>`` within
    ``REVERT_TITLE_MAX``, its description the failed numbers with units, a link to the original, and the findings the
    original fixed, which come back; opening it again (the title read back from GitLab) changes nothing."""
    item, signals = work_item("trivy/trivy-head_npm.json", DEP)
    _, planned, mr = await open_all(world, item, signals)
    assert mr.title == world.bot.get_merge_request(mr.iid).title == planned.title
    reviewer = world.project(world.reviewer_token)
    reviewer.mergerequests.get(mr.iid).approve(sha=mr.head_sha)
    reviewer.mergerequests.get(mr.iid).merge(sha=mr.head_sha)
    merged = await world.gitlab.merge_request_state(MergeRequestStateInput(project=mr.project, iid=mr.iid))
    assert merged.merge_sha is not None
    why = "verification failed: error rate +200 %"
    ask = OpenRevertInput(
        scope=SCOPE, work_item=item, original=mr, merge_sha=merged.merge_sha, why=why,
        reason="verification failed (web regressed after the deploy: error rate rose +200 %)",
        metrics=["error rate 0.4 errors/s \u2192 1.2 errors/s (+200 %): fail, critical", "score 67/100"],
        evidence=["error rate (critical): FAIL: median 0.4 errors/s \u2192 1.2 errors/s (+200 %)"],
        undoes=planned.operations, jira_key="OPS-1",
    )  # fmt: skip
    revert = await world.gitlab.open_revert_merge_request(ask)
    shown = world.bot.get_merge_request(revert.iid)
    assert shown.title == revert.title == gitlab.revert_title(mr.title, mr.iid, why)
    assert shown.title.startswith('Revert "') and shown.title.endswith(f'" \u2014 {why}') and len(shown.title) <= 120
    description = shown.description
    assert description.startswith(f"**Rollback** of [!{mr.iid}]({mr.url}): {why}.")
    assert "- error rate 0.4 errors/s \u2192 1.2 errors/s (+200 %): fail, critical" in description.splitlines()
    assert "### What the revert re-opens" in description
    for bump in item.packages:
        assert f"- `{bump.package}` back from `{bump.fixed_version}` to `{bump.installed_version}`" in description
    assert all(a in description for a in item.advisories)
    # again, the original's title unknown to the loop: read back from GitLab, the same merge request
    again = await world.gitlab.open_revert_merge_request(
        ask.model_copy(update={"original": mr.model_copy(update={"title": None})})
    )
    assert again == revert


def test_a_revert_title_stays_one_readable_line_whatever_the_original() -> None:
    long = "Bump werkzeug 2.0.0 to 3.0.6 in services/payments (fixes CVE-2023-25577, CVE-2023-46136 and 12 more)"
    why = "verification failed in staging: error rate +200 %"
    title = gitlab.revert_title(long, 20, why)
    assert len(title) <= gitlab.REVERT_TITLE_MAX and title.endswith(f'\u2026" \u2014 {why}')
    assert title.startswith('Revert "Bump werkzeug 2.0.0 to 3.0.6 in services/payments')
    assert gitlab.revert_title(None, 20, why) == f"Revert !20 \u2014 {why}"
    evil = gitlab.revert_title("Fix @all #12 !3 https://evil.example", 3, why)
    assert "@\u200ball" in evil and "#\u200b12" in evil and "!\u200b3" in evil and "https:\u200b//" in evil


@settings(max_examples=200, deadline=None)
@given(original=st.one_of(st.none(), st.text(max_size=300)), why=st.text(max_size=120), iid=st.integers(1, 10**9))
def test_a_revert_title_is_bounded_one_line_and_references_nothing(original: str | None, why: str, iid: int) -> None:
    title = gitlab.revert_title(original, iid, why)
    assert title.startswith("Revert ") and len(title) <= gitlab.REVERT_TITLE_MAX and "\n" not in title
    # no mention or reference: each such character is broken, or stands before what starts none (space , ; : ) end)
    assert not re.search(r"[@#~%$&](?![\s\u200b,;:)]|$)", title.replace(f"!{iid}", "")), title
    assert not re.search(r"!(?![\s\u200b,;:)]|$)", title.replace(f"Revert !{iid}", "")), title


async def test_an_unknown_merge_request_is_a_non_retryable_not_found(world: World) -> None:
    with pytest.raises(ApplicationError) as raised:
        await world.gitlab.merge_request_state(MergeRequestStateInput(project=SCOPE, iid=999))
    assert raised.value.non_retryable and raised.value.type == "NotFound"


def registry_answering(status: int, code: str) -> RegistryClient:
    body = {"errors": [{"code": code, "message": code.lower().replace("_", " "), "detail": None}]}
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    return RegistryClient(RegistrySettings(_env_file=None, url="https://registry.test"), transport=transport)  # type: ignore[call-arg]


async def test_registry_tags_per_image_and_what_one_image_s_failure_does(world: World) -> None:
    tags = RegistryTags(world.change.registry)
    assert "3.9.6" in tags("alpine") and "3.9.6" in tags("docker.io/library/alpine") and tags.failed == {}
    assert tags("ghcr.io/acme/base") == [] and tags("acme/unknown") == []
    assert tags.failed == {
        "ghcr.io/acme/base": "fixloop knows no registry for the host ghcr.io",
        "acme/unknown": "the registry could not list its tags (HTTP 404: NAME_UNKNOWN: repository name not known to "
        "registry)",
    }
    with pytest.raises(AuthError):
        RegistryTags(registry_answering(401, "UNAUTHORIZED"))("alpine")
    with pytest.raises(HttpStatusError) as unavailable:
        RegistryTags(registry_answering(503, "UNAVAILABLE"))("alpine")
    assert unavailable.value.retryable  # Temporal retries the plan


async def test_an_image_the_registry_does_not_know_is_not_fixable_with_the_registry_s_reason(world: World) -> None:
    item, signals = work_item("trivy/trivy-head_alpine-39.json", OS)
    ask = PlanChangeInput(scope=SCOPE, work_item=item, signals=signals)
    world.change.registry = registry_answering(404, "NAME_UNKNOWN")
    planned = await world.change.plan(ask)
    reason = "alpine: the registry could not list its tags (HTTP 404: NAME_UNKNOWN: name unknown)"
    assert not planned.located and planned.reason == reason and planned.not_fixable == [reason]

    world.change.registry = registry_answering(401, "UNAUTHORIZED")
    with pytest.raises(ApplicationError) as raised:
        await world.change.plan(ask)
    assert raised.value.non_retryable and raised.value.type == "AuthError"


@pytest.mark.parametrize(
    ("paths", "service"),
    [
        (["services/catalog/Dockerfile"], "catalog"),
        (["services/storefront/package.json", "services/storefront/package-lock.json"], "storefront"),
        (["apps/base/payments/deployment.yaml"], "payments"),
        (["apps/production/legacy-api/values.yaml"], "legacy-api"),
        (["services/catalog/Dockerfile", "services/payments/requirements.txt"], None),  # two services
        (["apps/production/kustomization.yaml"], None),  # an environment, not a service
        (["Dockerfile"], None),
        (["services/$(reboot)/Dockerfile"], None),  # not a tag value
    ],
)
def test_the_service_of_a_change_follows_the_repository_layout(paths: list[str], service: str | None) -> None:
    assert service_of_paths(paths) == service


async def test_the_merge_request_states_its_verification_plan(world: World) -> None:
    item, found = work_item("trivy/trivy-head_alpine-39.json", OS)
    _, planned, _ = await open_all(world, item, found)
    assert planned.service == "catalog" and planned.verification is not None
    assert planned.verification.kustomization == "flux-system/apps-production"  # the seeded fixloop.yaml
    text = " ".join((planned.description or "").split())
    assert (
        "compares the 10 min before the deploy with the 10 min after it (30 s points, from Datadog) for service catalog"
        in text
    )
    assert "error rate in errors/s (an increase of the median beyond 20%, critical)" in text
    assert "latency p95 in ms (an increase of the median beyond 20%)" in text
    assert "request rate in req/s (a decrease of the median beyond 20%)" in text
    assert "p < 0.01" in text and "&lt;" not in text and "&gt;" not in text  # raw Markdown reads as written
    assert "Filled in by fixloop at deploy time" not in text


async def test_check_user_reads_the_human_a_decision_names(world: World) -> None:
    check = world.gitlab.check_user
    reviewer = await check(CheckUserInput(username="reviewer"))
    assert (reviewer.user_id, reviewer.state, reviewer.bot) == (3, "active", False)
    assert decider_refusal(reviewer) is None
    bot = await check(CheckUserInput(username=world.gitlab.settings.bot_username))
    assert bot.bot and decider_refusal(bot) == f"{bot.username!r} is a bot"
    ghost = await check(CheckUserInput(username="nobody-here"))
    assert ghost.user_id is None and decider_refusal(ghost) == "GitLab has no user 'nobody-here'"


def spoofed_werkzeug() -> tuple[WorkItem, WorkItem, list[Signal]]:
    """The real pip report that bumps Werkzeug 0.11 -> 0.15.3, plus each Werkzeug finding again with a spoofed
    target and another fixed version: two work items whose signals differ only there, planning the same line."""
    found = signals_of("trivy/trivy-0.22-fulldb_pip.json")
    spoof = [
        s.model_copy(
            update={
                "fingerprint": fingerprint("spoof", s.fingerprint),
                "target": "services/payments/requirements.lock",
                "fixed_version": "2.2.3",
                "fixed_versions": ["2.2.3"],
            }
        )
        for s in found
        if s.package == "Werkzeug"
    ]
    everything = found + spoof
    real, spoofed = sorted(
        (w for w in triage_rules(everything).work_items if w.kind is DEP), key=lambda w: w.target != "requirements.txt"
    )
    return real, spoofed, everything


def open_fixloop_mrs(w: World) -> list[dict]:
    return [
        m.asdict()
        for m in w.project().mergerequests.list(state="opened", get_all=True)
        if m.source_branch.startswith("fixloop/")
    ]


async def test_a_spoofed_target_joins_the_open_mr_for_the_line_instead_of_opening_a_second(world: World) -> None:
    real, spoofed, found = spoofed_werkzeug()
    issue, _, mr = await open_all(world, real, found)
    assert not mr.joined

    other_issue = await world.jira.open_work_item(OpenWorkItemInput(scope=SCOPE, work_item=spoofed))
    planned = await world.change.plan(
        PlanChangeInput(scope=SCOPE, work_item=spoofed, jira_key=other_issue.key, signals=found)
    )
    assert planned.operations == ["services/payments/requirements.txt: Werkzeug 0.11 -> 2.2.3"]  # the same line
    joined = await world.gitlab.open_merge_request(
        OpenMergeRequestInput(scope=SCOPE, work_item=spoofed, change=planned, jira_key=other_issue.key)
    )
    assert joined.joined and (joined.iid, joined.url, joined.branch) == (mr.iid, mr.url, mr.branch)
    assert (joined.work_item_id, joined.jira_key) == (real.id, issue.key)
    assert joined.overlap == ["services/payments/requirements.txt"]
    (only,) = open_fixloop_mrs(world)
    assert only["iid"] == mr.iid
    assert "+Werkzeug==0.15.3" in mr_diffs(world, mr.iid)["services/payments/requirements.txt"]
    assert world.bot.branch_head(planned.branch or "") is None  # nothing of the spoofed item was pushed

    replanned = await world.change.plan(
        PlanChangeInput(scope=SCOPE, work_item=real, jira_key=issue.key, signals=found)
    )
    again = await world.gitlab.open_merge_request(  # the first loop's retry still has its own MR
        OpenMergeRequestInput(scope=SCOPE, work_item=real, change=replanned, jira_key=issue.key)
    )
    assert not again.joined and again.iid == mr.iid


async def test_of_two_racing_mrs_for_the_same_line_the_younger_closes_itself(world: World, monkeypatch) -> None:
    """Both loops passed the first check before either MR existed: the one with the higher iid, seeing an older
    MR on its lines after opening, closes itself and deletes its branch; one MR is left open."""
    real, spoofed, found = spoofed_werkzeug()
    _, _, first = await open_all(world, real, found)
    original, calls = world.gitlab._overlapping, []

    def raced(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - the spoofed loop's first check saw no MR yet
        calls.append(kwargs)
        return None if len(calls) == 1 else original(*args, **kwargs)

    monkeypatch.setattr(world.gitlab, "_overlapping", raced)
    planned = await world.change.plan(PlanChangeInput(scope=SCOPE, work_item=spoofed, signals=found))
    second = await world.gitlab.open_merge_request(
        OpenMergeRequestInput(scope=SCOPE, work_item=spoofed, change=planned)
    )
    assert second.joined and second.iid == first.iid and calls == [{}, {"below_iid": first.iid + 1}]
    (only,) = open_fixloop_mrs(world)
    assert only["iid"] == first.iid
    closed = world.project().mergerequests.list(state="closed", get_all=True)
    assert [(m.iid, m.source_branch) for m in closed] == [(first.iid + 1, planned.branch)], [m.asdict() for m in closed]
    assert world.bot.branch_head(planned.branch or "") is None
