"""RemediationWorkflow: one work item, from its Jira issue to a verdict (``../shared/design.md``, stages 1-7).

Workflow id ``remediate/<scope>/<work-item-id>`` (set by the IntakeWorkflow), so a re-delivered storm never starts
a second loop for the same fix. The run is a loop over ``state.stage``; each stage is an activity or a wait on a
signal/update with a poll fallback. Waits escalate (a Jira comment with a label) every ``escalate_after`` and end
the loop with a recorded outcome after ``max_escalations``, never silently. The whole state is one model handed to
continue-as-new when the history grows, so a loop may wait for weeks.

The approval gate and ``decide`` trust only GitLab's API (``fixloop.core.gate``): the ``approve`` update and the
``merge_request_event`` signal (GitLab webhooks via the gateway) only wake the loop, which then reads the merge
request (``gitlab.merge_request_state``; a burst of hooks is one read) and decides from what it read; a ``decide``
counts once ``gitlab.check_user`` shows its ``by`` is a real, active, allowed human, not the bot.

Byte budget of the carry (Temporal refuses a payload over 2 MiB): the intake starts a loop with a work item and its
signals of at most 1.5 MiB together (``workflows/intake.py``); joined alerts are kept up to ``ALERTS_MAX`` and
``ALERTS_MAX_BYTES`` (newest first; the others counted in ``alerts_dropped``), evidence up to ``EVIDENCE_MAX`` lines
of at most 2,000 characters. Before continue-as-new the carry is measured and, while it would pass
``CARRY_MAX_BYTES``, the oldest joined alerts, then the oldest evidence, then the start signals that are not alerts
(needed only for planning, which is behind) are dropped and counted, so the carry, and the ``status`` answer, fit.

Audit trail where people look (besides this history): every event is a Jira comment and a note on its merge request,
each once per merge request and event (the activities' dedup keys): the approval (who, at which head SHA, whose
approvals did not count, as the gate read them back from GitLab), the merge (merge commit, when), the deploy (the
revision Flux applied, environment, Kustomization, when seen Ready) and the verdict (every metric before -> after
with its unit). A failed verdict's revert is titled as a rollback (``Revert "<title>" — <why>``), the original merge
request is told ``Reverted by !N: <why>``, and ``LoopState.gate`` presents the merge request waiting at the human
gate (change, promotion or rollback).

Base-image chains: a merged change to a base image's source (``Delivery.dependents``: other images are built FROM
it) is built like any source change, then, instead of its promotion, ``AWAIT_DEPENDENTS`` plans each dependent's
rebuild FROM the new tag (``change.plan_dependent``) and starts one child RemediationWorkflow per dependent (the
loop id of its work item, ``fixloop.core.naming.rebuilt_on``; parent-close policy TERMINATE) at its merge request,
with the chain's Jira issue in its start state (``RemediationInput.chain``: no second issue); each follows the
normal path (gate, merge, its own build, promotion, verification) and the base's loop ends with their outcomes,
one Jira line per image.

Query ``status`` -> ``LoopState``. Search attributes (``fixloop.workflows.options``): stage, service, severity, Jira
key, merge request, scope, kind, outcome. The Temporal UI's static details (``static_details``: the work item's
signals summary) are set by the intake's start; ``workflow.set_current_details`` carries the stage, the gate, the
Jira issue, every merge request and the latest verdict (``_show``), Markdown, escaped and bounded.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from pydantic_core import to_json

    from fixloop.activities.build import BuildActivities
    from fixloop.activities.deploy import DeployActivities
    from fixloop.activities.investigate import InvestigateActivities
    from fixloop.activities.merge_request import MergeRequestActivities
    from fixloop.activities.plan import PlanActivities
    from fixloop.activities.verify import VerifyActivities
    from fixloop.activities.work_item import WorkItemActivities
    from fixloop.core.change.images import Delivery, Target
    from fixloop.core.change.mr import code
    from fixloop.core.culprit import describe_culprit
    from fixloop.core.gate import GateVerdict, MergeRequestState, MrState, decider_refusal, observe
    from fixloop.core.gate import gate as gate_verdict
    from fixloop.core.incidents import top_service
    from fixloop.core.markup import markdown, markdown_link
    from fixloop.core.metrics import (
        LOOPS_FINISHED,
        LOOPS_STARTED,
        STAGE_ENTERED,
        TIME_TO_MERGE,
        TIME_TO_VERIFY,
        VERDICTS,
    )
    from fixloop.core.models import (
        FIX_KINDS,
        Kind,
        RecentDeploy,
        Signal,
        Transition,
        WorkItem,
        WorkItemKind,
        alertmanager_alerts,
        batched,
        datadog_monitor_ids,
        signal_bytes,
    )
    from fixloop.core.naming import named, rebuilt_on
    from fixloop.core.parsing import clean
    from fixloop.core.rollout import RolloutState as Rollout
    from fixloop.core.service import touched_service
    from fixloop.core.verification import VerdictResult, VerificationPolicy, change_start
    from fixloop.workflows import options
    from fixloop.workflows.contracts.build import BuildStateInput
    from fixloop.workflows.contracts.deploy import DeployState, DeployStateInput, RolloutStateInput
    from fixloop.workflows.contracts.intake import intake_id
    from fixloop.workflows.contracts.investigate import CANDIDATES_MAX, CulpritCandidate, CulpritInput
    from fixloop.workflows.contracts.loop import (
        CHAIN_DEPTH_MAX,
        CHAIN_RECORDS_MAX,
        DECISIONS_PENDING_MAX,
        RECOVERED_ALERTS_MAX,
        AlertsJoined,
        ApprovalEvent,
        ChainLink,
        ChainRecord,
        Decision,
        DeployEvent,
        EnvironmentState,
        Evidence,
        Gate,
        GateKind,
        LoopState,
        MergeRequestEvent,
        MoreSignals,
        OpenFix,
        Outcome,
        Refresh,
        RemediationInput,
        Stage,
        loop_id,
    )
    from fixloop.workflows.contracts.merge_request import (
        CheckUserInput,
        DeleteBranchInput,
        MergeRequestRef,
        MergeRequestStateInput,
        NoteInput,
        OpenMergeRequestInput,
        OpenRevertInput,
    )
    from fixloop.workflows.contracts.plan import (
        PlanChangeInput,
        PlanDependentInput,
        PlanPromotionInput,
        PlanRemediationInput,
    )
    from fixloop.workflows.contracts.verify import JudgeInput, Verdict, every_service
    from fixloop.workflows.contracts.work_item import (
        FINDING_MAX,
        FINDINGS_MAX,
        CloseWorkItemInput,
        CommentInput,
        LinkInput,
        OpenWorkItemInput,
        RenameInput,
        SetStatusInput,
    )
    from fixloop.workflows.options import Call

EVIDENCE_MAX = 100
ALERTS_MAX = 50  # joined alerts kept in the state
ALERTS_MAX_BYTES = 256 * 1024  # and their JSON at most (a signal is at most 16 KiB: ``fixloop.core.models``)
PLAN_SIGNALS_MAX_BYTES = 512 * 1024  # an incident's alerts handed to change.plan_remediation, at most
CARRY_MAX_BYTES = 1_800_000  # the continue-as-new input at most (Temporal's payload limit is 2 MiB)
STATIC_DETAILS_MAX_BYTES = 1_536  # a loop's static details (UTF-8), within the intake's per-start overhead
CURRENT_DETAILS_MAX = 8_000  # characters of the current details the Temporal UI shows
CHAIN_PATCH = "base-image-chain"  # a built base image goes to its dependents' loops, not to the environments
_GATED = (Stage.OPEN_WORK_ITEM, Stage.PLAN_CHANGE, Stage.OPEN_MERGE_REQUEST, Stage.PROMOTE, Stage.AWAIT_APPROVAL)


def _utc(t: datetime) -> str:
    """``2024-06-01 12:00:00 UTC``."""
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _inconsistent(what: str) -> ApplicationError:
    return ApplicationError(f"inconsistent loop state: {what}", type="InconsistentState", non_retryable=True)


def initial_attributes(scope: str, wi: WorkItem) -> list[tuple[SearchAttributeKey[str], str]]:
    """The search attributes a loop has from its start: scope, kind, severity, service (the work item's, an
    incident's likely root cause; none for findings triage named no service for: planning sets it, ``_named``)."""
    pairs = [
        (options.SA_SCOPE, scope),
        (options.SA_KIND, wi.kind.value),
        (options.SA_SEVERITY, wi.severity.value),
        (options.SA_SERVICE, wi.service or top_service(wi) or ""),
        (options.SA_STAGE, Stage.OPEN_WORK_ITEM.value),
    ]
    return [(k, v) for k, v in pairs if v]


def culprit_candidates(wi: WorkItem) -> list[str]:
    """The entities whose culprit change an incident looks for: its top candidates as the services they stand for
    (an instance's service; hosts skipped: a node's change is not in the GitOps repository), in rank order, each
    once, at most ``CANDIDATES_MAX``."""
    if wi.incident is None:
        return []
    names = [c.service for c in wi.incident.candidates if c.service and c.kind != "host"]
    return list(dict.fromkeys(names))[:CANDIDATES_MAX]


def _within(lines: list[str], max_bytes: int, max_chars: int | None = None) -> str:
    """``lines`` joined, whole lines only, within ``max_bytes`` of UTF-8 (and ``max_chars``); a last line counts
    what was left out."""
    kept: list[str] = []
    size = chars = 0
    for i, line in enumerate(lines):
        n, c = len(line.encode()) + 1, len(line) + 1
        if size + n > max_bytes - 40 or (max_chars is not None and chars + c > max_chars - 40):
            kept.append(f"\u2026 {len(lines) - i} more line(s)")
            break
        kept.append(line)
        size, chars = size + n, chars + c
    return "\n".join(kept)


def _listed(values: list[str], shown: int, limit: int = 60) -> str:
    more = f" and {len(values) - shown} more" if len(values) > shown else ""
    return ", ".join(markdown(v, limit) for v in values[:shown]) + more


def static_details(wi: WorkItem, signals: list[Signal]) -> str:
    """The Temporal UI's static details of a loop, set when it is started (``start_child_workflow(...,
    static_details=...)``): the work item's signals summary in Markdown: kind, severity, how many signals from
    which sources, what it is about (service, env, artifact, target, monitor, window), its package bumps and
    advisories, an incident's services and top candidates, the first signals' titles. Every value is escaped
    (``fixloop.core.markup.markdown``) and bounded; the whole is at most ``STATIC_DETAILS_MAX_BYTES`` of UTF-8."""
    by_source = Counter(f"{s.source.value} {s.kind.value}" for s in signals)
    lines = [
        f"**{wi.kind.value.replace('_', ' ')}**, severity {wi.severity.value}, {len(wi.signals)} signal(s)"
        + (f", triaged by {markdown(wi.engine, 20)}" if wi.engine else ""),
        "",
    ]
    if by_source:
        lines.append("- signals: " + ", ".join(f"{n} {markdown(k, 40)}" for k, n in by_source.most_common(6)))
    for label, v in (
        ("service", wi.service),
        ("env", wi.env),
        ("artifact", wi.artifact),
        ("target", wi.target),
        ("monitor", wi.monitor_id),
        ("attached to", wi.attached_to),
    ):
        if v:
            lines.append(f"- {label}: {markdown(v, 160)}")
    if wi.window_start is not None:
        end = f" to {wi.window_end.isoformat(timespec='seconds')}" if wi.window_end else ""
        lines.append(f"- window: {wi.window_start.isoformat(timespec='seconds')}{end}")
    if wi.packages:
        bumps = [f"{p.package} {p.installed_version or '?'} \u2192 {p.fixed_version}" for p in wi.packages]
        lines.append(f"- packages ({len(bumps)}): {_listed(bumps, 8, 100)}")
    if wi.advisories:
        lines.append(f"- advisories ({len(wi.advisories)}): {_listed(wi.advisories, 12, 40)}")
    facts = wi.incident
    if facts is not None:
        if facts.services:
            lines.append(f"- services: {_listed(facts.services, 10)}")
        for c in facts.candidates[:3]:
            lines.append(f"- candidate {markdown(c.entity, 80)}: score {c.score:.2f}, {c.alerts} alert(s)")
    titles = list(dict.fromkeys(s.title for s in signals))
    lines += [f"- {markdown(t, 160)}" for t in titles[:5]]
    if len(titles) > 5:
        lines.append(f"- \u2026 and {len(titles) - 5} more signal title(s)")
    if wi.note:
        lines.append(f"- note: {markdown(wi.note, 200)}")
    return _within(lines, STATIC_DETAILS_MAX_BYTES)


@workflow.defn
class RemediationWorkflow:
    @workflow.init
    def __init__(self, inp: RemediationInput) -> None:
        self.inp = inp
        self.state = inp.state or LoopState()
        self._events: list[
            MoreSignals | Refresh | AlertsJoined | ApprovalEvent | DeployEvent | MergeRequestEvent | Decision
        ] = []
        self._joined_unreported: list[Signal] = []
        self._woken = 0  # hooks since the last read of the gate's merge request (or decisions to check)
        self._refusals_noted: set[tuple[str, str]] = set()
        self._closed_unmerged = False
        self._merged_unapproved_noted = False

    # --- handlers: only record -------------------------------------------------------------------------------

    @workflow.query
    def status(self) -> LoopState:
        return self.state

    @workflow.signal
    def add_signals(self, more: MoreSignals) -> None:
        self._events.append(more)

    @workflow.signal
    def refresh(self, refresh: Refresh) -> None:
        self._events.append(refresh)

    @workflow.signal
    def join_alerts(self, joined: AlertsJoined) -> None:
        self._events.append(joined)

    @workflow.signal
    def deploy_event(self, event: DeployEvent) -> None:
        self._events.append(event)

    @workflow.signal
    def merge_request_event(self, event: MergeRequestEvent) -> None:
        self._events.append(event)

    @workflow.update
    def approve(self, event: ApprovalEvent) -> None:
        self._events.append(event)

    @workflow.update
    def decide(self, decision: Decision) -> None:
        self._events.append(decision)

    @decide.validator
    def _validate_decision(self, decision: Decision) -> None:
        if self.state.stage is not Stage.DECIDE or self.state.decision is not None:
            raise ValueError(f"the loop is not waiting for a decision (stage {self.state.stage.value})")

    @approve.validator
    def _validate_approval(self, event: ApprovalEvent) -> None:
        """Hints, refused before anything is written to history: approvals by fixloop's own user, for a SHA other
        than the head last read, once the gate is behind. An accepted one is no approval either: it wakes the loop,
        which reads the approvals from GitLab (an early one, before the merge request is recorded, wakes the gate's
        first read)."""
        if event.approval.bot:
            raise ValueError(f"approval by fixloop's own user {event.approval.by!r} does not count")
        if self.state.stage not in _GATED:
            raise ValueError(f"the loop is past its approval gate (stage {self.state.stage.value})")
        mr = self.state.mr_state or self._gate_mr()
        if mr is not None and event.approval.sha != mr.head_sha:
            raise ValueError(f"approval is for {event.approval.sha[:12]}, the merge request head is {mr.head_sha[:12]}")

    # --- the run ---------------------------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: RemediationInput) -> LoopState:
        wi = inp.work_item
        if not self.state.evidence:  # the loop's first run (a continued one carries its evidence)
            self.state.started_at = workflow.now()
            self._note(f"started for {wi.kind.value} {wi.id}: {wi.title} ({len(wi.signals)} signals)")
            self._set_attributes(*initial_attributes(inp.scope, wi))
            options.count(LOOPS_STARTED, kind=wi.kind.value)
            options.count(STAGE_ENTERED, stage=self.state.stage.value)
        stages = {
            Stage.OPEN_WORK_ITEM: self._open_work_item,
            Stage.INVESTIGATE: self._investigate,
            Stage.AWAIT_RECOVERY: self._await_recovery,
            Stage.PLAN_CHANGE: self._plan_change,
            Stage.OPEN_MERGE_REQUEST: self._open_merge_request,
            Stage.AWAIT_APPROVAL: self._await_approval,
            Stage.AWAIT_BUILD: self._await_build,
            Stage.PROMOTE: self._promote,
            Stage.AWAIT_DEPENDENTS: self._await_dependents,
            Stage.AWAIT_DEPLOY: self._await_deploy,
            Stage.AWAIT_ROLLOUT: self._await_rollout,
            Stage.VERIFY: self._verify,
            Stage.DECIDE: self._decide,
            Stage.CLOSE: self._close,
        }
        while self.state.stage is not Stage.DONE:
            self._show()
            await stages[self.state.stage]()
        self._apply_events()
        if self.inp.work_item.kind is WorkItemKind.INCIDENT and self.state.merge_request is not None:
            # flap guard: the incident's services stay this loop's a while after its fix, so that their alerts
            # (the fix settling, or failing again) join it instead of opening another incident and merge request
            await workflow.sleep(self.inp.options.incident_cooldown)
            self._apply_events()
            self._note(f"cool-down of {self.inp.options.incident_cooldown} over: the incident's services are released")
        await self._tell_intake_fixing(open_=False)
        await self._tell_intake_incident(open_=False)
        self._show()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._result()

    async def _open_work_item(self) -> None:
        ref = await workflow.execute_activity_method(
            WorkItemActivities.open_work_item,
            OpenWorkItemInput(
                scope=self.inp.scope, work_item=self.inp.work_item, **self._digest_findings()
            ),
            **options.call(Call.EXTERNAL, "open the Jira issue"),
        )
        self.state.issue = ref
        self._set_attributes((options.SA_JIRA_KEY, ref.key))
        self._note(f"Jira issue {ref.key} {'opened' if ref.created else 'found'}: {ref.url}")
        kind = self.inp.work_item.kind
        if kind in FIX_KINDS:
            self._advance(Stage.PLAN_CHANGE)
        elif kind is WorkItemKind.INCIDENT:
            self._advance(Stage.INVESTIGATE)
        else:
            self._advance(Stage.DONE, Outcome.TRACKED)

    def _digest_findings(self) -> dict[str, object]:
        """A risk digest's findings for its issue: the titles of its signals, most severe first (then by title),
        the first ``FINDINGS_MAX``, each cut to ``FINDING_MAX`` characters; nothing for any other kind."""
        if self.inp.work_item.kind is not WorkItemKind.RISK_DIGEST:
            return {}
        own = set(self.inp.work_item.signals)
        found = sorted(
            (s for s in self.inp.signals if s.fingerprint in own), key=lambda s: (-s.severity.rank, s.title)
        )
        return {
            "findings": [s.title[:FINDING_MAX] for s in found[:FINDINGS_MAX]],
            "findings_total": len(self.inp.work_item.signals),
        }

    async def _investigate(self) -> None:
        """An incident: name the culprit change of its top candidates (``investigate.culprit``: the commit touching
        each one's workload that Flux applied last before the onset, within ``culprit_lookback``), say it on the
        Jira issue (one comment: per candidate its commit, author, merge request, when applied, the diff summary),
        then tell the intake the incident is open (its services' later alerts join it) and wait for recovery. A
        failed investigation is recorded and said, never fatal: the incident stays tracked."""
        wi = self.inp.work_item
        names = culprit_candidates(wi)
        facts = wi.incident
        if facts is not None and names:
            lookback = self.inp.options.culprit_lookback
            try:
                found = await workflow.execute_activity_method(
                    InvestigateActivities.culprit,
                    CulpritInput(
                        scope=self.inp.scope,
                        onset=facts.onset,
                        lookback_seconds=int(lookback.total_seconds()),
                        candidates=[CulpritCandidate(entity=n) for n in names],
                        applied=self.inp.applied,
                    ),
                    **options.call(Call.EXTERNAL, f"find the culprit change of {', '.join(names)[:120]}"),
                )
            except ActivityError as e:
                cause = e.cause.message if isinstance(e.cause, FailureError) else str(e)
                self._note(f"the culprit change could not be looked up: {cause}")
                await self._comment(
                    f"fixloop could not look up the change behind this incident: {cause}", "culprit-failed"
                )
            else:
                self.state.investigation = found
                named = [c for c in found.candidates if c.culprit is not None]
                if named:
                    top = named[0]
                    assert top.culprit is not None
                    commit = top.culprit.commit
                    self._note(
                        f"culprit change of {top.entity}: {commit.sha[:12]} {clean(commit.title, 200)} by "
                        f"{clean(commit.author_name, 100)}"
                        + (f" (!{commit.merge_request.iid})" if commit.merge_request else "")
                    )
                else:
                    self._note(f"no change applied before the onset touched {', '.join(names)}")
                lines = [
                    "Changes Flux applied before the onset, per likely root cause (best first):",
                    *(
                        describe_culprit(c.entity, c.culprit, commits_read=c.commits_read, lookback=lookback)
                        for c in found.candidates
                    ),
                ]
                await self._comment("\n".join(lines), "culprit", labels=["fixloop-culprit"] if named else None)
        await self._tell_intake_incident(open_=True)
        self._advance(Stage.PLAN_CHANGE)

    async def _plan_remediation(self) -> None:
        """An incident's fix (``change.plan_remediation``: the action chosen by code, ``fixloop.core.remediation``, as a
        typed operation validated against the repository and its ``incidents:`` policy). A plan: the merge request
        is opened and gated like every fix. None: the reason is said on the Jira issue and the incident waits for
        its alerts to recover."""
        planned = await workflow.execute_activity_method(
            PlanActivities.plan_remediation,
            PlanRemediationInput(
                scope=self.inp.scope,
                work_item=self.inp.work_item,
                signals=self._plan_alerts(),
                investigation=self.state.investigation,
                jira_key=self._jira_key(),
            ),
            **options.call(Call.PLAN, "plan the incident's remediation"),
        )
        self.state.plan = planned
        if not planned.located:
            reason = planned.reason or "no reason given"
            self._note(f"no remediation merge request: {reason}")
            await self._comment(
                f"fixloop opened no merge request for this incident: {reason}", "no-remediation", ["fixloop-no-action"]
            )
            self._advance(Stage.AWAIT_RECOVERY)
            return
        self._note(f"planned the remediation ({planned.action}): {'; '.join(planned.operations[:5])}")
        self._advance(Stage.OPEN_MERGE_REQUEST)

    async def _await_recovery(self) -> None:
        """An incident stays open while its alerts fire: alerts on its services that arrive meanwhile join it (the
        intake sends them, ``join_alerts``; one Jira comment per batch). It ends ``recovered`` once every alert of
        it has been seen recovered (their recovery notifications, forwarded by the intake as ``refresh``), or
        ``tracked`` after ``incident_max_escalations`` escalations of ``incident_escalate_after`` each."""
        opts = self.inp.options

        async def nothing_to_read() -> None:
            return None

        await self._wait(
            nothing_to_read,
            self._incident_recovered,
            opts.incident_escalate_after,
            opts.incident_max_escalations,
            "waiting for the incident's alerts to recover",
            Outcome.TRACKED,
        )
        if self.state.stage is Stage.AWAIT_RECOVERY:
            n = len(self._incident_alerts())
            self._note(f"every alert of the incident recovered ({n})")
            await self._comment(
                f"All {n} alert(s) of this incident recovered; fixloop stopped following it.",
                "recovered",
                labels=["fixloop-recovered"],
            )
            self._advance(Stage.DONE, Outcome.RECOVERED)

    def _plan_alerts(self) -> list[Signal]:
        """The incident's alerts for its planner: the start ones then the joined ones, the earliest within
        ``PLAN_SIGNALS_MAX_BYTES`` (so the planner's input, with the work item, at most 768 KiB, and the
        investigation, under 350 KB, stays under Temporal's 2 MiB payload limit)."""
        alerts = [s for s in [*self.inp.signals, *self.state.alerts] if s.kind is Kind.ALERT]
        return (batched(alerts, max_bytes=PLAN_SIGNALS_MAX_BYTES, max_count=1_000) or [[]])[0]

    def _track_recovery(self, signals: list[Signal]) -> None:
        """Record which of an incident's alerts are recovered (their latest transition seen), within the state's
        bound (the oldest records dropped first)."""
        recovered = dict.fromkeys(self.state.recovered_alerts)
        for s in signals:
            if s.transition is Transition.RECOVERED:
                recovered.pop(s.fingerprint, None)
                recovered[s.fingerprint] = None
            elif s.transition is Transition.TRIGGERED:
                recovered.pop(s.fingerprint, None)
        self.state.recovered_alerts = list(recovered)[-RECOVERED_ALERTS_MAX:]

    def _incident_alerts(self) -> set[str]:
        """The incident's alerts: its work item's signals and the alerts that joined it."""
        return set(self.inp.work_item.signals) | {a.fingerprint for a in self.state.alerts}

    def _incident_recovered(self) -> bool:
        """Every alert of the incident has been seen recovered (a start signal already recovered counts)."""
        done = set(self.state.recovered_alerts)
        done |= {s.fingerprint for s in self.inp.signals if s.transition is Transition.RECOVERED}
        return self._incident_alerts() <= done

    async def _tell_intake_incident(self, open_: bool) -> None:
        """Tell the scope's intake that this incident is open for its services (their later alerts join it), or
        that it has ended (best effort: a failure is recorded)."""
        wi = self.inp.work_item
        if open_:
            facts = wi.incident
            names = [*(facts.services if facts else []), *culprit_candidates(wi)]
            services = [n for n in dict.fromkeys(names) if n][:50]
        else:
            services = list(self.state.incident_services)
        told = []
        for service in services:
            fix = OpenFix(work_item_id=wi.id, service=service[:200], loop=workflow.info().workflow_id, open=open_)
            if await self._signal_intake("fixing", fix, f"the open incident on {service[:80]}"):
                told.append(service)
        self.state.incident_services = told if open_ else [s for s in services if s not in told]

    async def _plan_change(self) -> None:
        if self.inp.work_item.kind is WorkItemKind.INCIDENT:
            await self._plan_remediation()
            return
        planned = await workflow.execute_activity_method(
            PlanActivities.plan,
            PlanChangeInput(
                scope=self.inp.scope, work_item=self.inp.work_item, jira_key=self._jira_key(), signals=self.inp.signals
            ),
            **options.call(Call.PLAN, "plan the change"),
        )
        self.state.plan = planned
        if not planned.located:
            reason = planned.reason or "no reason given"
            self._note(f"the fix could not be located: {reason}")
            await self._comment(f"fixloop could not locate the fix in {self.inp.scope}: {reason}", "not-located")
            self._advance(Stage.DONE, Outcome.NOT_LOCATED)
            return
        self._note(f"planned {len(planned.operations)} operation(s) on {planned.branch}")
        if workflow.patched("name-the-planned-service"):
            await self._named(planned.service)
        self._advance(Stage.OPEN_MERGE_REQUEST)

    async def _named(self, service: str | None) -> None:
        """A fix whose service triage could not name takes the one its planned change touches
        (``fixloop.core.naming.named``): the loop's work item and its title name it (``LoopState.title``, the later
        merge requests, the Temporal UI), ``FixloopService`` is set, and the Jira summary follows when it is still
        the one fixloop gave it (``jira.rename``; a failure is recorded, never fatal)."""
        wi = self.inp.work_item
        renamed = named(wi, service)
        if renamed is wi or not renamed.service:
            return
        self.inp = self.inp.model_copy(update={"work_item": renamed})
        self.state.title = renamed.title
        self._set_attributes((options.SA_SERVICE, renamed.service))
        self._note(f"the change is to {renamed.service}: {renamed.title}")
        if self.state.issue is None or renamed.title == wi.title:
            return
        try:
            await workflow.execute_activity_method(
                WorkItemActivities.rename,
                RenameInput(key=self.state.issue.key, summary=renamed.title, was=wi.title),
                **options.call(Call.EXTERNAL, "name the service in the Jira summary"),
            )
        except ActivityError as e:
            cause = e.cause.message if isinstance(e.cause, FailureError) else str(e)
            self._note(f"the Jira summary could not be renamed: {cause}")

    async def _open_merge_request(self) -> None:
        if self.state.plan is None:
            raise _inconsistent("no planned change")
        ref = await workflow.execute_activity_method(
            MergeRequestActivities.open_merge_request,
            OpenMergeRequestInput(
                scope=self.inp.scope, work_item=self.inp.work_item, change=self.state.plan, jira_key=self._jira_key()
            ),
            **options.call(Call.EXTERNAL, "open the merge request"),
        )
        self.state.merge_request = ref
        self._set_attributes((options.SA_MERGE_REQUEST, ref.url))
        if ref.joined:
            await self._joined(ref)
            return
        self._note(f"merge request !{ref.iid} at {ref.head_sha[:12]}: {ref.url}")
        if self.state.issue is not None:  # the Jira issue links back to the merge request
            await self._link(ref.url, f"Merge request !{ref.iid}", "link the merge request")
            await self._set_status("In Progress")
            # what the MR says first (breaking bumps, advisories max_jump leaves open) is said on the issue too
            if self.state.plan.callouts and workflow.patched("comment-the-callouts"):
                lines = "\n".join(f"- {c}" for c in self.state.plan.callouts)
                await self._comment(f"Merge request !{ref.iid} ({ref.url}):\n{lines}", "callouts")
        self._gate_on(ref, GateKind.CHANGE, self.state.plan.title)
        self._advance(Stage.AWAIT_APPROVAL)
        await self._tell_intake_fixing(open_=True)

    async def _joined(self, mr: MergeRequestRef) -> None:
        """This plan changes lines that merge request ``mr`` of another work item already changes (one MR per line,
        ``gitlab.open_merge_request``): record it, say so on the MR, on this work item's Jira issue and on the MR's
        own issue, link it from this issue, and end ``joined`` (the other loop gates, deploys and verifies it)."""
        wi = self.inp.work_item
        paths = ", ".join(mr.overlap) or "the same file"
        other = f"work item {mr.work_item_id}" if mr.work_item_id else "another work item"
        self._note(f"joined merge request !{mr.iid} ({other}): it already changes {paths}")
        advisories = ", ".join(wi.advisories[:20]) or "no advisory id"
        planned = "; ".join(self.state.plan.operations[:10]) if self.state.plan else ""
        await self._mr_note(
            mr,
            f"fixloop work item {wi.id} (Jira {self._jira_key() or 'none'}) also fixes its findings with this merge "
            f"request: {markdown(advisories, 600)}. It planned a change to the same lines ({markdown(planned, 600)}) "
            "and joined this merge request instead of opening a conflicting one.",
            f"joined-{mr.iid}",
        )
        await self._comment(
            f"The fix of this work item changes lines that merge request !{mr.iid} ({other}) already changes "
            f"({paths}). fixloop joined it instead of opening a second, conflicting merge request: these findings "
            f"({advisories}) are fixed when it is merged. Merge request: {mr.url}",
            f"joined-mr-{mr.iid}",
            labels=["fixloop-joined"],
        )
        if mr.jira_key and mr.jira_key != self._jira_key():
            try:  # the other issue is named by the MR's description: best effort, recorded
                await self._comment(
                    f"Work item {wi.id} (Jira {self._jira_key() or 'none'}) found the same lines to change ({paths}) "
                    f"and joined merge request !{mr.iid}; it also fixes: {advisories}.",
                    f"joined-by-{wi.id}",
                    key=mr.jira_key,
                )
            except ActivityError as e:
                self._note(f"Jira issue {mr.jira_key} of merge request !{mr.iid} could not be told: {e}")
        await self._link(mr.url, f"Merge request !{mr.iid} (joined)", "link the joined merge request")
        self._advance(Stage.DONE, Outcome.JOINED)

    async def _await_approval(self) -> None:
        """Proceed when the gate's merge request (the fix's, or later its revert's), as read from the GitLab API, is
        merged and a human approver approved exactly the head that was merged (``fixloop.core.gate``: not the bot, not
        the
        author unless the policy says so, allowed by the policy); end when it is closed. Webhooks (``approve``,
        ``merge_request_event``) only wake the loop: it reads the merge request once per burst of hooks; a read
        every ``poll_interval`` is the fallback (a lost webhook costs one poll interval). A push after an approval
        moves the head: the approval no longer counts and the gate waits again."""
        mr = self._gate_mr()
        if mr is None:
            raise _inconsistent("no merge request")
        opts = self.inp.options

        async def read() -> None:
            polled = await workflow.execute_activity_method(
                MergeRequestActivities.merge_request_state,
                MergeRequestStateInput(project=mr.project, iid=mr.iid),
                **options.call(Call.EXTERNAL, "read the merge request"),
            )
            before = self.state.mr_state
            previous_head = before.head_sha if before is not None else mr.head_sha
            if polled.head_sha != previous_head:
                self._note(f"merge request !{mr.iid} head moved to {polled.head_sha[:12]}: approvals reset")
            self.state.approvals_seen = observe(self.state.approvals_seen, previous_head, polled)
            self.state.mr_state = polled

        def passed() -> bool:
            s = self.state.mr_state
            if s is None:
                return False
            verdict = gate_verdict(s, self.state.approvals_seen)
            if verdict.closed:
                self._note(f"merge request !{mr.iid} was {s.state.value} without merging")
                self._closed_unmerged = True
                return True
            for who, why in verdict.refused:
                if (who, why) not in self._refusals_noted:
                    self._refusals_noted.add((who, why))
                    self._note(f"approval by {clean(who, 100)} does not count: {why}")
            if verdict.passed:
                who = ", ".join(verdict.counted)
                self._note(f"approved by {who} at {s.head_sha[:12]}; merged as {(s.merge_sha or '?')[:12]}")
                gate_passed.append((s, verdict))
                if self.state.started_at is not None and self.state.gate is not None:
                    at = s.merged_at or workflow.now()
                    merged = (at if at.tzinfo else at.replace(tzinfo=UTC)) - self.state.started_at
                    options.observe(TIME_TO_MERGE, merged.total_seconds(), gate=self.state.gate.kind.value)
                self._after_merge(s.merge_sha or s.head_sha)
                return True
            if s.state is MrState.MERGED and not self._merged_unapproved_noted:
                self._merged_unapproved_noted = True
                self._note(f"merge request !{mr.iid} merged without a human approval of {s.head_sha[:12]}: waiting")
            return False

        self._closed_unmerged = False
        gate_passed: list[tuple[MergeRequestState, GateVerdict]] = []
        await self._wait(
            read,
            passed,
            opts.approval_escalate_after,
            opts.approval_max_escalations,
            "awaiting approval",
            Outcome.APPROVAL_EXPIRED,
            remind=mr,
        )
        self.state.gate = None
        if gate_passed:
            await self._audit_gate(mr, *gate_passed[0])
        if self._closed_unmerged:
            await self._closed(mr)

    async def _closed(self, mr: MergeRequestRef) -> None:
        """The gate's merge request was closed without merging: end cleanly (Jira comment and label, the branch
        deleted so nothing is left behind)."""
        reverting = self.state.revert is not None
        await workflow.execute_activity_method(
            MergeRequestActivities.delete_branch,
            DeleteBranchInput(project=mr.project, branch=mr.branch),
            **options.call(Call.EXTERNAL, "delete the branch of the closed merge request"),
        )
        if reverting:
            text = (
                f"The revert merge request !{mr.iid} was closed without merging: the change stays deployed "
                "although its verification failed. fixloop stopped."
            )
            await self._comment(text, "revert-closed", labels=["fixloop-revert-declined"])
            self._advance(Stage.DONE, Outcome.REVERT_DECLINED)
        else:
            text = f"Merge request !{mr.iid} was closed without merging; fixloop stopped working on this item."
            await self._comment(text, "mr-closed", labels=["fixloop-mr-closed"])
            self._advance(Stage.DONE, Outcome.MR_CLOSED)

    def _after_merge(self, merge_sha: str) -> None:
        """The gate passed: a source change (``PlannedChange.delivery`` builds an image) goes to its build, the
        apply of its merge is not a deploy (the tag that runs did not change); anything else to its deploy."""
        d = self._delivery()
        if self.state.revert is None and self._env() is None and d is not None and d.image is not None:
            self.state.source_sha = merge_sha
            self._advance(Stage.AWAIT_BUILD)
        else:
            self._advance(Stage.AWAIT_DEPLOY)

    async def _await_build(self) -> None:
        """Follow the pipeline of the merged source change until its image is in the registry (``gitlab.
        build_state``): built -> the tag goes to the first environment (``PROMOTE``); a failed pipeline ends the loop
        ``build_failed`` with a Jira comment naming the jobs that failed it; no pipeline or no image in time ends it
        ``build_expired`` (the deploy stage's escalations)."""
        d, sha = self._delivery(), self.state.source_sha
        if d is None or d.image is None or sha is None:
            raise _inconsistent("no image or merge commit to follow")
        image, opts = d.image, self.inp.options
        noted: set[str] = set()

        async def poll() -> None:
            self.state.build = await workflow.execute_activity_method(
                BuildActivities.build_state,
                BuildStateInput(scope=self.inp.scope, merge_sha=sha, image=image, current_tag=d.tag_before()),
                **options.call(Call.EXTERNAL, f"read the pipeline of {sha[:12]}"),
            )

        def passed() -> bool:
            b = self.state.build
            if b is None:
                return False
            if b.state == "failed":
                self._note(f"the build of {image.name} failed: {b.message}")
                self._advance(Stage.DONE, Outcome.BUILD_FAILED)
                return True
            if b.state == "built":
                self._note(f"CI built {image.image}:{b.tag} ({b.digest}) in pipeline {b.pipeline_id}")
                self.state.environments, self.state.target = [], 0
                self._advance(Stage.AWAIT_DEPENDENTS if self._chained_base() else Stage.PROMOTE)
                return True
            if b.state not in noted:
                noted.add(b.state)
                self._note(f"build of {image.name}: {b.state} ({b.message})")
            return False

        self.state.build = None
        await poll()
        await self._wait(
            poll, passed, opts.deploy_escalate_after, opts.deploy_max_escalations, "awaiting the build",
            Outcome.BUILD_EXPIRED,
        )  # fmt: skip
        b = self.state.build
        if self.state.outcome is Outcome.BUILD_FAILED and b is not None:
            jobs = ", ".join(b.failed_jobs) or "none named"
            more = (
                f" (and {b.failed_jobs_count - len(b.failed_jobs)} more)"
                if b.failed_jobs_count > len(b.failed_jobs)
                else ""
            )
            await self._comment(
                f"The pipeline {b.pipeline_id} of the merged change {sha[:12]} {b.status}: failed job(s) {jobs}{more}. "
                f"{b.pipeline_url}\nNo new image of {image.image} was built, so nothing new runs; the merged source "
                "change stays on the branch. fixloop stopped: fix the build, or revert the merge.",
                "build-failed",
                labels=["fixloop-build-failed"],
            )

    # --- a base-image chain ------------------------------------------------------------------------------------

    def _chained_base(self) -> bool:
        """The built image is a base of other images (``Delivery.dependents``): its dependents' loops come next."""
        d = self._delivery()
        return d is not None and bool(d.dependents) and workflow.patched(CHAIN_PATCH)

    def _in_chain(self) -> bool:
        """This loop rebuilds a dependent of a base image (its Jira issue is the chain's)."""
        return self.inp.chain is not None and workflow.patched(CHAIN_PATCH)

    def _result(self) -> LoopState:
        """What the loop returns: its state; a chain's dependent returns what its base's loop records of it (its merge
        request, build, environments without their rollouts, verdict, outcome, its own chain), so that the base's
        history holds at most ``DEPENDENTS_MAX`` small results."""
        s = self.state
        if self.inp.chain is None:
            return s
        return LoopState(
            stage=s.stage, outcome=s.outcome, started_at=s.started_at, issue=s.issue, title=s.title,
            merge_request=s.merge_request, build=s.build, revert=s.revert, verdict=s.verdict, runs=s.runs,
            environments=[e.model_copy(update={"rollout": None}) for e in s.environments], chain=s.chain,
        )  # fmt: skip

    async def _await_dependents(self) -> None:
        """The base image is built (its tag is in the registry): plan each dependent's rebuild FROM the tag
        (``change.plan_dependent``, at the default branch's head) and start its loop, a child RemediationWorkflow
        (``remediate/<scope>/<image>-os-rebuild-<hash>``: its work item's, derived from this one's) at its merge
        request with the chain's Jira issue (``RemediationInput.chain``); what cannot be planned is recorded and
        said. Then wait for every one of them (this stage never continues as
        new: its history grows by a few events per dependent, at most ``DEPENDENTS_MAX``) and end with their
        outcomes: ``verified`` when each dependent verified (the Jira issue closed with one line per image),
        ``dependents_failed`` otherwise (the lines as a comment, the issue left open). Parent-close policy
        TERMINATE: the dependents' loops are this loop's work (it holds their issue and their summary), so a loop
        stopped by hand or failing takes them with it rather than leaving loops nobody reports on; and it never
        closes while they run (it awaits them, and does not continue as new meanwhile). A dependent that is itself
        a base runs this stage in its own loop; beyond ``CHAIN_DEPTH_MAX`` levels its dependents are named only."""
        d, b, fix, sha = self._delivery(), self.state.build, self.state.merge_request, self.state.source_sha
        if d is None or d.image is None or b is None or b.tag is None or fix is None or sha is None:
            raise _inconsistent("no built base image to rebuild its dependents on")
        base, tag, link = d.image, b.tag, self.inp.chain
        depth = link.depth + 1 if link is not None else 1
        me = ChainRecord(name=base.name, loop=workflow.info().workflow_id, merge_request=fix, tag=tag, started=True)
        if link is not None:  # a dependent that is a base itself
            me.base, me.dockerfile, me.from_tag = link.base.name, link.dependent.dockerfile, link.dependent.tag
        me.note = "a base image: it runs through the images built FROM it"
        self._note(f"{base.image}:{tag} is built; rebuilding its dependents: {', '.join(x.name for x in d.dependents)}")
        records: list[ChainRecord] = []
        children = []
        for dep in d.dependents:
            item = rebuilt_on(self.inp.work_item, dep.name, base.name, tag)
            child = loop_id(self.inp.scope, item.id)
            record = ChainRecord(name=dep.name, base=base.name, dockerfile=dep.dockerfile, from_tag=dep.tag, loop=child)
            records.append(record)
            if depth > CHAIN_DEPTH_MAX:
                record.note = f"not followed: the chain is deeper than {CHAIN_DEPTH_MAX} base images"
                continue
            try:
                planned = await workflow.execute_activity_method(
                    PlanActivities.plan_dependent,
                    PlanDependentInput(
                        scope=self.inp.scope, work_item=item, base=base, dependent=dep, tag=tag, digest=b.digest,
                        source_sha=sha, source_iid=fix.iid, jira_key=self._jira_key(),
                    ),
                    **options.call(Call.PLAN, f"plan the rebuild of {dep.name} on {base.name} {tag}"),
                )  # fmt: skip
            except ActivityError as e:
                cause = e.cause.message if isinstance(e.cause, FailureError) else str(e)
                record.note = clean(f"its rebuild could not be planned: {cause}", 600)
                continue
            if not planned.located:
                record.note = clean(planned.reason or "its rebuild could not be planned", 600)
                continue
            start = LoopState(stage=Stage.OPEN_MERGE_REQUEST, issue=self.state.issue, plan=planned, title=item.title)
            chain = ChainLink(
                parent=workflow.info().workflow_id, base=base, tag=tag, digest=b.digest, source_sha=sha,
                source_iid=fix.iid, dependent=dep, depth=depth,
            )  # fmt: skip
            attributes = [*initial_attributes(self.inp.scope, item), (options.SA_JIRA_KEY, self._jira_key() or "")]
            handle = await workflow.start_child_workflow(
                RemediationWorkflow.run,
                RemediationInput(
                    scope=self.inp.scope, work_item=item, options=self.inp.options, chain=chain, state=start
                ),
                id=child,
                parent_close_policy=workflow.ParentClosePolicy.TERMINATE,
                static_summary=markdown(item.title, 200),
                static_details=static_details(item, []),
                search_attributes=TypedSearchAttributes([SearchAttributePair(k, v) for k, v in attributes if v])
                if self.inp.options.search_attributes
                else None,
            )
            record.started = True
            children.append((record, handle))
        records += [
            ChainRecord(name=n, base=base.name, note=f"not followed: over the {len(d.dependents)} dependents followed")
            for n in d.dependents_cut
        ]
        self.state.chain = [me, *records][:CHAIN_RECORDS_MAX]
        started = [r for r, _ in children]
        await self._comment(
            f"CI built {base.image}:{tag} from {sha[:12]} (the merge of !{fix.iid}). It is a base image: fixloop "
            f"rebuilds the {len(d.dependents) + len(d.dependents_cut)} image(s) built FROM it, one merge request each "
            "(gated like every change), before any of them reaches an environment:\n"
            + "\n".join(f"- {r.line()}" for r in records),
            "chain-started",
            labels=["fixloop-base-image"],
        )
        self._show()
        results = await asyncio.gather(*(h for _, h in children), return_exceptions=True)
        nested: list[ChainRecord] = []
        for record, result in zip(started, results, strict=True):
            if isinstance(result, BaseException):
                inner = getattr(result, "cause", None)
                cause = inner.message if isinstance(inner, FailureError) else str(result)
                record.note = clean(f"its loop failed: {cause}", 600)
                continue
            record.merge_request, record.outcome = result.merge_request, result.outcome
            record.tag = result.build.tag if result.build is not None else None
            record.note = clean("; ".join(e.line() for e in result.environments), 600) or None
            nested += result.chain[1:]  # a dependent that is a base itself: the images built FROM it
        self.state.chain = [me, *records, *nested][:CHAIN_RECORDS_MAX]
        self._apply_events()
        passed = all(r.outcome is Outcome.VERIFIED for r in [*records, *nested])
        me.outcome = Outcome.VERIFIED if passed else Outcome.DEPENDENTS_FAILED
        head = f"Base-image chain of {base.name} ({'every image verified' if passed else 'not every image verified'}):"
        text = "\n".join([head, *(f"- {r.line()}" for r in self.state.chain)])[:32_000]
        self._note(f"the chain of {base.name} ended: {'verified' if passed else 'not every dependent verified'}")
        note = [f"fixloop rebuilt the images built FROM {code(base.image + ':' + tag, 300)}:", ""]
        note += [f"- {markdown(r.line(), 700)}" for r in self.state.chain]
        await self._mr_note(fix, "\n".join(note), "chain")
        if passed and self.state.issue is not None and not self._in_chain():
            await workflow.execute_activity_method(
                WorkItemActivities.close_work_item,
                CloseWorkItemInput(key=self.state.issue.key, resolution="done", comment=text),
                **options.call(Call.EXTERNAL, "close the Jira issue"),
            )
        elif not self._in_chain():
            await self._comment(text, "chain-done", labels=["fixloop-chain-failed"])
        self._advance(Stage.DONE, Outcome.VERIFIED if passed else Outcome.DEPENDENTS_FAILED)

    async def _promote(self) -> None:
        """Open the merge request that sets the built tag in the current environment (``change.plan_promotion``,
        then ``gitlab.open_merge_request``), gated like every write; an environment already running the tag goes
        straight to its rollout check."""
        d, b, i = self._delivery(), self.state.build, self.state.target
        fix = self.state.merge_request
        if d is None or b is None or b.tag is None or fix is None or self.state.source_sha is None:
            raise _inconsistent("nothing built to promote")
        target = d.targets[i]
        env = EnvironmentState(name=target.name, tag=b.tag)
        self.state.environments = [*self.state.environments[:i], env]
        planned = await workflow.execute_activity_method(
            PlanActivities.plan_promotion,
            PlanPromotionInput(
                scope=self.inp.scope,
                work_item=self.inp.work_item,
                delivery=d,
                target=i,
                tag=b.tag,
                digest=b.digest,
                source_sha=self.state.source_sha,
                source_iid=fix.iid,
                verdicts=[e.line()[:600] for e in self.state.environments[:i]],
                jira_key=self._jira_key(),
            ),
            **options.call(Call.EXTERNAL, f"plan the tag change in {target.name}"),
        )
        if d.image is not None and d.image.delivery == "flux-image-automation" and not planned.running:
            await self._await_automation(env, target, planned.reason)
            return
        if not planned.located:
            self._note(f"{target.name}: {planned.reason}; checking its rollout")
            self._advance(Stage.AWAIT_ROLLOUT)
            return
        ref = await workflow.execute_activity_method(
            MergeRequestActivities.open_merge_request,
            OpenMergeRequestInput(
                scope=self.inp.scope, work_item=self.inp.work_item, change=planned, jira_key=self._jira_key()
            ),
            **options.call(Call.EXTERNAL, f"open the merge request for {target.name}"),
        )
        if ref.joined:
            text = f"the tag line of {target.name} is changed by !{ref.iid} of another work item; fixloop stopped here"
            self._note(text)
            await self._comment(text, f"promotion-joined-{target.name}", labels=["fixloop-joined"])
            self._advance(Stage.DONE, Outcome.JOINED)
            return
        env.merge_request = ref
        self.state.mr_state, self.state.approvals_seen = None, {}
        self._merged_unapproved_noted = False
        self._set_attributes((options.SA_MERGE_REQUEST, ref.url))
        verb = "deploys" if i == 0 else "promotes"
        self._note(f"merge request !{ref.iid} {verb} {b.tag} to {target.name}: {ref.url}")
        await self._link(ref.url, f"{target.name}: merge request !{ref.iid}", f"link the {target.name} merge request")
        self._gate_on(ref, GateKind.PROMOTION, planned.title, environment=target.name)
        self._advance(Stage.AWAIT_APPROVAL)

    async def _await_automation(self, env: EnvironmentState, target: Target, reason: str | None) -> None:
        """``delivery: flux-image-automation``: Flux's ImageUpdateAutomation commits the new tag, not fixloop. Read
        the environment's file at the branch head (``change.plan_promotion``, every poll interval) until it sets the
        tag; that head is then the commit whose apply is awaited. Not in time: ``deploy_expired`` (the deploy
        stage's escalations). A failed verification then reverts the source change (the gated revert MR); the tag
        stays until the automation sets the next build's, the rebuild of the reverted source."""
        d, b, opts = self._delivery(), self.state.build, self.inp.options
        if d is None or b is None or b.tag is None or self.state.source_sha is None or self.state.merge_request is None:
            raise _inconsistent("nothing built to wait for")
        self._note(f"waiting for Flux's image automation to set {b.tag} in {target.name}")
        found: list[str] = []
        source_sha, source_iid, tag = self.state.source_sha, self.state.merge_request.iid, b.tag

        async def poll() -> None:
            planned = await workflow.execute_activity_method(
                PlanActivities.plan_promotion,
                PlanPromotionInput(
                    scope=self.inp.scope, work_item=self.inp.work_item, delivery=d, target=self.state.target,
                    tag=tag, digest=b.digest, source_sha=source_sha, source_iid=source_iid,
                ),
                **options.call(Call.EXTERNAL, f"read the tag of {target.name}"),
            )  # fmt: skip
            if planned.running and planned.base_sha:
                found.append(planned.base_sha)

        def passed() -> bool:
            if not found:
                return False
            env.commit = found[0]
            self._note(f"Flux's image automation set {tag} in {target.name} by {found[0][:12]}")
            self._advance(Stage.AWAIT_DEPLOY)
            return True

        await self._wait(
            poll, passed, opts.deploy_escalate_after, opts.deploy_max_escalations, "awaiting the image automation",
            Outcome.DEPLOY_EXPIRED,
        )  # fmt: skip

    async def _await_deploy(self) -> None:
        s, env = self.state.mr_state, self._env()
        automated = env.commit if env is not None and env.merge_request is None and self.state.revert is None else None
        if s is None and automated is None:
            raise _inconsistent("no merge request state")
        merge_sha = automated or (s.merge_sha or s.head_sha if s is not None else "")
        opts = self.inp.options
        kustomization = self._kustomization()

        async def poll() -> None:
            self.state.deploy = await workflow.execute_activity_method(
                DeployActivities.deploy_state,
                DeployStateInput(scope=self.inp.scope, merge_sha=merge_sha, kustomization=kustomization),
                **options.call(Call.EXTERNAL, "poll the Kustomization"),
            )

        def passed() -> bool:
            d = self.state.deploy
            if d is None:
                return False
            if d.failed:
                self._note(f"reconciliation of {merge_sha[:12]} failed: {d.message or 'no message'}")
                self._advance(Stage.DONE, Outcome.DEPLOY_FAILED)
                return True
            if d.applied:
                target = self._target()
                where = f" ({target.name}, {kustomization})" if target is not None and kustomization else ""
                self._note(f"applied by Flux{where}: {d.revision or merge_sha}")
                applied.append(d)
                merged_at = s.merged_at if s is not None else None
                self.state.changed_at = change_start(d.applied_at, workflow.now(), merged_at)
                if self.state.revert is not None:
                    self._advance(Stage.CLOSE)
                    return True
                env = self._env_here()
                if env is not None:
                    env.revision, env.changed_at = d.revision, self.state.changed_at
                if self._rollout_checked():
                    self._advance(Stage.AWAIT_ROLLOUT)
                else:
                    self._deployed()
                return True
            return False

        self.state.deploy = None
        applied: list[DeployState] = []
        gated = self._gate_mr()  # the merge request whose merge is applied: the revert's, the environment's, the fix's
        await self._wait(
            poll,
            passed,
            opts.deploy_escalate_after,
            opts.deploy_max_escalations,
            "awaiting deploy",
            Outcome.DEPLOY_EXPIRED,
        )
        if applied:
            await self._audit_deploy(gated, applied[0], merge_sha, kustomization)
        if self.state.outcome is Outcome.DEPLOY_FAILED:
            await self._comment(
                f"Flux could not apply {merge_sha[:12]}: {self.state.deploy.message if self.state.deploy else ''}",
                "deploy-failed",
                labels=["fixloop-deploy-failed"],
            )

    def _deployed(self) -> None:
        """What runs now is the change: the verification's clock starts (monitors seen recovering before do not
        count)."""
        self.state.deployed_at = workflow.now()
        self.state.recovered = []
        env = self._env_here()
        if env is not None:
            env.deployed_at = self.state.deployed_at
        self._advance(Stage.VERIFY)

    async def _await_rollout(self) -> None:
        """Poll the workload's rollout in the environment (``kubernetes.rollout_state``) until it is complete: every
        replica updated, ready and available, the pod template on the built image, no container crash-looping or
        restarting between two reads (``fixloop.core.rollout``). Stuck (or still not complete after the deploy
        stage's escalations) ends the loop ``rollout_stuck`` with a Jira comment: a change that does not run is
        never verified."""
        d, target, env = self._delivery(), self._target(), self._env_here()
        if d is None or target is None or env is None or d.workload is None:
            raise _inconsistent("no workload to follow")
        expected = d.reference(env.tag) if d.image is not None and env.tag else None
        opts = self.inp.options
        what = f"{d.workload} in {target.namespace} ({target.name})"

        async def poll() -> None:
            before = env.rollout.verdict.restarts if env.rollout is not None else {}
            try:
                env.rollout = await workflow.execute_activity_method(
                    DeployActivities.rollout_state,
                    RolloutStateInput(
                        scope=self.inp.scope,
                        namespace=target.namespace,
                        name=d.workload,
                        expected_image=expected,
                        previous_restarts=dict(list(before.items())[:200]),
                    ),
                    **options.call(Call.EXTERNAL, f"read the rollout of {what}"),
                )
            except ActivityError as e:
                cause = e.cause.message if isinstance(e.cause, ApplicationError) else str(e)
                self._note(f"the rollout of {what} cannot be read: {clean(cause, 500)}")
                self._advance(Stage.DONE, Outcome.ROLLOUT_STUCK)

        def passed() -> bool:
            if self.state.stage is not Stage.AWAIT_ROLLOUT:
                return True
            r = env.rollout
            if r is None:
                return False
            v = r.verdict
            if v.state is Rollout.COMPLETE:
                images = ", ".join(v.images[:3])
                self._note(f"rollout of {what} complete: {v.ready}/{v.replicas} ready on {images}")
                self._deployed()
                return True
            if v.state is Rollout.STUCK:
                self._note(f"rollout of {what} is stuck: {'; '.join(v.reasons[:3])}")
                self._advance(Stage.DONE, Outcome.ROLLOUT_STUCK)
                return True
            return False

        env.rollout = None
        await poll()
        await self._wait(
            poll, passed, opts.deploy_escalate_after, opts.deploy_max_escalations, "awaiting the rollout",
            Outcome.ROLLOUT_STUCK,
        )  # fmt: skip
        if self.state.outcome is Outcome.ROLLOUT_STUCK:
            v = env.rollout.verdict if env.rollout is not None else None
            reasons = "\n".join(f"- {r}" for r in (v.reasons if v else [])[:12]) or "- the rollout could not be read"
            figures = f" ({v.ready}/{v.replicas} ready, {v.updated} updated)" if v else ""
            await self._comment(
                f"The rollout of {what}{figures} did not complete, so the change is not running and was not "
                f"verified:\n{reasons}\nA human decides: fix the workload, or revert the merge "
                f"{'!' + str(env.merge_request.iid) if env.merge_request else ''}.",
                f"rollout-stuck-{target.name}",
                labels=["fixloop-rollout-stuck"],
            )

    async def _tell_intake_fixing(self, open_: bool) -> None:
        """Tell the scope's intake that this loop's merge request is open for its service (alerts on it then join
        this loop), or that the loop has ended (best effort: a failure is recorded)."""
        service = self.state.fixing_service if not open_ else self._service()
        if not service or (not open_ and self.state.fixing_service is None):
            return
        fix = OpenFix(work_item_id=self.inp.work_item.id, service=service, loop=workflow.info().workflow_id, open=open_)
        if await self._signal_intake("fixing", fix, "the open fix"):
            self.state.fixing_service = service if open_ else None

    async def _signal_intake(self, name: str, arg: OpenFix | RecentDeploy, what: str) -> bool:
        """Signal ``name`` to the scope's intake; a failure (no intake runs) is recorded, never fatal."""
        try:
            await workflow.get_external_workflow_handle(intake_id(self.inp.scope)).signal(name, arg)
            return True
        except FailureError as e:
            self._note(f"the intake of {self.inp.scope} could not be told of {what}: {e}")
            return False

    async def _report_joined(self) -> None:
        """One Jira comment for the alerts that joined since the last one."""
        joined, self._joined_unreported = self._joined_unreported, []
        if not joined:
            return
        lines = [
            f"- {clean(a.title or 'alert', 200)} ({a.source.value}"
            + (f", monitor {a.monitor_id}" if a.monitor_id else "")
            + (f", {a.transition.value}" if a.transition else "")
            + ")"
            for a in joined[:20]
        ]
        monitors = self._monitor_ids()
        tail = (
            f"The verification after the deploy requires monitor(s) {', '.join(map(str, monitors))} to have recovered."
            if monitors
            else "They are recorded with the work item."
        )
        if self.inp.work_item.kind is WorkItemKind.INCIDENT:
            services = sorted({clean(a.service, 80) for a in joined if a.service}) or ["its services"]
            await self._comment(
                f"{len(joined)} later alert(s) on {', '.join(services[:10])} joined this incident:\n"
                + "\n".join(lines)
                + ("\n" + f"... and {len(joined) - 20} more" if len(joined) > 20 else ""),
                f"joined-{joined[0].fingerprint[:16]}",
                labels=["fixloop-alert"],
            )
            return
        await self._comment(
            f"{len(joined)} alert(s) on {self.state.fixing_service or 'the service'} joined this work item while "
            f"its merge request is open:\n" + "\n".join(lines) + "\n" + tail,
            f"joined-{joined[0].fingerprint[:16]}",
            labels=["fixloop-alert"],
        )

    async def _tell_intake(self, service: str | None = None) -> None:
        """Let the scope's intake attach alerts on the deployed ``service`` (None: the one the change touches) to
        this loop (best effort: recorded)."""
        wi = self.inp.work_item
        service = service or self._service()  # a service the change touches: its alerts after the deploy are ours
        if not service or self.state.deployed_at is None:
            return
        deploy = RecentDeploy(work_item_id=wi.id, service=service, deployed_at=self.state.deployed_at)
        await self._signal_intake("deployed", deploy, "the deploy")

    async def _verify(self) -> None:
        """Wait out the verification window after the deploy (plus ``verify_delay`` for the metrics to arrive; a
        durable timer), then judge: the baseline window before Flux applied the change (``changed_at``) against the
        window after it runs (``deployed_at``: its rollout complete); the rollout between is left out. A change to
        several services (a bump of one package across their manifests, ``PlannedChange.services``) is judged in
        each of them (each told to the intake as deployed, one ``verify.judge`` each, behind the patch
        ``verify-every-touched-service``) and its verdict is theirs together (``every_service``: one failing fails
        it, and its revert undoes the change for all)."""
        if self.state.deployed_at is None:
            raise _inconsistent("no deploy time")
        last = self._last_target()
        services = self._services()
        each = len(services) > 1 and workflow.patched("verify-every-touched-service")
        if last and each:
            for service in services:
                await self._tell_intake(service)
        elif last:
            await self._tell_intake()
        policy = self._verification_here()
        ready_at = self.state.deployed_at + policy.window + self.inp.options.verify_delay
        if workflow.now() < ready_at:
            self._note(f"verifying after {ready_at.isoformat(timespec='seconds')} ({policy.window} window)")
            self._show()
            await workflow.sleep(ready_at - workflow.now())
        self._apply_events()
        verdicts: list[tuple[str, Verdict]] = []
        for service in services if each else [self._service()]:
            judged = await workflow.execute_activity_method(
                VerifyActivities.judge,
                JudgeInput(
                    scope=self.inp.scope,
                    work_item=self.inp.work_item,
                    deployed_at=self.state.deployed_at,
                    changed_at=self.state.changed_at,
                    policy=policy,
                    service=service,
                    monitor_ids=self._monitor_ids() if last else [],  # the alerts are the last environment's
                    recovered=bool(self.state.recovered),
                    alerts=alertmanager_alerts([*self.inp.signals, *self.state.alerts]) if last else [],
                ),
                **options.call(Call.VERIFY, f"judge the deploy of {service}" if each else "judge the deploy"),
            )
            if each:
                self._note(f"verdict of {service}: {judged.result.value}: {judged.summary}")
            verdicts.append((service or "", judged))
        verdict = every_service(verdicts)
        self.state.verdict = verdict
        options.count(VERDICTS, result=verdict.result.value)
        env = self._env_here()
        if env is not None:
            env.verdict = verdict
        where = f" in {env.name}" if env is not None else ""
        self._note(f"verdict{where} {verdict.result.value}: {verdict.summary}")
        if verdict.result in (VerdictResult.PASS, VerdictResult.FAIL):
            self._advance(Stage.CLOSE)
            return
        await self._comment(
            "\n".join(
                [
                    f"Verification was inconclusive{where} ({verdict.result.value}): {verdict.summary}",
                    *(f"- {f}" for f in verdict.figures()),
                    *verdict.evidence,
                    "A human decides: `fixloop decide <workflow-id> pass|fail` (or the `decide` update in the "
                    "Temporal UI). pass closes this issue; fail opens a revert merge request.",
                ]
            )[:32_000],
            "decide",
            labels=["fixloop-decide"],
        )
        gated = self._gate_mr()
        if gated is not None:
            shown = f" in {markdown(env.name, 63)}" if env is not None else ""
            heading = (
                f"fixloop's verification of this change{shown} is **{verdict.result.value.replace('_', ' ')}**: "
                "a human decides (`fixloop decide <workflow-id> pass|fail`); fail opens a revert merge request."
            )
            await self._mr_note(gated, self._verdict_markdown(verdict, heading), f"decide-{gated.iid}")
        self._advance(Stage.DECIDE)

    async def _decide(self) -> None:
        """Wait for a ``decide`` update whose ``by`` GitLab shows to be a real, active, allowed human (not the bot;
        ``gitlab.check_user``, ``fixloop.core.gate.decider_refusal``); a refused one is noted and the loop keeps
        waiting."""
        opts = self.inp.options

        async def check() -> None:
            while self.state.decisions_pending and self.state.decision is None:
                d, *self.state.decisions_pending = self.state.decisions_pending
                user = await workflow.execute_activity_method(
                    MergeRequestActivities.check_user,
                    CheckUserInput(username=d.by),
                    **options.call(Call.EXTERNAL, "check who decided"),
                )
                why = decider_refusal(user)
                if why is not None:
                    self._note(f"decision {d.result} by {clean(d.by, 100)} refused: {why}")
                    continue
                self.state.decision = d

        def passed() -> bool:
            d = self.state.decision
            if d is None:
                return False
            self._note(f"{d.by} decided {d.result}" + (f": {d.reason}" if d.reason else ""))
            self._advance(Stage.CLOSE)
            return True

        await self._wait(
            check, passed, opts.decide_escalate_after, opts.decide_max_escalations, "awaiting a decision",
            Outcome.UNDECIDED,
        )  # fmt: skip

    def _passed_verification(self) -> bool:
        d, v = self.state.decision, self.state.verdict
        if d is not None:
            return d.result == "pass"
        return v is not None and v.result is VerdictResult.PASS

    async def _close(self) -> None:
        verdict = self.state.verdict
        if verdict is None:
            raise _inconsistent("no verdict")
        env = self._env()
        where = f" in {env.name}" if env is not None else ""
        where_md = f" in {markdown(env.name, 63)}" if env is not None else ""
        evidence = self._verdict_text(verdict, where)
        if self.state.revert is not None:  # the revert is merged and applied
            await self._comment(
                f"The revert merge request !{self.state.revert.iid} was merged and applied by Flux: "
                f"{(self.state.reverted_sha or '?')[:12]} is rolled back.\n{evidence}"[:32_000],
                "reverted",
                labels=["fixloop-reverted"],
            )
            self._advance(Stage.DONE, Outcome.REVERTED)
            return
        mr = self.state.merge_request
        if self._passed_verification() and self._next_target():
            await self._promote_next(evidence)
            return
        if len(self.state.environments) > 1:
            evidence += "\nEnvironments:\n" + "\n".join(f"- {e.line()}" for e in self.state.environments)
        if self._passed_verification():
            if self.state.issue and not self._in_chain():  # a chain's issue is closed by its base's loop
                await workflow.execute_activity_method(
                    WorkItemActivities.close_work_item,
                    CloseWorkItemInput(key=self.state.issue.key, resolution="done", comment=evidence[:32_000]),
                    **options.call(Call.EXTERNAL, "close the Jira issue"),
                )
            if env is not None and env.merge_request is not None:  # the environment's own merge request
                heading = f"fixloop verified this change in {markdown(env.name, 63)}: **pass**."
                await self._mr_note(env.merge_request, self._verdict_markdown(verdict, heading), f"verified-{env.name}")
            if mr is not None:
                heading = f"fixloop verified this change after its deploy{where_md}: **pass**."
                body = self._verdict_markdown(verdict, heading, [e.line() for e in self.state.environments[:-1]])
                await self._mr_note(mr, body, "verified")
            self._advance(Stage.DONE, Outcome.VERIFIED)
            return
        # fail: the evidence on Jira and the MR, the issue reopened, and a revert of exactly the merge commit, gated
        s = self.state.mr_state
        merge_sha = (s.merge_sha or s.head_sha) if s else None
        here = self._env_here()
        gated = here.merge_request if here is not None and here.merge_request is not None else mr
        also = [self.state.source_sha] if gated is not mr and self.state.source_sha else []
        if gated is None or merge_sha is None:
            raise _inconsistent("a failed verdict without a merged merge request")
        why = self._revert_why(verdict, here)
        await self._comment(
            f"Verification failed after the deploy of {merge_sha[:12]}; fixloop opens a revert merge request.\n"
            f"{evidence}"[:32_000],
            "verify-failed",
            labels=["fixloop-verify-failed"],
        )
        what = verdict.headline() if self.state.decision is None else why
        heading = (
            f"fixloop's verification of this change{where_md} **failed**: {markdown(what, 120)}. "
            "fixloop opens a merge request reverting it (gated like this one)."
        )
        await self._mr_note(gated, self._verdict_markdown(verdict, heading), f"verify-failed-{gated.iid}")
        await self._set_status("To Do")
        plan = self.state.plan
        revert = await workflow.execute_activity_method(
            MergeRequestActivities.open_revert_merge_request,
            OpenRevertInput(
                scope=self.inp.scope,
                work_item=self.inp.work_item,
                original=gated,
                merge_sha=merge_sha,
                also=also,
                reason=(f"verification failed{' in ' + here.name if here else ''} ({verdict.summary})")[:2_000],
                why=why,
                evidence=[line[:300] for line in verdict.evidence[:50]],
                metrics=[line[:300] for line in verdict.figures()[:20]],
                undoes=[op[:300] for op in (plan.operations if plan is not None else [])[:20]],
                jira_key=self._jira_key(),
            ),
            **options.call(Call.EXTERNAL, "open the revert merge request"),
        )
        self.state.revert, self.state.reverted_sha, self.state.revert_why = revert, merge_sha, why
        self.state.mr_state, self.state.approvals_seen = None, {}
        self._merged_unapproved_noted = False
        self._set_attributes((options.SA_MERGE_REQUEST, revert.url))
        self._note(f"revert merge request !{revert.iid} of {merge_sha[:12]}: {revert.url}")
        await self._link(revert.url, f"Revert merge request !{revert.iid}", "link the revert merge request")
        link = markdown_link(f"!{revert.iid}", revert.url)
        for original in [gated, *([mr] if mr is not None and mr is not gated else [])]:
            await self._mr_note(
                original,
                f"Reverted by {link}: {markdown(why, 120)}.\n\nfixloop opened the revert (gated like this merge "
                "request); once it is approved, merged and applied, this change is rolled back.",
                f"reverted-by-{revert.iid}",
            )
        self._gate_on(revert, GateKind.ROLLBACK, None, environment=here.name if here else None, why=why)
        self._advance(Stage.AWAIT_APPROVAL)

    def _revert_why(self, verdict: Verdict, here: EnvironmentState | None) -> str:
        """Why the change is reverted, one short line (the revert's title ends with it): the first failed metric
        (critical first), ``verification failed in staging: error rate +200 %`` (every number is in the revert's
        description); after a human's ``decide``: ``marginal in staging, decided fail by alice``."""
        where = f" in {here.name}" if here is not None else ""
        d = self.state.decision
        if d is not None:
            return clean(f"{verdict.result.value.replace('_', ' ')}{where}, decided fail by {d.by}", 120)
        return clean(f"verification failed{where}: {verdict.headline(1, more=False)}", 120)

    def _verdict_text(self, verdict: Verdict, where: str) -> str:
        """The verdict for Jira (plain text: the Jira activity escapes it): result and summary, the numbers with their
        units, the evidence, a human's decision."""
        lines = [
            f"Verdict{where}: {verdict.result.value}. {verdict.summary}",
            *(f"- {f}" for f in verdict.figures()),
            *verdict.evidence,
        ]
        d = self.state.decision
        if d is not None:
            lines.append(f"Decided {d.result} by {d.by}" + (f": {d.reason}" if d.reason else ""))
        return "\n".join(lines)

    def _verdict_markdown(self, verdict: Verdict, heading: str, before: list[str] | None = None) -> str:
        """A merge request note of the verdict (GitLab Markdown): ``heading`` (Markdown), every metric before ->
        after with its unit, the summary, a human's decision, the environments verified ``before``, the evidence
        folded; untrusted text escaped and bounded."""
        lines = [heading, "", *(f"- {markdown(f, 300)}" for f in verdict.figures()[:30])]
        lines += ["", markdown(verdict.summary, 600)]
        d = self.state.decision
        if d is not None:
            why = f": {markdown(d.reason, 500)}" if d.reason else ""
            lines += ["", f"Decided {d.result} by {markdown(d.by, 100)}{why}"]
        if before:
            lines += ["", "Verified before:", *(f"- {markdown(b, 500)}" for b in before[:10])]
        if verdict.evidence:
            lines += ["", "<details><summary>Evidence</summary>", ""]
            lines += [f"- {markdown(e, 500)}" for e in verdict.evidence[:50]]
            lines += ["", "</details>"]
        return "\n".join(lines)

    # --- waiting, escalation, continue-as-new ----------------------------------------------------------------

    async def _wait(
        self,
        poll: Callable[[], Awaitable[None]],
        passed: Callable[[], bool],
        escalate_after: timedelta,
        max_escalations: int,
        what: str,
        expired: Outcome,
        remind: MergeRequestRef | None = None,
    ) -> None:
        """Wait until ``passed()`` (evaluated after every event or poll); ``poll()`` runs every poll interval and
        once after each drain of events that woke the loop (a burst of webhooks is one read); escalate every
        ``escalate_after`` (a Jira comment with a label, and a reminder note on ``remind``, the merge request waiting
        for its reviewer); after ``max_escalations`` escalations and one more period, end with ``expired``."""
        opts = self.inp.options
        stage = self.state.stage
        if self.state.waiting_since is None:
            self.state.waiting_since = workflow.now()
            self.state.escalations = 0
        while self.state.stage is stage:
            self._apply_events()
            if self._woken:
                self._woken, covered = 0, self.state.wakes
                await poll()  # events that come during it wake one more read, at most
                self.state.wakes_read = covered
            await self._report_joined()
            if passed():
                break
            since = self.state.waiting_since
            next_escalation = since + escalate_after * (self.state.escalations + 1)
            now = workflow.now()
            if now >= next_escalation:
                if self.state.escalations >= max_escalations:
                    waited = now - since
                    self._note(f"gave up {what} after {waited}; {self.state.escalations} escalation(s)")
                    await self._comment(
                        f"fixloop stopped {what} after {waited} without progress; the loop ended ({expired.value}).",
                        f"expired-{stage.value}",
                        labels=["fixloop-expired"],
                    )
                    self._advance(Stage.DONE, expired)
                    break
                self.state.escalations += 1
                await self._comment(
                    f"fixloop has been {what} for {now - since} (escalation {self.state.escalations} of "
                    f"{max_escalations}).",
                    f"escalate-{stage.value}-{self.state.escalations}",
                    labels=[f"fixloop-stale-{stage.value.replace('_', '-')}"],
                )
                if remind is not None:
                    await self._mr_note(
                        remind,
                        f"Reminder: this merge request has been waiting for a review for {now - since}. fixloop "
                        "proceeds once a human approves the current head and it is merged.",
                        f"remind-{remind.iid}-{self.state.escalations}",
                    )
                self._note(f"escalated ({self.state.escalations}): still {what}")
                continue
            if options.continue_as_new_due(self.inp.options.max_run_events):
                await workflow.wait_condition(workflow.all_handlers_finished)
                self._apply_events()
                self.state.runs += 1
                workflow.continue_as_new(self._carry())
            timeout = min(opts.poll_interval, next_escalation - now)
            try:
                await workflow.wait_condition(lambda: bool(self._events), timeout=timeout)
            except TimeoutError:
                await poll()
        self.state.waiting_since = None

    def _apply_events(self) -> None:
        events, self._events = self._events, []
        for e in events:
            if isinstance(e, MoreSignals):
                known = set(self.inp.work_item.signals)
                new = [f for f in e.work_item.signals if f not in known]
                self.state.more_signals += len(new)
                if new:
                    self._note(f"{len(new)} more signal(s) triaged into this work item")
            elif isinstance(e, AlertsJoined):
                known = {a.fingerprint for a in self.state.alerts} | set(self.inp.work_item.signals)
                new = [a for a in e.signals if a.fingerprint not in known]
                if new and self.state.deployed_at is None:
                    self.state.alerts = self._kept_alerts(self.state.alerts + new)
                    if self.inp.work_item.kind is WorkItemKind.INCIDENT:
                        self._track_recovery(new)
                    self._joined_unreported.extend(new)
                    self._note(f"{len(new)} alert(s) joined: {clean(new[0].title or 'alert', 200)}")
                elif new:
                    self._note(f"{len(new)} alert(s) arrived after the deploy; not joined")
            elif isinstance(e, Decision):  # a claim: checked against GitLab (``_decide``) before it counts
                if self.state.decision is None and self.state.stage is Stage.DECIDE:
                    pending = [*self.state.decisions_pending, e]
                    if len(pending) > DECISIONS_PENDING_MAX:
                        self._note(f"decision {pending[0].result} by {clean(pending[0].by, 100)} dropped: too many")
                    self.state.decisions_pending = pending[-DECISIONS_PENDING_MAX:]
                    self._woken += 1
            elif isinstance(e, Refresh):
                self.state.refreshed += len(e.signals)
                if self.inp.work_item.kind is WorkItemKind.INCIDENT:
                    self._track_recovery(e.signals)
                if self.state.deployed_at is not None:  # a monitor of this loop recovered after the deploy
                    for s in e.signals:
                        if (
                            s.transition is Transition.RECOVERED
                            and s.monitor_id
                            and s.monitor_id not in self.state.recovered
                        ):
                            self.state.recovered.append(s.monitor_id)
                transitions = sorted({s.transition.value for s in e.signals if s.transition})
                seen = f" ({', '.join(transitions)})" if transitions else ""
                self._note(f"{len(e.signals)} signal(s) seen again{seen}")
            elif isinstance(e, ApprovalEvent | MergeRequestEvent):  # claims: they only wake the gate's next read
                mr = self._gate_mr()
                if self.state.stage not in _GATED or (isinstance(e, MergeRequestEvent) and mr and e.iid != mr.iid):
                    continue  # past the gate, or another merge request (e.g. the fix's once the revert is gated)
                self.state.wakes += 1
                self._woken += 1
            elif isinstance(e, DeployEvent) and self._delivery() is not None:
                # a hint: which Kustomization sent it is not said, and several apply the same revision: read ours
                if self.state.stage is Stage.AWAIT_DEPLOY:
                    self._woken += 1
            elif isinstance(e, DeployEvent):
                s = self.state.mr_state
                sha = (s.merge_sha or s.head_sha) if s else None
                if sha and sha in e.revision:
                    self.state.deploy = DeployState(
                        applied=e.ready, failed=not e.ready, revision=e.revision, message=e.message
                    )
                else:
                    self._note(f"Flux event for another revision ignored: {e.revision[:80]}")

    async def _comment(self, body: str, dedup: str, labels: list[str] | None = None, key: str | None = None) -> None:
        """A Jira comment on this work item's issue (or on ``key``), once per ``dedup``. ``body`` is plain text: the
        Jira activity escapes all of it (``fixloop.core.markup.jira_text``), so alert and scanner text in it is
        inert."""
        key = key or (self.state.issue.key if self.state.issue else None)
        if key is None:
            return
        await workflow.execute_activity_method(
            WorkItemActivities.comment,
            CommentInput(
                key=key,
                body=body[:32_000],
                labels=labels or [],
                dedup_key=f"{workflow.info().workflow_id}/{dedup}",
            ),
            **options.call(Call.ESCALATE, f"Jira comment ({dedup})"),
        )

    # --- state and the UI ------------------------------------------------------------------------------------

    def _advance(self, stage: Stage, outcome: Outcome | None = None) -> None:
        self.state.stage = stage
        if stage is Stage.DONE:
            self.state.outcome = outcome
        self._set_attributes((options.SA_STAGE, stage.value))
        options.count(STAGE_ENTERED, stage=stage.value)
        if outcome is not None and stage is Stage.DONE:
            self._set_attributes((options.SA_OUTCOME, outcome.value))
            options.count(LOOPS_FINISHED, outcome=outcome.value, kind=self.inp.work_item.kind.value)
            if outcome is Outcome.VERIFIED and self.state.started_at is not None:
                options.observe(TIME_TO_VERIFY, (workflow.now() - self.state.started_at).total_seconds())

    def _note(self, text: str) -> None:
        self.state.evidence.append(Evidence(at=workflow.now(), stage=self.state.stage, text=text[:2_000]))
        del self.state.evidence[:-EVIDENCE_MAX]

    async def _link(self, url: str, title: str, summary: str) -> None:
        """A remote link from this work item's Jira issue to ``url`` (a merge request), once per URL."""
        if self.state.issue is None:
            return
        await workflow.execute_activity_method(
            WorkItemActivities.link,
            LinkInput(key=self.state.issue.key, url=url, title=title),
            **options.call(Call.EXTERNAL, summary),
        )

    async def _mr_note(self, mr: MergeRequestRef, body: str, dedup: str) -> None:
        await workflow.execute_activity_method(
            MergeRequestActivities.note,
            NoteInput(
                project=mr.project, iid=mr.iid, body=body[:32_000], dedup_key=f"{workflow.info().workflow_id}/{dedup}"
            ),
            **options.call(Call.ESCALATE, f"merge request note ({dedup})"),
        )

    async def _audit(self, mr: MergeRequestRef, event: str, jira: str, note: str) -> None:
        """One audit record where people look: a Jira comment (``jira``, plain text) and a note on ``mr`` (``note``,
        Markdown), each once per merge request and ``event`` (the dedup key ``<event>-<iid>``)."""
        dedup = f"{event}-{mr.iid}"
        await self._comment(jira, dedup)
        await self._mr_note(mr, note, dedup)

    def _gate_on(
        self,
        mr: MergeRequestRef,
        kind: GateKind,
        title: str | None,
        environment: str | None = None,
        why: str | None = None,
    ) -> None:
        """Record the merge request now waiting at the human gate (``LoopState.gate``: what the status query, the
        current details and the demo show): its kind and title (the MR's as opened, else the planned one)."""
        shown = clean(mr.title or title or f"merge request !{mr.iid}", 255)
        self.state.gate = Gate(kind=kind, iid=mr.iid, url=mr.url[:1_000], title=shown, environment=environment, why=why)

    def _gate_words(self, mr: MergeRequestRef) -> str:
        """``merge request !7``, ``revert merge request !8``, ``staging merge request !9``."""
        if self.state.revert is not None and mr.iid == self.state.revert.iid:
            return f"revert merge request !{mr.iid}"
        env = self._env()
        if env is not None and env.merge_request is not None and env.merge_request.iid == mr.iid:
            return f"{env.name} merge request !{mr.iid}"
        return f"merge request !{mr.iid}"

    async def _audit_gate(self, mr: MergeRequestRef, s: MergeRequestState, verdict: GateVerdict) -> None:
        """The gate passed: who approved which head, and the merge commit, as read back from GitLab, on Jira and on
        the merge request (``approved-<iid>``, ``merged-<iid>``)."""
        what = self._gate_words(mr)
        who = ", ".join(verdict.counted)
        at = {a.by: a.at for a in s.approvals if a.by in verdict.counted and a.at is not None}
        when = "; ".join(f"{by} at {t.isoformat(timespec='seconds')}" for by, t in at.items())
        refused = "; ".join(f"{by}: {why}" for by, why in verdict.refused[:5])
        await self._audit(
            mr,
            "approved",
            f"Approved: {what} was approved by {who} at head {s.head_sha}"
            + (f" ({when})" if when else "")
            + ", as read back from GitLab's approvals."
            + (f" Not counted: {refused}." if refused else ""),
            f"fixloop read the approvals back from GitLab: approved by {markdown(who, 300)} at head "
            f"{code(s.head_sha, 64)}"
            + (f" ({markdown(when, 300)})" if when else "")
            + "."
            + (f"\n\nNot counted: {markdown(refused, 600)}." if refused else ""),
        )
        merged_at = f" at {s.merged_at.isoformat(timespec='seconds')}" if s.merged_at is not None else ""
        nxt = "its build" if self.state.stage is Stage.AWAIT_BUILD else "Flux's apply"
        target = self._target()
        if target is not None and self.state.stage is Stage.AWAIT_DEPLOY:
            nxt += f" in {target.name}"
        sha = s.merge_sha or s.head_sha
        await self._audit(
            mr,
            "merged",
            f"Merged: {what} was merged as {sha}{merged_at}; fixloop now awaits {nxt}.",
            f"fixloop read the merge back from GitLab: merged as {code(sha, 64)}{merged_at}; it now awaits "
            f"{markdown(nxt, 120)}.",
        )

    async def _audit_deploy(
        self, mr: MergeRequestRef | None, d: DeployState, merge_sha: str, kustomization: str | None
    ) -> None:
        """Flux applied the merge: the revision, where (environment, Kustomization or HelmRelease) and when fixloop
        saw it Ready, on Jira and on ``mr`` (``deployed-<environment>-<iid>``)."""
        if mr is None:
            return
        target = self._target()
        env = target.name if target is not None else None
        revision = d.revision or merge_sha
        if d.helmrelease:
            via = f"HelmRelease {d.helmrelease}"
        elif d.kustomization or kustomization:
            via = f"Kustomization {d.kustomization or kustomization}"
        else:
            via = "the configured Kustomization"
        seen = _utc(workflow.now())
        where = f" in {env}" if env else ""
        await self._audit(
            mr,
            f"deployed-{env}" if env else "deployed",
            f"Deployed: Flux applied {revision}{where} ({via}), the merge of {self._gate_words(mr)}; seen Ready at "
            f"{seen}" + (" (through a later commit)" if d.via_descendant else "") + ".",
            f"fixloop read the deploy back from Flux: {code(revision, 300)} applied"
            + (f" in {markdown(env, 63)}" if env else "")
            + f" ({markdown(via, 400)}), seen Ready at {seen}"
            + (" (through a later commit)" if d.via_descendant else "")
            + ".",
        )

    async def _set_status(self, status: str) -> None:
        if self.state.issue is None:
            return
        moved = await workflow.execute_activity_method(
            WorkItemActivities.set_status,
            SetStatusInput(key=self.state.issue.key, status=status),
            **options.call(Call.EXTERNAL, f"Jira status {status}"),
        )
        if not moved:
            self._note(f"Jira issue {self.state.issue.key} has no transition to {status!r}; left as it is")

    def _gate_mr(self) -> MergeRequestRef | None:
        """The merge request the approval gate is about: the revert's once one is open, else the current
        environment's tag change once one is open, else the fix's."""
        env = self._env()
        return self.state.revert or (env.merge_request if env is not None else None) or self.state.merge_request

    # --- the delivery: which environment, what runs there ----------------------------------------------------

    def _delivery(self) -> Delivery | None:
        plan = self.state.plan
        return plan.delivery if plan is not None else None

    def _target(self) -> Target | None:
        d = self._delivery()
        return d.targets[min(self.state.target, len(d.targets) - 1)] if d is not None else None

    def _env(self) -> EnvironmentState | None:
        """The current environment's record once it has one (a source change: from its promotion on)."""
        envs = self.state.environments
        return envs[self.state.target] if self.state.target < len(envs) else None

    def _env_here(self) -> EnvironmentState | None:
        """The current environment's record, made for a change followed in one environment (no build)."""
        target = self._target()
        if target is not None and self._env() is None and self.state.target == len(self.state.environments):
            self.state.environments.append(EnvironmentState(name=target.name))
        return self._env()

    def _last_target(self) -> bool:
        d = self._delivery()
        return d is None or d.image is None or self.state.target >= len(d.targets) - 1

    def _next_target(self) -> bool:
        d = self._delivery()
        return d is not None and d.image is not None and self.state.target + 1 < len(d.targets)

    def _kustomization(self) -> str | None:
        """The Flux Kustomization the deploy is read from: the environment's when ``fixloop.yaml`` declares them,
        else the verification policy's."""
        d, target = self._delivery(), self._target()
        if d is not None and d.declared and target is not None:
            return target.flux
        return self._verification().kustomization

    def _rollout_checked(self) -> bool:
        """The rollout is read where ``fixloop.yaml`` declares the environments (where the workloads run is then
        known) and the change has a workload."""
        d = self._delivery()
        return d is not None and d.declared and d.workload is not None

    def _verification_here(self) -> VerificationPolicy:
        """The verification policy in the current environment: with declared environments, its name is the Datadog
        ``env``, its Flux Kustomization the one read, and its own ``window`` (soak time) when it sets one that holds
        the policy's ``min_points`` intervals."""
        policy, d, target = self._verification(), self._delivery(), self._target()
        if d is not None and d.declared and target is not None:
            update: dict[str, object] = {"env": target.name, "kustomization": target.flux}
            if target.window is not None and target.window >= policy.interval * policy.min_points:
                update["window"] = target.window
            return policy.model_copy(update=update)
        return policy

    async def _promote_next(self, evidence: str) -> None:
        """The current environment passed: say so (Jira, its merge request) and go on to the next one."""
        env, d, verdict = self._env(), self._delivery(), self.state.verdict
        if env is None or d is None or verdict is None:
            raise _inconsistent("no environment to promote from")
        nxt = d.targets[self.state.target + 1].name
        await self._comment(
            f"Verified in {env.name}: {env.line()}\n{evidence}\nfixloop promotes {env.tag} to {nxt}."[:32_000],
            f"verified-{env.name}",
            labels=[f"fixloop-verified-{env.name}"],
        )
        if env.merge_request is not None:
            heading = (
                f"fixloop verified this change in {markdown(env.name, 63)}: **pass**. It promotes "
                f"{code(env.tag or '?', 128)} to {markdown(nxt, 63)}."
            )
            await self._mr_note(env.merge_request, self._verdict_markdown(verdict, heading), f"verified-{env.name}")
        self.state.target += 1
        self.state.verdict, self.state.decision, self.state.deployed_at = None, None, None
        self.state.changed_at = None
        self._advance(Stage.PROMOTE)

    def _verification(self) -> VerificationPolicy:
        plan = self.state.plan
        return plan.verification if plan is not None and plan.verification is not None else VerificationPolicy()

    def _service(self) -> str | None:
        """The service this loop's change touches (``fixloop.core.service.touched_service``): the one the intake is
        told it is fixing and the one verified. For a fix (findings only: no service of their own) the planned
        change's."""
        plan = self.state.plan
        return touched_service(self.inp.work_item, self.inp.signals, plan.service if plan is not None else None)

    def _services(self) -> list[str]:
        """Every service the planned change touches when it is several (``PlannedChange.services``: a bump of one
        package across their manifests), each verified; else [] (the one of ``_service`` is)."""
        plan = self.state.plan
        return list(plan.services) if plan is not None and len(plan.services) > 1 else []

    def _monitor_ids(self) -> list[int]:
        """The Datadog monitors whose alerts are in this work item (an alert-driven item must see them recover).
        Alertmanager alerts name no monitor to look up: their ``recovered`` signal is the evidence."""
        return datadog_monitor_ids([*self.inp.signals, *self.state.alerts])

    def _jira_key(self) -> str | None:
        return self.state.issue.key if self.state.issue else None

    def _kept_alerts(self, alerts: list[Signal]) -> list[Signal]:
        """The newest of ``alerts`` within ``ALERTS_MAX`` and ``ALERTS_MAX_BYTES``; the others counted."""
        kept: list[Signal] = []
        size = 0
        for a in reversed(alerts[-ALERTS_MAX:]):
            size += signal_bytes(a) + 1
            if size > ALERTS_MAX_BYTES:
                break
            kept.append(a)
        self.state.alerts_dropped += len(alerts) - len(kept)
        return kept[::-1]

    def _carry(self) -> RemediationInput:
        """The continue-as-new input, within ``CARRY_MAX_BYTES``: while it is over, drop (and count) the oldest
        joined alerts, then the oldest evidence, then the start signals that are not alerts (planning is behind:
        the carry happens while waiting, never before the plan)."""
        state = self.state
        carry = self.inp.model_copy(update={"state": state})
        while len(to_json(carry)) > CARRY_MAX_BYTES:
            signals = carry.signals
            if state.alerts:
                half = max(1, len(state.alerts) // 2)
                state.alerts_dropped += half
                state.alerts = state.alerts[half:]
            elif len(state.evidence) > 1:
                half = len(state.evidence) // 2
                state.carry_dropped += half
                state.evidence = state.evidence[half:]
            elif any(s.kind is not Kind.ALERT for s in signals):
                kept = [s for s in signals if s.kind is Kind.ALERT]
                state.carry_dropped += len(signals) - len(kept)
                carry = carry.model_copy(update={"signals": kept})
            elif signals:
                half = max(1, len(signals) // 2)
                state.carry_dropped += half
                carry = carry.model_copy(update={"signals": signals[half:]})
            else:
                break  # the work item and plan alone: bounded by the intake and the planner
        return carry

    def _set_attributes(self, *pairs: tuple[SearchAttributeKey[str], str]) -> None:
        if self.inp.options.search_attributes:
            workflow.upsert_search_attributes([key.value_set(value) for key, value in pairs if value])

    def _latest_verdict(self) -> tuple[str | None, Verdict] | None:
        """The latest verdict and its environment: the current one's, else the last environment's verified."""
        env = self._env()
        if self.state.verdict is not None:
            return (env.name if env is not None else None), self.state.verdict
        done = [e for e in self.state.environments if e.verdict is not None]
        return (done[-1].name, done[-1].verdict) if done and done[-1].verdict is not None else None

    def _show(self) -> None:
        """The Temporal UI's current details (Markdown): the stage and the gate waiting (a rollback's labelled as
        such), the Jira issue, every merge request (the fix's, each environment's, the revert's) as a link, the
        build, each environment, the latest verdict with its numbers and units, the last evidence. The title, the
        evidence and every text from outside (alerts, scanners, GitLab, Datadog) are escaped with
        ``fixloop.core.markup.markdown`` and bounded; links only to plain http(s) URLs (``markdown_link``); the
        whole at most ``CURRENT_DETAILS_MAX`` characters."""
        wi, s = self.inp.work_item, self.state
        head = f"**{markdown(wi.title, 200)}**"
        lines = [head, "", f"- stage: `{s.stage.value}`" + (f" ({s.outcome.value})" if s.outcome else "")]
        if s.gate is not None and s.stage is Stage.AWAIT_APPROVAL:
            g = s.gate
            lines.append(
                f"- **{g.kind.value} gate**: {markdown(g.title, 255)} ({markdown_link(f'!{g.iid}', g.url)})"
                + (f", {markdown(g.environment, 63)}" if g.environment else "")
            )
        if s.issue:
            lines.append(f"- Jira: {markdown_link(markdown(s.issue.key, 40), s.issue.url)}")
        if wi.incident and wi.incident.candidates:
            top = wi.incident.candidates[0]
            why = f": {markdown(top.evidence[0], 200)}" if top.evidence else ""
            lines.append(f"- likely root cause: **{markdown(top.entity, 120)}**{why}")
        named = [c for c in s.investigation.candidates if c.culprit] if s.investigation else []
        if named and named[0].culprit is not None:
            c = named[0].culprit.commit
            mr = f", !{c.merge_request.iid}" if c.merge_request else ""
            lines.append(
                f"- culprit change: `{c.sha[:12]}` {markdown(c.title, 160)} by {markdown(c.author_name, 80)}{mr}"
            )
        if s.merge_request:
            m = s.merge_request
            title = f": {markdown(m.title, 160)}" if m.title else ""
            lines.append(f"- merge request: {markdown_link(f'!{m.iid}', m.url)}{title}")
        if s.build is not None and s.build.state in ("failed", "built"):
            built = f"`{markdown(s.build.tag or '', 128)}`" if s.build.tag else markdown(s.build.message, 300)
            pipeline = markdown_link(f"pipeline {s.build.pipeline_id}", s.build.pipeline_url or "")
            lines.append(f"- build: {s.build.state} {built} ({pipeline})")
        for e in s.environments:
            mr = f" {markdown_link(f'!{e.merge_request.iid}', e.merge_request.url)}" if e.merge_request else ""
            lines.append(f"- {markdown(e.name, 63)}: {markdown(e.line().partition(': ')[2], 400)}{mr}")
        for r in s.chain[:12]:
            lines.append(f"- image {markdown(r.line(), 400)}")
        if len(s.chain) > 12:
            lines.append(f"- \u2026 and {len(s.chain) - 12} more image(s) of the chain")
        if s.revert is not None:
            why = f": {markdown(s.revert_why, 120)}" if s.revert_why else ""
            lines.append(f"- revert: {markdown_link(f'!{s.revert.iid}', s.revert.url)}{why}")
        latest = self._latest_verdict()
        if latest is not None:
            where, v = latest
            shown = f" ({markdown(where, 63)})" if where else ""
            figures = "; ".join(v.figures()[:8])
            lines.append(
                f"- verdict{shown}: **{v.result.value.replace('_', ' ')}**"
                + (f": {markdown(figures, 900)}" if figures else f": {markdown(v.summary, 400)}")
            )
        if s.escalations:
            lines.append(f"- escalations: {s.escalations}")
        if s.evidence:
            lines.append(f"- last: {markdown(s.evidence[-1].text, 500)}")
        workflow.set_current_details(_within(lines, 4 * CURRENT_DETAILS_MAX, CURRENT_DETAILS_MAX))
