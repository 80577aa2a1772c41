"""Run statistics of one BPF program from its /proc/<pid>/fdinfo/<fd> text, pure.

The kernel accounts `run_time_ns` and `run_cnt` per program while
`kernel.bpf_stats_enabled=1`; reading them costs no bpf() syscall.
"""

from __future__ import annotations


def parse_fdinfo(text: str) -> tuple[int, int] | None:
    """(run_time_ns, run_cnt) from a BPF program fd's fdinfo, or None when either line is
    missing or malformed (older kernels, not a program fd)."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name in ("run_time_ns", "run_cnt"):
            try:
                fields[name] = int(value.strip())
            except ValueError:
                return None
    if len(fields) != 2:
        return None
    return fields["run_time_ns"], fields["run_cnt"]
