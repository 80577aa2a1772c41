"""`python -m scorer` as a process: a replaying exporter scored through the embedded local
source, the HTTP API and /metrics answering, SIGTERM, and start-up refusals (bad rules, bad
configuration) with exit 2 and a message naming the problem."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from tests import support
from tests.scorer import promserver
from tests.support import REPO


def _env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSENSE_", "FUZZY_"))}
    env.update(extra)
    return env


def _get(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode()


def test_scores_a_local_exporter_and_stops_on_sigterm(tmp_path, real_kernel_csv):
    exporter = promserver.start_exporter(tmp_path, real_kernel_csv, node="proc-node", speed=20.0,
                                         env={"KSENSE_WARMUP_S": "5"})
    api, metrics = support.free_port(), support.free_port()
    log = (tmp_path / "scorer.log").open("wb")
    scorer = subprocess.Popen(
        [sys.executable, "-m", "scorer", "--exporter-url", exporter.url + "/metrics", "--host", "127.0.0.1",
         "--port", str(api), "--metrics-port", str(metrics), "--monitor-csv", str(tmp_path / "m.csv"),
         "--score-csv", str(tmp_path / "s.csv")],
        cwd=REPO, env=_env({"KSENSE_SCORER_INTERVAL_S": "0.2"}), stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        def scored():
            try:
                status, body = _get(f"http://127.0.0.1:{api}/score?node=proc-node&explain=1")
            except OSError:
                return None
            report = json.loads(body)
            return report if status == 200 and "explain" in report else None

        report = support.wait_for(scored, 60, "a scored node with an explain trace")
        assert report["node"] == "proc-node" and report["decision"] in ("allow", "deny")
        assert report["level"] in ("low", "medium", "high") and report["missing"] == []
        status, text = _get(f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200 and 'ksense_node_score{node="proc-node"}' in text
        assert "ksense_scorer_last_success_timestamp_seconds" in text
        rows = (tmp_path / "m.csv").read_text().splitlines()
        assert rows[0].startswith("Time,Node,FrictionSigned") and any(",proc-node," in r for r in rows[1:])
        started = time.monotonic()
        scorer.send_signal(signal.SIGTERM)
        assert scorer.wait(timeout=15) == 0
        assert time.monotonic() - started < 12
        lines = (tmp_path / "scorer.log").read_text().splitlines()
        # One log style: gunicorn's own lines too (no "[date] [pid] [INFO]" lines).
        assert any("event=gunicorn" in line for line in lines), lines
        banner = "scorer: scoring local exporter"  # the one start-up line for people, on stdout
        assert [line for line in lines if line and not line.startswith(("ts=", banner))] == []
    finally:
        if scorer.poll() is None:
            scorer.kill()
            scorer.wait()
        exporter.stop()
        log.close()


def test_an_invalid_rules_file_refuses_to_start_naming_the_cell(tmp_path):
    rules = json.loads((REPO / "scorer" / "rules_default.json").read_text())
    rules["rules"][0]["energy"]["short"] = "huge"
    bad = tmp_path / "rules.json"
    bad.write_text(json.dumps(rules))
    done = subprocess.run([sys.executable, "-m", "scorer", "--rules", str(bad)], cwd=REPO, env=_env({}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert str(bad) in done.stderr and "huge" in done.stderr and "rules[" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_configuration_exits_2_listing_every_problem():
    done = subprocess.run(
        [sys.executable, "-m", "scorer"], cwd=REPO, capture_output=True, text=True, timeout=60,
        env=_env({"FUZZY_WEBHOOK_PORT": "http", "FUZZY_ALLOW_ON_MISSING": "perhaps", "FUZZY_TLS_KEY": "/nope"}),
    )
    assert done.returncode == 2
    for name in ("FUZZY_WEBHOOK_PORT", "FUZZY_ALLOW_ON_MISSING", "FUZZY_TLS_KEY"):
        assert name in done.stderr
    assert "Traceback" not in done.stderr
