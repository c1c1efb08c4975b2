"""A real Prometheus and Alertmanager on this machine, as child processes on free loopback ports with generated
configuration: what ``fixloop demo --metrics prometheus`` and the tests verify against.

The binaries are the Debian packages' (``prometheus`` 2.x: ``/usr/bin/prometheus``; ``prometheus-alertmanager``:
``/usr/bin/prometheus-alertmanager``, upstream's ``alertmanager``), found on ``PATH`` or in ``/usr/bin``; missing,
``StackMissing`` names the one command that installs them (``make test`` and ``make demo`` run it as root).

``PromStack.start`` writes, under its state directory:

* ``prometheus.yml`` (prometheus.io/docs/prometheus/latest/configuration/configuration/): one scrape job ``world``
  over the ``static_configs`` given (their target labels, ``__metrics_path__`` included), ``rule_files`` (the rules
  given), ``alerting`` to the started Alertmanager; ``--rules.alert.resend-delay`` 1 s so that a firing alert reaches
  an Alertmanager that was reconfigured within a second, ``--web.enable-lifecycle``;
* ``alertmanager.yml`` (prometheus.io/docs/alerting/latest/configuration/): grouped by ``alertname``, ``service``,
  ``env`` (``group_wait``/``group_interval`` 1 s, ``repeat_interval`` 1 h), the alerts matching the matchers given
  to the receiver ``fixloop`` whose ``webhook_configs`` post to the webhook URL (``send_resolved``) with
  ``Authorization: Bearer`` read from a 0600 file (``http_config.authorization.credentials_file``: the token is in
  no configuration file or log), the rest (every alert while no webhook is set) to ``nobody``, a receiver without
  integrations (``route`` changes it later: rewritten, then ``POST /-/reload``);

starts both (Alertmanager with clustering off: ``--cluster.listen-address=``), and waits for each ``/-/ready``.
Their logs go to ``log_dir`` (default ``<state_dir>/logs``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

import httpx

INSTALL = "sudo apt-get install -y prometheus prometheus-alertmanager"
READY_TIMEOUT_S = 30.0
OUT_OF_ORDER = "10m"  # prometheus.yml storage.tsdb.out_of_order_time_window (Prometheus >= 2.39)


class StackMissing(RuntimeError):
    """The Prometheus or Alertmanager binary is not installed; the message is the command that installs them."""


class StackFailed(RuntimeError):
    """A server did not become ready (it exited, or did not answer ``/-/ready`` in time); the message names its log."""


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
        if found:
            return found
    return None


def binaries() -> tuple[str, str]:
    """``(prometheus, alertmanager)`` paths; ``StackMissing`` naming ``INSTALL`` when either is missing."""
    prometheus = _find("prometheus")
    alertmanager = _find("prometheus-alertmanager", "alertmanager")
    if prometheus is None or alertmanager is None:
        missing = " and ".join(n for n, p in (("prometheus", prometheus), ("alertmanager", alertmanager)) if not p)
        raise StackMissing(f"{missing} not installed: {INSTALL}")
    return prometheus, alertmanager


def backfill(text: str, path: Path, tsdb: Path, log: Path) -> None:
    """Write ``text`` (OpenMetrics with timestamps) to ``path`` and turn it into blocks of the TSDB at ``tsdb`` with
    ``promtool tsdb create-blocks-from openmetrics`` (prometheus.io/docs/prometheus/latest/storage/#backfilling-from-
    openmetrics-format; the Debian package's ``promtool``), before Prometheus opens it. ``StackMissing`` without
    promtool, ``StackFailed`` when it refuses the text (its output in ``log``)."""
    promtool = _find("promtool")
    if promtool is None:
        raise StackMissing(f"promtool not installed: {INSTALL}")
    path.write_text(text)
    tsdb.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(  # list args, no shell
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(path), str(tsdb)],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=READY_TIMEOUT_S,
    )  # fmt: skip
    log.write_bytes(done.stdout + done.stderr)
    if done.returncode != 0:
        raise StackFailed(f"promtool refused the history ({done.returncode}): see {log}")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _timeseries(labels: tuple[tuple[str, str], ...], samples: list[tuple[int, float]]) -> bytes:
    """prometheus.TimeSeries: ``labels`` (1: Label{name 1, value 2}, sorted), ``samples`` (2: Sample{value 1
    double, timestamp 2 int64 ms}) in time order."""
    out = b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in labels)
    for ms, value in sorted(samples):
        out += _field(2, b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(ms & 0xFFFFFFFFFFFFFFFF))
    return out


def _snappy(data: bytes) -> bytes:
    """``data`` as a snappy block (github.com/google/snappy format_description.txt) of literals only: valid snappy,
    uncompressed (the writes are small and local)."""
    out = bytearray(_varint(len(data)))
    for i in range(0, len(data), 1 << 16):
        chunk = data[i : i + (1 << 16)]
        n = len(chunk) - 1
        if n < 60:
            out.append(n << 2)
        else:
            out += bytes([61 << 2]) + n.to_bytes(2, "little")  # 61: the length follows in 2 bytes
        out += chunk
    return bytes(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prometheus_config(
    targets: list[dict[str, Any]], rule_files: list[str], alertmanager: str, scrape_interval: str, evaluation: str
) -> dict[str, Any]:
    """``prometheus.yml`` as a mapping: the scrape job ``world``, the rule files, alerting to ``alertmanager``
    (``host:port``); out-of-order samples up to ``OUT_OF_ORDER`` old are taken (``remote_write``: the past of a
    series already scraped)."""
    return {
        "storage": {"tsdb": {"out_of_order_time_window": OUT_OF_ORDER}},
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation,
            "scrape_timeout": scrape_interval,
        },
        "rule_files": rule_files,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": "world", "honor_labels": False, "static_configs": targets}],
    }


def alertmanager_config(
    webhook_url: str | None, token_file: Path | None, matchers: list[str] | None = None
) -> dict[str, Any]:
    """``alertmanager.yml`` as a mapping: alerts matching ``matchers`` (Alertmanager matcher strings, e.g.
    ``service="catalog"``; None: every alert) go to the receiver ``fixloop``, a webhook (bearer token from
    ``token_file``); the others, and every alert without ``webhook_url``, to ``nobody`` (no integration)."""
    route: dict[str, Any] = {
        "receiver": "nobody",
        "group_by": ["alertname", "service", "env"],
        "group_wait": "1s",
        "group_interval": "1s",
        "repeat_interval": "1h",
    }
    receivers: list[dict[str, Any]] = [{"name": "nobody"}]
    if webhook_url is not None:
        http: dict[str, Any] = {}
        if token_file is not None:
            http["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
        hook = {"url": webhook_url, "send_resolved": True, "http_config": http}
        receivers.append({"name": "fixloop", "webhook_configs": [hook]})
        route["routes"] = [{"receiver": "fixloop", **({"matchers": list(matchers)} if matchers else {})}]
    return {"route": route, "receivers": receivers}


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str


@dataclass
class PromStack:
    """The two servers: ``prometheus_url``, ``alertmanager_url`` (``http://127.0.0.1:<port>``), their processes and
    logs (``servers``). A context manager; ``stop()`` ends both."""

    state_dir: Path
    prometheus_url: str = ""
    alertmanager_url: str = ""
    servers: list[Server] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        state_dir: Path,
        *,
        targets: list[dict[str, Any]],
        rules: str | None = None,
        webhook_url: str | None = None,
        webhook_token: str | None = None,
        matchers: list[str] | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        log_dir: Path | None = None,
        history: str | None = None,
    ) -> PromStack:
        """Write the configuration, start Alertmanager then Prometheus, and wait until both are ready (at most
        ``READY_TIMEOUT_S`` each). ``history``: OpenMetrics text with timestamps (the targets' past) written into
        Prometheus's TSDB first by ``promtool tsdb create-blocks-from openmetrics``, so that a query over the
        minutes before the start has data, as on a Prometheus that has been running. Raises ``StackMissing`` without
        the binaries, ``StackFailed`` when one does not come up or the history is refused (both are stopped then)."""
        prometheus, alertmanager = binaries()
        state_dir.mkdir(parents=True, exist_ok=True)
        logs = log_dir or state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        stack = cls(state_dir=state_dir)
        am_port, prom_port = free_port(), free_port()
        stack.alertmanager_url = f"http://127.0.0.1:{am_port}"
        stack.prometheus_url = f"http://127.0.0.1:{prom_port}"
        stack._write_alertmanager(webhook_url, webhook_token, matchers)
        rule_files = []
        if rules is not None:
            (state_dir / "rules.yml").write_text(rules)
            rule_files.append(str(state_dir / "rules.yml"))
        config = prometheus_config(targets, rule_files, f"127.0.0.1:{am_port}", scrape_interval, evaluation_interval)
        (state_dir / "prometheus.yml").write_text(json.dumps(config, indent=2))
        if history is not None:
            backfill(history, state_dir / "history.om", state_dir / "prometheus-data", logs / "promtool.log")
        try:
            stack._spawn(
                "alertmanager",
                [
                    alertmanager,
                    f"--config.file={state_dir / 'alertmanager.yml'}",
                    f"--storage.path={state_dir / 'alertmanager-data'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                    "--log.level=warn",
                ],
                logs,
                stack.alertmanager_url,
            )
            stack._spawn(
                "prometheus",
                [
                    prometheus,
                    f"--config.file={state_dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={state_dir / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--web.enable-lifecycle",
                    "--web.enable-remote-write-receiver",
                    "--rules.alert.resend-delay=1s",
                    "--log.level=warn",
                ],
                logs,
                stack.prometheus_url,
            )
            for server in stack.servers:
                stack._ready(server)
        except BaseException:
            stack.stop()
            raise
        return stack

    def remote_write(self, series: list[dict[str, Any]]) -> int:
        """Write ``series`` (``[{"labels": {"__name__": ..., ...}, "samples": [[epoch seconds, value], ...]}]``) into
        the running Prometheus through its remote-write receiver (``POST /api/v1/write``, Remote-Write 1.0: a
        snappy-compressed protobuf ``WriteRequest``, prometheus.io/docs/specs/remote_write_spec/), samples older
        than a series' last scrape included (``OUT_OF_ORDER``). Returns the number of samples written;
        ``StackFailed`` when Prometheus refuses them."""
        body = b"".join(
            _field(1, _timeseries(tuple(sorted(one["labels"].items())), [(round(t * 1000), float(v)) for t, v in
                                                                          one["samples"]]))
            for one in series
        )  # fmt: skip
        answer = httpx.post(
            f"{self.prometheus_url}/api/v1/write",
            content=_snappy(body),
            headers={
                "Content-Encoding": "snappy",
                "Content-Type": "application/x-protobuf",
                "X-Prometheus-Remote-Write-Version": "0.1.0",
            },
            timeout=READY_TIMEOUT_S,
        )
        if answer.status_code >= 300:
            raise StackFailed(f"prometheus refused the remote write ({answer.status_code}): {answer.text[:300]}")
        return sum(len(one["samples"]) for one in series)

    def _write_alertmanager(
        self, webhook_url: str | None, webhook_token: str | None, matchers: list[str] | None = None
    ) -> None:
        token_file = None
        if webhook_token is not None:
            token_file = self.state_dir / "webhook-token"
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(webhook_token)
        config = alertmanager_config(webhook_url, token_file, matchers)
        (self.state_dir / "alertmanager.yml").write_text(json.dumps(config, indent=2))

    def route(
        self, webhook_url: str | None, webhook_token: str | None = None, matchers: list[str] | None = None
    ) -> None:
        """Send Alertmanager's notifications of the alerts matching ``matchers`` (None: all) to ``webhook_url`` from
        now on (None: to no one): its configuration rewritten and reloaded (``POST /-/reload``); the alerts it holds
        are notified to the new route."""
        self._write_alertmanager(webhook_url, webhook_token, matchers)
        answer = httpx.post(f"{self.alertmanager_url}/-/reload", timeout=10)
        if answer.status_code != 200:
            raise StackFailed(f"alertmanager refused its new configuration: {answer.text[:300]}")

    def _spawn(self, name: str, args: list[str], logs: Path, url: str) -> None:
        log = logs / f"{name}.log"
        out: IO[bytes] = open(log, "wb")  # noqa: SIM115 - owned by the child's lifetime
        proc = subprocess.Popen(  # list args, no shell
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=self.state_dir, start_new_session=True
        )
        self.servers.append(Server(name, proc, log, url))

    def _ready(self, server: Server) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise StackFailed(f"{server.name} exited with {server.proc.returncode}: see {server.log}")
            try:
                if httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)  # polling a starting server, bounded by the deadline
        raise StackFailed(f"{server.name} not ready after {READY_TIMEOUT_S:.0f} s: see {server.log}")

    def stop(self) -> None:
        """SIGTERM both, SIGKILL what still runs after 10 s."""
        for server in reversed(self.servers):
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
        for server in reversed(self.servers):
            try:
                server.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.proc.kill()
                server.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
