"""The end-to-end harness' own parts, fast and without real parts: the committed quiet-node
recording, the decisions the replayed recordings imply, the webhook wiring of the test API
server, and the timeline outputs."""

from __future__ import annotations

import importlib.util
import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.conftest import require
from tests.e2e import recordings
from tests.e2e.apiserver import AdmittingAPIServer, Webhook, WebhookConfig
from tests.fixtures import make_quiet_node
from tests.kubeapi import factories
from tests.kubeapi.client import make_api_client
from tests.kubeapi.server import Store

W, START, END = recordings.WARMUP_S, recordings.EPISODE_START_S, recordings.EPISODE_END_S


def test_the_committed_quiet_node_recording_is_a_fresh_build():
    assert make_quiet_node.FIXTURE.read_text() == make_quiet_node.render(), (
        "tests/fixtures/quiet_node.csv differs: run .venv/bin/python -m tests.fixtures.make_quiet_node")


def _check_timeline(verdicts: list[recordings.Verdict], quiet_until: float) -> None:
    """Allowed within 3 ticks of the freeze until the episode, denied within one tick of its
    start and throughout, allowed within 2 ticks of its end and until `quiet_until`."""
    by = {v.offset_s: v for v in verdicts}
    assert all(by[t].calibrating for t in range(W)), "calibrating during the warm-up"
    assert all(by[t].decision == "allow" for t in range(W + 3, START)), [
        (t, by[t].score) for t in range(W + 3, START) if by[t].decision != "allow"]
    assert all(by[t].decision == "deny" for t in range(START, END)), "denied through the episode"
    assert all(by[t].decision == "allow" for t in range(END + 2, int(quiet_until))), [
        (t, by[t].score) for t in range(END + 2, int(quiet_until)) if by[t].decision != "allow"]


def test_node_c_quiet_node_recording_drives_the_scenario_timeline():
    verdicts = recordings.simulate(recordings.read_raw(recordings.QUIET_NODE_CSV))
    assert len(verdicts) == recordings.DURATION_S
    _check_timeline(verdicts, quiet_until=recordings.DURATION_S)


def test_node_b_real_recording_copy_drives_the_scenario_timeline(real_kernel_csv, tmp_path):
    path = recordings.node_b_recording(real_kernel_csv, tmp_path / "node-b.csv", datetime(2026, 11, 28, 9, 0, 0))
    raw = recordings.read_raw(path)
    assert len(raw) == recordings.DURATION_S and raw[0].time == datetime(2026, 11, 28, 9, 0, 0)
    real = recordings.read_raw(real_kernel_csv)[recordings.REAL_START_ROW]
    assert (raw[0].sched_count, raw[0].sched_avg_ms, raw[0].psi) == (real.sched_count, real.sched_avg_ms, real.psi)
    # The real node has a short real blip of its own later on; the scenario is over long before.
    _check_timeline(recordings.simulate(raw), quiet_until=300)


def test_the_webhook_config_is_deploys():
    cfg = WebhookConfig.from_manifest()
    assert (cfg.path, cfg.failure_policy, cfg.timeout_s) == ("/validate", "Ignore", 2.0)
    assert cfg.matches("pods", "CREATE", "sa")
    assert not cfg.matches("pods", "UPDATE", "sa")
    for namespace in ("default", "kube-system", "ksense"):
        assert not cfg.matches("pods", "CREATE", namespace)


def test_the_fake_still_has_the_admission_hook_point():
    assert callable(getattr(Store, "_default_and_validate", None)), "tests/kubeapi changed: move the hook"


class _Scorer(BaseHTTPRequestHandler):
    """A stand-in webhook answering like the scorer: allowed, uid echoed; records requests."""

    reviews: ClassVar[list[dict]] = []
    allowed = True

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).reviews.append(body)
        answer = {"apiVersion": body["apiVersion"], "kind": body["kind"],
                  "response": {"uid": body["request"]["uid"], "allowed": type(self).allowed,
                               "status": {"message": "decision=deny allowed_nodes=0/3"}}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scorer_stub():
    _Scorer.reviews, _Scorer.allowed = [], True
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Scorer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _api(webhook: Webhook):
    server = AdmittingAPIServer(webhook).start()
    return server, make_api_client(server.url)


def test_a_pod_create_calls_the_webhook_once_after_defaulting(scorer_stub):
    webhook = Webhook(WebhookConfig.from_manifest(), [scorer_stub], ca_file=None)
    server, api_client = _api(webhook)
    try:
        core = k8s.CoreV1Api(api_client)
        core.create_namespaced_pod("sa", factories.pod("p1", "sa"))
        core.create_namespaced_pod("default", factories.pod("p2", "default"))  # not in the allowlist
        server.store.create("pods", factories.pod("p3", "sa"))  # in-process setup: not an API request
        assert [r["request"]["name"] for r in _Scorer.reviews] == ["p1"]
        request = _Scorer.reviews[0]["request"]
        assert request["operation"] == "CREATE" and request["namespace"] == "sa"
        assert request["object"]["metadata"]["uid"] == server.store.pod("sa", "p1")["metadata"]["uid"]
        assert request["object"]["spec"]["restartPolicy"] == "Always"  # defaulted before admission
        assert [(c.name, c.status, c.allowed, c.error) for c in webhook.calls] == [("p1", 200, True, "")]
        assert webhook.calls[0].uid == request["uid"] != request["object"]["metadata"]["uid"]
        server.store.bind("sa", "p1", "n1")
        assert [(b.name, b.node) for b in server.store.binds] == [("p1", "n1")]
    finally:
        api_client.close()
        server.stop()


def test_failure_policy_ignore_admits_when_the_webhook_is_down_and_a_denial_is_a_403(scorer_stub):
    dead = Webhook(WebhookConfig.from_manifest(), ["http://127.0.0.1:9"], ca_file=None)
    server, api_client = _api(dead)
    try:
        k8s.CoreV1Api(api_client).create_namespaced_pod("sa", factories.pod("p1", "sa"))
        assert server.store.pod("sa", "p1") is not None
        assert dead.calls[0].status is None and dead.calls[0].error
    finally:
        api_client.close()
        server.stop()
    _Scorer.allowed = False
    denying = Webhook(WebhookConfig.from_manifest(), [scorer_stub], ca_file=None)
    server, api_client = _api(denying)
    try:
        with pytest.raises(ApiException) as err:
            k8s.CoreV1Api(api_client).create_namespaced_pod("sa", factories.pod("p1", "sa"))
        assert err.value.status == 403 and "denied the request" in err.value.body
        assert server.store.pod("sa", "p1") is None
    finally:
        api_client.close()
        server.stop()


def test_the_timeline_png_and_csvs_are_written(tmp_path: Path):
    require(importlib.util.find_spec("matplotlib") is not None, "needs matplotlib (requirements/plot.txt)")
    from tests.e2e import timeline

    class NoStack:
        api = webhook = None
        prom_url = "http://127.0.0.1:9"

    obs = timeline.Observer(NoStack())  # never started: rows are added by hand
    for i in range(20):
        for node, score in (("node-a", 20 + 4 * i), ("node-b", 18.0), ("node-c", 19.0)):
            obs.rows.append(timeline.Row(1000.0 + i, node, score, "deny" if score >= 70 else "allow", i // 5, 1))
    obs.mark("contention on node-a")
    files = timeline.write_outputs(obs, tmp_path)
    assert {f.name for f in files} == {"timeline.csv", "events.csv", "decisions.csv", "timeline.png"}
    lines = (tmp_path / "timeline.csv").read_text().splitlines()
    assert lines[0] == "time,node,score,decision,binds,pending" and len(lines) == 61
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
