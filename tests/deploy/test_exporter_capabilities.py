"""The exporter DaemonSet's capability set, checked on the real kernel: the eBPF loader, run as
uid 0 with its capability bounding set cut down to exactly what the manifest adds (as the
container runtime does for a non-privileged container), attaches every tracepoint; without
CAP_BPF or without CAP_PERFMON it cannot. Needs root, bcc and tracefs (required in CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO
from tests.deploy.manifests import build, find, pod_spec

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


def _load_with(capabilities: list[str]) -> dict:
    """Run the loader as root with only `capabilities` in the bounding, permitted and effective
    sets (and no_new_privs, as allowPrivilegeEscalation: false sets)."""
    import json

    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in capabilities)])
    cmd = [shutil.which("setpriv"), f"--bounding-set={bounding}", "--inh-caps=-all", "--no-new-privs",
           sys.executable, "-c", LOAD]
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
