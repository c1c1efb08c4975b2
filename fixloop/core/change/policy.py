"""The change policy (``fixloop.yaml``) and the checks every planned change passes before anything is pushed.

``fixloop.yaml`` (all keys optional)::

    allow: [glob, ...]        # files a merge request may change (default: DEFAULT_ALLOW)
    deny:  [glob, ...]        # never, even if allowed (added to ALWAYS_DENY, which no policy can lift)
    limits: {max_files: 10, max_changed_lines: 200}

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

from packaging.requirements import Requirement
from pydantic import BaseModel, ConfigDict, Field
from ruamel.yaml import YAML

from fixloop.core.change.edit import from_lines, xml_elements
from fixloop.core.change.ops import PolicyViolation, check_path

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


class Policy(BaseModel):
    """Which files a change may touch, and how big it may be."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    allow: tuple[str, ...] = DEFAULT_ALLOW
    deny: tuple[str, ...] = ()
    limits: Limits = Field(default_factory=Limits)

    def allows(self, path: str) -> bool:
        """Whether ``path`` (a checked repository path) may be changed."""
        if any(_match(p, path) for p in ALWAYS_DENY + self.deny):
            return False
        return any(_match(p, path) for p in self.allow)


def load_policy(text: str | None) -> Policy:
    """The policy of a ``fixloop.yaml`` text; the default policy for None. Unknown keys (``verification``, ...)
    are ignored; a malformed file raises ``PolicyViolation`` (fixloop does not guess a policy)."""
    if text is None:
        return Policy()
    try:
        doc = YAML(typ="safe").load(text) or {}
        if not isinstance(doc, dict):
            raise ValueError("not a mapping")
        return Policy.model_validate({k: doc[k] for k in ("allow", "deny", "limits") if doc.get(k) is not None})
    except Exception as e:  # pydantic, ValueError, and ruamel's own YAMLError family
        raise PolicyViolation(f"is not a valid policy ({str(e).splitlines()[0][:120]})", POLICY_FILE) from None


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
            list(YAML(typ="safe").load_all(text))
        elif name.endswith(".json") or name == "Pipfile.lock":
            json.loads(text)
        elif name.endswith(".toml") or name in ("poetry.lock", "uv.lock", "Pipfile"):
            tomllib.loads(text)
        elif name.endswith(".xml"):
            xml_elements(text, path)  # refuses DOCTYPE / entities before the parser sees them
            ElementTree.fromstring(text)
        elif name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile"):
            if not from_lines(text):
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
