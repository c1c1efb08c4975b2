"""Triage: many signals in, few cohesive work items out (one per fix).

Engines behind one interface (``triage(signals, engine=...) -> TriageResult``):
  * ``rules`` (``fixloop.core.triage.rules``) — deterministic, the embedded default and the safety net;
  * ``llm`` (``fixloop.core.triage.llm``) — a model behind any OpenAI-compatible endpoint groups a compact digest of
    the signals; its answer is checked group by group and turned into work items by code. The entries of a group
    that fails the checks, or that the answer leaves out, go to ``rules``; any failure of the whole call
    (unreachable, timeout, rate limit after retries, refusal, an answer that is no answer: ``LlmTriageFailed``)
    falls back to ``rules`` for everything. Each work item says which engine made it (``engine``) and, when
    ``rules`` made it in the ``llm`` engine's place, why (``note``).
Every input signal (by fingerprint) appears exactly once: in one work item or in ``unassigned``, and no merge
request mixes unrelated fixes (``violations``: one image per rebuild, one manifest per bump, or under the
repository's ``grouping`` one package or one service per bump, ``fixloop.core.triage.grouping``). Work item ids
depend only on the grouping, so the same storm triaged twice the same way gives the same ids.

Pure apart from the completion call the ``llm`` engine is handed (``fixloop.activities.triage`` hands it
``fixloop.integrations.llm.structured_completion``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

from fixloop.core.config import ConfigError
from fixloop.core.lifecycle import Lifecycles
from fixloop.core.models import Grouping, RecentDeploy, Signal, TriageResult, WorkItemKind
from fixloop.core.parsing import clean
from fixloop.core.rca import Background
from fixloop.core.service import ServiceNames
from fixloop.core.topology import Topology
from fixloop.core.triage.grouping import DEFAULT_GROUPING, GROUPINGS, grouping_of, unrelated
from fixloop.core.triage.llm import FALLBACK_NOTE, Complete, LlmTriageFailed, triage_llm
from fixloop.core.triage.rules import DEFAULT_INCIDENT_WINDOW, os_level, triage_rules

__all__ = [
    "DEFAULT_GROUPING",
    "ENGINES",
    "FALLBACK_NOTE",
    "GROUPINGS",
    "Complete",
    "LlmTriageFailed",
    "grouping_of",
    "os_level",
    "triage",
    "triage_llm",
    "triage_rules",
    "violations",
]

log = logging.getLogger(__name__)

ENGINES = ("rules", "llm")


async def triage(
    signals: Sequence[Signal],
    *,
    engine: str = "rules",
    recent_deploys: Sequence[RecentDeploy] = (),
    complete: Complete | None = None,
    max_entries: int = 0,
    topology: Topology | None = None,
    incident_window: timedelta = DEFAULT_INCIDENT_WINDOW,
    background: Background | None = None,
    names: ServiceNames | None = None,
    on_fallback: Callable[[str], None] | None = None,
    lifecycles: Lifecycles | None = None,
    grouping: Grouping = DEFAULT_GROUPING,
) -> TriageResult:
    """Triage ``signals`` with ``engine`` (``rules`` or ``llm``, see the module doc).

    ``complete`` is the ``llm`` engine's completion call and ``max_entries`` its bound on digest entries
    (``FIXLOOP_LLM_MAX_ENTRIES``). An ``llm`` engine without ``complete`` raises ``fixloop.core.config.ConfigError``
    (a setup mistake, reported, not hidden by a fallback); the groups of an answer that fail the checks, and the
    entries it leaves out, are the ``rules`` engine's (``fixloop.core.triage.llm.triage_llm``); every
    ``LlmTriageFailed`` returns the ``rules`` result instead, each work item with ``engine="rules"`` and
    ``note="llm engine fell back to rules: <reason>"``. An
    unknown engine raises ``ValueError``. ``topology`` and ``incident_window``: the incident correlation of both
    engines (``fixloop.core.triage.rules.correlated``: the ``llm`` engine's incidents are the ``rules`` engine's,
    made by code, and so are its fallback's); None: none, today's per-monitor items. ``background``: the alert
    history incidents are ranked with (``fixloop.core.rca.Background``). ``names``: what names a finding item's
    service from its scanned artifact (``fixloop.core.service.ServiceNames``; None: the topology's services).
    ``on_fallback`` is called with the note when the ``llm`` engine falls back, wholly or in part (e.g. to count
    it). ``lifecycles``:
    what endoflife.date said of the scanned OS lines (``fixloop.core.lifecycle``): both engines make an
    ``eol_migration`` per image on an ended line (``fixloop.core.triage.eol``); None: no end of life checked.
    ``grouping``: the repository's (``fixloop.yaml`` ``grouping:``), which bumps share a work item
    (``fixloop.core.triage.grouping``); an ``llm`` answer breaking the rules of ``violations`` falls back too.
    """
    rules = functools.partial(
        triage_rules,
        recent_deploys=recent_deploys,
        topology=topology,
        incident_window=incident_window,
        background=background,
        names=names,
        lifecycles=lifecycles,
        grouping=grouping,
    )
    if engine == "rules":
        return rules(signals)
    if engine != "llm":
        raise ValueError(f"unknown triage engine {clean(engine, 40)!r} (one of {', '.join(ENGINES)})")
    if complete is None:
        raise ConfigError("the llm triage engine has no completion endpoint")
    partly: list[str] = []  # a partial fallback is told once the result is known to be used
    try:
        result = await triage_llm(
            signals,
            complete=complete,
            max_entries=max_entries,
            recent_deploys=recent_deploys,
            topology=topology,
            incident_window=incident_window,
            background=background,
            names=names,
            lifecycles=lifecycles,
            grouping=grouping,
            on_fallback=partly.append,
        )
        wrong = violations(signals, result, names if names is not None else ServiceNames.of(topology))
        if wrong:
            raise LlmTriageFailed(f"the work items break the grouping: {'; '.join(wrong[:3])}")
        for note in partly:
            log.warning("%s", note)
            if on_fallback is not None:
                on_fallback(note)
        return result
    except LlmTriageFailed as e:
        note = FALLBACK_NOTE + clean(str(e), 300)
        log.warning("%s", note)
        if on_fallback is not None:
            on_fallback(note)
        fallback = rules(signals)
        items = [w.model_copy(update={"engine": "rules", "note": note}) for w in fallback.work_items]
        return TriageResult(work_items=items, unassigned=fallback.unassigned)


def violations(signals: Sequence[Signal], result: TriageResult, names: ServiceNames | None = None) -> list[str]:
    """What is wrong with ``result`` as the triage of ``signals`` (empty: nothing): a signal placed in no item and
    not unassigned, placed twice, or not among ``signals``; a merge request mixing unrelated fixes: an
    ``os_rebuild`` of several images, a ``dependency_bump`` whose findings are not all of one manifest (an item
    without ``grouping``), one package (``per-package``) or one service (``per-service``, named by ``names``;
    ``fixloop.core.triage.grouping.unrelated``). At most one line per item and five about placement."""
    by_fp = {s.fingerprint: s for s in signals}
    seen: dict[str, int] = {}
    for fp in [f for w in result.work_items for f in w.signals] + [u.fingerprint for u in result.unassigned]:
        seen[fp] = seen.get(fp, 0) + 1
    wrong = [f"signal {fp[:12]} is placed {n} times" for fp, n in seen.items() if n > 1][:5]
    wrong += [f"signal {fp[:12]} is placed nowhere" for fp in by_fp if fp not in seen][:5]
    wrong += [f"signal {fp[:12]} was not triaged" for fp in seen if fp not in by_fp][:5]
    for w in result.work_items:
        members = [by_fp[f] for f in w.signals if f in by_fp]
        if w.kind is WorkItemKind.OS_REBUILD and len({s.artifact or s.target for s in members}) > 1:
            wrong.append(f"{w.id} rebuilds several images")
        elif w.kind is WorkItemKind.DEPENDENCY_BUMP:
            why = unrelated(members, w.grouping or DEFAULT_GROUPING, names)
            if why:
                wrong.append(f"{w.id} {why}")
    return wrong
