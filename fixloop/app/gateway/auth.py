"""Who may deliver: the shared token of the signal and report endpoints, GitLab's secret token, Flux's HMAC.

Each check raises ``Rejected`` (401, naming the header) unless the secret matches. A secret that is not configured
accepts nothing. Secrets are compared in constant time (``hmac.compare_digest``, on SHA-256 digests so the length of
the expected one does not leak) and never logged or echoed; a presented secret longer than ``SECRET_MAX_CHARS`` is
refused without comparing.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request
from pydantic import SecretStr

from fixloop.app.gateway.requests import Rejected
from fixloop.integrations.flux import FluxSettings, verify_signature
from fixloop.integrations.gitlab.webhook import WebhookSettings, verify_token

TOKEN_HEADER = "X-Fixloop-Token"
GITLAB_TOKEN_HEADER = "X-Gitlab-Token"
SIGNATURE_HEADER = "X-Signature"
SECRET_MAX_CHARS = 1_024  # a presented secret longer than this is refused without comparing


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class SharedToken:
    """FIXLOOP_GATEWAY_TOKEN, the shared secret of Datadog, Alertmanager and the scanners (None: refuse all)."""

    def __init__(self, token: SecretStr | None) -> None:
        value = token.get_secret_value() if token else ""
        self._digest = _digest(value) if value else None

    def authorize(self, request: Request) -> None:
        """The shared secret: ``X-Fixloop-Token`` or ``Authorization: Bearer``; 401 unless it matches."""
        presented = request.headers.get(TOKEN_HEADER)
        if presented is None:
            auth = request.headers.get("authorization")
            if auth is not None and auth[:7].lower() == "bearer ":
                presented = auth[7:].strip()
        expected = self._digest
        if expected is None or presented is None or len(presented) > SECRET_MAX_CHARS:
            ok = False
        else:
            ok = hmac.compare_digest(_digest(presented), expected)
        if not ok:
            raise Rejected(401, "unauthorized", f"missing or wrong {TOKEN_HEADER}", TOKEN_HEADER)


def authorize_gitlab(request: Request, webhook: WebhookSettings) -> None:
    """GitLab's ``X-Gitlab-Token`` against FIXLOOP_GITLAB_WEBHOOK_TOKEN (``integrations/gitlab/webhook.py``
    ``verify_token``); 401 unless it matches. Checked before the body is read."""
    if not verify_token(request.headers.get(GITLAB_TOKEN_HEADER), webhook.token):
        raise Rejected(401, "unauthorized", f"missing or wrong {GITLAB_TOKEN_HEADER}", GITLAB_TOKEN_HEADER)


def authorize_flux(request: Request, body: bytes | bytearray, flux: FluxSettings) -> None:
    """Flux's ``X-Signature: <alg>=<hex HMAC of the body>`` keyed with FIXLOOP_FLUX_HMAC_KEY
    (``integrations/flux.py`` ``verify_signature``); 401 unless it matches, or when no key is configured."""
    key = flux.hmac_key
    if (
        key is None
        or not key.get_secret_value()
        or not verify_signature(body, request.headers.get(SIGNATURE_HEADER), key)
    ):
        raise Rejected(401, "unauthorized", f"missing or wrong {SIGNATURE_HEADER}", SIGNATURE_HEADER)
