"""sched_switch prev_state classification and TASK_REPORT_MAX parsing (docs/design.md#kernel-signals rule 1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exporter.core.taskstate import (
    DEFAULT_TASK_REPORT_MAX,
    is_runnable,
    parse_task_report_max,
)
from tests.conftest import require

# The print fmt of sched_switch on 6.18 (this VM), abbreviated only in the comm/pid part.
FORMAT_6_18 = (
    'print fmt: "prev_comm=%s prev_pid=%d prev_prio=%d prev_state=%s%s ==> next_comm=%s", '
    "REC->prev_comm, REC->prev_pid, REC->prev_prio, (REC->prev_state & ((((0x00000000 | "
    "0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) "
    "+ 1) << 1) - 1)) ? __print_flags(REC->prev_state & ((((0x00000000 | 0x00000001 | "
    "0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) + 1) << 1) "
    '- 1), "|", { 0x00000001, "S" }, { 0x00000002, "D" }) : "R", REC->prev_state & (((0x00000000 '
    "| 0x00000001 | 0x00000002 | 0x00000004 | 0x00000008 | 0x00000010 | 0x00000020 | 0x00000040) "
    '+ 1) << 1) ? "+" : "", REC->next_comm\n'
)
# Older kernels (4.14-5.x) printed TASK_REPORT_MAX = TASK_REPORT + 1 without the shift.
FORMAT_OLD = (
    '... : "R", REC->prev_state & ((0x0000 | 0x0001 | 0x0002 | 0x0004 | 0x0008 | 0x0010 | 0x0020 '
    '| 0x0040) + 1) ? "+" : "", REC->next_comm'
)

PARSE_CASES = [
    ("6.18 format", FORMAT_6_18, 0x100),
    ("older format without the shift", FORMAT_OLD, 0x80),
    ("empty text", "", DEFAULT_TASK_REPORT_MAX),
    ("no plus flag", 'print fmt: "prev_state=%d", REC->prev_state', DEFAULT_TASK_REPORT_MAX),
    ("not a power of two", 'REC->prev_state & (0x3 | 0x4) ? "+" : ""', DEFAULT_TASK_REPORT_MAX),
    ("call in the expression", 'REC->prev_state & (f(1)) ? "+" : ""', DEFAULT_TASK_REPORT_MAX),
]


@pytest.mark.parametrize(("case", "text", "expected"), PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parse_task_report_max(case, text, expected):
    assert parse_task_report_max(text) == expected


def test_parse_the_running_kernel_format_when_present():
    fmt = Path("/sys/kernel/tracing/events/sched/sched_switch/format")
    require(os.access(fmt, os.R_OK), "tracefs not readable (scripts/setup.sh mounts it)")
    text = fmt.read_text()
    value = parse_task_report_max(text)
    assert value >= 0x80 and value & (value - 1) == 0


STATE_CASES = [
    # (case, prev_state, runnable)
    ("0: preempted on return to user space", 0x0, True),
    ("0x100: R+ in-kernel preemption", 0x100, True),
    ("0x1: S interruptible sleep", 0x1, False),
    ("0x2: D uninterruptible sleep", 0x2, False),
    ("0x101: S with the preempt bit", 0x101, False),
    ("0x402: D|TASK_NOLOAD-ish high bit", 0x402, False),
]


@pytest.mark.parametrize(("case", "prev_state", "runnable"), STATE_CASES, ids=[c[0] for c in STATE_CASES])
def test_classification_table(case, prev_state, runnable):
    assert is_runnable(prev_state, 0x100) is runnable


def test_prototype_rule_would_lose_r_plus():
    # The prototype's `prev_state == 0` misses exactly this case.
    assert is_runnable(0x100) and 0x100 != 0
