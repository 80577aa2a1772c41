"""Whether a directory or file may be trusted, from its owner and mode alone (issue #10).

The exporter restores its frozen baseline from a local state directory; a baseline decides how
the node is judged, so it must come from the exporter itself. The rules, in the spirit of
OpenSSH's StrictModes: what we read is ours and only we can write it; every directory above it
belongs to root or to us and is writable by no one else, unless it has the sticky bit (/tmp),
where no one can remove or rename another user's entries. With every component so, no other
user can swap any part of the path after it was checked.

Pure: the shells (exporter/statedir.py) pass in what stat() returned.
"""

from __future__ import annotations

import stat

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def ancestor_problem(uid: int, mode: int, *, us: int) -> str | None:
    """Why a directory above the state directory makes it untrustworthy; None when it does not."""
    if uid not in (0, us):
        return f"owned by uid {uid} (neither root nor us, uid {us})"
    if mode & _WRITABLE_BY_OTHERS and not mode & stat.S_ISVTX:
        return f"writable by group or others (mode {stat.S_IMODE(mode):04o}) without the sticky bit"
    return None


def own_problem(uid: int, mode: int, *, us: int, kind: str) -> str | None:
    """Why the state directory itself (kind "directory") or a file in it (kind "file") is not
    ours alone; None when it is. A symbolic link is never followed."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    wanted = stat.S_ISDIR(mode) if kind == "directory" else stat.S_ISREG(mode)
    if not wanted:
        return f"not a {'directory' if kind == 'directory' else 'regular file'}"
    if uid != us:
        return f"owned by uid {uid}, not by us (uid {us})"
    if mode & _WRITABLE_BY_OTHERS:
        return f"writable by group or others (mode {stat.S_IMODE(mode):04o})"
    return None


def writable_by(owner: int, group: int, mode: int, *, uid: int, gid: int) -> bool:
    """Whether uid:gid (no supplementary group, as after giving root up) may create files in a
    directory of that owner, group and mode, by its permission bits alone."""
    if uid == 0:
        return True
    shift = 6 if owner == uid else 3 if group == gid else 0
    return (mode >> shift) & 0o3 == 0o3  # write and search
