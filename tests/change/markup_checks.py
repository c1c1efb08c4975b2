"""Small checkers of rendered markup, for tests: which Jira wiki or Markdown constructs a text would produce.

Jira wiki (jira.atlassian.com "Text Formatting Notation Help"; escapable characters as atlassian-renderer's
``BackslashEscapeRendererComponent``): a backslash before one of ``! [ ] ^ ~ + ? % { } ( ) * _ - | @`` makes it a
literal; any other occurrence of a markup character is reported with the construct it can open. Deliberately
stricter than Jira (e.g. a lone ``[`` is reported as a link although Jira needs the closing ``]``), never laxer.
"""

from __future__ import annotations

import re
import string

JIRA_ESCAPABLE = set("![]^~+?%{}()*_-|@")
_ALWAYS = {
    "[": "link or mention",
    "]": "link or mention",
    "{": "macro or {{monospace}}",
    "}": "macro or {{monospace}}",
    "!": "image",
    "|": "table cell",
    "*": "bold or list",
    "+": "inserted",
    "^": "superscript",
    "~": "subscript or mention",
    "?": "citation",
    "(": "emoticon",
    ")": "emoticon",
    "@": "mention",
    "%": "escapable",
}
_INNER = {"-": "strikethrough, list or rule", "_": "italic"}
_LINE_START = re.compile(r"^\s*(h[1-6]\.|bq\.|#|\*|-|----|\|)", re.IGNORECASE)
_URL = re.compile(r"(?i)([a-z][a-z0-9+.-]*://|\b(mailto|file|news|nntp|irc|callto|tel|sms|skype|data|javascript):(?!\u200b))")


def _word(ch: str) -> bool:
    return ch.isalpha() or ch.isdecimal()  # Java's [\p{L}\p{Nd}]


def jira_constructs(text: str) -> list[str]:
    """The constructs ``text`` would produce as Jira wiki markup: ``"<construct> at <line>:<column>"`` each."""
    found: list[str] = []
    for n, line in enumerate(text.split("\n"), 1):
        if _LINE_START.match(line):
            found.append(f"line-start {line.strip()[:6]!r} at {n}:1")
        for m in _URL.finditer(line):
            found.append(f"bare URL {m.group(0)!r} at {n}:{m.start() + 1}")
        i = 0
        while i < len(line):
            ch = line[i]
            if ch == "\\":
                if i + 1 < len(line) and line[i + 1] in JIRA_ESCAPABLE:
                    i += 2  # an escaped character: a literal
                    continue
                if i + 1 < len(line) and line[i + 1] == "\\":
                    found.append(f"line break at {n}:{i + 1}")
                elif i + 1 == len(line):
                    found.append(f"trailing backslash at {n}:{i + 1}")
            elif ch in _ALWAYS:
                found.append(f"{_ALWAYS[ch]} {ch!r} at {n}:{i + 1}")
            elif ch in _INNER:
                inner = 0 < i < len(line) - 1 and _word(line[i - 1]) and _word(line[i + 1])
                if not inner:
                    found.append(f"{_INNER[ch]} {ch!r} at {n}:{i + 1}")
            i += 1
    return found


_MD_SPECIAL = set("\\`*_[]|~#")
_MD_MENTION = re.compile(r"[@#!][A-Za-z0-9_\[]")
# CommonMark 0.31: raw HTML (6.6) and autolinks (6.5) start with ``<`` and a letter, ``/``, ``!`` or ``?`` (a tag,
# a closing tag, a comment or declaration, a processing instruction, a scheme) or an email's local part; checked
# stricter: any ``<`` not followed by a space, ``-``, ``=`` or the end. A character reference (2.5): ``&`` + ``#``
# or a name and ``;``.
_MD_HTML_START = re.compile(r"<(?![\s=-]|$)")
_MD_REFERENCE = re.compile(r"&(#|[A-Za-z][A-Za-z0-9]*;)")


def markdown_constructs(text: str) -> list[str]:
    """The inline constructs ``text`` would produce as (GitLab Flavored) Markdown in one line: unescaped emphasis,
    code, link or image brackets, table pipes, HTML, autolinks, character references, @mentions and #/!
    references, and a list, quote, rule or heading at its start."""
    found: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in string.punctuation:  # CommonMark: an escape
            i += 2
            continue
        if ch in _MD_SPECIAL:
            found.append(f"markup {ch!r} at {i + 1}")
        elif ch == "<" and _MD_HTML_START.match(text, i):
            found.append(f"HTML or autolink {text[i : i + 4]!r} at {i + 1}")
        elif ch == "&" and _MD_REFERENCE.match(text, i):
            found.append(f"character reference {text[i : i + 6]!r} at {i + 1}")
        i += 1
    if re.match(r"^\s*(\d*[-+=*.)>])", text):
        found.append(f"list, quote, rule or heading at the start {text[:4]!r}")
    found += [f"autolink {m.group(0)!r}" for m in _URL.finditer(text)]
    found += [f"autolink {m.group(0)!r}" for m in re.finditer(r"(?i)\bwww\.", text)]
    found += [f"reference {m.group(0)!r}" for m in _MD_MENTION.finditer(text)]
    return found


def jira_reads(text: str) -> str:
    """What a reader sees of inert Jira wiki text: escapes resolved, zero-width spaces gone, the fullwidth
    backslash read as a backslash."""
    s = re.sub(r"\\([" + re.escape("".join(sorted(JIRA_ESCAPABLE))) + "])", r"\1", text)
    return s.replace("\u200b", "").replace("\uff3c", "\\")
