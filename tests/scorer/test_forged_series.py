"""Trust the label, not the publisher: forged `ksense_*` series in a shared real Prometheus steer
no decision.

Two real Prometheus servers run the scrape jobs deploy/ ships (overlays/with-prometheus, as is,
their Kubernetes discovery replaced by file_sd targets carrying the same `__meta_kubernetes_*`
labels) over the same replaying exporter (`python -m exporter --source replay`), a pod on node
w1. The second, shared one also scrapes three intruders publishing quiet inputs (and, for the
scheduler, allow decisions) for w1:
- job "tenant-metrics" in namespace "tenant", as a shared Prometheus scrapes other teams' pods;
  its exposition claims `job="ksense-exporter",namespace="ksense"` and also names a node w9
  (honor_labels off renames the claims exported_*);
- a Service named "ksense-exporter" in namespace "tenant", picked up by the shipped job itself
  (someone's look-alike): the namespace matcher keeps it out;
- a pod of the ksense exporter on node w2 (compromised) claiming w1: `node` comes from the pod's
  node, so it can speak for w2 only.
A real scorer (`python -m scorer`, default selector) reads the shared Prometheus, which also
scrapes its /metrics through the shipped job; the scheduler's PrometheusScores reads it too.

Held to: at every instant read during more than one scrape interval, w1's inputs read through
the shared Prometheus equal those read through the first (the run without the intruders) —
value for value, so the score is equal — and no invented node appears, for the scorer's source,
the scorer process and the scheduler. Bare metric names (the code before this test) read the
intruders: the newest series of a node wins, so across an interval the forged ones win at some
instants (one run: 25 of 42 reads scored w1 17.6 instead of 52.2), and w9 exists.

The exporter replays the reference recording's first 110 rows 1 s apart at speed 50 (baseline
frozen, Direction calibrated), then holds one busy row for ~60 s of wall time, so both
Prometheus servers serve the same sample while the comparisons run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from common import names as n
from common.core.csvrow import format_time, parse_time
from scheduler.scores import PrometheusScores
from scorer.core.decision import DecisionParams
from scorer.core.evaluate import evaluate
from scorer.rulefile import load_rules
from scorer.sources.local import LocalSource
from scorer.sources.prometheus import PrometheusSource
from tests import support
from tests.scorer import promserver
from tests.scorer.trickle import TrickleServer, http_response
from tests.support import REPO, wait_for

pytestmark = pytest.mark.real

NODE, INVENTED, LIAR = "w1", "w9", "w2"
SPEED = 50.0
WARMUP_ROWS = range(0, 110)
HELD_ROW = 2328  # a busy stretch of the recording (rows 2320-2333 cross into deny and back)
HELD_WALL_S = 60.0


def write_recording(real_csv: Path, out: Path) -> None:
    with real_csv.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    t = parse_time(rows[0][0])
    chosen = []
    for i, index in enumerate([*WARMUP_ROWS, HELD_ROW, HELD_ROW]):
        row = list(rows[index])
        if i > 0:
            t += timedelta(seconds=HELD_WALL_S * SPEED if i == len(WARMUP_ROWS) + 1 else 1.0)
        row[0] = format_time(t)
        chosen.append(row)
    with out.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(n.KERNEL_METRICS_COLUMNS)
        writer.writerows(chosen)


QUIET = {n.FRICTION: 0.0, n.FRICTION_DIRECTION: -1.0, n.ENERGY: 0.0, n.CPU_UTILIZATION: 0.0,
         n.PRESSURE_WORST: 0.0, n.BASELINE_FROZEN: 1.0, n.BASELINE_WARMUP_REMAINING: 0.0}


def exposition(nodes: tuple[str, ...], claim: str = "", scorer_claim: str | None = None) -> bytes:
    """Quiet, calibrated inputs for `nodes` (with extra `claim` labels); with `scorer_claim`,
    allow decisions and score 0 for them too."""
    extra = f",{claim}" if claim else ""
    lines = []
    for family, value in QUIET.items():
        lines += [f"# TYPE {family.name} gauge"]
        lines += [f'{family.name}{{node="{node}"{extra}}} {value}' for node in nodes]
    if scorer_claim is not None:
        for family, value in ((n.NODE_ADMISSION_ALLOWED, 1.0), (n.NODE_SCORE, 0.0)):
            lines += [f"# TYPE {family.name} gauge"]
            lines += [f'{family.name}{{node="{node}",{scorer_claim}}} {value}' for node in nodes]
    return ("\n".join(lines) + "\n").encode()


def serving(body: bytes) -> TrickleServer:
    return TrickleServer(lambda method, target: http_response(body, content_type="text/plain; version=0.0.4"),
                         trickle=False)


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except (OSError, ValueError):
        return 0, {}


def inputs_of(inputs, node: str = NODE):
    i = inputs.nodes[node]
    return i.friction, i.direction, i.energy, i.cpu_pct, i.psi_pct, i.missing


def test_forged_series_in_a_shared_prometheus_change_no_decision(real_parts, need_prometheus, real_kernel_csv,
                                                                  tmp_path):
    recording = tmp_path / "recording.csv"
    write_recording(real_kernel_csv, recording)
    tenant = serving(exposition((NODE, INVENTED), f'job="{n.JOB_EXPORTER}",namespace="{n.NAMESPACE}"',
                                f'job="{n.JOB_SCORER}",namespace="{n.NAMESPACE}"'))
    look_alike = serving(exposition((NODE,)))
    exporter_port, api, metrics = (support.free_port() for _ in range(3))
    exporter_address = f"127.0.0.1:{exporter_port}"
    ours = promserver.sd_target(exporter_address, service=n.JOB_EXPORTER, pod="ksense-exporter-a", node=NODE)
    sd_alone, sd_shared = tmp_path / "alone.json", tmp_path / "shared.json"
    sd_alone.write_text(json.dumps([ours]))
    sd_shared.write_text(json.dumps([
        ours,
        promserver.sd_target(f"127.0.0.1:{metrics}", service=n.JOB_SCORER, pod="ksense-scorer-a", node=NODE),
        promserver.sd_target(f"127.0.0.1:{look_alike.port}", service=n.JOB_EXPORTER, pod="look-alike",
                             node=NODE, namespace="tenant"),
        promserver.sd_target(f"127.0.0.1:{look_alike.port}", service=n.JOB_EXPORTER, pod="ksense-exporter-b",
                             node=LIAR),
    ]))
    alone = real_parts.prometheus(promserver.shipped_jobs(sd_alone))
    shared = real_parts.prometheus([
        *promserver.shipped_jobs(sd_shared),
        promserver.component_job("tenant-metrics", [f"127.0.0.1:{tenant.port}"], namespace="tenant"),
    ])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KSENSE_", "FUZZY_"))}
    log = (tmp_path / "scorer.log").open("wb")
    scorer = subprocess.Popen(
        [sys.executable, "-m", "scorer", "--prometheus-url", shared.url, "--host", "127.0.0.1", "--port", str(api),
         "--metrics-port", str(metrics), "--no-csv"],
        cwd=REPO, env={**env, "KSENSE_SCORER_INTERVAL_S": "1"}, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        # The intruders are in the shared Prometheus, under the identity their scrape gives them.
        def forged():
            found = promserver.instant(shared.url, n.FRICTION.name)
            return found if len(found) == 4 else None

        found = wait_for(forged, 30, "the intruders scraped")
        labels = {(s["metric"]["job"], s["metric"]["namespace"], s["metric"]["node"]) for s in found}
        assert labels == {("tenant-metrics", "tenant", NODE), ("tenant-metrics", "tenant", INVENTED),
                          (n.JOB_EXPORTER, "tenant", NODE), (n.JOB_EXPORTER, n.NAMESPACE, LIAR)}
        assert {s["metric"].get("exported_job") for s in found} == {n.JOB_EXPORTER, None}
        assert not any("exported_node" in s["metric"] for s in found)  # dropped, as shipped

        real_parts.exporter(recording, node=NODE, speed=SPEED, port=exporter_port,
                            env={"KSENSE_WARMUP_S": "30"})
        local = LocalSource(f"http://{exporter_address}/metrics")
        without, with_intruders = PrometheusSource(alone.url), PrometheusSource(shared.url)

        def held_everywhere():
            """The held row's inputs, once both Prometheus servers serve what the exporter does."""
            now = datetime.now(UTC)
            mine = local.fetch(now)
            if NODE not in mine.nodes or mine.nodes[NODE].missing or math.isnan(mine.nodes[NODE].direction):
                return None
            want = inputs_of(mine)
            return want if inputs_of(without.fetch(now)) == want == inputs_of(with_intruders.fetch(now)) else None

        held = wait_for(held_everywhere, 40, "the held row in both Prometheus servers", poll_s=0.2)

        rb, params = load_rules(), DecisionParams()
        until, compared = time.monotonic() + 1.5, 0
        while time.monotonic() < until or compared < 10:  # over a scrape interval: the newest series varies
            at = datetime.now(UTC)
            a, b = without.fetch(at), with_intruders.fetch(at)
            compared += 1
            assert set(b.nodes) == {NODE, LIAR}, f"invented nodes read at {at}: {sorted(b.nodes)}"
            assert inputs_of(a) == inputs_of(b) == held, f"at {at}"
            ra, rb_ = evaluate(rb, params, {}, a)[1].reports[NODE], evaluate(rb, params, {}, b)[1].reports[NODE]
            # Equal inputs; the score within float rounding (inference runs one vectorised batch
            # per tick, here of one node vs two).
            assert (ra.level, ra.decision) == (rb_.level, rb_.decision)
            assert ra.score == pytest.approx(rb_.score, rel=1e-12)
            score_a = ra.score
        print(f"held row {HELD_ROW}: inputs {held}, score {score_a:.1f} with and without the intruders")

        # The scorer process (default selector) scores w1 from the exporter's series only.
        def process_report():
            status, report = get_json(f"http://127.0.0.1:{api}/score?node={NODE}")
            return status == 200 and report["missing"] == [] and report["score"] == round(score_a, 3)  # JSON: 3 places

        wait_for(process_report, 30, f"the scorer process to score {NODE} at {score_a:.1f}", poll_s=0.2)
        assert get_json(f"http://127.0.0.1:{api}/score?node={INVENTED}")[0] == 404
        status, everything = get_json(f"http://127.0.0.1:{api}/score")
        assert status == 200 and [r["node"] for r in everything["nodes"]] == [NODE, LIAR]

        # The scheduler reads the scorer's decision for w1 and no w9, whatever the intruders say.
        def scheduler_view():
            """The scheduler's records once they show the process's current w1 decision (the two
            are read a scrape apart, and the decision may still be settling into the held row)."""
            got = PrometheusScores(shared.url).fetch()
            status, now_report = get_json(f"http://127.0.0.1:{api}/score?node={NODE}")
            record = got.records.get(NODE)
            if got.error is not None or record is None or status != 200:
                return None
            same = record.allowed == (now_report["decision"] == n.DECISION_ALLOW)
            return got if same and record.score == pytest.approx(score_a, abs=1e-9) else None

        scores = wait_for(scheduler_view, 30, "the scorer's decision for w1 in the shared Prometheus", poll_s=0.2)
        assert set(scores.records) == {NODE, LIAR}  # the intruders' allows for w1 and w9 are not read
    finally:
        support.stop(scorer, 15)
        log.close()
        tenant.close()
        look_alike.close()
