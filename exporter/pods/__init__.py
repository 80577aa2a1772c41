"""Per-pod attribution's I/O: pod cgroup discovery, the tracker that owns the kernel's pod
table, and the optional Kubernetes name lookup (docs/design.md#per-pod-attribution)."""
