"""Benchmarks: timing goals live here, printed as figures and ratios (tests assert behaviour)."""
