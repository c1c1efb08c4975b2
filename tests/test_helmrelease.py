"""The HelmRelease verdict (fixloop/core/helmrelease.py) on recorded helm-controller objects
(tests/fixtures/recorded/flux) and on arbitrary input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from fixloop.core.helmrelease import HelmReleaseState, helmrelease, holds, source_sha

FLUX = Path(__file__).resolve().parent / "fixtures" / "recorded" / "flux"
SHA = "0123456789abcdef0123456789abcdef01234567"


def load(name: str, kind: str | None = "HelmRelease") -> dict[str, Any]:
    docs = [d for d in YAML(typ="safe").load_all((FLUX / name).read_text()) if d]
    doc = next(d for d in docs if kind is None or d.get("kind") in (None, kind))
    return json.loads(json.dumps(doc, default=str))


HISTORY = load("helm-controller-docs-v2_helmrelease-status_history.yaml")
INSTALLED = load("helm-controller-docs-v2beta1_helmrelease-status_install-succeeded.yaml")
UPGRADE_FAILED = load("helm-controller-docs-v2beta1_helmrelease-status_upgrade-failed.yaml")
OCI = load("flux2-testdata_trace_helmrelease-oci.yaml")
TRACE = load("flux2-testdata_trace_deployment.yaml")


def v2_ready(**status: Any) -> dict[str, Any]:
    """The recorded v2 history object with what helm-controller sets beside it after the upgrade it records."""
    obj = copy.deepcopy(HISTORY)
    obj["metadata"].update(name="podinfo", namespace="podinfo", generation=2)
    message = "Helm upgrade succeeded for release podinfo/podinfo.v2 with chart podinfo@6.6.1+0cc9a8446c95"
    obj["status"].update(
        conditions=[
            {"type": "Ready", "status": "True", "reason": "UpgradeSucceeded", "message": message},
            {"type": "Released", "status": "True", "reason": "UpgradeSucceeded", "message": message},
        ],
        observedGeneration=2,
        lastAttemptedGeneration=2,
        lastAttemptedRevision="6.6.1+0cc9a8446c95",
        lastAttemptedConfigDigest=obj["status"]["history"][0]["configDigest"],
        lastAttemptedReleaseAction="upgrade",
        inventory={
            "entries": [{"id": "podinfo_podinfo_apps_Deployment", "v": "v1"}, {"id": "podinfo_podinfo__Service"}]
        },
    )
    obj["status"].update(status)
    return obj


def test_v2_history_is_read_newest_first() -> None:
    v = helmrelease(HISTORY)
    assert v.state is HelmReleaseState.PROGRESSING, "no Ready condition in the docs' fragment"
    assert [(e.version, e.status, e.action) for e in v.history] == [
        (2, "deployed", "upgrade"),
        (1, "superseded", "install"),
    ]
    latest = v.latest
    assert latest is not None
    assert (latest.chart_name, latest.chart_version, latest.app_version) == ("podinfo", "6.6.1+0cc9a8446c95", "6.6.1")
    assert (
        v.values_digest
        == latest.config_digest
        == ("sha256:e15c415d62760896bd8bec192a44c5716dc224db9e0fc609b9ac14718f8f9e56")
    )
    # the +0cc9a8446c95 is the first 12 hex of the chart's ociDigest, not a commit
    assert v.deployed_sha() is None and v.attempted_sha() is None


def test_v2_ready_for_the_current_generation_is_deployed() -> None:
    v = helmrelease(v2_ready())
    assert v.state is HelmReleaseState.DEPLOYED and v.deployed and v.reasons == []
    assert (v.ready, v.ready_reason) == (True, "UpgradeSucceeded")
    assert v.chart_version == "6.6.1+0cc9a8446c95" and v.last_attempted_action == "upgrade"
    assert [(w.kind, w.namespace, w.name) for w in v.workloads] == [("Deployment", "podinfo", "podinfo")]

    newer = v2_ready()
    newer["metadata"]["generation"] = 3  # a new spec helm-controller has not acted on
    v = helmrelease(newer)
    assert v.state is HelmReleaseState.PROGRESSING and not v.current
    assert any("generation 3 not reconciled yet" in r for r in v.reasons)


def test_v2_failed_upgrade_with_a_failed_history_entry() -> None:
    obj = v2_ready()
    failed = dict(obj["status"]["history"][0], status="failed", version=3, chartVersion="6.6.2")
    message = "Helm upgrade failed for release podinfo/podinfo with chart podinfo@6.6.2: context deadline exceeded"
    obj["status"].update(
        history=[failed, *obj["status"]["history"]],
        conditions=[
            {"type": "Ready", "status": "False", "reason": "UpgradeFailed", "message": message},
            {"type": "Released", "status": "False", "reason": "UpgradeFailed", "message": message},
        ],
        lastAttemptedRevision="6.6.2",
        failures=1,
    )
    v = helmrelease(obj)
    assert v.state is HelmReleaseState.FAILED and v.attempt_failed and v.attempt_current
    assert v.failures == 1 and v.latest is not None and v.latest.status == "failed"
    assert any("release v3 of podinfo@6.6.2 failed" in r for r in v.reasons)
    assert any("UpgradeFailed" in r and "context deadline exceeded" in r for r in v.reasons)


def test_v2beta1_install_succeeded_and_upgrade_failed() -> None:
    ok = helmrelease(INSTALLED)
    assert ok.state is HelmReleaseState.DEPLOYED and ok.ready_reason == "ReconciliationSucceeded"
    assert (ok.last_applied_revision, ok.last_attempted_revision, ok.chart_version) == ("4.0.6", "4.0.6", "4.0.6")
    assert ok.observed_generation == 2 and ok.latest is not None and ok.latest.version == 1

    bad = helmrelease(UPGRADE_FAILED)
    assert bad.state is HelmReleaseState.FAILED and not bad.deployed and bad.attempt_failed
    assert (bad.ready, bad.ready_reason, bad.failures) == (False, "UpgradeFailed", 1)
    assert bad.ready_message is not None and "DeploymentSpec.replicas" in bad.ready_message
    assert any(r.startswith("HelmRelease ?/?: Released=False UpgradeFailed") for r in bad.reasons)


def test_v2_objects_without_history_from_the_flux_cli_testdata() -> None:
    oci = helmrelease(OCI)
    assert oci.state is HelmReleaseState.DEPLOYED and (oci.namespace, oci.name) == ("default", "podinfo")
    assert oci.chart_version == "6.3.5" and oci.values_digest == "c31db75d05b7515eba2eef47bd71038c74b2e531"
    assert oci.helm_chart == "flux-system/podinfo-podinfo"
    trace = helmrelease(TRACE)
    assert trace.deployed and trace.last_attempted_revision == "6.3.5" and trace.deployed_sha() is None


def test_reconcile_strategy_revision_names_the_commit() -> None:
    assert source_sha(f"0.1.0+{SHA[:12]}") == SHA[:12]
    assert source_sha(f"0.1.0+{SHA[:12]}.3") == SHA[:12], "valuesFiles append .<generation>"
    assert source_sha("0.1.0") is None and source_sha("0.1.0+3") is None and source_sha(None) is None
    obj = v2_ready(lastAttemptedRevision=f"1.2.0+{SHA[:12]}")
    obj["status"]["history"][0].update(chartVersion=f"1.2.0+{SHA[:12]}", ociDigest=None)
    v = helmrelease(obj)
    assert v.deployed_sha() == v.attempted_sha() == SHA[:12]
    assert holds(v.deployed_sha(), SHA) and holds(v.deployed_sha(), SHA[:9])
    assert not holds(v.deployed_sha(), "fedcba9876543210")
    assert holds(
        v.deployed_sha(), "fedcba9876543210", lambda chart, merge: (chart, merge) == (SHA[:12], "fedcba9876543210")
    )


def test_ready_unknown_while_a_helm_action_runs() -> None:
    obj = v2_ready()
    obj["status"]["conditions"] = [
        {"type": "Reconciling", "status": "True", "reason": "Progressing", "message": "Running 'upgrade' action"},
        {"type": "Ready", "status": "Unknown", "reason": "Progressing", "message": "Running 'upgrade' action"},
    ]
    v = helmrelease(obj)
    assert v.state is HelmReleaseState.PROGRESSING and v.reconciling and v.ready is None
    assert any("Ready is Unknown (Progressing)" in r for r in v.reasons)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=30,
)
status_keys = st.sampled_from(
    ["conditions", "history", "lastAppliedRevision", "lastAttemptedRevision", "observedGeneration", "inventory",
     "lastAttemptedGeneration", "failures", "helmChart", "lastReleaseRevision", "lastAttemptedValuesChecksum"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    obj=json_values
    | st.fixed_dictionaries(
        {"metadata": st.dictionaries(st.sampled_from(["name", "namespace", "generation"]), json_values)},
        optional={"status": st.dictionaries(status_keys, json_values), "spec": json_values},
    ),
    merge=st.text(max_size=70),
)
def test_never_raises_on_arbitrary_input(obj: Any, merge: str) -> None:
    v = helmrelease(obj)
    assert v.state in HelmReleaseState and len(v.reasons) <= 12 and len(v.history) <= 10
    holds(v.deployed_sha(), merge)
    holds(v.attempted_sha(), merge)
    assert v.chart_version is None or isinstance(v.chart_version, str)
