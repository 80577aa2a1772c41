"""Pure cores of the scorer: membership functions, rule base, inference, decisions, wire formats."""
