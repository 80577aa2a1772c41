"""promtool on the committed rules: `check rules` and the unit tests of every alert."""

from __future__ import annotations

import subprocess

import yaml

from dashboards import build, config, rules
from tests.support import REPO


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules(promtool):
    done = _run(promtool, "check", "rules", str(config.RULES_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules.recordings()) + len(rules.alerts())} rules found" in done.stdout


def test_promtool_check_rules_on_the_prometheus_rule_groups(promtool, tmp_path):
    """The PrometheusRule's spec is a valid rules file too (what the operator hands Prometheus)."""
    spec = yaml.safe_load((REPO / config.PROMETHEUS_RULE_FILE).read_text())["spec"]
    path = tmp_path / "from-prometheusrule.yaml"
    path.write_text(yaml.safe_dump(spec))
    done = _run(promtool, "check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_test_rules(promtool):
    done = _run(promtool, "test", "rules", str(build.RULES_TEST_FILE))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_unit_tests_cover_every_alert_firing_and_not_firing():
    tests = yaml.safe_load((REPO / build.RULES_TEST_FILE).read_text())["tests"]
    firing, silent = set(), set()
    for test in tests:
        for check in test["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    names = {a.name for a in rules.alerts()}
    assert firing == names and silent == names


def test_a_broken_rule_fails_the_unit_tests(promtool, tmp_path):
    """The unit tests bite: an alert whose threshold is wrong fails them."""
    data = rules.rules_file()
    for group in data["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "KsenseNodeDenied":
                rule["expr"] = rule["expr"].replace("== 0", "== 1")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "ksense-rules.yaml").write_text(yaml.safe_dump(data))
    tests = yaml.safe_load((REPO / build.RULES_TEST_FILE).read_text())
    (tmp_path / "rules" / "tests").mkdir()
    (tmp_path / "rules" / "tests" / "t.yaml").write_text(yaml.safe_dump(tests))
    done = _run(promtool, "test", "rules", str(tmp_path / "rules" / "tests" / "t.yaml"))
    assert done.returncode != 0 and "KsenseNodeDenied" in done.stdout + done.stderr
