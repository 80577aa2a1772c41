"""The run-queue p99 input in real processes: `python -m scorer` scoring a replaying exporter with
a rule file that uses it (explain shows it, decisions follow it), and `python -m scorer.replay`
reading it from a recording's SchedLat_P99_ms (and refusing a recording without it)."""

from __future__ import annotations

import csv
import gzip
import json
import subprocess
import sys
import urllib.request

from common.names import RQ_P99
from tests import support
from tests.scorer import promserver
from tests.scorer.test_rq_input import LONG, rq_document
from tests.support import REPO

LAB_RECORDING = REPO / "data" / "lab" / "rec-105" / "kernel_metrics.csv.gz"


def _always_high_document() -> dict:
    """rq sets so low that any measured p99 (≥ 2 µs) is fully "high", whose rules conclude long."""
    doc = rq_document(LONG)
    doc["variables"][RQ_P99]["sets"] = {
        "low": {"fn": "trap", "params": [0, 0, 0.0005, 0.001]},
        "med": {"fn": "tri", "params": [0.0005, 0.001, 0.002]},
        "high": {"fn": "trap", "params": [0.001, 0.002, 50, 50]},
    }
    return doc


def test_scorer_process_scores_and_explains_the_rq_input(tmp_path, real_kernel_csv):
    rules = tmp_path / "rq.json"
    rules.write_text(json.dumps(_always_high_document()))
    exporter = promserver.start_exporter(tmp_path, real_kernel_csv, node="rq-node", speed=20.0,
                                         env={"KSENSE_WARMUP_S": "5"})
    api, metrics = support.free_port(), support.free_port()
    scorer = support.start_module(
        tmp_path, "scorer", ["-m", "scorer", "--exporter-url", exporter.url + "/metrics", "--host", "127.0.0.1",
                             "--port", str(api), "--metrics-port", str(metrics), "--rules", str(rules)],
        api, "/healthz", env={"KSENSE_SCORER_INTERVAL_S": "0.2"})
    try:
        def scored():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api}/score?node=rq-node&explain=1", timeout=5) as r:
                    report = json.loads(r.read())
            except OSError:
                return None
            return report if "explain" in report else None

        report = support.wait_for(scored, 60, "a scored node with an explain trace")
        assert report["inputs"][RQ_P99] > 0 and report["missing"] == []
        trace = report["explain"]
        assert trace["memberships"][RQ_P99] == {"low": 0.0, "med": 0.0, "high": 1.0}
        assert trace["rules"][0][RQ_P99] == "high" and trace["rules"][0]["output"] == "long"
        # Only rq-high rules fire (μ_low = μ_med = 0), all concluding long: a deny whatever the other inputs.
        assert {(r[RQ_P99], r["output"]) for r in trace["rules"]} == {("high", "long")}
        assert report["decision"] == "deny" and report["score"] >= 70 and report["reason"].startswith("score ")
    finally:
        scorer.stop()
        exporter.stop()


def _replay(tmp_path, recording, rules=None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "scorer.replay", str(recording), "-o", str(tmp_path / "out.csv"), "--node", "n"]
    args += ["--rules", str(rules)] if rules else []
    return subprocess.run(args, cwd=REPO, env=support.clean_env({}), capture_output=True, text=True, timeout=120)


def _decisions(tmp_path) -> list[str]:
    with open(tmp_path / "out.csv", newline="") as f:
        return [row["Decision"] for row in csv.DictReader(f)]


def test_replay_reads_rq_from_the_recording_and_it_changes_decisions(tmp_path):
    rules = tmp_path / "rq.json"
    rules.write_text(json.dumps(rq_document()))
    assert _replay(tmp_path, LAB_RECORDING).returncode == 0
    bundled = _decisions(tmp_path)
    done = _replay(tmp_path, LAB_RECORDING, rules)
    assert done.returncode == 0, done.stderr
    with_rq = _decisions(tmp_path)
    assert len(with_rq) == len(bundled)
    # rq "high" (≥ 1 ms) concludes long: more denies, and only where the bundled rules allowed.
    changed = [i for i, (a, b) in enumerate(zip(bundled, with_rq, strict=True)) if a != b]
    assert len(changed) > 60 and all(bundled[i] == "allow" and with_rq[i] == "deny" for i in changed)


def test_replay_refuses_rq_rules_for_a_recording_without_p99(tmp_path, real_kernel_csv):
    blank = tmp_path / "procfs.csv.gz"
    with open(real_kernel_csv, newline="") as src, gzip.open(blank, "wt", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst, lineterminator="\n")
        header = next(reader)
        col = header.index("SchedLat_P99_ms")
        writer.writerow(header)
        writer.writerows([*row[:col], "", *row[col + 1:]] for row in reader)
    rules = tmp_path / "rq.json"
    rules.write_text(json.dumps(rq_document()))
    done = _replay(tmp_path, blank, rules)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"uses input rq_p99_ms, which the recording {blank} source cannot provide" in done.stderr
    assert _replay(tmp_path, blank).returncode == 0  # the bundled rules do not need it
