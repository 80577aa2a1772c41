"""How sched_switch's `prev_state` says whether the task left the CPU runnable or asleep, pure.

The prototype tested `prev_state == 0` and so missed every in-kernel preemption, which the
tracepoint reports as TASK_REPORT_MAX alone (printed `R+`). TASK_REPORT_MAX differs between
kernel versions, so it is read from the running kernel's sched_switch format (the shell reads
the file, this module parses it); the same rules are compiled into the BPF program.
"""

from __future__ import annotations

import ast
import re

#: TASK_REPORT_MAX on current kernels ((TASK_REPORT + 1) << 1 with TASK_REPORT = 0x7f).
DEFAULT_TASK_REPORT_MAX = 0x100

# The print fmt ends its prev_state part with `REC->prev_state & (<TASK_REPORT_MAX>) ? "+" : ""`;
# the expression is built from hex literals, `|`, `+`, `<<` and parentheses only.
_PLUS_FLAG = re.compile(r"REC->prev_state\s*&\s*(\([0-9a-fA-FxX|+<\s()]+\))\s*\?\s*\"\+\"")
_OPS = {ast.BitOr: int.__or__, ast.Add: int.__add__, ast.LShift: int.__lshift__}


def _eval_int_expr(node: ast.AST) -> int | None:
    """Evaluate an integer expression of literals joined by |, + and << only; None otherwise."""
    if isinstance(node, ast.Expression):
        return _eval_int_expr(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _eval_int_expr(node.left), _eval_int_expr(node.right)
        if left is None or right is None or (isinstance(node.op, ast.LShift) and not 0 <= right < 64):
            return None
        return _OPS[type(node.op)](left, right)
    return None


def parse_task_report_max(format_text: str) -> int:
    """TASK_REPORT_MAX from /sys/kernel/tracing/events/sched/sched_switch/format.

    The value is the mask the print fmt tests to print `+` after the state letter, e.g.
    `(((0x00000000 | 0x00000001 | ... | 0x00000040) + 1) << 1)` = 0x100. Returns
    DEFAULT_TASK_REPORT_MAX when the format has no such expression or it is not a single-bit
    power of two (anything else would make the runnable mask below meaningless).
    """
    match = _PLUS_FLAG.search(format_text)
    if match is None:
        return DEFAULT_TASK_REPORT_MAX
    try:
        value = _eval_int_expr(ast.parse(match.group(1), mode="eval"))
    except SyntaxError:
        return DEFAULT_TASK_REPORT_MAX
    if value is None or value <= 1 or value & (value - 1):
        return DEFAULT_TASK_REPORT_MAX
    return value


def is_runnable(prev_state: int, report_max: int = DEFAULT_TASK_REPORT_MAX) -> bool:
    """True when the task left the CPU still runnable (it goes back on the run queue).

    runnable ⇔ (prev_state & (TASK_REPORT_MAX − 1)) == 0: no state bit is set, which covers
    0 (preempted on the way back to user space, or yield) and TASK_REPORT_MAX alone (`R+`,
    preempted inside the kernel).
    """
    return (prev_state & (report_max - 1)) == 0
