"""The end-to-end scenario as a test of the suite (what `make e2e` runs, same code).

Real parts only: root + bcc for node-a's eBPF exporter, /usr/bin/prometheus, stress-ng, the
reference recording, trustme for the webhook's TLS. Skips with the reason on a laptop without
them; with CI=true (or KSENSE_REQUIRE_REAL=1) a missing part is a failure. About 2.5 minutes.
On failure the message carries the run's summary; the timeline, figures and every log stay in
the test's tmp_path (printed).
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from tests.conftest import REAL_KERNEL_CSV, bcc_available, require
from tests.scorer import promserver

pytestmark = pytest.mark.real


@pytest.mark.timeout(600)
def test_kernel_to_bound_pods_end_to_end(tmp_path):
    require(bcc_available(), "needs root, Debian's python3-bpfcc linked into the venv, and tracefs (node-a's eBPF)")
    require(promserver.prometheus_binary() is not None, "needs /usr/bin/prometheus (Debian package prometheus)")
    require(shutil.which("stress-ng") is not None, "needs stress-ng (the CPU contention on node-a)")
    require(REAL_KERNEL_CSV.exists(), f"needs the reference recording {REAL_KERNEL_CSV} (node-b)")
    require(importlib.util.find_spec("trustme") is not None, "needs trustme (the webhook's TLS)")
    from tests.e2e import scenario

    out = tmp_path / "e2e"
    try:
        report = scenario.run(out)
    except AssertionError as exc:
        pytest.fail(f"{exc}\n\n{scenario.summary_text_for(out)}\noutput folder: {out}", pytrace=False)
    assert report.ok
    figures = json.loads((out / "figures.json").read_text())
    assert (out / "timeline.csv").read_text().startswith("time,node,score,decision,binds,pending\n")
    assert figures["admission_reviews"]["creates"] == figures["admission_reviews"]["rows"] == 14
    # Behaviour, with generous sanity bounds (the goals are reported, not asserted:
    # docs/development.md#testing-with-real-parts).
    assert figures["contention_to_deny_scorer_s"] < 15
    assert figures["failover_s"] < 3 * 4.0 + 5
    print(scenario.summary_text(report))
