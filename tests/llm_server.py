"""A local OpenAI-compatible Chat Completions endpoint over real HTTP, for the ``llm`` engine's tests.

FastAPI served by uvicorn on a free port in a background thread; ``POST /v1/chat/completions`` records each request
and answers with the test's scripted ``reply`` (a chat completion object as in the OpenAI API reference, an error
status, or ``HANG``: no answer until the test ends, for timeouts).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

HANG = Response(status_code=599)  # a marker: hold the request until the test releases it


@dataclass
class Recorded:
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]

    @property
    def user(self) -> str:
        """The user message (the digest)."""
        return next(m["content"] for m in self.body["messages"] if m["role"] == "user")


def completion(content: str | None, *, refusal: str | None = None, finish_reason: str = "stop") -> Response:
    """A chat completion with one choice whose message has ``content`` (or ``refusal``)."""
    message = {"role": "assistant", "content": content, "refusal": refusal}
    return JSONResponse(
        {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "test-model",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        }
    )


def answer(obj: object) -> Response:
    """A completion whose content is ``obj`` as JSON (a structured output)."""
    return completion(json.dumps(obj))


def error(status: int, code: str, message: str = "error", headers: dict[str, str] | None = None) -> Response:
    """An OpenAI-style error body ``{"error": {"message", "type", "code"}}`` with ``status``."""
    body = {"error": {"message": message, "type": "error", "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _unscripted(body: dict[str, Any]) -> Response:
    return error(500, "no_reply_scripted")


@dataclass
class FakeLlm:
    """The server's script and record. ``reply(body) -> Response`` answers each request."""

    base_url: str = ""
    reply: Callable[[dict[str, Any]], Response] = _unscripted
    requests: list[Recorded] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def reset(self) -> None:
        self.reply = _unscripted
        self.requests = []
        self.release = threading.Event()


def _app(fake: FakeLlm) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw)
        fake.requests.append(Recorded(body=body, raw=raw, headers=dict(request.headers)))
        reply = fake.reply(body)
        if reply is HANG:
            await anyio.to_thread.run_sync(fake.release.wait)
            return error(503, "released")
        return reply

    return app


@contextmanager
def serve() -> Iterator[FakeLlm]:
    """Run the server for the duration of the block. The socket listens before the thread starts, so the first
    request queues instead of being refused: no waiting for start-up."""
    fake = FakeLlm()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    fake.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    config = uvicorn.Config(_app(fake), log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="fake-llm")
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
