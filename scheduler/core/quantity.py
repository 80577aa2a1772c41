"""Kubernetes resource quantities ("100m", "1.5Gi", "1e3") parsed exactly into integers.

Hand-written because the core must not import the `kubernetes` package (import-linter), and
that package only offers a float-based `parse_quantity` anyway; the scheduler needs the exact,
rounded-up integers kube-scheduler compares. Grammar (apimachinery `resource.Quantity`):

    quantity  ::= [sign] number [suffix]
    number    ::= digits | digits "." [digits] | "." digits
    suffix    ::= binarySI | decimalSI | ("e" | "E") [sign] digits
    binarySI  ::= Ki | Mi | Gi | Ti | Pi | Ei                       (2^10 … 2^60)
    decimalSI ::= n | u | m | "" | k | M | G | T | P | E             (10^-9 … 10^18)

Arithmetic is exact (`Fraction`), then rounded **up** to the canonical unit like apimachinery's
`MilliValue()` / `Value()`: CPU in millicores, memory and ephemeral-storage in bytes, pods as a
count. Negative quantities and values beyond int64 are rejected: requests and allocatable are
never negative in a valid object, and kube-scheduler compares int64s.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

INT64_MAX = 2**63 - 1
MAX_EXPONENT = 1000  # |e| beyond this cannot land inside int64 (or is ≈0): refuse it cheaply.
MAX_DIGITS = 100  # int64 has 19 digits; a longer mantissa is garbage, not a request.

_GRAMMAR = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(.*)", re.DOTALL)
_EXPONENT = re.compile(r"[eE]([+-]?[0-9]+)")
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}

#: Canonical integer unit per resource name: value × scale, rounded up.
MILLI_RESOURCES = frozenset({"cpu"})


class QuantityError(ValueError):
    """A quantity that does not parse (or is negative / out of range), naming value and field."""

    def __init__(self, value: object, field: str, why: str) -> None:
        self.value = value
        self.field = field
        self.why = why
        super().__init__(f"{field}: invalid quantity {value!r}: {why}")


@lru_cache(maxsize=4096)
def _parse_text(text: str) -> Fraction | str:
    """Exact value of one quantity string, or the reason it is malformed (cached: a cluster
    repeats the same few dozen strings, "100m", "128Mi", "110", millions of times)."""
    match = _GRAMMAR.fullmatch(text)
    if match is None or text == "":
        return "empty"
    sign, whole, frac, suffix = match.groups()
    frac = frac or ""
    if not whole and not frac:
        return "no digits"
    if len(whole) + len(frac) > MAX_DIGITS:
        return "too many digits"
    mantissa = Fraction(int(whole + frac or "0"), 10 ** len(frac))
    if suffix in _BINARY:
        value = mantissa * (1 << _BINARY[suffix])
    else:
        if suffix in _DECIMAL:
            exponent = _DECIMAL[suffix]
        else:
            exp_match = _EXPONENT.fullmatch(suffix)
            if exp_match is None:
                return f"unknown suffix {suffix!r}"
            exponent = int(exp_match.group(1))
            if abs(exponent) > MAX_EXPONENT:
                return "exponent out of range"
        value = mantissa * (Fraction(10) ** exponent)
    if sign == "-" and value != 0:
        return "negative"
    return value


def parse_quantity(value: object, field: str = "quantity") -> Fraction:
    """Exact value of a quantity (a string as the API sends it; an int is taken as is).

    Raises `QuantityError` for "", "abc", "1.2.3", "5q", " 1", negatives, bools, floats.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise QuantityError(value, field, "negative")
        return Fraction(value)
    if not isinstance(value, str):
        raise QuantityError(value, field, f"expected a string, got {type(value).__name__}")
    parsed = _parse_text(value)
    if isinstance(parsed, str):
        raise QuantityError(value, field, parsed)
    return parsed


def _ceil(exact: Fraction, value: object, field: str) -> int:
    # -(-a // b) is ceil for Fractions without floats.
    result = -(-exact.numerator // exact.denominator)
    if result > INT64_MAX:
        raise QuantityError(value, field, "out of range (> int64)")
    return result


def milli_value(value: object, field: str = "quantity") -> int:
    """⌈q × 1000⌉ — apimachinery `MilliValue()`: "0.5" → 500, "100m" → 100, "1u" → 1."""
    return _ceil(parse_quantity(value, field) * 1000, value, field)


def int_value(value: object, field: str = "quantity") -> int:
    """⌈q⌉ — apimachinery `Value()`: "1Ki" → 1024, "1.5" → 2, "500m" → 1."""
    return _ceil(parse_quantity(value, field), value, field)


def canonical(resource: str, value: object, field: str | None = None) -> int:
    """Integer in the scheduler's unit for `resource`: millicores for cpu, else `int_value`
    (bytes for memory and ephemeral-storage, a count for pods)."""
    where = field or resource
    if resource in MILLI_RESOURCES:
        return milli_value(value, where)
    return int_value(value, where)
