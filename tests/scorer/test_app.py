"""The scorer's Flask app in-process: routes, exact /score shapes (docs/api.md), body limits and
the never-5xx webhook."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from scorer import app as app_module
from scorer.app import create_app
from scorer.config import ScorerConfig
from scorer.core import admission
from scorer.core.reports import iso_time, report_json
from scorer.recorder import Recorder
from tests.scorer.fake_scorer_app import call, fake_explain, results

VALIDATE_MAX_BYTES = ScorerConfig.validate_body.max_bytes
VALIDATE_MAX_VALUES = ScorerConfig.validate_body.max_values
REVIEW = (Path(__file__).parent / "fixtures" / "admission" / "v1_pod_create.request.json").read_bytes()
REPORT_KEYS = ["node", "time", "decision", "score", "level", "medium_band", "reason", "inputs", "missing",
               "bad_count", "good_count", "victim", "aggressor", "io_aggressor"]


class CountingRecorder(Recorder):
    def __init__(self):
        super().__init__(None)
        self.records = 0

    def record(self, record):
        self.records += 1
        return super().record(record)


def make(ready=True, recorder=None, **kw):
    fixed = results() if ready else None
    recorder = recorder or CountingRecorder()
    return create_app(results=lambda: fixed, ready=lambda: ready, explain=fake_explain, recorder=recorder, **kw)


def get(app, path, query=""):
    status, headers, data = call(app, "GET", path, query=query, content_type=None)
    return status, headers, data


def test_healthz_and_readyz():
    assert get(make(), "/healthz")[::2] == (200, b"ok")
    assert get(make(), "/readyz")[::2] == (200, b"ok")
    status, headers, data = get(make(ready=False), "/readyz")
    assert (status, json.loads(data)) == (503, {"error": "not ready"})
    assert headers["Content-Type"] == "application/json"


def test_score_all_nodes_exact_shape():
    status, headers, data = get(make(), "/score")
    assert status == 200 and headers["Content-Type"] == "application/json"
    body = json.loads(data)
    assert list(body) == ["time", "source", "nodes"]
    assert body["time"] == "2026-11-28T16:00:01.000Z" and body["source"] == "prometheus"
    assert [n["node"] for n in body["nodes"]] == ["worker-1", "worker-2", "worker-3", "worker-4"]
    for node in body["nodes"]:
        assert list(node) == REPORT_KEYS
        assert "explain" not in node


def test_score_one_node_matches_the_contract_example():
    status, _, data = get(make(), "/score", "node=worker-1")
    assert status == 200
    assert json.loads(data) == {
        "node": "worker-1", "time": "2026-11-28T16:00:01.000Z", "decision": "allow",
        "score": 17.886, "level": "low", "medium_band": None, "reason": None,
        "inputs": {"friction_signed": 0.237792, "energy": 0.0, "cpu_pct": 2.413911, "psi_pct": 0.24796},
        "missing": [], "bad_count": 0, "good_count": 4, "victim": None, "aggressor": None,
        "io_aggressor": None,
    }


def test_score_medium_band_missing_inputs_and_rounding():
    body = {n["node"]: n for n in json.loads(get(make(), "/score")[2])["nodes"]}
    assert body["worker-2"]["medium_band"] == "medium-low" and body["worker-2"]["score"] == 50.256
    w4 = body["worker-4"]
    assert w4["inputs"] == {"friction_signed": None, "energy": None, "cpu_pct": 5.0, "psi_pct": None}
    assert w4["missing"] == ["friction", "energy"]
    assert w4["reason"] == "missing metrics: friction, energy"
    assert (w4["decision"], w4["score"], w4["level"]) == ("deny", 100.0, "high")


def test_score_explain():
    body = json.loads(get(make(), "/score", "node=worker-3&explain=1")[2])
    assert list(body) == [*REPORT_KEYS, "explain"]
    assert body["explain"]["node"] == "worker-3" and body["explain"]["rules"][0]["strength"] == 0.99
    every = json.loads(get(make(), "/score", "explain=true")[2])
    assert [n["explain"]["node"] for n in every["nodes"]] == ["worker-1", "worker-2", "worker-3", "worker-4"]
    assert "explain" not in json.loads(get(make(), "/score", "node=worker-3&explain=0")[2])


def test_score_explanations_are_built_once_per_results():
    calls = []

    def explain(inputs):
        calls.append(inputs.node)
        return fake_explain(inputs)

    current = [results()]
    app = create_app(results=lambda: current[0], ready=lambda: True, explain=explain, recorder=CountingRecorder())
    first = get(app, "/score", "explain=1")[2]
    for query in ("explain=1", "node=worker-2&explain=1", "explain=true", "node=worker-2&explain=1"):
        assert get(app, "/score", query)[0] == 200
    assert get(app, "/score", "explain=1")[2] == first
    assert sorted(calls) == ["worker-1", "worker-2", "worker-3", "worker-4"]
    current[0] = results()  # a new evaluation: explained again, once
    for _ in range(3):
        get(app, "/score", "node=worker-1&explain=1")
    assert calls[4:] == ["worker-1"]


def test_every_node_explained_is_rebuilt_at_most_every_interval():
    """/score?explain=1 costs one explanation per node: a new evaluation every second must not
    make a client polling it cost that every second."""
    clock, calls = [0.0], []

    def explain(inputs):
        calls.append(inputs.node)
        return fake_explain(inputs)

    views = app_module._ScoreViews(explain, lambda: clock[0], explain_all_every_s=10.0)
    first = results()
    built = views.body(first, None, True)
    assert len(calls) == 4 and json.loads(built)["nodes"][0]["explain"]["node"] == "worker-1"
    second = results()  # the next evaluation, one second later
    clock[0] = 1.0
    assert views.body(second, None, True) is built and len(calls) == 4  # as built, with its time
    assert json.loads(views.body(second, "worker-1", True))["explain"]["node"] == "worker-1"
    assert calls[4:] == ["worker-1"]  # one node's view follows every evaluation
    clock[0] = 10.0
    rebuilt = views.body(second, None, True)
    assert rebuilt is not built and sorted(calls[5:]) == ["worker-2", "worker-3", "worker-4"]  # worker-1 reused
    assert views.body(second, None, True) is rebuilt


def test_score_unknown_node_and_not_ready():
    status, _, data = get(make(), "/score", "node=nope%2F1")
    assert (status, json.loads(data)) == (404, {"error": "unknown node", "node": "nope/1"})
    assert get(make(), "/score", "node=")[0] == 404
    for query in ("", "node=worker-1"):
        status, _, data = get(make(ready=False), "/score", query)
        assert (status, json.loads(data)) == (503, {"error": "not ready"})


def test_score_has_no_side_effects():
    calls = []
    fixed = results()

    def latest():
        calls.append(1)
        return fixed

    recorder = CountingRecorder()
    app = create_app(results=latest, ready=lambda: True, explain=fake_explain, recorder=recorder)
    first = get(app, "/score")[2]
    for _ in range(50):
        assert get(app, "/score")[2] == first
    assert len(calls) == 51 and recorder.records == 0
    assert dict(recorder.stats()[0]) == dict.fromkeys(("recorded", "dry_run", "duplicate", "ignored", "bad_request"), 0)


def test_naive_times_are_local_wall_time():
    from datetime import UTC, datetime

    aware = datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=UTC)
    assert iso_time(aware) == "2026-01-02T03:04:05.678Z"
    assert iso_time(aware.astimezone().replace(tzinfo=None)) == "2026-01-02T03:04:05.678Z"
    assert report_json(results().reports["worker-1"])["time"] == "2026-11-28T16:00:01.000Z"


def test_unknown_paths_and_methods():
    assert get(make(), "/nope")[0] == 404
    status, headers, _ = call(make(), "POST", "/score", b"{}")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, headers, _ = get(make(), "/validate")
    assert status == 405 and headers["Allow"] == "POST"


# --- /validate -----------------------------------------------------------------------------------
def test_validate_records_and_counts():
    recorder = CountingRecorder()
    app = make(recorder=recorder)
    status, headers, data = call(app, "POST", "/validate", REVIEW)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(data)["response"]["allowed"] is True
    call(app, "POST", "/validate", REVIEW)  # the API server retries with the same uid
    call(app, "POST", "/validate", b"[]")
    counts, hist = recorder.stats()
    assert (counts["recorded"], counts["duplicate"], counts["bad_request"]) == (1, 1, 1)
    assert hist.count == 3 and hist.sum_seconds > 0


def test_validate_accepts_json_with_parameters():
    assert call(make(), "POST", "/validate", REVIEW, content_type="Application/JSON; charset=utf-8")[0] == 200


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/x-www-form-urlencoded",
                                          "application/jsonx", "application/yaml"])
def test_validate_needs_a_json_content_type(content_type):
    status, _, data = call(make(), "POST", "/validate", REVIEW, content_type=content_type)
    assert status == 415 and "application/json" in json.loads(data)["error"]


WSGI = {"SERVER_NAME": "test", "SERVER_PORT": "443", "wsgi.url_scheme": "https"}


class Unreadable(io.RawIOBase):
    def read(self, size=-1):
        raise AssertionError("the body must not be read")


def test_validate_refuses_a_big_content_length_without_reading():
    environ = {**WSGI, "REQUEST_METHOD": "POST", "PATH_INFO": "/validate", "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": str(VALIDATE_MAX_BYTES + 1), "wsgi.input": Unreadable()}
    seen = {}
    data = b"".join(make()(environ, lambda status, headers: seen.update(status=status)))
    assert seen["status"].startswith("413") and "larger than" in json.loads(data)["error"]


class CountingStream(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size=-1):
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def test_validate_reads_a_chunked_body_only_up_to_the_limit():
    stream = CountingStream(b" " * (VALIDATE_MAX_BYTES + 5000))
    environ = {**WSGI, "REQUEST_METHOD": "POST", "PATH_INFO": "/validate", "CONTENT_TYPE": "application/json",
               "wsgi.input": stream, "wsgi.input_terminated": True}
    seen = {}
    b"".join(make()(environ, lambda status, headers: seen.update(status=status)))
    assert seen["status"].startswith("413")
    assert stream.bytes_read == VALIDATE_MAX_BYTES + 1


def test_validate_chunked_body_within_the_limit_is_reviewed():
    assert call(make(), "POST", "/validate", REVIEW, chunked=True)[0] == 200


@pytest.mark.parametrize(
    ("body", "content_length", "why"),
    [
        (b"\xff\xfe{}", None, "not UTF-8"),
        ('{"a": "\u00e9"}'.encode("utf-16"), None, "not UTF-8"),
        (b"\xef\xbb\xbf{}", None, "not valid JSON"),  # a UTF-8 BOM is not JSON
        (b"{", None, "not valid JSON"),
        (b"", None, "not valid JSON"),
        (b'{"a": NaN}', None, "NaN is not JSON"),
        (b"[-Infinity]", None, "not JSON"),
        (b"[" * (VALIDATE_MAX_VALUES - 1), None, "nested too deeply"),
        (b"[" * VALIDATE_MAX_VALUES, None, "JSON values"),  # refused (413) before parsing
        (b"{}", "12abc", "invalid Content-Length"),
        (b"{}", "-1", "invalid Content-Length"),
    ],
)
def test_validate_bad_bodies(body, content_length, why):
    status, _, data = call(make(), "POST", "/validate", body, content_length=content_length)
    assert status == (413 if why == "JSON values" else 400) and why in json.loads(data)["error"]


@pytest.mark.parametrize("route", ["/validate", "/filter", "/prioritize"])
def test_a_body_with_too_many_values_is_refused_before_parsing(route, monkeypatch):
    limit = ScorerConfig.validate_body if route == "/validate" else ScorerConfig.extender_body
    body = b"[" + b",".join([b"0"] * limit.max_values) + b"]"  # max_values + 1 values
    with monkeypatch.context() as patched:
        patched.setattr(app_module.json, "loads", lambda *a, **k: pytest.fail("parsed"))
        status, _, data = call(make(), "POST", route, body)
    assert status == 413 and f"more than {limit.max_values} JSON values" in json.loads(data)["error"]


def test_a_body_at_the_value_cap_is_parsed():
    values = ScorerConfig.extender_body.max_values
    body = json.dumps({"NodeNames": [f"n{i}" for i in range(values - 3)]}).encode()  # { : [ and commas
    assert call(make(), "POST", "/filter", body)[0] == 200


def test_validate_a_short_body_is_a_bad_request():
    status, _, _ = call(make(), "POST", "/validate", REVIEW[:100], content_length=str(len(REVIEW)))
    assert status == 400


def test_validate_bug_with_a_known_uid_allows_and_logs_once(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(admission, "review", broken)
    recorder = CountingRecorder()
    app = make(recorder=recorder)
    with caplog.at_level(logging.ERROR, logger="ksense.scorer.http"):
        answers = [call(app, "POST", "/validate", REVIEW) for _ in range(5)]
        bad = call(app, "POST", "/validate", b'{"request": {}}')
    for status, _, data in answers:
        assert status == 200
        assert json.loads(data)["response"] == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}
    assert bad[0] == 400
    failures = [r for r in caplog.records if "event=request_failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert recorder.records == 0 and recorder.stats()[0]["ignored"] == 5


def test_validate_recorder_failure_still_answers_the_review(caplog):
    class Broken(CountingRecorder):
        def record(self, record):
            raise OSError("disk on fire")

    with caplog.at_level(logging.ERROR, logger="ksense.scorer.http"):
        status, _, data = call(make(recorder=Broken()), "POST", "/validate", REVIEW)
    assert status == 200 and "auditAnnotations" in json.loads(data)["response"]
    assert any("validate record" in r.getMessage() for r in caplog.records)


def test_other_routes_answer_500_on_a_bug_without_crashing(caplog):
    def broken_explain(inputs):
        raise KeyError("oops")

    app = create_app(results=results, ready=lambda: True, explain=broken_explain, recorder=Recorder(None))
    with caplog.at_level(logging.ERROR, logger="ksense.scorer.http"):
        status, _, data = get(app, "/score", "explain=1")
    assert (status, json.loads(data)) == (500, {"error": "internal error"})


def test_failure_log_is_rate_limited():
    clock = [0.0]
    records = []

    class Sink(logging.Handler):
        def emit(self, record):
            records.append(record)

    log = logging.getLogger("test.failure.log")
    log.addHandler(Sink())
    log.propagate = False
    failures = app_module._FailureLog(log, clock=lambda: clock[0])
    for t in (0.0, 1.0, 30.0, 61.0, 62.0, 200.0):
        clock[0] = t
        try:
            raise ValueError("x")
        except ValueError:
            failures.report("/x")
    assert [r.getMessage() for r in records] == [
        "event=request_failed where=/x",
        "event=request_failed where=/x failures=4 (traceback logged once)",
        "event=request_failed where=/x failures=6 (traceback logged once)",
    ]
