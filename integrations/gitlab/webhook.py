"""GitLab merge request webhooks: a "Merge Request Hook" delivery -> ``MergeRequestHook``, and the secret token check.

Format (GitLab docs, "Webhook events", section "Merge request events", docs.gitlab.com/user/project/integrations/
webhook_events/#merge-request-events): headers ``X-Gitlab-Event: Merge Request Hook`` (``System Hook`` for the same
body sent by a system hook) and ``X-Gitlab-Token: <the webhook's secret token>``; the JSON body is ``{object_kind
"merge_request", event_type "merge_request", user{id, name, username, ...} (who did the action), project{id,
path_with_namespace, web_url, ...}, object_attributes{id, iid, state opened|closed|merged|locked, action, source_branch,
target_branch, title, url, last_commit{id, message, timestamp, ...} (the source branch head), merge_commit_sha,
oldrev, detailed_merge_status, draft, ...}, labels[{title, ...}], changes{...}, ...}``.

``object_attributes.action`` is one of ``open``, ``close``, ``reopen``, ``update``, ``approved`` (the merge request
became approved), ``approval`` (one approval that did not complete the required ones), ``unapproved``, ``unapproval``
and ``merge``; ``oldrev`` (the previous head) is present only on an ``update`` that pushed commits. GitLab sends
``user`` as the user who approved for ``approval``/``approved``, and the approval is for ``last_commit.id``: with
"Reset approvals on push" (the default) a push removes approvals, so an approval hook's head is the SHA approved.

Everything in a delivery is untrusted: the body is bounded (``MAX_HOOK_BYTES``, checked by the caller while it
reads the body) and decoded once by the caller (the gateway: ``fixloop.app.ingest.decode``, orjson with the shared
nesting limit), so ``parse_merge_request_hook`` validates the decoded document, never bytes; identifiers are
validated (a username, a project path, SHAs, the iid) and refused with ``MergeRequestHookError`` naming the field
when they do not fit; display text (title, URL) is folded and cut. Fields fixloop does not read are ignored. This
module does no I/O.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, StringConstraints, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fixloop.core.parsing import ParseError, clean

EVENT_HEADER = "X-Gitlab-Event"
TOKEN_HEADER = "X-Gitlab-Token"
EVENTS = ("Merge Request Hook", "System Hook")  # X-Gitlab-Event values that carry a merge request event
MAX_HOOK_BYTES = 4 << 20  # a description may hold 1,000,000 characters, twice in ``changes`` on an edit
MAX_TOKEN_CHARS = 1_024
MAX_LABELS = 100  # label titles kept
APPROVAL_ACTIONS = frozenset({"approval", "approved"})
UNAPPROVAL_ACTIONS = frozenset({"unapproval", "unapproved"})

Sha = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9a-f]{40}([0-9a-f]{24})?$"),
    BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v),
]  # SHA-1, or SHA-256 for repositories in that object format
Username = Annotated[str, StringConstraints(max_length=255, pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.\-]*$")]
_SEGMENT = r"[A-Za-z0-9_.][A-Za-z0-9_.\-]*"
ProjectPath = Annotated[str, StringConstraints(max_length=1_000, pattern=rf"^{_SEGMENT}(/{_SEGMENT})+$")]
Word = Annotated[str, StringConstraints(max_length=40, pattern=r"^[a-z_]+$")]
Branch = Annotated[str, StringConstraints(min_length=1, max_length=1_000, pattern=r"^[^\x00-\x20\x7f~^:?*\[\\]+$")]


def _text(limit: int) -> BeforeValidator:
    return BeforeValidator(lambda v: None if v is None else clean(v, limit))


class MergeRequestHookError(ParseError):
    """The body is not a merge request event fixloop can use; ``str(e)`` names the field (no body content)."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class HookUser(_Wire):
    id: int | None = None
    username: Username
    name: Annotated[str | None, _text(255)] = None


class HookProject(_Wire):
    id: int
    path_with_namespace: ProjectPath
    web_url: Annotated[str | None, _text(2_000)] = None


class HookCommit(_Wire):
    id: Sha
    timestamp: Annotated[str | None, _text(40)] = None


class HookLabel(_Wire):
    title: Annotated[str, _text(255)]


class MergeRequestAttributes(_Wire):
    id: int
    iid: int = Field(ge=1)
    state: Word
    action: Word | None = None
    source_branch: Branch
    target_branch: Branch
    title: Annotated[str, _text(255)] = ""
    url: Annotated[str | None, _text(2_000)] = None
    last_commit: HookCommit | None = None
    merge_commit_sha: Sha | None = None
    oldrev: Sha | None = None
    detailed_merge_status: Word | None = None
    draft: bool | None = None


class HookApproval(BaseModel):
    """An approval from a hook: who (GitLab username), for which head SHA, and whether by fixloop's own bot user.
    The fields of ``fixloop.core.gate.Approval`` (``Approval(**hook_approval.model_dump())``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: str
    sha: str
    bot: bool = False


class MergeRequestHook(_Wire):
    """A merge request event (see the module docstring); ``labels`` are the titles of the merge request's labels."""

    object_kind: Literal["merge_request"]
    event_type: Word | None = None
    user: HookUser
    project: HookProject
    object_attributes: MergeRequestAttributes
    labels: Annotated[list[str], BeforeValidator(lambda v: _label_titles(v))] = []

    @property
    def action(self) -> str | None:
        return self.object_attributes.action

    @property
    def iid(self) -> int:
        return self.object_attributes.iid

    @property
    def project_path(self) -> str:
        return self.project.path_with_namespace

    @property
    def state(self) -> str:
        return self.object_attributes.state

    @property
    def head_sha(self) -> str | None:
        """The source branch head the event saw (``last_commit.id``)."""
        c = self.object_attributes.last_commit
        return c.id if c else None

    @property
    def merge_sha(self) -> str | None:
        """``merge_commit_sha``: None until merged; on ``merge``, the commit the target branch got (the merge commit;
        with a fast-forward merge method it may be null: read the merge request then)."""
        return self.object_attributes.merge_commit_sha

    @property
    def pushed(self) -> bool:
        """An ``update`` that moved the head (``oldrev`` present): approvals given before are void."""
        return self.action == "update" and self.object_attributes.oldrev is not None

    @property
    def merged(self) -> bool:
        return self.action == "merge"

    @property
    def closed(self) -> bool:
        return self.action == "close"

    def by_bot(self, bot_username: str) -> bool:
        """Whether ``user`` is ``bot_username`` (GitLab usernames are unique regardless of case)."""
        return self.user.username.casefold() == bot_username.casefold()

    def approval(self, bot_username: str) -> HookApproval | None:
        """For ``approval``/``approved``: who approved and the head SHA they approved (``last_commit.id``), ``bot``
        when that is ``bot_username``; None for every other action. ``MergeRequestHookError`` for an approval without
        ``last_commit`` (it cannot be bound to a commit)."""
        if self.action not in APPROVAL_ACTIONS:
            return None
        if self.head_sha is None:
            raise MergeRequestHookError("object_attributes.last_commit: missing on an approval event")
        return HookApproval(by=self.user.username, sha=self.head_sha, bot=self.by_bot(bot_username))


def _label_titles(value: Any) -> Any:
    """The titles of a ``labels`` list (its first ``MAX_LABELS``, folded and cut)."""
    if not isinstance(value, list):
        return value
    return [clean(v.get("title", ""), 255) if isinstance(v, dict) else v for v in value[:MAX_LABELS]]


def parse_merge_request_hook(doc: object, event: str | None = None) -> MergeRequestHook:
    """The ``MergeRequestHook`` of a delivery's decoded JSON body (``dict``: the caller decoded it once, with its
    size and nesting limits; this does no JSON parsing). ``event`` is the ``X-Gitlab-Event`` header when the caller
    has it (must be one of ``EVENTS``). ``MergeRequestHookError`` (a ``ValueError``) when the document is not an
    object, not a merge request event, or a field fixloop reads is missing or out of bounds; the message names the
    field(s), never their values."""
    if event is not None and event.strip() not in EVENTS:
        raise MergeRequestHookError(f"{EVENT_HEADER}: {clean(event, 60)!r} is not a merge request event")
    if not isinstance(doc, dict):
        raise MergeRequestHookError("body: not a JSON object")
    kind = doc.get("object_kind")
    if kind != "merge_request":
        shown = clean(kind, 40) if isinstance(kind, str) else type(kind).__name__
        raise MergeRequestHookError(f"object_kind: {shown!r} is not 'merge_request'")
    try:
        return MergeRequestHook.model_validate(doc)
    except ValidationError as e:
        fields = sorted({".".join(str(p) for p in err["loc"]) for err in e.errors()})
        more = f" (+{len(fields) - 5} more)" if len(fields) > 5 else ""
        raise MergeRequestHookError(f"invalid or missing: {', '.join(fields[:5])}{more}") from None


def verify_token(header_value: str | None, secret: SecretStr | str | None) -> bool:
    """Whether ``X-Gitlab-Token`` equals the webhook's secret token (constant-time compare). False without a
    header, without a secret (an unconfigured secret never accepts), or for a header over ``MAX_TOKEN_CHARS``."""
    raw = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if not raw or header_value is None or len(header_value) > MAX_TOKEN_CHARS:
        return False
    return hmac.compare_digest(header_value.encode(), raw.encode())


class WebhookSettings(BaseSettings):
    """``FIXLOOP_GITLAB_WEBHOOK_TOKEN``: the secret token configured on the GitLab webhook (what ``X-Gitlab-Token``
    must carry)."""

    model_config = SettingsConfigDict(env_prefix="FIXLOOP_GITLAB_WEBHOOK_", env_file=".env", extra="ignore")

    token: SecretStr | None = Field(
        default=None, description="Secret token of the GitLab merge request webhook (unset: hooks are refused)."
    )
