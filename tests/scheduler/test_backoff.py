"""Per-pod backoff (scheduler.core.backoff): 1 s doubling to a 60 s cap, reset on success."""

from __future__ import annotations

import pytest

from scheduler.core.backoff import MAX_S, READY, BackoffState, delay, due, step, wake


@pytest.mark.parametrize(
    ("name", "failures", "expected"),
    [
        ("no failure, no wait", 0, 0.0),
        ("first failure 1 s", 1, 1.0),
        ("second 2 s", 2, 2.0),
        ("third 4 s", 3, 4.0),
        ("sixth 32 s", 6, 32.0),
        ("seventh capped at 60 s", 7, 60.0),
        ("long after, still 60 s", 10_000, 60.0),
        ("negative count treated as none", -3, 0.0),
    ],
)
def test_delay_table(name, failures, expected):
    assert delay(failures) == expected, name


def test_step_doubles_then_caps_and_due_follows_now():
    state, now, waits = READY, 100.0, []
    for _ in range(9):
        assert due(state, now)
        state = step(state, now, failed=True)
        waits.append(state.not_before - now)
        assert not due(state, now)
        assert not due(state, state.not_before - 0.001)
        now = state.not_before
    assert waits == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert state.failures == 9


def test_success_resets():
    state = step(step(READY, 0.0, True), 1.0, True)
    assert state == BackoffState(failures=2, not_before=3.0)
    assert step(state, 3.0, failed=False) == READY
    assert due(READY, float("-1e18"))
    assert step(step(state, 3.0, False), 5.0, True) == BackoffState(1, 6.0)


def test_custom_initial_and_cap():
    assert [delay(n, 0.5, 3.0) for n in range(1, 5)] == [0.5, 1.0, 2.0, 3.0]
    assert step(READY, 10.0, True, initial_s=0.5, max_s=3.0).not_before == 10.5
    assert MAX_S == 60.0


def test_wake_makes_due_now_and_keeps_the_count():
    state = step(step(step(READY, 0.0, True), 1.0, True), 3.0, True)  # 3 failures, due at 7
    assert not due(state, 4.5)
    woken = wake(state, 4.5)
    assert woken == BackoffState(failures=3, not_before=4.5) and due(woken, 4.5)
    assert step(woken, 4.5, True) == BackoffState(4, 12.5), "a failure after a wake waits 8 s, not 1 s"
    assert wake(state, 8.0) is state, "already due: unchanged"
    assert wake(READY, 0.0) is READY
