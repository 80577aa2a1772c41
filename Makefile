# The two commands of the README: `make run` (the main job on this machine) and `make test`.
# Both install what is missing first (scripts/setup.sh: idempotent, seconds when all is there).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup run test lint bench generate e2e lab-report images clean

setup:
	@bash scripts/setup.sh

run: setup
	@bash scripts/run_local.sh $(ARGS)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Style, layering (import contracts) and types (mypy: strict on the */core packages, pyproject).
lint: setup
	$(PY) -m ruff check .
	.venv/bin/lint-imports
	$(PY) -m mypy

bench: setup
	$(PY) -m bench

# The whole stack on this machine through the end-to-end scenario (root for eBPF; ~3 minutes);
# writes out/e2e/<timestamp>/. Extra options through ARGS, e.g. ARGS="--out /tmp/e2e".
e2e: setup
	$(PY) -m tests.e2e $(ARGS)

# Regenerate dashboards, rules, docs/dashboards.md, docs/runbook.md and the deploy/ ConfigMaps built from them
# (the tests fail when the committed files differ from a fresh build).
generate: setup
	$(PY) -m dashboards.build
	$(PY) deploy/build.py

# Tune on the committed lab recordings (data/lab/split.json) and rewrite lab/REPORT.md,
# lab/report/*.png and lab/rules_tuned.json (a few minutes; no root needed).
lab-report: setup
	$(PY) -m lab report

# The three container images (exporter, scorer, scheduler) with podman/buildah, from each Dockerfile's
# public base or, where no registry answers, a local Debian base (deploy/images/base.sh, cached);
# prints each image's size and layer count. Pushing: ARGS="--push registry.example.com/ksense".
images: setup
	$(PY) deploy/images/build.py $(ARGS)

clean:
	rm -rf .venv .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
