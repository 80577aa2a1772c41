"""The README is the front door: its commands, metrics table and CI hook stay true."""

from __future__ import annotations

from pathlib import Path

from exporter import names
from exporter.envconf import KNOWN_ENV

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_every_metric_family_is_in_the_readme_table():
    families = [*names.EXPORTER_FAMILIES, *names.SCORER_FAMILIES, *names.SCHEDULER_FAMILIES]
    everything = [v for v in vars(names).values() if isinstance(v, names.Family)]
    assert sorted(f.name for f in families) == sorted(f.name for f in everything)
    missing = [f.name for f in families if f"| `{f.name}` |" not in README]
    assert families and missing == []


def test_ci_runs_exactly_the_readme_test_command():
    assert "make test" in README and "make run" in README
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1].strip() == "make test"


def test_every_exporter_variable_in_the_config_table_is_known():
    for var in ("KSENSE_NODE_NAME", "KSENSE_SOURCE", "KSENSE_METRICS_CSV", "KSENSE_EXPORTER_PORT",
                "KSENSE_WARMUP_S", "KSENSE_STATE_DIR", "KSENSE_CSV_MAX_BYTES", "KSENSE_BPF_MAP_ENTRIES"):
        assert f"`{var}`" in README and var in KNOWN_ENV


def test_the_generated_dashboards_and_runbook_section_is_in_the_readme():
    """dashboards.build writes the section (panels, recording rules, alert runbook); the README
    carries it verbatim so alerts' runbook_url anchors resolve."""
    section = (REPO / "dashboards" / "README-section.md").read_text().strip()
    assert section and section in README
