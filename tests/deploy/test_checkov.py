"""checkov, a maintained IaC scanner, over what reaches a cluster: every deploy/ overlay as
kustomize renders it, and both Dockerfiles. No finding may stand unless it is skipped with a
reason (.checkov.yaml for global skips, checkov.io/skipN annotations on one workload)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import require
from tests.support import REPO

CHECKOV = REPO / ".venv" / "opt" / "checkov" / "bin" / "checkov"


def _scan(*target: str, framework: str) -> list[dict]:
    require(CHECKOV.exists(), "needs checkov (scripts/setup.sh installs it into .venv/opt/checkov)")
    done = subprocess.run([str(CHECKOV), "--config-file", str(REPO / ".checkov.yaml"), "--skip-download",
                           "--framework", framework, "-o", "json", *target],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    reports = json.loads(done.stdout)
    return reports if isinstance(reports, list) else [reports]


@pytest.mark.parametrize(("target", "framework"), [
    (("-d", "deploy"), "kustomize"),
    (("-f", "Dockerfile", "-f", "Dockerfile.scheduler"), "dockerfile"),
])
def test_no_unexplained_finding(target, framework):
    reports = _scan(*target, framework=framework)
    failed = [f"{f['check_id']} {f['check_name']}: {f['resource']}" for r in reports
              for f in r["results"]["failed_checks"]]
    assert failed == []
    assert sum(r["summary"]["passed"] for r in reports) > 100, "checkov scanned next to nothing"
    skipped = [f for r in reports for f in r["results"]["skipped_checks"]]
    assert all(f["check_result"].get("suppress_comment", "").strip() for f in skipped), "a skip without its reason"
