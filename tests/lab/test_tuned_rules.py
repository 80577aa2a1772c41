"""A rule file written by `lab tune` is an ordinary rule file: `python -m scorer` and
`python -m scorer.replay` load it unchanged, its `decision` thresholds apply, and it changes
decisions where the bundled rules were wrong."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from common.names import RQ_P99
from scorer.core import inference
from scorer.core.decision import DecisionParams, params_for
from scorer.core.rules import RulesError
from scorer.rulefile import load_rules
from tests import support
from tests.lab.conftest import write_recording
from tests.lab.test_recording import REPO, lab
from tests.scorer import promserver

#: Moderate CPU contention that hurts the tenant: the bundled rules allow it (CPU below
#: their "high", PSI and friction small).
MODERATE = {"cpu": 62.0, "psi": 4.0, "friction": 6.0, "energy": 3.0}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> tuple[Path, Path]:
    """(rule file learnt from two training recordings, a third recording held out)."""
    root = tmp_path_factory.mktemp("tuned")
    train = [write_recording(root / f"train{i}", seconds=300, seed=i, busy=MODERATE,
                             phases=[(0, 30, "warmup"), (30, 100, "cpu"), (100, 160, "quiet"), (160, 230, "cpu"),
                                     (230, 300, "quiet")]) for i in (1, 2)]
    test = write_recording(root / "test", seconds=200, seed=3, busy=MODERATE,
                           phases=[(0, 30, "warmup"), (30, 120, "cpu"), (120, 200, "quiet")])
    out = root / "rules.json"
    result = lab("tune", "--train", *map(str, train), "--test", str(test), "--out", str(out),
                 "--candidates", "80", "--horizon-s", "2")
    assert result.returncode == 0, result.stderr
    assert "Held-out recordings (1)" in result.stdout and "| ksense (tuned) |" in result.stdout
    return out, test


def test_tune_writes_a_rule_file_with_its_thresholds(tuned):
    out, _ = tuned
    rb = load_rules(out)  # the scorer's own loader accepts it
    assert set(rb.decision) == {"good_threshold", "medium_low_upper", "medium_mid_upper", "medium_bad_threshold"}
    summary = json.loads(out.with_name("rules.tune.json").read_text())
    assert summary["test"]["policies"]["ksense (tuned)"]["f1"] > summary["test"]["policies"][
        "ksense (bundled rules)"]["f1"]
    assert set(summary["thresholds"]) == {"cpu", "psi", "rq_p99_ms"}


def test_configured_thresholds_override_the_rule_file(tuned):
    rb = load_rules(tuned[0])
    from_file = params_for(rb.decision, {})
    assert from_file.good_threshold == rb.decision["good_threshold"]
    assert params_for(rb.decision, {"good_threshold": 7, "medium_low_upper": None}).good_threshold == 7
    assert params_for({}, {}) == DecisionParams()


def test_a_bad_decision_section_is_refused(tmp_path):
    doc = json.loads((REPO / "scorer" / "rules_default.json").read_text())
    for bad, message in (({"good_threshold": 0}, "integer ≥ 1"), ({"medium_low_upper": "x"}, "finite number"),
                         ({"speed": 1}, "unknown key")):
        path = tmp_path / "r.json"
        path.write_text(json.dumps({**doc, "decision": bad}))
        with pytest.raises(RulesError, match=f"decision.*{message}"):
            load_rules(path)


def _decisions(rules: Path | None, recording: Path, out: Path) -> list[str]:
    args = [sys.executable, "-m", "scorer.replay", str(recording / "kernel_metrics.csv"), "-o", str(out)]
    args += ["--rules", str(rules)] if rules else []
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSENSE_", "FUZZY_"))}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with open(out) as f:
        return [row["Decision"] for row in csv.DictReader(f)]


def test_scorer_replay_loads_it_and_it_changes_decisions(tuned, tmp_path):
    rules, test = tuned
    bundled = _decisions(None, test, tmp_path / "a.csv")
    learnt = _decisions(rules, test, tmp_path / "b.csv")
    cpu = slice(32, 120)  # the hurting phase, after the tuned G/B hysteresis settles
    assert bundled[cpu].count("deny") == 0
    assert learnt[cpu].count("deny") > 0.8 * len(bundled[cpu])
    assert learnt[140:].count("allow") > 0.8 * len(learnt[140:])


def test_python_m_scorer_scores_with_it(tuned, tmp_path):
    rules, test = tuned
    rb = load_rules(rules)
    exporter = promserver.start_exporter(tmp_path, test / "kernel_metrics.csv", node="lab", speed=10.0,
                                         env={"KSENSE_WARMUP_S": "10"})
    api, metrics = support.free_port(), support.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSENSE_", "FUZZY_"))}
    env["KSENSE_SCORER_INTERVAL_S"] = "0.2"
    log = (tmp_path / "scorer.log").open("wb")
    scorer = subprocess.Popen(
        [sys.executable, "-m", "scorer", "--rules", str(rules), "--exporter-url", exporter.url + "/metrics",
         "--host", "127.0.0.1", "--port", str(api), "--metrics-port", str(metrics), "--no-csv"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def scored():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api}/score?node=lab&explain=1", timeout=5) as r:
                    report = json.loads(r.read())
            except OSError:
                return None
            return report if report.get("explain") else None

        report = support.wait_for(scored, 60, "a node scored with the tuned rules")
        i = report["inputs"]
        rq = [i[RQ_P99]] if rb.inputs else None  # shown in the inputs when the rules use it
        expected = inference.score(rb, [i["friction_signed"]], [i["energy"]], [i["cpu_pct"]], [i["psi_pct"]],
                                   rq_p99_ms=rq)[0]
        assert report["score"] == pytest.approx(expected, abs=0.05)
        names = {r["psi"] for r in report["explain"]["rules"]} | {"low"}
        assert names <= {"low", "med", "high"}
    finally:
        scorer.terminate()
        scorer.wait(15)
        exporter.stop()
        log.close()
