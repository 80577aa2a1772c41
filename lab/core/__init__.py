"""Pure parts of the lab: quality figures and rule learning (no I/O, no clock, no processes)."""
