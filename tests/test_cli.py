"""``fixloop ingest`` as a user runs it: JSON Lines out, one clear line per bad file, exit 2, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import fixture

GOOD = "trivy/trivy-head_alpine-39.json"


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fixloop", "ingest", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_json_lines_with_the_documented_fields() -> None:
    proc = run(fixture(GOOD))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 6
    row = next(r for r in rows if r["advisory_id"] == "CVE-2019-1549" and r["package"] == "libcrypto1.1")
    for key in (
        "fingerprint",
        "source",
        "kind",
        "title",
        "severity",
        "observed_at",
        "raw_ref",
        "category",
        "aliases",
        "installed_version",
        "fixed_version",
        "ecosystem",
        "artifact",
        "target",
        "purl",
    ):
        assert key in row
    assert "transition" not in row and "monitor_id" not in row  # alert fields stay off findings
    assert (row["source"], row["kind"], row["severity"], row["fixed_version"]) == (
        "trivy",
        "finding",
        "medium",
        "1.1.1d-r0",
    )


def test_alert_rows_carry_alert_fields() -> None:
    proc = run(fixture("datadog/inres-docs_query_alert_monitor_triggered_P1.json"))
    row = json.loads(proc.stdout)
    assert (row["kind"], row["transition"], row["monitor_id"]) == ("alert", "triggered", "221164084")
    assert "category" not in row


def test_source_override_and_a_mismatching_one() -> None:
    assert run("--source", "trivy", fixture(GOOD)).returncode == 0
    proc = run("--source", "snyk", fixture(GOOD))
    assert proc.returncode == 2
    assert "not a snyk document (it looks like trivy)" in proc.stderr and "Traceback" not in proc.stderr


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    real = fixture(GOOD).read_bytes()
    truncated = tmp / "truncated.json"
    truncated.write_bytes(real[:2000])
    malformed = tmp / "malformed.json"
    malformed.write_bytes(real.replace(b'"Results":', b'"Results" ', 1))
    wrong_type = tmp / "wrong-type.json"
    doc = json.loads(real)
    doc["Results"][0]["Vulnerabilities"][2]["InstalledVersion"] = {"not": "a string"}
    wrong_type.write_text(json.dumps(doc))
    unknown = tmp / "unknown.json"
    unknown.write_text(json.dumps({"kind": "ConfigMap", "data": {"a": "b"}}))
    huge = tmp / "huge.json"
    with huge.open("wb") as fh:  # 200 MB, sparse: nothing is written to disk
        fh.truncate(200 * 1000 * 1000)
    empty = tmp / "empty.json"
    empty.write_bytes(b"")
    return {
        "missing": (tmp / "missing.json", "cannot read: No such file or directory"),
        "directory": (tmp, "is a directory"),
        "truncated": (truncated, "truncated JSON"),
        "malformed": (malformed, "malformed JSON"),
        "wrong type": (
            wrong_type,
            "field Results.0.Vulnerabilities.2.InstalledVersion: Input should be a valid string",
        ),
        "unknown": (unknown, "unknown format: an object with keys kind, data"),
        "too large": (huge, "file is 190.7 MiB, over the 128.0 MiB limit (FIXLOOP_INGEST_MAX_BYTES)"),
        "empty": (empty, "empty document"),
    }


def test_each_bad_file_gets_one_clear_line_and_good_signals_still_flow(tmp_path: Path) -> None:
    bad = _bad_files(tmp_path)
    paths = [fixture(GOOD), *(p for p, _ in bad.values()), fixture("snyk/dd-snyk_npm_1critical.json")]
    proc = run(*paths)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == len(bad)
    for (path, reason), line in zip(bad.values(), lines, strict=True):
        assert line.startswith(f"fixloop ingest: {path}: "), line
        assert reason in line, line
    sources = [json.loads(r)["source"] for r in proc.stdout.splitlines()]
    assert sources == ["trivy"] * 6 + ["snyk"]  # the good files before and after the bad ones


def test_size_limit_is_configurable(tmp_path: Path) -> None:
    proc = run(fixture(GOOD), env={"FIXLOOP_INGEST_MAX_BYTES": "1000"})
    assert proc.returncode == 2
    assert "file is 24.1 KiB, over the 1000 bytes limit (FIXLOOP_INGEST_MAX_BYTES)" in proc.stderr


@pytest.mark.parametrize("args", [["--help"], []])
def test_help(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "fixloop", *args], capture_output=True, text=True, timeout=60)
    assert "ingest" in proc.stdout + proc.stderr


@pytest.mark.parametrize("command", [["worker"], ["submit", "--scope", "team/gitops", str(fixture(GOOD))]])
def test_unreachable_temporal_is_one_line_and_exit_2(command: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fixloop", *command],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FIXLOOP_TEMPORAL_ADDRESS": "127.0.0.1:1"},
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fixloop {command[0]}: cannot reach Temporal at 127.0.0.1:1")
    assert "Traceback" not in proc.stderr


def test_worker_with_a_half_configured_integration_names_the_missing_variable() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIXLOOP_JIRA_", "FIXLOOP_GITLAB_"))}
    env["FIXLOOP_JIRA_URL"] = "https://jira.example.com"  # email and API token missing
    proc = subprocess.run(
        [sys.executable, "-m", "fixloop", "worker"], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("fixloop worker: FIXLOOP_JIRA_") and "Traceback" not in proc.stderr


def test_version_answers_without_a_command() -> None:
    from fixloop import __version__

    done = subprocess.run([sys.executable, "-m", "fixloop", "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, __version__), done.stderr
