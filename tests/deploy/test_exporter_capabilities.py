"""The exporter DaemonSet's capability set, checked on the real kernel: the eBPF loader, run as
uid 0 with its capability bounding set cut down to exactly what the manifest adds (as the
container runtime does for a non-privileged container), attaches every tracepoint; without
CAP_BPF or without CAP_PERFMON it cannot. The exporter itself then gives root up; without
CAP_SETUID it refuses to serve. Needs root, bcc and tracefs (required in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import urllib.request
from pathlib import Path

import pytest

from exporter.privilege import parse_status
from tests.deploy.manifests import build, find, pod_spec
from tests.exporter.test_metrics_flood import clean_env
from tests.support import REPO, free_port, wait_for

LOAD = textwrap.dedent("""
    import json
    from exporter.bpf import loader
    from exporter.sources import SourceUnavailable
    try:
        probe = loader.load(slots=1024)
    except SourceUnavailable as exc:
        print(json.dumps({"error": str(exc)}))
    else:
        print(json.dumps({"attached": probe.attached}))
        probe.close()
""")


def _manifest_capabilities() -> list[str]:
    ds = find(build("default"), "DaemonSet", "ksense-exporter")
    (container,) = pod_spec(ds)["containers"]
    return container["securityContext"]["capabilities"]["add"]


def _setpriv(capabilities: list[str]) -> list[str]:
    """setpriv as the container runtime sets a root process up: only `capabilities` in the
    bounding set (so in the permitted and effective sets after exec), no_new_privs."""
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in capabilities)])
    return [shutil.which("setpriv"), f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs"]


def _exporter(state_dir: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "exporter", "--source", "ebpf", "--host", "127.0.0.1", "--port", str(port),
            "--no-csv", "--state-dir", str(state_dir)]


def _load_with(capabilities: list[str]) -> dict:
    """Run the loader as root with only `capabilities` in the bounding, permitted and effective
    sets (and no_new_privs, as allowPrivilegeEscalation: false sets)."""
    import json

    cmd = [*_setpriv(capabilities), sys.executable, "-c", LOAD]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def restricted_root(need_ebpf):
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is missing")


def test_the_manifest_capabilities_attach_every_tracepoint(restricted_root):
    answer = _load_with(_manifest_capabilities())
    assert "error" not in answer, answer
    assert answer["attached"] and all(answer["attached"].values()), answer


@pytest.mark.parametrize("missing", ["BPF", "PERFMON"])
def test_each_ebpf_capability_is_needed(restricted_root, missing):
    caps = [c for c in _manifest_capabilities() if c != missing]
    answer = _load_with(caps)
    assert "error" in answer, f"loaded without CAP_{missing}: the manifest grants more than it needs"


def test_the_manifest_capabilities_let_the_exporter_give_root_up(restricted_root, tmp_path):
    """The real exporter with the manifest's capabilities attaches, then serves as 65534 with no
    capability, and the state directory it made under a root-owned parent is 65534's."""
    base = Path(tempfile.mkdtemp(prefix="ksense-caps-"))
    base.chmod(0o755)
    port = free_port()
    cmd = [*_setpriv(_manifest_capabilities()), *_exporter(base / "state", port)]
    with open(tmp_path / "exporter.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=clean_env({}), stdout=log, stderr=subprocess.STDOUT)

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return r.status == 200
        except OSError:
            return proc.poll() is not None

    try:
        wait_for(ready, 60, "the exporter ready")
        assert proc.poll() is None, (tmp_path / "exporter.log").read_text()
        creds = parse_status(Path(f"/proc/{proc.pid}/status").read_text())
        assert set(creds.uids) == {65534} and not any(creds.caps.values()), creds
        assert os.stat(base / "state").st_uid == 65534
        # ... and usable: no CAP_DAC_OVERRIDE, so root must hand it over before it cannot enter it.
        assert "state_dir_rejected" not in (tmp_path / "exporter.log").read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        shutil.rmtree(base)


def test_without_setuid_the_exporter_refuses_to_serve_as_root(restricted_root, tmp_path):
    cmd = [*_setpriv([c for c in _manifest_capabilities() if c != "SETUID"]), *_exporter(tmp_path / "state", 0)]
    done = subprocess.run(cmd, cwd=REPO, env=clean_env({}), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "cannot give up root" in done.stderr and "CAP_SETUID" in done.stderr
