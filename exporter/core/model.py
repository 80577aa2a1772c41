"""The immutable values that flow through the exporter: source -> core -> snapshot -> sinks.

Pure data, no behaviour. A `Source` yields `Reading`s; the derive step (core/derive.py) adds a
`Derived`; the sampler publishes both, plus the source's telemetry, as one frozen `Snapshot`
that the Prometheus collector and the CSV sink read without locks. The kernel_metrics.csv row
(`RawInterval`, `Derived`) and `ExportHistogram` are read by other components too, so they live
in common/core/model.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from common.core.model import Derived, ExportHistogram, RawInterval
from common.names import SOURCE_REPLAY
from exporter.core.pods import PodsReport

NAN = math.nan


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class MapStats:
    """Fill and failed inserts of one bounded kernel map."""

    entries: int
    capacity: int
    update_failures: int


@dataclass(frozen=True)
class ProgramStats:
    """Cumulative run time and run count of one BPF program (kernel.bpf_stats_enabled=1)."""

    run_seconds: float
    runs: int


@dataclass(frozen=True)
class Telemetry:
    """What a source knows beyond the CSV columns; exported to Prometheus only.

    Keys of `histograms` are family names from common/names.py. `pressure` maps
    (resource, kind) to the ratio (0-1) of the last interval; `pressure_available` maps each
    resource to whether its PSI file was readable. `attached` maps tracepoint
    ("sched:sched_switch") to attach success.
    """

    histograms: Mapping[str, ExportHistogram] = field(default_factory=_empty)
    runqueue_max_seconds: float = NAN
    runqueue_dropped_total: int | None = None
    pressure: Mapping[tuple[str, str], float] = field(default_factory=_empty)
    pressure_available: Mapping[str, bool] = field(default_factory=_empty)
    attached: Mapping[str, bool] = field(default_factory=_empty)
    programs: Mapping[str, ProgramStats] = field(default_factory=_empty)
    maps: Mapping[str, MapStats] = field(default_factory=_empty)


@dataclass(frozen=True)
class Reading:
    """One interval from a source: the CSV's raw columns plus Prometheus-only telemetry."""

    raw: RawInterval
    telemetry: Telemetry = field(default_factory=Telemetry)
    pods: PodsReport | None = None
    """Per-pod attribution of the interval (eBPF source with per-pod accounting on), else None."""



@dataclass(frozen=True)
class Snapshot:
    """The latest complete interval, published atomically by the sampler."""

    node: str
    source: str
    reading: Reading | None = None
    derived: Derived | None = None
    #: cumulative time the sampler spent per interval (read source + derive).
    sample_duration: ExportHistogram | None = None

    @property
    def live(self) -> bool:
        return is_live(self.source)


def is_live(source: str) -> bool:
    """True for the live sources (ebpf, procfs): they read the kernel now, on the tick of the
    monotonic clock that `RawInterval.t` holds. Replay's `t` is the recording's `Time` and its
    pace the recording's, so neither says anything about how old a reading is."""
    return source != SOURCE_REPLAY
