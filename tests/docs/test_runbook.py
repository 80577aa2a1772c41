"""Every alert's runbook_url lands on its own section of docs/runbook.md, and the base of those
URLs is configurable: a build with another base points every alert there, and promtool's unit
tests of that build agree."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from dashboards import config, rules
from tests.docs import markdown
from tests.support import REPO

RUNBOOK = (REPO / config.RUNBOOK_DOC).read_text()
RULE_FILES = (config.RULES_FILE, config.PROMETHEUS_RULE_FILE)


def _alert_rules(data: dict) -> list[dict]:
    groups = data["spec"]["groups"] if data.get("kind") == "PrometheusRule" else data["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


@pytest.mark.parametrize("path", RULE_FILES, ids=str)
def test_every_committed_alert_links_to_its_runbook_section(path):
    alerts = _alert_rules(yaml.safe_load((REPO / path).read_text()))
    assert [a["alert"] for a in alerts] == [a.name for a in rules.alerts()]
    prefix = config.RUNBOOK_BASE_URL.rstrip("/") + "/" if config.RUNBOOK_BASE_URL else ""
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        doc, _, anchor = url.removeprefix(prefix).partition("#")
        assert (REPO / doc).resolve() == (REPO / config.RUNBOOK_DOC).resolve(), url
        assert anchor in markdown.anchors(RUNBOOK) and f"## {alert['alert']}\n" in RUNBOOK, url


def test_the_runbook_base_url_is_configurable(tmp_path, promtool):
    base = "https://git.example.com/you/ksense/blob/v1"
    command = [sys.executable, "-m", "dashboards.build", "--out", str(tmp_path), "--runbook-base-url", base]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for path in RULE_FILES:
        urls = [a["annotations"]["runbook_url"] for a in _alert_rules(yaml.safe_load((tmp_path / path).read_text()))]
        assert urls == [f"{base}/{config.RUNBOOK_DOC}#{a.name.lower()}" for a in rules.alerts()]
    tests_file = tmp_path / config.RULES_FILE.parent / "tests" / "ksense-rules-test.yaml"
    checked = subprocess.run([promtool, "test", "rules", str(tests_file)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (tmp_path / config.RUNBOOK_DOC).read_text() == RUNBOOK  # the page itself does not depend on the base
