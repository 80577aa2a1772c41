"""Collector-only mode needs what the README says and no more: collector_only.py runs with only
the packages of requirements/collector.txt (plus the distribution's bcc). Every other
distribution installed in this venv is made unimportable in the child process, then the
collector replays a recording, and, with root and bcc, runs on the real kernel."""

from __future__ import annotations

import importlib.metadata
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import REPO, wait_for

REQUIREMENTS = REPO / "requirements"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line.strip())
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


ALLOWED = _pins(REQUIREMENTS / "collector.txt")


def _blocked_modules() -> list[str]:
    """Top-level modules of every installed distribution that collector.txt does not name."""
    blocked = set()
    for module, dists in importlib.metadata.packages_distributions().items():
        if not any(d.lower().replace("_", "-") in ALLOWED for d in dists):
            blocked.add(module)
    return sorted(blocked)


def _command(*args: str) -> list[str]:
    blocker = textwrap.dedent(f"""
        import importlib.abc, runpy, sys
        BLOCKED = set({_blocked_modules()!r})
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is not in requirements/collector.txt")
        sys.meta_path.insert(0, Block())
        sys.argv = ["collector_only.py", *sys.argv[1:]]
        runpy.run_path("collector_only.py", run_name="__main__")
    """)
    return [sys.executable, "-c", blocker, *args]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("KSENSE_", "FUZZY_"))}


def test_the_blocker_blocks_what_the_collector_must_not_need():
    blocked = _blocked_modules()
    assert "numpy" not in blocked
    assert {"prometheus_client", "requests", "gunicorn", "kubernetes"} <= set(blocked)
    probe = subprocess.run([sys.executable, "-c", _command()[2].replace(
        'runpy.run_path("collector_only.py", run_name="__main__")', "import prometheus_client")],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "not in requirements/collector.txt" in probe.stderr


def test_collector_only_replays_with_only_its_requirements(tmp_path, real_kernel_csv):
    recording = tmp_path / "short.csv"
    with real_kernel_csv.open() as f:
        recording.write_text("".join(f.readlines()[:80]))
    out = tmp_path / "kernel_metrics.csv"
    done = subprocess.run(_command("--source", f"replay:{recording}", "--speed", "0", "--csv", str(out),
                                   "--state-dir", str(tmp_path / "state")),
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 80


@pytest.mark.real
def test_collector_only_runs_on_the_kernel_with_only_its_requirements(tmp_path, need_ebpf):
    out = tmp_path / "kernel_metrics.csv"
    env = {**_env(), "KSENSE_METRICS_CSV": str(out), "KSENSE_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen(_command(), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out.exists() and len(out.read_text().splitlines()) >= 3) or proc.poll() is not None, 60,
                 "two kernel_metrics.csv rows")
        assert proc.poll() is None, proc.communicate()[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "source=ebpf" in stderr


def test_collector_pins_are_the_exporters():
    exporter = _pins(REQUIREMENTS / "exporter.txt")
    assert ALLOWED and all(exporter.get(name) == version for name, version in ALLOWED.items())
