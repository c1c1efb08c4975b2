"""``GET /browse/:key``: a minimal human view of an issue (the ``url`` fixloop records), for the demo."""

from __future__ import annotations

import html

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from fixloop.sandbox.jira.service import J, Jira
from fixloop.sandbox.jira.wire import STATUSES, WIKI_ESCAPE

router = APIRouter()


def shown(jira: Jira, text: str) -> str:
    """Wiki text as Jira shows it, as far as escapes go (``\\X`` is X): markup is not rendered, so fixloop's
    escaped text reads as the text it escapes, and anything else shows its raw markup."""
    return html.escape(WIKI_ESCAPE.sub(r"\1", text))


@router.get("/browse/{key}", response_class=HTMLResponse)
def browse(key: str, jira: Jira = J) -> str:
    """A minimal human view of an issue (the ``url`` fixloop records), for the demo."""
    with jira.store.lock:
        issue = jira.find(key)
        comments = "".join(f"<li><pre>{shown(jira, c['text'])}</pre></li>" for c in issue["comments"])
        return (f"<html><head><title>{html.escape(issue['key'])}</title></head><body>"
                f"<h1>{html.escape(issue['key'])}: {html.escape(issue['summary'])}</h1>"
                f"<p>Status: {STATUSES[issue['status']][0]} &middot; Labels: "
                f"{html.escape(', '.join(issue['labels']))}</p><pre>{shown(jira, issue['description'] or '')}"
                f"</pre><h2>Comments</h2><ol>{comments}</ol></body></html>")
