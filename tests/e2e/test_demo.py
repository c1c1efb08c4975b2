"""``fixloop demo --approve-as reviewer --json`` end to end, as a script or CI runs it: the embedded Temporal dev
server, the sandbox, the worker and the gateway as child processes, the real reports and alerts of
``examples/demo`` posted over HTTP, every loop to its verdict; then a person's change breaks inventory and its callers,
and the storm of monitor alerts is one incident with its root cause and culprit commit. About 80 s on 2 cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.change.markup_checks import jira_reads

ROOT = Path(__file__).resolve().parents[2]


def test_the_scripted_demo_gives_every_work_item_a_jira_issue_a_merge_request_and_a_verdict(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIXLOOP_")}
    done = subprocess.run(
        [sys.executable, "-m", "fixloop", "demo", "--approve-as", "reviewer", "--json", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    incidents = [row for row in summary["work_items"] if row["kind"] == "incident"]
    items = {row["work_item"].split(" ")[1]: row for row in summary["work_items"] if row["kind"] != "incident"}
    assert set(items) == {"Werkzeug", "lodash", "testdata/fixtures/images/alpine-39.tar.gz"}, list(items)
    assert summary["complete"] is True
    for row in summary["work_items"]:
        assert row["jira"] and row["jira"].startswith("OPS-"), row
    for row in items.values():
        assert row["merge_request"] and "/-/merge_requests/" in row["merge_request"], row
    # the alert-driven item: catalog's alerts joined its rebuild; the monitor recovered after the deploy
    catalog = items["testdata/fixtures/images/alpine-39.tar.gz"]
    assert (catalog["alerts_joined"], catalog["verdict"], catalog["outcome"]) == (2, "pass", "verified"), catalog
    assert "monitor 41000005 (High error rate on catalog) recovered" in catalog["summary"]
    issues = {i["key"]: i for i in json.loads((state / "sandbox" / "jira.json").read_text())["issues"].values()}
    joined = issues[catalog["jira"]]
    assert "fixloop-alert" in joined["labels"]
    texts = [jira_reads(c["text"]) for c in joined["comments"]]  # the comments are escaped wiki text
    assert any(t.startswith("2 alert(s) on catalog joined this work item") for t in texts)
    assert (items["lodash"]["verdict"], items["lodash"]["outcome"]) == ("pass", "verified")
    # the change the sandbox world breaks: failed, reverted through a second gated merge request
    werkzeug = items["Werkzeug"]
    assert (werkzeug["verdict"], werkzeug["outcome"]) == ("fail", "reverted"), werkzeug
    assert werkzeug["revert_merge_request"] and "error rate rose" in werkzeug["summary"]
    assert "FixloopScope" in summary["temporal_ui"] and summary["temporal_ui"].startswith("http://127.0.0.1:")
    # the incident: dana's merged change broke inventory, its callers alerted too; ONE incident, no per-monitor items
    assert [p["signals"] for p in summary["posted"]] == [1, 5, 6, 1, 1] + [1] * 6
    storm = {p["file"] for p in summary["posted"][5:]}
    # the two monitors each of storefront, catalog and inventory (fixloop.sandbox.world.MONITORS)
    assert storm == {
        f"datadog monitor {m}" for m in (41_000_001, 41_000_002, 41_000_005, 41_000_006, 41_000_009, 41_000_010)
    }
    assert len(incidents) == 1, summary["work_items"]
    assert not [r for r in summary["work_items"] if r["kind"] in ("alert_investigation", "deploy_regression")]
    incident = incidents[0]
    assert incident["root_cause"] == "inventory" and set(incident["candidates"]) == {
        "inventory",
        "catalog",
        "storefront",
    }
    person = summary["person_change"]
    culprit = incident["culprit"]
    assert culprit and (culprit["entity"], culprit["sha"]) == ("inventory", person["sha"]), incident
    assert (culprit["author_username"], culprit["by_fixloop"]) == ("dana", False), culprit
    assert culprit["merge_request_iid"] == person["merge_request_iid"], culprit
    assert culprit["title"] == "inventory: 2 database connections per pod"
    # its Jira issue: the ranked candidates with their evidence, the timeline, and the culprit change said once
    issue = issues[incident["jira"]]
    description = jira_reads(issue["description"])
    assert "Likely root cause, best first:\n1. inventory (service)" in description, description
    assert "callers with latency/error symptoms after its onset: catalog" in description
    assert "Alert timeline:" in description and description.count("\n+") == 6
    (said,) = [jira_reads(c["text"]) for c in issue["comments"] if "Changes Flux applied before the onset" in c["text"]]
    assert f"inventory: commit {person['sha'][:12]}" in said and "(@dana)" in said, said
    assert f"merged in !{person['merge_request_iid']}" in said and "a person's change" in said
    # open while its alerts fire: later alerts on its services join it; it ends when they recover
    assert (incident["stage"], incident["outcome"], incident["merge_request"]) == ("await_recovery", None, None)
    # every child process is gone, and the logs stay for a look
    assert {p.name for p in (state / "logs").iterdir()} >= {"temporal.log", "worker.log", "gateway.log"}
    out = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
    assert out.stdout.strip() == "", out.stdout


def test_approve_names_a_missing_demo(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fixloop", "approve", "3", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2
    assert "no demo is running" in done.stderr
