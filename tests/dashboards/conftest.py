"""Shared by the dashboards tests: every generated dashboard as the JSON Grafana receives."""

from __future__ import annotations

import json

import pytest

from dashboards import build


@pytest.fixture(scope="session")
def dashboards() -> dict[str, dict]:
    """Dashboard file name -> parsed JSON, built fresh from the code."""
    return {m.FILE: json.loads(build.dashboard_json(m.build())) for m in build.DASHBOARD_MODULES}
