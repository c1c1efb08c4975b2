"""The change policy (``fixloop.yaml``) and the checks every planned change passes before anything is pushed.

``fixloop.yaml`` (all keys optional)::

    allow: [glob, ...]        # files a merge request may change (default: DEFAULT_ALLOW)
    deny:  [glob, ...]        # never, even if allowed (added to ALWAYS_DENY, which no policy can lift)
    limits: {max_files: 10, max_changed_lines: 200}
    max_jump: major           # how far a dependency bump may go: major (any), minor (no new major, and no new
                              # minor of a 0.x version), patch (the same major.minor); fixloop.core.change.versions
    incidents:                # what an incident's merge request may do (all keys optional; the defaults shown)
      actions: [revert, rollback_image, memory, replicas]   # the remediations fixloop may propose
      lookback: 24h           # a culprit applied longer than this before the onset is not reverted or rolled back
      memory_headroom: 1.3    # new memory limit = observed peak x this (rounded up; fixloop.core.change.remedy)
      max_memory: 4Gi         # a memory limit above this is refused, never capped silently
      max_replicas: 10        # replicas and HPA maxReplicas are bounded by this
      paths: []               # globs an incident change may touch, on top of allow/deny; empty: allow/deny alone
    images: {catalog: {source: services/catalog, image: registry.example/shop/catalog, tag: semver-patch}}
    environments: [staging, production]   # the image chain: fixloop.core.change.images
    grouping: per-manifest    # or per-package, per-service: which bumps share an MR (fixloop.core.triage.grouping)

Globs are repository paths: ``*`` and ``?`` stay within one segment, ``**`` spans segments, and a pattern without
``/`` matches the file name at any depth (as in .gitignore).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import tomllib
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal

from packaging.requirements import Requirement
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML

from fixloop.core.change.dockerfile import stages
from fixloop.core.change.edit import xml_elements
from fixloop.core.change.images import ImageChain
from fixloop.core.change.ops import PolicyViolation, Quantity, check_path
from fixloop.core.change.quantity import MEBI, parse_quantity
from fixloop.core.change.versions import MAX_JUMPS, MaxJump
from fixloop.core.models import DEFAULT_GROUPING, Grouping, grouping_of
from fixloop.core.verification import parse_duration

POLICY_FILE = "fixloop.yaml"
DEFAULT_ALLOW = (
    "**/Dockerfile",
    "**/Dockerfile.*",
    "**/*.Dockerfile",
    "**/*.yaml",
    "**/*.yml",
    "**/requirements*.txt",
    "**/Pipfile",
    "**/Pipfile.lock",
    "**/poetry.lock",
    "**/pyproject.toml",
    "**/package.json",
    "**/package-lock.json",
    "**/go.mod",
    "**/go.sum",
    "**/pom.xml",
)
# CI configuration, scripts and secrets: never changed, whatever fixloop.yaml says.
ALWAYS_DENY = (
    ".gitlab-ci.yml",
    ".gitlab-ci.yaml",
    ".gitlab/**",
    ".github/**",
    ".circleci/**",
    "Jenkinsfile",
    "Makefile",
    "fixloop.yaml",
    ".gitmodules",
    "*.sh",
    "*.bash",
    "*.ps1",
    "*.py",
    "**/scripts/**",
    "**/hack/**",
    "**/secrets/**",
    "*secret*",
    "*.key",
    "*.pem",
    "*.p12",
    "*.pfx",
    "*.jks",
    ".env",
    ".env.*",
    "*.env",
    "id_rsa*",
    ".npmrc",
    ".pypirc",
    "*.sops.yaml",
)


class Limits(BaseModel):
    model_config = ConfigDict(extra="ignore")

    max_files: int = Field(default=10, ge=1, le=100)
    max_changed_lines: int = Field(default=200, ge=1, le=10_000)


Action = Literal["revert", "rollback_image", "memory", "replicas"]
ACTIONS: tuple[Action, ...] = ("revert", "rollback_image", "memory", "replicas")
Glob = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\\]+$")]


class IncidentPolicy(BaseModel):
    """The ``incidents:`` section: which remediations an incident's merge request may carry and their bounds (see
    the module docstring for the keys and defaults). ``max_memory`` is a Kubernetes quantity; ``lookback`` a
    duration (``24h``, ``90m``, ``1h30m`` or seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actions: tuple[Action, ...] = ACTIONS
    lookback: timedelta = timedelta(hours=24)
    memory_headroom: float = Field(default=1.3, ge=1.0, le=4.0)
    max_memory: Quantity = "4Gi"
    max_replicas: int = Field(default=10, ge=1, le=1_000)
    paths: tuple[Glob, ...] = Field(default=(), max_length=100)

    @field_validator("lookback", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value)

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=30):
            raise ValueError("must be between 1m and 30 days (720h)")
        return value

    @field_validator("max_memory")
    @classmethod
    def _max_memory(cls, value: str) -> str:
        if parse_quantity(value) < 16 * MEBI:
            raise ValueError("must be at least 16Mi")
        return value

    @classmethod
    def from_policy(cls, raw: object) -> IncidentPolicy:
        """The ``incidents:`` mapping of a loaded ``fixloop.yaml``; the defaults for None. Raises ``ValueError``
        naming the key (``incidents.max_memory: ...``) for an unknown key or an invalid value."""
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise ValueError("incidents: must be a mapping")
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            err = e.errors(include_url=False)[0]
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.get("loc", ()))
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            raise ValueError(f"incidents{loc}: {msg}"[:300]) from None

    def allows_action(self, action: str) -> bool:
        return action in self.actions

    def allows_path(self, path: str) -> bool:
        """Whether ``paths`` (when set) holds ``path``; the allow/deny lists are checked apart."""
        return not self.paths or any(_match(p, path) for p in self.paths)


class Policy(BaseModel):
    """Which files a change may touch, how big it may be, how far a dependency bump may jump (``max_jump``), what an
    incident's change may do, the image chain, and which bumps share a work item (``grouping``, read by triage)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    allow: tuple[str, ...] = DEFAULT_ALLOW
    deny: tuple[str, ...] = ()
    limits: Limits = Field(default_factory=Limits)
    max_jump: MaxJump = "major"
    incidents: IncidentPolicy = Field(default_factory=IncidentPolicy)
    chain: ImageChain = Field(default_factory=ImageChain)
    grouping: Grouping = DEFAULT_GROUPING

    def allows(self, path: str) -> bool:
        """Whether ``path`` (a checked repository path) may be changed."""
        if any(_match(p, path) for p in ALWAYS_DENY + self.deny):
            return False
        return any(_match(p, path) for p in self.allow)


def load_policy(text: str | None) -> Policy:
    """The policy of a ``fixloop.yaml`` text; the default policy for None. Unknown keys (``verification``, ...)
    are ignored; a malformed file raises ``PolicyViolation`` (fixloop does not guess a policy), naming the key for
    ``max_jump`` and the ``incidents:``, ``images:``, ``environments:`` and ``grouping:`` sections
    (``fixloop.yaml: is not a valid policy (incidents.max_replicas: ...)``)."""
    if text is None:
        return Policy()
    try:
        doc = YAML(typ="safe", pure=True).load(text) or {}
        if not isinstance(doc, dict):
            raise ValueError("not a mapping")
        values: dict[str, Any] = {k: doc[k] for k in ("allow", "deny", "limits") if doc.get(k) is not None}
        values["max_jump"] = max_jump_of(doc.get("max_jump"))
        values["incidents"] = IncidentPolicy.from_policy(doc.get("incidents"))
        values["chain"] = ImageChain.from_policy(doc.get("images"), doc.get("environments"))
        values["grouping"] = grouping_of(doc.get("grouping"))
        return Policy.model_validate(values)
    except Exception as e:  # pydantic, ValueError, and ruamel's own YAMLError family
        raise PolicyViolation(f"is not a valid policy ({str(e).splitlines()[0][:120]})", POLICY_FILE) from None


def max_jump_of(raw: object) -> MaxJump:
    """``max_jump:`` of a loaded ``fixloop.yaml``: ``major`` (the default, also for None), ``minor`` or ``patch``.
    Raises ``ValueError`` naming the key and the allowed values otherwise (``max_jump: must be one of major, minor,
    patch, not 'mayor'``)."""
    if raw is None:
        return "major"
    for allowed in MAX_JUMPS:
        if raw == allowed:
            return allowed
    shown = repr(raw)[:40] if isinstance(raw, str | int | float) else {dict: "a mapping", list: "a list"}.get(
        type(raw), "another value"
    )
    raise ValueError(f"max_jump: must be one of {', '.join(MAX_JUMPS)}, not {shown}")


@functools.lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str]:
    if "/" not in pattern.rstrip("/"):
        pattern = "**/" + pattern
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _match(pattern: str, path: str) -> bool:
    return bool(_glob(pattern).match(path))


def unified_diff(before: Callable[[str], str | None], edits: Mapping[str, str]) -> str:
    """The unified diff (``a/`` and ``b/`` prefixes, 3 lines of context) of ``edits`` against ``before``, files in
    path order."""
    out: list[str] = []
    for path in sorted(edits):
        old = (before(path) or "").splitlines(keepends=True)
        new = edits[path].splitlines(keepends=True)
        for line in difflib.unified_diff(old, new, f"a/{path}", f"b/{path}"):
            out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def changed_lines(diff: str) -> int:
    return sum(1 for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++ ", "--- ")))


def validate(edits: Mapping[str, str], before: Callable[[str], str | None], policy: Policy) -> str:
    """Check a change before it is pushed; returns its unified diff. Raises ``PolicyViolation`` naming the first
    failed check: a path that is not a normalised relative path or not allowed, too many files or changed lines,
    or a result that no longer parses."""
    for path in sorted(edits):
        check_path(path)
        if not policy.allows(path):
            raise PolicyViolation("not on the policy allow-list (or denied)", path)
    if len(edits) > policy.limits.max_files:
        raise PolicyViolation(f"changes {len(edits)} files, more than the limit of {policy.limits.max_files}")
    diff = unified_diff(before, edits)
    n = changed_lines(diff)
    if n > policy.limits.max_changed_lines:
        raise PolicyViolation(f"changes {n} lines, more than the limit of {policy.limits.max_changed_lines}")
    for path in sorted(edits):
        check_parses(path, edits[path])
    return diff


def check_parses(path: str, text: str) -> None:
    """Raise ``PolicyViolation`` unless ``text`` parses as the format its name says (YAML, JSON and Pipfile.lock,
    TOML and Pipfile / poetry.lock / uv.lock, XML without DOCTYPE, a Dockerfile with a FROM, requirements, go.mod);
    other files pass."""
    name = path.rsplit("/", 1)[-1]
    try:
        if name.endswith((".yaml", ".yml")):
            list(YAML(typ="safe", pure=True).load_all(text))
        elif name.endswith(".json") or name == "Pipfile.lock":
            json.loads(text)
        elif name.endswith(".toml") or name in ("poetry.lock", "uv.lock", "Pipfile"):
            tomllib.loads(text)
        elif name.endswith(".xml"):
            xml_elements(text, path)  # refuses DOCTYPE / entities before the parser sees them
            ElementTree.fromstring(text)
        elif name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile"):
            if not stages(text):
                raise ValueError("no FROM instruction")
        elif name.startswith("requirements") and name.endswith(".txt"):
            for line in text.splitlines():
                line = line.split(" #", 1)[0].strip()
                if line and not line.startswith(("#", "-")):
                    Requirement(line)
        elif name == "go.mod":
            if not re.search(r"^module\s+\S+", text, re.M):
                raise ValueError("no module line")
    except PolicyViolation:
        raise
    except Exception as e:  # json, tomllib, ruamel, ElementTree and packaging each raise their own errors
        raise PolicyViolation(f"does not parse after the change ({str(e).splitlines()[0][:120]})", path) from None
