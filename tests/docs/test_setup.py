"""scripts/setup.sh on the distributions the README names, without those machines: its `--plan`
mode runs the real script against fake `uname`, `dpkg`, `dpkg-query`, `apt-cache` and Python
interpreters that answer like a fresh Debian 12, Ubuntu 22.04 or Ubuntu 24.04, and must name
in one line the packages that exist there (kernel headers for the running kernel when packaged,
the generic ones otherwise; no Debian-only name on Ubuntu). On this machine, after `make test`'s own
set-up, no system package is left to install."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO

SCRIPT = REPO / "scripts" / "setup.sh"
#: Real tools the plan needs; everything else on PATH is fake.
TOOLS = ("bash", "dirname", "cat", "sha256sum", "cut", "awk", "grep", "sed", "id", "ls", "sort", "tail", "env")
COMMON = ["bpfcc-tools", "python3-bpfcc", "prometheus", "openssl", "stress-ng", "rt-tests", "redis-server",
          "redis-tools", "iperf3", "podman", "buildah", "runc", "debootstrap", "victoria-metrics"]

DISTROS = {
    "debian-12": {
        "kernel": "6.1.0-18-amd64", "python3": "3.11",
        "offered": [*COMMON, "linux-headers-6.1.0-18-amd64", "linux-headers-amd64", "linux-perf", "python3-venv"],
        "plan": [*COMMON[:2], "linux-headers-6.1.0-18-amd64", *COMMON[2:6], "linux-perf", *COMMON[6:], "python3-venv"],
    },
    "debian-12-custom-kernel": {
        "kernel": "6.18.5", "python3": "3.11",
        "offered": [*COMMON, "linux-headers-6.1.0-18-amd64", "linux-headers-amd64", "linux-perf", "python3-venv"],
        "plan": [*COMMON[:2], "linux-headers-amd64", *COMMON[2:6], "linux-perf", *COMMON[6:], "python3-venv"],
    },
    "ubuntu-22.04": {
        "kernel": "5.15.0-91-generic", "python3": "3.10",
        "offered": [*COMMON, "linux-headers-5.15.0-91-generic", "linux-headers-generic",
                    "linux-tools-5.15.0-91-generic", "linux-tools-generic", "python3-venv", "python3.11",
                    "python3.11-venv"],
        "plan": [*COMMON[:2], "linux-headers-5.15.0-91-generic", *COMMON[2:6], "linux-tools-5.15.0-91-generic",
                 *COMMON[6:], "python3.11", "python3.11-venv"],
    },
    "ubuntu-24.04": {
        "kernel": "6.8.0-31-generic", "python3": "3.12",
        "offered": [*COMMON, "linux-headers-6.8.0-31-generic", "linux-headers-generic", "linux-tools-6.8.0-31-generic",
                    "linux-tools-generic", "python3-venv"],
        "plan": [*COMMON[:2], "linux-headers-6.8.0-31-generic", *COMMON[2:6], "linux-tools-6.8.0-31-generic",
                 *COMMON[6:], "python3-venv"],
    },
}


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def _machine(tmp_path: Path, kernel: str, python3: str, offered: list[str], installed: list[str]) -> tuple[Path, dict]:
    """A copy of the repository's set-up inputs (no .venv) and a PATH of fakes."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "scripts" / "setup.sh")
    shutil.copytree(REPO / "requirements", repo / "requirements")
    shutil.copy(REPO / "pyproject.toml", repo)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        real = shutil.which(tool)
        assert real, tool
        (bin_dir / tool).symlink_to(real)
    (tmp_path / "offered").write_text("".join(f"{p}\n" for p in offered))
    (tmp_path / "installed").write_text("".join(f"{p}\n" for p in installed))
    _fake(bin_dir, "uname", f'[ "$1" = -r ] && echo {kernel}\n')
    _fake(bin_dir, "dpkg", '[ "$1" = --print-architecture ] && echo amd64\n')
    _fake(bin_dir, "dpkg-query", f"""shift 2
for p in "$@"; do
  if grep -qxF "$p" {tmp_path}/installed; then echo "$p install ok installed"; fi
done
""")
    _fake(bin_dir, "apt-cache", f"""[ "$1" = policy ] || exit 1
if grep -qxF "$2" {tmp_path}/offered; then printf '%s:\\n  Installed: (none)\\n  Candidate: 1.0-1\\n' "$2"; fi
""")
    minor = python3.split(".")[1]
    _fake(bin_dir, "python3", f"""case "$2" in
  *version_info*) [ {minor} -ge 11 ] && exit 0 || exit 1 ;;
  *ensurepip*) exit 1 ;;
esac
exit 0
""")
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return repo, env


def _plan(repo: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/setup.sh", "--plan"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("distro", DISTROS)
def test_plan_names_packages_the_distribution_has(tmp_path, distro):
    d = DISTROS[distro]
    repo, env = _machine(tmp_path, d["kernel"], d["python3"], d["offered"], installed=[])
    done = _plan(repo, env)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("setup: will install apt: ")
    apt, _, python = lines[0].removeprefix("setup: will install apt: ").partition("; ")
    assert apt.split() == d["plan"]
    assert python.startswith("python: requirements/dev.txt into .venv")
    assert not (repo / ".venv").exists()


def test_a_package_the_distribution_lacks_is_skipped_not_fatal(tmp_path):
    d = DISTROS["ubuntu-24.04"]
    repo, env = _machine(tmp_path, d["kernel"], d["python3"], [p for p in d["offered"] if p != "prometheus"], [])
    done = _plan(repo, env)
    assert done.returncode == 0, done.stderr
    assert "prometheus" not in done.stderr.splitlines()[0]
    assert done.stderr.splitlines()[1] == "setup: not offered by the apt sources, skipped: prometheus"


def test_nothing_to_install_says_nothing(tmp_path):
    d = DISTROS["debian-12"]
    repo, env = _machine(tmp_path, d["kernel"], d["python3"], d["offered"], installed=d["plan"])
    venv = repo / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(shutil.which("python3") or "/usr/bin/python3")
    sha = subprocess.run("cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1", shell=True, cwd=repo,
                         capture_output=True, text=True, check=True).stdout.strip()
    (repo / ".venv" / ".requirements.sha").write_text(sha + "\n")
    done = _plan(repo, env)
    assert (done.returncode, done.stderr) == (0, "")


@pytest.mark.skipif(os.geteuid() != 0, reason="the real set-up needs root")
def test_on_this_machine_the_system_part_is_done():
    """make test ran scripts/setup.sh first, so no system package is left to install (the venv
    part is left out: worktrees sharing one venv may disagree about its requirements)."""
    done = subprocess.run(["bash", str(SCRIPT), "--plan"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "apt:" not in done.stderr and "skipped" not in done.stderr
