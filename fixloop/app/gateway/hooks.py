"""The GitLab and Flux hooks: a delivery wakes a loop (an update or a signal), it is never believed. A revision
Flux reports applied is also told to the scope's intake (``flux_applied``: the culprit change of later incidents).

GitLab (``POST /v1/hooks/gitlab``): a merge request's loop is found from its source branch (``fixloop/<work-item-id>``
or ``fixloop/revert/<work-item-id>/<sha12>``) and the project's path; ``approval``/``approved`` actions go through
the loop's ``approve`` update (a deterministic update id: a re-delivery is one update), every other action through
the ``merge_request_event`` signal; the loop reads approvals and merge from the GitLab API before it decides.

Flux (``POST /v1/hooks/flux``): a deploy outcome of FIXLOOP_FLUX_KUSTOMIZATION is signalled (``deploy_event``) to
every running loop of the scope in stage ``await_deploy``; an event outside FIXLOOP_GATEWAY_FLUX_MAX_AGE /
``..._FLUX_MAX_FUTURE`` is a 422, one this process already delivered (``flux_event_key``) a 200 ``ignored``
(details: ``fixloop.app.gateway``'s docstring, "Flux replays").
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fastapi import Request
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from fixloop.activities.deploy import deploy_event
from fixloop.app.gateway.auth import authorize_flux, authorize_gitlab
from fixloop.app.gateway.requests import Rejected, Unavailable, check_content_type, decode_body, read_body
from fixloop.app.gateway.settings import GatewaySettings
from fixloop.core.gate import Approval, MrState
from fixloop.core.models import WORK_ITEM_ID, WORK_ITEM_ID_MAX
from fixloop.core.parsing import clean
from fixloop.integrations.flux import (
    MAX_EVENT_BYTES,
    FluxEvent,
    FluxEventError,
    FluxSettings,
    applied_revisions,
    parse_event,
)
from fixloop.integrations.gitlab.webhook import (
    APPROVAL_ACTIONS,
    EVENTS,
    MAX_HOOK_BYTES,
    MergeRequestHook,
    MergeRequestHookError,
    WebhookSettings,
    parse_merge_request_hook,
)
from fixloop.workflows import options
from fixloop.workflows.contracts.intake import FluxApplied, intake_id
from fixloop.workflows.contracts.loop import ApprovalEvent, DeployEvent, MergeRequestEvent, Stage, loop_id
from fixloop.workflows.intake import IntakeWorkflow
from fixloop.workflows.remediation import RemediationWorkflow

log = logging.getLogger(__name__)

GITLAB_EVENT_HEADER = "X-Gitlab-Event"
LOOPS_LISTED = 1_000  # loops of one scope signalled per Flux event at most
FLUX_EVENTS_REMEMBERED = 10_000  # Flux event keys kept for the replay check (per process; oldest dropped first)

Temporal = Callable[[], Awaitable[Client]]  # the gateway's lazily connected client (``Unavailable`` while down)
Answer = tuple[int, dict]

_ID = WORK_ITEM_ID.removeprefix("^").removesuffix("$")  # one group: the id (either form)
_BRANCH = re.compile(rf"^fixloop/{_ID}$")
_REVERT_BRANCH = re.compile(rf"^fixloop/revert/{_ID}/[0-9a-f]{{12}}$")


def fixloop_work_item(branch: str) -> str | None:
    """The work item id of a fixloop branch (``fixloop/<id>``, ``fixloop/revert/<id>/<sha12>``; the id
    ``<service>-<kind>-<hash>`` or an earlier release's ``wi-<hash>``, ``fixloop.core.models.WORK_ITEM_ID``), else
    None."""
    if len(branch) > 200:
        return None
    m = _BRANCH.match(branch) or _REVERT_BRANCH.match(branch)
    return m.group(1) if m and len(m.group(1)) <= WORK_ITEM_ID_MAX else None


def hook_field(message: str) -> str:
    """The field a ``MergeRequestHookError`` message is about (``invalid or missing: a.b, c`` -> ``a.b``)."""
    head, _, rest = message.partition(":")
    if head == "invalid or missing":
        return clean(rest.strip().split(",")[0].split(" ")[0], 200) or "body"
    return clean(head, 200) or "body"


def flux_event_key(event: FluxEvent) -> tuple[str, ...]:
    """What makes a Flux event the same event for the replay check: the involved object (kind, namespace, name),
    the revision, the reason and the timestamp (notification-controller gives a new timestamp to each new event)."""
    o = event.involvedObject
    return (o.kind, o.namespace or "", o.name, event.revision or "", event.reason, event.timestamp.isoformat())


def event_field(message: str) -> str:
    """The field a ``FluxEventError`` message is about (``not a Flux event (invalid: a.b, c)`` -> ``a.b``)."""
    m = re.search(r"invalid: ([^,)]+)", message)
    return clean(m.group(1), 200) if m else "body"


def unavailable(e: BaseException, wid: str) -> Unavailable:
    """The 503 of a Temporal call for ``wid`` that failed (logged without the payload)."""
    log.warning("Temporal call for %s failed: %s: %s", wid, type(e).__name__, clean(e, 300))
    return Unavailable("the event was not delivered")


def rpc_outcome(e: RPCError, wid: str) -> Answer:
    """200 ``ignored`` when loop ``wid`` does not exist or has ended, else the 503."""
    if e.status is RPCStatusCode.NOT_FOUND:  # no such loop, or it has ended
        return 200, {"workflow": wid, "ignored": "no running loop with this id"}
    raise unavailable(e, wid)


class GitLabHook:
    """``POST /v1/hooks/gitlab``: a GitLab merge request hook -> the ``approve`` update or the
    ``merge_request_event`` signal of its loop."""

    def __init__(self, settings: GatewaySettings, webhook: WebhookSettings, temporal: Temporal) -> None:
        self.settings = settings
        self.webhook = webhook
        self.temporal = temporal

    async def __call__(self, request: Request) -> Answer:
        """A wake-up (the loop reads the merge request from GitLab)."""
        authorize_gitlab(request, self.webhook)
        check_content_type(request)
        body = await read_body(request, min(self.settings.max_body_bytes, MAX_HOOK_BYTES))
        event = request.headers.get(GITLAB_EVENT_HEADER)
        if event is not None and event.strip() not in EVENTS:
            return 200, {"ignored": f"{clean(event, 60)!r} is not a merge request event"}
        doc = decode_body(body, self.settings)
        if not isinstance(doc, dict):
            raise Rejected(400, "malformed", "not a GitLab webhook: the body is not a JSON object", "body")
        kind = doc.get("object_kind")
        if kind != "merge_request":
            if isinstance(kind, str):  # another event of a system hook (push, tag push, ...)
                return 200, {"ignored": f"object_kind {clean(kind, 40)!r} is not a merge request event"}
            raise Rejected(400, "malformed", "not a GitLab merge request event: no object_kind", "object_kind")
        try:
            hook = parse_merge_request_hook(doc, event)
        except MergeRequestHookError as e:
            raise Rejected(422, "invalid", f"invalid merge request event: {e}", hook_field(str(e))) from None
        work_item = fixloop_work_item(hook.object_attributes.source_branch)
        if work_item is None:
            return 200, {"ignored": f"branch {clean(hook.object_attributes.source_branch, 100)!r} is not fixloop's"}
        wid = loop_id(hook.project_path, work_item)
        if hook.action in APPROVAL_ACTIONS:
            return await self._approve(hook, wid)
        return await self._mr_event(hook, wid)

    async def _approve(self, hook: MergeRequestHook, wid: str) -> Answer:
        """Wake loop ``wid`` with the ``approve`` update (its validator may refuse an obvious non-approval: 200
        ``ignored``); the approval it claims counts only if GitLab's API lists it."""
        try:
            approval = hook.approval(self.settings.bot_username)
        except MergeRequestHookError as e:
            raise Rejected(422, "invalid", f"invalid merge request event: {e}", hook_field(str(e))) from None
        assert approval is not None  # an approval action always gives one
        update = ApprovalEvent(approval=Approval(**approval.model_dump()))
        client = await self.temporal()
        handle = client.get_workflow_handle_for(RemediationWorkflow.run, wid)
        try:
            await asyncio.wait_for(
                handle.execute_update(
                    RemediationWorkflow.approve,
                    update,
                    id=f"gitlab-approval/{hook.iid}/{approval.by}/{approval.sha}",  # a re-delivery is one update
                ),
                self.settings.temporal_timeout,
            )
        except WorkflowUpdateFailedError as e:  # the validator refused it: nothing was recorded
            cause = e.cause.message if hasattr(e.cause, "message") else str(e.cause)
            return 200, {"workflow": wid, "ignored": clean(cause, 300)}
        except RPCError as e:
            return rpc_outcome(e, wid)
        except Exception as e:
            raise unavailable(e, wid) from None
        return 200, {"workflow": wid, "woken": True, "update": "approve"}

    async def _mr_event(self, hook: MergeRequestHook, wid: str) -> Answer:
        """Wake loop ``wid`` with the ``merge_request_event`` signal; the state it claims is never believed."""
        if hook.head_sha is None:
            return 200, {"workflow": wid, "ignored": "no object_attributes.last_commit: the event names no head"}
        try:
            event = MergeRequestEvent(
                iid=hook.iid, state=MrState(hook.state), head_sha=hook.head_sha, merge_sha=hook.merge_sha
            )
        except ValueError:
            raise Rejected(
                422,
                "invalid",
                f"object_attributes.state: {clean(hook.state, 40)!r} is not a merge request state",
                "object_attributes.state",
            ) from None
        client = await self.temporal()
        handle = client.get_workflow_handle_for(RemediationWorkflow.run, wid)
        try:
            await asyncio.wait_for(
                handle.signal(RemediationWorkflow.merge_request_event, event), self.settings.temporal_timeout
            )
        except RPCError as e:
            return rpc_outcome(e, wid)
        except Exception as e:
            raise unavailable(e, wid) from None
        return 200, {"workflow": wid, "woken": True, "signal": "merge_request_event", "action": hook.action}


class FluxHook:
    """``POST /v1/hooks/flux``: a Flux event -> ``deploy_event`` to every running loop of the scope waiting for its
    deploy, once per event per process (the replay check's keys are kept here)."""

    def __init__(self, settings: GatewaySettings, flux: FluxSettings, temporal: Temporal) -> None:
        self.settings = settings
        self.flux = flux
        self.temporal = temporal
        self._seen: OrderedDict[tuple[str, ...], float] = OrderedDict()  # Flux event key -> its timestamp

    async def __call__(self, request: Request) -> Answer:
        check_content_type(request)
        body = await read_body(request, min(self.settings.max_body_bytes, MAX_EVENT_BYTES))
        authorize_flux(request, body, self.flux)
        doc = decode_body(body, self.settings)  # the one parse: bounded nesting, a 400 for what is not JSON
        try:
            event = parse_event(doc)
        except FluxEventError as e:
            raise Rejected(422, "invalid", str(e), event_field(str(e))) from None
        self._check_fresh(event)
        deploy = deploy_event(event, self.flux.kustomization)
        if deploy is None:
            return 200, {"ignored": f"not a deploy outcome of Kustomization {self.flux.kustomization}"}
        key = flux_event_key(event)
        if key in self._seen:
            return 200, {"ignored": "this event was already delivered (a replay or a re-delivery)"}
        self._seen[key] = event.timestamp.timestamp()  # claimed now: a concurrent copy is a replay too
        try:
            answer = await self._signal_deploy(deploy)
            await self._tell_intake(event)
            return answer
        except BaseException:
            self._seen.pop(key, None)  # not delivered: Flux's retry must get through
            raise
        finally:
            self._forget_old_events()

    def _check_fresh(self, event: FluxEvent) -> None:
        """422 (field ``timestamp``) for an event older than FIXLOOP_GATEWAY_FLUX_MAX_AGE or further ahead than
        FIXLOOP_GATEWAY_FLUX_MAX_FUTURE: a replay of an old signed event changes nothing."""
        stamp = event.timestamp if event.timestamp.tzinfo else event.timestamp.replace(tzinfo=UTC)
        age = (datetime.now(UTC) - stamp).total_seconds()
        if age > self.settings.flux_max_age:
            raise Rejected(
                422,
                "invalid",
                f"event timestamp is {age:.0f} s old, over FIXLOOP_GATEWAY_FLUX_MAX_AGE "
                f"({self.settings.flux_max_age:g} s)",
                "timestamp",
            )
        if -age > self.settings.flux_max_future:
            raise Rejected(
                422,
                "invalid",
                f"event timestamp is {-age:.0f} s ahead, over FIXLOOP_GATEWAY_FLUX_MAX_FUTURE "
                f"({self.settings.flux_max_future:g} s)",
                "timestamp",
            )

    def _forget_old_events(self) -> None:
        """Drop remembered keys whose event is now too old to be accepted anyway, and the oldest beyond
        ``FLUX_EVENTS_REMEMBERED``."""
        seen = self._seen
        horizon = time.time() - self.settings.flux_max_age
        while seen and (len(seen) > FLUX_EVENTS_REMEMBERED or next(iter(seen.values())) < horizon):
            seen.popitem(last=False)

    async def _tell_intake(self, event: FluxEvent) -> None:
        """A revision Flux applied (``ReconciliationSucceeded``) is told to the scope's intake (``flux_applied``),
        which keeps it for the culprit change of later incidents. No intake running yet: nothing to tell (it starts
        with the first signal of the scope); Temporal failing: ``Unavailable`` (503), so Flux retries."""
        revisions = applied_revisions(None, [event], self.flux.kustomization)
        if not revisions:
            return
        client = await self.temporal()
        handle = client.get_workflow_handle(intake_id(self.settings.scope))
        try:
            await asyncio.wait_for(
                handle.signal(IntakeWorkflow.flux_applied, FluxApplied(revisions=revisions)),
                self.settings.temporal_timeout,
            )
        except RPCError as e:
            if e.status is not RPCStatusCode.NOT_FOUND:
                raise unavailable(e, f"the intake of {self.settings.scope}") from None
        except Exception as e:
            raise unavailable(e, f"the intake of {self.settings.scope}") from None

    async def _signal_deploy(self, deploy: DeployEvent) -> Answer:
        scope = self.settings.scope
        query = (
            f'{options.SA_STAGE.name} = "{Stage.AWAIT_DEPLOY.value}" AND {options.SA_SCOPE.name} = "{scope}" '
            'AND ExecutionStatus = "Running"'
        )
        client = await self.temporal()

        async def signal_all() -> list[str]:
            ids = [w.id async for w in client.list_workflows(query, limit=LOOPS_LISTED)]
            results = await asyncio.gather(
                *(client.get_workflow_handle(wid).signal(RemediationWorkflow.deploy_event, deploy) for wid in ids),
                return_exceptions=True,
            )
            for r in results:
                if isinstance(r, BaseException) and not (
                    isinstance(r, RPCError) and r.status is RPCStatusCode.NOT_FOUND
                ):
                    raise r
            return [wid for wid, r in zip(ids, results, strict=True) if not isinstance(r, BaseException)]

        try:
            loops = await asyncio.wait_for(signal_all(), self.settings.temporal_timeout)
        except Exception as e:
            raise unavailable(e, f"loops of {scope}") from None
        return 200, {"revision": deploy.revision, "ready": deploy.ready, "loops": loops}
