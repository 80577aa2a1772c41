"""A fake Kubernetes API server over real HTTP, for tests that drive the official `kubernetes` client.

No kube-apiserver can be installed on our machines (docs/development.md), and kmock 0.8 has no selectors,
uids, resourceVersions or PUT. This package implements, in memory, the slice of API semantics the
scheduler relies on, so that `scheduler.kube` runs its real client code against it:

- one global resourceVersion counter (like etcd) and a bounded history of watch events;
- core/v1 pods (+ `binding`, `status`), nodes (+ `status`), events; coordination.k8s.io/v1 leases;
  events.k8s.io/v1 events (stored apart from core events, no conversion between the two);
- pod scheduling gates (KEP-3521): a gated pod is created with PodScheduled=False reason
  SchedulingGated, its gates can be removed by an update but none added, and its binding is
  refused (409, as the real pods/binding);
- list with `fieldSelector`, `labelSelector`, `limit`/`continue`; get; create (uid,
  creationTimestamp, pod defaulting); update (PUT) with resourceVersion/uid preconditions;
  patch (strategic merge, JSON merge, JSON patch); delete with preconditions; deletecollection;
- watch from a resourceVersion, streamed as chunked JSON lines, with selector-aware
  ADDED/MODIFIED/DELETED conversion (an object that stops matching is sent as DELETED with its
  previous content, as the watch cache does), bookmarks, and `410 Expired` as an ERROR event
  when the resourceVersion is older than the retained history;
- Status error bodies shaped like the real ones (NotFound, AlreadyExists, Conflict, Invalid, ...);
- fault injection (fail / hang / reset the next N matching requests), dropping or expiring open
  watches, compacting the history, and request counting by (verb, resource).

Written by hand because no maintained Python library emulates these semantics. What it does not
emulate is listed in `NOT_EMULATED`.

Modules: `errors` (Status bodies), `selectors`, `patches`, `resources`, `pods` (pod semantics),
`store` (objects, resourceVersions, history), `faults`, `routes`, `watch`, `handler` (HTTP) and
`api` (`KubeAPIServer`). This package re-exports what tests use.
"""

from tests.kubeapi.server.api import KubeAPIServer
from tests.kubeapi.server.errors import ApiError, status_object
from tests.kubeapi.server.faults import Fault, RequestRecord
from tests.kubeapi.server.resources import EVENTS, LEASES, NEW_EVENTS, NODES, PODS, SERVICES, ResourceType, resource
from tests.kubeapi.server.store import Store, WatchEvent

NOT_EMULATED = (
    "authentication, authorization, admission webhooks, API priority and fairness (no 429s unless injected)",
    "protobuf, CBOR, YAML and server-side apply (apply-patch answers 415); table output",
    "dryRun (answers 400 instead of pretending)",
    "graceful deletion: DELETE removes a pod at once, bound or not (no kubelet, no deletionTimestamp phase)",
    "finalizers, ownerReferences and garbage collection; namespaces (any namespace name is accepted)",
    "field validation of objects beyond pods' containers/image, names, event involvedObject.namespace",
    "ResourceQuota, LimitRange, PriorityClass objects (known class names are a dict on the store)",
    "events.k8s.io/v1 <-> core/v1 event conversion (two separate stores); event TTL",
    "list consistency: `continue` pages read the current state, not the first page's snapshot; "
    "resourceVersionMatch=Exact and rv-too-large (504) for lists and watches",
    "per-resource watch caches: one global history shared by all resources (like etcd compaction)",
    "managedFields, generation bumps, selfLink, per-item kind/apiVersion stripping in lists",
    "the `/watch/` legacy paths, discovery beyond /version, /api, /apis, health endpoints",
)

__all__ = [
    "EVENTS", "LEASES", "NEW_EVENTS", "NODES", "NOT_EMULATED", "PODS", "SERVICES", "ApiError", "Fault",
    "KubeAPIServer", "RequestRecord", "ResourceType", "Store", "WatchEvent", "resource", "status_object",
]
