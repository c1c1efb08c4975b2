"""Properties over every real report and payload in tests/fixtures.

* Every scanner finding becomes exactly one signal: a report's vulnerability signals are as many as its distinct
  (advisory, package, installed version, target), counted here by walking the raw JSON independently of the parsers.
* Fingerprints do not change when a document is ingested twice or re-serialised, and two different findings
  never share one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from fixloop.app.ingest import detect, parse_document
from fixloop.core.models import Category, Kind, Source
from tests.conftest import FIXTURES, ingest, scanner_reports

ALL_INPUTS = sorted(
    str(p.relative_to(FIXTURES))
    for p in FIXTURES.rglob("*.json")
    if "webhook-templates" not in str(p)
    and "servicenow" not in p.name
    and "datadog-docs_default" not in p.name
    and "recorded" not in p.relative_to(FIXTURES).parts  # recorded API responses (sandbox fidelity), not inputs
    and "alert-correlation" not in p.relative_to(FIXTURES).parts  # root-cause ranking data (tests/test_rca.py)
    and "histories" not in p.relative_to(FIXTURES).parts  # Temporal workflow histories (tests/workflows/test_replay.py)
    and p.relative_to(FIXTURES).parts[:2] != ("datadog", "api")  # API answers (tests/test_topology.py), not inputs
)


def _trivy(d: object) -> set[tuple]:
    results: list[tuple[str, dict]] = []
    if isinstance(d, list):
        results = [("", r) for r in d]
    else:
        results = [("", r) for r in d.get("Results") or []]
        for key in ("Resources", "Vulnerabilities"):
            if "ClusterName" in d:
                for w in d.get(key) or []:
                    results += [(f"{w.get('Namespace')}/{w['Kind']}/{w['Name']}", r) for r in w.get("Results") or []]
    return {
        (v["VulnerabilityID"], v["PkgName"], v.get("InstalledVersion"), f"{where}|{r.get('Target')}")
        for where, r in results
        for v in r.get("Vulnerabilities") or []
        if "VulnerabilityID" in v
    }


def _grype(d: dict) -> set[tuple]:
    return {
        (
            m["vulnerability"]["id"],
            m["artifact"]["name"],
            m["artifact"]["version"],
            tuple(sorted(loc.get("path", "") for loc in m["artifact"].get("locations") or [])),
        )
        for m in d["matches"]
    }


def _snyk(d: object) -> set[tuple]:
    projects = d if isinstance(d, list) else [d]
    projects = [q for p in projects for q in (p, *(p.get("applications") or []))]  # a container's app projects
    return {
        (v["id"], v["packageName"], v["version"], p.get("displayTargetFile") or p.get("projectName"))
        for p in projects
        for v in p.get("vulnerabilities") or []
    }


def _gitlab(d: dict) -> set[tuple]:
    out = set()
    for v in d["vulnerabilities"]:
        loc = v.get("location") or {}
        name = ((loc.get("dependency") or {}).get("package") or {}).get("name")
        if not name:
            continue  # SAST / secrets: not package vulnerabilities
        cves = [i["value"] for i in v.get("identifiers") or [] if i.get("type") == "cve"]
        key = cves[0] if cves else v.get("cve") or v.get("id")
        out.add((key, name, loc["dependency"].get("version"), loc.get("image") or loc.get("file")))
    return out


def _osv(d: dict) -> set[tuple]:
    out = set()
    for r in d["results"]:
        for p in r.get("packages") or []:
            groups = p.get("groups") or [{"ids": [v["id"]]} for v in p.get("vulnerabilities") or []]
            for g in groups:
                out.add((g["ids"][0], p["package"]["name"], p["package"].get("version"), r["source"]["path"]))
    return out


def _pip_audit(d: object) -> set[tuple]:
    deps = d if isinstance(d, list) else d["dependencies"]
    return {(v["id"], dep["name"], dep.get("version"), None) for dep in deps for v in dep.get("vulns") or []}


COUNTERS = {
    "trivy": _trivy,
    "grype": _grype,
    "snyk": _snyk,
    "gitlab": _gitlab,
    "osv-scanner": _osv,
    "pip-audit": _pip_audit,
}


@pytest.mark.parametrize("rel", scanner_reports())
def test_one_signal_per_distinct_finding(rel: str) -> None:
    raw = json.loads((FIXTURES / rel).read_text())
    expected = COUNTERS[rel.split("/")[0]](raw)
    result = ingest(rel)
    vulns = [s for s in result.signals if s.category is Category.VULNERABILITY]
    assert len(vulns) == len(expected), f"{rel}: {len(vulns)} signals for {len(expected)} distinct findings"
    if rel.startswith("gitlab/"):  # a Gemnasium-only advisory is named by its identifier's name: compare packages
        assert {(s.package, s.installed_version) for s in vulns} == {t[1:3] for t in expected}
    else:  # "" in a report is an absent value in a signal
        assert {(s.advisory_id, s.package, s.installed_version) for s in vulns} == {
            tuple(x or None for x in t[:3]) for t in expected
        }
    assert len({s.fingerprint for s in result.signals}) == len(result.signals)


@pytest.mark.parametrize("rel", ALL_INPUTS)
def test_every_input_is_detected_and_parses(rel: str) -> None:
    result = ingest(rel)
    assert result.source is not None
    assert result.source.value == {"osv-scanner": "osv", "pip-audit": "pip-audit"}.get(
        rel.split("/")[0], rel.split("/")[0]
    )
    for s in result.signals:
        assert s.raw_ref.startswith(str(FIXTURES / rel) + "#")
        assert (s.kind is Kind.ALERT) == (s.source in (Source.DATADOG, Source.ALERTMANAGER))


@pytest.mark.parametrize("rel", ALL_INPUTS)
def test_fingerprints_survive_reingest_and_reserialisation(rel: str) -> None:
    path = FIXTURES / rel
    first = [s.fingerprint for s in ingest(rel).signals]
    assert [s.fingerprint for s in ingest(rel).signals] == first
    doc = json.loads(path.read_text())
    reserialised = json.loads(json.dumps(doc, indent=None, sort_keys=True, ensure_ascii=True))
    later = datetime(2030, 1, 1, tzinfo=UTC)  # received at another time
    again = parse_document(reserialised, ref="elsewhere", received_at=later, source=detect(doc))
    assert [s.fingerprint for s in again.signals] == first


def test_no_two_different_findings_share_a_fingerprint() -> None:
    identity: dict[str, tuple] = {}
    total = 0
    for rel in ALL_INPUTS:
        for s in ingest(rel).signals:
            total += 1
            key = (
                s.source,
                s.kind,
                s.category,
                s.artifact,
                s.target,
                s.advisory_id,
                s.package,
                s.installed_version,
                s.location,
                s.monitor_id,
                s.scope,
                s.alert_cycle_key,
            )
            assert identity.setdefault(s.fingerprint, key) == key, f"{rel}: {s.fingerprint} names two findings"
    # Reports of one image in several format generations name the same findings: alpine-39 in the legacy, 0.22 and
    # current Trivy reports (10 + 10 + 6 signals, 10 findings) and alpine-310 in both GitLab template reports
    # (4 + 4 signals, 4 findings).
    assert total - len(identity) == 16 + 4
    assert total > 2500


def test_same_finding_in_two_report_formats_keeps_its_fingerprint() -> None:
    legacy = {s.fingerprint for s in ingest("trivy/trivy-legacy-array_alpine-39.json").signals}
    v2 = {s.fingerprint for s in ingest("trivy/trivy-0.22-fulldb_alpine-39.json").signals}
    assert legacy == v2 and len(legacy) == 10


def test_fixture_tree_is_complete() -> None:
    assert (FIXTURES / "SOURCES.md").is_file()
    assert len(scanner_reports()) >= 50
