"""A signal storm through the IntakeWorkflow on the embedded Temporal dev server.

Takes every finding of the scanner reports bundled in ``tests/fixtures`` (about 2,500), re-fingerprints copies of
them to be distinct (``fingerprint("storm", i, original)``) and spreads the copies over ``--images`` variants of
each scanned image, so triage groups them into many work items but far fewer than signals. The signals go out in
micro-batches of ``--batch`` by signal-with-start of ``IntakeWorkflow.receive``; a ``--redeliver`` fraction of the
batches is sent a second time a few batches later (a gateway retrying). ``--signals`` counts every signal sent,
re-deliveries included. Then ``finish``, and the intake's result.

Pacing: signal-with-start cannot push back, and signals wait in the intake run's history until a window takes
them (Temporal ends a run at 50 MB of history: unpaced, this storm gets the intake terminated within seconds,
"Workflow history size exceeds limit"). So the sender keeps at most ``--backlog`` signals per scope that the
intake's ``status`` does not yet count as dealt with (deduplicated, or triaged); ``--backlog 0`` sends unpaced,
to see that failure. The default backlog is one window: what is untriaged when the intake continues as new is
carried in one payload next to the dedup memory (about 1.2 MB at 100,000 fingerprints), and a larger backlog
makes runs close windows early to fit it (``fixloop.workflows.intake.CARRY_MAX_BYTES``).

The worker is the real one (``fixloop.app.worker.build_worker``, in this process): the intake, the rules triage
activity and the real ``RemediationWorkflow`` children. The external-system activities the loops call (Jira,
change planning, GitLab) are stand-ins that answer at once (``bench.common.STAND_INS``), so each fix loop opens
its "issue" and "merge request" and parks in ``await_approval`` (the MR stays opened, unapproved) and each risk
digest ends as tracked: the loops the intake starts and signals are real work on the same worker and server, as in
a storm. So the figure is the intake's throughput with its loops on one worker process, not the intake alone.
Intake options for a storm: ``quiet_period`` ``--quiet`` (1 s), ``window_max_signals`` ``--window`` (500),
the rest at their defaults. ``--grouping`` is the repository's ``grouping:`` the triage activity groups bumps by
(``per-manifest``, the default; ``per-package``: one work item per package across every variant of every image).

Goal (issue 3): every signal accounted for (``received == sent``, ``new == distinct``, ``assigned + unassigned +
duplicates == sent``) and no workflow history (any intake run across continue-as-new, any loop) above 10,000
events. ``signals_per_s`` is signals sent over the time from the first send to the intake's result.
Last line: ``{"signals": ..., "accounted": ..., "signals_per_s": ..., "max_history_events": ...}`` plus details.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic_core import to_json  # noqa: E402
from temporalio.client import Client, WorkflowFailureError, WorkflowQueryFailedError  # noqa: E402
from temporalio.service import RPCError  # noqa: E402

from bench.common import FIXTURES, dev_server, report, worker  # noqa: E402
from fixloop.activities.triage import TriageActivities  # noqa: E402
from fixloop.app.ingest import ingest_file  # noqa: E402
from fixloop.core.models import GROUPINGS, Kind, Signal, fingerprint, grouping_of  # noqa: E402
from fixloop.workflows.contracts.intake import (  # noqa: E402
    Counters,
    Finish,
    IntakeInput,
    IntakeOptions,
    SignalBatch,
    intake_id,
)
from fixloop.workflows.contracts.loop import LoopOptions  # noqa: E402
from fixloop.workflows.intake import IntakeWorkflow  # noqa: E402

SCANNERS = ("trivy", "grype", "snyk", "gitlab", "osv-scanner", "pip-audit")
GOAL_MAX_EVENTS = 10_000


# --- the storm -----------------------------------------------------------------------------------------------


def real_findings() -> list[Signal]:
    out: list[Signal] = []
    for d in SCANNERS:
        for p in sorted((FIXTURES / d).glob("*.json")):
            out += [s for s in ingest_file(p).signals if s.kind is Kind.FINDING]
    return out


def storm(
    base: Sequence[Signal], total: int, batch: int, redeliver: float, images: int, lag: int, seed: int
) -> tuple[list[list[Signal]], int]:
    """The deliveries (batches in send order) holding ``total`` signals, and how many of them are distinct.

    Copy ``c`` of the base findings is scanned as image variant ``c % images`` (``<artifact>@storm-<v>``, or the
    target prefixed when there is no artifact), so the same work items come back in later copies (more signals
    for running loops). A re-delivered batch goes out again within ``lag`` batches."""
    rng = random.Random(seed)
    sends: list[list[Signal]] = []
    later: dict[int, list[list[Signal]]] = {}
    sent = distinct = 0
    while sent < total:
        size = min(batch, total - sent)
        chunk = []
        for i in range(distinct, distinct + size):
            s = base[i % len(base)]
            variant = (i // len(base)) % images
            update: dict[str, object] = {"fingerprint": fingerprint("storm", i, s.fingerprint)}
            if s.artifact is not None:
                update["artifact"] = f"{s.artifact}@storm-{variant}"
            elif s.target is not None:
                update["target"] = f"storm-{variant}/{s.target}"
            chunk.append(s.model_copy(update=update))
        distinct += size
        sent += size
        sends.append(chunk)
        sends.extend(later.pop(len(sends), []))
        if sent < total and rng.random() < redeliver:
            again = chunk[: total - sent]
            sent += len(again)
            later.setdefault(len(sends) + rng.randint(1, lag), []).append(again)
    for _, rest in sorted(later.items()):
        sends.extend(rest)
    return sends, distinct


class Pacer:
    """Per scope: signals sent, and signals the intake's ``status`` counts as dealt with (duplicates, assigned,
    unassigned). ``reserve`` waits while sending ``n`` more would leave over ``backlog`` not dealt with; a
    ``backlog`` of 0 never waits. Raises ``TimeoutError`` when the intake makes no progress for ``stall`` s.
    The caller adds to ``sent`` what it delivered."""

    def __init__(self, client: Client, backlog: int, poll: float = 0.1, stall: float = 300.0) -> None:
        self.client, self.backlog, self.poll, self.stall = client, backlog, poll, stall
        self.sent: Counter[str] = Counter()
        self.done: Counter[str] = Counter()
        self.waits = 0

    async def reserve(self, scope: str, n: int) -> None:
        handle = self.client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(scope))
        since = time.monotonic()
        while self.backlog and self.sent[scope] and self.sent[scope] + n - self.done[scope] > self.backlog:
            if time.monotonic() - since > self.stall:
                raise TimeoutError(f"intake of {scope}: no progress for {self.stall} s")
            self.waits += 1
            await asyncio.sleep(self.poll)
            c = (await handle.query(IntakeWorkflow.status)).counters
            done = c.duplicates + c.assigned + c.unassigned
            if done > self.done[scope]:
                self.done[scope], since = done, time.monotonic()


async def deliver(
    client: Client,
    task_queue: str,
    scopes: Sequence[str],
    options: IntakeOptions,
    sends: Sequence[list[Signal]],
    pacer: Pacer,
) -> list[str]:
    """Send every batch, one sender per scope; a batch and its re-delivery go to the same scope. Returns the
    errors of deliveries that failed (not retried: the figures then show what was lost)."""
    owner: dict[str, str] = {}
    queues: dict[str, list[list[Signal]]] = {s: [] for s in scopes}
    for signals in sends:
        scope = owner.setdefault(signals[0].fingerprint, scopes[len(owner) % len(scopes)])
        queues[scope].append(signals)
    errors: list[str] = []

    async def sender(scope: str) -> None:
        for signals in queues[scope]:
            try:
                await pacer.reserve(scope, len(signals))
                await client.start_workflow(
                    IntakeWorkflow.run,
                    IntakeInput(scope=scope, options=options),
                    id=intake_id(scope),
                    task_queue=task_queue,
                    start_signal="receive",
                    start_signal_args=[SignalBatch(signals=signals)],
                )
                pacer.sent[scope] += len(signals)
            except (RPCError, WorkflowQueryFailedError, TimeoutError) as e:
                errors.append(f"{scope}: {e}")

    await asyncio.gather(*(sender(s) for s in scopes))
    return errors


async def finish(client: Client, scope: str) -> Counters | str:
    """Signal ``finish`` and wait for the intake's result: its counters, or why there are none."""
    handle = client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(scope))
    try:
        await handle.signal(IntakeWorkflow.finish, Finish(reason="storm sent"))
        return (await handle.result()).counters
    except (RPCError, WorkflowFailureError) as e:
        return f"{scope}: {e}"


async def settle_loops(client: Client, timeout: float) -> int:
    """Wait until every running loop has parked in ``await_approval`` (the stand-in MR is never approved);
    return how many are still elsewhere when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    running = 'WorkflowType = "RemediationWorkflow" AND ExecutionStatus = "Running"'
    while True:
        total = (await client.count_workflows(running)).count
        parked = (await client.count_workflows(f'{running} AND FixloopStage = "await_approval"')).count
        if total == parked or time.monotonic() > deadline:
            return total - parked
        await asyncio.sleep(1)


async def histories(client: Client) -> dict[str, object]:
    """Per workflow type, over every run on the server: how many runs, their statuses, the largest history in
    events and in bytes; and the largest input an intake run started with (its continue-as-new carry)."""
    runs = [e async for e in client.list_workflows()]
    gate = asyncio.Semaphore(16)

    async def describe(wid: str, run_id: str) -> tuple[int, int]:
        async with gate:
            d = await client.get_workflow_handle(wid, run_id=run_id).describe()
            return d.history_length, d.raw_info.history_size_bytes

    async def carry(wid: str, run_id: str) -> int:
        async with gate:
            async for event in client.get_workflow_handle(wid, run_id=run_id).fetch_history_events(page_size=1):
                return event.workflow_execution_started_event_attributes.input.ByteSize()
        return 0

    sizes = await asyncio.gather(*(describe(e.id, e.run_id) for e in runs))
    carries = await asyncio.gather(*(carry(e.id, e.run_id) for e in runs if e.workflow_type == "IntakeWorkflow"))
    kinds = sorted({e.workflow_type for e in runs})
    of = {k: [size for e, size in zip(runs, sizes, strict=True) if e.workflow_type == k] for k in kinds}
    statuses = Counter(f"{e.workflow_type}:{e.status.name if e.status else '?'}" for e in runs)
    return {
        "max_history_events": max((n for n, _ in sizes), default=0),
        "max_history_bytes": max((b for _, b in sizes), default=0),
        "runs": {k: len(v) for k, v in of.items()},
        "max_events_by_type": {k: max(n for n, _ in v) for k, v in of.items()},
        "max_bytes_by_type": {k: max(b for _, b in v) for k, v in of.items()},
        "median_bytes_by_type": {k: sorted(b for _, b in v)[len(v) // 2] for k, v in of.items()},
        "max_intake_input_bytes": max(carries, default=0),  # continue-as-new carry (server limit 2 MiB)
        "statuses": dict(sorted(statuses.items())),
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    base = real_findings()
    sends, distinct = storm(base, args.signals, args.batch, args.redeliver, args.images, args.lag, args.seed)
    total = sum(len(s) for s in sends)
    batch_bytes = max(len(to_json(SignalBatch(signals=s))) for s in sends)
    tag = uuid.uuid4().hex[:6]
    scopes = [f"storm-{tag}/gitops-{k}" for k in range(args.scopes)]
    options = IntakeOptions(
        quiet_period=timedelta(seconds=args.quiet),
        window_max_signals=args.window,
        loop_options=LoopOptions(search_attributes=True),
    )
    task_queue = f"storm-{tag}"
    async with dev_server() as client:
        pacer = Pacer(client, args.backlog)
        triage = TriageActivities(grouping=grouping_of(args.grouping))
        async with worker(client, task_queue, triage.group_signals):
            t0 = time.perf_counter()
            errors = await deliver(client, task_queue, scopes, options, sends, pacer)
            t_sent = time.perf_counter()
            results = await asyncio.gather(*(finish(client, s) for s in scopes))
            t_done = time.perf_counter()
            unsettled = await settle_loops(client, args.settle)
            t_settled = time.perf_counter()
        await asyncio.sleep(1)  # visibility is written asynchronously
        figures = await histories(client)

    c = [r for r in results if isinstance(r, Counters)]
    errors += [r for r in results if isinstance(r, str)]
    received, new = sum(x.received for x in c), sum(x.new for x in c)
    accounted = sum(x.assigned + x.unassigned + x.duplicates for x in c)
    max_events = figures.pop("max_history_events")
    return {
        "signals": total,
        "accounted": accounted,
        "signals_per_s": round(total / (t_done - t0)),
        "max_history_events": max_events,
        "goal_met": accounted == received == total and new == distinct and max_events <= GOAL_MAX_EVENTS,
        "distinct": distinct,
        "received": received,
        "new": new,
        "duplicates": sum(x.duplicates for x in c),
        "assigned": sum(x.assigned for x in c),
        "unassigned": sum(x.unassigned for x in c),
        "undeliverable": sum(x.undeliverable for x in c),
        "windows": sum(x.windows for x in c),
        "intake_runs": sum(x.runs for x in c),
        "loops_started": sum(x.loops_started for x in c),
        "loops_updated": sum(x.loops_updated for x in c),
        "loops_not_parked": unsettled,
        **figures,
        "errors": errors[:5],
        "error_count": len(errors),
        "send_s": round(t_sent - t0, 1),
        "total_s": round(t_done - t0, 1),
        "settle_s": round(t_settled - t_done, 1),
        "pacing_waits": pacer.waits,
        "batches": len(sends),
        "max_batch_bytes": batch_bytes,
        "options": {
            "batch": args.batch,
            "backlog": args.backlog,
            "scopes": args.scopes,
            "images": args.images,
            "redeliver": args.redeliver,
            "quiet_period_s": args.quiet,
            "window_max_signals": args.window,
            "grouping": args.grouping,
        },
        "base_findings": len(base),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--signals", type=int, default=100_000, help="signals sent, re-deliveries included")
    ap.add_argument("--batch", type=int, default=250, help="signals per delivery (default 250)")
    ap.add_argument("--redeliver", type=float, default=0.15, help="fraction of batches sent twice (default 0.15)")
    ap.add_argument("--lag", type=int, default=20, help="a re-delivery goes out within this many batches")
    ap.add_argument("--scopes", type=int, default=1, help="intakes the batches are spread over (default 1)")
    ap.add_argument("--images", type=int, default=8, help="variants of each scanned image (default 8)")
    ap.add_argument("--backlog", type=int, help="signals not dealt with yet, per scope (default: --window); 0: unpaced")
    ap.add_argument("--quiet", type=float, default=1.0, help="intake quiet period, seconds (default 1)")
    ap.add_argument("--window", type=int, default=500, help="intake window_max_signals (default 500)")
    ap.add_argument("--settle", type=float, default=120.0, help="seconds to wait for the loops to park")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--grouping", choices=GROUPINGS, default="per-manifest", help="fixloop.yaml's grouping:")
    args = ap.parse_args()
    if args.backlog is None:
        args.backlog = args.window
    report(asyncio.run(run(args)), temporal=True)


if __name__ == "__main__":
    main()
