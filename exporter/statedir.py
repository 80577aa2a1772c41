"""The state directory (where the frozen baseline persists), made and checked private (issue #10).

A restored baseline decides how the node is judged, so it must come from the exporter itself.
Under the old default, /tmp/ksense/state, any local user could create the directory first and
plant a baseline.json that was then trusted; the default is now /var/lib/ksense/state (the
DaemonSet mounts /var/lib/ksense from the node), and whatever the path, the rules of
exporter/core/ownership.py apply: the directory and the file are ours alone, and every
directory above them is root's or ours and writable by no one else (or sticky).

`prepare` runs once at start, while the exporter may still be root: it creates the directory
(0700) and its missing parents, gives it (and the files named, e.g. a baseline an earlier
exporter wrote as root) to the uid the exporter is about to become, and says why when the
directory cannot be trusted. `problem` re-checks it before each read and write;
`read_private` reads a file in it only when the file is ours alone and not too large.

`prepare_output` does the same for the CSV's directory, with a lighter touch: the CSV is meant
to be read and the directory may be shared (the scorer writes /tmp/ksense too), so a missing
one is created 0755 for the uid, an existing one is never taken over, only checked writable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from exporter.core.ownership import ancestor_problem, own_problem, writable_by

#: Mode of the state directory: nobody else needs to read a baseline.
DIR_MODE = 0o700


class Untrusted(Exception):
    """A file that is not ours alone (or too large); the message says how."""


def _ancestors_problem(path: Path, us: int) -> str | None:
    # A symbolic link on the way is looked at itself (it must be root's or ours), then every
    # directory the path resolves to.
    for parent in path.parents:
        st = os.lstat(parent)
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in (0, us):
            return f"{parent} (above {path}) is a symbolic link owned by uid {st.st_uid}"
    real = Path(os.path.realpath(path.parent))
    for directory in (real, *real.parents):
        st = os.stat(directory)
        if why := ancestor_problem(st.st_uid, st.st_mode, us=us):
            return f"{directory} (above {path}) is {why}"
    return None


def problem(directory: str | os.PathLike[str], *, us: int) -> str | None:
    """Why `directory` cannot be trusted by uid `us`; None when it can."""
    path = Path(os.path.abspath(directory))
    try:
        st = os.lstat(path)
        if why := own_problem(st.st_uid, st.st_mode, us=us, kind="directory"):
            return f"{path} is {why}"
        return _ancestors_problem(path, us)
    except OSError as exc:
        return f"cannot inspect {path}: {exc.strerror}"


def prepare(directory: str | os.PathLike[str], uid: int, gid: int, *, hand_over: Iterable[str] = ()) -> str | None:
    """Create `directory` for uid:gid (module docstring); why it cannot be used, or None.

    Run by root for another uid, it needs CAP_CHOWN to give a new directory away.
    """
    path = Path(os.path.abspath(directory))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if why := _ancestors_problem(path, uid):
            return why
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, DIR_MODE)
        st = os.lstat(path)
        me = os.geteuid()
        if me == 0 and uid != 0 and st.st_uid == 0 and stat.S_ISDIR(st.st_mode):
            # Made just now, or left by an exporter that ran as root: ours to give. The files
            # first: once the directory (0700) is uid's, root without CAP_DAC_OVERRIDE (the
            # DaemonSet's) cannot look inside it any more.
            os.chmod(path, DIR_MODE)
            for name in hand_over:
                with contextlib.suppress(FileNotFoundError):
                    entry = os.lstat(path / name)
                    if stat.S_ISREG(entry.st_mode) and entry.st_uid == 0:
                        os.chown(path / name, uid, gid, follow_symlinks=False)
            os.chown(path, uid, gid)
            st = os.lstat(path)
        if why := own_problem(st.st_uid, st.st_mode, us=uid, kind="directory"):
            return f"{path} is {why}"
        if stat.S_IMODE(st.st_mode) != DIR_MODE and st.st_uid == me:
            os.chmod(path, DIR_MODE)
    except OSError as exc:
        return f"cannot prepare {path} for uid {uid}: {exc.strerror}"
    return None


def read_private(path: str | os.PathLike[str], *, us: int, max_bytes: int) -> bytes:
    """The bytes of `path` when it is a regular file of uid `us`, writable by no one else and
    at most `max_bytes` long; raises Untrusted otherwise (FileNotFoundError when missing). A
    symbolic link is not followed, and a FIFO does not block the open."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise Untrusted("a symbolic link") from None
        if isinstance(exc, PermissionError):  # another user's file: say so, not just "denied"
            st = os.lstat(path)
            if why := own_problem(st.st_uid, st.st_mode, us=us, kind="file"):
                raise Untrusted(why) from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if why := own_problem(st.st_uid, st.st_mode, us=us, kind="file"):
            raise Untrusted(why)
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Untrusted(f"larger than {max_bytes} bytes")
    return data


def prepare_output(directory: str | os.PathLike[str], uid: int, gid: int) -> str | None:
    """Make `directory` one uid:gid can write files in (module docstring); why not, or None."""
    path = Path(os.path.abspath(directory))
    try:
        if not path.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o755)
                if os.geteuid() == 0 and uid != 0:
                    os.chown(path, uid, gid)
        st = os.stat(path)
    except OSError as exc:
        return f"cannot prepare {path} for uid {uid}: {exc.strerror}"
    if not writable_by(st.st_uid, st.st_gid, st.st_mode, uid=uid, gid=gid):
        mode = stat.S_IMODE(st.st_mode)
        return f"{path} is not writable by uid {uid} (owner {st.st_uid}:{st.st_gid}, mode {mode:04o})"
    return None
