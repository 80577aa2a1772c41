"""docs/metrics.md and docs/configuration.md are the reference: every metric family, label,
CSV column and environment variable the code knows is there, as the code spells it."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from common import names
from common.envconf import KNOWN_ENV
from tests.docs import markdown
from tests.support import REPO

METRICS = (REPO / "docs" / "metrics.md").read_text()
CONFIGURATION = (REPO / "docs" / "configuration.md").read_text()
GOLDEN_EXPOSITION = REPO / "tests" / "golden" / "exporter_metrics.txt"


def _metric_rows(heading: str) -> dict[str, tuple[str, set[str]]]:
    """metric -> (type, labels) of the first table under `heading`."""
    table = next(markdown.tables(markdown.section(METRICS, heading)))
    assert table[0] == ["metric", "type", "labels", "meaning"]
    return {row[0].strip("`"): (row[1], {x.strip() for x in row[2].split(",") if x.strip()}) for row in table[1:]}


def test_every_family_is_in_its_components_table():
    for heading, families in (("## Exporter metrics", names.EXPORTER_FAMILIES),
                              ("## Scorer metrics", names.SCORER_FAMILIES),
                              ("## Scheduler metrics", names.SCHEDULER_FAMILIES),
                              ("## Per-pod metrics", names.POD_FAMILIES)):
        assert sorted(_metric_rows(heading)) == sorted(f.name for f in families), heading
    everything = [v for v in vars(names).values() if isinstance(v, names.Family)]
    listed = [*names.EXPORTER_FAMILIES, *names.SCORER_FAMILIES, *names.SCHEDULER_FAMILIES, *names.POD_FAMILIES]
    assert sorted(f.name for f in everything) == sorted(f.name for f in listed)


def test_exporter_types_and_labels_match_the_exposition():
    """Against the golden /metrics of tests/exporter/test_prometheus_sink.py: a calibrating
    node's, so the four derived families (undefined while calibrating) are the only ones absent,
    and they are per-node gauges like the other derived values."""
    exposed = {}
    for family in text_string_to_metric_families(GOLDEN_EXPOSITION.read_text()):
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        exposed[family.name] = (family.type, labels)
    documented = _metric_rows("## Exporter metrics")
    derived = {names.FRICTION.name, names.FRICTION_DIRECTION.name, names.FRICTION_RATE.name, names.ENERGY.name}
    for name, (kind, labels) in documented.items():
        base = name.removesuffix("_total") if kind == "counter" else name
        expected = ("gauge", {names.LABEL_NODE}) if name in derived else exposed[base]
        assert (kind, labels) == expected, name


def test_label_names_are_the_names_modules():
    known = {v for k, v in vars(names).items() if k.startswith("LABEL_")}
    for heading in ("## Exporter metrics", "## Scorer metrics", "## Scheduler metrics", "## Per-pod metrics"):
        for name, (_, labels) in _metric_rows(heading).items():
            assert labels <= known, name


def test_csv_columns_are_documented_in_order():
    kernel = next(markdown.tables(markdown.section(METRICS, "### kernel_metrics.csv")))
    documented = [c.strip("` ") for row in kernel[1:] for c in row[0].split(",")]
    assert documented == list(names.KERNEL_METRICS_COLUMNS)
    for heading, columns in (("### fuzzy_monitor.csv", names.FUZZY_MONITOR_COLUMNS),
                             ("### fuzzy_score.csv", names.FUZZY_SCORE_COLUMNS),
                             ("### Replay output", names.REPLAY_COLUMNS),
                             ("### pod_metrics.csv", names.POD_METRICS_COLUMNS)):
        text = " ".join(markdown.section(METRICS, heading).split())
        assert ", ".join(columns) in text, heading


def test_every_variable_the_components_read_is_documented():
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", CONFIGURATION))
    assert sorted(KNOWN_ENV - documented) == []
    # ... and nothing documented as a ksense variable is unknown to the components.
    ours = {v for v in documented if v.startswith(("KSENSE_", "FUZZY_"))}
    assert sorted(ours - KNOWN_ENV) == []
