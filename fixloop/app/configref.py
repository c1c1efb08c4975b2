"""The configuration reference (``docs/configuration.md``), generated from the settings models so it cannot drift.

Every pydantic-settings class fixloop reads is listed in ``GROUPS`` (a test checks that no ``BaseSettings``
subclass under ``fixloop``, ``integrations``, ``activities`` or ``workflows`` is missing); each becomes a Markdown
table: the environment variable (``env_prefix`` + field name, or the field's ``validation_alias``), its type and
bounds, its default (secrets: ``—``, never a value) and its description (the ``Field`` description). Options of
the ``fixloop`` commands that read an environment variable (``fixloop sandbox up``: ``FIXLOOP_SANDBOX_*``) are
listed after them from the CLI's own definition, which the caller hands in (``render(cli)``: the CLI's ``config
reference`` command passes its own app, so this module never imports the CLI).

Regenerate with ``fixloop config reference --output docs/configuration.md``.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import annotated_types as at
import typer
import typer.main
from pydantic import AliasChoices, AliasPath, HttpUrl, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

REGENERATE = "fixloop config reference --output docs/configuration.md"
DOC_PATH = Path("docs/configuration.md")


@dataclass(frozen=True)
class Group:
    """One settings class: ``path`` is ``module:Class``; ``intro`` says who reads it and when it counts as set."""

    title: str
    path: str
    intro: str

    def load_class(self) -> type[BaseSettings]:
        module, _, name = self.path.partition(":")
        cls = getattr(importlib.import_module(module), name)
        assert isinstance(cls, type) and issubclass(cls, BaseSettings), self.path
        return cls


GROUPS: tuple[Group, ...] = (
    Group(
        "Temporal",
        "fixloop.core.config:TemporalSettings",
        "Read by every command that talks to Temporal (`worker`, `submit`, `decide`, `gateway`, `config check`). "
        "Scale is Temporal's: run more `fixloop worker` replicas with the same address, namespace and task queue, "
        "against a Temporal cluster or Temporal Cloud (an API key, or mutual TLS with a client certificate).",
    ),
    Group(
        "Intake",
        "fixloop.core.config:IntakeSettings",
        "The windows of an intake, used when `fixloop submit` or the gateway starts one; a running intake keeps "
        "the options it was started with.",
    ),
    Group(
        "Remediation loops",
        "fixloop.core.config:LoopSettings",
        "Timings of the remediation loops an intake starts, used when `fixloop submit` or the gateway starts an "
        "intake; running loops keep the options they were started with.",
    ),
    Group(
        "Ingest",
        "fixloop.core.config:Settings",
        "Read by `fixloop ingest`, `triage` and `submit`.",
    ),
    Group(
        "Worker",
        "fixloop.core.config:WorkerSettings",
        "Read by `fixloop worker` (in addition to the Temporal settings and those of each integration it runs).",
    ),
    Group(
        "Logs",
        "fixloop.core.config:LogSettings",
        "Read by every command: `fixloop worker` and `fixloop gateway` log their work with it, the other commands "
        "their warnings. Secrets are masked in every line.",
    ),
    Group(
        "LLM",
        "fixloop.core.config:LlmSettings",
        "Any OpenAI-compatible Chat Completions endpoint with structured outputs, used by the `llm` triage engine "
        "and to draft merge request text. Configured when `FIXLOOP_LLM_BASE_URL` or `FIXLOOP_LLM_MODEL` is set; "
        "then both and `OPENAI_API_KEY` are required.",
    ),
    Group(
        "Gateway",
        "fixloop.app.gateway.settings:GatewaySettings",
        "Read by `fixloop gateway` (the HTTP endpoints for Datadog, Alertmanager, scanners, GitLab and Flux).",
    ),
    Group(
        "Jira",
        "fixloop.integrations.jira:JiraSettings",
        "Work items. Configured when `FIXLOOP_JIRA_URL` is set (the worker then registers the `jira.*` "
        "activities); the other required variables must be set too.",
    ),
    Group(
        "GitLab",
        "fixloop.integrations.gitlab.api:GitLabSettings",
        "Merge requests on the GitOps project. Configured when `FIXLOOP_GITLAB_URL` is set (the worker then "
        "registers the `gitlab.*` activities and `change.plan`).",
    ),
    Group(
        "GitLab webhook",
        "fixloop.integrations.gitlab.webhook:WebhookSettings",
        "Read by `fixloop gateway` to authenticate GitLab merge request hooks.",
    ),
    Group(
        "Container registry",
        "fixloop.integrations.registry:RegistrySettings",
        "Tag lookups and manifest digests when a change bumps an image, through the registry token flow (a 401 "
        "`WWW-Authenticate: Bearer` challenge, a token from its realm, cached until `expires_in`; Docker Hub, GHCR, "
        "the GitLab registry). Credentials for the registry's host: `FIXLOOP_REGISTRY_USERNAME`/`_PASSWORD`, else "
        "its entry in the docker `config.json` at `FIXLOOP_REGISTRY_DOCKER_CONFIG`, else anonymous pulls. "
        "Configured when `FIXLOOP_REGISTRY_URL` is set.",
    ),
    Group(
        "PyPI",
        "fixloop.integrations.pypi:PypiSettings",
        "What a merge request says of a bumped Python package's target release: its upload date and age, whether it "
        "is yanked, its changelog, source and PyPI links (the JSON API, `GET /pypi/<project>/<version>/json`). On "
        "by default against pypi.org; unreachable or off, the MR says release notes were not looked up and why.",
    ),
    Group(
        "endoflife.date",
        "fixloop.integrations.endoflife:EndOfLifeSettings",
        "The end of life of the release line a bumped image runs (`GET /api/<product>.json`: Alpine, Debian, "
        "Ubuntu, Python, Node.js, ...), said in the merge request. On by default; unreachable or off, the MR says "
        "it was not looked up.",
    ),
    Group(
        "Flux (Kubernetes API)",
        "fixloop.integrations.flux:FluxSettings",
        "Deploy state from the Kustomization's status, and the key Flux events are verified with. Configured when "
        "`FIXLOOP_KUBE_API_URL` or `FIXLOOP_KUBE_TOKEN` is set, or when running in a cluster (the service "
        "account's token).",
    ),
    Group(
        "Datadog",
        "fixloop.integrations.datadog.api:DatadogSettings",
        "Verification (metrics before and after, the triggering monitor) and, with "
        "`FIXLOOP_DATADOG_SERVICE_DEPENDENCIES_ENV`, APM's service map in the topology triage correlates alerts on. "
        "Configured when `FIXLOOP_DATADOG_API_KEY` is set; then the application key is required too.",
    ),
    Group(
        "Prometheus",
        "fixloop.integrations.prometheus:PrometheusSettings",
        "Verification from Prometheus (the HTTP API: `GET /api/v1/query_range` and `/api/v1/query`, metrics before "
        "and after a change). Configured when `FIXLOOP_PROMETHEUS_URL` is set; authentication by a bearer token or "
        "a username and password (not both), TLS always verified (`FIXLOOP_PROMETHEUS_CA_FILE` adds a CA).",
    ),
    Group(
        "Alertmanager API",
        "fixloop.integrations.alertmanager.api:AlertmanagerSettings",
        "Whether the alerts that triggered a work item recovered, read back from Alertmanager's API v2 "
        "(`GET /api/v2/alerts` with label filters). Configured when `FIXLOOP_ALERTMANAGER_URL` is set; "
        "authentication and TLS as for Prometheus.",
    ),
)


# -- one field ----------------------------------------------------------------------------------------------------
def env_names(cls: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    """The environment variables ``field`` of ``cls`` is read from, preferred first: its ``validation_alias``
    (each upper-case choice of an ``AliasChoices``), else ``env_prefix`` + the field name, upper-cased."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        names = [c for c in alias.choices if isinstance(c, str) and c.isupper()]
        if names:
            return names
    elif isinstance(alias, AliasPath):  # not used by fixloop; named as pydantic-settings would look it up
        return [str(alias.path[0])]
    return [f"{cls.model_config.get('env_prefix', '')}{name}".upper()]


def is_secret(annotation: Any) -> bool:
    return any(a is SecretStr for a in _flatten(annotation))


def _flatten(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Union or type(annotation).__name__ == "UnionType":
        return [x for a in get_args(annotation) for x in _flatten(a)]
    return [annotation]


_TYPE_NAMES: dict[Any, str] = {
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    SecretStr: "secret",
    HttpUrl: "URL",
    Path: "path",
}


def type_text(field: FieldInfo) -> str:
    """``integer``, ``number > 0, ≤ 600``, ``secret``, ``URL``, ``path``... (``None`` in a union is left out: an
    unset optional variable shows as default ``unset``)."""
    parts = [a for a in _flatten(field.annotation) if a is not type(None)]
    text = " or ".join(_TYPE_NAMES.get(a, getattr(a, "__name__", str(a))) for a in parts)
    bounds = []
    for m in field.metadata:
        if isinstance(m, at.Gt):
            bounds.append(f"> {_number(m.gt)}")
        elif isinstance(m, at.Ge):
            bounds.append(f"≥ {_number(m.ge)}")
        elif isinstance(m, at.Lt):
            bounds.append(f"< {_number(m.lt)}")
        elif isinstance(m, at.Le):
            bounds.append(f"≤ {_number(m.le)}")
        elif isinstance(m, at.MinLen) and m.min_length > 1:
            bounds.append(f"length ≥ {m.min_length}")
        elif isinstance(m, at.MaxLen):
            bounds.append(f"length ≤ {m.max_length}")
    return ", ".join([text, *bounds])


def docstring_description(cls: type[BaseSettings], variable: str) -> str:
    """What the class docstring says of ``variable`` (for a field without a ``Field`` description): the text after
    its first mention up to the next variable's or the end of the paragraph; ``""`` when it is not mentioned."""
    doc = cls.__doc__ or ""
    start = doc.find(f"``{variable}``")
    if start < 0:
        return ""
    rest = doc[start + len(variable) + 4 :]
    following = re.search(r"``[A-Z][A-Z0-9_]+``|\n\s*\n", rest)  # the next variable or the paragraph's end
    end = following.start() if following else len(rest)
    text = " ".join(rest[:end].split()).strip(" ,;:")
    text = text.removesuffix(" and").removesuffix(" or").strip(" ,;:")
    if text.startswith("(") and text.endswith(")") and text.count("(") == 1:
        text = text[1:-1]
    return text[:1].upper() + text[1:] if text else ""


def pattern(field: FieldInfo) -> str | None:
    return next((p for m in field.metadata if isinstance(p := getattr(m, "pattern", None), str)), None)


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def default_text(field: FieldInfo) -> str:
    """``required``, ``unset`` (None), ``—`` for any secret (never a value), else the value in backticks
    (``true``/``false`` for booleans; sizes in bytes also in MiB)."""
    if is_secret(field.annotation):
        return "—"
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    text = f"`{_number(value)}`"
    if isinstance(value, int) and value >= 1 << 20 and value % (1 << 20) == 0:
        text += f" ({value >> 20} MiB)"
    return text


@dataclass(frozen=True)
class Row:
    variable: str  # the preferred name
    also: tuple[str, ...]  # other names read, in order (e.g. FIXLOOP_GITLAB_PROJECT for the gateway's scope)
    type: str
    default: str
    description: str
    secret: bool
    required: bool


def rows(cls: type[BaseSettings]) -> list[Row]:
    """The variables of ``cls``, in field order."""
    out = []
    for name, field in cls.model_fields.items():
        first, *also = env_names(cls, name, field)
        description = " ".join((field.description or docstring_description(cls, first)).split())
        if (p := pattern(field)) and len(p) <= 60:
            description = f"{description} Pattern `{p}`.".strip()
        secret = is_secret(field.annotation)
        required = field.is_required()
        kind = type_text(field) + (", required" if secret and required else "")
        out.append(Row(first, tuple(also), kind, default_text(field), description, secret, required))
    return out


# -- CLI options read from the environment ----------------------------------------------------------------------
@dataclass(frozen=True)
class CliOption:
    command: str  # e.g. "fixloop sandbox up"
    option: str  # e.g. "--state-dir"
    variable: str
    default: str
    help: str


def cli_options(cli: typer.Typer) -> list[CliOption]:
    """Every option of a command of ``cli`` (the ``fixloop`` app) that falls back to an environment variable
    (click's ``envvar``)."""
    out: list[CliOption] = []

    def walk(cmd: Any, path: str) -> None:  # a click command or group (typer's own copy of click)
        subcommands = getattr(cmd, "commands", None)
        if isinstance(subcommands, dict):
            for name in sorted(subcommands):
                walk(subcommands[name], f"{path} {name}")
            return
        for param in cmd.params:
            envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            for var in envvars:
                default = param.default
                shown = "unset" if default is None else f"`{default}`"
                text = " ".join((getattr(param, "help", None) or "").split())
                out.append(CliOption(path, max(param.opts, key=len), var, shown, text))

    walk(typer.main.get_command(cli), "fixloop")
    return out


# -- the document -------------------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(text: str) -> str:
    """reStructuredText literals (````x````) as Markdown code spans."""
    return re.sub(r"``([^`]+)``", r"`\1`", text)


def render(cli: typer.Typer) -> str:
    """The whole reference, as Markdown: every group of ``GROUPS``, then the options of ``cli``'s commands read from
    the environment."""
    lines = [
        "# fixloop configuration reference",
        "",
        f"<!-- Generated from the settings models by `{REGENERATE}`; do not edit by hand. -->",
        "",
        "fixloop reads its configuration from environment variables (and a `.env` file in the working directory, "
        "whose values the environment overrides), with pydantic-settings; names are case-insensitive. Secrets are "
        "never printed (their default shows as —). `fixloop config check` validates every group below and tries "
        "each configured endpoint (Temporal, Jira, GitLab, the registry, Flux's Kubernetes API, Datadog, the LLM).",
        "",
        f"This file is generated from the settings models: after changing one, run `{REGENERATE}` "
        "(a test fails while it is out of date).",
        "",
    ]
    for group in GROUPS:
        cls = group.load_class()
        lines += [f"## {group.title}", "", group.intro, "", f"Settings model: `{cls.__module__}.{cls.__name__}`.", ""]
        lines += ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
        for row in rows(cls):
            variable = f"`{row.variable}`" + "".join(f" (or `{a}`)" for a in row.also)
            cells = (variable, row.type, row.default, _markdown(row.description))
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    options = cli_options(cli)
    if options:
        lines += [
            "## Command options from the environment",
            "",
            "Options of `fixloop` commands that can also be given as environment variables. The `FIXLOOP_SANDBOX_*` "
            "variables configure the local sandbox (`fixloop sandbox up`, for development and the demo); they are "
            "not settings of fixloop itself.",
            "",
            "| Variable | Command | Option | Default | Description |",
            "|---|---|---|---|---|",
        ]
        for o in options:
            lines.append(
                f"| `{o.variable}` | `{o.command}` | `{o.option}` | {_cell(o.default)} | {_cell(_markdown(o.help))} |"
            )
        lines.append("")
    return "\n".join(lines)


def variables(cli: typer.Typer) -> set[str]:
    """Every environment variable the reference names (settings and the options of ``cli``'s commands)."""
    names = {n for g in GROUPS for r in rows(g.load_class()) for n in (r.variable, *r.also)}
    return names | {o.variable for o in cli_options(cli)}


def write(path: Path, cli: typer.Typer) -> bool:
    """Write the reference (``render(cli)``) to ``path`` (parent directories created); False when it already held
    exactly that."""
    text = render(cli)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True
