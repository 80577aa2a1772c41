"""pytest fixtures for the fake API server.

Make them visible suite-wide from tests/conftest.py with:

    from tests.kubeapi.fixtures import kube_api, kube_server  # noqa: F401  (pytest fixtures)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from tests.kubeapi.client import make_api_client
from tests.kubeapi.server import KubeAPIServer, Store


@dataclass
class KubeAPI:
    """A started fake server and official-client APIs configured for it."""

    server: KubeAPIServer
    api_client: client.ApiClient
    core: client.CoreV1Api
    coordination: client.CoordinationV1Api
    events: client.EventsV1Api

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def store(self) -> Store:
        return self.server.store


@contextmanager
def running_kube_api(**server_kwargs: Any) -> Iterator[KubeAPI]:
    """Start a KubeAPIServer on 127.0.0.1 with a free port; stop it (and its watches) on exit."""
    with KubeAPIServer(**server_kwargs) as server, make_api_client(server.url) as api_client:
        yield KubeAPI(server, api_client, client.CoreV1Api(api_client), client.CoordinationV1Api(api_client),
                      client.EventsV1Api(api_client))


@pytest.fixture
def kube_api() -> Iterator[KubeAPI]:
    """A started fake API server with CoreV1Api/CoordinationV1Api/EventsV1Api clients for it."""
    with running_kube_api() as k:
        yield k


@pytest.fixture
def kube_server(kube_api: KubeAPI) -> KubeAPIServer:
    """Just the started server (its `.url`, `.store`, `.inject()`, `.count()`)."""
    return kube_api.server
