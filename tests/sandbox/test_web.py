"""The stand-ins' pages for people, over real HTTP: the sandbox GitLab's merge request list, merge request and commit
pages at the ``web_url``s its API returns, and the sandbox Jira's browse page: 200s, what each shows (the diff from
the repository, approvals with who and which SHA, the merge commit, notes), hostile text escaped (``<script>``,
``javascript:`` links, event handler attributes) and the Markdown renderer's output bounded to safe HTML for any
input (hypothesis)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import gitlab
import httpx
import jira
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixloop.sandbox.pages import MARKDOWN_MAX, markdown
from tests.sandbox.conftest import Running

PROJECT = "platform/gitops"
FILE = "apps/staging/kustomization.yaml"
HOSTILE_TITLE = '<script>alert("title")</script> Bump "catalog" & <img src=x onerror=alert(1)>'
HOSTILE_MARKDOWN = (
    "Fixes **CVE-2024-0001** in `catalog`.\n\n"
    "<script>alert('description')</script>\n\n"
    "[click](javascript:alert(1)) [case](JaVaScRiPt:alert(2)) [tab](<java\tscript:alert(3)>) "
    "[vb](vbscript:msgbox) [data](data:text/html;base64,PHNjcmlwdD4=) <javascript:alert(4)>\n\n"
    '<a href="javascript:alert(5)" onclick="alert(6)">raw link</a> <img src=x onerror=alert(7)>\n\n'
    "![pixel](data:image/png;base64,iVBORw0KGgo=) [ok](https://example.com/advisory?a=1&b=2)\n\n"
    "| package | from | to |\n|:--|:-:|--:|\n| alpine | 3.9.4 | 3.9.6 |\n\n"
    '<!-- fixloop:{"work_item": "wi-1"} -->\n'
)
# what a rendered page may contain: markdown-it's tags and the page's own
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "main", "section", "article", "nav", "div", "span",
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "em", "strong", "s", "a", "img", "code", "pre", "blockquote", "ul", "ol",
    "li", "hr", "br", "table", "thead", "tbody", "tr", "th", "td", "form", "label", "input", "button", "script",
}
URL_ATTRS = {"href", "src", "action", "formaction", "data", "srcset", "poster", "background"}


class Tags(HTMLParser):
    """Every start tag of a document with its attributes (values unescaped, as a browser reads them), and the text
    of each ``<script>``."""

    def __init__(self, doc: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False
        self.feed(doc)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def scheme(url: str) -> str | None:
    """The scheme a browser reads from ``url`` (it drops ASCII whitespace and controls first), or None."""
    found = re.match(r"([a-z][a-z0-9+.\-]*):", re.sub(r"[\x00-\x20\x7f]", "", url).lower())
    return found[1] if found else None


def assert_safe(doc: str, scripts_allowed: int = 1) -> Tags:
    """No tag but the allowed ones, no event handler attribute, no URL of a dangerous scheme, and at most
    ``scripts_allowed`` scripts (the page's own, nonce'd)."""
    found = Tags(doc)
    for tag, attrs in found.tags:
        assert tag in ALLOWED_TAGS, (tag, attrs)
        for name, value in attrs.items():
            assert not name.startswith("on") and name != "style", (tag, name, value)
            if name in URL_ATTRS:
                assert scheme(value or "") in (None, "http", "https", "mailto"), (tag, name, value)
    assert len(found.scripts) <= scripts_allowed, found.scripts
    return found


def api(run: Running, who: str = "bot") -> gitlab.Gitlab:
    token = getattr(run.sb.credentials, f"gitlab_{who}_token").get_secret_value()
    return gitlab.Gitlab(url=run.service("/gitlab"), private_token=token, timeout=10)


def open_mr(project: Any, branch: str, title: str, description: str, line: str = "# fixloop\n") -> Any:
    text = project.files.raw(file_path=FILE, ref="main").decode()
    project.commits.create({
        "branch": branch, "start_branch": "main", "commit_message": f"Edit {FILE} <b>bold</b>",
        "actions": [{"action": "update", "file_path": FILE, "content": text + line}],
    })
    return project.mergerequests.create(
        {"source_branch": branch, "target_branch": "main", "title": title, "description": description,
         "labels": "fixloop,<b>label</b>"}
    )


@pytest.fixture
def run(start_sandbox: Callable[..., Running]) -> Running:
    return start_sandbox("/gitlab", "/jira")


def get(url: str, status: int = 200) -> str:
    r = httpx.get(url, timeout=10)
    assert r.status_code == status, (url, r.status_code, r.text[-500:])
    assert r.headers["content-type"].startswith("text/html")
    return r.text


def test_merge_request_page_shows_diff_description_approvals_merge_and_notes(run: Running) -> None:
    bot = api(run).projects.get(PROJECT)
    mr = open_mr(bot, "fixloop/bump", "Bump catalog to 1.4.3", HOSTILE_MARKDOWN, "# bumped by fixloop\n")
    mr.notes.create({"body": "fixloop proposed this change: **1 file**"})
    assert mr.web_url == run.service(f"/gitlab/{PROJECT}/-/merge_requests/{mr.iid}")

    r = httpx.get(mr.web_url, timeout=10)
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    (nonce,) = re.findall(r"script-src 'nonce-([^']+)'", csp)
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    doc = r.text
    found = assert_safe(doc)
    (script,) = [attrs for tag, attrs in found.tags if tag == "script"]
    assert script == {"nonce": nonce}
    assert ">Bump catalog to 1.4.3</h1>" in doc and 'class="badge state-opened">Open<' in doc
    assert "<strong>CVE-2024-0001</strong>" in doc and "<code>catalog</code>" in doc  # Markdown rendered
    assert '<a href="https://example.com/advisory?a=1&amp;b=2" rel="nofollow noreferrer noopener">ok</a>' in doc
    assert '<th class="align-left">package</th>' in doc and '<td class="align-right">3.9.6</td>' in doc
    assert "fixloop:{" not in doc  # the HTML comment is hidden, as GitLab hides it
    assert "&lt;script&gt;alert('description')&lt;/script&gt;" in doc  # raw HTML shown as text
    assert "[click](javascript:alert(1))" in doc  # not a link
    assert "&lt;b&gt;label&lt;/b&gt;" in doc and "Edit apps/staging/kustomization.yaml &lt;b&gt;bold&lt;/b&gt;" in doc
    # the diff of the repository's change, with line numbers
    assert f'data-path="{FILE}"' in doc and "<td>+# bumped by fixloop</td>" in doc
    assert re.search(r'<tr class="add"><td class="n"></td><td class="n">\d+</td><td>\+# bumped by fixloop', doc)
    assert "Requires 1 more approval of the current head." in doc and "No approvals yet." in doc
    assert "<strong>1 file</strong>" in doc
    assert f'data-sha="{mr.sha}"' in doc and 'data-api="/gitlab/api/v4"' in doc and 'data-project="1"' in doc
    assert str(run.sb.config.state_dir / "credentials.json") in doc
    assert run.sb.credentials.gitlab_reviewer_token.get_secret_value() not in doc  # the path, never a token

    reviewer = api(run, "reviewer").projects.get(PROJECT, lazy=True).mergerequests.get(mr.iid)
    head = reviewer.sha
    reviewer.approve(sha=head)
    doc = get(mr.web_url)
    approved = f'Approved by Riley Reviewer <span class="meta">@reviewer</span> at <code class="sha">{head}</code>'
    assert approved in doc
    assert "(the current head)" in doc and "Ready to merge." in doc

    reviewer = api(run, "reviewer").projects.get(PROJECT, lazy=True).mergerequests.get(mr.iid)
    reviewer.merge(sha=head)
    merge_sha = reviewer.merge_commit_sha
    doc = get(mr.web_url)
    assert 'class="badge state-merged">Merged<' in doc and 'id="review"' not in doc and "<script" not in doc
    assert f'id="merge-commit" href="{run.service(f"/gitlab/{PROJECT}/-/commit/")}{merge_sha}">{merge_sha}</a>' in doc
    assert "Merged by Riley Reviewer" in doc and "<td>+# bumped by fixloop</td>" in doc  # the merged diff stays

    commit = get(run.service(f"/gitlab/{PROJECT}/-/commit/{merge_sha}"))
    assert_safe(commit, scripts_allowed=0)
    assert f'id="sha">{merge_sha}<' in commit and "Merge branch &#39;fixloop/bump&#39; into &#39;main&#39;" in commit
    assert "<td>+# bumped by fixloop</td>" in commit  # against the first parent


def test_every_web_url_the_api_returns_answers(run: Running) -> None:
    bot = api(run).projects.get(PROJECT)
    first = open_mr(bot, "one", "One", "")
    second = open_mr(bot, "two", "Two", "", "# two\n")
    closing = bot.mergerequests.get(second.iid)
    closing.state_event = "close"
    closing.save()
    urls = [m.web_url for m in bot.mergerequests.list(state="all", get_all=True)]
    assert sorted(urls) == sorted([first.web_url, second.web_url])
    urls += [c.web_url for c in bot.commits.list(ref_name="one", get_all=False, per_page=5)]
    for url in urls:
        assert_safe(get(url))
    closed = get(second.web_url)
    assert 'class="badge state-closed">Closed<' in closed and "Closed by fixloop bot" in closed
    assert "<td>+# two</td>" in closed  # a closed MR still shows its diff

    listing = get(run.service(f"/gitlab/{PROJECT}/-/merge_requests"))  # GitLab's default tab: open
    assert f'href="{first.web_url}">One</a>' in listing and ">Two</a>" not in listing
    assert ">Open 1</a>" in listing and ">Closed 1</a>" in listing and ">All 2</a>" in listing
    everything = get(run.service(f"/gitlab/{PROJECT}/-/merge_requests?state=all"))
    assert f'href="{second.web_url}">Two</a>' in everything
    # the git route behind the pages still serves clones
    refs = httpx.get(run.service(f"/gitlab/{PROJECT}.git/info/refs"), params={"service": "git-upload-pack"})
    assert refs.status_code == 200 and b"refs/heads/main" in refs.content


def test_hostile_title_labels_and_notes_are_escaped_everywhere(run: Running) -> None:
    bot = api(run).projects.get(PROJECT)
    mr = open_mr(bot, "evil", HOSTILE_TITLE, HOSTILE_MARKDOWN)
    mr.notes.create({"body": HOSTILE_MARKDOWN})
    for url in (mr.web_url, run.service(f"/gitlab/{PROJECT}/-/merge_requests")):
        doc = get(url)
        found = assert_safe(doc)
        assert html.escape(HOSTILE_TITLE, quote=False) in doc.replace("&#34;", '"').replace("&#39;", "'")
        assert all("alert(" not in s for s in found.scripts)
        assert not [a for _, attrs in found.tags for a in attrs.values() if a and "alert(" in a]


def test_a_push_after_approval_resets_it_on_the_page(run: Running) -> None:
    bot = api(run).projects.get(PROJECT)
    mr = open_mr(bot, "moving", "Moving", "")
    reviewer = api(run, "reviewer").projects.get(PROJECT, lazy=True).mergerequests.get(mr.iid)
    old = reviewer.sha
    reviewer.approve(sha=old)
    text = bot.files.raw(file_path=FILE, ref="moving").decode()
    bot.commits.create({"branch": "moving", "commit_message": "more",
                        "actions": [{"action": "update", "file_path": FILE, "content": text + "# more\n"}]})
    doc = get(mr.web_url)
    new = bot.mergerequests.get(mr.iid).sha
    assert new != old and f'id="head">{new}<' in doc and f'data-sha="{new}"' in doc  # Approve/Merge: the new head
    assert old not in doc.split('id="commits"')[0] and "No approvals yet." in doc  # reset on push
    assert "Requires 1 more approval of the current head." in doc and "Commits (2)" in doc


def test_unknown_project_merge_request_or_commit_is_a_404_page(run: Running) -> None:
    base = run.service("/gitlab")
    assert "404 Project Not Found" in get(f"{base}/nobody/nothing/-/merge_requests/1", 404)
    assert "404 Not found" in get(f"{base}/{PROJECT}/-/merge_requests/7", 404)
    assert "merge_request_iid is invalid" in get(f"{base}/{PROJECT}/-/merge_requests/<b>", 400)
    assert "404 Commit Not Found" in get(f"{base}/{PROJECT}/-/commit/{'0' * 40}", 404)
    assert httpx.get(f"{base}/api/v4/projects/1").status_code == 401  # the API still asks for a token


def test_jira_browse_page_shows_the_issue_escaped(run: Running) -> None:
    creds = run.sb.credentials
    j = jira.JIRA(server=run.service("/jira"), basic_auth=(creds.jira_email, creds.jira_api_token.get_secret_value()),
                  max_retries=0, timeout=5)
    issue = j.create_issue(project="OPS", summary='<script>alert("summary")</script> Fix catalog',
                           description="h2. Why\n\\{noformat\\} <img src=x onerror=alert(1)> [x|javascript:alert(2)]",
                           issuetype={"name": "Task"}, labels=["fixloop"])
    other = j.create_issue(project="OPS", summary="Older & related", issuetype={"name": "Bug"})
    j.create_issue_link("Relates", issue.key, other.key)
    j.add_comment(issue.key, "Verification *passed* <b>bold</b>")
    mr_url = run.service(f"/gitlab/{PROJECT}/-/merge_requests/1")
    j.add_simple_link(issue.key, {"url": mr_url, "title": "!1 Bump catalog <i>"})
    j.add_simple_link(issue.key, {"url": " JavaScript:alert(3)", "title": "evil"})
    j.transition_issue(issue.key, "In Progress")

    r = httpx.get(run.service(f"/jira/browse/{issue.key}"), timeout=10)  # anonymous
    assert r.status_code == 200 and "default-src 'none'" in r.headers["content-security-policy"]
    doc = r.text
    assert_safe(doc, scripts_allowed=0)
    assert '<h1 id="summary">&lt;script&gt;alert(&#34;summary&#34;)&lt;/script&gt; Fix catalog</h1>' in doc
    assert 'class="badge status-in-progress">In Progress<' in doc and "fixloop" in doc
    # wiki escapes read as their text, everything else as written
    assert "h2. Why\n{noformat} &lt;img src=x onerror=alert(1)&gt; [x|javascript:alert(2)]</pre>" in doc
    assert "Verification *passed* &lt;b&gt;bold&lt;/b&gt;</pre>" in doc
    assert f'<a href="{mr_url}" rel="nofollow noreferrer noopener">!1 Bump catalog &lt;i&gt;</a>' in doc
    assert "evil <code> JavaScript:alert(3)</code>" in doc  # shown, not a link
    assert f'relates to <a href="{run.service(f"/jira/browse/{other.key}")}">{other.key}</a> Older &amp; related' in doc
    assert "Issue does not exist" in get(run.service("/jira/browse/OPS-999"), 404)


SCRAPS = st.sampled_from([
    "<", ">", "&", '"', "'", "`", "\\", "\t", "\n", "\n\n", " ", "*", "_", "#", "-", "|", "!", "[", "]", "(", ")",
    "<!--", "-->", "<script>", "</script>", "<a href=", "<img src=x onerror=", "javascript:", "JaVa\tScRiPt:",
    "vbscript:", "data:text/html,", "data:image/png;base64,AA", "file:///etc/passwd", "https://example.com/",
    "mailto:a@b", "onclick=", "style=", "&#106;avascript:", "&#x6A;", "%6a", "<svg/onload=alert(1)>", "```", "~~~",
    "| a | b |\n|:-|-:|\n| 1 | 2 |", "](", "<javascript:alert(1)>", "alert(1)", "é", "\x00", "\u2028",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(SCRAPS, st.text(max_size=8)), max_size=40).map("".join))
def test_markdown_output_is_only_safe_html_for_any_input(text: str) -> None:
    assert_safe(f"<div>{markdown(text)}</div>", scripts_allowed=0)


def test_markdown_is_cut_at_its_bound() -> None:
    out = str(markdown("a" * (MARKDOWN_MAX + 5)))
    assert f"<p>{'a' * MARKDOWN_MAX}</p>" in out and "(5 more characters not shown)" in out
    assert str(markdown(None)) == ""
