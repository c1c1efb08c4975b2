"""The monitoring files of ``deploy/``, checked offline: the Prometheus rules (``deploy/prometheus``) with Debian's
``promtool check rules`` and their unit tests with ``promtool test rules``, the Prometheus Operator's PrometheusRule
holding the same groups, the PodMonitors selecting the pods and ports of ``deploy/kubernetes``; the Grafana
dashboard (``deploy/grafana``) parsed, each panel's query parsed by promtool (as a recording rule of a generated
rule file: promtool has no check of a bare expression), and every series a rule or a panel names one that fixloop or
the Temporal SDK serves (``monitoring``)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixloop.core.metrics import METRICS
from tests.deploy.monitoring import fixloop_series, promtool, sdk_series

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "fixloop.rules.yaml"
OPERATOR_RULES = PROMETHEUS / "fixloop-rules.yaml"
RULE_TESTS = PROMETHEUS / "fixloop.rules.test.yaml"
PODMONITORS = PROMETHEUS / "podmonitors.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "fixloop-dashboard.json"
K8S_BASE = ROOT / "deploy" / "kubernetes" / "base"
PROMETHEUS_OWN = {"up"}  # the series Prometheus makes itself of each scrape
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def run_promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def series_named(expr: str) -> set[str]:
    """The series names a PromQL expression selects: identifiers not called as functions, outside strings, label
    matchers, groupings and ranges, that are no keyword."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors and subqueries
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        called = re.match(r"\s*\(", text[m.end() :])
        number = re.fullmatch(r"(?i)inf|nan", m.group())
        if not called and not number and m.group() not in KEYWORDS:
            names.add(m.group())
    return names


def test_series_named_finds_the_series_and_only_them() -> None:
    expr = (
        'sum by (le, gate) (rate(fixloop_time_to_merge_seconds_bucket{task_queue=~"a|b"}[1d])) / ignoring (x) '
        "group_left (y) absent(up{job=\"w\"} == 1) unless on (namespace) temporal_num_pollers > bool 0.5"
    )
    assert series_named(expr) == {"fixloop_time_to_merge_seconds_bucket", "up", "temporal_num_pollers"}


# -- the Prometheus rules -------------------------------------------------------------------------------------
def test_the_rule_file_passes_promtool_check_rules() -> None:
    checked = run_promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout


def test_the_rules_unit_tests_pass_in_promtool() -> None:
    tested = run_promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    doc = yaml.safe_load(RULE_TESTS.read_text())
    covered = {t["alertname"] for case in doc["tests"] for t in case["alert_rule_test"] if t.get("exp_alerts")}
    assert {"FixloopIntakeStuck", "FixloopWorkerDown", "FixloopTriageFallingBackToRules"} <= covered


def test_a_wrong_expectation_fails_promtool_test_rules(tmp_path: Path) -> None:
    """The unit tests can fail: the stuck intake does not fire 20 minutes early."""
    text = RULE_TESTS.read_text().replace("eval_time: 125m", "eval_time: 105m").replace(
        "- fixloop.rules.yaml", f"- {RULES}"
    )
    (tmp_path / "t.yaml").write_text(text)
    tested = run_promtool("test", "rules", "t.yaml", cwd=tmp_path)
    assert tested.returncode != 0 and "FixloopIntakeStuck" in tested.stdout + tested.stderr


def test_the_prometheus_rule_holds_the_same_groups_and_passes_promtool(tmp_path: Path) -> None:
    cr = yaml.safe_load(OPERATOR_RULES.read_text())
    assert (cr["apiVersion"], cr["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert cr["metadata"]["name"] and cr["metadata"]["namespace"] == "fixloop"
    assert set(cr) == {"apiVersion", "kind", "metadata", "spec"} and set(cr["spec"]) == {"groups"}
    assert cr["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    (tmp_path / "operator.rules.yaml").write_text(yaml.safe_dump({"groups": cr["spec"]["groups"]}))
    checked = run_promtool("check", "rules", "operator.rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_names_known_series_and_says_how_bad_and_what() -> None:
    known = fixloop_series() | sdk_series() | PROMETHEUS_OWN
    alerts = [r for r in rules() if "alert" in r]
    assert len(alerts) == len(rules())  # alerting rules only
    for rule in alerts:
        assert series_named(rule["expr"]) <= known, (rule["alert"], series_named(rule["expr"]) - known)
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    named = {s for rule in alerts for s in series_named(rule["expr"])}
    for what in ("fixloop_intake_signals", "fixloop_intake_windows", "fixloop_triage_fallbacks", "fixloop_verdicts",
                 "temporal_activity_execution_failed", "up"):  # fmt: skip
        assert what in named, what


def test_the_podmonitors_select_the_pods_and_ports_of_deploy_kubernetes() -> None:
    monitors = {m["metadata"]["name"]: m for m in yaml.safe_load_all(PODMONITORS.read_text())}
    assert set(monitors) == {"fixloop-worker", "fixloop-gateway"}
    for name, monitor in monitors.items():
        assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
        manifests = yaml.safe_load_all((K8S_BASE / f"{name.removeprefix('fixloop-')}.yaml").read_text())
        (deployment,) = [d for d in manifests if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
        pod = deployment["spec"]["template"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items(), name
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports, name
            assert endpoint["path"] == pod["metadata"]["annotations"]["prometheus.io/path"], name
        # the rules' job matchers take the Operator's job name, <namespace>/<PodMonitor name>
        job = f"{monitor['metadata']['namespace']}/{name}"
        assert any(re.fullmatch(m, job) for m in re.findall(r'job=~"([^"]+)"', RULES.read_text())), job


# -- the Grafana dashboard ------------------------------------------------------------------------------------
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def grafana_free(expr: str) -> str:
    """``expr`` with Grafana's variables filled as Grafana would (ranges; a template variable's All: ``.*``)."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?[A-Za-z_]\w*\}?", ".*", expr)


def test_the_dashboard_is_a_grafana_dashboard_with_a_prometheus_datasource_variable() -> None:
    d = dashboard()
    assert d["title"] == "fixloop" and d["uid"] and isinstance(d["schemaVersion"], int)
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels():
        assert p["datasource"]["uid"] == "${datasource}" and p["title"] and p["description"], p["title"]
        assert p["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p["title"]
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0, p["title"]
    for name in ("namespace", "task_queue"):
        query = variables[name]["query"]["query"]
        metric = re.match(r"label_values\((\w+)", query)
        assert metric and metric.group(1) in sdk_series(), query


def test_every_panel_query_parses_in_promtool(tmp_path: Path) -> None:
    records = [
        {"record": f"fixloop_dashboard:panel_{p['id']}_{t['refId']}", "expr": grafana_free(t["expr"])}
        for p in panels()
        for t in p["targets"]
    ]
    generated = {"groups": [{"name": "dashboard", "rules": records}]}
    (tmp_path / "dashboard.rules.yaml").write_text(yaml.safe_dump(generated))
    checked = run_promtool("check", "rules", "dashboard.rules.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(records)} rules found" in checked.stdout


def test_a_broken_query_fails_that_check(tmp_path: Path) -> None:
    bad = {"groups": [{"name": "d", "rules": [{"record": "x:y", "expr": "sum by (le (rate(fixloop_verdicts[5m]))"}]}]}
    (tmp_path / "bad.rules.yaml").write_text(yaml.safe_dump(bad))
    assert run_promtool("check", "rules", "bad.rules.yaml", cwd=tmp_path).returncode != 0


def test_the_dashboard_charts_every_business_metric_and_the_sdks_worker_metrics() -> None:
    known = fixloop_series() | sdk_series()
    named: set[str] = set()
    for p in panels():
        for t in p["targets"]:
            found = series_named(grafana_free(t["expr"]))
            assert found and found <= known, (p["title"], found - known)
            named |= found
    for m in METRICS:
        assert set(m.series()) & named, m.name
    sdk = {s for s in named if s.startswith("temporal_")}
    for what in ("temporal_worker_task_slots_available", "temporal_activity_execution_failed",
                 "temporal_workflow_task_schedule_to_start_latency_bucket", "temporal_num_pollers"):  # fmt: skip
        assert what in sdk, what
    assert any(s.startswith("fixloop_gateway_") for s in named)


@pytest.mark.parametrize("path", [RULES, OPERATOR_RULES, RULE_TESTS, PODMONITORS, DASHBOARD])
def test_the_deploy_guide_names_each_monitoring_file(path: Path) -> None:
    assert str(path.relative_to(ROOT / "deploy")) in (ROOT / "deploy" / "README.md").read_text()
