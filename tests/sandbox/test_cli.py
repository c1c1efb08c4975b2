"""``fixloop sandbox up`` and ``reset`` as a user runs them: one process serving every stand-in, its URLs and
credentials printed as FIXLOOP_* exports, state that survives a restart, and a reset that only deletes a sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from fixloop.integrations.registry import RegistryClient, RegistrySettings


@contextmanager
def sandbox_up(state_dir: Path) -> Iterator[dict[str, str]]:
    """Start ``fixloop sandbox up --port 0 --env`` and yield the exported variables once the server answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fixloop", "sandbox", "up", "--port", "0", "--env", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        exports: dict[str, str] = {}
        assert proc.stdout is not None
        for line in proc.stdout:  # the exports are printed before serving; the last one is the registry's
            key, _, value = line.strip().removeprefix("export ").partition("=")
            exports[key] = value.strip("'")
            if key == "FIXLOOP_REGISTRY_URL":
                break
        base = exports["FIXLOOP_GITLAB_URL"].removesuffix("/gitlab")
        with httpx.Client(timeout=5) as client:
            for _ in range(200):  # bounded: the socket is bound before the exports are printed
                try:
                    if client.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
        yield exports
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_up_serves_every_stand_in_and_keeps_credentials_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with sandbox_up(state) as first:
        with httpx.Client(timeout=10) as client:
            me = client.get(f"{first['FIXLOOP_GITLAB_URL']}/api/v4/user",
                            headers={"PRIVATE-TOKEN": first["FIXLOOP_GITLAB_TOKEN"]})  # fmt: skip
            assert me.status_code == 200 and me.json()["username"] == first["FIXLOOP_GITLAB_BOT_USERNAME"]
            info = client.get(f"{first['FIXLOOP_JIRA_URL']}/rest/api/2/serverInfo")
            assert info.status_code == 200
            tags = client.get(f"{first['FIXLOOP_REGISTRY_URL']}/v2/library/alpine/tags/list")
            assert tags.status_code == 401 and tags.headers["WWW-Authenticate"].startswith("Bearer realm=")
            registry = RegistrySettings(_env_file=None, url=first["FIXLOOP_REGISTRY_URL"],  # type: ignore[call-arg]
                                        username=first["FIXLOOP_REGISTRY_USERNAME"],
                                        password=first["FIXLOOP_REGISTRY_PASSWORD"])  # fmt: skip
            with RegistryClient(registry) as reg:
                assert "3.9.6" in reg.tags("alpine")
            unauth = client.get(f"{first['FIXLOOP_KUBE_API_URL']}/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/"
                                "flux-system/kustomizations/apps-production")  # fmt: skip
            assert unauth.status_code == 401 and unauth.json()["kind"] == "Status"
    with sandbox_up(state) as second:
        assert second["FIXLOOP_GITLAB_TOKEN"] == first["FIXLOOP_GITLAB_TOKEN"]
    assert (state / "credentials.json").stat().st_mode & 0o077 == 0


def test_reset_deletes_only_a_sandbox_state_directory(tmp_path: Path) -> None:
    def reset(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fixloop", "sandbox", "reset", "--state-dir", str(path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    refused = reset(precious)
    assert refused.returncode == 2 and "not a sandbox state directory" in refused.stderr
    assert (precious / "notes.txt").read_text() == "keep me"

    state = tmp_path / "state"
    state.mkdir()
    (state / "credentials.json").write_text("{}")
    done = reset(state)
    assert done.returncode == 0 and not state.exists()
    assert reset(state).stdout.startswith("fixloop sandbox reset: nothing at")
