"""The tick query (scorer/sources/prometheus.py) against a real Prometheus and a real
VictoriaMetrics: the same answer on both, and the same inputs as reading every series with its
own timestamp (the history's per-series query), for the cases where one value per node would
be wrong.

One loopback target serves ksense_friction with explicit sample timestamps (honor_timestamps),
`node` kept from the exposition (honor_labels), job and namespace from the scrape config, so the
default selector reads it. Per node:
- `one`, `precise`, `tiny`: one fresh series (the common case), the value exact through the
  `count_values` label (0.1 + 0.2, 1.5e-07: equal to what the per-series query reads);
- `dup`: a fresh series (2) and an older one with a larger value (9, 30 s old): the newest wins,
  so 2 — the larger of the values, or pairing the old value with the new timestamp, gives 9;
- `tie`: two series sampled at the same time (5, 7): the larger wins;
- `gone`: a fresh series (2) and a series 70 s old with a larger value (9): only the fresh one
  takes part, 2;
- `stale`: one series 75 s old: missing, with its age;
- `dupstale`: two series, 90 s and 80 s old: missing, with the newest one's age.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from bench import fleet as f
from common import names as n
from scorer.core import inputs as core
from scorer.sources.prometheus import FORM_QUERY_CHARS, POD_QUERY_CHARS, TS_LABEL, PrometheusSource, timestamped_query
from tests.conftest import require
from tests.support import TextServer, wait_for

pytestmark = pytest.mark.real

LONG_WIN_S = 60.0
FRICTION = n.FRICTION.name


class Target:
    """Serves the series of the module docstring; fresh samples are stamped at the request,
    stale ones at fixed times before `t0`."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self._server = TextServer(lambda: self.text(time.time()))
        self.port = self._server.port

    def text(self, now: float) -> str:
        ms = lambda t: int(t * 1000)  # noqa: E731
        now = math.floor(now)
        lines = [
            ("one", "a", 3.0, now - 1),
            ("precise", "a", 0.1 + 0.2, now - 1),  # 0.30000000000000004: the value label parses back exactly
            ("tiny", "a", 1.5e-7, now - 1),
            ("dup", "new", 2.0, now - 1),
            ("dup", "old", 9.0, now - 30),
            ("tie", "a", 5.0, now - 2),
            ("tie", "b", 7.0, now - 2),
            ("gone", "new", 2.0, now - 1),
            ("gone", "old", 9.0, self.t0 - 70),
            ("stale", "a", 4.0, self.t0 - 75),
            ("dupstale", "old", 6.0, self.t0 - 90),
            ("dupstale", "new", 8.0, self.t0 - 80),
        ]
        return "".join(f'{FRICTION}{{node="{node}",copy="{copy}"}} {v} {ms(t)}\n' for node, copy, v, t in lines)

    def stop(self) -> None:
        self._server.stop()


def all_series_in(url: str) -> bool:
    return f.count_of(url, f"{FRICTION}{{{n.EXPORTER_SELECTOR}}}") >= 12


@pytest.fixture(scope="module")
def backends(tmp_path_factory) -> Iterator[dict[str, str]]:
    for exe in ("prometheus", "victoria-metrics"):
        require(f.binary(exe) is not None, f"needs /usr/bin/{exe} (Debian packages prometheus, victoria-metrics)")
    work = tmp_path_factory.mktemp("tickq")
    target = Target()
    job = {"job_name": n.JOB_EXPORTER, "honor_labels": True, "honor_timestamps": True,
           "static_configs": [{"targets": [f"127.0.0.1:{target.port}"], "labels": {n.LABEL_NAMESPACE: n.NAMESPACE}}]}
    config = f.scrape_config([job], 1.0)
    started: list[f.Server] = []
    try:
        started.append(f.start_prometheus(work / "prom", config, receiver=False))
        started.append(f.start_victoria(work / "vm", config))
        urls = dict(zip(f.BACKENDS, (s.url for s in started), strict=True))
        for url in urls.values():
            wait_for(functools.partial(all_series_in, url), 30, f"every series in {url}", poll_s=0.2)
        yield urls
    finally:
        target.stop()
        for s in reversed(started):
            s.stop()


def per_series(url: str, at: float) -> dict[str, core.Sample]:
    """The reference: every series with its own timestamp, paired per series (the history's
    query and pairing)."""
    src = PrometheusSource(url, long_win_s=LONG_WIN_S)
    expr = timestamped_query(core.selectors(n.EXPORTER_SELECTOR)[core.FRICTION])
    return core.split_timestamped(src.client.query(expr, at), TS_LABEL)


@pytest.mark.parametrize("backend", f.BACKENDS)
def test_the_tick_query_keeps_the_newest_series_and_refuses_stale_ones(backends, backend):
    url = backends[backend]
    src = PrometheusSource(url, long_win_s=LONG_WIN_S)
    src.fetch(datetime.now(UTC))  # first tick: nothing known yet, every input asks for stale nodes
    now = datetime.now(UTC)
    got = src.fetch(now).nodes  # the nodes known: the stale ones are asked for because they are missing
    # VictoriaMetrics stores ~12 significant digits (0.30000000000000004 comes back 0.3, by
    # either query): exactness is checked against the per-series reference below.
    assert {node: got[node].friction for node in ("one", "precise", "tiny", "dup", "tie", "gone")} == pytest.approx({
        "one": 3.0, "precise": 0.1 + 0.2, "tiny": 1.5e-7, "dup": 2.0, "tie": 7.0, "gone": 2.0}, rel=1e-11)
    for node, oldest in (("stale", 75), ("dupstale", 80)):
        assert got[node].friction != got[node].friction  # NaN: missing
        age = re.fullmatch(r"stale (\d+)s", got[node].why["friction"])
        assert age and oldest <= int(age.group(1)) <= oldest + 40, got[node].why
    # The same inputs as the per-series reference at the same instant.
    ref = core.build({core.FRICTION: per_series(url, round(now.timestamp(), 3))}, {},
                     now=round(now.timestamp(), 3), long_win_s=LONG_WIN_S)
    for node in ("one", "precise", "tiny", "dup", "tie", "gone", "stale", "dupstale"):
        assert (ref[node].missing, ref[node].why.get("friction")) == (got[node].missing, got[node].why.get("friction"))
        if not ref[node].missing:
            assert ref[node].friction == got[node].friction


@pytest.mark.parametrize("backend", f.BACKENDS)
def test_a_pod_querys_node_names_parse_and_select_exactly_on_both_backends(backends, backend):
    """`core.node_regex` as both databases read it: names with a quote, a backslash, a newline
    or a dot parse, select exactly the nodes named (a name is no prefix, `.` no wildcard),
    and an expression past FORM_QUERY_CHARS (a form POST) with a full group of names answers the same."""
    src = PrometheusSource(backends[backend], long_win_s=LONG_WIN_S)
    at = time.time()
    odd = ['odd"name', "back\\slash", "new\nline", "t.e", "gon"]  # `t.e` would match tie, `gon` gone
    # A full group of long names (POD_QUERY_CHARS): under VictoriaMetrics' 16 kB query limit.
    group = core.node_groups([f"ip-10-0-{i}.eu-west-1.compute.internal" for i in range(2000)], POD_QUERY_CHARS, 9)[0]
    for names in (["one", "dup", *odd], ["one", "dup", *odd, *group]):
        regex = core.node_regex(sorted(names))
        expr = f'{FRICTION}{{{n.EXPORTER_SELECTOR},{n.LABEL_NODE}=~"{regex}"}}'
        assert (len(expr) > FORM_QUERY_CHARS) == (len(names) > 10)
        assert {e["metric"][n.LABEL_NODE] for e in src.client.query(expr, at)} == {"one", "dup"}
        for role, pod_expr in core.pod_queries(n.EXPORTER_SELECTOR, names).items():
            assert src.client.query(pod_expr, at) == [], role  # parses; the fleet serves no pods here
