"""The stand-ins' pages for people (the sandbox GitLab's merge request and commit views, the sandbox Jira's browse
page): Jinja2 templates (``fixloop/sandbox/templates/``) with autoescaping on, so every value is HTML-escaped unless
it is the ``Markup`` this module makes; Markdown rendered by markdown-it-py with no raw HTML passing; and a
Content-Security-Policy that runs only the page's own (nonce'd) script and style.

Markdown (``markdown(text)``): CommonMark (spec.commonmark.org) plus GitLab's tables and strikethrough, by
markdown-it-py. Raw HTML is never emitted: an HTML comment (``<!-- fixloop:{...} -->``, hidden by GitLab too) is
dropped, any other HTML block or inline tag is shown as escaped text. A link or image URL must be relative or
``http``/``https``/``mailto`` (``javascript:``, ``data:``, ``vbscript:``, ``file:``, ... are not links: their Markdown
stays text); links get ``rel="nofollow noreferrer noopener"``. Text is cut at ``MARKDOWN_MAX`` characters (GitLab's
description limit is 1,048,576) with the cut said.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from jinja2 import Environment, PackageLoader, StrictUndefined
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.token import Token
from markupsafe import Markup
from starlette.responses import HTMLResponse

MARKDOWN_MAX = 1_048_576
SCHEMES = frozenset({"http", "https", "mailto"})
CSP = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
_INVISIBLE = re.compile(r"[\x00-\x20\x7f]+")  # what browsers drop from a URL before reading its scheme
_COMMENTS = re.compile(r"\s*(?:<!--(?:(?!-->).)*-->\s*)+", re.S)


def safe_url(url: str) -> bool:
    """Whether ``url`` may be a link or image target: relative, or of a scheme in ``SCHEMES``; read as strictly as
    a browser could (percent-escapes decoded, whitespace and controls dropped, case folded)."""
    found = _SCHEME.match(_INVISIBLE.sub("", unquote(url)).lower())
    return found is None or found[1] in SCHEMES


def _raw_html(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    content = tokens[idx].content
    if _COMMENTS.fullmatch(content):
        return ""
    shown = escapeHtml(content)
    return f'<pre class="raw-html">{shown}</pre>\n' if tokens[idx].type == "html_block" else shown


def _link_open(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    tokens[idx].attrSet("rel", "nofollow noreferrer noopener")
    return self.renderToken(tokens, idx, options, env)


def _table_cell(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    align = str(token.attrGet("style") or "").removeprefix("text-align:")
    if token.attrs.pop("style", None) is not None and align in ("left", "center", "right"):
        token.attrSet("class", f"align-{align}")  # no inline style: the policy allows only the page's stylesheet
    return self.renderToken(tokens, idx, options, env)


def _markdown_it() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.validateLink = safe_url  # type: ignore[method-assign]
    for rule in ("html_block", "html_inline"):
        md.add_render_rule(rule, _raw_html)
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("th_open", _table_cell)
    md.add_render_rule("td_open", _table_cell)
    return md


_MD = _markdown_it()


def markdown(text: str | None) -> Markup:
    """``text`` (GitLab Flavored Markdown, as far as CommonMark, tables and strikethrough go) as safe HTML."""
    text = text or ""
    cut = len(text) - MARKDOWN_MAX
    html = _MD.render(text[:MARKDOWN_MAX])
    if cut > 0:
        html += f'<p class="cut">({cut} more characters not shown)</p>\n'
    return Markup(html)  # noqa: S704 - raw HTML escaped or dropped above, URLs checked by safe_url


_ENV = Environment(
    loader=PackageLoader("fixloop.sandbox", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["markdown"] = markdown


def page(template: str, status_code: int = 200, /, **context: Any) -> HTMLResponse:
    """``templates/<template>`` rendered with ``context`` (every value escaped unless it is ``Markup``) and a fresh
    ``nonce`` for its inline script and style, answered with ``status_code`` and the ``CSP`` policy of that
    nonce."""
    nonce = secrets.token_urlsafe(18)
    body = _ENV.get_template(template).render(nonce=nonce, **context)
    headers = {
        "Content-Security-Policy": CSP.format(nonce=nonce),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
    return HTMLResponse(body, status_code=status_code, headers=headers)
