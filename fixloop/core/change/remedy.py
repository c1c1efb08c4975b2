"""An incident's remediation: the checks and figures behind its typed operation, before any merge request.

Pure (no I/O): the caller (an activity) reads the files, the culprit commit and the memory series and hands them in.

* ``check_remedy(op, policy, ...)``: the action is allowed by ``fixloop.yaml`` ``incidents.actions``, every path
  by ``allow``/``deny`` and ``incidents.paths``, the values within the policy's bounds; a revert's commit is not a
  root commit, not a merge commit without a clear mainline, applied before the onset and within ``lookback``.
* ``remedy_change(op, read, policy, ...)``: a file operation checked, applied in place (``edit.edit_remedy``) and
  validated (``policy.validate``): its edits and unified diff.
* ``revert_change(op, before=, after=, head=, policy=, onset=)``: the texts a revert of the culprit commit gives,
  by a three-way check of each file (base: the file after the commit; ours: the head; theirs: the file before the
  commit), refused when a line the commit changed, or a line next to one, was changed again since (git would
  conflict too). The line matching is the standard library's ``difflib.SequenceMatcher`` (``merge3``, which the
  sandbox's git uses, is GPL and so not a dependency of the product).
* ``memory_sizing(peak_bytes, ...)``: the new memory limit and request from an observed peak (rule below).
* ``rollback_tags(history, culprit_sha, ...)``: the tag a workload ran before the culprit, from the file's texts at
  successive commits.

The memory rule: ``limit = round_up(peak x memory_headroom)`` to a whole multiple of 16 Mi (written in ``Mi``, or
``Gi`` when whole); refused when above ``max_memory`` (never capped: a capped limit would OOM again) or when not
above the current limit (more memory is then not the fix). ``request = min(round_up(old request x limit / old
limit), limit)``: the request keeps its share of the limit; no request when the file sets none.

Every refusal is a ``PolicyViolation`` whose message says what and why, with the figures.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from fixloop.core.change.edit import edit_remedy, image_tag
from fixloop.core.change.ops import (
    ACTION_OF,
    IncidentOperation,
    PolicyViolation,
    RevertCommit,
    RollbackImage,
    SetMaxReplicas,
    SetMemory,
    SetReplicas,
    check_path,
)
from fixloop.core.change.policy import Policy, changed_lines, check_parses, unified_diff, validate
from fixloop.core.change.quantity import format_memory, memory_bytes, round_up_memory, show_bytes
from fixloop.core.verification import fmt_duration

Read = Callable[[str], str | None]


class Remedy(BaseModel):
    """A validated incident change: the ``operation``, the files it writes (``edits``, ``{path: new text}``), the
    files it deletes (``deleted``: a revert of a commit that added them) and the unified ``diff``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operation: IncidentOperation
    edits: dict[str, str]
    deleted: tuple[str, ...] = ()
    diff: str


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _check_window(what: str, at: datetime, onset: datetime, lookback: timedelta) -> None:
    at, onset = _utc(at), _utc(onset)
    if at > onset:
        raise PolicyViolation(f"{what} was applied after the onset; it cannot be the cause")
    if onset - at > lookback:
        raise PolicyViolation(
            f"{what} was applied {fmt_duration(onset - at)} before the onset, longer than fixloop.yaml "
            f"incidents.lookback ({fmt_duration(lookback)}); refusing to undo it"
        )


def check_remedy(
    op: IncidentOperation, policy: Policy, *, onset: datetime | None = None, culprit_at: datetime | None = None
) -> None:
    """Raise ``PolicyViolation`` unless ``op`` may be proposed under ``policy``:

    * its action is in ``incidents.actions`` (``action memory is not allowed by fixloop.yaml incidents.actions``);
    * every path is a normalised repository path, allowed by ``allow``/``deny`` and by ``incidents.paths`` when set;
    * ``RevertCommit``: not a root commit; a merge commit only with ``mainline`` (its mainline parent otherwise
      unclear); ``onset`` is required and ``applied_at`` lies in ``[onset - lookback, onset]``;
    * ``RollbackImage``: another tag; with ``culprit_at`` (the culprit's time) and ``onset``, the same window;
    * ``SetMemory``: the limit raised, at most ``max_memory``, the request at most the limit;
    * ``SetReplicas`` / ``SetMaxReplicas``: another value, between 1 and ``max_replicas``.
    """
    rules = policy.incidents
    action = ACTION_OF[op.op]
    if not rules.allows_action(action):
        raise PolicyViolation(f"action {action} is not allowed by fixloop.yaml incidents.actions")
    for path in op.paths():
        check_path(path)
        if not policy.allows(path):
            raise PolicyViolation("not on the policy allow-list (or denied)", path)
        if not rules.allows_path(path):
            raise PolicyViolation("not on fixloop.yaml incidents.paths", path)
    if isinstance(op, RevertCommit):
        what = f"commit {op.sha[:12]}"
        if not op.parents:
            raise PolicyViolation(f"{what} is a root commit; fixloop does not revert it")
        if len(op.parents) > 1 and op.mainline is None:
            raise PolicyViolation(
                f"{what} is a merge commit of {len(op.parents)} parents and its mainline parent is unclear; "
                "refusing to revert it"
            )
        if op.mainline is not None and op.mainline > len(op.parents):
            raise PolicyViolation(f"{what} has {len(op.parents)} parent(s), no mainline parent {op.mainline}")
        if op.mainline is not None and len(op.parents) == 1:
            raise PolicyViolation(f"{what} is not a merge commit; a mainline parent makes no sense")
        if onset is None:
            raise PolicyViolation(f"{what}: a revert needs the incident's onset to check the lookback")
        _check_window(what, op.applied_at, onset, rules.lookback)
    elif isinstance(op, RollbackImage):
        if op.from_tag == op.to_tag:
            raise PolicyViolation(f"the image is already at {op.to_tag}", op.path)
        if culprit_at is not None and onset is not None:
            _check_window("the culprit", culprit_at, onset, rules.lookback)
    elif isinstance(op, SetMemory):
        limit, current = memory_bytes(op.limit), memory_bytes(op.current_limit)
        cap = memory_bytes(rules.max_memory)
        if limit > cap:
            raise PolicyViolation(
                f"memory limit {op.limit} is above fixloop.yaml incidents.max_memory {rules.max_memory}", op.path
            )
        if limit <= current:
            raise PolicyViolation(f"memory limit {op.limit} does not raise the current {op.current_limit}", op.path)
        if (op.request is None) != (op.current_request is None):
            raise PolicyViolation("the memory request must be set exactly when the file sets one", op.path)
        if op.request is not None and memory_bytes(op.request) > limit:
            raise PolicyViolation(f"memory request {op.request} is above the limit {op.limit}", op.path)
    elif isinstance(op, SetReplicas | SetMaxReplicas):
        new = op.replicas if isinstance(op, SetReplicas) else op.max_replicas
        name = "replicas" if isinstance(op, SetReplicas) else "maxReplicas"
        if new == op.current:
            raise PolicyViolation(f"{name} is already {new}", op.path)
        if not 1 <= new <= rules.max_replicas:
            raise PolicyViolation(
                f"{name} {new} is outside 1..{rules.max_replicas} (fixloop.yaml incidents.max_replicas)", op.path
            )


def remedy_change(
    op: RollbackImage | SetMemory | SetReplicas | SetMaxReplicas,
    read: Read,
    policy: Policy,
    *,
    onset: datetime | None = None,
    culprit_at: datetime | None = None,
) -> Remedy:
    """``op`` checked (``check_remedy``), applied to ``read(op.path)`` in place and validated (``validate``: the
    allow-list, the size limits, the result parses). Raises ``PolicyViolation`` naming the first failed check, the
    file when it does not hold ``op``'s current values."""
    check_remedy(op, policy, onset=onset, culprit_at=culprit_at)
    text = read(op.path)
    if text is None:
        raise PolicyViolation("no such file", op.path)
    edits = {op.path: edit_remedy(text, op)}
    return Remedy(operation=op, edits=edits, diff=validate(edits, read, policy))


# ---------------------------------------------------------------- revert: a three-way check per file


def _changes(a: list[str], b: list[str]) -> list[tuple[int, int, int, int]]:
    """The non-equal opcodes ``(i1, i2, j1, j2)`` turning ``a`` into ``b``."""
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    return [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def revert_text(path: str, before: str | None, after: str | None, head: str | None) -> str | None:
    """The text of ``path`` once a commit is reverted: ``before`` and ``after`` are the file at the commit's
    (mainline) parent and at the commit (None: absent), ``head`` the file now; None means the file is deleted.

    Three-way, base ``after``: each hunk the commit made (``after`` -> ``before``) is undone on ``head`` where
    ``head`` still holds that hunk's lines unchanged. Raises ``PolicyViolation`` when the revert conflicts: a
    line the commit changed, or one adjacent to it, was changed again since (lines counted in ``head``)."""
    if head == after:
        return before
    if head == before:
        return head  # already reverted
    if after is None or before is None or head is None:
        state = {None: "absent"}
        raise PolicyViolation(
            "the revert conflicts: the commit "
            + ("added" if before is None else "deleted" if after is None else "changed")
            + f" the file and it is {state.get(head, 'changed')} now",
            path,
        )
    base, ours, theirs = (t.splitlines(keepends=True) for t in (after, head, before))
    since = _changes(base, ours)
    out = list(ours)
    for a1, a2, j1, j2 in reversed(_changes(base, theirs)):
        touching = [(b1, b2, k1, k2) for b1, b2, k1, k2 in since if b1 <= a2 and a1 <= b2]
        if touching:
            k1 = min(k for _, _, k, _ in touching)
            k2 = max(k for _, _, _, k in touching)
            lines = f"line {k1 + 1}" if k2 - k1 <= 1 else f"lines {k1 + 1}-{k2}"
            raise PolicyViolation(
                f"the revert conflicts: {lines} (around what the commit changed at line {a1 + 1}) changed again since",
                path,
            )
        shift = sum((k2 - k1) - (b2 - b1) for b1, b2, k1, k2 in since if b2 < a1)
        assert out[a1 + shift : a2 + shift] == base[a1:a2]
        out[a1 + shift : a2 + shift] = theirs[j1:j2]
    return "".join(out)


def revert_change(
    op: RevertCommit, *, before: Read, after: Read, head: Read, policy: Policy, onset: datetime
) -> Remedy:
    """The revert of ``op.sha`` checked (``check_remedy``) and computed file by file (``revert_text``): ``before``
    reads a file at the commit's mainline parent, ``after`` at the commit, ``head`` at the branch head. Raises
    ``PolicyViolation`` for a refused commit, a conflicting file, a revert that changes nothing (already reverted),
    too many files or lines (``limits``), or a result that does not parse."""
    check_remedy(op, policy, onset=onset)
    edits: dict[str, str] = {}
    deleted: list[str] = []
    for path in sorted(set(op.files)):
        now = head(path)
        new = revert_text(path, before(path), after(path), now)
        if new == now:
            continue
        if new is None:
            deleted.append(path)
        else:
            check_parses(path, new)
            edits[path] = new
    if not edits and not deleted:
        raise PolicyViolation(f"reverting commit {op.sha[:12]} changes nothing (already reverted?)")
    if len(edits) + len(deleted) > policy.limits.max_files:
        raise PolicyViolation(
            f"changes {len(edits) + len(deleted)} files, more than the limit of {policy.limits.max_files}"
        )
    diff = unified_diff(head, {**edits, **dict.fromkeys(deleted, "")})
    n = changed_lines(diff)
    if n > policy.limits.max_changed_lines:
        raise PolicyViolation(f"changes {n} lines, more than the limit of {policy.limits.max_changed_lines}")
    return Remedy(operation=op, edits=edits, deleted=tuple(deleted), diff=diff)


# ---------------------------------------------------------------- memory


class MemorySizing(BaseModel):
    """The figures behind a new memory limit (bytes; quantities as written): the observed ``peak_bytes`` over the
    lookback window, the ``headroom`` factor, ``wanted_bytes`` = peak x headroom, the new ``limit`` and ``request``
    and the ones the file holds (``current_limit``, ``current_request``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    peak_bytes: float = Field(gt=0)
    headroom: float
    wanted_bytes: int
    limit: str
    request: str | None
    current_limit: str
    current_request: str | None
    max_memory: str

    def text(self) -> str:
        """One sentence for the MR and the Jira issue."""
        req = f"; request {self.current_request} \u2192 {self.request}" if self.request is not None else ""
        return (
            f"observed peak {show_bytes(self.peak_bytes)} \u00d7 headroom {self.headroom:g} = "
            f"{show_bytes(self.wanted_bytes)}, rounded up to {self.limit} (limit {self.current_limit} \u2192 "
            f"{self.limit}{req}; at most {self.max_memory})"
        )

    def operation(
        self, path: str, workload: str, container: str, *, values_key: str | None = None, document: int = 0
    ) -> SetMemory:
        """The ``SetMemory`` of these figures for ``container`` of ``workload`` in ``path``."""
        return SetMemory(
            path=path,
            workload=workload,
            container=container,
            values_key=values_key,
            document=document,
            current_limit=self.current_limit,
            limit=self.limit,
            current_request=self.current_request,
            request=self.request,
        )


def memory_sizing(
    peak_bytes: float, *, current_limit: str, current_request: str | None, policy: Policy
) -> MemorySizing:
    """The new memory limit and request (module docstring: the rule) from ``peak_bytes``, the container's highest
    memory use over the window, with ``incidents.memory_headroom`` and ``incidents.max_memory``. Raises
    ``PolicyViolation`` with the figures when the limit would exceed ``max_memory`` or not exceed the current
    limit; ``ValueError`` for a peak that is not a positive finite number or a current value that is not a
    quantity."""
    rules = policy.incidents
    if not peak_bytes > 0 or peak_bytes == float("inf"):
        raise ValueError("the peak must be a positive number of bytes")
    wanted = Decimal(str(peak_bytes)) * Decimal(str(rules.memory_headroom))
    limit = round_up_memory(wanted)
    figures = f"peak {show_bytes(peak_bytes)} \u00d7 {rules.memory_headroom:g}"
    if limit > memory_bytes(rules.max_memory):
        raise PolicyViolation(
            f"memory limit {format_memory(limit)} ({figures}) is above fixloop.yaml incidents.max_memory "
            f"{rules.max_memory}; refusing it"
        )
    old_limit = memory_bytes(current_limit)
    if limit <= old_limit:
        raise PolicyViolation(
            f"memory limit {format_memory(limit)} ({figures}) does not exceed the current limit {current_limit}: "
            "more memory is not the fix"
        )
    request = None
    if current_request is not None:
        scaled = round_up_memory(Decimal(memory_bytes(current_request)) * limit / old_limit)
        request = format_memory(min(scaled, limit))
    return MemorySizing(
        peak_bytes=peak_bytes,
        headroom=rules.memory_headroom,
        wanted_bytes=int(wanted.to_integral_value()),
        limit=format_memory(limit),
        request=request,
        current_limit=current_limit,
        current_request=current_request,
        max_memory=rules.max_memory,
    )


# ---------------------------------------------------------------- image rollback


@dataclass(frozen=True)
class _Site:
    path: str
    workload: str
    container: str
    image: str | None
    values_key: str | None
    document: int


def rollback_tags(
    history: Sequence[tuple[str, str | None]],
    culprit_sha: str,
    *,
    path: str,
    workload: str,
    container: str,
    image: str | None = None,
    values_key: str | None = None,
    document: int = 0,
) -> tuple[str, str]:
    """``(from_tag, to_tag)``: the tag the culprit commit set and the one the workload ran before it, read from
    ``history``, the texts of ``path`` at successive commits ``(sha, text or None)``, oldest first, holding the
    culprit and at least the commit before it. Raises ``PolicyViolation`` when the culprit is not in the history
    or is its first entry, a text does not hold the image, or the culprit did not change the tag (then a revert,
    not a rollback, undoes it)."""
    site = _Site(path, workload, container, image, values_key, document)
    shas = [sha for sha, _ in history]
    if culprit_sha not in shas:
        raise PolicyViolation(f"commit {culprit_sha[:12]} is not in the history handed in", path)
    i = shas.index(culprit_sha)
    if i == 0:
        raise PolicyViolation(f"no commit before {culprit_sha[:12]} in the history handed in", path)
    tags = [image_tag(text, site) if text is not None else None for _, text in (history[i - 1], history[i])]
    if tags[0] is None or tags[1] is None:
        which = history[i - 1][0] if tags[0] is None else culprit_sha
        raise PolicyViolation(f"holds no image tag of {workload}/{container} at {which[:12]}", path)
    if tags[0] == tags[1]:
        raise PolicyViolation(f"commit {culprit_sha[:12]} did not change the image tag ({tags[1]})", path)
    return tags[1], tags[0]
