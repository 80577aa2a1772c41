"""Pure cores of the scheduler: filters, quantities, choice, backoff, messages."""
