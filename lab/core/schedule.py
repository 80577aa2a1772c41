"""The stress schedule of a recording, drawn from a seed: which stressor runs when, how hard.

Pure (no processes, no clock), so a seed always gives the same schedule and tests can check
the mix without running anything. A recording starts with the exporter's warm-up (the tenant
alone: the node's normal), then phases of random length until the end. `lab.stress` turns a
phase into commands.

Stressors:
    quiet        nothing but the tenant
    cpu          N busy-loop workers at 100 % (N from 1 to 2 × CPUs with intensity)
    cpu-partial  one worker per CPU, each busy `intensity` of the time (30-100 %)
    hackbench    scheduler churn: hackbench groups passing messages
    memory       workers allocating past a memory cgroup's limit: reclaim and OOM kills
    io           synchronous disk writes: tasks in D-state, PSI io
    netrx        TCP over loopback (iperf3): NET_RX softirq time
    mix          two of the above at once
"""

from __future__ import annotations

import random
from dataclasses import dataclass

WARMUP = "warmup"
QUIET = "quiet"
#: Stressors a phase can draw, with their drawing weights: quiet phases keep the node's normal
#: represented after the warm-up (seconds without pain are what a deny must not hit), CPU hogs
#: are the commonest trouble on a shared node.
STRESSORS = {
    QUIET: 3, "cpu": 2, "cpu-partial": 1, "hackbench": 1, "memory": 1, "io": 1, "netrx": 1, "mix": 1,
}
#: Intensity range of a stress phase: from barely there (one hog, a trickle of I/O or traffic,
#: which may not hurt at all) to the stressor's maximum.
INTENSITY = (0.05, 1.0)
#: Stressors that can be part of a mix.
MIXABLE = ("cpu", "cpu-partial", "hackbench", "memory", "io", "netrx")
#: Phases whose tenant latency is the node's normal (the SLO is derived from them).
CALM = (WARMUP, QUIET)


@dataclass(frozen=True)
class Phase:
    """One phase: `start`/`end` seconds from the recording's start, the stressor and its
    intensity in (0, 1]; a mix names its parts as `mix:cpu+io`."""

    start: float
    end: float
    stressor: str
    intensity: float

    @property
    def parts(self) -> tuple[str, ...]:
        """The stressors that run: one, or the two of a mix."""
        if self.stressor.startswith("mix:"):
            return tuple(self.stressor[4:].split("+"))
        return () if self.stressor in CALM else (self.stressor,)


def make_schedule(seed: int, seconds: float, warmup_s: float, min_phase_s: float = 30.0,
                  max_phase_s: float = 90.0) -> list[Phase]:
    """The phases of a recording of `seconds` (warm-up first, then random phases to the end).

    Consecutive stress phases never repeat the same stressor, and the last phase is cut to end
    at `seconds` (a remainder shorter than `min_phase_s` / 2 is merged into the phase before).
    ValueError for bounds that cannot make a schedule.
    """
    if not 0 < min_phase_s <= max_phase_s:
        raise ValueError(f"need 0 < min phase ≤ max phase, got {min_phase_s}, {max_phase_s}")
    if warmup_s < 0 or seconds <= warmup_s:
        raise ValueError(f"the recording ({seconds:g} s) must be longer than its warm-up ({warmup_s:g} s)")
    rng = random.Random(seed)
    phases = [Phase(0.0, float(warmup_s), WARMUP, 0.0)] if warmup_s > 0 else []
    t, last = float(warmup_s), WARMUP
    names, weights = list(STRESSORS), list(STRESSORS.values())
    while seconds - t > 1e-9:
        length: float = round(rng.uniform(min_phase_s, max_phase_s))
        if seconds - (t + length) < min_phase_s / 2:
            length = seconds - t
        name = last
        while name == last:
            name = rng.choices(names, weights)[0]
        if name == "mix":
            name = "mix:" + "+".join(sorted(rng.sample(MIXABLE, 2)))
        intensity = 0.0 if name == QUIET else round(rng.uniform(*INTENSITY), 2)
        phases.append(Phase(t, t + length, name, intensity))
        t, last = t + length, name
    return phases


def parse_schedule(text: str, warmup_s: float) -> list[Phase]:
    """An explicit schedule: `STRESSOR:INTENSITY:SECONDS,...` after the warm-up (a mix is
    `mix:cpu+io:0.5:60`). ValueError naming the bad item."""
    phases = [Phase(0.0, float(warmup_s), WARMUP, 0.0)] if warmup_s > 0 else []
    t = float(warmup_s)
    known = set(STRESSORS) - {"mix"}
    for item in (part.strip() for part in text.split(",")):
        fields = item.rsplit(":", 2)
        try:
            name, intensity, length = fields[0], float(fields[1]), float(fields[2])
        except (IndexError, ValueError):
            raise ValueError(f"schedule item {item!r}: expected STRESSOR:INTENSITY:SECONDS") from None
        parts = name[4:].split("+") if name.startswith("mix:") else [name]
        unknown = [p for p in parts if p not in known or (name.startswith("mix:") and p not in MIXABLE)]
        if unknown or not parts:
            raise ValueError(f"schedule item {item!r}: unknown stressor {unknown[0] if unknown else name!r} "
                             f"(known: {', '.join(sorted(known))}, mix:A+B)")
        if not (0 <= intensity <= 1) or length <= 0:
            raise ValueError(f"schedule item {item!r}: intensity must be in [0, 1] and seconds > 0")
        phases.append(Phase(t, t + length, name, 0.0 if name == QUIET else intensity))
        t += length
    return phases
