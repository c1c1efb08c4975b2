"""Activity call options (timeouts, retry policies, summaries), search attribute keys, continue-as-new and the
business metrics of every workflow, in one place: every activity call of a workflow takes its options from
``call``, and every metric a workflow records goes through ``count`` or ``observe`` (``fixloop.core.metrics``).

Activities that talk to external systems retry with backoff on Temporal's RetryPolicy (the only retry layer:
integrations never retry by themselves); validation failures are raised by the activities as non-retryable
``ApplicationError``\\ s, so they are not retried. Values are ``timedelta``\\ s.

The long calls (planning, triage, verification) also have a heartbeat timeout: their activities heartbeat at each
step (``fixloop.activities.heartbeat``: a file read, a lookup, a metric query, the model's draft), so a worker that
dies is noticed, and the call retried elsewhere, within that timeout instead of the whole start-to-close one. A
step must fit in it: a model call (``FIXLOOP_LLM_TIMEOUT`` x (1 + ``FIXLOOP_LLM_MAX_RETRIES``), 60 s x 3 by
default) within ``PLAN_HEARTBEAT`` and ``TRIAGE_HEARTBEAT``, one metrics query within ``VERIFY_HEARTBEAT``.
Heartbeat timeouts are activity options, not commands: changing them needs no ``workflow.patched``.
"""

from __future__ import annotations

from datetime import timedelta
from enum import Enum
from typing import NotRequired, TypedDict

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from fixloop.core.metrics import Metric

TASK_QUEUE = "fixloop"

# Triage: the rules engine is CPU-only and fast; the llm engine makes one model call (the OpenAI client's own
# timeout and retries are inside it, and it falls back to rules), so one attempt normally suffices.
TRIAGE_TIMEOUT = timedelta(minutes=5)
TRIAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1), maximum_attempts=5
)
TRIAGE_HEARTBEAT = timedelta(minutes=4)  # a step: reading the topology, the model's one call, locating the fixes

# Calls to Jira, GitLab, Flux, the metrics API: one HTTP exchange or a few, each with its own timeout.
EXTERNAL_TIMEOUT = timedelta(minutes=2)
EXTERNAL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=20,
)

# Planning clones/reads the GitOps repository and may ask the model to draft: longer.
PLAN_TIMEOUT = timedelta(minutes=10)
PLAN_HEARTBEAT = timedelta(minutes=4)  # a step: one file read or lookup (seconds), or the model's draft

# Verification queries two metric windows per metric.
VERIFY_TIMEOUT = timedelta(minutes=5)
VERIFY_HEARTBEAT = timedelta(minutes=2)  # a step: one metrics query, one monitor or alert read

# Escalation (a comment and a label) must not be lost: retried for a long time.
ESCALATE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=10), maximum_interval=timedelta(minutes=10))



class Call(Enum):
    """The kinds of activity call, each with its timeout, retry policy and heartbeat timeout (None: the activity
    does not heartbeat)."""

    TRIAGE = (TRIAGE_TIMEOUT, TRIAGE_RETRY, TRIAGE_HEARTBEAT)  # triage.group_signals
    EXTERNAL = (EXTERNAL_TIMEOUT, EXTERNAL_RETRY, None)  # one exchange or a few with Jira, GitLab, Flux
    PLAN = (PLAN_TIMEOUT, EXTERNAL_RETRY, PLAN_HEARTBEAT)  # change.plan, change.plan_remediation
    VERIFY = (VERIFY_TIMEOUT, EXTERNAL_RETRY, VERIFY_HEARTBEAT)  # verify.judge
    ESCALATE = (EXTERNAL_TIMEOUT, ESCALATE_RETRY, None)  # comments and notes that must not be lost


class CallOptions(TypedDict):
    """The keyword arguments of ``workflow.execute_activity_method`` that ``call`` sets."""

    start_to_close_timeout: timedelta
    retry_policy: RetryPolicy
    summary: str
    heartbeat_timeout: NotRequired[timedelta]


def call(kind: Call, summary: str) -> CallOptions:
    """The options of one activity call of ``kind``; ``summary`` is what the Temporal UI shows for it (plain text,
    no untrusted text: the UI renders Markdown)."""
    timeout, retry, heartbeat = kind.value
    options = CallOptions(start_to_close_timeout=timeout, retry_policy=retry, summary=summary)
    if heartbeat is not None:
        options["heartbeat_timeout"] = heartbeat
    return options


# Search attributes shown and filterable in the Temporal UI. Registered by ``fixloop temporal`` on the dev
# server and by ``fixloop temporal setup`` on a cluster (``fixloop.app.temporal.register_search_attributes``); all
# Keyword.
SA_STAGE = SearchAttributeKey.for_keyword("FixloopStage")
SA_SERVICE = SearchAttributeKey.for_keyword("FixloopService")
SA_SEVERITY = SearchAttributeKey.for_keyword("FixloopSeverity")
SA_JIRA_KEY = SearchAttributeKey.for_keyword("FixloopJiraKey")
SA_MERGE_REQUEST = SearchAttributeKey.for_keyword("FixloopMergeRequest")
SA_SCOPE = SearchAttributeKey.for_keyword("FixloopScope")
SA_KIND = SearchAttributeKey.for_keyword("FixloopKind")
SA_OUTCOME = SearchAttributeKey.for_keyword("FixloopOutcome")
SEARCH_ATTRIBUTES = (SA_STAGE, SA_SERVICE, SA_SEVERITY, SA_JIRA_KEY, SA_MERGE_REQUEST, SA_SCOPE, SA_KIND, SA_OUTCOME)


def continue_as_new_due(max_run_events: int) -> bool:
    """In a workflow: whether this run should continue as new (its history passed ``max_run_events`` events, or
    the server suggests it)."""
    info = workflow.info()
    return info.is_continue_as_new_suggested() or info.get_current_history_length() >= max_run_events


def count(metric: Metric, value: int = 1, **labels: str) -> None:
    """In a workflow: add ``value`` to the counter ``metric`` with ``labels`` (its ``labels``, each given). The
    workflow meter records nothing while a worker replays a history, so a count is made once per event."""
    if value > 0:
        workflow.metric_meter().create_counter(metric.name, metric.description, metric.unit).add(value, labels)


def observe(metric: Metric, value: float, **labels: str) -> None:
    """In a workflow: record ``value`` (in ``metric.unit``; a negative one, from clocks that disagree, as 0) in the
    histogram ``metric`` with ``labels``; replay-safe as ``count``."""
    histogram = workflow.metric_meter().create_histogram_float(metric.name, metric.description, metric.unit)
    histogram.record(max(0.0, value), labels)
