"""The result of one ``fixloop config check`` line, shared by each integration's ``check(settings, timeout)``.

Every integration that has an endpoint (``jira``, ``gitlab.api``, ``registry``, ``flux``, ``datadog.api``,
``prometheus``, ``alertmanager.api``, ``llm``) checks it with its cheapest authenticated call on its own client and
answers one ``CheckResult``: ``ok`` with what it found, or ``FAIL`` with the integration's mapped error
(``fixloop.integrations.errors``: status and the server's short reason) and the variables to check.
``fixloop.app.check`` runs them and masks every configured secret in what they say.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel

from fixloop.integrations.errors import IntegrationError

M = TypeVar("M", bound=BaseModel)


class Status(StrEnum):
    OK = "ok"
    FAIL = "FAIL"
    SKIP = "skip"


@dataclass(frozen=True)
class CheckResult:
    """One check's result: ``status``, ``name`` (``config`` or a system: ``temporal``, ``jira``, ...) and what was
    found (one line of text)."""

    status: Status
    name: str
    text: str

    def __str__(self) -> str:
        return f"{self.status.value:<4} {self.name:<9} {self.text}"


def hint(e: IntegrationError, hints: dict[type[IntegrationError], str], default: str) -> str:
    """The variables to look at for ``e``: the first of ``hints`` whose class ``e`` is, else ``default``."""
    return next((v for cls, v in hints.items() if isinstance(e, cls)), default)


def failed(name: str, target: str, e: IntegrationError, check: str) -> CheckResult:
    """``FAIL <name> <target>: <the error's message> (check <variables>)``."""
    return CheckResult(Status.FAIL, name, f"{target}: {e.message} (check {check})")


def bounded(settings: M, timeout: float) -> M:
    """``settings`` with its per-request ``timeout`` (seconds) at most ``timeout``."""
    return settings.model_copy(update={"timeout": min(float(getattr(settings, "timeout", timeout)), timeout)})
