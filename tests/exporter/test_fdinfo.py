"""BPF program run statistics parsed from fdinfo text."""

from __future__ import annotations

import pytest

from exporter.core.fdinfo import parse_fdinfo

PROG_FDINFO = (
    "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1039\nprog_type:\t5\nprog_jited:\t1\n"
    "prog_tag:\tef4291fb72dcc1a3\nmemlock:\t4096\nprog_id:\t99\nrun_time_ns:\t123456\n"
    "run_cnt:\t789\nrecursion_misses:\t0\nverified_insns:\t35\n"
)

CASES = [
    ("6.18 program fd", PROG_FDINFO, (123456, 789)),
    ("stats disabled reads zeros", "run_time_ns:\t0\nrun_cnt:\t0\n", (0, 0)),
    ("no run lines (old kernel)", "pos:\t0\nprog_type:\t5\n", None),
    ("only one line", "run_time_ns:\t5\n", None),
    ("garbage value", "run_time_ns:\tx\nrun_cnt:\t1\n", None),
    ("empty", "", None),
]


@pytest.mark.parametrize(("case", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_parse_fdinfo(case, text, expected):
    assert parse_fdinfo(text) == expected
