"""ksense scheduler: binds pending pods only to nodes the fuzzy controller allows."""
