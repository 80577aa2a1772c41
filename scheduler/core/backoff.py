"""Per-pod retry backoff after failed scheduling attempts (docs/design.md#the-fuzzy-scheduler feedback), pure.

    delay(n) = min(INITIAL_S × 2^(n−1), MAX_S)   after the n-th consecutive failure (n ≥ 1)
             = 1, 2, 4, 8, 16, 32, 60, 60, … s

A success resets the state; the shell drops the state of a deleted pod (or steps it with
`failed=False`). `wake` makes a backing-off pod due at once without forgetting its failures (a
cluster change that may make it schedulable — kube-scheduler's move back to the active queue);
if it fails again, the wait goes on doubling. Time is an argument (monotonic seconds from the
shell); nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

INITIAL_S = 1.0
MAX_S = 60.0


@dataclass(frozen=True, slots=True)
class BackoffState:
    """Consecutive failures and the earliest time of the next attempt."""

    failures: int = 0
    not_before: float = float("-inf")


READY = BackoffState()


def delay(failures: int, initial_s: float = INITIAL_S, max_s: float = MAX_S) -> float:
    """Wait after `failures` consecutive failures (0 → no wait)."""
    if failures <= 0:
        return 0.0
    # Cap the exponent so a pod failing for days does not build a huge int.
    return min(initial_s * 2.0 ** min(failures - 1, 64), max_s)


def step(
    state: BackoffState, now: float, failed: bool, initial_s: float = INITIAL_S, max_s: float = MAX_S
) -> BackoffState:
    """State after an attempt at `now`: a failure doubles the wait (capped), a success resets."""
    if not failed:
        return READY
    failures = state.failures + 1
    return BackoffState(failures, now + delay(failures, initial_s, max_s))


def due(state: BackoffState, now: float) -> bool:
    """May the pod be attempted at `now`?"""
    return now >= state.not_before


def wake(state: BackoffState, now: float) -> BackoffState:
    """The pod is due from `now` on (if it was not already); its failure count is kept."""
    if state.not_before <= now:
        return state
    return BackoffState(state.failures, now)
