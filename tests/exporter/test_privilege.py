"""The serving exporter gives root up once its programs are attached (issue #10): the real
eBPF exporter, started as root, serves as 65534:65534 with every capability set empty,
no_new_privs set, and its metrics, BPF program statistics and CSV keep moving. Needs root, bcc
and tracefs (required in CI)."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import names
from exporter.privilege import parse_status
from tests.exporter.test_metrics_flood import clean_env, spawn
from tests.support import free_port, wait_for

NOBODY = 65534
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def value(text: str, family: str, labels: str = "") -> float:
    """Sum of the samples of `family` whose labels contain `labels`."""
    pattern = re.compile(rf"^{re.escape(family)}(?:\{{([^}}]*)\}})? (\S+)$", re.M)
    return sum(float(v) for lab, v in pattern.findall(text) if labels in lab)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A root-owned directory the unprivileged uid can reach (pytest's tmp_path is root's alone)."""
    base = Path(tempfile.mkdtemp(prefix="ksense-privilege-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


@pytest.fixture
def bpf_stats() -> Iterator[None]:
    """kernel.bpf_stats_enabled=1 for the test, so program run statistics are read after the drop."""
    old = BPF_STATS.read_text()
    BPF_STATS.write_text("1\n")
    yield
    BPF_STATS.write_text(old)


def test_the_ebpf_exporter_serves_as_nobody_with_no_capability_and_keeps_counting(
    need_ebpf, bpf_stats, shared_dir, tmp_path
):
    port = free_port()
    csv_path = shared_dir / "csv" / "kernel_metrics.csv"
    log = tmp_path / "exporter.log"
    proc = spawn(["-m", "exporter", "--source", "ebpf", "--host", "127.0.0.1", "--port", str(port),
                  "--interval", "0.5", "--csv", str(csv_path), "--state-dir", str(shared_dir / "state")],
                 clean_env({}), log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is not None or get(url + "/readyz")[0] == 200, 60, "the exporter ready")
        assert proc.poll() is None, log.read_text()
        tasks = list(Path(f"/proc/{proc.pid}/task").glob("*/status"))
        assert len(tasks) >= 3  # main, CSV writer, HTTP loop (+ workers): every one of them dropped
        for status in tasks:
            text = status.read_text()
            creds = parse_status(text)
            assert set(creds.uids) == {NOBODY} and set(creds.gids) == {NOBODY} and creds.groups == (), text
            assert creds.caps == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapAmb": 0}, text
            assert re.search(r"^NoNewPrivs:\s+1$", text, re.M), text
        assert "event=privileges_dropped uid=65534 gid=65534 capabilities=none" in log.read_text()
        st = os.stat(shared_dir / "state")
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o700)

        def reading() -> tuple[float, float, float]:
            _, text = get(url + "/metrics")
            return (value(text, names.RUNQUEUE_LATENCY.name + "_count"),
                    value(text, names.BPF_PROGRAM_RUNS.name, 'program="sched_switch"'),
                    value(text, "process_open_fds"))

        first = reading()
        assert value(get(url + "/metrics")[1], names.BPF_PROGRAM_ATTACHED.name) == 6
        last = [first]

        def moved() -> bool:
            last[0] = reading()
            return last[0][0] > first[0] and last[0][1] > first[1]

        try:
            wait_for(moved, 10, "run-queue events and program runs counted after the drop")
        except AssertionError as exc:
            # The sysctl is machine-wide: another test session on this machine may have reset it.
            raise AssertionError(f"{exc}: first {first}, last {last[0]}, bpf_stats_enabled now "
                                 f"{BPF_STATS.read_text().strip()}") from None
        assert first[2] > 0  # process_* still read from /proc/self
        # As Prometheus asks: OpenMetrics, gzipped (nothing may need a module import after the drop).
        scrape = urllib.request.Request(url + "/metrics", headers={
            "Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"})
        with urllib.request.urlopen(scrape, timeout=5) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(r.read()).decode().endswith("# EOF\n")
        rows = wait_for(lambda: len(csv_path.read_text().splitlines()) >= 4 and csv_path.read_text(), 10, "CSV rows")
        assert os.stat(csv_path).st_uid == NOBODY and rows.count("\n") >= 4
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert proc.returncode == 0, log.read_text()[-3000:]
