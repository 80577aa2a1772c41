"""Property tests: whatever is POSTed to /validate, the answer is 200 with allowed=true, 400, 413 or
415, never 5xx, and every 200 is a well-formed AdmissionReview echoing the request's uid.

Everything goes through the WSGI app in-process (the HTTP parsing in front of it is gunicorn's).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorer.app import create_app
from scorer.config import ScorerConfig
from scorer.recorder import Recorder
from tests.scorer.fake_scorer_app import call, fake_explain, results

VALIDATE_MAX_BYTES = ScorerConfig.validate_body.max_bytes
VALUE_CAP = ScorerConfig.validate_body.max_values
SETTINGS = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OK = {200, 400, 413, 415}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)


def anything_or(*likely):
    """Mostly plausible values, sometimes anything at all (wrong types, missing)."""
    return st.one_of(*(st.just(v) for v in likely), json_values)


pods = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "metadata": anything_or({"name": "p", "namespace": "sa"}, {"generateName": "p-"}),
            "spec": st.fixed_dictionaries(
                {},
                optional={
                    "nodeName": anything_or("worker-1", "worker-3", "elsewhere", ""),
                    "nodeSelector": anything_or({"kubernetes.io/hostname": "worker-2"}, {}),
                },
            ) | json_values,
        },
    ),
)

requests_ = st.fixed_dictionaries(
    {},
    optional={
        "uid": anything_or("u-1", "", "705ab4f5-6393-11e8-b7cc-42010a800002"),
        "kind": anything_or({"group": "", "version": "v1", "kind": "Pod"}, {"kind": "Pod"},
                            {"group": "apps", "version": "v1", "kind": "Deployment"}),
        "operation": anything_or("CREATE", "UPDATE", "DELETE", "CONNECT"),
        "subResource": anything_or("", "status", None),
        "name": anything_or("p", ""),
        "namespace": anything_or("sa", ""),
        "dryRun": anything_or(True, False, None),
        "object": pods,
    },
)

reviews = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": anything_or("admission.k8s.io/v1", "admission.k8s.io/v1beta1"),
        "kind": anything_or("AdmissionReview"),
        "request": st.one_of(requests_, json_values),
    },
)


def make():
    fixed = results()
    return create_app(results=lambda: fixed, ready=lambda: True, explain=fake_explain, recorder=Recorder(None))


APP = make()


def check(status: int, data: bytes, sent: object = None) -> None:
    assert status in OK, (status, data[:200])
    body = json.loads(data)
    if status != 200:
        assert isinstance(body, dict) and isinstance(body["error"], str)
        return
    assert body["kind"] == "AdmissionReview"
    assert body["apiVersion"] in ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
    response = body["response"]
    assert response["allowed"] is True
    assert isinstance(response["uid"], str) and response["uid"]
    if isinstance(sent, dict):
        assert body["apiVersion"] == sent["apiVersion"]
        assert response["uid"] == sent["request"]["uid"]
    for value in response.get("auditAnnotations", {}).values():
        assert isinstance(value, str) and len(value) <= 250


@SETTINGS
@given(reviews)
def test_review_shaped_json_never_fails(body):
    status, _, data = call(APP, "POST", "/validate", json.dumps(body).encode())
    check(status, data, body)


@SETTINGS
@given(json_values)
def test_any_json_never_fails(body):
    status, _, data = call(APP, "POST", "/validate", json.dumps(body).encode())
    check(status, data, body)


@SETTINGS
@given(st.binary(max_size=512))
def test_any_bytes_never_fail(raw):
    status, _, data = call(APP, "POST", "/validate", raw)
    assert status in (200, 400)  # 200 only if the bytes happen to be a review
    check(status, data)


@SETTINGS
@given(st.text(max_size=40), st.binary(max_size=64))
def test_any_content_type_never_fails(content_type, raw):
    status, _, data = call(APP, "POST", "/validate", raw, content_type=content_type)
    check(status, data)
    if content_type.partition(";")[0].strip().lower() != "application/json":
        assert status == 415


@SETTINGS
@given(st.integers(min_value=1, max_value=120_000), st.sampled_from("[{"), st.booleans())
def test_deep_nesting_never_fails(depth, opener, closed):
    raw = (opener if opener == "[" else '{"a":') * depth
    if closed:
        raw += "1" + ("]" if opener == "[" else "}") * depth
    status, _, data = call(APP, "POST", "/validate", raw.encode())
    # Deeper than the value cap, the body is refused unparsed; else parsing stops at the limit.
    assert status == (413 if raw.count("[") + raw.count("{") + raw.count(":") >= VALUE_CAP else 400)
    check(status, data)


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=VALIDATE_MAX_BYTES + 1, max_value=VALIDATE_MAX_BYTES * 3), st.booleans())
def test_bodies_over_the_limit_are_413(size, chunked):
    status, _, data = call(APP, "POST", "/validate", b" " * size, chunked=chunked)
    assert status == 413
    check(status, data)


def test_a_review_over_the_limit_is_413_and_one_just_under_it_is_reviewed():
    review = json.loads(
        '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"big",'
        '"kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{}}}'
    )
    for size, expected in ((VALIDATE_MAX_BYTES, 413), (VALIDATE_MAX_BYTES - 1000, 200)):
        review["request"]["object"] = {"metadata": {"annotations": {"pad": "x" * size}}}
        status, _, data = call(APP, "POST", "/validate", json.dumps(review).encode())
        assert status == expected
        check(status, data)
