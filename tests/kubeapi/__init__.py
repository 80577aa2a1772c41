"""A fake Kubernetes API server over real HTTP for tests that run the official client.

`KubeAPIServer` (the server package, one module per concern) holds the semantics, `factories` builds realistic objects,
`make_api_client` (client.py) points the official client at it, and fixtures.py has the pytest
fixtures `kube_api` and `kube_server`.
"""

from tests.kubeapi.client import make_api_client, make_configuration
from tests.kubeapi.server import NOT_EMULATED, ApiError, Fault, KubeAPIServer, Store

__all__ = ["NOT_EMULATED", "ApiError", "Fault", "KubeAPIServer", "Store", "make_api_client", "make_configuration"]
