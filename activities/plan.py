"""Planning the change of a work item: locate the fix in the GitOps repository and produce typed, validated
edit operations (stage 2).

``PlanActivities.plan`` (activity ``change.plan``; input and output: ``fixloop.workflows.contracts.plan``) reads the
repository through GitLab at the head of the default branch (``GitLabRepo``), the registry's tag lists
(``RegistryTags``) and runs the pure planner ``fixloop.core.change.plan``; the MR text comes from
``fixloop.core.change.mr``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Iterable, Sequence

from pydantic import TypeAdapter, ValidationError
from temporalio import activity

from fixloop.activities.errors import as_application_errors
from fixloop.core import remediation
from fixloop.core.change import NotFixable, NotLocated, Plan, RepoView, plan
from fixloop.core.change.draft import Draft, DraftRefused, apply_draft, ask, keep_operations, mr_text
from fixloop.core.change.mr import read_back, render
from fixloop.core.change.ops import Operation, PolicyViolation
from fixloop.core.change.policy import POLICY_FILE
from fixloop.core.config import ConfigError, LlmSettings
from fixloop.core.culprit import Culprit
from fixloop.core.parsing import clean
from fixloop.core.service import service_of_paths
from fixloop.core.verification import VerificationPolicy, describe_plan
from fixloop.integrations.errors import AuthError, IntegrationError
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.integrations.llm import LlmError, structured_completion
from fixloop.integrations.registry import RegistryClient, RegistrySettings
from fixloop.workflows.contracts.plan import RULES, PlanChangeInput, PlannedChange, PlanRemediationInput

# Temporal activity names, unchanged since activities/change.py (running histories and the worker's metrics name them):
PLAN_CHANGE = "change.plan"
PLAN_REMEDIATION = "change.plan_remediation"


# --- the implementation ----------------------------------------------------------------------------------------


log = logging.getLogger(__name__)

FILE_MAX_BYTES = 1 << 20  # files larger than this are not read (a view sees them as absent)
_DOCKER_HUB = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


def _top_culprit(inp: PlanRemediationInput) -> Culprit | None:
    """The culprit change of the incident's top candidate's service, if its investigation found one."""
    facts = inp.work_item.incident
    if inp.investigation is None or facts is None or not facts.candidates:
        return None
    top = facts.candidates[0].service or facts.candidates[0].entity
    return next((c.culprit for c in inp.investigation.candidates if c.entity == top and c.culprit), None)


class GitLabRepo:
    """A ``fixloop.core.change.RepoView`` of the GitLab project at commit ``sha``: the listing comes from one recursive
    tree call (blobs only), files are read on first use and cached. A file over ``max_bytes`` reads as None (and is
    logged): no fix lives in a megabyte-sized manifest, and a plan must stay bounded."""

    def __init__(self, client: GitLabClient, sha: str, max_bytes: int = FILE_MAX_BYTES) -> None:
        self.client = client
        self.sha = sha
        self.max_bytes = max_bytes
        self._paths: list[str] | None = None
        self._texts: dict[str, str | None] = {}

    def list(self) -> Iterable[str]:
        if self._paths is None:
            self._paths = sorted(i.path for i in self.client.tree(ref=self.sha, recursive=True) if i.type == "blob")
        return self._paths

    def read(self, path: str) -> str | None:
        if path not in self._texts:
            text = self.client.read_file(path, self.sha)
            if text is not None and len(text.encode()) > self.max_bytes:
                log.warning("%s@%s is over %d bytes: not read", clean(path, 200), self.sha[:12], self.max_bytes)
                text = None
            self._texts[path] = text
        return self._texts[path]


class RegistryTags:
    """``plan()``'s tag lookup on the registry: an image name (as a FROM line writes it, e.g. ``alpine`` or
    ``docker.io/library/alpine``) -> its tags. Images on another registry host, and names the registry refuses or
    does not know, get no tags and a reason in ``failed`` (that image is not fixable; the rest of the plan goes on).
    An ``AuthError`` (the registry credentials are wrong) and a retryable error (transport, 429, 5xx) propagate:
    the first fails the activity, the second lets Temporal retry it."""

    def __init__(self, client: RegistryClient | None) -> None:
        self.client = client
        self.failed: dict[str, str] = {}

    def __call__(self, image: str) -> Sequence[str]:
        name = image
        for prefix in _DOCKER_HUB:
            name = name.removeprefix(prefix)
        first, _, rest = name.partition("/")
        if rest and (("." in first) or (":" in first) or first == "localhost"):
            self.failed[image] = f"fixloop knows no registry for the host {clean(first, 80)}"
            return []
        if self.client is None:
            self.failed[image] = "no registry configured (FIXLOOP_REGISTRY_URL)"
            return []
        try:
            return self.client.tags(name)
        except AuthError:
            raise
        except IntegrationError as e:
            if e.retryable:
                raise
            self.failed[image] = f"the registry could not list its tags ({clean(e.message, 200)})"
            return []


def _explain(items: Sequence[NotFixable], failed: dict[str, str]) -> list[NotFixable]:
    return [n.model_copy(update={"reason": failed[n.package]}) if n.package in failed else n for n in items]


_JIRA_KEY = re.compile(r"[A-Z][A-Z0-9_]{0,30}-\d{1,9}")
_OPERATIONS: TypeAdapter[list[Operation]] = TypeAdapter(list[Operation])


class PlanActivities:
    """``change.plan`` on the GitLab project of ``gitlab`` (the GitOps repository, ``gitlab.project``; the input's
    ``scope`` does not choose it) and the registry of ``registry`` (None: base images are not fixable).
    ``jira_url`` is the Jira site (e.g. ``https://acme.atlassian.net``) the MR description links the issue on
    (``fixloop.core.change.mr.render`` links only an ``https`` URL); None: the key alone. ``llm``: the endpoint of a
    model that drafts the MR text and may leave out validated operations (``fixloop.core.change.draft``); None: the
    rules write it. Any failure of the model, or a draft fixloop refuses, gives the rules' MR, saying why."""

    def __init__(
        self,
        gitlab: GitLabSettings,
        registry: RegistrySettings | None = None,
        jira_url: str | None = None,
        llm: LlmSettings | None = None,
    ) -> None:
        self.gitlab = GitLabClient(gitlab)
        self.registry = RegistryClient(registry) if registry is not None else None
        self.jira_url = jira_url.rstrip("/") if jira_url else None
        self.llm = llm

    def close(self) -> None:
        if self.registry is not None:
            self.registry.close()

    @activity.defn(name=PLAN_CHANGE)
    async def plan(self, inp: PlanChangeInput) -> PlannedChange:
        """Plan ``inp.work_item``'s change on the head of the default branch (recorded as ``base_sha``). Not located
        -> ``located=False`` with the reason; a change failing validation -> non-retryable ``ApplicationError`` of
        type ``PolicyViolation``; integration errors -> ``ApplicationError`` (non-retryable unless retryable)."""
        with as_application_errors():
            return await asyncio.to_thread(self._plan, inp)

    @activity.defn(name=PLAN_REMEDIATION)
    async def plan_remediation(self, inp: PlanRemediationInput) -> PlannedChange:
        """Plan an incident's remediation: the action ``fixloop.core.remediation.choose`` picks from its alerts and the
        culprit change of its top candidate, as a typed operation validated against the repository and its
        ``incidents:`` policy. No safe action -> ``located=False`` with the reason (said on Jira)."""
        with as_application_errors():
            return await asyncio.to_thread(self._plan_remediation, inp)

    def _plan_remediation(self, inp: PlanRemediationInput) -> PlannedChange:
        culprit = _top_culprit(inp)
        choice = remediation.choose(inp.work_item, inp.signals, culprit)
        if choice.action is None:
            return PlannedChange(located=False, reason=choice.reason)
        return PlannedChange(located=False, reason=f"{choice.reason} (the {choice.action.value} change is not built)")

    def _plan(self, inp: PlanChangeInput) -> PlannedChange:
        default = self.gitlab.default_branch()
        base_sha = self.gitlab.branch_head(default)
        if base_sha is None:
            raise IntegrationError("gitlab", f"the default branch {clean(default, 100)} has no head")
        tags = RegistryTags(self.registry)
        repo = GitLabRepo(self.gitlab, base_sha)
        try:
            verification = VerificationPolicy.from_policy_text(repo.read(POLICY_FILE))
        except ValueError as e:
            raise PolicyViolation(f"verification: {clean(str(e), 300)}", POLICY_FILE) from None
        result = plan(inp.work_item, inp.signals, repo, tags=tags)
        if isinstance(result, NotLocated):
            not_fixable = _explain(result.not_fixable, tags.failed)
            reason = result.reason
            if tags.failed and not_fixable != result.not_fixable:
                reason = clean("; ".join(f"{n.package}: {n.reason}" for n in not_fixable), 2000)
            return PlannedChange(
                located=False,
                reason=reason,
                base_sha=base_sha,
                not_fixable=[f"{n.package}: {n.reason}" for n in not_fixable],
            )
        text = describe_plan(verification, service_of_paths(op.path for op in result.operations))
        planned = self._planned(inp, result, base_sha, _explain(result.not_fixable, tags.failed), repo, text)
        service = service_of_paths(op.path for op in planned.changes)
        return planned.model_copy(update={"verification": verification, "service": service})

    def _planned(
        self,
        inp: PlanChangeInput,
        result: Plan,
        base_sha: str,
        not_fixable: list[NotFixable],
        repo: RepoView,
        verification: str | None = None,
    ) -> PlannedChange:
        result = result.model_copy(update={"not_fixable": not_fixable})
        key = inp.jira_key if inp.jira_key and _JIRA_KEY.fullmatch(inp.jira_key) else None
        url = f"{self.jira_url}/browse/{key}" if key and self.jira_url else None
        drafted_by, refused, text = RULES, None, None
        if self.llm is not None:
            before = self._kept_before(result, repo)
            try:
                drafted, draft = self._draft(inp, result, repo)
                if before is not None and drafted.operations != before.operations:
                    raise DraftRefused(
                        f"the open merge request makes {len(before.operations)} of the {len(result.operations)} "
                        "validated operations; a re-run keeps them"
                    )
            except (LlmError, DraftRefused, ConfigError) as e:  # the loop goes on with the rules' text
                refused = clean(str(e), 300)
                log.warning("%s: the model's draft was refused: %s", inp.work_item.id, refused)
                result = before or result
            else:
                result, drafted_by = drafted, clean(self.llm.model or "a model", 80)
                text = mr_text(
                    inp.work_item,
                    result,
                    inp.signals,
                    draft,
                    drafted_by,
                    jira_key=key,
                    jira_url=url,
                    verification=verification,
                )
        if text is None:
            text = render(
                inp.work_item,
                result,
                inp.signals,
                jira_key=key,
                jira_url=url,
                verification=verification,
                draft_refused=refused,
            )
        return PlannedChange(
            located=True,
            branch=result.branch,
            operations=[op.describe() for op in result.operations],
            base_sha=base_sha,
            changes=list(result.operations),
            title=text.title,
            description=text.description,
            labels=text.labels,
            not_fixable=[f"{n.package}: {n.reason}" for n in result.not_fixable],
            risks=list(result.risks),
            drafted_by=drafted_by,
        )

    def _draft(self, inp: PlanChangeInput, result: Plan, repo: RepoView) -> tuple[Plan, Draft]:
        """The model's draft of ``result``'s MR and the plan it keeps (``apply_draft``). Runs in the activity's
        worker thread: the one async completion call gets its own event loop there. Raises ``LlmError`` or
        ``DraftRefused``."""
        assert self.llm is not None
        complete = functools.partial(structured_completion, self.llm)
        draft = asyncio.run(ask(inp.work_item, result, inp.signals, complete))
        return apply_draft(result, draft, repo), draft

    def _kept_before(self, result: Plan, repo: RepoView) -> Plan | None:
        """``result`` reduced to the operations the open MR of its branch makes, when fixloop's block in the MR's
        description lists a strict subset of ``result``'s validated operations (a model left some out on an earlier
        run): a re-run then commits the same contents whatever the model answers now (a different pick would
        conflict with the branch). None otherwise."""
        mr = self.gitlab.find_merge_request(result.branch)
        block = read_back(mr.description) if mr is not None and mr.description else None
        if block is None or block.get("work_item") != result.work_item_id:
            return None
        try:
            kept = keep_operations(result, _OPERATIONS.validate_python(block.get("operations")), repo)
        except (ValidationError, DraftRefused):
            return None
        return None if kept is result else kept
