"""A kubepods-like cgroup v2 tree on the test machine (docs/development.md: the unified hierarchy
is at /sys/fs/cgroup/unified here), removed leaf first afterwards.

`PodTree.add_pod` makes a pod directory in either kubelet driver's layout with one container
scope below it; `run_in` starts a process inside a container's cgroup; `close` kills what was
started, then removes every directory it made, deepest first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from exporter.pods.discovery import find_root


class PodTree:
    def __init__(self):
        root = find_root()
        if root is None:
            raise RuntimeError("no cgroup v2 hierarchy")
        self.root = root / f"ksense-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._dirs: list[Path] = []
        self._procs: list[subprocess.Popen] = []
        self._mkdir(self.root)

    def _mkdir(self, path: Path) -> Path:
        if not path.exists():
            path.mkdir()
            self._dirs.append(path)
        return path

    def add_pod(self, *, driver: str = "systemd", qos: str = "burstable") -> tuple[str, Path, Path]:
        """(uid, pod directory, container scope directory) of a new pod."""
        uid = str(uuid.uuid4())
        cid = uuid.uuid4().hex * 2
        if driver == "systemd":
            kube = self._mkdir(self.root / "kubepods.slice")
            q = self._mkdir(kube / f"kubepods-{qos}.slice")
            pod = self._mkdir(q / f"kubepods-{qos}-pod{uid.replace('-', '_')}.slice")
            scope = self._mkdir(pod / f"cri-containerd-{cid}.scope")
        else:
            kube = self._mkdir(self.root / "kubepods")
            q = self._mkdir(kube / qos)
            pod = self._mkdir(q / f"pod{uid}")
            scope = self._mkdir(pod / cid)
        return uid, pod, scope

    def run_in(self, scope: Path, code: str) -> subprocess.Popen:
        """`python -c code` started inside `scope` (it moves itself before exec)."""
        procs = str(scope / "cgroup.procs")

        def enter() -> None:
            with open(procs, "w") as f:
                f.write("0")

        proc = subprocess.Popen([sys.executable, "-c", code], preexec_fn=enter)
        self._procs.append(proc)
        return proc

    def remove(self, pod: Path) -> None:
        """Remove one pod's directories (its processes must be gone), deepest first."""
        for d in sorted((d for d in self._dirs if d == pod or pod in d.parents), key=lambda p: -len(p.parts)):
            _rmdir(d)
            self._dirs.remove(d)

    def close(self) -> None:
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        for d in sorted(self._dirs, key=lambda p: -len(p.parts)):
            _rmdir(d)
        self._dirs.clear()


def _rmdir(path: Path) -> None:
    """rmdir, retried briefly: a killed task leaves its cgroup a moment after wait() returns."""
    end = time.monotonic() + 5
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.02)
