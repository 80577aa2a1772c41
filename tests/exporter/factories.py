"""A realistic interval of the reference recording's shape, for tests that need one."""

from __future__ import annotations

import re
from datetime import datetime

from common.core.model import RawInterval
from tests.support import REPO

TYPICAL = dict(
    time=datetime(2026, 2, 17, 13, 29, 13),
    t=0.0,
    sched_total_ms=360.0,
    sched_avg_ms=0.018,
    sched_p95_ms=0.015,
    sched_p99_ms=0.015,
    sched_max_ms=3.0,
    sched_count=20000,
    sched_dropped=0,
    dstate_total_ms=43.59,
    dstate_count=169,
    softirq_total_ms=15.13,
    softirq_count=649,
)


def raw_interval(**overrides) -> RawInterval:
    """TYPICAL with `overrides` applied."""
    return RawInterval(**{**TYPICAL, **overrides})


def stated_series_per_node() -> tuple[int, int]:
    """(on the wire, stored) series of one default eBPF node as docs/sizing.md states them, so that
    a change of the exposition fails until the sizing guide says the new number."""
    text = (REPO / "docs" / "sizing.md").read_text()
    wire = re.search(r"^\| exporter, eBPF source, defaults \(on the wire\) \| \*\*(\d+)\*\*", text, re.M)
    stored = re.search(r"^\| added by a scrape \| 5 .*?\*\*(\d+) stored per node\*\*", text, re.M)
    assert wire and stored, "docs/sizing.md no longer states the series per node"
    return int(wire.group(1)), int(stored.group(1))
