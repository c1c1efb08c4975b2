"""Durable JSON state for the stand-ins: one file per service under the state directory, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any


class JsonStore:
    """A dict persisted to ``path`` (JSON). Use ``with store.lock:`` around read-modify-write, then ``save()``.

    ``data`` is loaded once; ``save()`` writes a temporary file and renames it over ``path`` so a crash never leaves
    half a file. Thread-safe when callers hold ``lock`` (uvicorn runs sync endpoints in a thread pool).
    """

    def __init__(self, path: Path, default: dict[str, Any] | None = None) -> None:
        self.path = path
        self.lock = threading.RLock()
        if path.is_file():
            self.data: dict[str, Any] = json.loads(path.read_text())
        else:
            self.data = json.loads(json.dumps(default or {}))

    def save(self) -> None:
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f, separators=(",", ":"))
            os.replace(tmp, self.path)
