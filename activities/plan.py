"""Planning the change of a work item: locate the fix in the GitOps repository and produce typed, validated
edit operations (stage 2).

``PlanActivities.plan`` (activity ``change.plan``; input and output: ``fixloop.workflows.contracts.plan``) reads the
repository through GitLab at the head of the default branch (``GitLabRepo``), the registry's tag lists
(``RegistryTags``) and runs the pure planner ``fixloop.core.change.plan``; the MR text comes from
``fixloop.core.change.mr``. The planning itself (``ChangePlanner.plan_at``) takes any ``RepoView`` and tag lookup:
``fixloop plan`` runs it on a local checkout (``fixloop.app.dryrun``). ``change.plan_dependent`` plans the rebuild
of an image FROM its base image's new tag (a base-image chain, ``ChangePlanner.plan_dependent_at``);
``change.plan_promotion`` the tag change of an environment.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Literal, Protocol

from pydantic import TypeAdapter, ValidationError
from temporalio import activity

from fixloop.activities.errors import as_application_errors
from fixloop.activities.heartbeat import heartbeat, in_thread
from fixloop.core import remediation
from fixloop.core.change import NotFixable, NotLocated, Plan, RepoView, plan
from fixloop.core.change.draft import Draft, DraftRefused, apply_draft, ask, keep_operations, mr_text
from fixloop.core.change.edit import apply
from fixloop.core.change.facts import (
    LIFECYCLES_MAX,
    RELEASES_MAX,
    ChangeFacts,
    Cycle,
    Lifecycle,
    PackageRelease,
    bumped_images,
    dependency_roles,
    image_products,
    lifecycle,
)
from fixloop.core.change.images import Environment, ImageChainError, current_tag, delivery_of, rebuild_ops
from fixloop.core.change.mr import (
    callouts,
    code,
    delivery_section,
    read_back,
    render,
    render_incident,
    render_promotion,
    render_rebuild,
)
from fixloop.core.change.ops import (
    BumpGoModule,
    BumpMavenDependency,
    BumpNpmPackage,
    BumpPythonPin,
    BumpWorkloadImage,
    Operation,
    PolicyViolation,
    RevertCommit,
    RollbackImage,
    SetReplicas,
    subject,
)
from fixloop.core.change.plan import REGISTRIES, ReleaseList
from fixloop.core.change.policy import POLICY_FILE, Policy, load_policy, validate
from fixloop.core.change.remedy import Remedy, memory_sizing, remedy_change, revert_change, rollback_tags
from fixloop.core.config import ConfigError, LlmSettings
from fixloop.core.culprit import Culprit, describe_culprit, duration, workload_doc
from fixloop.core.incidents import onset_of, top_service
from fixloop.core.models import datadog_monitor_ids
from fixloop.core.naming import named
from fixloop.core.parsing import clean
from fixloop.core.service import service_of_paths, services_of_paths
from fixloop.core.verification import VerificationPolicy, describe_plans
from fixloop.integrations.datadog.api import DatadogClient, DatadogSettings
from fixloop.integrations.endoflife import EndOfLifeClient, EndOfLifeSettings
from fixloop.integrations.errors import AuthError, HttpStatusError, IntegrationError, NotFound, TransportError
from fixloop.integrations.gitlab.api import GitLabClient, GitLabSettings
from fixloop.integrations.llm import LlmError, structured_completion
from fixloop.integrations.pypi import PypiClient, PypiSettings
from fixloop.integrations.registry import RegistryClient, RegistrySettings
from fixloop.workflows.contracts.plan import (
    RULES,
    SERVICES_MAX,
    PlanChangeInput,
    PlanDependentInput,
    PlannedChange,
    PlanPromotionInput,
    PlanRemediationInput,
)

# Temporal activity names, unchanged since activities/change.py (running histories and the worker's metrics name them):
PLAN_CHANGE = "change.plan"
PLAN_REMEDIATION = "change.plan_remediation"


PLAN_PROMOTION = "change.plan_promotion"
PLAN_DEPENDENT = "change.plan_dependent"


def _verification_of(policy_text: str | None) -> VerificationPolicy:
    """The ``verification:`` of a ``fixloop.yaml`` text (defaults when absent); a malformed one is a
    ``PolicyViolation`` naming the key."""
    try:
        return VerificationPolicy.from_policy_text(policy_text)
    except ValueError as e:
        raise PolicyViolation(f"verification: {clean(str(e), 300)}", POLICY_FILE) from None


def _delivered(planned: PlannedChange, paths: Sequence[str], repo: RepoView, service: str | None) -> PlannedChange:
    """``planned`` with its ``delivery`` (``fixloop.core.change.images.delivery_of`` under the repository's
    ``fixloop.yaml``) and the description's ``### Delivery`` section before its read-back block. A change the chain
    cannot follow (it builds several images, or an environment's file lacks the image) keeps no delivery and says
    why in its risks: Flux applying the merge is then all the loop waits for."""
    policy = load_policy(repo.read(POLICY_FILE))
    try:
        delivery = delivery_of(policy.chain, list(paths), repo.read, service)
    except ImageChainError as e:
        risk = f"fixloop cannot follow this change to what runs: {clean(str(e), 300)}"
        return planned.model_copy(update={"risks": [*planned.risks, risk]})
    description = planned.description or ""
    section = "\n".join(delivery_section(delivery))
    block = description.rfind("<!-- fixloop:")
    if block >= 0:
        description = description[:block] + section + "\n" + description[block:]
    else:
        description = description + "\n" + section + "\n"
    return planned.model_copy(update={"delivery": delivery, "description": description})


# --- the implementation ----------------------------------------------------------------------------------------


log = logging.getLogger(__name__)

FILE_MAX_BYTES = 1 << 20  # files larger than this are not read (a view sees them as absent)
_DOCKER_HUB = ("docker.io/", "index.docker.io/", "registry-1.docker.io/")


_RISKS = {
    "revert": "Reverting restores the files to what ran before the culprit change; anything that came to depend on "
    "the change since (a migration, a client of a new API) breaks again.",
    "rollback_image": "The previous image runs again: whatever the new tag fixed is unfixed again.",
    "memory": "More memory per pod: the node must have room, or pods stay Pending; a leak only takes longer.",
    "replicas": "More pods use more of the cluster; a bottleneck behind the service (a database) gets more load.",
}
_WORKLOADS = ("Deployment", "StatefulSet")


def _fence(diff: str) -> str:
    """A unified diff inside a fenced block: bounded, no line can close the fence."""
    lines = [ln.replace("```", "``\u200b`") for ln in diff.splitlines()[:200]]
    return "\n".join("  " + ln for ln in lines)


def _workload_site(repo: GitLabRepo, name: str) -> tuple[str, dict] | None:
    """The first manifest (path order) declaring a Deployment or StatefulSet named ``name``, with its document."""
    for path in repo.list():
        if not path.endswith((".yaml", ".yml")):
            continue
        text = repo.read(path)
        doc = workload_doc(name, text, _WORKLOADS) if text and name in text else None
        if doc is not None:
            return path, doc
    return None


def _container(doc: dict, service: str) -> dict:
    """The container of the workload named like it, else its first one."""
    spec = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict) and c.get("name")]
    if not containers:
        raise PolicyViolation(f"the workload {service} declares no container")
    return next((c for c in containers if c["name"] == service), containers[0])


def _image_name(container: dict) -> str | None:
    image = str(container.get("image") or "")
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else (image or None)


def _quantity(value: object) -> str | None:
    return None if value is None else str(value)


def _top_culprit(inp: PlanRemediationInput) -> Culprit | None:
    """The culprit change of the incident's top candidate's service, if its investigation found one."""
    top = top_service(inp.work_item)
    if inp.investigation is None or top is None:
        return None
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
            heartbeat(f"list the repository at {self.sha[:12]}")
            self._paths = sorted(i.path for i in self.client.tree(ref=self.sha, recursive=True) if i.type == "blob")
        return self._paths

    def read(self, path: str) -> str | None:
        if path not in self._texts:
            heartbeat(f"read {path}")
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
            heartbeat(f"list the tags of {name}")
            return self.client.tags(name)
        except AuthError:
            raise
        except IntegrationError as e:
            if e.retryable:
                raise
            self.failed[image] = f"the registry could not list its tags ({clean(e.message, 200)})"
            return []


def _not_looked_up(e: IntegrationError, who: str) -> str:
    """Why a registry's answer is missing, as the MR says it (never the error's detail: it may name hosts)."""
    if isinstance(e, TransportError):
        return f"not looked up: {who} unreachable"
    if isinstance(e, HttpStatusError):
        return f"not looked up: {who} answered HTTP {e.status}"
    return f"not looked up: {who} gave no usable answer"


_ECOSYSTEM: dict[type, Literal["npm", "go", "maven"]] = {
    BumpNpmPackage: "npm",
    BumpGoModule: "go",
    BumpMavenDependency: "maven",
}


class FactLookups:
    """The facts of a change's merge request (``fixloop.core.change.facts``): the role of each bumped package read
    from the repository, its target release from PyPI (``pypi``; None: lookups off), and the end of life of each
    bumped image's release line from endoflife.date (``endoflife``). No answer never fails the plan: the MR says
    what was not looked up and why; after a registry's first transport error or 429/5xx the rest of the change's
    lookups on it are skipped with the same reason, so a dead registry costs one timeout per change. At most
    ``RELEASES_MAX`` packages and ``LIFECYCLES_MAX`` release lines per change."""

    def __init__(self, pypi: PypiClient | None, endoflife: EndOfLifeClient | None) -> None:
        self.pypi = pypi
        self.endoflife = endoflife

    def __call__(
        self, operations: Sequence[Operation], repo: RepoView, today: date, pypi_down: str | None = None
    ) -> ChangeFacts:
        """The facts of ``operations``; ``pypi_down``: why PyPI is not asked again for this change (the planning's
        release lists found it down: ``ReleaseLists.down``)."""
        return ChangeFacts(
            looked_up_on=today,
            roles=dependency_roles(operations, repo),
            releases=self._releases(operations, pypi_down),
            lifecycles=self._lifecycles(operations),
        )

    def _releases(self, operations: Sequence[Operation], pypi_down: str | None = None) -> list[PackageRelease]:
        out: list[PackageRelease] = []
        down: str | None = None if self.pypi is not None else "not looked up: PyPI lookups are off"
        down = f"not looked up: {pypi_down}" if pypi_down else down
        for op in operations:
            if len(out) >= RELEASES_MAX:
                break
            if isinstance(op, BumpNpmPackage | BumpGoModule | BumpMavenDependency):
                eco = _ECOSYSTEM[type(op)]
                why = f"not looked up: fixloop reads release notes from PyPI only, not for {eco} packages"
                out.append(PackageRelease(ecosystem=eco, package=subject(op), version=op.new, missing=why))
                continue
            if not isinstance(op, BumpPythonPin):
                continue
            if down is not None or self.pypi is None:
                out.append(PackageRelease(ecosystem="pypi", package=op.package, version=op.new, missing=down))
                continue
            try:
                heartbeat(f"look up {op.package} {op.new} on PyPI")
                out.append(self.pypi.release(op.package, op.new))
            except NotFound:
                why = f"PyPI lists no release {op.new} of {op.package}"
                out.append(PackageRelease(ecosystem="pypi", package=op.package, version=op.new, missing=why))
            except IntegrationError as e:
                why = _not_looked_up(e, "PyPI")
                if e.retryable:
                    down = why
                log.warning("PyPI lookup of %s %s: %s", op.package, op.new, clean(e.message, 200))
                out.append(PackageRelease(ecosystem="pypi", package=op.package, version=op.new, missing=why))
        return out

    def _lifecycles(self, operations: Sequence[Operation]) -> list[Lifecycle]:
        wanted = list(dict.fromkeys((image, *p) for image in bumped_images(operations) for p in image_products(image)))
        down: str | None = None if self.endoflife is not None else "not looked up: endoflife.date lookups are off"
        cycles: dict[str, list[Cycle] | str] = {}  # product -> its lines, or why there are none
        out: list[Lifecycle] = []
        for image, product, label, hint in wanted[:LIFECYCLES_MAX]:
            if product not in cycles and down is None and self.endoflife is not None:
                try:
                    heartbeat(f"look up {product} on endoflife.date")
                    cycles[product] = self.endoflife.cycles(product)
                except NotFound:
                    cycles[product] = f"endoflife.date has no product {product}"
                except IntegrationError as e:
                    why = _not_looked_up(e, "endoflife.date")
                    if e.retryable:
                        down = why
                    cycles[product] = why
                    log.warning("endoflife.date lookup of %s: %s", product, clean(e.message, 200))
            found = cycles.get(product, down)
            if isinstance(found, list):
                out.append(lifecycle(image, product, label, hint, found))
            else:
                out.append(Lifecycle(image=image, product=product, label=label, missing=found))
        return out


class ReleaseLists:
    """``plan()``'s release-list lookup for one change (``fixloop.core.change.plan.ReleaseLookup``): a Python
    package's released versions from PyPI (``pypi``; None: lookups off), asked once per package; other ecosystems
    get none, and say why. No answer never fails the plan: the MR says why it names the skipped release lines from
    the advisories; after PyPI's first transport error or 429/5xx the rest of the change's lists are not asked."""

    def __init__(self, pypi: PypiClient | None) -> None:
        self.pypi = pypi
        self.down: str | None = None if pypi is not None else "PyPI lookups are off"

    def __call__(self, ecosystem: str, package: str) -> ReleaseList:
        registry = REGISTRIES.get(ecosystem, "the registry")
        if ecosystem != "pypi":
            return ReleaseList(registry, None, f"fixloop reads release lists from PyPI only, not from {registry}")
        if self.down is not None or self.pypi is None:
            return ReleaseList(registry, None, self.down)
        try:
            heartbeat(f"list the releases of {package} on PyPI")
            return ReleaseList(registry, self.pypi.versions(package))
        except NotFound:
            return ReleaseList(registry, None, f"PyPI lists no project {clean(package, 100)}")
        except IntegrationError as e:
            why = _not_looked_up(e, "PyPI").removeprefix("not looked up: ")
            if e.retryable:
                self.down = why
            log.warning("PyPI release list of %s: %s", clean(package, 100), clean(e.message, 200))
            return ReleaseList(registry, None, why)


def _explain(items: Sequence[NotFixable], failed: dict[str, str]) -> list[NotFixable]:
    return [n.model_copy(update={"reason": failed[n.package]}) if n.package in failed else n for n in items]


_JIRA_KEY = re.compile(r"[A-Z][A-Z0-9_]{0,30}-\d{1,9}")
_OPERATIONS: TypeAdapter[list[Operation]] = TypeAdapter(list[Operation])


class TagSource(Protocol):
    """``plan()``'s tag lookup (``fixloop.core.change.TagLookup``) that also says why an image got no tags
    (``failed``: image -> the sentence for the MR), as ``RegistryTags`` does."""

    failed: dict[str, str]

    def __call__(self, image: str) -> Sequence[str]: ...


class ChangePlanner:
    """A fix planned on any ``RepoView`` at one commit: what ``change.plan`` runs on the GitLab project's default
    branch (``PlanActivities``) and ``fixloop plan`` on a local checkout (``fixloop.app.dryrun``). ``jira_url``,
    ``llm`` and ``facts``: as ``PlanActivities`` has them (``facts`` None: no registry is asked, the MR says the
    releases and end of life were not looked up)."""

    def __init__(
        self, jira_url: str | None = None, llm: LlmSettings | None = None, facts: FactLookups | None = None
    ) -> None:
        self.jira_url = jira_url.rstrip("/") if jira_url else None
        self.llm = llm
        self.facts = facts if facts is not None else FactLookups(None, None)

    def open_description(self, branch: str) -> str | None:
        """The description of the open merge request of ``branch`` (None: none is known): what a re-run with a
        model keeps its earlier pick of operations from (``_kept_before``)."""
        return None

    def plan_at(self, inp: PlanChangeInput, repo: RepoView, base_sha: str | None, tags: TagSource) -> PlannedChange:
        """``change.plan``'s answer for ``inp`` on ``repo`` (at commit ``base_sha``, recorded; None: a working tree),
        base images' tags from ``tags``: not located -> ``located=False`` with the reason; raises ``PolicyViolation``
        when the change fails validation (and, from ``tags``, what it raises)."""
        verification = _verification_of(repo.read(POLICY_FILE))
        releases = ReleaseLists(self.facts.pypi)
        result = plan(inp.work_item, inp.signals, repo, tags=tags, releases=releases)
        heartbeat("located" if not isinstance(result, NotLocated) else "not located")
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
        touched = service_of_paths(op.path for op in result.operations)
        text = describe_plans(verification, services_of_paths(op.path for op in result.operations))
        # the merge request names the service the change touches, as the loop's work item will (``named``)
        inp = inp.model_copy(update={"work_item": named(inp.work_item, touched)})
        facts = self.facts(result.operations, repo, datetime.now(UTC).date(), releases.down)
        heartbeat("write the merge request")
        planned = self._planned(inp, result, base_sha, _explain(result.not_fixable, tags.failed), repo, text, facts)
        service = service_of_paths(op.path for op in planned.changes)
        services = services_of_paths(op.path for op in planned.changes)[:SERVICES_MAX]
        paths = [path for op in planned.changes for path in op.paths()]
        return _delivered(planned, paths, repo, service).model_copy(
            update={"verification": verification, "service": service, "services": services}
        )

    def plan_dependent_at(self, inp: PlanDependentInput, repo: RepoView, base_sha: str | None) -> PlannedChange:
        """``change.plan_dependent``'s answer on ``repo`` (at commit ``base_sha``): the dependent's Dockerfile with
        every FROM of the base at another tag set to ``inp.tag`` (``fixloop.core.change.images.rebuild_ops``),
        validated against the policy, its merge request text and its own delivery (its image built, then its
        environments, or its own dependents). ``located=False`` with the reason when the Dockerfile no longer FROMs
        the base at a tag, the policy refuses the edit, or it is already FROM the tag (``running``)."""
        dep, base = inp.dependent, inp.base
        policy = load_policy(repo.read(POLICY_FILE))
        try:
            ops = rebuild_ops(repo.read(dep.dockerfile) or "", dep, base, inp.tag)
            if not ops:
                reason = f"{dep.dockerfile} is already FROM {base.image}:{inp.tag}"
                return PlannedChange(located=False, reason=reason, base_sha=base_sha, running=True)
            edits, _ = apply(ops, repo.read)
            validate(edits, repo.read, policy)
        except (PolicyViolation, ImageChainError) as e:
            return PlannedChange(located=False, reason=clean(str(e), 600), base_sha=base_sha)
        key = inp.jira_key if inp.jira_key and _JIRA_KEY.fullmatch(inp.jira_key) else None
        mr = render_rebuild(
            inp.work_item, base, dep, inp.tag, ops, digest=inp.digest, source_sha=inp.source_sha,
            source_iid=inp.source_iid, jira_key=key,
        )  # fmt: skip
        service = service_of_paths(op.path for op in ops)
        planned = PlannedChange(
            located=True,
            branch=f"fixloop/{inp.work_item.id}",
            operations=[op.describe() for op in ops],
            base_sha=base_sha,
            changes=list(ops),
            title=mr.title,
            description=mr.description,
            labels=mr.labels,
            verification=_verification_of(repo.read(POLICY_FILE)),
            service=service,
        )
        return _delivered(planned, [op.path for op in ops], repo, service)

    def _planned(
        self,
        inp: PlanChangeInput,
        result: Plan,
        base_sha: str | None,
        not_fixable: list[NotFixable],
        repo: RepoView,
        verification: str | None = None,
        facts: ChangeFacts | None = None,
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
                    facts=facts,
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
                facts=facts,
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
            facts=facts.of(result.operations) if facts is not None else None,
            callouts=callouts(result, facts, markup=False),
        )

    def _draft(self, inp: PlanChangeInput, result: Plan, repo: RepoView) -> tuple[Plan, Draft]:
        """The model's draft of ``result``'s MR and the plan it keeps (``apply_draft``). Runs in the activity's
        worker thread: the one async completion call gets its own event loop there. Raises ``LlmError`` or
        ``DraftRefused``."""
        assert self.llm is not None
        heartbeat(f"ask {clean(self.llm.model or 'the model', 80)} to draft the merge request")
        complete = functools.partial(structured_completion, self.llm)
        draft = asyncio.run(ask(inp.work_item, result, inp.signals, complete))
        return apply_draft(result, draft, repo), draft

    def _kept_before(self, result: Plan, repo: RepoView) -> Plan | None:
        """``result`` reduced to the operations the open MR of its branch makes, when fixloop's block in the MR's
        description lists a strict subset of ``result``'s validated operations (a model left some out on an earlier
        run): a re-run then commits the same contents whatever the model answers now (a different pick would
        conflict with the branch). None otherwise."""
        description = self.open_description(result.branch)
        block = read_back(description) if description else None
        if block is None or block.get("work_item") != result.work_item_id:
            return None
        try:
            kept = keep_operations(result, _OPERATIONS.validate_python(block.get("operations")), repo)
        except (ValidationError, DraftRefused):
            return None
        return None if kept is result else kept


class PlanActivities(ChangePlanner):
    """``change.plan`` on the GitLab project of ``gitlab`` (the GitOps repository, ``gitlab.project``; the input's
    ``scope`` does not choose it) and the registry of ``registry`` (None: base images are not fixable).
    ``jira_url`` is the Jira site (e.g. ``https://acme.atlassian.net``) the MR description links the issue on
    (``fixloop.core.change.mr.render`` links only an ``https`` URL); None: the key alone. ``llm``: the endpoint of a
    model that drafts the MR text and may leave out validated operations (``fixloop.core.change.draft``); None: the
    rules write it. Any failure of the model, or a draft fixloop refuses, gives the rules' MR, saying why.
    ``pypi`` / ``endoflife``: where the MR's package releases and image end-of-life dates are looked up
    (``FactLookups``); None or not ``enabled``: the MR says they were not looked up."""

    def __init__(
        self,
        gitlab: GitLabSettings,
        registry: RegistrySettings | None = None,
        jira_url: str | None = None,
        llm: LlmSettings | None = None,
        datadog: DatadogSettings | None = None,
        pypi: PypiSettings | None = None,
        endoflife: EndOfLifeSettings | None = None,
    ) -> None:
        super().__init__(
            jira_url,
            llm,
            FactLookups(
                PypiClient(pypi) if pypi is not None and pypi.enabled else None,
                EndOfLifeClient(endoflife) if endoflife is not None and endoflife.enabled else None,
            ),
        )
        self.datadog = datadog
        self.gitlab = GitLabClient(gitlab)
        self.registry = RegistryClient(registry) if registry is not None else None

    def close(self) -> None:
        if self.registry is not None:
            self.registry.close()
        for client in (self.facts.pypi, self.facts.endoflife):
            if client is not None:
                client.close()

    @activity.defn(name=PLAN_CHANGE)
    async def plan(self, inp: PlanChangeInput) -> PlannedChange:
        """Plan ``inp.work_item``'s change on the head of the default branch (recorded as ``base_sha``). Not located
        -> ``located=False`` with the reason; a change failing validation -> non-retryable ``ApplicationError`` of
        type ``PolicyViolation``; integration errors -> ``ApplicationError`` (non-retryable unless retryable)."""
        with as_application_errors():
            return await in_thread(self._plan, inp)

    @activity.defn(name=PLAN_REMEDIATION)
    async def plan_remediation(self, inp: PlanRemediationInput) -> PlannedChange:
        """Plan an incident's remediation: the action ``fixloop.core.remediation.choose`` picks from its alerts and the
        culprit change of its top candidate, as a typed operation validated against the repository and its
        ``incidents:`` policy. No safe action -> ``located=False`` with the reason (said on Jira)."""
        with as_application_errors():
            return await in_thread(self._plan_remediation, inp)

    def open_description(self, branch: str) -> str | None:
        mr = self.gitlab.find_merge_request(branch)
        return mr.description if mr is not None else None

    def _plan(self, inp: PlanChangeInput) -> PlannedChange:
        base_sha, repo = self._head()
        return self.plan_at(inp, repo, base_sha, RegistryTags(self.registry))

    def _head(self) -> tuple[str, GitLabRepo]:
        """The head of the default branch and the repository at it (what every plan is made against);
        ``IntegrationError`` when the branch has no head."""
        heartbeat("read the head of the default branch")
        default = self.gitlab.default_branch()
        base_sha = self.gitlab.branch_head(default)
        if base_sha is None:
            raise IntegrationError("gitlab", f"the default branch {clean(default, 100)} has no head")
        return base_sha, GitLabRepo(self.gitlab, base_sha)

    @activity.defn(name=PLAN_PROMOTION)
    async def plan_promotion(self, inp: PlanPromotionInput) -> PlannedChange:
        """Plan the merge request setting the built ``inp.tag`` in ``inp.delivery.targets[inp.target]``'s
        Kustomization file at the head of the default branch (a ``BumpWorkloadImage`` of its ``images:`` entry,
        applied again and validated against the policy by ``gitlab.open_merge_request``). The environment already
        running the tag -> ``located=False`` saying so; a file without the image's ``newTag`` -> non-retryable
        ``PolicyViolation``."""
        with as_application_errors():
            return await in_thread(self._plan_promotion, inp)

    @activity.defn(name=PLAN_DEPENDENT)
    async def plan_dependent(self, inp: PlanDependentInput) -> PlannedChange:
        """Plan the merge request rebuilding ``inp.dependent`` FROM ``inp.base``'s built ``inp.tag`` at the head of
        the default branch (``ChangePlanner.plan_dependent_at``; applied again and validated by
        ``gitlab.open_merge_request``). What cannot be planned is ``located=False`` with the reason, for the base's
        loop to record; integration errors -> ``ApplicationError`` (non-retryable unless retryable)."""
        with as_application_errors():
            return await in_thread(self._plan_dependent, inp)

    def _plan_dependent(self, inp: PlanDependentInput) -> PlannedChange:
        base_sha, repo = self._head()
        return self.plan_dependent_at(inp, repo, base_sha)

    def _plan_promotion(self, inp: PlanPromotionInput) -> PlannedChange:
        delivery, image = inp.delivery, inp.delivery.image
        if image is None or inp.target >= len(delivery.targets):
            raise PolicyViolation("the delivery builds no image, or has no such environment")
        env = delivery.targets[inp.target]
        base_sha, repo = self._head()
        text = repo.read(env.kustomization)
        current = (
            current_tag(text, Environment(name=env.name, kustomization=env.kustomization), image.image)
            if text
            else None
        )
        if current is None:
            raise PolicyViolation(f"sets no newTag for {image.image}", env.kustomization)
        if current == inp.tag:
            return PlannedChange(
                located=False,
                reason=f"{env.name} already runs {image.image}:{inp.tag}",
                base_sha=base_sha,
                running=True,
            )
        verification = _verification_of(repo.read(POLICY_FILE))
        op = BumpWorkloadImage(path=env.kustomization, image=image.image, current=current, new=inp.tag)
        mr = render_promotion(
            inp.work_item,
            delivery,
            inp.target,
            inp.tag,
            current,
            digest=inp.digest,
            source_sha=inp.source_sha,
            source_iid=inp.source_iid,
            verdicts=inp.verdicts,
            window=duration(verification.window.total_seconds()),
            jira_key=inp.jira_key if inp.jira_key and _JIRA_KEY.fullmatch(inp.jira_key) else None,
        )
        return PlannedChange(
            located=True,
            branch=f"fixloop/{inp.work_item.id}/{env.name}",
            operations=[op.describe()],
            base_sha=base_sha,
            changes=[op],
            title=mr.title,
            description=mr.description,
            labels=mr.labels,
            verification=verification,
            service=delivery.workload,
            delivery=delivery,
        )

    def _plan_remediation(self, inp: PlanRemediationInput) -> PlannedChange:
        base_sha, repo = self._head()
        policy_text = repo.read(POLICY_FILE)
        policy = load_policy(policy_text)
        verification = _verification_of(policy_text)
        culprit = _top_culprit(inp)
        choice = remediation.choose(inp.work_item, inp.signals, culprit, allowed=policy.incidents.actions)
        if choice.action is None or choice.service is None:
            return PlannedChange(located=False, reason=choice.reason, base_sha=base_sha)
        onset = onset_of(inp.work_item)
        try:
            built = self._remedy(choice, culprit, repo, policy, onset)
        except PolicyViolation as e:  # the chosen action cannot be made safely here: said, no MR
            return PlannedChange(
                located=False, reason=f"{choice.reason} It was not proposed: {clean(e.reason, 600)}", base_sha=base_sha
            )
        remedy, figures = built
        op = remedy.operation
        service = choice.service
        culprits = [
            describe_culprit(c.entity, c.culprit, commits_read=c.commits_read, lookback=policy.incidents.lookback)
            for c in (inp.investigation.candidates if inp.investigation else [])
        ]
        monitors = datadog_monitor_ids(inp.signals)
        lines = [f"- {code(op.describe(), 300)}"] + [f"  ```diff\n{_fence(remedy.diff)}\n  ```"]
        text = render_incident(
            inp.work_item,
            choice.reason,
            choice.action.value,
            lines,
            culprits=culprits,
            figures=figures,
            monitors=monitors,
            service=service,
            window=duration(verification.window.total_seconds()),
            risk=_RISKS[choice.action.value],
            jira_key=inp.jira_key,
        )
        planned = PlannedChange(
            located=True,
            branch=f"fixloop/{inp.work_item.id}",
            operations=[op.describe()],
            base_sha=base_sha,
            remedies=[op],
            title=text.title,
            description=text.description,
            labels=text.labels,
            verification=verification,
            service=service,
            action=choice.action.value,
            risks=[_RISKS[choice.action.value]],
        )
        return _delivered(planned, op.paths(), repo, service)

    def _remedy(
        self,
        choice: remediation.Choice,
        culprit: Culprit | None,
        repo: GitLabRepo,
        policy: Policy,
        onset: datetime | None,
    ) -> tuple[Remedy, list[str]]:
        """The typed operation of ``choice``, checked and applied at ``repo``'s commit (``fixloop.core.change.remedy``),
        and the figures behind it (memory). ``PolicyViolation`` when it cannot be made."""
        action, service = choice.action, choice.service or ""
        if action is remediation.Action.REVERT:
            if culprit is None or onset is None:
                raise PolicyViolation("no culprit commit or onset to revert")
            c = culprit.commit
            op = RevertCommit(  # no parents (a root commit): refused by check_remedy
                sha=c.sha,
                parents=tuple(c.parent_shas),
                files=tuple(dict.fromkeys(f.path for f in c.files)) or tuple(c.paths),
                applied_at=culprit.applied_at,
            )
            parent = op.parents[(op.mainline or 1) - 1] if op.parents else c.sha
            before = functools.partial(self._read_at, parent)
            after = functools.partial(self._read_at, c.sha)
            return revert_change(op, before=before, after=after, head=repo.read, policy=policy, onset=onset), []
        site = _workload_site(repo, service)
        if site is None:
            raise PolicyViolation(f"no Deployment or StatefulSet named {service} in the repository")
        path, doc = site
        container = _container(doc, service)
        if action is remediation.Action.ROLLBACK_IMAGE:
            if culprit is None:
                raise PolicyViolation("no culprit commit to roll back")
            c = culprit.commit
            files = [f.path for f in c.files]
            target = files[0] if files else path
            if not c.parent_shas:
                raise PolicyViolation(f"commit {c.sha[:12]} is a root commit; fixloop does not roll it back")
            parent = c.parent_shas[0]
            history = [(parent, self._read_at(parent, target)), (c.sha, self._read_at(c.sha, target))]
            image = _image_name(container)
            from_tag, to_tag = rollback_tags(
                history, c.sha, path=target, workload=service, container=container["name"], image=image
            )
            op = RollbackImage(
                path=target,
                workload=service,
                container=container["name"],
                image=image,
                from_tag=from_tag,
                to_tag=to_tag,
            )
            return remedy_change(op, repo.read, policy, onset=onset, culprit_at=culprit.applied_at), []
        if action is remediation.Action.MEMORY:
            limits = (container.get("resources") or {}).get("limits") or {}
            requests = (container.get("resources") or {}).get("requests") or {}
            if "memory" not in limits:
                raise PolicyViolation(f"{service}/{container['name']} sets no memory limit to raise", path)
            peak = self._memory_peak(service, container["name"], policy.incidents.lookback, onset)
            sizing = memory_sizing(
                peak,
                current_limit=str(limits["memory"]),
                current_request=_quantity(requests.get("memory")),
                policy=policy,
            )
            op = sizing.operation(path, service, container["name"])
            return remedy_change(op, repo.read, policy, onset=onset), [sizing.text()]
        replicas = int(doc.get("spec", {}).get("replicas", 1))
        wanted = min(policy.incidents.max_replicas, max(replicas + 1, -(-replicas * 3 // 2)))
        op = SetReplicas(path=path, workload=service, current=replicas, replicas=wanted)
        figures = [
            f"{service} runs {replicas} replica(s); {wanted} share the load (at most {policy.incidents.max_replicas})"
        ]
        return remedy_change(op, repo.read, policy, onset=onset), figures

    def _read_at(self, sha: str, path: str) -> str | None:
        return self.gitlab.read_file(path, sha)

    def _memory_peak(self, service: str, container: str, lookback: timedelta, onset: datetime | None) -> float:
        """The container's peak memory (bytes) from ``lookback`` before the onset to an hour after it (or now),
        read from Datadog's Kubernetes metrics
        (``kubernetes.memory.usage``, the agent's ``kube_deployment`` / ``kube_container_name`` tags:
        docs.datadoghq.com/containers/kubernetes/data_collected/). ``PolicyViolation`` without Datadog or data."""
        if self.datadog is None:
            raise PolicyViolation("no Datadog is configured to read the container's memory peak from")
        heartbeat(f"read the memory peak of {service}/{container} from Datadog")
        query = (
            f"max:kubernetes.memory.usage{{kube_deployment:{service},kube_container_name:{container}}}.rollup(max, 60)"
        )
        now = datetime.now(UTC)
        at = onset or now
        end = min(now, at + timedelta(hours=1))
        with DatadogClient(self.datadog) as dd:
            series = dd.query_metrics(query, at - lookback, end)
        values = [v for s in series for v in s.values()]
        if not values:
            raise PolicyViolation(f"Datadog has no kubernetes.memory.usage of {service}/{container} in the lookback")
        return max(values)
