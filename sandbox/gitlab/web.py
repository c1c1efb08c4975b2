"""The pages a person opens, at GitLab's web paths (every merge request ``web_url`` and commit ``web_url`` the API
returns answers 200): ``GET /<namespace>/<project>/-/merge_requests`` (the list, ``?state=opened|merged|closed|all``
as GitLab's tabs, default ``opened``), ``GET /<namespace>/<project>/-/merge_requests/<iid>`` and
``GET /<namespace>/<project>/-/commit/<sha>``. The project is public, as ``platform/gitops`` is in the API, so the
pages need no sign-in.

A merge request page shows its title, state (open, draft, merged with its merge commit, closed), the branches and head
SHA, the description (Markdown, rendered safely by ``fixloop.sandbox.pages.markdown``), the approvals (who, at which
SHA, and whether that is still the head: approvals reset on push), the merge status, its commits, the diff of every
file from the real repository (``diff_refs`` base..head; a closed MR: its target's merge base..its last head) and
the notes. Its Approve and Merge buttons call the REST API as GitLab's own front end does, from the page:
``POST /api/v4/projects/:id/merge_requests/:iid/approve`` and ``PUT .../merge`` (at the API's path on the page's
own origin, whatever host name it was opened at), each with ``sha`` (the head the page showed: a push since is a
409) and the ``PRIVATE-TOKEN`` of the signed-in user (a personal access token pasted into the page, kept in the
tab's ``sessionStorage``; the sandbox's users and tokens are in ``<state_dir>/credentials.json``, printed by
``fixloop sandbox up``), so the API decides as for any client (the author may not approve, 405 before approval).
An unknown project, merge request or commit is GitLab's 404 as a page.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from fixloop.sandbox.gitlab.service import GL, GitLab
from fixloop.sandbox.gitlab.wire import API, PREFIX, ApiError
from fixloop.sandbox.pages import page
from fixloop.sandbox.repos import FileDiff, RepoError

router = APIRouter()

MAX_FILE_LINES = 3000  # per file shown; GitLab collapses a file's diff beyond its limits too
STATES = {"opened": "Open", "merged": "Merged", "closed": "Closed", "all": "All"}
_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def diff_lines(diff: str) -> tuple[list[dict[str, Any]], int]:
    """A unified diff body (from its first ``@@``) as rows ``{kind, old, new, text}`` (kind ``hunk``, ``add``,
    ``del``, ``ctx`` or ``note``; ``old``/``new`` line numbers or None), at most ``MAX_FILE_LINES``, and the number
    of lines not shown."""
    rows: list[dict[str, Any]] = []
    lines = diff.splitlines()
    old = new = 0
    for line in lines[:MAX_FILE_LINES]:
        hunk = _HUNK.match(line)
        if hunk:
            old, new = int(hunk[1]), int(hunk[2])
            rows.append({"kind": "hunk", "old": None, "new": None, "text": line})
        elif line.startswith("+"):
            rows.append({"kind": "add", "old": None, "new": new, "text": line})
            new += 1
        elif line.startswith("-"):
            rows.append({"kind": "del", "old": old, "new": None, "text": line})
            old += 1
        elif line.startswith("\\"):
            rows.append({"kind": "note", "old": None, "new": None, "text": line})
        else:
            rows.append({"kind": "ctx", "old": old, "new": new, "text": line})
            old, new = old + 1, new + 1
    return rows, max(len(lines) - MAX_FILE_LINES, 0)


def file_view(d: FileDiff) -> dict[str, Any]:
    rows, hidden = diff_lines(d.diff)
    change = "added" if d.new_file else "deleted" if d.deleted_file else "renamed" if d.old_path != d.new_path else ""
    return {"old_path": d.old_path, "new_path": d.new_path, "change": change, "rows": rows, "hidden": hidden}


def _or_error(route: Callable[..., HTMLResponse]) -> Callable[..., HTMLResponse]:
    """``route``, answering GitLab's errors (404 for an unknown project, merge request or commit) as a page."""

    @functools.wraps(route)  # FastAPI reads the parameters of ``route`` through ``__wrapped__``
    def shown(*args: Any, **kwargs: Any) -> HTMLResponse:
        try:
            return route(*args, **kwargs)
        except (ApiError, RepoError) as e:
            return page("error.html", e.status, site="GitLab", home=None, message=str(e.message))

    return shown


def _refs(gl: GitLab, p: dict[str, Any], mr: dict[str, Any], st: dict[str, Any]) -> dict[str, str] | None:
    """The merge request's ``diff_refs``; a closed one has none in the API, so its target's merge base with its last
    head (when both still resolve)."""
    if st["diff_refs"] or mr["state"] != "closed":
        return st["diff_refs"]
    path = p["path_with_namespace"]
    target = gl.repos.branches(path).get(mr["target_branch"])
    base = gl.repos.merge_base(path, target, mr["sha"]) if target and gl.repos.resolve(path, mr["sha"]) else None
    return {"base_sha": base, "head_sha": mr["sha"], "start_sha": target} if base else None


def _page(template: str, gl: GitLab, path: str, **context: Any) -> HTMLResponse:
    """A page of project ``path``: ``links`` to it, its merge requests and its commits (``commit`` + a SHA)."""
    web = gl.sb.url(PREFIX, f"/{path}")
    links = {"project": web, "mrs": f"{web}/-/merge_requests", "commit": f"{web}/-/commit/"}
    return page(template, site="GitLab", home=links["mrs"], path=path, links=links, states=STATES, **context)


@router.get("/{project:path}/-/merge_requests", response_class=HTMLResponse)
@_or_error
def mr_list_page(project: str, state: str = "opened", gl: GitLab = GL) -> HTMLResponse:
    shown = state if state in STATES else "opened"
    with gl.store.lock:
        p = gl.project(project)
        mrs = sorted(gl.mrs(p).values(), key=lambda m: m["iid"], reverse=True)
        counts = {s: sum(1 for m in mrs if s in ("all", m["state"])) for s in STATES}
        rows = [
            dict(m, author=gl.user_basic(m["author_id"]), approved=len(gl.approvers(p, m)))
            for m in mrs if shown in ("all", m["state"])
        ]
    return _page("gitlab_mr_list.html", gl, p["path_with_namespace"], rows=rows, state=shown, counts=counts)


@router.get("/{project:path}/-/merge_requests/{iid}", response_class=HTMLResponse)
@_or_error
def mr_page(project: str, iid: str, gl: GitLab = GL) -> HTMLResponse:
    with gl.store.lock:
        p = gl.project(project)
        mr = gl.mr(p, iid)
        st = gl.status(p, mr)
        head = gl.head(p, mr)
        refs = _refs(gl, p, mr, st)
        approvals = [dict(a, user=gl.user_basic(a["user_id"]), current=a["sha"] == head) for a in mr["approvals"]]
        notes = [dict(n, author=gl.user_basic(n["author_id"]))
                 for n in gl.store.data["notes"].get(f"{p['id']}/{mr['iid']}", [])]
        view = dict(mr, author=gl.user_basic(mr["author_id"]), merged_by=gl.user_basic(mr.get("merged_by_id")),
                    closed_by=gl.user_basic(mr.get("closed_by_id")))
    path = p["path_with_namespace"]
    files = [file_view(d) for d in gl.repos.diff(path, refs["base_sha"], refs["head_sha"])] if refs else []
    return _page(
        "gitlab_mr.html", gl, path, mr=view, head=head, status=st, approvals=approvals, notes=notes,
        files=files, commits=gl.mr_commits(p, refs), api=urlsplit(gl.sb.url(PREFIX, API)).path, pid=p["id"],
        credentials=str(gl.sb.config.state_dir / "credentials.json"),
    )


@router.get("/{project:path}/-/commit/{sha}", response_class=HTMLResponse)
@_or_error
def commit_page(project: str, sha: str, gl: GitLab = GL) -> HTMLResponse:
    with gl.store.lock:
        p = gl.project(project)
    path = p["path_with_namespace"]
    full = gl.repos.resolve(path, sha)
    if full is None:
        raise ApiError(404, "404 Commit Not Found")
    c = gl.repos.commit_info(path, full)
    files = [file_view(d) for d in gl.repos.diff(path, c.parent_ids[0] if c.parent_ids else None, c.id)]
    return _page("gitlab_commit.html", gl, path, commit=c, files=files)
