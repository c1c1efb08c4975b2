"""The remediation of an incident: which typed change, if any, fixes it (issue 17), chosen by code, explained.

``symptoms(signals)`` sorts an incident's alerts by what they say, from their words (``fixloop.core.rca.words`` of the
monitor name or ``alertname``, the title and the ``key:value`` tags), never from a system's entity names:

* ``oom``: a container killed for memory: the words ``oom`` / ``oomkilled`` / ``oomkilling`` (Alertmanager
  ``KubeContainerOOMKilled``-style alertnames, a ``reason:OOMKilled`` label or tag as kube-prometheus'
  ``KubePodCrashLooping`` and Datadog's ``kubernetes.containers.state.terminated`` carry it, Kubernetes' event
  reasons ``OOMKilled`` / ``OOMKilling``); a Datadog metric alert on ``kubernetes.containers.state.terminated``
  counts only with that reason (a ``reason:oomkilled`` tag or the word in its title);
* ``saturation``: sustained CPU saturation or throttling: ``cpu`` with ``throttling`` / ``throttled`` /
  ``saturation`` / ``saturated`` / ``high`` / ``usage``;
* ``regression``: error rate or latency (``rca.family`` says symptom: errors, latency, response time, ...).

``choose(...)`` returns a ``Choice``: the ``action`` (``revert``, ``rollback_image``, ``memory``, ``replicas``; None:
no safe action) for the ``service`` (the top root-cause candidate's), with its ``reason`` in words. The rule, first
match wins, an action the policy does not allow (``allowed``) is never chosen (the next rule is tried, and the reason
says what was skipped):

1. OOM kills on the top candidate's service -> ``memory`` (a new limit from the observed peak; the planner computes
   and validates it), unless the culprit change of that service itself lowered its memory (then rule 2: undo it);
2. a culprit change of the top candidate's service applied before the onset, with error-rate or latency alerts (or
   OOM kills caused by that change) -> ``rollback_image`` when the culprit only changed image tags, else ``revert``;
3. CPU saturation or throttling on the top candidate's service while none of its alerts is an error-rate one ->
   ``replicas``;
4. otherwise no action: the incident stays a Jira issue with its ranked evidence, and ``reason`` says why no merge
   request was opened.

Pure: no I/O. The LLM may reword what this returns, never pick another action (``fixloop.core.change`` validates the
operation the planner builds for the chosen action, and only that operation is written).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from fixloop.core.culprit import Culprit, duration
from fixloop.core.incidents import top_service
from fixloop.core.models import Kind, Signal, WorkItem
from fixloop.core.parsing import clean
from fixloop.core.rca import family, words

REASON_MAX = 1_000


class Action(StrEnum):
    REVERT = "revert"
    ROLLBACK_IMAGE = "rollback_image"
    MEMORY = "memory"
    REPLICAS = "replicas"


ALL_ACTIONS = tuple(Action)


class Symptoms(BaseModel):
    """The fingerprints of an incident's alerts, by what they say (rules in the module docstring)."""

    model_config = ConfigDict(frozen=True)

    oom: list[str] = Field(default_factory=list)
    saturation: list[str] = Field(default_factory=list)
    regression: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)  # the error-rate ones among ``regression``


class Choice(BaseModel):
    """What to do about an incident: ``action`` (None: nothing safe), on ``service``, why (``reason``, plain text,
    bounded), the culprit commit it undoes (``culprit_sha``), and the alerts behind it (``because``)."""

    model_config = ConfigDict(frozen=True)

    action: Action | None
    service: str | None = None
    reason: str = Field(max_length=REASON_MAX)
    culprit_sha: str | None = None
    because: list[str] = Field(default_factory=list)


_OOM = re.compile(r"oom(killed|killing|kill)?")
_CPU_WITH = {"throttling", "throttled", "throttle", "saturation", "saturated", "high", "usage"}
_MEMORY_FILE_WORDS = ("memory", "resources")
_TAG_PATH = re.compile(r"(^|/)(kustomization\.ya?ml|values[^/]*\.ya?ml)$")


def _texts(s: Signal) -> list[str]:
    return [s.monitor_id or "", s.title, *s.tags]


def _tag(s: Signal, key: str) -> str | None:
    for t in s.tags:
        k, sep, v = t.partition(":")
        if sep and k.strip().lower() == key:
            return v.strip()
    return None


def is_oom(s: Signal) -> bool:
    """An alert about a container killed for memory (module docstring)."""
    reason = (_tag(s, "reason") or "").lower()
    if _OOM.fullmatch(reason):
        return True
    ws = [w for text in (s.monitor_id or "", s.title) for w in words(text)]
    return any(_OOM.fullmatch(w) for w in ws) or ("out" in ws and "of" in ws and "memory" in ws)


def is_saturation(s: Signal) -> bool:
    ws = set(w for text in (s.monitor_id or "", s.title) for w in words(text))
    return "cpu" in ws and bool(ws & _CPU_WITH)


def _is_errors(s: Signal) -> bool:
    return any(family(t)[0] == "errors" for t in (s.monitor_id or "", s.title))


def _is_regression(s: Signal) -> bool:
    return any(family(t)[1] for t in (s.monitor_id or "", s.title))


def symptoms(signals: Iterable[Signal]) -> Symptoms:
    """The alerts of ``signals`` sorted by what they say (an alert may be in several lists; findings ignored)."""
    oom, sat, reg, err = [], [], [], []
    for s in signals:
        if s.kind is not Kind.ALERT:
            continue
        if is_oom(s):
            oom.append(s.fingerprint)
        elif is_saturation(s):
            sat.append(s.fingerprint)
        if _is_regression(s) and not is_oom(s):
            reg.append(s.fingerprint)
            if _is_errors(s):
                err.append(s.fingerprint)
    return Symptoms(oom=oom, saturation=sat, regression=reg, errors=err)


def _on(signals: Sequence[Signal], service: str) -> list[Signal]:
    """The alerts about ``service`` (their ``service`` field or a ``service``/``kube_deployment``/``app`` tag)."""
    out = []
    for s in signals:
        names = {s.service, _tag(s, "service"), _tag(s, "kube_deployment"), _tag(s, "app"), _tag(s, "deployment")}
        if service in names:
            out.append(s)
    return out


def only_image_tags(culprit: Culprit) -> bool:
    """Whether the culprit change touched only image references: every file a Kustomization or Helm values file
    (where tags live), each with as many lines added as removed and at most a few (a tag edit, not a rewrite)."""
    files = culprit.commit.files
    return bool(files) and all(
        _TAG_PATH.search(f.path) and f.complete and f.added == f.removed and f.added <= 3 for f in files
    )


def _lowered_memory(culprit: Culprit | None) -> bool:
    """A culprit that touched memory settings itself (its title says so): undoing it beats raising the limit."""
    if culprit is None:
        return False
    ws = set(words(culprit.commit.title))
    return "memory" in ws or "mem" in ws or ("limits" in ws and "resources" in ws)


def choose(
    item: WorkItem,
    signals: Sequence[Signal],
    culprit: Culprit | None,
    allowed: Collection[str] = tuple(a.value for a in ALL_ACTIONS),
) -> Choice:
    """The action for incident ``item`` (rules in the module docstring). ``signals``: its alerts (the start ones and
    those that joined); ``culprit``: the culprit change of its top candidate's service, None if none was found;
    ``allowed``: the policy's ``incidents.actions``."""
    top = item.incident.candidates[0] if item.incident and item.incident.candidates else None
    if top is None:
        return Choice(action=None, reason="No root-cause candidate was ranked, so no change can be targeted.")
    service = top_service(item) or top.entity
    if top.kind == "host":
        return Choice(
            action=None,
            reason=f"The likely root cause {clean(top.entity, 120)} is a host: a node's fault is not in the GitOps "
            "repository, so no merge request can fix it.",
        )
    mine = _on(signals, service)
    found = symptoms(mine)
    skipped: list[str] = []

    def ok(a: Action) -> bool:
        if a.value in allowed:
            return True
        skipped.append(a.value)
        return False

    def why_not() -> str:
        return f" ({', '.join(skipped)} not allowed by fixloop.yaml incidents.actions)" if skipped else ""

    if found.oom and not _lowered_memory(culprit) and ok(Action.MEMORY):
        return Choice(
            action=Action.MEMORY,
            service=service,
            reason=f"{len(found.oom)} alert(s) say {service}'s containers are killed for memory (OOMKilled): raise "
            "its memory limit from the observed peak.",
            because=found.oom,
        )
    if culprit is not None and (found.regression or found.oom):
        sha, title = culprit.commit.sha, clean(culprit.commit.title, 160)
        when = f"applied {duration(culprit.before_onset_seconds)} before the onset"
        if only_image_tags(culprit) and ok(Action.ROLLBACK_IMAGE):
            return Choice(
                action=Action.ROLLBACK_IMAGE,
                service=service,
                culprit_sha=sha,
                reason=f"The culprit change {sha[:12]} \u201c{title}\u201d ({when}) only changed image tags: roll "
                f"{service} back to the tag it ran before.",
                because=found.regression or found.oom,
            )
        if ok(Action.REVERT):
            return Choice(
                action=Action.REVERT,
                service=service,
                culprit_sha=sha,
                reason=f"{service}'s error-rate or latency alerts began after the culprit change {sha[:12]} "
                f"\u201c{title}\u201d ({when}): revert it.",
                because=found.regression or found.oom,
            )
    if found.saturation and not found.errors and ok(Action.REPLICAS):
        return Choice(
            action=Action.REPLICAS,
            service=service,
            reason=f"{len(found.saturation)} alert(s) say {service} is CPU-saturated or throttled while its error "
            "rate is within bounds: add replicas.",
            because=found.saturation,
        )
    if culprit is None and (found.regression or found.oom):
        reason = (
            f"No change to {service}'s files was applied before the onset and no memory or CPU alert points at a "
            "resource limit, so fixloop has no safe change to propose"
        )
    elif not mine:
        reason = f"None of the incident's alerts is about {service} itself, so no change to it is proposed"
    else:
        reason = (
            f"No rule matches {service}'s alerts (no OOM kill, culprit change with a regression, or CPU saturation)"
        )
    return Choice(action=None, service=service, reason=(reason + why_not() + ".")[:REASON_MAX])
