"""Pure cores of the exporter: formulas and parsers with no I/O, clock or threads."""
