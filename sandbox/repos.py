"""Real git repositories for the sandbox GitLab (and the Flux reconciler that watches them), on disk via dulwich.

One bare repository per project at ``<root>/<namespace>/<name>.git``, so dulwich's smart-HTTP server can serve the
same directory for ``git clone``. Commits are built from GitLab's "commit actions" (create/update/delete/move,
``POST /projects/:id/repository/commits``), merges are real three-way merges (a conflict is an error, as GitLab
refuses to merge a conflicting MR), reverts of merge commits revert against the first parent.

Paths and ref names come from API callers, i.e. untrusted: they are validated here (no ``..``, no absolute path,
nothing under ``.git``, git's ref-name rules) before any object is written. Nothing here runs a shell or a ``git``
process. Errors are ``RepoError`` with the HTTP status GitLab would answer (400, 404, 409).
"""

from __future__ import annotations

import base64
import difflib
import re
import stat
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from dulwich.diff_tree import tree_changes
from dulwich.graph import find_merge_base
from dulwich.merge import three_way_merge
from dulwich.object_store import commit_tree_changes
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo
from pydantic import BaseModel, Field

PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)+$")
SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
FILE_MODE = 0o100644
MAX_FILE_BYTES = 10 * 1024 * 1024


class RepoError(Exception):
    """A refused repository operation; ``status`` is the HTTP status GitLab answers for it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Action(BaseModel):
    """One GitLab commit action (``actions[]`` of ``POST /projects/:id/repository/commits``, GitLab REST v4 docs
    "Create a commit with multiple files and actions")."""

    action: Literal["create", "update", "delete", "move", "chmod"]
    file_path: str
    previous_path: str | None = None
    content: str | None = None
    encoding: Literal["text", "base64"] = "text"
    last_commit_id: str | None = None
    execute_filemode: bool | None = None


class Person(BaseModel):
    name: str
    email: str


class CommitInfo(BaseModel):
    """A commit as the GitLab API describes it (the fields its commit object is built from)."""

    id: str
    short_id: str
    title: str
    message: str
    parent_ids: list[str]
    author_name: str
    author_email: str
    authored_date: datetime
    committer_name: str
    committer_email: str
    committed_date: datetime


class FileDiff(BaseModel):
    """One file of a diff, GitLab's diff object: ``diff`` is the unified diff body starting at the first ``@@``."""

    old_path: str
    new_path: str
    a_mode: str
    b_mode: str
    new_file: bool = False
    renamed_file: bool = False
    deleted_file: bool = False
    diff: str = ""


class TreeEntry(BaseModel):
    id: str
    name: str
    type: Literal["blob", "tree", "commit"]
    path: str
    mode: str = Field(description="octal, e.g. 100644")


def check_path(path: str) -> bytes:
    """``path`` as a repository path (bytes); ``RepoError(400)`` for an absolute path, ``..``, ``.git`` or an empty
    or control-character component."""
    if not path or len(path) > 4096 or path.startswith("/") or "\\" in path or "\x00" in path:
        raise RepoError(400, f"invalid file path {path[:80]!r}")
    parts = PurePosixPath(path).parts
    for part in parts:
        if part in ("", ".", "..") or part.lower() == ".git" or any(ord(c) < 32 for c in part):
            raise RepoError(400, f"invalid file path {path[:80]!r}")
    return "/".join(parts).encode()


def check_ref(name: str) -> str:
    """A branch name that git accepts (``git check-ref-format --branch`` rules, simplified); else ``RepoError(400)``."""
    bad = (
        not name
        or len(name) > 255
        or name.startswith(("/", "-", "."))
        or name.endswith(("/", ".", ".lock"))
        or ".." in name
        or "//" in name
        or "@{" in name
        or any(c in name for c in " ~^:?*[\\\x7f")
        or any(ord(c) < 32 for c in name)
    )
    if bad:
        raise RepoError(400, f"invalid branch name {name[:80]!r}")
    return name


def _person(p: Person) -> bytes:
    return f"{p.name} <{p.email}>".encode()


def _info(c: Commit) -> CommitInfo:
    def when(ts: int, tz: int) -> datetime:
        from datetime import UTC, timedelta, timezone

        return datetime.fromtimestamp(ts, UTC).astimezone(timezone(timedelta(seconds=tz)))

    def split(raw: bytes) -> tuple[str, str]:
        m = re.match(rb"^(.*?)\s*<(.*)>$", raw)
        return (m.group(1).decode(errors="replace"), m.group(2).decode(errors="replace")) if m else (raw.decode(), "")

    an, ae = split(c.author)
    cn, ce = split(c.committer)
    message = c.message.decode(errors="replace")
    sha = c.id.decode()
    return CommitInfo(
        id=sha,
        short_id=sha[:8],
        title=message.split("\n", 1)[0],
        message=message,
        parent_ids=[p.decode() for p in c.parents],
        author_name=an,
        author_email=ae,
        authored_date=when(c.author_time, c.author_timezone),
        committer_name=cn,
        committer_email=ce,
        committed_date=when(c.commit_time, c.commit_timezone),
    )


class RepoStore:
    """Bare repositories under ``root``; every ref update of one project is serialised by a lock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()

    # -- projects -------------------------------------------------------------------------------------------
    def path(self, project: str) -> Path:
        """The bare repository directory of ``project`` (``namespace/name``); ``RepoError(400)`` if malformed."""
        if not PROJECT_RE.match(project) or ".." in project or project.endswith(".git"):
            raise RepoError(400, f"invalid project path {project[:80]!r}")
        return self.root / f"{project}.git"

    def exists(self, project: str) -> bool:
        return (self.path(project) / "HEAD").is_file()

    def lock(self, project: str) -> threading.RLock:
        with self._guard:
            return self._locks.setdefault(project, threading.RLock())

    def create(self, project: str, default_branch: str = "main") -> None:
        """An empty bare repository whose ``HEAD`` points at ``default_branch``; ``RepoError(409)`` if it exists."""
        path = self.path(project)
        if self.exists(project):
            raise RepoError(409, f"project {project} already exists")
        path.mkdir(parents=True, exist_ok=True)
        repo = Repo.init_bare(str(path))
        repo.refs.set_symbolic_ref(b"HEAD", b"refs/heads/" + check_ref(default_branch).encode())
        repo.close()

    def _repo(self, project: str) -> Repo:
        if not self.exists(project):
            raise RepoError(404, "404 Project Not Found")
        return Repo(str(self.path(project)))

    def default_branch(self, project: str) -> str:
        with self._repo(project) as repo:
            target = repo.refs.read_ref(b"HEAD") or b"ref: refs/heads/main"
        return target.removeprefix(b"ref: refs/heads/").decode()

    # -- refs -----------------------------------------------------------------------------------------------
    def branches(self, project: str) -> dict[str, str]:
        """``{branch name: head sha}``."""
        with self._repo(project) as repo:
            refs = repo.refs.as_dict(b"refs/heads")
        return {k.decode(): v.decode() for k, v in refs.items()}

    def resolve(self, project: str, ref: str) -> str | None:
        """The commit sha ``ref`` names (a branch, a full sha or an unambiguous prefix of 7+), or ``None``."""
        with self._repo(project) as repo:
            head = repo.refs.as_dict(b"refs/heads").get(ref.encode())
            if head is not None:
                return head.decode()
            if ref == "HEAD":
                try:
                    return repo.head().decode()
                except KeyError:
                    return None
            if SHA_RE.match(ref):
                if len(ref) == 40:
                    return ref if ref.encode() in repo.object_store else None
                found = [s for s in repo.object_store if s.decode().startswith(ref)]
                commits = [s for s in found if repo.object_store[s].type_name == b"commit"]
                return commits[0].decode() if len(commits) == 1 else None
        return None

    def _commit_sha(self, project: str, ref: str) -> str:
        sha = self.resolve(project, ref)
        if sha is None:
            raise RepoError(404, "404 Commit Not Found")
        return sha

    def create_branch(self, project: str, name: str, ref: str) -> str:
        """Branch ``name`` at ``ref``; ``RepoError(400)`` if it exists (GitLab: "Branch already exists")."""
        check_ref(name)
        with self.lock(project), self._repo(project) as repo:
            sha = self._commit_sha(project, ref)
            if not repo.refs.add_if_new(b"refs/heads/" + name.encode(), sha.encode()):
                raise RepoError(400, "Branch already exists")
        return sha

    def delete_branch(self, project: str, name: str) -> None:
        with self.lock(project), self._repo(project) as repo:
            if not repo.refs.remove_if_equals(b"refs/heads/" + check_ref(name).encode(), None):
                raise RepoError(404, "404 Branch Not Found")

    def _advance(self, repo: Repo, branch: str, old: str | None, new: str) -> None:
        ref = b"refs/heads/" + branch.encode()
        ok = (
            repo.refs.add_if_new(ref, new.encode())
            if old is None
            else repo.refs.set_if_equals(ref, old.encode(), new.encode())
        )
        if not ok:
            raise RepoError(409, f"branch {branch} moved meanwhile")

    # -- reading --------------------------------------------------------------------------------------------
    def _lookup(self, repo: Repo, sha: str, path: str) -> tuple[int, bytes] | None:
        tree = repo[repo[sha.encode()].tree]
        try:
            return tree.lookup_path(repo.object_store.__getitem__, check_path(path))
        except KeyError:
            return None

    def read(self, project: str, ref: str, path: str) -> bytes | None:
        """The content of ``path`` at ``ref``, or ``None`` if there is no such file."""
        sha = self._commit_sha(project, ref)
        with self._repo(project) as repo:
            found = self._lookup(repo, sha, path)
            if found is None or not stat.S_ISREG(found[0]):
                return None
            return repo[found[1]].data

    def blob_id(self, project: str, ref: str, path: str) -> str | None:
        sha = self._commit_sha(project, ref)
        with self._repo(project) as repo:
            found = self._lookup(repo, sha, path)
            return found[1].decode() if found and stat.S_ISREG(found[0]) else None

    def tree(self, project: str, ref: str, path: str = "", recursive: bool = False) -> list[TreeEntry]:
        """The entries under ``path`` at ``ref`` (GitLab's repository tree); ``RepoError(404)`` if not a directory."""
        sha = self._commit_sha(project, ref)
        with self._repo(project) as repo:
            tree_id = repo[sha.encode()].tree
            if path:
                found = self._lookup(repo, sha, path)
                if found is None or not stat.S_ISDIR(found[0]):
                    raise RepoError(404, "404 Tree Not Found")
                tree_id = found[1]
            out: list[TreeEntry] = []

            def walk(tid: bytes, prefix: str) -> None:
                for entry in repo[tid].iteritems():
                    name = entry.path.decode(errors="replace")
                    full = f"{prefix}{name}"
                    kind = "tree" if stat.S_ISDIR(entry.mode) else "commit" if entry.mode == 0o160000 else "blob"
                    mode = f"{entry.mode:06o}"
                    out.append(TreeEntry(id=entry.sha.decode(), name=name, type=kind, path=full, mode=mode))
                    if recursive and kind == "tree":
                        walk(entry.sha, full + "/")

            walk(tree_id, f"{path.strip('/')}/" if path else "")
        return out

    def commit_info(self, project: str, ref: str) -> CommitInfo:
        sha = self._commit_sha(project, ref)
        with self._repo(project) as repo:
            obj = repo[sha.encode()]
            if not isinstance(obj, Commit):
                raise RepoError(404, "404 Commit Not Found")
            return _info(obj)

    def log(self, project: str, ref: str, limit: int = 20, path: str | None = None) -> list[CommitInfo]:
        """Commits reachable from ``ref``, newest first; with ``path`` (a file or a directory) only those that
        changed it, as ``git log -- <path>``."""
        sha = self._commit_sha(project, ref)
        paths = [path.strip("/").encode()] if path and path.strip("/") else None
        with self._repo(project) as repo:
            walker = repo.get_walker(include=[sha.encode()], max_entries=limit, paths=paths)
            return [_info(entry.commit) for entry in walker]

    def is_ancestor(self, project: str, ancestor: str, descendant: str) -> bool:
        """Whether ``ancestor`` is ``descendant`` or one of its ancestors (for "applied a descendant of the merge")."""
        a, d = self.resolve(project, ancestor), self.resolve(project, descendant)
        if a is None or d is None:
            return False
        with self._repo(project) as repo:
            return a.encode() in find_merge_base(repo, [a.encode(), d.encode()])

    def merge_base(self, project: str, a: str, b: str) -> str | None:
        """The best common ancestor of ``a`` and ``b`` (GitLab's ``diff_refs.base_sha``), or ``None``."""
        sa, sb = self._commit_sha(project, a), self._commit_sha(project, b)
        with self._repo(project) as repo:
            bases = find_merge_base(repo, [sa.encode(), sb.encode()])
        return bases[0].decode() if bases else None

    def diff(self, project: str, from_ref: str | None, to_ref: str) -> list[FileDiff]:
        """The file diffs from ``from_ref`` (None: the empty tree, as for a root commit) to ``to_ref`` (GitLab's
        compare/MR changes format)."""
        a = self._commit_sha(project, from_ref) if from_ref is not None else None
        b = self._commit_sha(project, to_ref)
        with self._repo(project) as repo:
            return self._diff_trees(repo, repo[a.encode()].tree if a else None, repo[b.encode()].tree)

    def _diff_trees(self, repo: Repo, old_tree: bytes | None, new_tree: bytes) -> list[FileDiff]:
        out: list[FileDiff] = []
        for change in tree_changes(repo.object_store, old_tree, new_tree):
            # an added (deleted) file has no old (new) entry: ``None``, or an entry of ``None``s in older dulwich
            old_path_b, old_mode, old_sha = change.old if change.old is not None else (None, None, None)
            new_path_b, new_mode, new_sha = change.new if change.new is not None else (None, None, None)
            old_path = (old_path_b or new_path_b).decode(errors="replace")
            new_path = (new_path_b or old_path_b).decode(errors="replace")
            before = repo[old_sha].data if old_sha else b""
            after = repo[new_sha].data if new_sha else b""
            out.append(
                FileDiff(
                    old_path=old_path,
                    new_path=new_path,
                    a_mode=f"{old_mode:o}" if old_mode else "0",
                    b_mode=f"{new_mode:o}" if new_mode else "0",
                    new_file=old_sha is None,
                    deleted_file=new_sha is None,
                    diff=unified(before, after),
                )
            )
        return out

    # -- writing --------------------------------------------------------------------------------------------
    def commit(
        self,
        project: str,
        branch: str,
        actions: Sequence[Action],
        message: str,
        author: Person,
        when: datetime,
        start_branch: str | None = None,
        start_sha: str | None = None,
    ) -> CommitInfo:
        """Commit ``actions`` on ``branch`` (created from ``start_branch``/``start_sha`` or the default branch when
        it does not exist yet; an empty repository gets a root commit). GitLab's rules: ``create`` of an existing
        file, ``update``/``delete``/``move`` of a missing one, or a ``last_commit_id`` that is not the file's last
        change answer 400; no actions answer 400."""
        check_ref(branch)
        if not actions:
            raise RepoError(400, "actions is empty")
        if not message.strip():
            raise RepoError(400, "commit_message is missing")
        with self.lock(project), self._repo(project) as repo:
            heads = {k.decode(): v.decode() for k, v in repo.refs.as_dict(b"refs/heads").items()}
            old = heads.get(branch)
            parent = old
            if parent is None:
                if start_sha:
                    parent = self._commit_sha(project, start_sha)
                elif start_branch:
                    if start_branch not in heads:
                        raise RepoError(400, f"start_branch {start_branch} does not exist")
                    parent = heads[start_branch]
                elif heads:
                    default = self.default_branch(project)
                    parent = heads.get(default)
            if parent:
                base_tree = repo[parent.encode()].tree
            else:
                empty = Tree()
                repo.object_store.add_object(empty)
                base_tree = empty.id

            changes: list[tuple[bytes, int | None, bytes | None]] = []
            current: dict[bytes, bytes | None] = {}

            def exists(p: bytes) -> bool:
                if p in current:
                    return current[p] is not None
                try:
                    mode, _ = repo[base_tree].lookup_path(repo.object_store.__getitem__, p)
                except KeyError:
                    return False
                return stat.S_ISREG(mode)

            for act in actions:
                path = check_path(act.file_path)
                if act.action in ("create", "update"):
                    if act.content is None:
                        raise RepoError(400, f"content is missing for {act.file_path}")
                    if act.action == "create" and exists(path):
                        raise RepoError(400, "A file with this name already exists")
                    if act.action == "update" and not exists(path):
                        raise RepoError(400, "A file with this name doesn't exist")
                    data = decode(act.content, act.encoding)
                    blob = Blob.from_string(data)
                    repo.object_store.add_object(blob)
                    changes.append((path, FILE_MODE, blob.id))
                    current[path] = blob.id
                elif act.action == "delete":
                    if not exists(path):
                        raise RepoError(400, "A file with this name doesn't exist")
                    changes.append((path, None, None))
                    current[path] = None
                elif act.action == "move":
                    if not act.previous_path:
                        raise RepoError(400, "previous_path is missing")
                    prev = check_path(act.previous_path)
                    if not exists(prev):
                        raise RepoError(400, "A file with this name doesn't exist")
                    if act.content is not None:
                        blob = Blob.from_string(decode(act.content, act.encoding))
                        repo.object_store.add_object(blob)
                        blob_id = blob.id
                    else:
                        _, blob_id = repo[base_tree].lookup_path(repo.object_store.__getitem__, prev)
                    changes += [(prev, None, None), (path, FILE_MODE, blob_id)]
                    current[prev], current[path] = None, blob_id
                # chmod: modes are not modelled (every file is 100644); accepted as a no-op
            new_tree = commit_tree_changes(repo.object_store, base_tree, changes)
            sha = self._write_commit(repo, new_tree, [parent] if parent else [], message, author, when)
            self._advance(repo, branch, old, sha)
            return _info(repo[sha.encode()])

    def _write_commit(
        self, repo: Repo, tree: bytes, parents: list[str], message: str, author: Person, when: datetime
    ) -> str:
        c = Commit()
        c.tree = tree
        c.parents = [p.encode() for p in parents]
        c.author = c.committer = _person(author)
        ts = int(when.timestamp())
        offset = int(when.utcoffset().total_seconds()) if when.utcoffset() else 0
        c.author_time = c.commit_time = ts
        c.author_timezone = c.commit_timezone = offset
        c.encoding = b"UTF-8"
        c.message = message.encode() if message.endswith("\n") else (message + "\n").encode()
        repo.object_store.add_object(c)
        return c.id.decode()

    def merge(
        self,
        project: str,
        source_branch: str,
        target_branch: str,
        message: str,
        author: Person,
        when: datetime,
        expected_sha: str | None = None,
        squash: bool = False,
    ) -> str:
        """Merge ``source_branch`` into ``target_branch`` with a merge commit (GitLab's default merge method), or
        one squashed commit. ``expected_sha`` (GitLab's ``sha`` parameter) must equal the source head, else 409.
        A conflict answers 406 as GitLab's merge endpoint does ("Branch cannot be merged")."""
        with self.lock(project), self._repo(project) as repo:
            heads = {k.decode(): v.decode() for k, v in repo.refs.as_dict(b"refs/heads").items()}
            if source_branch not in heads or target_branch not in heads:
                raise RepoError(404, "404 Branch Not Found")
            src, dst = heads[source_branch], heads[target_branch]
            if expected_sha is not None and expected_sha != src:
                raise RepoError(409, "SHA does not match HEAD of source branch")
            tree = self._merged_tree(repo, src, dst)
            parents = [dst] if squash else [dst, src]
            sha = self._write_commit(repo, tree, parents, message, author, when)
            self._advance(repo, target_branch, dst, sha)
            return sha

    def _merged_tree(self, repo: Repo, theirs: str, ours: str) -> bytes:
        bases = find_merge_base(repo, [ours.encode(), theirs.encode()])
        if bases and bases[0] == ours.encode():
            return repo[theirs.encode()].tree  # target is an ancestor: the source's tree as is
        base = repo[bases[0]] if bases else None
        try:
            tree, conflicts = three_way_merge(repo.object_store, base, repo[ours.encode()], repo[theirs.encode()])
        except ImportError:  # dulwich merges file contents with the optional merge3; without it, a file changed
            raise RepoError(406, "Branch cannot be merged: a file changed on both sides") from None  # on both sides
        if conflicts:
            names = ", ".join(p.decode(errors="replace") for p in conflicts[:5])
            raise RepoError(406, f"Branch cannot be merged: conflicts in {names}")
        repo.object_store.add_object(tree)
        return tree.id

    def can_merge(self, project: str, source_branch: str, target_branch: str) -> bool:
        """Whether merging would succeed without conflicts (GitLab's ``merge_status`` can_be_merged)."""
        heads = self.branches(project)
        if source_branch not in heads or target_branch not in heads:
            return False
        with self._repo(project) as repo:
            try:
                self._merged_tree(repo, heads[source_branch], heads[target_branch])
            except RepoError:
                return False
        return True

    def revert(self, project: str, sha: str, branch: str, author: Person, when: datetime) -> CommitInfo:
        """Commit on ``branch`` the revert of ``sha`` (against its first parent when it is a merge commit), as
        ``POST /projects/:id/repository/commits/:sha/revert`` does. Nothing to revert or a conflict answers 400."""
        target = self._commit_sha(project, sha)
        with self.lock(project), self._repo(project) as repo:
            heads = {k.decode(): v.decode() for k, v in repo.refs.as_dict(b"refs/heads").items()}
            if branch not in heads:
                raise RepoError(404, "404 Branch Not Found")
            head = heads[branch]
            commit = repo[target.encode()]
            if not commit.parents:
                raise RepoError(400, "Sorry, we cannot revert this commit automatically.")
            parent = repo[commit.parents[0]]
            # revert = merge(base=commit, ours=head, theirs=parent)
            try:
                tree, conflicts = three_way_merge(repo.object_store, commit, repo[head.encode()], parent)
            except ImportError:  # no merge3 (see _merged_tree): the file changed since, so no automatic revert
                raise RepoError(400, "Sorry, we cannot revert this commit automatically.") from None
            if conflicts:
                raise RepoError(400, "Sorry, we cannot revert this commit automatically.")
            repo.object_store.add_object(tree)
            if tree.id == repo[head.encode()].tree:
                raise RepoError(400, "Sorry, we cannot revert this commit automatically. It may have been reverted.")
            title = _info(commit).title
            message = f'Revert "{title}"\n\nThis reverts commit {target}.\n'
            new = self._write_commit(repo, tree.id, [head], message, author, when)
            self._advance(repo, branch, head, new)
            return _info(repo[new.encode()])


def decode(content: str, encoding: str) -> bytes:
    """A commit action's content as bytes; ``RepoError(400)`` for invalid base64 or a file over 10 MiB."""
    try:
        data = base64.b64decode(content, validate=True) if encoding == "base64" else content.encode()
    except ValueError:
        raise RepoError(400, "content is not valid base64") from None
    if len(data) > MAX_FILE_BYTES:
        raise RepoError(400, "file is too large")
    return data


def unified(before: bytes, after: bytes, context: int = 3) -> str:
    """A unified diff body as GitLab shows it: hunks from the first ``@@``, no ``---``/``+++`` header; binary
    content is summarised as git does."""
    if b"\x00" in before or b"\x00" in after:
        return "Binary files differ\n"
    a = before.decode(errors="replace").splitlines(keepends=True)
    b = after.decode(errors="replace").splitlines(keepends=True)
    lines: list[str] = []
    for line in list(difflib.unified_diff(a, b, n=context))[2:]:
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        lines.append(line)
    return "".join(lines)


def as_dict(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")
