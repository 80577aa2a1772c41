"""Find the pod cgroups of this node on the cgroup v2 hierarchy, and read their CPU and PSI.

Why a walk of our own: kubelet's two cgroup drivers name pods differently (systemd:
`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice`,
cgroupfs: `kubepods/burstable/pod<uid>`), and container runtimes add their own scopes below a pod
(`cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, or a bare id). Only
directories that can hold pods are descended into (exporter/core/pods.is_kubepods), so a scan
costs a few dozen stat calls, not a walk of the whole hierarchy. Every directory of a pod's
subtree is registered with the kernel, because bpf_get_current_cgroup_id() names the task's own
(leaf) cgroup, whose id is its directory's inode number.

The v2 hierarchy is at /sys/fs/cgroup on a unified host and at /sys/fs/cgroup/unified on a
hybrid one; `find_root` picks whichever holds `cgroup.controllers` (a v2-only file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from exporter.core.pods import is_kubepods, pod_uid
from exporter.core.psi import parse_pressure

#: Where the v2 hierarchy is looked for, in this order (unified host, then hybrid).
CGROUP2_CANDIDATES = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))
#: How deep below the root pods are looked for (systemd: kubepods.slice/<qos>.slice/<pod>).
MAX_DEPTH = 4
PSI_FILES = ("cpu", "memory", "io")


def find_root(candidates: tuple[Path, ...] = CGROUP2_CANDIDATES) -> Path | None:
    """The first candidate that is a cgroup v2 hierarchy, or None."""
    for root in candidates:
        if (root / "cgroup.controllers").is_file():
            return root
    return None


@dataclass(frozen=True)
class PodCgroup:
    """One pod's cgroup directory: its uid, path, id, and the ids of its whole subtree."""

    uid: str
    path: Path
    cgroup_id: int
    subtree_ids: frozenset[int]


def _subtree_ids(path: Path) -> frozenset[int]:
    ids = set()
    for dirpath, _dirs, _files in os.walk(path):
        try:
            ids.add(os.stat(dirpath).st_ino)
        except OSError:  # removed while we walked
            continue
    return frozenset(ids)


def scan(root: Path, max_depth: int = MAX_DEPTH) -> dict[str, PodCgroup]:
    """uid -> PodCgroup for every pod directory under `root` (a directory vanishing during the
    scan is skipped: pods come and go)."""
    found: dict[str, PodCgroup] = {}
    stack = [(root, 0)]
    while stack:
        directory, depth = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                uid = pod_uid(entry.name)
                if uid is not None:
                    found[uid] = PodCgroup(
                        uid, Path(entry.path), entry.stat(follow_symlinks=False).st_ino, _subtree_ids(Path(entry.path))
                    )
                elif depth + 1 < max_depth and is_kubepods(entry.name):
                    stack.append((Path(entry.path), depth + 1))
            except OSError:
                continue
    return found


@dataclass(frozen=True)
class CgroupUsage:
    """Cumulative CPU (µs) and PSI totals (µs per (resource, kind)) of one cgroup."""

    cpu_usec: int | None
    pressure: dict[tuple[str, str], int]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def usage(path: Path) -> CgroupUsage:
    """cpu.stat's usage_usec and {cpu,memory,io}.pressure totals (None / missing when the file
    is unreadable: PSI off, the cgroup just removed)."""
    cpu = None
    text = _read(path / "cpu.stat")
    if text is not None:
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec" and value.strip().isdigit():
                cpu = int(value)
                break
    pressure = {}
    for resource in PSI_FILES:
        text = _read(path / f"{resource}.pressure")
        if text is not None:
            for kind, total in parse_pressure(text).items():
                pressure[(resource, kind)] = total
    return CgroupUsage(cpu, pressure)
