"""Order of pending pods (docs/design.md#the-fuzzy-scheduler): higher `spec.priority` first, then older first, pure.

    key(pod) = (−priority, creationTimestamp, namespace/name)

The name makes the order total, so two replicas and two runs agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scheduler.core.pods import creation_key, pod_key, priority


def queue_key(pod: Mapping[str, Any]) -> tuple[int, float, str]:
    """Sort key of a pending pod: `sorted(pods, key=queue_key)` is the attempt order."""
    return (-priority(pod), creation_key(pod), pod_key(pod))
