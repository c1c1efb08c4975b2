"""Whether a workload's rollout is complete, still progressing, or stuck: pure, on the objects as the Kubernetes API
serves them (dicts of ``apps/v1`` Deployments and StatefulSets and ``core/v1`` Pods).

The rules follow ``kubectl rollout status`` (kubernetes/kubectl ``pkg/polymorphichelpers/rollout_status.go``) and the
Kubernetes documentation (concepts/workloads/controllers/deployment.md "Deployment status", "Failed Deployment";
statefulset.md "Rolling Updates"), made stricter where a verification needs it:

* **current**: ``status.observedGeneration >= metadata.generation`` (a StatefulSet's ``observedGeneration`` must also
  be set); else progressing ("spec update not observed yet").
* **counts**: ``status.updatedReplicas``, ``readyReplicas`` and ``availableReplicas`` each equal ``spec.replicas``
  (1 when unset, as the API server defaults it), and ``status.replicas`` too (no old pod pending termination);
  the API server omits a count that is 0. A StatefulSet with a ``rollingUpdate.partition`` counts the
  ``spec.replicas - partition`` pods above the partition as updated (kubectl's partitioned roll out); one
  without a partition needs ``status.currentRevision == status.updateRevision``.
* **stuck** (waiting will not help; verification must not start): a Deployment's ``Progressing`` condition with
  reason ``ProgressDeadlineExceeded`` (status False) or a ``ReplicaFailure`` condition True; a container of a
  selected pod waiting in ``CrashLoopBackOff`` or another reason that does not clear by itself (``STUCK_WAITING``:
  image pull and config errors); a container whose ``restartCount`` grew since ``previous_restarts`` (keys
  ``<pod>/<container>``, the ``restarts`` of an earlier verdict); the pod template running none of the expected
  image.
* **image**: ``expected_image`` is an image reference (``repo:tag``, ``repo@sha256:<hex>``,
  ``repo:tag@sha256:<hex>``) or a bare digest (``sha256:<hex>``). A template container matches a tag reference
  when its repository (``docker.io/`` and ``library/`` dropped) and tag (``latest`` when absent) are the same; a
  digest matches a template image pinned to that digest, or, for a template that names a tag only, when every
  selected pod's status of that container reports that digest in ``imageID`` (what the kubelet pulled).

Pods being deleted (``metadata.deletionTimestamp`` set) are not read, nor, for the crash and restart rules while old
replicas remain (``status.replicas`` above ``updatedReplicas``), pods of an earlier template (a container named as the
template's whose ``image``, ``env`` or ``resources`` differ: the old ReplicaSet's, which the rollout replaces; an
OOM-killed pod that a memory change replaces is not the change's fault). Anything malformed is read as absent: this
never raises (fuzzed), and an object that is neither a Deployment nor a StatefulSet is stuck, saying so. Reasons are
in words and numbers, bounded in count (``MAX_REASONS``) and length; ``restarts`` holds at most ``MAX_CONTAINERS``
entries.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from fixloop.core.parsing import clean

MAX_REASONS = 12
MAX_CONTAINERS = 200  # pod/container restart counts kept (a verdict's payload stays bounded)
NAME_MAX = 253  # a DNS-1123 subdomain: what Kubernetes allows for a pod or workload name
IMAGE_MAX = 300
# waiting reasons that do not clear by themselves (the kubelet's: kubelet/images/types.go, kuberuntime)
STUCK_WAITING = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
DEADLINE = "ProgressDeadlineExceeded"  # the Progressing condition's reason when progressDeadlineSeconds passed
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class RolloutState(StrEnum):
    COMPLETE = "complete"
    PROGRESSING = "progressing"
    STUCK = "stuck"


class RolloutVerdict(BaseModel):
    """``state`` and why (``reasons``, empty when complete), the figures read (``replicas`` wanted, ``updated``,
    ``ready``, ``available``), the pod template's images and ``restarts`` (``<pod>/<container>`` -> restartCount
    now: hand it back as ``previous_restarts`` on the next read to see growth)."""

    model_config = ConfigDict(frozen=True)

    state: RolloutState
    reasons: list[str] = []
    kind: str = ""
    name: str = ""
    replicas: int = 0
    updated: int = 0
    ready: int = 0
    available: int = 0
    images: list[str] = []
    restarts: dict[str, int] = {}

    @property
    def complete(self) -> bool:
        return self.state is RolloutState.COMPLETE


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _items(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _word(value: Any, limit: int = NAME_MAX) -> str:
    return clean(value, limit) if isinstance(value, str) else ""


def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """``(repository, tag, digest)`` of an image reference: ``registry/repo:tag@sha256:<hex>``; the repository with
    ``docker.io/`` and ``library/`` dropped (Docker Hub's implicit names); a bare ``sha256:<hex>`` is ``("", None,
    digest)``."""
    text = ref.strip().lower()
    if _DIGEST.match(text):
        return "", None, text
    name, _, digest = text.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    for prefix in ("docker.io/", "index.docker.io/"):
        name = name.removeprefix(prefix)
    name = name.removeprefix("library/")
    return name, tag or None, digest or None


def _image_id_digest(image_id: Any) -> str | None:
    text = image_id.lower() if isinstance(image_id, str) else ""
    at = text.rfind("@")
    digest = text[at + 1 :] if at >= 0 else text.rpartition("//")[2]
    return digest if _DIGEST.match(digest) else None


def image_matches(expected: str, template_image: str, pulled: list[str | None]) -> bool:
    """Whether a pod template container's ``template_image`` is ``expected`` (module docstring, "image");
    ``pulled``: the digests the selected pods report for that container (``imageID``; None when unknown)."""
    want_repo, want_tag, want_digest = split_image(expected)
    repo, tag, digest = split_image(template_image)
    if want_repo and want_repo != repo:
        return False
    if want_digest:
        if digest:
            return digest == want_digest
        if want_tag and want_tag != (tag or "latest"):
            return False
        return bool(pulled) and all(p == want_digest for p in pulled)
    return (want_tag or "latest") == (tag or "latest")


_TEMPLATE_FIELDS = ("image", "env", "resources")


def _runs_template(pod: dict[str, Any], containers: list[dict[str, Any]]) -> bool:
    """Whether ``pod`` runs the template's ``containers``: each of its containers named like a template one has the
    same ``image``, ``env`` and ``resources`` (what a rollout changes; the API server adds defaults elsewhere). A pod
    that shows no containers is taken to run it."""
    theirs = {_word(c.get("name"), 63): c for c in _items(_d(pod.get("spec")).get("containers"))}
    if not theirs:
        return True
    for c in containers:
        other = theirs.get(_word(c.get("name"), 63))
        if other is not None and any(c.get(f) != other.get(f) for f in _TEMPLATE_FIELDS if f in c or f in other):
            return False
    return True


def rollout(
    workload: dict[str, Any],
    pods: list[dict[str, Any]],
    expected_image: str | None = None,
    previous_restarts: dict[str, int] | None = None,
) -> RolloutVerdict:
    """The ``RolloutVerdict`` of ``workload`` (an ``apps/v1`` Deployment or StatefulSet as the API serves it) given
    the pods its selector selects (``core/v1`` Pods), ``expected_image`` (the built tag or digest; None: not
    checked) and the restart counts of an earlier read (see the module docstring). Never raises."""
    obj, reasons_stuck, reasons_wait = _d(workload), [], []
    kind = _word(obj.get("kind"), 40)
    meta, spec, status = _d(obj.get("metadata")), _d(obj.get("spec")), _d(obj.get("status"))
    name = _word(meta.get("name"))
    label = f"{kind or 'workload'} {name or '?'}"
    wanted = _int(spec.get("replicas"), 1)
    updated, ready = _int(status.get("updatedReplicas")), _int(status.get("readyReplicas"))
    available, current = _int(status.get("availableReplicas")), _int(status.get("replicas"))
    template = _d(_d(spec.get("template")).get("spec"))
    containers = _items(template.get("containers"))
    images = [_word(c.get("image"), IMAGE_MAX) for c in containers]
    live = [p for p in (pods if isinstance(pods, list) else []) if isinstance(p, dict)]
    live = [p for p in live if not _d(p.get("metadata")).get("deletionTimestamp")]

    def verdict(state: RolloutState, reasons: list[str], restarts: dict[str, int] | None = None) -> RolloutVerdict:
        if len(reasons) > MAX_REASONS:
            reasons = [*reasons[: MAX_REASONS - 1], f"and {len(reasons) - MAX_REASONS + 1} more"]
        return RolloutVerdict(
            state=state,
            reasons=reasons,
            kind=kind,
            name=name,
            replicas=wanted,
            updated=updated,
            ready=ready,
            available=available,
            images=images[:20],
            restarts=restarts or {},
        )

    if kind not in ("Deployment", "StatefulSet"):
        return verdict(RolloutState.STUCK, [f"{label}: not a Deployment or StatefulSet, its rollout cannot be read"])

    # -- the controller's view ------------------------------------------------------------------------------
    generation = _int(meta.get("generation"), 0)
    observed = status.get("observedGeneration")
    if not isinstance(observed, int) or isinstance(observed, bool) or observed < generation or observed == 0:
        reasons_wait.append(
            f"{label}: spec generation {generation} not observed yet (observedGeneration {_int(observed, 0)})"
        )
    conditions = {_word(c.get("type"), 60): c for c in _items(status.get("conditions"))}
    progressing = conditions.get("Progressing", {})
    if progressing.get("reason") == DEADLINE:
        message = _word(progressing.get("message"), 200)
        reasons_stuck.append(f"{label}: progress deadline exceeded ({message or DEADLINE})")
    failure = conditions.get("ReplicaFailure", {})
    if failure.get("status") == "True":
        why = _word(failure.get("message"), 200) or _word(failure.get("reason"), 60) or "ReplicaFailure"
        reasons_stuck.append(f"{label}: replica failure ({why})")

    partition = _int(_d(_d(spec.get("updateStrategy")).get("rollingUpdate")).get("partition"), 0)
    need_updated = max(0, wanted - partition) if kind == "StatefulSet" else wanted
    if updated < need_updated:
        reasons_wait.append(f"{label}: {updated} of {need_updated} replicas updated")
    if ready < wanted:
        reasons_wait.append(f"{label}: {ready} of {wanted} replicas ready")
    if available < wanted:
        reasons_wait.append(f"{label}: {available} of {wanted} replicas available")
    if current > wanted:
        reasons_wait.append(f"{label}: {current - wanted} old replicas pending termination ({current} for {wanted})")
    if kind == "StatefulSet" and partition == 0:
        cur, upd = _word(status.get("currentRevision")), _word(status.get("updateRevision"))
        if cur != upd:
            reasons_wait.append(f"{label}: pods at revision {cur or '?'}, update revision {upd or '?'}")

    # -- the pods -----------------------------------------------------------------------------------------------
    previous = previous_restarts if isinstance(previous_restarts, dict) else {}
    restarts: dict[str, int] = {}
    pulled: dict[str, list[str | None]] = {}
    old = [p for p in live if not _runs_template(p, containers)] if current > updated else []
    for pod in live:
        if any(pod is o for o in old):
            continue  # a pod of an earlier template: its crash loop is what the rollout replaces
        pod_name = _word(_d(pod.get("metadata")).get("name")) or "?"
        pod_status = _d(pod.get("status"))
        for cs in _items(pod_status.get("containerStatuses")):
            cname = _word(cs.get("name"), 63) or "?"
            key = f"{pod_name}/{cname}"
            count = _int(cs.get("restartCount"))
            if len(restarts) < MAX_CONTAINERS:
                restarts[key] = count
            pulled.setdefault(cname, []).append(_image_id_digest(cs.get("imageID")))
            waiting = _d(_d(cs.get("state")).get("waiting"))
            reason = _word(waiting.get("reason"), 60)
            if reason in STUCK_WAITING:
                message = _word(waiting.get("message"), 160)
                reasons_stuck.append(
                    f"container {cname} of pod {pod_name} waiting in {reason} after {count} restarts"
                    + (f" ({message})" if message else "")
                )
            before = previous.get(key)
            if _int(before, -1) >= 0 and count > before:
                last = _word(_d(_d(cs.get("lastState")).get("terminated")).get("reason"), 60)
                reasons_stuck.append(
                    f"container {cname} of pod {pod_name} restarted {count - before} times since the last read "
                    f"({before} -> {count})" + (f", last terminated: {last}" if last else "")
                )

    if expected_image is not None:
        want = _word(expected_image, IMAGE_MAX)
        if not any(
            image_matches(want, img, pulled.get(_word(c.get("name"), 63) or "?", []))
            for c, img in zip(containers, images, strict=True)
        ):
            shown = ", ".join(images[:5]) or "no containers"
            reasons_stuck.append(f"{label}: pod template runs {shown}, not the built image {want}")

    if reasons_stuck:
        return verdict(RolloutState.STUCK, reasons_stuck + reasons_wait, restarts)
    if reasons_wait:
        return verdict(RolloutState.PROGRESSING, reasons_wait, restarts)
    return verdict(RolloutState.COMPLETE, [], restarts)
