"""Official `kubernetes` client objects pointed at the fake API server."""

from __future__ import annotations

from kubernetes import client


def make_configuration(url: str) -> client.Configuration:
    """A Configuration for a plain-HTTP, unauthenticated server (no kubeconfig, no env lookups)."""
    cfg = client.Configuration(host=url)
    cfg.verify_ssl = False
    return cfg


def make_api_client(url: str) -> client.ApiClient:
    """A fresh ApiClient for `url`; close it (or use it as a context manager) when done."""
    return client.ApiClient(configuration=make_configuration(url))
