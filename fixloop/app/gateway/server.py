"""The gateway's HTTP/1.1 server: uvicorn with the connection deadlines uvicorn lacks.

uvicorn (0.54, ``uvicorn/protocols/http/httptools_impl.py``) bounds only the idle time between two requests of a
keep-alive connection (``timeout_keep_alive``). A connection that sends nothing, or its request line and headers a
byte at a time, or a body more slowly than the sender could, stays open for ever: no timer runs until a response
has been sent. ``h11_max_incomplete_event_size`` bounds the headers for the h11 protocol only; the gateway runs
httptools (llhttp: twice h11's request rate in ``bench/gateway.py``), whose parser buffers headers without a limit.

``GatewayProtocol`` (uvicorn's ``HttpToolsProtocol`` with three bounds, from ``GatewaySettings``) adds:
  * FIXLOOP_GATEWAY_HEADER_TIMEOUT: from the connection (or, on a keep-alive connection, the first byte of the next
    request) to the end of the headers. Over it: ``408 Request Timeout`` with ``Connection: close``, and the
    connection is closed.
  * FIXLOOP_GATEWAY_BODY_TIMEOUT: from the end of the headers to the end of the body (whether or not the app has
    answered early, e.g. a 401 or 413 before reading it). Over it: 408 when nothing was answered yet, and the
    connection is closed; the app's ``receive()`` then gets ``http.disconnect`` (starlette's ``ClientDisconnect``:
    the gateway logs a warning, nothing was recorded).
  * FIXLOOP_GATEWAY_MAX_HEADER_BYTES: bytes received while a request's headers are incomplete (the request line
    and headers, counted per received chunk, so a pipelined request may count part of its predecessor's body).
    Over it: ``431 Request Header Fields Too Large`` and close.
FIXLOOP_GATEWAY_KEEP_ALIVE_TIMEOUT is uvicorn's ``timeout_keep_alive`` (idle connections between requests). A
request whose body has arrived is not timed here: its answer waits for Temporal at most
FIXLOOP_GATEWAY_TEMPORAL_TIMEOUT. HTTP pipelining (rare) is served, but a pipelined request's body deadline runs
while its predecessor is answered.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


class GatewayProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a body deadline and a header size limit (see the module
    docstring); ``protocol_class`` makes one with the settings' values."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 64 << 10

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._in_headers = True
        self._header_bytes = 0
        super().connection_made(transport)
        self._arm(self.header_timeout, "its request headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        in_headers = self._in_headers
        super().data_received(data)
        if in_headers and self._in_headers and not self.transport.is_closing():  # the headers did not end here
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._refuse(431, "Request Header Fields Too Large", f"headers over {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a keep-alive connection's next request: its headers are timed from here
            self._arm(self.header_timeout, "its request headers")

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        super().on_headers_complete()
        self._arm(self.body_timeout, "its request body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._in_headers = True  # what arrives next is the next request's headers

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired, seconds, what)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, seconds: float, what: str) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        answered = self.cycle is not None and not self._in_headers and self.cycle.response_started
        self._refuse(408, "Request Timeout", f"{what} took over {seconds:g} s", answer=not answered)

    def _refuse(self, status: int, phrase: str, why: str, *, answer: bool = True) -> None:
        """Answer ``status`` (unless a response was started) and close the connection."""
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning("closing the connection of %s: %s (%d)", client, why, status)
        if answer:
            body = f'{{"error": "{why}", "field": null}}'.encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, phrase.encode(), len(body), body)
            )
        self._disarm()
        self.transport.close()


def protocol_class(header_timeout: float, body_timeout: float, max_header_bytes: int) -> type[GatewayProtocol]:
    """A ``GatewayProtocol`` subclass with these bounds (uvicorn takes a protocol class, not an instance)."""
    return type(
        "GatewayProtocol",
        (GatewayProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout, "max_header_bytes": max_header_bytes},
    )


def server(app: Any, settings: Any) -> uvicorn.Server:
    """A uvicorn server for ``app`` with ``settings``' (a ``fixloop.app.gateway.GatewaySettings``) connection bounds:
    ``GatewayProtocol`` and ``timeout_keep_alive``; uvicorn's own logs at warning level, no access log. Serve it
    with ``run(sockets=[...])`` or ``await serve(sockets=[...])``."""
    config = uvicorn.Config(
        app,
        http=protocol_class(settings.header_timeout, settings.body_timeout, settings.max_header_bytes),
        timeout_keep_alive=settings.keep_alive_timeout,
        log_level="warning",
        access_log=False,
    )
    return uvicorn.Server(config)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one) with ``TCP_NODELAY`` (accepted connections
    inherit it: no Nagle wait); ``OSError`` if it cannot be bound."""
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
