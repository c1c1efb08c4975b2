"""The rollout verdict (fixloop/core/rollout.py) on recorded Kubernetes objects (tests/fixtures/recorded/kubernetes)
and on arbitrary input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from fixloop.core.rollout import MAX_REASONS, RolloutState, image_matches, rollout, split_image

K8S = Path(__file__).resolve().parent / "fixtures" / "recorded" / "kubernetes"
DIGEST = "sha256:" + "ab" * 32


def load(name: str) -> dict[str, Any]:
    text = (K8S / name).read_text()
    return (
        json.loads(text) if name.endswith(".json") else json.loads(json.dumps(YAML(typ="safe").load(text), default=str))
    )


DEADLINE = load("gitops-engine_deployment_progressdeadlineexceeded.yaml")
CRASHING = load("gitops-engine_pod_crashloopbackoff.yaml")
RUNNING = load("kubectl-neat_pod_running_restartcount3.json")


def healthy(replicas: int = 3) -> dict[str, Any]:
    """The recorded Deployment after a finished rollout of ``replicas``: conditions and counts as the controller
    leaves them."""
    d = copy.deepcopy(DEADLINE)
    d["spec"]["replicas"] = replicas
    d["status"] = {
        "observedGeneration": d["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
        ],
    }
    return d


def test_progress_deadline_exceeded_is_stuck() -> None:
    v = rollout(DEADLINE, [], None)
    assert v.state is RolloutState.STUCK
    assert any("progress deadline exceeded" in r and "guestbook-ui-75dd4d49d5" in r for r in v.reasons)
    assert (v.replicas, v.updated, v.ready, v.available) == (1, 1, 1, 1)
    assert any("1 old replicas pending termination (2 for 1)" in r for r in v.reasons)


def test_crashloopbackoff_pod_is_stuck_even_when_counts_are_complete() -> None:
    v = rollout(healthy(1), [CRASHING], None)
    assert v.state is RolloutState.STUCK
    assert v.reasons[0].startswith("container main of pod my-pod waiting in CrashLoopBackOff after 3 restarts")
    assert v.restarts == {"my-pod/main": 3}


def test_two_of_three_ready_is_progressing() -> None:
    d = healthy(3)
    d["status"].update(readyReplicas=2, availableReplicas=2)
    v = rollout(d, [RUNNING], None)
    assert v.state is RolloutState.PROGRESSING
    assert "Deployment guestbook-ui: 2 of 3 replicas ready" in v.reasons
    assert "Deployment guestbook-ui: 2 of 3 replicas available" in v.reasons


def test_complete_and_restart_growth() -> None:
    d = healthy(1)
    assert rollout(d, [RUNNING], "gcr.io/heptio-images/ks-guestbook-demo:0.3").state is RolloutState.COMPLETE
    # the same restart count as the last read: not growth; one more: stuck, with the last termination's reason
    assert rollout(d, [RUNNING], None, {"myapp/myapp": 3}).complete
    grown = rollout(d, [RUNNING], None, {"myapp/myapp": 1})
    assert grown.state is RolloutState.STUCK
    assert grown.reasons == [
        "container myapp of pod myapp restarted 2 times since the last read (1 -> 3), last terminated: Completed"
    ]


def test_generation_not_observed_is_progressing() -> None:
    d = healthy(1)
    d["metadata"]["generation"] = 5
    v = rollout(d, [], None)
    assert v.state is RolloutState.PROGRESSING
    assert v.reasons == ["Deployment guestbook-ui: spec generation 5 not observed yet (observedGeneration 4)"]


def test_image_tag_and_digest() -> None:
    d = healthy(1)
    wrong = rollout(d, [RUNNING], "gcr.io/heptio-images/ks-guestbook-demo:0.4")
    assert wrong.state is RolloutState.STUCK
    assert "runs gcr.io/heptio-images/ks-guestbook-demo:0.3, not the built image" in wrong.reasons[0]
    # a digest matches the template pinned to it, or what every pod pulled for a tag-only template
    assert image_matches(f"registry/x@{DIGEST}", f"registry/x:1.2@{DIGEST}", [])
    assert image_matches(DIGEST, "registry/x:1.2", [DIGEST, DIGEST])
    assert not image_matches(DIGEST, "registry/x:1.2", [DIGEST, None])
    assert not image_matches(DIGEST, "registry/x:1.2", [])
    assert image_matches("nginx", "docker.io/library/nginx:latest", [])
    pulled = "96fb261b66270b900ea5a2c17a26abbfabe95506e73c3a3c65869a6dbe83223a"
    running_d = healthy(1)
    running_d["spec"]["template"]["spec"]["containers"] = [{"name": "myapp", "image": "nginx"}]
    assert rollout(running_d, [RUNNING], f"sha256:{pulled}").complete
    assert split_image("localhost:5000/a/b:1@" + DIGEST) == ("localhost:5000/a/b", "1", DIGEST)


def test_statefulset_revisions_and_partition() -> None:
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "generation": 2},
        "spec": {"replicas": 3, "updateStrategy": {"type": "RollingUpdate"}},
        "status": {
            "observedGeneration": 2,
            "replicas": 3,
            "readyReplicas": 3,
            "availableReplicas": 3,
            "updatedReplicas": 3,
            "currentRevision": "db-1",
            "updateRevision": "db-2",
        },
    }
    v = rollout(sts, [], None)
    assert v.state is RolloutState.PROGRESSING and v.reasons == [
        "StatefulSet db: pods at revision db-1, update revision db-2"
    ]
    sts["status"]["currentRevision"] = "db-2"
    assert rollout(sts, [], None).complete
    sts["spec"]["updateStrategy"]["rollingUpdate"] = {"partition": 2}
    sts["status"].update(updatedReplicas=1, currentRevision="db-1")
    assert rollout(sts, [], None).complete  # the one pod above the partition is updated


def test_not_a_workload_and_bounded_reasons() -> None:
    assert rollout({"kind": "Service"}, [], None).state is RolloutState.STUCK
    crashing = [copy.deepcopy(CRASHING) for _ in range(30)]
    for i, p in enumerate(crashing):
        p["metadata"]["name"] = f"p{i}"
    v = rollout(healthy(1), crashing, None)
    assert len(v.reasons) == MAX_REASONS and v.reasons[-1] == f"and {30 - MAX_REASONS + 1} more"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)
keys = st.sampled_from(["kind", "metadata", "spec", "status", "name", "replicas", "conditions", "containerStatuses"])
shaped = st.recursive(
    json_values, lambda inner: st.dictionaries(keys | st.text(max_size=8), inner, max_size=6), max_leaves=40
)


@settings(max_examples=300, deadline=None)
@given(
    workload=st.one_of(shaped, st.builds(lambda s: {**healthy(2), "status": s}, shaped)),
    pods=st.lists(st.one_of(shaped, st.builds(lambda s: {**CRASHING, "status": s}, shaped)), max_size=4),
    image=st.none() | st.text(max_size=40),
    previous=st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=3),
)
def test_never_raises_on_arbitrary_input(workload: Any, pods: Any, image: Any, previous: Any) -> None:
    v = rollout(workload, pods, image, previous)
    assert v.state in set(RolloutState) and len(v.reasons) <= MAX_REASONS
    assert (v.state is RolloutState.COMPLETE) == (not v.reasons)
