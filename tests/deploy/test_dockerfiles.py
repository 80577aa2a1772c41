"""The two Dockerfiles, checked statically (no Docker engine here, so nothing is built in the
suite): pinned base images, non-root users, only the packages each image needs, and a
.dockerignore that keeps the venv, tests, caches and keys out of the build context."""

from __future__ import annotations

import fnmatch
import re

import pytest

from tests.deploy.manifests import REPO, build, find, pod_spec

NODE = REPO / "Dockerfile"
SCHEDULER = REPO / "Dockerfile.scheduler"


def _instructions(path):
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _base_images(path):
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", path.read_text(), re.M))
    images, stages = [], set()
    for word, rest in _instructions(path):
        if word == "FROM":
            image, *alias = rest.split()
            if image not in stages:  # FROM <an earlier stage> is no base image
                images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
            if alias:
                stages.add(alias[-1])
    return images


@pytest.mark.parametrize("path", [NODE, SCHEDULER])
def test_base_images_are_pinned(path):
    images = _base_images(path)
    assert images
    for image in images:
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name and tag, image
        # An exact release (12.12-slim, 3.11.13-slim-bookworm), not latest or a moving codename.
        assert re.match(r"^\d+\.\d+(\.\d+)?(-[a-z]+)*$", tag), image


@pytest.mark.parametrize("path", [NODE, SCHEDULER])
def test_final_stage_runs_as_non_root(path):
    instructions = _instructions(path)
    last_from = max(i for i, (w, _) in enumerate(instructions) if w == "FROM")
    users = [rest for w, rest in instructions[last_from:] if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")


def test_node_image_gets_bcc_from_the_distribution_and_nothing_it_does_not_need():
    text = NODE.read_text()
    installs = " ".join(re.findall(r"apt-get install ([^&]+)", text))
    assert "python3-bpfcc" in installs and "--no-install-recommends" in installs
    for unneeded in ("bpfcc-tools", "linux-headers", "build-essential", "gcc", "clang ", "curl", "wget"):
        assert unneeded not in installs, unneeded
    assert "pip install bcc" not in text and "requirements/dev.txt" not in text
    assert "requirements/exporter.txt" in text and "requirements/scorer.txt" in text


def test_scheduler_image_has_no_bcc_and_no_numpy():
    text = SCHEDULER.read_text()
    assert "bpfcc" not in text and "apt-get" not in text
    assert "requirements/scheduler.txt" in text
    for other in ("exporter.txt", "scorer.txt", "dev.txt"):
        assert other not in text
    pins = [line.split("==")[0].strip() for line in (REPO / "requirements" / "scheduler.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins and "numpy" not in pins and "bcc" not in pins


def test_scheduler_image_ships_common_and_no_exporter():
    """The scheduler depends on `common` only (import-linter's independence contract checks the
    imports): its image copies common/ and scheduler/, never the exporter's BPF loader and C."""
    copied = [rest.split()[:-1] for w, rest in _instructions(SCHEDULER) if w == "COPY" and "--from" not in rest]
    sources = {src.rstrip("/") for srcs in copied for src in srcs}
    assert {"common", "scheduler"} <= sources
    assert "exporter" not in SCHEDULER.read_text()


def test_scorer_image_ships_common_and_no_exporter():
    """Likewise the scorer: its build stage copies common/ and scorer/, not the exporter."""
    instructions = _instructions(NODE)
    start = next(i for i, (w, rest) in enumerate(instructions) if w == "FROM" and rest.endswith("AS build-scorer"))
    end = next((i for i in range(start + 1, len(instructions)) if instructions[i][0] == "FROM"), len(instructions))
    sources = {src.rstrip("/") for w, rest in instructions[start:end] if w == "COPY" and "--from" not in rest
               for src in rest.split()[:-1]}
    assert {"common", "scorer"} <= sources and "exporter" not in sources


def test_scheduler_imports_no_numpy_or_bcc():
    """What makes the slim scheduler image possible, checked in a fresh interpreter."""
    import subprocess
    import sys

    code = ("import sys, scheduler.__main__; "
            "print(sorted(m for m in ('numpy', 'bcc', 'gunicorn', 'exporter', 'scorer') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_manifest_commands_match_the_images():
    objects = build("default")
    node = {"ksense-exporter": ("DaemonSet", "python3 -m exporter"),
            "ksense-scorer": ("Deployment", "python3 -m scorer")}
    for name, (kind, command) in node.items():
        (c,) = pod_spec(find(objects, kind, name))["containers"]
        assert c["image"].startswith(f"{name}:") and " ".join(c["command"]) == command
    (c,) = pod_spec(find(objects, "Deployment", "ksense-scheduler"))["containers"]
    assert c["image"].startswith("ksense-scheduler:") and " ".join(c["command"]) == "python3 -m scheduler"
    # The images' non-root user is the one the restricted pods run as.
    for path in (NODE, SCHEDULER):
        user = [rest for w, rest in _instructions(path) if w == "USER"][-1]
        assert user == "65532:65532"


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matches a path or any parent."""
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.strip().startswith("#")]
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        pats = [pat, pat.removeprefix("**/")] if pat.startswith("**/") else [pat]
        for candidate in candidates:
            names = [candidate] + ([candidate.split("/")[-1]] if pat.startswith("**/") else [])
            if any(fnmatch.fnmatchcase(n, p) for n in names for p in pats):
                excluded = not negate
                break
    return excluded


def test_dockerignore_keeps_the_context_to_what_the_images_copy():
    for path in (".venv/bin/python", "collector_only.py", "data/lab/split.json", "tests/deploy/test_dockerfiles.py",
                 ".git/HEAD", ".pytest_cache/v",
                 ".ruff_cache/x", ".hypothesis/x", "bench/x.py", "deploy/base/kustomization.yaml",
                 "exporter/__pycache__/names.cpython-311.pyc", "scorer/tls.key", "out/kernel_metrics.csv",
                 "server.pem"):
        assert _dockerignore_excludes(path), path
    for path in ("common/names.py", "exporter/bpf/sched.bpf.c", "scorer/rules_default.json",
                 "scheduler/__main__.py", "requirements/scorer.txt"):
        assert not _dockerignore_excludes(path), path
    # Every path the Dockerfiles COPY from the context is in it.
    for dockerfile in (REPO / "Dockerfile", REPO / "Dockerfile.scheduler"):
        for word, rest in _instructions(dockerfile):
            if word == "COPY" and "--from" not in rest:
                for src in rest.split()[:-1]:
                    assert not _dockerignore_excludes(src.rstrip("/")), src
                    assert (REPO / src).exists(), src


def _build_script():
    """deploy/images/build.py, loaded as a module (deploy/images is no package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("ksense_images_build", REPO / "deploy" / "images" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_inputs_hash_covers_every_directory_the_dockerfiles_copy():
    """`make images` reuses an image while the hash of its inputs is unchanged: a directory the
    Dockerfiles copy but the hash leaves out (common/, when the shared modules moved there) would
    keep a stale image."""
    copied = {src.rstrip("/").split("/")[0] for dockerfile in (NODE, SCHEDULER)
              for word, rest in _instructions(dockerfile) if word == "COPY" and "--from" not in rest
              for src in rest.split()[:-1]}
    assert copied <= set(_build_script().CONTEXT)
