"""Untrusted text made inert for where it lands: one helper per target.

- ``markdown``: GitLab Flavored Markdown (merge request descriptions and notes) and the Temporal UI (workflow
  ``static_summary`` / ``static_details``, ``set_current_details``, activity ``summary``), which renders Markdown;
  ``markdown_link`` a link there to a URL fixloop read from GitLab or Jira (only a plain http(s) URL links).
- ``jira_text``: Jira wiki markup (REST API v2 descriptions and comment bodies), the only way text enters Jira
  (``fixloop.activities.work_item`` passes every summary, description and comment through ``jira_summary`` /
  ``jira_text``).
- ``jira_summary``: Jira's ``summary`` field, plain text: one line, at most 255 characters.

Every helper bounds the text (``fixloop.core.parsing.clean``: control characters folded, cut with an ellipsis) and
defangs bare URLs (a zero-width space after the scheme's colon, so neither GitLab nor Jira autolinks them).

Jira wiki markup (jira.atlassian.com "Text Formatting Notation Help"; the renderer's escapable characters are those
of atlassian-renderer's ``BackslashEscapeRendererComponent``: ``! [ ] ^ ~ + ? % { } ( ) * _ - | @``): links
``[text|url]``, mentions ``[~user]``, macros ``{code}`` ``{noformat}`` ``{html}`` ``{color}``, images ``!x.png!``,
phrases ``*bold*`` ``_italic_`` ``-strike-`` ``+ins+`` ``^sup^`` ``~sub~`` ``??cite??`` ``{{mono}}``, tables ``|``
``||``, emoticons ``(y)`` ``(!)``, line breaks ``\\\\``, and at the start of a line headings ``h1.``-``h6.``,
``bq.``, lists ``#`` ``*`` ``-`` and rules ``----``. ``jira_text`` backslash-escapes every escapable character
(``-`` and ``_`` between two letters or digits, as in ``CVE-2024-1234`` or ``typing_extensions``, open or close
nothing and are kept), replaces ``\\`` (not escapable: ``\\\\`` is a line break) by a fullwidth ``\uff3c``,
and breaks ``#``, ``hN.`` and ``bq.`` at a line start with a zero-width space.
"""

from __future__ import annotations

import re

from fixloop.core.parsing import clean

INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")  # zero-width and bidi controls
ZWSP = "\u200b"
JIRA_SUMMARY_MAX = 255  # Jira's limit on the summary field
JIRA_LINE_MAX = 2_000  # characters of one line of a Jira text
JIRA_LINES_MAX = 400  # lines of one Jira text (a comment, a description); the rest is counted
JIRA_TEXT_MAX = 32_000  # characters of a Jira text (Jira Cloud refuses comments over 32,767)

_URL_SCHEMES = re.compile(r"(?i)\b(mailto|file|news|nntp|irc|callto|tel|sms|skype|data|javascript):")


def defang_urls(s: str) -> str:
    """Break every ``scheme://`` and the colon of schemes that autolink without slashes (``mailto:``, ``file:``,
    ...) with a zero-width space: the text reads the same, no renderer makes it a link."""
    return _URL_SCHEMES.sub("\\1:" + ZWSP, s.replace("://", ":" + ZWSP + "//"))


# ---------------------------------------------------------------- Markdown (GitLab, the Temporal UI)

_MD_PUNCT = re.compile(r"([\\`*_\[\]|~#])")  # inline markup: emphasis, code, links, images, tables, headings
# What makes HTML, an autolink or an entity (CommonMark 0.31 sections 6.5 autolinks, 6.6 raw HTML, 2.5 entity and
# numeric character references): a ``<`` followed by anything but a space, ``-`` or ``=`` (``a -> b``, ``p < 0.01``,
# ``<=`` and ``<-`` open nothing and stay as written; a ``<`` ending the text is escaped, as a caller may join
# values), and an ``&`` starting a reference (``&lt;``, ``&#60;``).
_MD_HTML = re.compile(r"<(?![\s=-])|&(?=#|[A-Za-z][A-Za-z0-9]{0,31};)")
_MD_LEADING = re.compile(r"^(\d*)([-+=.)>])")  # "- x", "+ x", "===", "1. x", "1) x", "> x" at the start


def markdown(value: object, limit: int = 300) -> str:
    """Untrusted free text as inert Markdown: one line, at most ``limit`` characters before escaping, inline
    Markdown punctuation (emphasis, code, links, images, tables) and every ``<`` or ``&`` that could open HTML, an
    autolink or a character reference backslash-escaped (CommonMark's escapes: the raw text reads as written, with
    no ``&lt;`` entities; ``a -> b`` stays ``a -> b``), URLs defanged, @mentions and #/! references (GitLab's issues
    and merge requests) broken with a zero-width space, and a list, quote, rule or setext marker at its start
    escaped (so the text may start a line, as a Temporal UI summary does)."""
    s = clean(value, limit)
    s = _MD_PUNCT.sub(r"\\\1", s)
    s = _MD_HTML.sub(lambda m: "\\" + m.group(0), s)
    s = _MD_LEADING.sub(r"\1\\\2", s)  # a list item, rule or setext underline if the text starts a line
    s = re.sub(r"(?i)\bwww\.", "www" + ZWSP + ".", s)  # GitLab autolinks www. too
    return defang_urls(re.sub(r"([@#!])", "\\1" + ZWSP, s))


_LINKABLE = re.compile(r"^https?://[^\s<>()\[\]`\"'\\]{1,2000}$")


def markdown_link(shown: str, url: str) -> str:
    """A Markdown link ``[shown](url)``: ``shown`` is Markdown already (escape untrusted text with ``markdown``
    first); ``url`` links only when it is an http(s) URL of at most 2,000 characters without whitespace, brackets,
    parentheses, quotes, backticks, backslashes or angle brackets (nothing can close the link or add a title),
    else it is shown as escaped text after ``shown`` (nothing for an empty URL)."""
    if not url:
        return shown
    if _LINKABLE.match(url):
        return f"[{shown}]({url})"
    return f"{shown} ({markdown(url, 300)})"


# ---------------------------------------------------------------- Jira wiki markup

_JIRA_ALWAYS = "[]{}|!()%@*+^~?"  # links, mentions, macros, images, tables, emoticons, phrases: always escaped
_JIRA_INNER = "-_"  # strike, italic, list and rule markers: escaped unless between two letters or digits
_JIRA_LINE_START = re.compile(r"^(\s*)(?:(#)|([hH])([1-6]\.)|([bB])([qQ]\.))")


def _word(ch: str) -> bool:
    """A letter or a decimal digit (the renderer's ``[\\p{L}\\p{Nd}]``, which phrase delimiters may not touch)."""
    return ch.isalpha() or ch.isdecimal()


def _jira_line(line: str) -> str:
    line = line.replace("\\", "\uff3c")
    out: list[str] = []
    n = len(line)
    for i, ch in enumerate(line):
        if ch in _JIRA_ALWAYS:
            out.append("\\" + ch)
        elif ch in _JIRA_INNER:
            inner = 0 < i < n - 1 and _word(line[i - 1]) and _word(line[i + 1])
            out.append(ch if inner else "\\" + ch)
        else:
            out.append(ch)
    s = "".join(out)
    m = _JIRA_LINE_START.match(s)
    if m:
        if m.group(2):
            s = f"{m.group(1)}{ZWSP}{s[m.end(1) :]}"
        else:
            letter, rest = (m.group(3), m.group(4)) if m.group(3) else (m.group(5), m.group(6))
            s = f"{m.group(1)}{letter}{ZWSP}{rest}{s[m.end() :]}"
    return defang_urls(s)


def jira_text(value: object, limit: int = JIRA_TEXT_MAX, lines_max: int = JIRA_LINES_MAX) -> str:
    """Plain text (untrusted, or fixloop's own) as inert Jira wiki markup for an API v2 description or comment
    body: nothing in it becomes a link, mention, macro, image, table, phrase, heading, list, quote or line break
    (see the module docstring for the rules). Lines are kept (``\\n``; ``\\r\\n`` and ``\\r`` become ``\\n``); each
    line is ``clean``-ed to ``JIRA_LINE_MAX`` characters, at most ``lines_max`` lines are kept (then a line says how
    many were left out) and the result is at most ``limit`` characters (cut at a line end)."""
    s = value if isinstance(value, str) else str(value)
    lines = s.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    size = 0
    for line in lines[: max(lines_max, 0)]:
        escaped = _jira_line(clean(line, JIRA_LINE_MAX))
        if size + len(escaped) + 1 > limit - 60:
            break
        kept.append(escaped)
        size += len(escaped) + 1
    out = "\n".join(kept).strip("\n")
    if len(kept) < len(lines):
        out += f"\n\u2026 {len(lines) - len(kept)} more line(s) not shown"
    return out


def jira_summary(value: object, limit: int = JIRA_SUMMARY_MAX) -> str:
    """Untrusted text as a Jira ``summary`` (plain text, never rendered as markup): one line, whitespace runs
    folded to one space, zero-width and bidi controls removed, at most ``limit`` characters (255, Jira's limit);
    ``(untitled)`` when nothing is left."""
    s = " ".join(INVISIBLE.sub("", clean(value, 4 * limit)).split())
    return clean(s, limit) or "(untitled)"
