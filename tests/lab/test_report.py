"""`lab report` end to end on synthetic recordings: split.json in, the report, its pictures and
the tuned rule file out; a bad split is named."""

from __future__ import annotations

import json

from tests.lab.conftest import write_recording
from tests.lab.test_recording import lab
from tests.lab.test_tuned_rules import MODERATE

PHASES = [(0, 30, "warmup"), (30, 100, "cpu"), (100, 160, "quiet"), (160, 230, "cpu-partial"), (230, 300, "quiet")]


def test_report_from_a_split(tmp_path):
    data = tmp_path / "data"
    for i, name in enumerate(("a", "b", "c"), 1):
        write_recording(data / name, seconds=300, seed=i, busy=MODERATE, phases=PHASES)
    (data / "split.json").write_text(json.dumps({"train": ["a", "b"], "test": ["c"]}))
    out = tmp_path / "lab" / "REPORT.md"
    done = lab("report", "--data", str(data), "--out", str(out), "--rules-out", str(tmp_path / "lab" / "rules.json"),
               "--candidates", "40")
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    for heading in ("## Recordings", "## Held-out results", "## Which trouble is caught (held out)",
                    "## The pain definition (held out)", "## What the tuner chose", "## Pictures (held out)"):
        assert heading in text
    assert "| c | held out | 3 |" in text and "| a | training | 1 |" in text
    assert "| ksense (tuned) |" in text and "| F1 | ≥ 0.80 |" in text
    assert (tmp_path / "lab" / "report" / "timeline-c.png").stat().st_size > 10_000
    assert (tmp_path / "lab" / "report" / "precision-recall.png").exists()
    assert json.loads((tmp_path / "lab" / "rules.json").read_text())["decision"]


def test_a_bad_split_is_named(tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"train": ["a"], "test": []}))
    done = lab("report", "--data", str(tmp_path), "--out", str(tmp_path / "R.md"), "--rules-out",
               str(tmp_path / "r.json"))
    assert done.returncode == 2 and "split.json: needs at least one training and one held-out" in done.stderr
