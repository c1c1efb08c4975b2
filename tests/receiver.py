"""A webhook endpoint for tests: an ``http.server`` in a thread that records every POST (headers lower-cased, raw
body) and answers 200; what the gateway would receive from GitLab or Flux."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Request = tuple[dict[str, str], bytes]


class Receiver:
    def __init__(self, path: str = "/hooks") -> None:
        self.requests: list[Request] = []
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's API
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.cond:
                    outer.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    outer.cond.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_until(self, predicate: Callable[[list[Request]], Any], timeout: float = 5.0) -> list[Request]:
        """The requests once ``predicate(requests)`` holds (a real delivery from another thread: at most
        ``timeout`` seconds)."""
        with self.cond:
            assert self.cond.wait_for(lambda: predicate(self.requests), timeout), f"got {len(self.requests)} requests"
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
