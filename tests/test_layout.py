"""House rules enforced in the suite: ruff clean, import-linter contracts kept, no sys.path edits."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff_clean():
    result = subprocess.run(
        [str(BIN / "ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_contracts_kept():
    result = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_components_are_held_apart_by_contract():
    """The contracts that keep each image to its own package plus common/ exist (a kept
    contract that was deleted would keep nothing)."""
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    independent = [set(c["modules"]) for c in contracts if c["type"] == "independence"]
    assert {"exporter", "scorer", "scheduler", "dashboards"} in independent
    common = [c for c in contracts if c["type"] == "forbidden" and c["source_modules"] == ["common"]]
    assert common and {"exporter", "scorer", "scheduler", "dashboards"} <= set(common[0]["forbidden_modules"])


def test_no_module_edits_sys_path():
    offenders = [
        str(p.relative_to(REPO))
        for p in REPO.rglob("*.py")
        if ".venv" not in p.parts and re.search(r"sys\.path\s*(\.(insert|append|extend)|=|\[)", p.read_text())
        and p.name != "test_layout.py"
    ]
    assert offenders == []


def _importers(module: str, under: Path) -> set[str]:
    found = set()
    for path in under.rglob("*.py"):
        if ".venv" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == module or n.startswith(module + ".") for n in names):
                found.add(str(path.relative_to(REPO)))
    return found


def test_only_the_loader_imports_bcc_anywhere():
    """import-linter covers the packages; this also covers top-level scripts, tests and bench."""
    assert _importers("bcc", REPO) == {"exporter/bpf/loader.py"}


def test_only_scheduler_kube_imports_kubernetes():
    """The scheduler's one door to the API (tests, benchmarks and the lifecycle load tool in
    tools/ drive the official client themselves)."""
    product = {p for p in _importers("kubernetes", REPO) if not p.startswith(("tests/", "bench/", "tools/"))}
    assert product <= {"scheduler/kube.py"}
