"""``fixloop config check`` against the sandbox (every stand-in) and the Temporal dev server: every endpoint
healthy; a wrong token, project, key or address named as the failing check with the variable to look at; an
invalid configuration named by variable (exit status 2), never echoing a value. Also the Temporal TLS options."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from fixloop.app import temporal
from fixloop.app.check import Report, run_checks
from fixloop.core.config import ConfigError, TemporalSettings, load
from fixloop.integrations.checks import Status
from fixloop.sandbox.server import bind, endpoints, serve_in_thread
from tests.devserver import dev  # noqa: F401  (the fixture: one dev server for this module)
from tests.sandbox.conftest import Running, start_sandbox  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[1]
WRONG = "wrong-token-4f1c9a"  # must never be printed
Env = Callable[[dict[str, str]], None]


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Env:
    """No FIXLOOP_* variable and no ./.env; returns a setter for the test's variables."""
    for key in list(os.environ):
        if key.startswith("FIXLOOP_") or key == "OPENAI_API_KEY":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)

    def set_env(values: dict[str, str]) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)

    return set_env


def address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


def world(start: Callable[..., Running], env: WorkflowEnvironment, **override: str) -> dict[str, str]:
    """The variables of a running sandbox (every stand-in) and the dev server, with ``override``."""
    running = start()
    return endpoints(running.sb) | {"FIXLOOP_TEMPORAL_ADDRESS": address(env)} | override


def by_name(report: Report) -> dict[str, Any]:
    lines = {line.name: line for line in report.lines if line.name != "config"}
    assert list(lines) == [
        "temporal",
        "search",
        "jira",
        "gitlab",
        "registry",
        "flux",
        "datadog",
        "prometheus",
        "alertmanager",
        "llm",
    ]
    return lines


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_sandbox_every_endpoint_healthy(environ: Env, start_sandbox: Callable[..., Running], dev) -> None:  # noqa: F811
    environ(world(start_sandbox, dev))
    report = await run_checks(timeout=5)
    lines = by_name(report)
    assert report.exit_code == 0, str(report)
    assert [line.status for line in report.lines] == [Status.OK] * 8 + [Status.SKIP] * 3, str(report)
    assert str(report.lines[0]).startswith("ok   config    settings valid (environment); configured: temporal, jira")
    assert str(lines["temporal"]) == (
        f"ok   temporal  {address(dev)} namespace default (task queue fixloop: no worker polling)"
    )
    assert str(lines["search"]) == "ok   search    namespace default: fixloop's 8 search attributes registered"
    assert "as fixloop bot, project OPS" in lines["jira"].text
    assert lines["gitlab"].text.endswith("/gitlab as fixloop-bot, project platform/gitops (default branch main)")
    assert "kustomization flux-system/apps-production: " in lines["flux"].text
    assert "application key reads metrics, APM env production maps 5 services)" in lines["datadog"].text
    assert str(lines["llm"]) == "skip llm       not configured (FIXLOOP_LLM_BASE_URL unset)"


async def test_wrong_tokens_name_jira_and_gitlab(environ: Env, start_sandbox: Callable[..., Running], dev) -> None:  # noqa: F811
    env = world(start_sandbox, dev, FIXLOOP_JIRA_API_TOKEN=WRONG, FIXLOOP_GITLAB_TOKEN=WRONG + "-gl")
    environ(env)
    report = await run_checks(timeout=5)
    lines = by_name(report)
    assert report.exit_code == 1
    assert report.failed() == ["jira", "gitlab"], str(report)
    jira = str(lines["jira"])
    assert jira.startswith(f"FAIL jira      {env['FIXLOOP_JIRA_URL']}: HTTP 401: "), jira
    assert jira.endswith("(check FIXLOOP_JIRA_EMAIL and FIXLOOP_JIRA_API_TOKEN)")
    gitlab = str(lines["gitlab"])
    assert gitlab.startswith(f"FAIL gitlab    {env['FIXLOOP_GITLAB_URL']}: HTTP 401: current user"), gitlab
    assert gitlab.endswith("(check FIXLOOP_GITLAB_TOKEN)")
    assert WRONG not in str(report)

    # the command itself, as an operator runs it: same lines on stdout, exit status 1
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fixloop",
        "config",
        "check",
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, err.decode()
    text = out.decode()
    assert jira in text.splitlines() and gitlab in text.splitlines(), text
    assert f"ok   temporal  {address(dev)}" in text
    assert WRONG not in text + err.decode()
    assert "Traceback" not in err.decode()


async def test_each_failure_names_its_variable(environ: Env, start_sandbox: Callable[..., Running], dev) -> None:  # noqa: F811
    environ(
        world(
            start_sandbox,
            dev,
            FIXLOOP_TEMPORAL_NAMESPACE="no-such-namespace",
            FIXLOOP_JIRA_PROJECT="NOPE",
            FIXLOOP_GITLAB_PROJECT="platform/nope",
            FIXLOOP_REGISTRY_TOKEN="tok",  # the sandbox registry takes any token: stays ok
            FIXLOOP_FLUX_KUSTOMIZATION="flux-system/nope",
            FIXLOOP_DATADOG_APP_KEY=WRONG,
        )
    )
    report = await run_checks(timeout=5)
    lines = by_name(report)
    assert report.failed() == ["temporal", "jira", "gitlab", "flux", "datadog"], str(report)
    assert "NOT_FOUND" in lines["temporal"].text and "(check FIXLOOP_TEMPORAL_NAMESPACE)" in lines["temporal"].text
    assert "HTTP 400" in lines["jira"].text and "'NOPE'" in lines["jira"].text
    assert lines["jira"].text.endswith("(check FIXLOOP_JIRA_PROJECT)")
    assert "HTTP 404" in lines["gitlab"].text and lines["gitlab"].text.endswith("(check FIXLOOP_GITLAB_PROJECT)")
    assert "HTTP 404" in lines["flux"].text and lines["flux"].text.endswith("(check FIXLOOP_FLUX_KUSTOMIZATION)")
    assert "HTTP 403" in lines["datadog"].text and "(check FIXLOOP_DATADOG_APP_KEY" in lines["datadog"].text
    assert lines["registry"].status is Status.OK
    assert WRONG not in str(report)


async def test_gitlab_token_of_another_user_fails(environ: Env, start_sandbox: Callable[..., Running], dev) -> None:  # noqa: F811
    environ(world(start_sandbox, dev, FIXLOOP_GITLAB_BOT_USERNAME="someone-else"))
    report = await run_checks(timeout=5)
    gitlab = by_name(report)["gitlab"]
    assert report.failed() == ["gitlab"], str(report)
    assert "the token is fixloop-bot's but FIXLOOP_GITLAB_BOT_USERNAME is someone-else" in gitlab.text


async def test_temporal_tls_against_a_plain_server(environ: Env, dev) -> None:  # noqa: F811
    environ({"FIXLOOP_TEMPORAL_ADDRESS": address(dev), "FIXLOOP_TEMPORAL_TLS": "true"})
    report = await run_checks(timeout=5)
    assert report.failed() == ["temporal"]
    assert str(by_name(report)["temporal"]).startswith(
        f"FAIL temporal  {address(dev)}: cannot connect: TLS handshake failed: the server does not speak TLS "
        "(check FIXLOOP_TEMPORAL_TLS "
    )


async def test_temporal_unreachable(environ: Env) -> None:
    port = closed_port()
    environ({"FIXLOOP_TEMPORAL_ADDRESS": f"127.0.0.1:{port}"})
    report = await run_checks(timeout=5)
    lines = by_name(report)
    assert report.exit_code == 1 and report.failed() == ["temporal"]
    assert str(lines["temporal"]) == (
        f"FAIL temporal  127.0.0.1:{port}: cannot connect: Connection refused (check FIXLOOP_TEMPORAL_ADDRESS)"
    )
    assert [line.status for line in lines.values()][1:] == [Status.SKIP] * 9
    assert str(lines["search"]) == "skip search    not checked (see the temporal line)"
    assert str(lines["jira"]) == "skip jira      not configured (FIXLOOP_JIRA_URL unset)"
    assert str(lines["datadog"]) == "skip datadog   not configured (FIXLOOP_DATADOG_API_KEY unset)"
    assert str(lines["prometheus"]) == "skip prometheus not configured (FIXLOOP_PROMETHEUS_URL unset)"
    assert str(lines["alertmanager"]) == "skip alertmanager not configured (FIXLOOP_ALERTMANAGER_URL unset)"


async def test_invalid_configuration_names_variables_exit_2(environ: Env, tmp_path: Path) -> None:
    environ(
        {
            "FIXLOOP_TEMPORAL_ADDRESS": f"127.0.0.1:{closed_port()}",
            "FIXLOOP_JIRA_URL": "https://acme.atlassian.net",
            "FIXLOOP_JIRA_EMAIL": "bot@acme.example",
            "FIXLOOP_JIRA_PROJECT": "lower",  # and no FIXLOOP_JIRA_API_TOKEN
            "FIXLOOP_INTAKE_ENGINE": WRONG,  # an invalid value is named, never shown
            "FIXLOOP_DATADOG_API_KEY": WRONG,  # without FIXLOOP_DATADOG_APP_KEY
            "FIXLOOP_LLM_MODEL": "gpt-4o-mini",  # without FIXLOOP_LLM_BASE_URL and OPENAI_API_KEY
            "FIXLOOP_PROMETHEUS_URL": "http://prometheus:9090",
            "FIXLOOP_PROMETHEUS_TOKEN": WRONG,  # and basic authentication too
            "FIXLOOP_PROMETHEUS_USERNAME": "bot",
            "FIXLOOP_PROMETHEUS_PASSWORD": WRONG,
            "FIXLOOP_ALERTMANAGER_URL": "alertmanager:9093",  # no scheme
        }
    )
    report = await run_checks(timeout=2)
    config = [line.text for line in report.lines if line.name == "config"]
    assert report.exit_code == 2
    assert all(line.status is Status.FAIL for line in report.lines if line.name == "config")
    assert any(t.startswith("FIXLOOP_INTAKE_ENGINE: String should match pattern") for t in config), config
    assert "FIXLOOP_JIRA_API_TOKEN: Field required" in config
    assert any(t.startswith("FIXLOOP_JIRA_PROJECT: String should match pattern") for t in config), config
    assert "FIXLOOP_DATADOG_APP_KEY: Field required" in config
    assert any("FIXLOOP_LLM_BASE_URL, OPENAI_API_KEY" in t for t in config), config
    assert any(
        "FIXLOOP_PROMETHEUS_TOKEN and FIXLOOP_PROMETHEUS_USERNAME/FIXLOOP_PROMETHEUS_PASSWORD are exclusive" in t
        for t in config
    ), config
    assert "FIXLOOP_ALERTMANAGER_URL: must be an http:// or https:// URL" in config, config
    lines = by_name(report)
    for name in ("jira", "datadog", "llm", "prometheus", "alertmanager"):
        assert str(lines[name]) == f"skip {name:<9} invalid configuration (see the config lines)"
    assert lines["temporal"].status is Status.FAIL  # the valid groups are still checked
    assert WRONG not in str(report)


async def test_temporal_tls_files_checked(environ: Env, tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    environ({"FIXLOOP_TEMPORAL_TLS_CERT": str(cert)})  # without the key
    report = await run_checks(timeout=2)
    assert report.exit_code == 2
    assert str(report.lines[0]) == (
        "FAIL config    FIXLOOP_TEMPORAL_TLS_KEY: FIXLOOP_TEMPORAL_TLS_CERT and FIXLOOP_TEMPORAL_TLS_KEY are set "
        "together or not at all"
    )
    environ({"FIXLOOP_TEMPORAL_TLS_KEY": str(tmp_path / "missing-key.pem")})
    report = await run_checks(timeout=2)
    assert report.exit_code == 2
    assert report.lines[0].text.startswith("FIXLOOP_TEMPORAL_TLS_KEY: cannot read ")
    assert "No such file" in report.lines[0].text
    assert str(by_name(report)["temporal"]) == "skip temporal  invalid configuration (see the config lines)"


# -- the LLM check, against a local OpenAI-compatible /v1/models ---------------------------------------------------
@pytest.fixture
def models_endpoint() -> Iterator[str]:
    app = FastAPI()

    @app.get("/v1/models")
    def models(request: Request) -> JSONResponse:
        if request.headers.get("authorization") != "Bearer sk-test-key":
            error = {
                "message": "Incorrect API key provided",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
            return JSONResponse({"error": error}, status_code=401)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in ("test-model", "other")]
        return JSONResponse({"object": "list", "data": data})

    with serve_in_thread(app, bind()) as url:
        yield url + "/v1"


async def test_llm_models_listed(environ: Env, models_endpoint: str) -> None:
    environ(
        {
            "FIXLOOP_TEMPORAL_ADDRESS": f"127.0.0.1:{closed_port()}",
            "FIXLOOP_LLM_BASE_URL": models_endpoint,
            "FIXLOOP_LLM_MODEL": "test-model",
            "OPENAI_API_KEY": "sk-test-key",
        }
    )
    llm = by_name(await run_checks(timeout=5))["llm"]
    assert str(llm) == f"ok   llm       {models_endpoint} model test-model (listed)"

    environ({"FIXLOOP_LLM_MODEL": "gpt-9", "OPENAI_API_KEY": WRONG})
    report = await run_checks(timeout=5)
    assert str(by_name(report)["llm"]) == f"FAIL llm       {models_endpoint}: HTTP 401 (check OPENAI_API_KEY)"
    assert WRONG not in str(report)


# -- Temporal TLS options ------------------------------------------------------------------------------------------
def test_tls_config_reads_the_pem_files(environ: Env, tmp_path: Path) -> None:
    files = {"cert": b"CERT PEM\n", "key": b"KEY PEM\n", "ca": b"CA PEM\n"}
    for name, content in files.items():
        (tmp_path / f"{name}.pem").write_bytes(content)
    environ({f"FIXLOOP_TEMPORAL_TLS_{n.upper()}": str(tmp_path / f"{n}.pem") for n in files})
    settings = load(TemporalSettings)
    assert settings.uses_tls and not settings.tls
    assert temporal.tls_config(settings) == TLSConfig(
        client_cert=b"CERT PEM\n", client_private_key=b"KEY PEM\n", server_root_ca_cert=b"CA PEM\n"
    )
    # only a CA: TLS with those roots, no client certificate
    ca_only = TemporalSettings(_env_file=None, tls_ca=tmp_path / "ca.pem", tls_cert=None, tls_key=None)
    assert temporal.tls_config(ca_only) == TLSConfig(server_root_ca_cert=b"CA PEM\n")
    # no file: plain, or TLS with the system roots when asked for or implied by an API key
    assert temporal.tls_config(TemporalSettings(_env_file=None, tls_cert=None, tls_key=None, tls_ca=None)) is False
    assert temporal.tls_config(TemporalSettings(_env_file=None, tls=True, tls_cert=None, tls_key=None, tls_ca=None))
    with_key = TemporalSettings(_env_file=None, api_key="k", tls_cert=None, tls_key=None, tls_ca=None)
    assert temporal.tls_config(with_key) is True
    with pytest.raises(ConfigError, match=r"^FIXLOOP_TEMPORAL_TLS_CA: cannot read .*gone\.pem"):
        temporal.tls_config(ca_only.model_copy(update={"tls_ca": tmp_path / "gone.pem"}))


async def test_connect_passes_the_tls_config(environ: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "c.pem").write_bytes(b"C")
    (tmp_path / "k.pem").write_bytes(b"K")
    seen: dict[str, Any] = {}

    async def fake_connect(target: str, **kwargs: Any) -> str:
        seen.update(kwargs, target=target)
        return "client"

    monkeypatch.setattr(temporal.Client, "connect", fake_connect)
    environ(
        {
            "FIXLOOP_TEMPORAL_ADDRESS": "acme.a1b2c.tmprl.cloud:7233",
            "FIXLOOP_TEMPORAL_NAMESPACE": "acme.a1b2c",
            "FIXLOOP_TEMPORAL_TLS_CERT": str(tmp_path / "c.pem"),
            "FIXLOOP_TEMPORAL_TLS_KEY": str(tmp_path / "k.pem"),
        }
    )
    assert await temporal.connect() == "client"
    assert seen["target"] == "acme.a1b2c.tmprl.cloud:7233" and seen["namespace"] == "acme.a1b2c"
    assert seen["tls"] == TLSConfig(client_cert=b"C", client_private_key=b"K")
    assert seen["api_key"] is None
