"""Atlassian Document Format (developer.atlassian.com/cloud/jira/platform/apis/document/structure/) <-> plain
text: API v3 bodies are ADF, v2 bodies plain text; both forms are stored."""

from __future__ import annotations

import re
from typing import Any

from fixloop.sandbox.jira.wire import JiraError


def text_to_adf(text: str) -> dict[str, Any]:
    """Paragraphs (split on blank lines) of text nodes, single newlines as ``hardBreak``."""
    content = []
    for para in (p for p in re.split(r"\n\s*\n", text) if p.strip()):
        nodes: list[dict[str, Any]] = []
        for i, line in enumerate(para.split("\n")):
            if i:
                nodes.append({"type": "hardBreak"})
            if line:
                nodes.append({"type": "text", "text": line})
        content.append({"type": "paragraph", "content": nodes})
    return {"type": "doc", "version": 1, "content": content}


def adf_to_text(node: Any) -> str:
    """The text of an ADF node: blocks separated by blank lines, list items by newlines."""
    if not isinstance(node, dict):
        return ""
    kind, attrs = node.get("type"), node.get("attrs") or {}
    if kind == "text":
        return str(node.get("text", ""))
    if kind == "hardBreak":
        return "\n"
    if kind in ("mention", "emoji", "status"):
        return str(attrs.get("text", ""))
    if kind in ("inlineCard", "blockCard"):
        return str(attrs.get("url", ""))
    children = [adf_to_text(c) for c in node.get("content") or []]
    if kind in ("bulletList", "orderedList"):
        return "\n".join(f"- {c}" for c in children)
    if kind in ("doc", "blockquote", "panel", "listItem", "tableCell", "tableHeader", "expand"):
        return ("\n" if kind == "listItem" else "\n\n").join(c for c in children if c)
    return "".join(children)


def rich_text(value: Any, ver: str, field: str) -> tuple[str, dict[str, Any]] | None:
    """``(text, adf)`` of a description or comment body given in API ``ver``'s form; None for null."""
    if value is None:
        return None
    if ver == "3":
        if not isinstance(value, dict) or value.get("type") != "doc":
            raise JiraError(400, errors={field: "Operation value must be an Atlassian Document (see the Atlassian "
                                                "Document Format)"})
        return adf_to_text(value), value
    if not isinstance(value, str):
        raise JiraError(400, errors={field: "Operation value must be a string"})
    return value, text_to_adf(value)
