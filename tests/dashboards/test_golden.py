"""Generated artifacts are code + committed output: a fresh build equals the committed files
byte for byte (the kube-prometheus `generate && git diff --exit-code` check, in pytest)."""

from __future__ import annotations

import subprocess
import sys

from dashboards import build, config
from tests.support import REPO


def test_a_fresh_build_equals_the_committed_files(tmp_path):
    written = build.build(tmp_path)
    assert written
    stale = [
        str(path.relative_to(tmp_path))
        for path in written
        if not (REPO / path.relative_to(tmp_path)).is_file()
        or (REPO / path.relative_to(tmp_path)).read_bytes() != path.read_bytes()
    ]
    assert stale == [], f"regenerate with `python -m dashboards.build` and commit: {stale}"


def test_every_committed_dashboard_and_rules_file_is_generated():
    generated = {str(p) for p in build.outputs()}
    committed = {str(p.relative_to(REPO)) for p in (REPO / config.DASHBOARDS_DIR).glob("*.json")}
    rules_dir = REPO / config.RULES_FILE.parent
    committed |= {str(p.relative_to(REPO)) for p in [*rules_dir.glob("ksense-*.yaml"), *rules_dir.glob("tests/*.yaml")]}
    assert committed <= generated, f"committed but no longer generated: {sorted(committed - generated)}"


def test_the_build_is_deterministic(tmp_path):
    first = {rel: render() for rel, render in build.outputs().items()}
    second = {rel: render() for rel, render in build.outputs().items()}
    assert first == second


def test_python_m_dashboards_build_writes_under_out(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dashboards.build", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for rel in build.outputs():
        assert (tmp_path / rel).is_file()
    assert (tmp_path / config.RULES_FILE).read_text() == (REPO / config.RULES_FILE).read_text()
