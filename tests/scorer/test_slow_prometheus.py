"""A Prometheus that trickles its answers (1 byte/s, status line and headers included) against
the real scorer process (`python -m scorer`, gunicorn worker, real sockets).

requests' `timeout=2` is per read, so each such answer used to take minutes, and the start-up
history replay ran before serving: the API did not answer at all. Held to here:
- the API answers from the start — /healthz 200 and /readyz 503 ("not ready") each in < 1 s —
  while the history replay is still waiting on Prometheus (here its range queries take 1.5 s
  each, inside their deadline: ~12 s for the eight);
- every query, range or instant, ends at its 2 s deadline (+ a little): the stand-in sees each
  connection closed by then;
- a node the scorer knows, whose inputs can no longer be fetched, is reported *missing* (deny,
  `missing metrics: friction, energy (timeout)`) in fresh results, answered at once — not
  left to go stale behind a stuck tick (readiness stays 200).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

from common import names as n
from scorer.core.inputs import SIGNALS
from tests import support
from tests.scorer.trickle import TrickleServer, prometheus_answer
from tests.support import REPO, wait_for

NODE = "w1"
QUERY_DEADLINE_S = 2.0  # ScorerConfig.query_timeout_s
#: "A little": the watchdog's wake-up and the stand-in seeing the close, on a busy 2-core machine.
SLACK_S = 0.5
ANSWER_S = 1.0
RANGE_QUERY_S = 1.5


def get(url: str) -> tuple[int, dict | str, float]:
    """(status, JSON or text, seconds); status 0 when nothing answered within 5 s."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError:
        return 0, "", time.monotonic() - started
    took = time.monotonic() - started
    try:
        return status, json.loads(raw), took
    except ValueError:
        return status, raw.decode(errors="replace"), took


def test_a_trickling_prometheus_never_keeps_the_api_from_answering(tmp_path):
    server = TrickleServer(prometheus_answer((NODE,)), trickle=lambda target: "query_range" not in target,
                           hold_s=RANGE_QUERY_S)
    api, metrics = support.free_port(), support.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSENSE_", "FUZZY_"))}
    log_path = tmp_path / "scorer.log"
    log = log_path.open("wb")
    base = f"http://127.0.0.1:{api}"
    spawned = time.monotonic()
    scorer = subprocess.Popen(
        [sys.executable, "-m", "scorer", "--prometheus-url", server.url, "--host", "127.0.0.1", "--port", str(api),
         "--metrics-port", str(metrics), "--no-csv"],
        cwd=REPO, env={**env, "KSENSE_SCORER_INTERVAL_S": "1", "KSENSE_SCORER_REPLAY_S": "300"},
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        # 1. Serving at once, while the history replay waits on its first range query.
        wait_for(lambda: get(f"{base}/healthz")[0] == 200, 30, f"/healthz (log: {log_path})", poll_s=0.1)
        first_answer_s = time.monotonic() - spawned
        for path, want in (("/healthz", 200), ("/readyz", 503), ("/score", 503)):
            status, body, took = get(base + path)
            assert status == want and took < ANSWER_S, (path, status, body, took)
        assert get(f"{base}/readyz")[1] == {"error": "not ready"}
        replayed = [s for s in server.finished() if "query_range" in s.target]
        assert len(replayed) < len(SIGNALS), "the API answered only once the history replay was over"

        # 2. The replay ends (an empty history: nothing to rebuild), then every tick's first
        # query ends at its deadline (the rest of a failed tick is skipped).
        wait_for(lambda: len([s for s in server.finished() if "/query?" in s.target]) >= 3, 40,
                 "three ticks' queries to end", poll_s=0.2)
        assert len([s for s in server.finished() if "query_range" in s.target]) == len(SIGNALS)
        # 3. A node becomes known while Prometheus answers promptly...
        server.trickle, server.hold_s = False, 0.0
        wait_for(lambda: (r := get(f"{base}/score?node={NODE}"))[0] == 200 and r[1]["missing"] == [], 20,
                 f"{NODE} scored", poll_s=0.2)
        assert get(f"{base}/readyz")[0] == 200
        # ...and trickles again: the node is reported missing, promptly and in fresh results.
        server.trickle = True

        def missing_report():
            status, report, took = get(f"{base}/score?node={NODE}")
            assert status == 200 and took < ANSWER_S, (status, report, took)
            return report if report["missing"] == list(n.INPUTS) else None

        report = wait_for(missing_report, 20, f"{NODE} reported missing", poll_s=0.2)
        assert report["decision"] == n.DECISION_DENY
        assert report["reason"] == "missing metrics: friction, energy (timeout)"
        for _ in range(3):  # fresh results, tick after tick, and ready: not stale
            status, body, took = get(f"{base}/readyz")
            assert status == 200 and took < ANSWER_S
        status, everything, took = get(f"{base}/score")
        assert status == 200 and took < ANSWER_S and [r["node"] for r in everything["nodes"]] == [NODE]

        # Ticks keep trickling after the checks above: wait for five cut queries rather than count
        # the ones that happen to have ended by now (phase 2 guarantees three, phase 3 one).
        def five_trickled():
            done = [s for s in server.finished() if s.trickled]
            return done if len(done) >= 5 else None

        trickled = wait_for(five_trickled, 20, "five trickled queries cut at their deadline", poll_s=0.2)
        worst = max(s.seconds for s in trickled)
        print(f"first /healthz {first_answer_s:.2f} s after spawn; {len(trickled)} trickled queries, "
              f"longest {worst:.2f} s (deadline {QUERY_DEADLINE_S:g} s)")
        assert worst < QUERY_DEADLINE_S + SLACK_S, [(s.target[:60], round(s.seconds, 2)) for s in trickled]
        assert scorer.poll() is None, log_path.read_text()[-2000:]
    finally:
        support.stop(scorer, 15)
        log.close()
        server.close()
