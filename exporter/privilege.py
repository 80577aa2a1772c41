"""Give up root once the eBPF programs are attached (issue #10).

The exporter needs uid 0 and CAP_BPF, CAP_PERFMON (and CAP_SYS_RESOURCE on kernels < 5.11)
only while the loader child compiles, loads and attaches the programs. Everything it does
afterwards needs no privilege:

- the counters are BPF_F_MMAPABLE array maps, mapped once at attach: a read is a memory copy,
  no bpf() call (no ring or perf buffer is polled); the programs stay attached as long as this
  process holds their perf-event descriptors, whoever it runs as;
- program run statistics come from /proc/self/fdinfo of descriptors it holds (its own process),
  and kernel.bpf_stats_enabled, /proc/stat, /proc/pressure/* and every /proc/<pid>/schedstat
  (the procfs source) are world-readable;
- tracefs (/sys/kernel/tracing, root-only) is read only by the loader, before the drop; bcc
  never runs in this process.

So `drop(uid, gid)` is called after the source is open and before any thread starts or any
request is served: supplementary groups cleared, gid and uid set (real, effective, saved). A
uid change from 0 to non-zero empties the permitted, effective and ambient capability sets;
`drop` also empties the inheritable set (capset) and sets no_new_privs, so that no exec can
bring a privilege back, and marks the process not dumpable, so that another process of the same
uid (65534 is `nobody`, shared on a node) can neither ptrace it nor take its BPF descriptors.
The bounding set stays as the runtime set it (trimming it needs CAP_SETPCAP, and with
no_new_privs it no longer matters). Then it reads /proc/self/status back and raises if any
thread still holds a capability or a privileged id.

Setting the ids needs CAP_SETUID and CAP_SETGID, and handing the state directory to the
unprivileged uid (exporter/statedir.py) needs CAP_CHOWN: the DaemonSet adds those three, which
the drop itself removes. The capset and prctl calls go through ctypes to libc (glibc exports
both), for want of a maintained Python binding in the image (Debian's python3-prctl exists but
would be one more C extension to link into the venv for two calls).
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

# <linux/capability.h> and <linux/prctl.h>
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAP_SETS = ("CapInh", "CapPrm", "CapEff", "CapAmb")


class PrivilegeError(RuntimeError):
    """The process could not give up root; says which step failed and why."""


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


@dataclass(frozen=True)
class Credentials:
    """What /proc/<pid>/status says about one task: uids and gids (real, effective, saved,
    filesystem) and the capability sets (bit masks)."""

    uids: tuple[int, ...]
    gids: tuple[int, ...]
    groups: tuple[int, ...]
    caps: dict[str, int]


def parse_status(text: str) -> Credentials:
    """The Uid, Gid, Groups and Cap* lines of a /proc/<pid>/status text."""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return Credentials(
        uids=tuple(int(v) for v in fields["Uid"].split()),
        gids=tuple(int(v) for v in fields["Gid"].split()),
        groups=tuple(int(v) for v in fields.get("Groups", "").split()),
        caps={name: int(fields[name], 16) for name in _CAP_SETS if name in fields},
    )


def _check(result: int, what: str) -> None:
    if result != 0:
        raise PrivilegeError(f"{what} failed: {os.strerror(ctypes.get_errno())}")


def _prctl(libc: ctypes.CDLL, option: int, arg: int, what: str) -> None:
    # prctl(2) reads its arguments as unsigned longs, and several options insist that the
    # unused ones are 0: pass five full-width values, never C ints.
    args = (ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    _check(libc.prctl(ctypes.c_int(option), *args), what)


def drop(uid: int, gid: int) -> None:
    """Become uid:gid with no capability, for good (module docstring). Raises PrivilegeError."""
    if uid == 0:
        raise PrivilegeError("refusing to 'drop' to uid 0")
    threads = len(os.listdir("/proc/self/task"))  # native ones too (a BLAS pool), not only Python's
    if threads != 1:
        # capset and prctl act on the calling thread only: a thread started earlier would keep
        # what it has.
        raise PrivilegeError(f"drop() must run while the process has one thread ({threads} running)")
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise PrivilegeError(
            f"cannot become {uid}:{gid}: {exc.strerror} (needs CAP_SETUID and CAP_SETGID)"
        ) from None
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0), (_CapData * 2)()  # v3: two 32-bit halves
    _check(libc.capset(ctypes.byref(header), data), "capset (empty every capability set)")
    _prctl(libc, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    _prctl(libc, _PR_SET_NO_NEW_PRIVS, 1, "prctl(PR_SET_NO_NEW_PRIVS)")
    _prctl(libc, _PR_SET_DUMPABLE, 0, "prctl(PR_SET_DUMPABLE, 0)")
    for status in Path("/proc/self/task").glob("*/status"):
        creds = parse_status(status.read_text())
        held = {name: f"{mask:#x}" for name, mask in creds.caps.items() if mask}
        if set(creds.uids) != {uid} or set(creds.gids) != {gid} or creds.groups or held:
            raise PrivilegeError(f"still privileged after the drop: {creds}")
