"""``fixloop.core.markup``: whatever an alert or a scanner says, the Jira wiki text and the Markdown fixloop writes
carry no link, mention, macro, image, table, heading, list or autolink made from it (a small checker of the
constructs, ``markup_checks``), and still read as the text."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fixloop.core.markup import JIRA_SUMMARY_MAX, jira_summary, jira_text, markdown
from tests.change.markup_checks import jira_constructs, markdown_constructs

ATTACK = "[evil|http://x] [~admin] {html}<b>x</b>{html} !http://x/a.png! {{mono}} *b* _i_ -s- ??c?? |a|b|"
LINE_STARTS = ["h1. Heading", "bq. quote", "# one", "* bullet", "- dash", "----", "|| head ||", "  h6. x"]
WIKI_CHARS = st.sampled_from(list("[]{}|!()*_-+^~?#@%\\:/.hbq1 \n\t") + ["http://", "mailto:", "\r\n", "{code}"])
WIKI_TEXT = st.one_of(st.text(), st.lists(WIKI_CHARS, max_size=60).map("".join))


def test_the_checker_sees_what_jira_would_render() -> None:
    """The checker is not vacuous: the attacker's text, each line-start construct and a bare URL are found."""
    assert len(jira_constructs(ATTACK)) > 10
    for line in LINE_STARTS:
        assert jira_constructs(line), line
    assert jira_constructs("see https://evil.example/x") and jira_constructs("mail mailto:a@b.c")
    assert jira_constructs("a\\\\b")  # a forced line break
    assert markdown_constructs("[x](http://y)") and markdown_constructs("![](http://y/i.png)")
    assert markdown_constructs("- item") and markdown_constructs("1. item") and markdown_constructs("see www.x.io")
    for html in ("<b>x</b>", "a <img src=x>", "</p>", "<!-- c -->", "<?php", "<https://x.example>", "<a@b.c>"):
        assert markdown_constructs(html), html
    assert markdown_constructs("&lt;b&gt;") and markdown_constructs("&#60;") and markdown_constructs("> quote")


def test_the_attack_arrives_inert_and_readable() -> None:
    out = jira_text(ATTACK + "\n" + "\n".join(LINE_STARTS))
    assert jira_constructs(out) == []
    assert out.splitlines()[0].startswith("\\[evil\\|http:\u200b//x\\] \\[\\~admin\\] \\{html\\}")
    assert "CVE-2024-1234 typing_extensions" in jira_text("CVE-2024-1234 typing_extensions")  # identifiers kept


@settings(max_examples=400)
@given(WIKI_TEXT)
@example("[~admin]")
@example("h1. x\nbq. y\n# z")
@example("\\\\[evil|http://x]")
@example("a\\")
@example("\u00bd-evil-\u00bd a_b_c")
def test_no_jira_construct_is_made_from_any_text(s: str) -> None:
    out = jira_text(s)
    assert jira_constructs(out) == [], (s, out)
    assert len(out) <= 32_000


@settings(max_examples=200)
@given(WIKI_TEXT, WIKI_TEXT)
def test_no_jira_construct_from_untrusted_parts_of_a_template(title: str, service: str) -> None:
    """How the workflow writes comments: its own sentence around untrusted parts, all of it escaped once."""
    out = jira_text(f"1 alert(s) on {service} joined this work item:\n- {title} (datadog)")
    assert jira_constructs(out) == [], out


@settings(max_examples=200)
@given(WIKI_TEXT)
def test_a_jira_summary_is_one_bounded_line(s: str) -> None:
    out = jira_summary(s)
    assert "\n" not in out and "\r" not in out and 0 < len(out) <= JIRA_SUMMARY_MAX


def test_markdown_reads_as_written_without_entities() -> None:
    """Arrows, comparisons and ampersands stay as written in the raw text (GitLab shows the raw Markdown in the
    editor, the API and notifications): no ``&gt;`` entity anywhere, and hostile HTML still opens nothing."""
    assert markdown("Werkzeug 0.11 -> 0.15.3, p < 0.01, a <= b, x >= y, R&D") == (
        "Werkzeug 0.11 -> 0.15.3, p < 0.01, a <= b, x >= y, R&D"
    )
    assert markdown("<script>alert(1)</script> &lt;b&gt;") == "\\<script>alert(1)\\</script> \\&lt;b\\&gt;"
    assert markdown("> quoted") == "\\> quoted"
    for hostile in ("<img src=x onerror=alert(1)>", "<a href='javascript:alert(1)'>x</a>", "&#60;b>", "> q"):
        assert markdown_constructs(markdown(hostile)) == [], hostile


@settings(max_examples=300)
@given(st.one_of(st.text(), st.lists(st.sampled_from(list("[]()!<>`*_~|#@&;\\:/-+=.1 ") + ["http://", "www."]),
                                        max_size=40).map("".join)))
@example("[x](http://y)")
@example("![](http://y/i.png)")
@example("<img src=x onerror=alert(1)>")
@example("- [ ] 1. see www.evil.example")
def test_no_markdown_construct_is_made_from_any_text(s: str) -> None:
    out = markdown(s, 200)
    assert markdown_constructs(out) == [], (s, out)
    assert "\n" not in out
