"""Heartbeats of the long activities (``change.plan``, ``change.plan_remediation``, ``verify.judge``,
``triage.group_signals``), whose blocking work runs in a worker thread.

Each step of such an activity (a file read, a registry or release lookup, a metric query, the model's draft) calls
``heartbeat`` with what it is doing; Temporal then knows within the call's ``heartbeat_timeout``
(``fixloop.workflows.options``) that a worker died, instead of at its ``start_to_close_timeout``, and the UI shows the
last step as the activity's heartbeat details. The SDK's ``activity.heartbeat`` of an ``async`` activity must run on
the activity's event loop: ``in_thread`` (``asyncio.to_thread`` that remembers that loop) lets ``heartbeat`` from the
thread hand the heartbeat over to it. Outside an activity (tests calling the methods directly) it does nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from temporalio import activity

from fixloop.core.parsing import clean

P = ParamSpec("P")
R = TypeVar("R")

STEP_MAX = 200  # characters of a step's description (heartbeat details are shown in the UI)

_LOOP: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar("fixloop_activity_loop")


async def in_thread(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` in a worker thread (``asyncio.to_thread``), where ``heartbeat`` reaches this loop."""
    token = _LOOP.set(asyncio.get_running_loop())
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    finally:
        _LOOP.reset(token)


def heartbeat(step: str) -> None:
    """Record a heartbeat of the current activity with ``step`` (plain text, cut to ``STEP_MAX``) as its details,
    from its event loop or from a thread started by ``in_thread``; nothing outside an activity, or in a thread that
    ``in_thread`` did not start (there is no loop to hand it to)."""
    if not activity.in_activity():
        return
    details = clean(step, STEP_MAX)
    loop = _LOOP.get(None)
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is not None and (loop is None or running is loop):  # on the activity's own loop
        activity.heartbeat(details)
    elif loop is not None and not loop.is_closed():  # in its thread (or a loop of the thread's own)
        loop.call_soon_threadsafe(activity.heartbeat, details, context=contextvars.copy_context())
