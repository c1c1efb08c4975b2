"""The configuration reference cannot drift: ``docs/configuration.md`` is what the generator renders from the
settings models, every settings class is in it, and every ``FIXLOOP_*`` variable the code names is documented."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from typer.testing import CliRunner

from fixloop.app import configref
from fixloop.app.cli import app

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fixloop", "integrations", "activities", "workflows")
VARIABLE = re.compile(r"\bFIXLOOP_[A-Z0-9_]*[A-Z0-9]\b")  # a name, not a prefix such as FIXLOOP_JIRA_


def test_docs_configuration_is_current() -> None:
    doc = REPO / "docs" / "configuration.md"
    assert doc.is_file(), f"docs/configuration.md is missing: run `{configref.REGENERATE}`"
    assert doc.read_text(encoding="utf-8") == configref.render(app), (
        f"docs/configuration.md is out of date: run `{configref.REGENERATE}`"
    )


def test_every_settings_class_is_in_the_reference() -> None:
    def module(path: Path) -> str:  # the installed name: workflows/x.py is fixloop.workflows.x (package-dir)
        parts = path.relative_to(REPO).with_suffix("").parts
        return ".".join(parts if parts[0] == "fixloop" else ("fixloop", *parts))

    defined = {
        f"{module(path)}:{name}"
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
        for name in re.findall(r"^class (\w+)\(BaseSettings\b", path.read_text(encoding="utf-8"), re.M)
    }
    listed = {group.path for group in configref.GROUPS}
    assert defined - listed == set(), "add these settings classes to fixloop.app.configref.GROUPS"
    assert listed <= defined


def test_every_fixloop_variable_in_the_code_is_documented() -> None:
    mentioned: dict[str, set[str]] = {}
    for package in (*PACKAGES, "sandbox"):
        for path in (REPO / package).rglob("*.py"):
            for name in VARIABLE.findall(path.read_text(encoding="utf-8")):
                mentioned.setdefault(name, set()).add(str(path.relative_to(REPO)))
    documented = configref.variables(app)
    missing = {name: sorted(paths) for name, paths in mentioned.items() if name not in documented}
    assert missing == {}, "variables named in the code but read by no settings class or command option"
    # and the reference names nothing the code does not read
    assert documented - set(mentioned) == {"OPENAI_API_KEY"}  # the openai library's own, named without the prefix
    doc = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in doc for name in documented)


def test_sandbox_variables_are_marked_as_not_operator_settings() -> None:
    options = {o.variable: o for o in configref.cli_options(app)}
    assert set(options) == {
        "FIXLOOP_SANDBOX_STATE_DIR",
        "FIXLOOP_SANDBOX_GITLAB_WEBHOOK_URL",
        "FIXLOOP_SANDBOX_FLUX_WEBHOOK_URL",
    }
    assert options["FIXLOOP_SANDBOX_STATE_DIR"].default == "`.fixloop/sandbox`"
    assert "they are not settings of fixloop itself" in configref.render(app)


def test_every_variable_has_a_type_default_and_description() -> None:
    for group in configref.GROUPS:
        for row in configref.rows(group.load_class()):
            assert row.type and row.default and row.description, (group.title, row)
            if row.secret:
                assert row.default == "—", row


def test_real_rows() -> None:
    from fixloop.app.gateway import GatewaySettings
    from fixloop.core.config import LlmSettings, TemporalSettings
    from fixloop.integrations.jira import JiraSettings

    rows = {
        r.variable: r
        for cls in (TemporalSettings, LlmSettings, GatewaySettings, JiraSettings)
        for r in configref.rows(cls)
    }
    assert rows["FIXLOOP_TEMPORAL_ADDRESS"].default == "`localhost:7233`"
    assert rows["FIXLOOP_TEMPORAL_TLS"].type == "boolean" and rows["FIXLOOP_TEMPORAL_TLS"].default == "`false`"
    assert rows["FIXLOOP_TEMPORAL_TLS_CERT"].type == "path" and rows["FIXLOOP_TEMPORAL_TLS_CERT"].default == "unset"
    assert rows["OPENAI_API_KEY"].secret and rows["OPENAI_API_KEY"].default == "—"  # the alias, no prefix
    assert rows["FIXLOOP_LLM_TIMEOUT"].type == "number, > 0, ≤ 600" and rows["FIXLOOP_LLM_TIMEOUT"].default == "`60`"
    assert rows["FIXLOOP_GATEWAY_SCOPE"].also == ("FIXLOOP_GITLAB_PROJECT",)
    assert rows["FIXLOOP_GATEWAY_MAX_BODY_BYTES"].default == "`33554432` (32 MiB)"
    assert rows["FIXLOOP_JIRA_URL"].type == "URL" and rows["FIXLOOP_JIRA_URL"].default == "required"
    assert rows["FIXLOOP_JIRA_API_TOKEN"].type == "secret, required"


class Demo(BaseSettings):
    """``DEMO_MODE`` (how it runs, default ``fast``), ``DEMO_OTHER``."""

    model_config = SettingsConfigDict(env_prefix="DEMO_")

    password: SecretStr = Field(default=SecretStr("hunter2-secret"), description="A | pipe.")
    mode: str = "fast"
    other: int = Field(default=3, ge=1, le=5, validation_alias=AliasChoices("DEMO_OTHER", "DEMO_LEGACY", "other"))


def test_generator_never_shows_a_secret_and_escapes_cells(monkeypatch) -> None:
    monkeypatch.setattr(configref, "GROUPS", (configref.Group("Demo", f"{__name__}:Demo", "Intro."),))
    rows = {r.variable: r for r in configref.rows(Demo)}
    assert rows["DEMO_PASSWORD"].default == "—"
    assert rows["DEMO_MODE"].description == "How it runs, default ``fast``"  # from the class docstring
    assert rows["DEMO_OTHER"].also == ("DEMO_LEGACY",) and rows["DEMO_OTHER"].type == "integer, ≥ 1, ≤ 5"
    text = configref.render(app)
    assert "hunter2" not in text
    assert "| `DEMO_PASSWORD` | secret | — | A \\| pipe. |" in text
    assert "| `DEMO_MODE` | string | `fast` | How it runs, default `fast` |" in text
    assert "| `DEMO_OTHER` (or `DEMO_LEGACY`) | integer, ≥ 1, ≤ 5 | `3` |" in text


def test_cli_reference(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(app, ["config", "reference"])
    assert printed.exit_code == 0 and printed.stdout == configref.render(app)
    out = tmp_path / "docs" / "configuration.md"
    first = runner.invoke(app, ["config", "reference", "--output", str(out)])
    assert first.exit_code == 0 and f"wrote {out}" in first.stderr
    assert out.read_text(encoding="utf-8") == configref.render(app)
    again = runner.invoke(app, ["config", "reference", "-o", str(out)])
    assert again.exit_code == 0 and f"unchanged {out}" in again.stderr


def _imports(module: str) -> set[str]:
    """The ``fixloop.app`` modules ``module`` imports, at the top or inside a function (``ast`` of its source)."""
    base = REPO / Path(*module.split("."))
    path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    out = set()
    for name in found:
        where = REPO.joinpath(*name.split("."))
        if name.startswith("fixloop.app.") and (where.with_suffix(".py").is_file() or where.is_dir()):
            out.add(name)
    return out


def test_the_reference_and_the_check_do_not_import_the_cli() -> None:
    """No cycle check -> configref -> cli -> check: the CLI hands its app to the reference (``render(app)``)."""
    for start in ("fixloop.app.configref", "fixloop.app.check"):
        seen, todo = set(), [start]
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo += _imports(module)
        assert "fixloop.app.cli" not in seen, f"{start} imports the CLI (through {sorted(seen)})"
