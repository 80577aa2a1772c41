"""Operator tools that are not part of a running component (load generators)."""
