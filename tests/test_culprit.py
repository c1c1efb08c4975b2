"""``fixloop.core.culprit``: the commit Flux applied last before an incident's onset (properties on generated
histories against a brute-force oracle, and the rule's edges), and ``fixloop.integrations.flux.applied_revisions`` on
recorded Flux objects and events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from fixloop.core.culprit import (
    EVIDENCE_MAX,
    AppliedRevision,
    ChangeCommit,
    FileChange,
    MergeRequestRef,
    declares_workload,
    diff_summary,
    line_counts,
    named_paths,
    pick_culprit,
    with_details,
)
from fixloop.integrations.flux import applied_revisions, kustomization_status, parse_event
from tests.sandbox.fidelity import RECORDED

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def sha(i: int) -> str:
    return f"{i:040x}"


def commit(i: int, at: datetime, **kw: object) -> ChangeCommit:
    fields: dict = {"title": f"change {i}", "authored_at": at, "committed_at": at, **kw}
    return ChangeCommit(sha=sha(i), **fields)


def linear(revision_sha: str, commit_sha: str) -> bool:
    """A linear history ``sha(0) <- sha(1) <- ...``: revision i holds commits 0..i."""
    return int(commit_sha, 16) <= int(revision_sha, 16)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[ChangeCommit], list[AppliedRevision], datetime, timedelta]:
    """A linear history of commits (minutes apart, some at the same second), the revisions Flux applied (each at or
    after its commit, in order), an onset and a lookback."""
    n = draw(st.integers(1, 12))
    gaps = draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
    times, t = [], T0
    for g in gaps:
        t += timedelta(minutes=g)
        times.append(t)
    commits = [commit(i, times[i]) for i in range(n)]
    applied, last = [], T0
    for i in sorted(draw(st.sets(st.integers(0, n - 1)))):
        last = max(last, times[i]) + timedelta(minutes=draw(st.integers(0, 20)))
        applied.append(AppliedRevision(sha=sha(i), at=last))
    onset = T0 + timedelta(minutes=draw(st.integers(0, 30 * n + 60)))
    lookback = timedelta(minutes=draw(st.integers(0, 30 * n + 60)))
    return commits, applied, onset, lookback


def oracle(commits: list[ChangeCommit], applied: list[AppliedRevision], onset: datetime, lookback: timedelta) -> set:
    """Every commit that may be named: applied (by a revision that holds it, before the onset) last, in the window."""
    when = {}
    for c in commits:
        if c.committed_at > onset:
            continue
        times = [a.at for a in applied if a.at < onset and linear(a.sha, c.sha)]
        if times and min(times) >= onset - lookback:
            when[c.sha] = (min(times), c.committed_at)
    if not when:
        return set()
    best = max(when.values())
    return {s for s, w in when.items() if w == best}


@settings(max_examples=300, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_the_culprit_is_the_latest_applied_before_the_onset(h: tuple, rnd: object) -> None:
    commits, applied, onset, lookback = h
    found = pick_culprit(onset, lookback, commits, applied, linear)
    expected = oracle(commits, applied, onset, lookback)
    if not expected:
        assert found is None
        return
    assert found is not None
    assert found.commit.sha in expected
    assert found.commit.sha == min(expected), "ties go to the lower sha"
    assert found.applied_at < onset and found.commit.committed_at <= onset, "never a commit after the onset"
    assert found.applied_at >= onset - lookback
    assert found.before_onset_seconds == (onset - found.applied_at).total_seconds() > 0
    # the input's order does not matter
    shuffled_c, shuffled_a = list(commits), list(applied)
    rnd.shuffle(shuffled_c)  # type: ignore[attr-defined]
    rnd.shuffle(shuffled_a)  # type: ignore[attr-defined]
    again = pick_culprit(onset, lookback, shuffled_c, shuffled_a, linear)
    assert again is not None and again.commit.sha == found.commit.sha and again.evidence == found.evidence


def test_merged_but_not_yet_applied_is_not_the_culprit() -> None:
    old = commit(1, T0)
    merged = commit(2, T0 + timedelta(minutes=10))  # merged before the onset, Flux applies it only after
    applied = [
        AppliedRevision(sha=sha(1), at=T0 + timedelta(minutes=1)),
        AppliedRevision(sha=sha(2), at=T0 + timedelta(minutes=40)),
    ]
    found = pick_culprit(T0 + timedelta(minutes=30), DAY, [merged, old], applied, linear)
    assert found is not None and found.commit.sha == sha(1)
    assert found.not_applied == [sha(2)]
    assert found.before_onset_seconds == 29 * 60


def test_a_commit_after_the_onset_is_never_named_even_if_a_clock_says_it_was_applied_before() -> None:
    late = commit(2, T0 + timedelta(hours=1))
    applied = [AppliedRevision(sha=sha(2), at=T0)]  # a skewed clock
    assert pick_culprit(T0 + timedelta(minutes=5), DAY, [late], applied, linear) is None
    found = pick_culprit(T0 + timedelta(minutes=5), DAY, [late, commit(1, T0)], applied, linear)
    assert found is not None and found.commit.sha == sha(1) and found.after_onset == 1


def test_without_contains_only_the_exact_revision_counts_and_lookback_bounds() -> None:
    c = commit(1, T0)
    applied = [AppliedRevision(sha=sha(2), at=T0 + timedelta(minutes=1))]
    assert pick_culprit(T0 + timedelta(hours=1), DAY, [c], applied) is None
    assert pick_culprit(T0 + timedelta(hours=1), DAY, [c], applied, linear) is not None
    assert pick_culprit(T0 + timedelta(hours=1), timedelta(minutes=30), [c], applied, linear) is None
    with pytest.raises(ValueError):
        pick_culprit(T0, timedelta(seconds=-1), [c], applied, linear)


def test_evidence_names_who_whose_mr_when_and_the_diff() -> None:
    mr = MergeRequestRef(
        iid=7,
        title="Raise the cart cache size",
        web_url="https://gitlab.example/p/-/merge_requests/7",
        author_username="alice",
        source_branch="cart-cache",
    )
    c = commit(
        1,
        T0,
        author_name="Alice Example",
        author_username="alice",
        merge_request=mr,
        files=[FileChange(path="apps/cart/deployment.yaml", added=2, removed=1)],
    )
    found = pick_culprit(
        T0 + timedelta(minutes=12),
        DAY,
        [c],
        [AppliedRevision(sha=sha(1), at=T0 + timedelta(minutes=2), revision=f"main@sha1:{sha(1)}")],
        linear,
    )
    assert found is not None
    text = found.evidence
    for part in (
        "Alice Example (@alice)",
        "a person's change",
        "merged in !7",
        "Raise the cart cache size",
        "10 min before the onset",
        "apps/cart/deployment.yaml (+2 -1)",
        f"main@sha1:{sha(1)}",
    ):
        assert part in text, part
    bot = commit(2, T0, by_fixloop=True, title="x\n" * 5_000)
    found = pick_culprit(T0 + timedelta(minutes=12), DAY, [bot], [AppliedRevision(sha=sha(2), at=T0)], linear)
    assert (
        found is not None
        and "fixloop's change" in found.evidence
        and "pushed without a merge request" in (found.evidence)
    )
    assert len(found.evidence) <= EVIDENCE_MAX and "\n" not in found.evidence


ONE_LINE = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Zl", "Zp", "Cs")), max_size=20)


@given(st.lists(st.tuples(st.sampled_from("+- @"), ONE_LINE), max_size=50))
def test_line_counts_count_plus_and_minus_lines(lines: list[tuple[str, str]]) -> None:
    body = "\n".join(k + t for k, t in lines)
    assert line_counts(body) == (sum(k == "+" for k, _ in lines), sum(k == "-" for k, _ in lines))


def test_line_counts_and_summary_on_a_gitlab_diff() -> None:
    diff = json.loads((RECORDED / "gitlab" / "go-gitlab_list_merge_request_diff.json").read_text())[0]["diff"]
    assert line_counts(diff) == (diff.count("\n+") + diff.startswith("+"), diff.count("\n-") + diff.startswith("-"))
    files = [FileChange(path=f"f{i}", added=i, removed=1) for i in range(12)]
    assert diff_summary(files).endswith("f9 (+9 -1) and 2 more") and diff_summary([]) == "no files"


def test_applied_revisions_from_a_recorded_kustomization_and_events() -> None:
    docs = list(
        YAML(typ="safe").load_all((RECORDED / "flux" / "flux2-testdata_get_kustomization_only.yaml").read_text())
    )
    status = kustomization_status(next(d for d in docs if d["kind"] == "Kustomization"))
    failed = parse_event(
        json.loads((RECORDED / "flux" / "nc-docs-v1beta3_generic-webhook-body_kustomization.json").read_text())
    )
    ok = failed.model_copy(update={"severity": "info", "reason": "ReconciliationSucceeded"})
    got = applied_revisions(status, [failed, ok])
    assert [(a.sha, a.at, a.source) for a in got] == [
        ("696f056df216eea4f9401adbee0ff744d4df390f", datetime(2021, 8, 1, 4, 52, 56, tzinfo=UTC), "status"),
        ("731f7eaddfb6af01cb2173e18f0f75b0ba780ef1", datetime(2022, 10, 28, 7, 26, 19, tzinfo=UTC), "event"),
    ], "the failed event is not an applied revision"
    assert applied_revisions(status, [ok], kustomization="flux-system/other")[1:] == []
    not_ready = status.model_copy(update={"ready": False})
    assert applied_revisions(not_ready) == []


def test_the_first_revision_holding_a_commit_is_found_in_few_questions() -> None:
    applied = [AppliedRevision(sha=sha(i), at=T0 + timedelta(minutes=i)) for i in range(200)]
    asked: list[tuple[str, str]] = []

    def contains(revision: str, c: str) -> bool:
        asked.append((revision, c))
        return linear(revision, c)

    found = pick_culprit(T0 + timedelta(hours=10), DAY, [commit(150, T0 + timedelta(minutes=149))], applied, contains)
    assert found is not None and found.applied_at == T0 + timedelta(minutes=150)
    assert len(asked) <= 9, "bisection over 200 revisions"
    asked.clear()
    # of the revisions before the window only the last is asked: an old commit ran before it began
    assert (
        pick_culprit(T0 + timedelta(minutes=199, seconds=30), timedelta(minutes=10), [commit(3, T0)], applied, contains)
        is None
    )
    assert all(int(r, 16) >= 189 for r, _ in asked)


def test_with_details_says_the_evidence_again() -> None:
    found = pick_culprit(T0 + timedelta(minutes=5), DAY, [commit(1, T0)], [AppliedRevision(sha=sha(1), at=T0)])
    assert found is not None and "pushed without a merge request" in found.evidence
    mr = MergeRequestRef(iid=3, author_username="bob")
    detailed = with_details(found, commit(1, T0, merge_request=mr, author_username="bob"), T0 + timedelta(minutes=5))
    assert "merged in !3" in detailed.evidence and "(@bob)" in detailed.evidence
    assert detailed.applied_at == found.applied_at and detailed.candidates == found.candidates
    with pytest.raises(ValueError):
        with_details(found, commit(2, T0), T0)


def test_named_paths_are_the_directories_and_files_named_after_the_service() -> None:
    tree = [
        ("apps", "tree"),
        ("apps/base/catalog", "tree"),
        ("apps/base/catalog/deployment.yaml", "blob"),
        ("apps/base/catalog/catalog", "tree"),  # below a named directory: covered by it
        ("apps/production/Catalog.yaml", "blob"),
        ("services/catalog-db", "tree"),  # another service's
        ("services/catalog", "tree"),
    ]
    assert named_paths("catalog", tree) == ["apps/base/catalog", "apps/production/Catalog.yaml", "services/catalog"]
    assert named_paths("", tree) == [] and named_paths("inventory", tree) == []


@given(
    st.lists(st.tuples(st.text(max_size=40), st.sampled_from(["tree", "blob", "commit"])), max_size=40),
    st.text(max_size=20),
    st.integers(min_value=0, max_value=5),
)
def test_named_paths_never_raise_and_stay_within_the_tree_and_the_limit(
    tree: list[tuple[str, str]], entity: str, limit: int
) -> None:
    found = named_paths(entity, tree, limit=limit)
    assert len(found) <= limit
    assert set(found) <= {p.strip("/") for p, _ in tree}


@given(st.text(max_size=300), st.text(max_size=20))
def test_declares_workload_never_raises_on_any_text(text: str, entity: str) -> None:
    assert declares_workload(entity, text) in (True, False)
