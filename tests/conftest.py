"""Shared test helpers: real parts are required in CI.

A test that needs a real part (root + bcc, a Prometheus binary, promtool) calls
`require(condition, why)`: on a developer laptop it skips with the reason; with CI=true or
KSENSE_REQUIRE_REAL=1 it fails, because a green CI that skipped the eBPF tests is a red CI.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support import REPO

T = TypeVar("T")
#: The reference recording of a cluster node, vendored in the repository (data/reference/README.md).
REAL_KERNEL_CSV = REPO / "data" / "reference" / "kernel_metrics_real.csv.gz"


def real_parts_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("KSENSE_REQUIRE_REAL") == "1"


def require(condition: bool, why: str) -> None:
    """Skip (laptop) or fail (CI) unless `condition` holds."""
    if condition:
        return
    if real_parts_required():
        pytest.fail(f"real part missing in CI: {why}")
    pytest.skip(why)


def bcc_available() -> bool:
    if os.geteuid() != 0:
        return False
    if importlib.util.find_spec("bcc") is None:
        return False
    return os.path.isdir("/sys/kernel/tracing/events/sched")


@pytest.fixture
def need_ebpf() -> None:
    require(bcc_available(), "needs root, Debian's python3-bpfcc linked into the venv, and tracefs")


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    require(path is not None, "needs promtool (Debian package prometheus)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def real_kernel_csv(tmp_path_factory) -> Path:
    """The reference recording as a plain kernel_metrics.csv (the repository keeps it gzipped;
    tests that slice its lines want text, the readers take either)."""
    require(REAL_KERNEL_CSV.exists(), f"needs the reference recording {REAL_KERNEL_CSV}")
    plain = tmp_path_factory.mktemp("reference") / "kernel_metrics_real.csv"
    with gzip.open(REAL_KERNEL_CSV, "rb") as src, open(plain, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return plain


# The test Kubernetes API server's fixtures, for every test directory.
from tests.kubeapi.fixtures import kube_api, kube_server  # noqa: E402, F401
