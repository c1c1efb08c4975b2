"""Errors of the activities that call external systems, as Temporal sees them.

``fixloop.integrations.errors.IntegrationError`` -> ``ApplicationError(type=<class name>, non_retryable=not
e.retryable)``;
``fixloop.core.change.PolicyViolation`` (a change that fails validation) -> non-retryable ``ApplicationError`` of type
``PolicyViolation``. Messages are the exceptions' own, which are short and never carry a secret (see
``fixloop.integrations.errors``), bounded here once more. Temporal's retry policy is the only retry layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from temporalio.exceptions import ApplicationError

from fixloop.core.change.ops import PolicyViolation
from fixloop.core.parsing import clean
from fixloop.integrations.errors import IntegrationError

MESSAGE_MAX = 1_000


def application_error(e: IntegrationError | PolicyViolation) -> ApplicationError:
    """The ``ApplicationError`` an activity raises for ``e``."""
    retryable = isinstance(e, IntegrationError) and e.retryable
    return ApplicationError(clean(str(e), MESSAGE_MAX), type=type(e).__name__, non_retryable=not retryable)


@contextmanager
def as_application_errors() -> Iterator[None]:
    """Raise ``IntegrationError`` and ``PolicyViolation`` from the block as ``ApplicationError``."""
    try:
        yield
    except (IntegrationError, PolicyViolation) as e:
        raise application_error(e) from e
