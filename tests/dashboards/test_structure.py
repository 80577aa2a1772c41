"""The generated dashboards and rules are well-formed for Grafana and Prometheus: datasource
variable everywhere, units, targets, `$node` on per-node queries, modern heatmaps, bands on the
score panel, known metric names only, and alerts with severity, summary, description, runbook
and unit tests on both sides (firing and not firing)."""

from __future__ import annotations

import re

import pytest

from common import names as n
from dashboards import build, config, panels, queries, rules

FAMILIES = {f.name for f in (*n.EXPORTER_FAMILIES, *n.SCORER_FAMILIES, *n.SCHEDULER_FAMILIES)}
RECORDED = {r.record for r in rules.recordings()}
#: Series ksense does not define: Prometheus' up, prometheus_client's process metrics and
#: kube-state-metrics' node inventory (KsenseNodeNotMeasured).
OTHER = {queries.UP, queries.PROCESS_CPU, queries.PROCESS_RSS, rules.KUBE_NODE_INFO}
PROMQL_WORDS = {"by", "on", "or", "and", "unless", "bool", "group_left", "le", "time", "rate", "increase", "sum",
                "max", "min", "topk", "count", "group", "histogram_quantile", "label_values"}


def _panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _all_panels(dashboards):
    return [(name, p) for name, d in dashboards.items() for p in _panels(d)]


def test_four_dashboards_with_fixed_uids_and_titles(dashboards):
    assert len(dashboards) == 4
    uids = [d["uid"] for d in dashboards.values()]
    assert len(set(uids)) == 4 and all(u.startswith("ksense-") for u in uids)
    titles = {d["title"] for d in dashboards.values()}
    for wanted in ("Node kernel signals", "Friction & Energy", "Admission", "Stack health"):
        assert any(wanted in t for t in titles)


def test_datasource_and_node_variables(dashboards):
    for d in dashboards.values():
        variables = {v["name"]: v for v in d["templating"]["list"]}
        ds = variables[config.DATASOURCE_VAR]
        assert ds["type"] == "datasource" and ds["query"] == "prometheus"
        node = variables[config.NODE_VAR]
        assert node["type"] == "query" and node["multi"] and node["includeAll"] and node["allValue"] == ".+"
        assert node["datasource"] == config.DATASOURCE
        assert node["query"]["query"] == f"label_values({n.SOURCE_INFO.name}, {n.LABEL_NODE})"


def test_every_panel_has_the_datasource_variable_a_unit_a_description_and_targets(dashboards):
    for name, p in _all_panels(dashboards):
        where = f"{name}: {p['title']}"
        assert p["datasource"] == config.DATASOURCE, where
        assert p["fieldConfig"]["defaults"].get("unit"), where
        assert p["description"], where
        assert p["targets"], where
        for t in p["targets"]:
            assert t["datasource"] == config.DATASOURCE and t["expr"].strip() and t["refId"], where


def test_panel_ids_are_unique_and_the_grid_is_24_wide(dashboards):
    for d in dashboards.values():
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)) and all(ids)
        for p in d["panels"]:
            g = p["gridPos"]
            assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0


def _is_per_node(expr: str) -> bool:
    """Reads exporter series, or per-node scorer series / recorded per-node series."""
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    exporter = {f.name for f in n.EXPORTER_FAMILIES}
    per_node_scorer = {n.NODE_SCORE.name, n.NODE_ADMISSION_ALLOWED.name, n.NODE_INPUT_MISSING.name,
                       n.NODE_DECISION_CHANGES.name}
    return any(
        w.startswith(f"{n.LABEL_NODE}:") or re.sub(r"_(bucket|sum|count)$", "", w) in exporter | per_node_scorer
        for w in words
    )


def test_per_node_queries_use_the_node_variable(dashboards):
    checked = 0
    for name, p in _all_panels(dashboards):
        for t in p["targets"]:
            if _is_per_node(t["expr"]):
                checked += 1
                assert queries.NODE_MATCH in t["expr"], f"{name}: {p['title']}: {t['expr']}"
    assert checked > 40


def test_heatmaps_use_the_modern_options(dashboards):
    heatmaps = [p for _, p in _all_panels(dashboards) if p["type"] == "heatmap"]
    assert len(heatmaps) >= 5  # run-queue, D-state, NET_RX, webhook, scorer evaluation
    for p in heatmaps:
        o = p["options"]
        assert o["calculate"] is False and o["rowsFrame"]["layout"] == "le"
        assert o["yAxis"]["unit"] == panels.SECONDS and o["color"]["mode"] == "scheme"
        assert all(t["format"] == "heatmap" and t["legendFormat"] == "{{le}}" for t in p["targets"])
        assert all("_bucket" in t["expr"] and "sum by (le)" in t["expr"] for t in p["targets"])


def test_the_score_panel_draws_the_decision_bands(dashboards):
    admission = dashboards["ksense-admission.json"]
    score = next(p for p in _panels(admission) if p["title"] == "Score per node")
    values = [s["value"] for s in score["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert values == [None, 45, 55, 60, 70]
    assert score["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
    assert score["targets"][0]["expr"] == queries.per_node(queries.SCORE)


def _metric_words(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\((?:[a-z_]+(?:, )?)+\)", "", expr)  # by (...) / on (...) label lists
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w not in PROMQL_WORDS}


def _all_exprs(dashboards) -> list[str]:
    exprs = [t["expr"] for _, p in _all_panels(dashboards) for t in p["targets"]]
    for group in rules.groups():
        exprs += [r["expr"] for r in group["rules"]]
    return exprs


def test_every_metric_name_is_a_contract_family_a_recorded_series_or_up_process(dashboards):
    unknown = set()
    for expr in _all_exprs(dashboards):
        for w in _metric_words(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", w)
            if w not in RECORDED and base not in FAMILIES and w not in OTHER:
                unknown.add(w)
    assert unknown == set()


def test_recorded_series_follow_level_metric_operation():
    for record in RECORDED:
        assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", record), record


def test_the_scorer_inputs_are_recorded():
    recorded_from = {r.expr for r in queries.SCORER_INPUTS}
    for family in (n.FRICTION, n.FRICTION_DIRECTION, n.ENERGY, n.CPU_UTILIZATION, n.PRESSURE_WORST,
                   n.BASELINE_FROZEN):
        assert f"max by (node) ({family.name})" in recorded_from


@pytest.mark.parametrize("alert", rules.alerts(), ids=lambda a: a.name)
def test_every_alert_is_complete(alert):
    rule = alert.rule()
    assert rule["labels"]["severity"] in (rules.CRITICAL, rules.WARNING, rules.INFO)
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert rule["annotations"]["runbook_url"].endswith("#" + alert.name.lower())
    assert "$value" not in rule["annotations"]["description"]  # unit tests state annotations exactly
    assert alert.runbook.meaning and alert.runbook.checks and alert.runbook.fixes and alert.signals
    cases = [c for s in alert.scenarios for c in s.cases]
    assert any(c.firing for c in cases), "no firing case"
    assert any(not c.firing for c in cases), "no not-firing case"


def test_the_required_alerts_exist():
    names = {a.name for a in rules.alerts()}
    assert {"KsenseExporterDown", "KsenseBpfProbeNotAttached", "KsenseBaselineNotFrozen", "KsenseNodeDenied",
            "KsenseAllNodesDenied", "KsenseScorerStale", "KsensePrometheusQueryErrors",
            "KsenseWebhookCertificateExpiring"} <= names
    by_name = {a.name: a for a in rules.alerts()}
    assert by_name["KsenseBaselineNotFrozen"].for_ == "20m"
    assert by_name["KsenseNodeDenied"].for_ == "15m"
    assert str(30 * 86400) in by_name["KsenseWebhookCertificateExpiring"].expr  # 30 days, as operators ask


def test_the_docs_have_every_dashboard_panel_and_a_runbook_section_per_alert(dashboards):
    text = build._dashboards_doc()
    for d in dashboards.values():
        assert f"## {d['title']}\n" in text
        for p in _panels(d):
            assert f"*{p['title']}*" in text
    runbook = build._runbook_doc()
    for a in rules.alerts():
        section = runbook[runbook.index(f"## {a.name}\n"):]
        assert f"[{a.name}](#{a.anchor})" in runbook and "**First checks:**" in section and "**Fixes:**" in section


def test_the_prometheus_rule_wraps_the_same_groups():
    obj = rules.prometheus_rule()
    assert obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["kind"] == "PrometheusRule"
    assert obj["metadata"]["namespace"] == config.NAMESPACE
    assert obj["spec"]["groups"] == rules.rules_file()["groups"]
