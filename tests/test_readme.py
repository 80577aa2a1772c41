"""The README is the front door: its two commands, the CI hook behind them, and the
collector-only recipe stay true. (The reference tables it used to hold live under docs/ and are
checked by tests/docs/.)"""

from __future__ import annotations

from tests.docs import markdown
from tests.support import REPO

README = (REPO / "README.md").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    assert "make test" in README and "make run" in README
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1].strip() == "make test"


def test_the_two_commands_are_make_targets_that_set_up_first():
    makefile = (REPO / "Makefile").read_text()
    for target in ("run", "test"):
        assert f"\n{target}: setup\n" in makefile
    assert "\nsetup:\n\t@bash scripts/setup.sh\n" in makefile


def test_the_collector_only_recipe_names_files_that_exist():
    recipe = markdown.section(README, "## Collector-only mode")
    commands = "\n".join(markdown.fenced(recipe, "bash"))
    for path in ("requirements/collector.txt", "collector_only.py"):
        assert path in commands and (REPO / path).is_file()
    assert "KSENSE_METRICS_CSV" in commands
