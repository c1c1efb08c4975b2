"""The Flux reconciler and the objects it serves: the ``GitRepository`` source, every declared ``Kustomization``
(rendered with ``fixloop.sandbox.kustomize``, status as kustomize-controller v1 sets it), the applied-revision
history, the world's deploy record, and notification-controller's events with their deliveries (see the package
docstring for when it reconciles)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from fixloop.sandbox import kustomize
from fixloop.sandbox.containers import spec_of
from fixloop.sandbox.kustomize import BuildError, PathNotFound, Snapshot, containers, load_yaml_documents
from fixloop.sandbox.outbox import Outbox
from fixloop.sandbox.registry import HOST, pushed, registry_store
from fixloop.sandbox.repos import RepoError

log = logging.getLogger(__name__)

PROJECT, BRANCH, CLUSTER_DIR = "platform/gitops", "main", "clusters/sandbox"
KS_GROUP, SRC_GROUP, VERSION = "kustomize.toolkit.fluxcd.io", "source.toolkit.fluxcd.io", "v1"
WORLD_KUSTOMIZATION = "flux-system/apps-production"
SOURCE_KEY = "flux-system/flux-system"
HISTORY_MAX, DELIVERIES_MAX, DELIVERY_TIMEOUT = 100, 200, 5.0
RESOURCES = {"kustomizations": (KS_GROUP, "Kustomization"), "gitrepositories": (SRC_GROUP, "GitRepository")}


def ts(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


class KubeError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.body = status_body(code, reason, message, details)
        self.code = code


def not_found(resource: str, name: str) -> KubeError:
    group, _ = RESOURCES[resource]
    return KubeError(
        404, "NotFound", f'{resource}.{group} "{name}" not found', {"name": name, "group": group, "kind": resource}
    )


def env_name(key: str) -> str:
    """The environment a Kustomization ``<namespace>/<name>`` deploys: ``apps-<env>`` -> ``<env>``, else its name."""
    name = key.rpartition("/")[2]
    return name.removeprefix("apps-") or name


def last_from(dockerfile: str) -> str | None:
    """The image of the last ``FROM`` (the final stage), ``--platform=`` dropped; a stage name is followed back to
    that stage's image."""
    image, stages = None, {}
    for line in dockerfile.splitlines():
        words = [w for w in line.split() if not w.startswith("--")]
        if len(words) >= 2 and words[0].upper() == "FROM":
            image = stages.get(words[1].lower(), words[1])
            if len(words) >= 4 and words[2].upper() == "AS":
                stages[words[3].lower()] = image
    return image


class Flux:
    """The reconciler and the objects it serves; thread-safe (one reconciliation at a time)."""

    def __init__(self, sb: Any) -> None:
        self.sb = sb
        self.store = sb.store("flux")
        self._reconcile_lock = threading.Lock()
        self.outbox = Outbox("flux-notifier", self._send, timeout=DELIVERY_TIMEOUT, idle=2.0)
        self._instance = "kustomize-controller-" + hashlib.sha1(str(sb.config.state_dir).encode()).hexdigest()[:10]
        with self.store.lock:
            for key, default in (("rv", 1000), ("kustomizations", {}), ("history", {}), ("deliveries", [])):
                self.store.data.setdefault(key, default)

    # -- triggers ---------------------------------------------------------------------------------------------
    def on_push(self, payload: dict[str, Any]) -> None:
        if payload.get("project") == PROJECT and payload.get("branch") == BRANCH:
            self.reconcile()

    def maybe_reconcile(self) -> None:
        """Check the branch head when ``flux_interval`` has elapsed since the last check."""
        now = self.sb.clock().timestamp()
        last = self.store.data.get("last_check")
        if last is None or now - last >= self.sb.config.flux_interval:
            self.reconcile()

    def reconcile(self) -> dict[str, Any]:
        """Reconcile the source and every declared Kustomization at the branch head; returns a summary."""
        with self._reconcile_lock:
            now = self.sb.clock()
            with self.store.lock:
                self.store.data["last_check"] = now.timestamp()
            repos = self.sb.repos
            head = repos.branches(PROJECT).get(BRANCH) if repos.exists(PROJECT) else None
            if head is None:
                self.store.save()
                return {"revision": None, "kustomizations": {}}
            revision = f"{BRANCH}@sha1:{head}"
            snap = Snapshot.from_repo(repos, PROJECT, head)
            declared, source_spec = self._declarations(snap)
            self._update_source(revision, head, source_spec, snap, now)
            if declared is not None:
                with self.store.lock:
                    for key in [k for k in self.store.data["kustomizations"] if k not in declared]:
                        del self.store.data["kustomizations"][key]
                for key, doc in declared.items():
                    self._reconcile_one(key, doc, revision, snap, now)
                from fixloop.sandbox.flux import helmreleases  # (it imports this module)

                helmreleases.reconcile(self, snap, head, now)
            self.store.save()
            return {
                "revision": revision,
                "kustomizations": {
                    k: {
                        "ready": _ready(v["object"]).get("status"),
                        "lastAppliedRevision": v["object"]["status"].get("lastAppliedRevision"),
                    }
                    for k, v in self.store.data["kustomizations"].items()
                },
            }

    # -- reconciliation ---------------------------------------------------------------------------------------
    def _declarations(self, snap: Snapshot) -> tuple[dict[str, dict[str, Any]] | None, dict[str, Any] | None]:
        """Kustomizations and the GitRepository spec declared in ``clusters/sandbox``; ``None`` if that does
        not parse (the previous declarations stay, as Flux's own Kustomization would fail to apply)."""
        found: dict[str, dict[str, Any]] = {}
        source = None
        try:
            for path in snap.listdir(CLUSTER_DIR):
                if path.endswith((".yaml", ".yml")):
                    for doc in load_yaml_documents(snap.read(path), path):
                        if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict):
                            continue
                        meta, api = doc["metadata"], str(doc.get("apiVersion", ""))
                        key = f"{meta.get('namespace') or 'flux-system'}/{meta.get('name')}"
                        if doc.get("kind") == "Kustomization" and api.startswith(KS_GROUP + "/"):
                            found[key] = doc
                        elif doc.get("kind") == "GitRepository" and key == SOURCE_KEY:
                            source = doc.get("spec")
        except BuildError as e:
            log.warning("flux: %s does not parse, keeping the previous Kustomizations: %s", CLUSTER_DIR, e)
            return None, None
        return found, json.loads(json.dumps(source, default=str)) if isinstance(source, dict) else None

    def _next_rv(self) -> str:
        self.store.data["rv"] += 1
        return str(self.store.data["rv"])

    def _update_source(
        self, revision: str, head: str, spec: dict[str, Any] | None, snap: Snapshot, now: datetime
    ) -> None:
        with self.store.lock:
            src = self.store.data.get("source")
            spec = spec or {
                "interval": "1m0s",
                "ref": {"branch": BRANCH},
                "url": self.sb.url("/gitlab", f"/{PROJECT}.git"),
            }
            if src is None:
                src = self.store.data["source"] = {
                    "object": self._new_object(SRC_GROUP, "GitRepository", SOURCE_KEY, spec, now)
                }
            obj = src["object"]
            if obj["spec"] != spec:
                obj["spec"], obj["metadata"]["generation"] = spec, obj["metadata"]["generation"] + 1
            if (
                obj["status"].get("artifact", {}).get("revision") == revision
                and obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
            ):
                return
            gen, path = obj["metadata"]["generation"], f"gitrepository/flux-system/flux-system/{head}.tar.gz"
            digest = "sha256:" + hashlib.sha256("\n".join(sorted(snap.files)).encode() + head.encode()).hexdigest()
            message = f"stored artifact for revision '{revision}'"
            obj["status"] = {
                "artifact": {
                    "digest": digest,
                    "lastUpdateTime": ts(now),
                    "path": path,
                    "revision": revision,
                    "size": len(snap.files) * 512,
                    "url": f"http://source-controller.flux-system.svc.cluster.local./{path}",
                },
                "conditions": [
                    _condition(obj, "Ready", "True", "Succeeded", message, now, gen),
                    _condition(obj, "ArtifactInStorage", "True", "Succeeded", message, now, gen),
                ],
                "observedGeneration": gen,
            }
            obj["metadata"]["resourceVersion"] = self._next_rv()

    def _new_object(self, group: str, kind: str, key: str, spec: dict[str, Any], now: datetime) -> dict[str, Any]:
        ns, name = key.split("/", 1)
        return {
            "apiVersion": f"{group}/{VERSION}",
            "kind": kind,
            "metadata": {
                "creationTimestamp": ts(now),
                "finalizers": ["finalizers.fluxcd.io"],
                "generation": 1,
                "labels": {
                    "kustomize.toolkit.fluxcd.io/name": "flux-system",
                    "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
                },
                "name": name,
                "namespace": ns,
                "resourceVersion": self._next_rv(),
                "uid": str(uuid.uuid4()),
            },
            "spec": spec,
            "status": {"conditions": [], "observedGeneration": -1},
        }

    def _reconcile_one(self, key: str, doc: dict[str, Any], revision: str, snap: Snapshot, now: datetime) -> None:
        spec = json.loads(json.dumps(doc.get("spec") if isinstance(doc.get("spec"), dict) else {}, default=str))
        with self.store.lock:
            state = self.store.data["kustomizations"].get(key)
            if state is None:
                obj = self._new_object(KS_GROUP, "Kustomization", key, spec, now)
                state = self.store.data["kustomizations"][key] = {"object": obj, "applied": {}, "workloads": {}}
            obj = state["object"]
            if obj["spec"] != spec:
                obj["spec"], obj["metadata"]["generation"] = spec, obj["metadata"]["generation"] + 1
            gen, status = obj["metadata"]["generation"], obj["status"]
            if status.get("lastAttemptedRevision") == revision and status.get("observedGeneration") == gen:
                return
        started = time.perf_counter()
        try:
            objects = kustomize.build(snap, str(spec.get("path") or "./"))
        except BuildError as e:
            reason = "ArtifactFailed" if isinstance(e, PathNotFound) else "BuildFailed"
            self._fail(
                key, revision, reason, str(e) if reason == "ArtifactFailed" else f"kustomize build failed: {e}", now
            )
            return
        inventory = {
            _inventory_id(o): hashlib.sha256(json.dumps(o, sort_keys=True, default=str).encode()).hexdigest()
            for o in objects
        }
        workloads = {
            o["metadata"]["name"]: {c.get("name", "?"): c.get("image", "") for c in containers(o)}
            for o in objects
            if o.get("kind") == "Deployment"
        }
        specs = {o["metadata"]["name"]: spec_of(o) for o in objects if o.get("kind") == "Deployment"}
        with self.store.lock:
            previous = state["applied"]
            changes = [
                _change_line(i, "created" if i not in previous else "configured")
                for i, d in inventory.items()
                if previous.get(i) != d
            ]
            if spec.get("prune", False):
                changes += [_change_line(i, "deleted") for i in previous if i not in inventory]
            message = f"Applied revision: {revision}"
            # kustomize-controller marks Ready=Unknown "Reconciliation in progress" at the start of every
            # reconciliation; the sandbox reconciles only new revisions, so Ready's lastTransitionTime moves then
            moved = status.get("lastAppliedRevision") != revision
            conds = [_condition(obj, "Ready", "True", "ReconciliationSucceeded", message, now, gen, moved)]
            if spec.get("wait") or spec.get("healthChecks"):
                elapsed = f"{(time.perf_counter() - started) * 1000:.4g}ms"
                conds.append(
                    _condition(obj, "Healthy", "True", "Succeeded", f"Health check passed in {elapsed}", now, gen)
                )
            obj["status"] = {
                "conditions": conds,
                "inventory": {
                    "entries": [{"id": i, "v": _version(o)} for i, o in zip(inventory, objects, strict=True)]
                },
                "lastAppliedRevision": revision,
                "lastAttemptedRevision": revision,
                "observedGeneration": gen,
            }
            obj["metadata"]["resourceVersion"] = self._next_rv()
            state["applied"], state["workloads"] = inventory, workloads
            self._record_deployments(state, objects, now)
            history = self.store.data["history"].setdefault(key, [])
            history.append({"revision": revision, "at": ts(now)})
            del history[:-HISTORY_MAX]
            self.store.save()
        if changes:
            self._emit(obj, "info", "Progressing", "\n".join(changes), revision, now)
        took = f"{(time.perf_counter() - started) * 1000:.0f}ms"
        self._emit(
            obj,
            "info",
            "ReconciliationSucceeded",
            f"Reconciliation finished in {took}, next run in {spec.get('interval', '10m0s')}",
            revision,
            now,
        )
        if workloads:
            self._record_world(key, now, revision, workloads, snap, specs)

    def _record_deployments(self, state: dict[str, Any], objects: list[dict[str, Any]], now: datetime) -> None:
        """Keep each rendered Deployment (``state["deployments"]``, name -> ``{manifest, generation, uid, created}``):
        ``metadata.generation`` + 1 when its spec changed, as the API server counts it (``fixloop.sandbox.flux.
        workloads`` serves them with a status from the world's pods)."""
        kept = state.setdefault("deployments", {})
        rendered = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "Deployment"}
        for name in [n for n in kept if n not in rendered]:
            del kept[name]
        for name, manifest in rendered.items():
            doc = json.loads(json.dumps(manifest, default=str))
            old = kept.get(name)
            if old is None:
                kept[name] = {"manifest": doc, "generation": 1, "uid": str(uuid.uuid4()), "created": ts(now)}
            elif old["manifest"].get("spec") != doc.get("spec"):
                old.update(manifest=doc, generation=old["generation"] + 1)
            else:
                old["manifest"] = doc

    def _fail(self, key: str, revision: str, reason: str, message: str, now: datetime) -> None:
        with self.store.lock:
            obj = self.store.data["kustomizations"][key]["object"]
            gen, status = obj["metadata"]["generation"], obj["status"]
            timeout = obj["spec"].get("timeout", "5m0s")
            keep = [c for c in status.get("conditions", []) if c["type"] == "Healthy"]
            status["conditions"] = [
                _condition(
                    obj,
                    "Reconciling",
                    "True",
                    "ProgressingWithRetry",
                    f"Building manifests for revision {revision} with a timeout of {timeout}",
                    now,
                    gen,
                ),
                _condition(obj, "Ready", "False", reason, message, now, gen),
                *keep,
            ]
            status["lastAttemptedRevision"], status["observedGeneration"] = revision, gen
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self.store.save()
        self._emit(obj, "error", reason, message, revision, now)

    def _record_world(
        self,
        key: str,
        now: datetime,
        revision: str,
        workloads: dict[str, dict[str, str]],
        snap: Snapshot,
        specs: dict[str, dict[str, Any]],
    ) -> None:
        """Record the apply of ``revision`` by Kustomization ``key`` in the world, as environment ``env_name(key)``
        (the package docstring says what is recorded; a failing world is logged only)."""
        try:
            env = env_name(key)
            sources, unpulled = self._sources(key, workloads, revision.rpartition(":")[2])
            snaps: dict[str, Snapshot] = {}
            files: dict[str, str] = {}
            record = {svc: dict(c) for svc, c in workloads.items()}
            for svc in record:
                built = self._built(snaps, sources.get(svc), snap)
                for path in built.listdir(f"services/{svc}"):
                    files[path] = built.read(path).decode("utf-8", errors="replace")
                for path in snap.listdir(f"apps/base/{svc}"):
                    files[path] = snap.read(path).decode("utf-8", errors="replace")
                dockerfile = files.get(f"services/{svc}/Dockerfile")
                base = last_from(dockerfile) if dockerfile else None
                if base:
                    record[svc]["base-image"] = base
            self.sb.world.record_deploy(now, revision, record, files, specs, env=env, unpulled=unpulled)
        except Exception:
            log.exception("flux: recording the deploy of %s in the world failed (reconciliation goes on)", revision)

    def _built(self, snaps: dict[str, Snapshot], commit: str | None, applied: Snapshot) -> Snapshot:
        """The tree of ``commit`` (cached in ``snaps``), or ``applied`` when there is none or it is not in the
        repository (a registry record of another repository's build: logged)."""
        if not commit:
            return applied
        if commit not in snaps:
            try:
                snaps[commit] = Snapshot.from_repo(self.sb.repos, PROJECT, commit)
            except RepoError:
                log.warning("flux: the build commit %s is not in %s; reading the applied revision", commit, PROJECT)
                snaps[commit] = applied
        return snaps[commit]

    def _sources(
        self, key: str, workloads: dict[str, dict[str, str]], head: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Per Deployment of Kustomization ``key``, the commit its running image was built from, and the images of
        the new pod templates that cannot be pulled (``{service: image}``). The image is the container named as the
        Deployment (else its first); the commit is the sandbox registry's record of that tag (``source``, set by the
        CI stand-in), else the revision that first applied the image here. An image of ``registry.sandbox.local``
        that changed to a tag the registry lacks and this Kustomization never ran (node cache) cannot be pulled: the
        service keeps its previous source. Kept in ``state["sources"]`` (``{service: {"image", "commit"}}``) and
        ``state["ran"]`` (``{service: [images]}``)."""
        registry = registry_store(self.sb)
        unpulled: dict[str, str] = {}
        with self.store.lock:
            state = self.store.data["kustomizations"][key]
            sources = state.setdefault("sources", {})
            ran = state.setdefault("ran", {})
            for svc, containers_ in workloads.items():
                image = containers_.get(svc) or next(iter(containers_.values()), "")
                prev = sources.get(svc)
                if prev is not None and prev["image"] == image:
                    continue
                record = pushed(registry, image)
                if (
                    prev is not None
                    and image.startswith(HOST + "/")
                    and record is None
                    and image not in ran.get(svc, [])
                ):
                    unpulled[svc] = image
                    continue
                sources[svc] = {"image": image, "commit": str((record or {}).get("source") or head)}
                ran.setdefault(svc, []).append(image)
                del ran[svc][:-HISTORY_MAX]
            self.store.save()
            return {svc: s["commit"] for svc, s in sources.items()}, unpulled

    # -- events -----------------------------------------------------------------------------------------------
    def _emit(
        self, obj: dict[str, Any], severity: str, reason: str, message: str, revision: str, now: datetime
    ) -> None:
        meta = obj["metadata"]
        event = {
            "involvedObject": {
                "kind": obj["kind"],
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": obj["apiVersion"],
                "resourceVersion": meta["resourceVersion"],
            },
            "severity": severity,
            "timestamp": ts(now),
            "message": message,
            "reason": reason,
            "metadata": {f"{KS_GROUP}/revision": revision},
            "reportingController": "kustomize-controller",
            "reportingInstance": self._instance,
        }
        url = self.sb.config.flux_webhook_url
        record = {
            "id": str(uuid.uuid4()),
            "at": ts(now),
            "url": url,
            "object": f"{meta['namespace']}/{meta['name']}",
            "reason": reason,
            "revision": revision,
            "state": "pending" if url else "not-sent",
        }
        with self.store.lock:
            self.store.data["deliveries"].append(record)
            del self.store.data["deliveries"][:-DELIVERIES_MAX]
            self.store.save()
        if url:
            self.outbox.put({"url": url, "event": event, "id": record["id"]})

    def signed_request(self, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The body and headers notification-controller sends for ``event`` (Go ``json.Marshal``: compact)."""
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "Gotk-Component": event["reportingController"],
            "User-Agent": "Go-http-client/1.1",
        }
        if self.sb.config.flux_provider == "generic-hmac":
            key = self.sb.credentials.flux_hmac_key.get_secret_value().encode()
            headers["X-Signature"] = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        return body, headers

    def _send(self, client: httpx.Client, item: dict[str, Any]) -> None:
        """POST one event (no retry, as notification-controller's generic providers) and record the outcome."""
        body, headers = self.signed_request(item["event"])
        try:
            resp = client.post(item["url"], content=body, headers=headers)
            outcome = {"state": "delivered" if resp.is_success else "failed", "status": resp.status_code}
        except httpx.HTTPError as e:
            outcome = {"state": "failed", "error": type(e).__name__}
        if outcome["state"] != "delivered":
            log.warning("flux: event delivery to %s failed: %s", item["url"], outcome)
        with self.store.lock:
            for rec in self.store.data["deliveries"]:
                if rec["id"] == item["id"]:
                    rec.update(outcome)
            self.store.save()

    # -- reading ----------------------------------------------------------------------------------------------
    def get(self, resource: str, ns: str, name: str) -> dict[str, Any]:
        with self.store.lock:
            obj = self._objects(resource).get(f"{ns}/{name}")
            if obj is None:
                raise not_found(resource, name)
            return json.loads(json.dumps(obj))

    def list(self, resource: str, ns: str | None) -> dict[str, Any]:
        group, kind = RESOURCES[resource]
        return self.object_list(lambda: self._objects(resource), f"{group}/{VERSION}", kind, ns)

    def object_list(
        self, objects: Callable[[], dict[str, dict[str, Any]]], api_version: str, kind: str, ns: str | None
    ) -> dict[str, Any]:
        """A ``<kind>List`` of ``objects()`` (``namespace/name`` -> object, read under the store's lock), in
        ``ns`` (None: every namespace), copies, with the store's resourceVersion."""
        with self.store.lock:
            items = [
                json.loads(json.dumps(o))
                for k, o in sorted(objects().items())
                if ns is None or k.split("/", 1)[0] == ns
            ]
            rv = str(self.store.data["rv"])
        return {
            "apiVersion": api_version,
            "items": items,
            "kind": f"{kind}List",
            "metadata": {"continue": "", "resourceVersion": rv},
        }

    def _objects(self, resource: str) -> dict[str, dict[str, Any]]:
        if resource == "kustomizations":
            return {k: v["object"] for k, v in self.store.data["kustomizations"].items()}
        src = self.store.data.get("source")
        return {SOURCE_KEY: src["object"]} if src else {}


def _ready(obj: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in obj["status"].get("conditions", []) if c["type"] == "Ready"), {})


def _condition(
    obj: dict[str, Any],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
    gen: int,
    moved: bool = False,
) -> dict[str, Any]:
    """A metav1.Condition; ``lastTransitionTime`` moves only when the status changes (``moved``: it changed and
    back in between)."""
    old = next((c for c in obj["status"].get("conditions", []) if c["type"] == type_), None)
    since = old["lastTransitionTime"] if old and old["status"] == status and not moved else ts(now)
    return {
        "lastTransitionTime": since,
        "message": message,
        "observedGeneration": gen,
        "reason": reason,
        "status": status,
        "type": type_,
    }


def _inventory_id(o: dict[str, Any]) -> str:
    """Flux's inventory id ``<namespace>_<name>_<group>_<kind>`` (ObjMetadata string)."""
    api = o["apiVersion"]
    group = api.split("/")[0] if "/" in api else ""
    return f"{o['metadata'].get('namespace', '')}_{o['metadata']['name']}_{group}_{o['kind']}"


def _version(o: dict[str, Any]) -> str:
    return o["apiVersion"].split("/")[-1]


def _change_line(inventory_id: str, action: str) -> str:
    ns, name, _group, kind = inventory_id.split("_", 3)
    return f"{kind}/{ns + '/' if ns else ''}{name} {action}"
