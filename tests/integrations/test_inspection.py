"""fixloop's inspection report (``fixloop inspect``): the repository's version drift as signals, one risk digest
of the repository in triage, the findings listed in its Jira issue."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from fixloop.activities.work_item import issue_description
from fixloop.app.cli import app
from fixloop.app.ingest import IngestError, detect, parse_document
from fixloop.core.change.drift import inspection_document, repository_drift
from fixloop.core.markup import jira_text
from fixloop.core.models import Category, Severity, Source, WorkItemKind
from fixloop.core.triage import triage_rules
from fixloop.sandbox.seed import SEED_DIR
from tests.change.test_drift import FLEET

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
runner = CliRunner()


def _signals(doc: dict[str, object]):
    return parse_document(doc, ref="inspection.json", received_at=NOW)


def test_each_drifting_package_is_one_signal_fingerprinted_by_its_pinned_versions() -> None:
    doc = inspection_document("platform/gitops", repository_drift(FLEET, FLEET.get), "2026-12-03T08:00:00Z")
    assert detect(doc) is Source.FIXLOOP
    result = _signals(doc)
    assert [s.title for s in result.signals] == [
        "django (pypi) pinned at 3 versions: 4.2.16 in checkout; 3.2.25 in admin; 3.2.9 in payments; consolidate on "
        "4.2.16",
        "jquery (npm) pinned at 2 versions: 3.5.0 in backoffice; 3.3.9 in storefront; consolidate on 3.5.0",
        "werkzeug (pypi) pinned at 2 versions: 2.3.8 in checkout; 0.11 in payments; consolidate on 2.3.8",
    ]
    django = result.signals[0]
    assert (django.source, django.category, django.severity) == (Source.FIXLOOP, Category.DRIFT, Severity.INFO)
    assert (django.package, django.installed_version, django.fixed_version) == ("django", "3.2.9", None)
    assert django.artifact == "platform/gitops" and django.observed_at == datetime(2026, 12, 3, 8, tzinfo=UTC)
    # the same drift inspected later is the same signal; a version moved is a new one
    again = _signals({**doc, "generated_at": "2026-12-04T08:00:00Z"})
    assert [s.fingerprint for s in again.signals] == [s.fingerprint for s in result.signals]
    moved = dict(FLEET, **{"services/checkout/requirements.txt": "Werkzeug==3.0.6\ndjango==4.2.16\n"})
    after = _signals(inspection_document("platform/gitops", repository_drift(moved, moved.get), "x"))
    by_package = {s.package: s.fingerprint for s in after.signals}
    assert by_package["werkzeug"] != result.signals[2].fingerprint
    assert by_package["django"] == django.fingerprint and by_package["jquery"] == result.signals[1].fingerprint


def test_triage_makes_one_consolidation_digest_of_the_repository_and_its_issue_lists_the_drift() -> None:
    found = _signals(inspection_document("platform/gitops", repository_drift(FLEET, FLEET.get), "x")).signals
    (item,) = triage_rules(found).work_items
    assert item.kind is WorkItemKind.RISK_DIGEST
    assert item.title == "Risk digest: 3 packages pinned at several versions in platform/gitops (3 info)"
    text = issue_description("platform/gitops", item, [s.title for s in found[:2]], findings_total=3)
    assert "\nFindings (3):\n- django (pypi) pinned at 3 versions: 4.2.16 in checkout;" in text
    assert text.count("\n- ") == 3 and "- ... and 1 more (in the Temporal UI's loop input)" in text
    wiki = jira_text(text)
    assert "\\- jquery \\(npm\\) pinned at 2 versions" in wiki  # repository text, escaped like every line of it


def test_what_the_inspection_could_not_list_or_read_becomes_warnings() -> None:
    doc = {
        "fixloop_inspection": 1,
        "repository": "platform/gitops",
        "drift": [{"ecosystem": "pypi", "package": "solo", "versions": [{"version": "1.0", "paths": ["a"]}]}],
        "drift_more": 12,
        "skipped": [{"path": "services/x/package.json", "reason": "is not valid JSON"}],
    }
    result = _signals(doc)
    assert result.signals == []
    assert result.warnings == [
        "inspection.json#/drift/0: solo lists fewer than two versions: not drift",
        "inspection.json#/drift_more: 12 more drifting packages were not listed by the inspection",
        "inspection.json#/skipped/0: services/x/package.json was not inspected: is not valid JSON",
    ]


_TEXT = st.text(min_size=1, max_size=400)


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "ecosystem": _TEXT,
                "package": _TEXT,
                "versions": st.lists(
                    st.fixed_dictionaries({"version": _TEXT, "paths": st.lists(_TEXT, max_size=3)}), max_size=8
                ),
            }
        ),
        max_size=5,
    ),
    st.one_of(st.none(), _TEXT),
)
def test_any_inspection_document_gives_bounded_signals_or_a_named_error(drift: list, repository: str | None) -> None:
    doc = {"fixloop_inspection": 1, "repository": repository, "drift": drift}
    try:
        result = _signals(doc)
    except IngestError as e:
        assert str(e).startswith("inspection.json")
        return
    assert len(result.signals) + len(result.warnings) + result.duplicates == len(drift)
    for s in result.signals:
        assert s.category is Category.DRIFT and len(s.title) <= 300


def test_fixloop_inspect_writes_a_report_fixloop_triage_reads(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for path, text in FLEET.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text, encoding="utf-8")
    (repo / "services" / "broken").mkdir()
    (repo / "services" / "broken" / "package.json").write_text("{", encoding="utf-8")
    out = tmp_path / "inspection.json"
    result = runner.invoke(app, ["inspect", "--repo", str(repo), "--name", "platform/gitops", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "fixloop inspect: services/broken/package.json: not read: is not valid JSON" in result.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert [d["package"] for d in doc["drift"]] == ["django", "jquery", "werkzeug"]
    assert doc["skipped"][0]["path"] == "services/broken/package.json"
    triaged = runner.invoke(app, ["triage", str(out)])
    assert triaged.exit_code == 0, triaged.stderr
    (item,) = json.loads(triaged.stdout)["work_items"]
    assert item["title"].startswith("Risk digest: 3 packages pinned at several versions in platform/gitops")
    seeded = runner.invoke(app, ["inspect", "--repo", str(SEED_DIR)])
    assert seeded.exit_code == 0 and json.loads(seeded.stdout)["drift"] == []  # one version of each package
