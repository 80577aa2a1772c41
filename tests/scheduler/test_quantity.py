"""Kubernetes quantity parsing (scheduler.core.quantity): exact values, rounding up, rejects."""

from __future__ import annotations

from fractions import Fraction

import pytest

from scheduler.core.quantity import QuantityError, canonical, int_value, milli_value, parse_quantity

GI = 2**30


@pytest.mark.parametrize(
    ("name", "text", "exact"),
    [
        ("plain integer", "1", Fraction(1)),
        ("zero", "0", Fraction(0)),
        ("negative zero is zero", "-0", Fraction(0)),
        ("explicit plus", "+2", Fraction(2)),
        ("decimal fraction", "0.5", Fraction(1, 2)),
        ("leading dot", ".5", Fraction(1, 2)),
        ("trailing dot", "5.", Fraction(5)),
        ("milli", "100m", Fraction(1, 10)),
        ("fractional milli", "0.1m", Fraction(1, 10000)),
        ("micro", "1u", Fraction(1, 10**6)),
        ("nano", "250000000n", Fraction(1, 4)),
        ("kilo is lower-case k", "2k", Fraction(2000)),
        ("mega", "3M", Fraction(3 * 10**6)),
        ("giga", "1G", Fraction(10**9)),
        ("tera", "1T", Fraction(10**12)),
        ("peta", "1P", Fraction(10**15)),
        ("exa (bare E)", "1E", Fraction(10**18)),
        ("kibi", "1Ki", Fraction(1024)),
        ("mebi", "500Mi", Fraction(500 * 2**20)),
        ("fractional gibi", "1.5Gi", Fraction(3 * GI, 2)),
        ("tebi", "1Ti", Fraction(2**40)),
        ("pebi", "1Pi", Fraction(2**50)),
        ("exbi", "1Ei", Fraction(2**60)),
        ("exponent e", "1e3", Fraction(1000)),
        ("exponent E", "1E3", Fraction(1000)),
        ("exponent with plus", "2e+2", Fraction(200)),
        ("negative exponent", "1.5e-3", Fraction(3, 2000)),
        ("int from a literal dict", 110, Fraction(110)),
    ],
)
def test_parse_exact(name, text, exact):
    assert parse_quantity(text) == exact, name


@pytest.mark.parametrize(
    ("name", "resource", "text", "expected"),
    [
        ("cpu millicores", "cpu", "100m", 100),
        ("cpu half core", "cpu", "0.5", 500),
        ("cpu one core", "cpu", "1", 1000),
        ("cpu 1e3 cores", "cpu", "1e3", 1_000_000),
        ("cpu sub-milli rounds up", "cpu", "0.1m", 1),
        ("cpu nano rounds up", "cpu", "1n", 1),
        ("cpu 1.0001 rounds up", "cpu", "1.0001", 1001),
        ("memory Gi", "memory", "1.5Gi", 1_610_612_736),
        ("memory Mi", "memory", "500Mi", 524_288_000),
        ("memory k", "memory", "2k", 2000),
        ("memory millibytes round up", "memory", "500m", 1),
        ("memory 1.5 bytes rounds up", "memory", "1.5", 2),
        ("ephemeral-storage G", "ephemeral-storage", "10G", 10**10),
        ("pods count", "pods", "110", 110),
        ("pods exponent", "pods", "1e2", 100),
        ("zero", "memory", "0", 0),
    ],
)
def test_canonical_units(name, resource, text, expected):
    assert canonical(resource, text) == expected, name


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("letters", "abc", "no digits"),
        ("two dots", "1.2.3", "unknown suffix"),
        ("empty", "", "empty"),
        ("unknown suffix", "5q", "unknown suffix"),
        ("lower-case ki", "1ki", "unknown suffix"),
        ("bare e", "1e", "unknown suffix"),
        ("fractional exponent", "1e3.5", "unknown suffix"),
        ("leading space", " 1", "no digits"),
        ("trailing space", "1 ", "unknown suffix"),
        ("underscore", "1_000", "unknown suffix"),
        ("non-ASCII digit", "٣", "no digits"),
        ("negative", "-1", "negative"),
        ("negative int", -1, "negative"),
        ("huge exponent", "1e99999", "exponent out of range"),
        ("too many digits", "1" * 200, "too many digits"),
        ("float", 1.5, "expected a string"),
        ("bool", True, "expected a string"),
        ("None", None, "expected a string"),
    ],
)
def test_rejects(name, value, why):
    with pytest.raises(QuantityError) as err:
        milli_value(value, "spec.containers[app].resources.requests.cpu")
    assert why in str(err.value), name
    assert err.value.field == "spec.containers[app].resources.requests.cpu"
    assert err.value.value == value
    assert isinstance(err.value, ValueError)


def test_beyond_int64_is_rejected_after_scaling():
    assert int_value("1E") == 10**18
    with pytest.raises(QuantityError, match="int64"):
        milli_value("1E")  # 10^21 millicores
    with pytest.raises(QuantityError, match="int64"):
        int_value("16Ei")


def test_error_message_names_value_and_field():
    with pytest.raises(QuantityError) as err:
        canonical("memory", "12x", "spec.overhead.memory")
    assert str(err.value) == "spec.overhead.memory: invalid quantity '12x': unknown suffix 'x'"
