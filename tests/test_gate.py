"""``fixloop.core.gate``: the approval gate's decision from facts read from GitLab, fuzzed with hypothesis over every
field (state, heads, approvers, author, bot, allow policy, reset on push, the loop's observations), and the check of
the human behind a ``decide``; and the policy's settings (``FIXLOOP_GITLAB_APPROVERS``, ...)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixloop.core.gate import (
    Approval,
    ApproverPolicy,
    MergeRequestState,
    MrState,
    UserFacts,
    decider_refusal,
    gate,
    observe,
)
from fixloop.integrations.gitlab.api import GitLabSettings

SHAS = ["a" * 40, "b" * 40, "c" * 40]
NAMES = ["alice", "bob", "fixloop-bot", "carol"]
IDS = {"alice": 11, "bob": 12, "fixloop-bot": 2, "carol": 13}

shas = st.sampled_from(SHAS)
approvals = st.builds(
    Approval,
    by=st.sampled_from(NAMES),
    sha=shas,
    bot=st.booleans(),
    user_id=st.one_of(st.none(), st.sampled_from(list(IDS.values()))),
    allowed=st.one_of(st.none(), st.booleans()),
)
policies = st.builds(ApproverPolicy, author_approvals_count=st.booleans(), restricted=st.booleans())
states = st.builds(
    MergeRequestState,
    state=st.sampled_from(list(MrState)),
    head_sha=shas,
    merge_sha=st.one_of(st.none(), st.just("f" * 40)),
    approvals=st.lists(approvals, max_size=4),
    author_id=st.one_of(st.none(), st.sampled_from(list(IDS.values()))),
    reset_approvals_on_push=st.one_of(st.none(), st.booleans()),
    policy=policies,
)
seens = st.dictionaries(st.sampled_from([str(i) for i in IDS.values()]), st.one_of(st.none(), shas), max_size=4)


def counts(a: Approval, s: MergeRequestState, seen: dict[str, str | None]) -> bool:
    """The gate's rule, restated: a human approval of exactly the head, as the policy allows it."""
    p = s.policy
    return (
        a.user_id is not None
        and not a.bot
        and a.by != p.bot_username
        and (p.author_approvals_count or (s.author_id is not None and a.user_id != s.author_id))
        and (not p.restricted or a.allowed is True)
        and a.sha == s.head_sha
        and (s.reset_approvals_on_push is True or seen.get(str(a.user_id)) == s.head_sha)
    )


@settings(max_examples=500, deadline=None)
@given(states, seens)
def test_the_gate_passes_exactly_on_a_merged_head_a_human_may_approve_approved(
    s: MergeRequestState, seen: dict[str, str | None]
) -> None:
    v = gate(s, seen)
    expected = s.state is MrState.MERGED and bool(s.merge_sha) and any(counts(a, s, seen) for a in s.approvals)
    assert v.passed is expected
    assert v.closed is (s.state is MrState.CLOSED)  # locked: GitLab is merging it; read again
    if not v.closed:
        assert v.counted == sorted({a.by for a in s.approvals if counts(a, s, seen)})
        assert [who for who, _ in v.refused] == [a.by for a in s.approvals if not counts(a, s, seen)]
        assert all(why for _, why in v.refused)


@settings(max_examples=300, deadline=None)
@given(states, seens, st.data())
def test_fewer_approvals_never_pass_a_gate_that_more_did_not(
    s: MergeRequestState, seen: dict[str, str | None], data: st.DataObject
) -> None:
    if not s.approvals:
        return
    drop = data.draw(st.integers(min_value=0, max_value=len(s.approvals) - 1))
    fewer = s.model_copy(update={"approvals": s.approvals[:drop] + s.approvals[drop + 1 :]})
    if gate(fewer, seen).passed:
        assert gate(s, seen).passed


@settings(max_examples=300, deadline=None)
@given(seens, shas, states)
def test_observation_binds_an_approval_to_the_head_it_was_first_seen_at(
    seen: dict[str, str | None], previous_head: str, now: MergeRequestState
) -> None:
    out = observe(seen, previous_head, now)
    listed = {str(a.user_id) for a in now.approvals if a.user_id is not None}
    assert set(out) == listed  # unlisted approvers are forgotten
    for key, head in out.items():
        if key in seen:
            assert head == seen[key]  # still listed: still bound to where it was first seen
        elif now.head_sha == previous_head:
            assert head == now.head_sha
        else:
            assert head is None  # appeared while the head moved: never counts
    if now.head_sha != previous_head:  # nobody listed before the push is bound to the new head by it
        assert all(out[k] != now.head_sha or seen[k] == now.head_sha for k in out if k in seen)


def test_without_reset_an_approval_from_before_a_push_never_counts_for_the_new_head() -> None:
    alice = Approval(by="alice", sha=SHAS[0], user_id=11)
    opened = MergeRequestState(state=MrState.OPENED, head_sha=SHAS[0], approvals=[alice], author_id=2)
    seen = observe({}, SHAS[0], opened)
    assert seen == {"11": SHAS[0]}
    pushed = MergeRequestState(
        state=MrState.MERGED,
        head_sha=SHAS[1],
        merge_sha="f" * 40,
        approvals=[alice.model_copy(update={"sha": SHAS[1]})],
        author_id=2,
        reset_approvals_on_push=False,
    )
    seen = observe(seen, SHAS[0], pushed)
    v = gate(pushed, seen)
    assert not v.passed and v.refused == [
        ("alice", f"listed since before the head moved to {SHAS[1][:12]} (approvals are not reset on push)")
    ]
    # with the project resetting approvals on push, GitLab itself guarantees the binding
    assert gate(pushed.model_copy(update={"reset_approvals_on_push": True}), seen).passed


@pytest.mark.parametrize(
    ("user", "why"),
    [
        (UserFacts(username="ghost"), "GitLab has no user 'ghost'"),
        (UserFacts(username="dave", user_id=14, state="blocked"), "GitLab user 'dave' is blocked"),
        (UserFacts(username="fixloop-bot", user_id=2, state="active"), "'fixloop-bot' is a bot"),
        (UserFacts(username="svc", user_id=9, state="active", bot=True), "'svc' is a bot"),
        (
            UserFacts(username="dave", user_id=14, state="active", policy=ApproverPolicy(restricted=True)),
            "'dave' is not an allowed approver",
        ),
        (UserFacts(username="dave", user_id=14, state="active"), None),
    ],
)
def test_who_may_decide(user: UserFacts, why: str | None) -> None:
    assert decider_refusal(user) == why


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        UserFacts,
        username=st.sampled_from(NAMES),
        user_id=st.one_of(st.none(), st.integers(1, 20)),
        state=st.one_of(st.none(), st.sampled_from(["active", "blocked", "deactivated"])),
        bot=st.booleans(),
        allowed=st.one_of(st.none(), st.booleans()),
        policy=policies,
    )
)
def test_a_decider_counts_only_as_a_real_active_allowed_human(u: UserFacts) -> None:
    ok = (
        u.user_id is not None
        and u.state == "active"
        and not u.bot
        and u.username != u.policy.bot_username
        and (not u.policy.restricted or u.allowed is True)
    )
    assert (decider_refusal(u) is None) is ok


def test_the_approver_policy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIXLOOP_GITLAB_URL", "https://gitlab.example.com")
    monkeypatch.setenv("FIXLOOP_GITLAB_TOKEN", "glpat-x")
    default = GitLabSettings(_env_file=None)  # type: ignore[call-arg]
    assert (default.approvers, default.approver_group, default.author_approvals_count) == ([], None, False)
    monkeypatch.setenv("FIXLOOP_GITLAB_APPROVERS", " alice, @bob ,,")
    monkeypatch.setenv("FIXLOOP_GITLAB_APPROVER_GROUP", "platform/reviewers")
    monkeypatch.setenv("FIXLOOP_GITLAB_AUTHOR_APPROVALS_COUNT", "true")
    s = GitLabSettings(_env_file=None)  # type: ignore[call-arg]
    assert (s.approvers, s.approver_group, s.author_approvals_count) == (["alice", "bob"], "platform/reviewers", True)
