"""Per-pod attribution, pure: pod cgroup names, the cgroup -> pod table user space keeps for the
kernel, per-interval statistics of a pod's counters and the top-K cut of the exposition.

Why a table of our own rather than a BPF hash map: the exporter gives up root after attaching
(exporter/privilege.py), and on kernels before 6.4 an unprivileged process may not call bpf() at
all, not even on a map it holds. An mmap'd array it writes itself needs no syscall. The layout
is shared with sched.bpf.c (per-pod accounting): open addressing, at most `probes` entries from
`cgroup_hash`, each `(cgroup_id << 16) | pod_slot`, 0 empty, TOMBSTONE deleted (a lookup goes
on past it, an insert reuses it). A cgroup id is its directory's inode number; the kernel's are
below 2^48 (32 bits of inode plus a generation that grows once per 2^32 cgroups), and one that
is not cannot be stored and is counted as an overflow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, MutableSequence, Sequence
from dataclasses import dataclass

TOMBSTONE = 0xFFFF
HASH_MUL = 0x9E3779B97F4A7C15
_U64 = (1 << 64) - 1
MAX_CGROUP_ID = (1 << 48) - 1

#: The `uid` of the series that sums every pod outside the top-K.
OTHER = "other"

# systemd driver: kubepods-pod<uid>.slice, kubepods-<qos>-pod<uid>.slice with `_` for `-`;
# cgroupfs driver: pod<uid>. A uid is a (lower-case) RFC 4122 UUID.
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_SYSTEMD_POD = re.compile(rf"kubepods(?:-(?:burstable|besteffort|guaranteed))?-pod({_UID})\.slice")
_CGROUPFS_POD = re.compile(rf"pod({_UID})")


def pod_uid(dir_name: str) -> str | None:
    """The pod UID a cgroup directory name stands for (systemd or cgroupfs driver), else None."""
    m = _SYSTEMD_POD.fullmatch(dir_name) or _CGROUPFS_POD.fullmatch(dir_name)
    return m.group(1).replace("_", "-") if m else None


def is_kubepods(dir_name: str) -> bool:
    """Whether a directory can hold pods: kubepods, kubepods.slice, kubepods-<qos>.slice, or a
    cgroupfs QoS directory under kubepods (burstable, besteffort)."""
    return dir_name.startswith("kubepods") or dir_name in ("burstable", "besteffort")


def cgroup_hash(cgroup_id: int, slots: int) -> int:
    """First table index of `cgroup_id` (sched.bpf.c current_pod: (id * HASH_MUL) mod 2^64 >> 32)."""
    return (((cgroup_id * HASH_MUL) & _U64) >> 32) & (slots - 1)


class PodTable:
    """Pod slots and the cgroup -> pod table, kept in `keys` (the kernel's pod_keys map).

    `pods` slots of counters; a freed slot goes to the back of the free list, so the slot a pod
    just left is the last to be reused. `overflows` counts pods that found no free slot and
    cgroups that found no table entry within `probes` (each counted when first refused).
    """

    def __init__(self, keys: MutableSequence[int], pods: int, probes: int):
        self._keys = keys
        self._size = len(keys)
        self._probes = probes
        self._free = list(range(pods))
        self.slot_of: dict[str, int] = {}
        self._cgroups: dict[str, set[int]] = {}
        self._refused: set[str] = set()
        self._refused_cgroups: set[int] = set()
        self.overflows = 0

    @property
    def capacity(self) -> int:
        return len(self._free) + len(self.slot_of)

    def entries(self) -> int:
        """Live cgroup entries in the table."""
        return sum(len(c) for c in self._cgroups.values())

    def _find(self, cgroup_id: int) -> int | None:
        start = cgroup_hash(cgroup_id, self._size)
        for i in range(self._probes):
            idx = (start + i) & (self._size - 1)
            v = int(self._keys[idx])
            if v == 0:
                return None
            if v >> 16 == cgroup_id:
                return idx
        return None

    def _insert(self, cgroup_id: int, slot: int) -> bool:
        if not 0 < cgroup_id <= MAX_CGROUP_ID:
            return False
        start = cgroup_hash(cgroup_id, self._size)
        for i in range(self._probes):
            idx = (start + i) & (self._size - 1)
            v = int(self._keys[idx])
            if v in (0, TOMBSTONE):
                self._keys[idx] = (cgroup_id << 16) | slot
                return True
        return False

    def _delete(self, cgroup_id: int) -> None:
        idx = self._find(cgroup_id)
        if idx is not None:
            self._keys[idx] = TOMBSTONE

    def sync(self, uid: str, cgroup_ids: Iterable[int]) -> int | None:
        """Make `uid`'s cgroups exactly `cgroup_ids`; returns its slot, None when it has none
        (no free slot: counted once, until a slot frees)."""
        slot = self.slot_of.get(uid)
        if slot is None:
            if not self._free:
                if uid not in self._refused:
                    self._refused.add(uid)
                    self.overflows += 1
                return None
            slot = self._free.pop(0)
            self._refused.discard(uid)
            self.slot_of[uid] = slot
            self._cgroups[uid] = set()
        want = set(cgroup_ids)
        have = self._cgroups[uid]
        for cg in have - want:
            self._delete(cg)
            have.discard(cg)
        for cg in sorted(want - have):
            if self._insert(cg, slot):
                have.add(cg)
            elif cg not in self._refused_cgroups:
                self._refused_cgroups.add(cg)
                self.overflows += 1
        return slot

    def remove(self, uid: str) -> int | None:
        """Take `uid` out of the table; returns the slot it held (for its row to be zeroed
        before the slot is reused), None when it had none."""
        self._refused.discard(uid)
        slot = self.slot_of.pop(uid, None)
        if slot is None:
            return None
        for cg in self._cgroups.pop(uid):
            self._delete(cg)
            self._refused_cgroups.discard(cg)
        self._free.append(slot)
        return slot

    def tracked(self) -> list[str]:
        return sorted(self.slot_of)


def bucket_upper_seconds(nbuckets: int) -> tuple[float, ...]:
    """Upper bounds of the kernel's log2 buckets: bucket 0 < 1 µs, bucket k < 2^k µs, the
    last is open-ended (inf)."""
    return (*(2.0**k * 1e-6 for k in range(nbuckets - 1)), math.inf)


@dataclass(frozen=True)
class WaitStats:
    """One interval of a pod's run-queue waits, from the delta of its counters (ms)."""

    total_ms: float
    avg_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    count: int


def wait_stats(sum_ns: int, count: int, buckets: Sequence[int]) -> WaitStats:
    """Sum, mean and the bucket upper bounds holding the 95th/99th percentile and the max (the
    coarse histogram's resolution: within a factor of 2). NaN where there was no wait; the
    open-ended last bucket reports its lower bound."""
    if count <= 0:
        return WaitStats(0.0, math.nan, math.nan, math.nan, math.nan, 0)
    n = len(buckets)
    upper = [b * 1e3 for b in bucket_upper_seconds(n)]
    upper[-1] = 2.0 ** (n - 2) * 1e-3
    total = sum(int(b) for b in buckets)

    def quantile(q: float) -> float:
        if total <= 0:
            return math.nan
        rank, seen = q * total, 0
        for i, b in enumerate(buckets):
            seen += int(b)
            if seen >= rank:
                return upper[i]
        return upper[-1]

    top = max((i for i, b in enumerate(buckets) if int(b)), default=None)
    return WaitStats(
        total_ms=sum_ns / 1e6,
        avg_ms=sum_ns / 1e6 / count,
        p95_ms=quantile(0.95),
        p99_ms=quantile(0.99),
        max_ms=math.nan if top is None else upper[top],
        count=count,
    )


def top_k(wait_seconds: dict[str, float], k: int) -> tuple[list[str], list[str]]:
    """(the `k` uids with the most wait, biggest first, ties by uid; the rest)."""
    ranked = sorted(wait_seconds, key=lambda uid: (-wait_seconds[uid], uid))
    return ranked[:k], ranked[k:]


#: Exported `le` bounds of the per-pod wait histogram: every other kernel bucket (4^j µs,
#: 1 µs .. 4.2 s), then +Inf: 13 series per pod instead of 25.
EXPORT_BUCKET_INDEXES = tuple(range(0, 23, 2))


def export_buckets(buckets: Sequence[int]) -> tuple[tuple[float, int], ...]:
    """Cumulative (le seconds, count) pairs of a pod's kernel buckets at the exported bounds."""
    upper = bucket_upper_seconds(len(buckets))
    cumulative, running, out = [], 0, []
    for b in buckets:
        running += int(b)
        cumulative.append(running)
    for i in EXPORT_BUCKET_INDEXES:
        out.append((upper[i], cumulative[i]))
    out.append((math.inf, cumulative[-1]))
    return tuple(out)


@dataclass(frozen=True)
class PodSeries:
    """One exposed pod (or the `other` sum): cumulative counters, the last interval's PSI."""

    uid: str
    namespace: str
    name: str
    wait_seconds: float
    waits: int
    dstate_seconds: float
    dstate_episodes: int
    wait_buckets: tuple[tuple[float, int], ...]
    cpu_seconds: float
    pressure: dict[tuple[str, str], float]


@dataclass(frozen=True)
class PodsReport:
    """What the pod tracker knows after one tick: the exposed series (top-K by recent wait,
    then `other`), the CSV rows of every tracked pod, and the bound's bookkeeping."""

    series: tuple[PodSeries, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    tracked: int = 0
    capacity: int = 0
    overflows: int = 0
    cgroup_entries: int = 0
    cgroup_capacity: int = 0
