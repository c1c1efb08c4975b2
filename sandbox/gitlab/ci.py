"""The CI stand-in: a GitLab pipeline per push to a project's default branch that touches an image's source, which
"builds" the image and pushes its next tag to the sandbox registry.

What it models
  * On ``"git.push"`` to the default branch, it reads ``fixloop.yaml``'s ``images:`` at the pushed commit (parsed
    here: the sandbox imports nothing of the product) and the files changed since ``before``; each image whose
    ``source`` folder holds a changed file gets a job ``build-<name>`` (stage ``build``), as ``rules: changes:``
    would; no such image: no pipeline (GitLab creates none when no job's rules match). One pipeline per push, for
    the pushed head (``source: push``, ``before_sha`` the previous head).
  * The pipeline and its jobs are ``running`` from the push until ``sb.config.ci_duration`` seconds of
    ``sb.clock()`` have passed; then each job runs its build: every ``FROM`` of ``<source>/Dockerfile`` (stage names
    and ``scratch`` aside) must be an image the sandbox registry has (``has_image``: Docker
    Hub's official images with their tag sets, and ``registry.sandbox.local`` with what was pushed; images of other
    hosts, ``gcr.io/...``, are not checked), else the job fails (``failure_reason: script_failure``) and so does
    the pipeline. A job that succeeds pushes the image's next tag to the registry (``push_tag``: its OCI manifest,
    digest and the pipeline's commit as the tag's source commit): ``semver-patch``
    (and ``pipeline``) the first environment's ``newTag`` at the commit with its patch + 1, past any tag the registry
    already has (a base image, in no environment: the highest ``MAJOR.MINOR.PATCH`` tag the commit's image
    Dockerfiles FROM it at, ``from_tags``); ``sha`` the commit's first 8 hex digits.
  * It finishes lazily, on the next read of a pipeline or of a registry tag list after the delay (no thread of its
    own), so a test moves ``sb.clock`` and reads; each finish happens once (state in ``sb.store("ci")``).
  * When built, it pushes the tags the environments run at the head (``newTag`` of each image in each environment's
    Kustomization), so the registry has the images that run before any pipeline, recorded as built from the head
    at that time (the seed commit): the Flux stand-in reads a running image's ``services/<svc>/`` files there. So
    are the tags of the ``images:`` entries (the base images built here) that the head's image Dockerfiles FROM.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

from ruamel.yaml import YAML

from fixloop.sandbox.gitlab.wire import PREFIX, ApiError, ts
from fixloop.sandbox.registry import HOST, TAGS, push_tag, registry_store
from fixloop.sandbox.store import JsonStore

log = logging.getLogger(__name__)

POLICY_FILE = "fixloop.yaml"
MAX_PIPELINES = 500
DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io")
_SEMVER = re.compile(r"(v?)(\d+)\.(\d+)\.(\d+)")
_STATUS = {  # detailed_status per status: icon, text, label, group
    "running": ("status_running", "Running", "running"),
    "success": ("status_success", "Passed", "passed"),
    "failed": ("status_failed", "Failed", "failed"),
}
RUNNER = {
    "id": 1,
    "description": "sandbox-runner",
    "ip_address": "127.0.0.1",
    "active": True,
    "paused": False,
    "is_shared": True,
    "runner_type": "instance_type",
    "name": "gitlab-runner",
    "online": True,
    "status": "online",
}


def parse_chain(text: str | None) -> tuple[dict[str, dict[str, str]], list[dict[str, str]]]:
    """``images:`` (name -> ``{source, image, tag}``) and ``environments:`` (``[{name, kustomization}]``, default
    ``[production]``) of a ``fixloop.yaml`` text; malformed entries are skipped (the product validates them)."""
    try:
        doc = YAML(typ="safe", pure=True).load(text or "") or {}
    except Exception:  # ruamel's YAMLError family and decoding errors: no chain
        return {}, []
    if not isinstance(doc, dict):
        return {}, []
    images: dict[str, dict[str, str]] = {}
    raw = doc.get("images")
    for name, spec in raw.items() if isinstance(raw, dict) else []:
        if isinstance(spec, dict) and isinstance(spec.get("source"), str) and isinstance(spec.get("image"), str):
            images[str(name)] = {
                "source": spec["source"].rstrip("/"),
                "image": spec["image"],
                "tag": str(spec.get("tag") or "semver-patch"),
            }
    envs: list[dict[str, str]] = []
    for e in doc.get("environments") or ["production"]:
        name = e if isinstance(e, str) else e.get("name") if isinstance(e, dict) else None
        if isinstance(name, str):
            path = e.get("kustomization") if isinstance(e, dict) else None
            envs.append({"name": name, "kustomization": str(path or f"apps/{name}/kustomization.yaml")})
    return images, envs


def new_tags(text: str | None) -> dict[str, str]:
    """``images[].name -> newTag`` of a Kustomization file text."""
    try:
        doc = YAML(typ="safe", pure=True).load(text or "") or {}
    except Exception:  # ruamel's YAMLError family
        return {}
    entries = doc.get("images") if isinstance(doc, dict) else None
    return {
        str(e["name"]): str(e["newTag"])
        for e in entries or []
        if isinstance(e, dict) and "name" in e and e.get("newTag") is not None
    }


def from_images(dockerfile: str) -> list[str]:
    """The images a Dockerfile pulls: every ``FROM`` but an earlier stage's name and ``scratch``."""
    stages: set[str] = set()
    out: list[str] = []
    for line in dockerfile.splitlines():
        words = [w for w in line.split() if not w.startswith("--")]
        if len(words) >= 2 and words[0].upper() == "FROM":
            image = words[1]
            if image.lower() not in stages and image != "scratch":
                out.append(image)
            if len(words) >= 4 and words[2].upper() == "AS":
                stages.add(words[3].lower())
    return out


def split_reference(image: str) -> tuple[str | None, str, str]:
    """``(host, repository name, tag)`` of an image reference as a ``FROM`` line or an ``images:`` entry writes it:
    no host is Docker Hub (``docker.io``, one-segment names under ``library/``), no tag is ``latest``, a digest
    (``@sha256:...``) is kept as the tag; host None for a reference with ``$`` (a build argument)."""
    if "$" in image:
        return None, image, ""
    ref, _, digest = image.partition("@")
    last = ref.rsplit("/", 1)[-1]
    name, tag = ref.rsplit(":", 1) if ":" in last else (ref, "latest")
    tag = digest or tag
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        host, name = first, rest
    else:
        host = "docker.io"
    if host in DOCKER_HUB:
        host = "docker.io"
        name = name if "/" in name else f"library/{name}"
    return host, name, tag


def has_image(store: JsonStore, image: str, tag: str | None = None) -> bool:
    """Whether the sandbox can pull ``image`` (a reference; ``tag`` overrides its tag): a Docker Hub one is in
    ``fixloop.sandbox.registry.TAGS`` (a digest only needs the repository), a ``registry.sandbox.local`` one was
    pushed; an image of another host is taken as present (the sandbox does not stand in for it); a ``$`` reference
    (a build argument) never is."""
    host, name, ref_tag = split_reference(image)
    tag = tag or ref_tag
    if host is None:
        return False
    if host == "docker.io":
        return name in TAGS and (tag.startswith("sha256:") or tag in TAGS[name])
    if host == HOST:
        with store.lock:
            return tag in store.data["pushed"].get(name, {})
    return True


class CI:
    """The pipelines of the GitLab stand-in ``gl`` (see the module docstring); thread-safe under ``store.lock``."""

    def __init__(self, sb: Any, gl: Any) -> None:
        self.sb, self.gl = sb, gl
        self.store = sb.store("ci")
        self.registry = registry_store(sb)
        with self.store.lock:
            d = self.store.data
            d.setdefault("pipelines", {})
            d.setdefault("counters", {"pipeline": 0, "job": 0, "iid": {}})
            self.store.save()
        sb.bus.subscribe("git.push", self.on_push)
        sb.bus.subscribe("registry.read", lambda _payload: self.advance())

    # -- the registry before any pipeline ---------------------------------------------------------------------
    def seed_registry(self, path: str) -> None:
        """Push the tags the environments of ``path``'s default branch run, and those of its base images that its
        Dockerfiles FROM (see the module docstring)."""
        head = self.gl.repos.branches(path).get(self.gl.repos.default_branch(path))
        if head is None:
            return
        images, envs = parse_chain(self._read(path, head, POLICY_FILE))
        wanted = []
        for env in envs:
            tags = new_tags(self._read(path, head, env["kustomization"]))
            wanted += [(spec["image"], tags.get(spec["image"])) for spec in images.values()]
        based = self.from_tags(path, head)
        wanted += [(spec["image"], tag) for spec in images.values() for tag in based.get(spec["image"], [])]
        for image, tag in wanted:
            if tag and not has_image(self.registry, image, tag):
                push_tag(self.registry, image, tag, self.sb.clock(), source=head)

    def from_tags(self, path: str, sha: str) -> dict[str, list[str]]:
        """``{image: [tag, ...]}``: the tags at which the Dockerfiles of the ``images:`` of ``path`` at ``sha`` FROM
        another ``images:`` entry (a base image built here), each once, in file order."""
        images, _ = parse_chain(self._read(path, sha, POLICY_FILE))
        by_name = {split_reference(spec["image"])[:2]: spec["image"] for spec in images.values()}
        out: dict[str, list[str]] = {}
        for spec in images.values():
            for ref in from_images(self._read(path, sha, f"{spec['source']}/Dockerfile") or ""):
                host, name, tag = split_reference(ref)
                base = by_name.get((host, name))
                if base is not None and not tag.startswith("sha256:") and tag not in out.setdefault(base, []):
                    out[base].append(tag)
        return out

    def _read(self, path: str, sha: str, file: str) -> str | None:
        raw = self.gl.repos.read(path, sha, file)
        return raw.decode("utf-8", errors="replace") if raw is not None else None

    # -- triggers ---------------------------------------------------------------------------------------------
    def on_push(self, payload: dict[str, Any]) -> None:
        path, branch, before, after = (payload.get(k) for k in ("project", "branch", "before", "after"))
        if not after or set(str(after)) == {"0"} or not self.gl.repos.exists(path):
            return
        if branch != self.gl.repos.default_branch(path):
            return
        p = self.gl.project(path)
        images, envs = parse_chain(self._read(path, after, POLICY_FILE))
        if not images:
            return
        old = before if before and set(str(before)) != {"0"} else None
        if old is None:
            parents = self.gl.repos.commit_info(path, after).parent_ids
            old = parents[0] if parents else None
        changed = {f for d in self.gl.repos.diff(path, old, after) for f in (d.old_path, d.new_path)}
        built = [(n, s) for n, s in images.items() if any(f.startswith(s["source"] + "/") for f in changed)]
        if not built:
            return
        now = self.sb.clock()
        with self.store.lock:
            d = self.store.data
            c = d["counters"]
            c["pipeline"] += 1
            c["iid"][str(p["id"])] = c["iid"].get(str(p["id"]), 0) + 1
            jobs = []
            for name, spec in built:
                c["job"] += 1
                jobs.append({"id": c["job"], "name": f"build-{name}", "stage": "build", "status": "running"} | spec)
            d["pipelines"][str(c["pipeline"])] = {
                "id": c["pipeline"],
                "iid": c["iid"][str(p["id"])],
                "project_id": p["id"],
                "sha": after,
                "before_sha": old or "0" * 40,
                "ref": branch,
                "status": "running",
                "source": "push",
                "user_id": payload.get("user_id") or 1,
                "created_at": ts(now),
                "updated_at": ts(now),
                "started_at": ts(now),
                "finished_at": None,
                "due": (now + timedelta(seconds=self.sb.config.ci_duration)).timestamp(),
                "environment": envs[0]["kustomization"] if envs else None,
                "jobs": jobs,
            }
            for key in sorted(d["pipelines"], key=int)[:-MAX_PIPELINES]:
                del d["pipelines"][key]
            self.store.save()
        self.advance()

    def advance(self) -> None:
        """Finish every running pipeline whose delay has passed on ``sb.clock()``."""
        now = self.sb.clock()
        with self.store.lock:
            due = [
                pl
                for pl in self.store.data["pipelines"].values()
                if pl["status"] == "running" and now.timestamp() >= pl["due"]
            ]
            for pl in sorted(due, key=lambda pl: pl["id"]):
                self._finish(pl, now)
            if due:
                self.store.save()

    def _finish(self, pl: dict[str, Any], now: datetime) -> None:
        project = self.gl.project(str(pl["project_id"]))["path_with_namespace"]
        running = new_tags(self._read(project, pl["sha"], pl["environment"])) if pl["environment"] else {}
        for job in pl["jobs"]:
            dockerfile = self._read(project, pl["sha"], f"{job['source']}/Dockerfile")
            missing = [i for i in from_images(dockerfile or "") if not has_image(self.registry, i)]
            if dockerfile is None or not from_images(dockerfile) or missing:
                job["status"], job["failure_reason"] = "failed", "script_failure"
                job["log"] = (
                    f"ERROR: {job['source']}/Dockerfile: no such file or no FROM"
                    if dockerfile is None or not from_images(dockerfile)
                    else f"ERROR: failed to resolve source metadata for {missing[0]}: not found"
                )
            else:
                based = self.from_tags(project, pl["sha"]).get(job["image"], [])
                current = running.get(job["image"]) or _highest(based)
                tag = self._tag(job, current, pl["sha"])
                digest = push_tag(self.registry, job["image"], tag, now, source=pl["sha"])
                job.update(status="success", pushed_tag=tag, digest=digest, log=f"pushed {job['image']}:{tag}")
            job["finished_at"] = ts(now)
        pl["status"] = "failed" if any(j["status"] == "failed" for j in pl["jobs"]) else "success"
        pl["finished_at"] = pl["updated_at"] = ts(now)

    def _tag(self, job: dict[str, Any], current: str | None, sha: str) -> str:
        if job["tag"] == "sha":
            return sha[:8]
        m = _SEMVER.fullmatch(current or "")
        prefix, major, minor, patch = m.groups() if m else ("", "0", "0", "0")
        n = int(patch) + 1
        while has_image(self.registry, job["image"], f"{prefix}{major}.{minor}.{n}"):
            n += 1
        return f"{prefix}{major}.{minor}.{n}"

    # -- the API's view ---------------------------------------------------------------------------------------
    def find(self, p: dict[str, Any], pipeline_id: str) -> dict[str, Any]:
        pl = self.store.data["pipelines"].get(str(pipeline_id))
        if pl is None or pl["project_id"] != p["id"]:
            raise ApiError(404, "404 Not found")
        return pl

    def listed(self, p: dict[str, Any], params: dict[str, Any]) -> list[dict[str, Any]]:
        """The project's pipelines filtered by ``sha``, ``ref``, ``status``, ``source`` and ordered by ``order_by``
        (``id``, ``updated_at``; default ``id``) and ``sort`` (default ``desc``), as the basic entity."""
        with self.store.lock:
            found = [pl for pl in self.store.data["pipelines"].values() if pl["project_id"] == p["id"]]
        for key in ("sha", "ref", "status", "source"):
            if params.get(key):
                found = [pl for pl in found if pl[key] == str(params[key])]
        order = str(params.get("order_by") or "id")
        if order not in ("id", "updated_at", "status", "ref"):
            raise ApiError(400, "order_by does not have a valid value", key="error")
        sort = str(params.get("sort") or "desc")
        if sort not in ("asc", "desc"):
            raise ApiError(400, "sort does not have a valid value", key="error")
        found.sort(key=lambda pl: (pl[order], pl["id"]), reverse=sort == "desc")
        return [self.basic_json(p, pl) for pl in found]

    def basic_json(self, p: dict[str, Any], pl: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": pl["id"],
            "iid": pl["iid"],
            "project_id": pl["project_id"],
            "sha": pl["sha"],
            "ref": pl["ref"],
            "status": pl["status"],
            "source": pl["source"],
            "created_at": pl["created_at"],
            "updated_at": pl["updated_at"],
            "web_url": self.sb.url(PREFIX, f"/{p['path_with_namespace']}/-/pipelines/{pl['id']}"),
            "name": f"Build {pl['sha'][:8]}",  # the seed's .gitlab-ci.yml workflow:name
        }

    def pipeline_json(self, p: dict[str, Any], pl: dict[str, Any]) -> dict[str, Any]:
        """The single pipeline entity (``GET /projects/:id/pipelines/:pipeline_id``)."""
        icon, text, label = _STATUS[pl["status"]]
        path = f"/{p['path_with_namespace']}/-/pipelines/{pl['id']}"
        return self.basic_json(p, pl) | {
            "before_sha": pl["before_sha"],
            "tag": False,
            "yaml_errors": None,
            "user": self.gl.user_basic(pl["user_id"]),
            "started_at": pl["started_at"],
            "finished_at": pl["finished_at"],
            "committed_at": None,
            "duration": _seconds(pl["started_at"], pl["finished_at"]),
            "queued_duration": 0,
            "coverage": None,
            "detailed_status": {
                "icon": icon,
                "text": text,
                "label": label,
                "group": pl["status"],
                "tooltip": label,
                "has_details": True,
                "details_path": path,
                "illustration": None,
                "favicon": f"/assets/ci_favicons/favicon_{icon}.png",
            },
        }

    def jobs_json(self, p: dict[str, Any], pl: dict[str, Any]) -> list[dict[str, Any]]:
        """The jobs of ``pl`` as ``GET /projects/:id/pipelines/:pipeline_id/jobs`` lists them."""
        commit = self.gl.commit_json(p, self.gl.repos.commit_info(p["path_with_namespace"], pl["sha"]))
        user = self.gl.user_public(pl["user_id"]) if pl["user_id"] in self.gl.users else None
        out = []
        for job in pl["jobs"]:
            finished = job.get("finished_at")
            entry = {
                "id": job["id"],
                "status": job["status"],
                "stage": job["stage"],
                "name": job["name"],
                "ref": pl["ref"],
                "tag": False,
                "coverage": None,
                "allow_failure": False,
                "created_at": pl["created_at"],
                "started_at": pl["started_at"],
                "finished_at": finished,
                "erased_at": None,
                "duration": _seconds(pl["started_at"], finished),
                "queued_duration": 0.0,
                "user": user,
                "commit": commit,
                "pipeline": self.basic_json(p, pl),
                "web_url": self.sb.url(PREFIX, f"/{p['path_with_namespace']}/-/jobs/{job['id']}"),
                "project": {"ci_job_token_scope_enabled": False},
                "artifacts": [
                    {"file_type": "trace", "size": len(job.get("log", "")), "filename": "job.log", "file_format": None}
                ]
                if finished
                else [],
                "runner": RUNNER,
                "artifacts_expire_at": None,
                "archived": False,
                "tag_list": [],
            }
            if job["status"] == "failed":
                entry["failure_reason"] = job.get("failure_reason", "script_failure")
            out.append(entry)
        return out


def _highest(tags: list[str]) -> str | None:
    """The highest ``MAJOR.MINOR.PATCH`` of ``tags`` (None: none is)."""
    semver = [(tuple(int(g) for g in m.groups()[1:]), t) for t in tags if (m := _SEMVER.fullmatch(t))]
    return max(semver)[1] if semver else None


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    a, b = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, end))
    return round((b - a).total_seconds(), 3)
