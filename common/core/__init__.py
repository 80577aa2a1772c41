"""The pure part of `common`: the kernel_metrics.csv row and histogram values (model.py), the
row's text formats (csvrow.py) and the duration histogram (durations.py). No I/O, clock or
threads, so the components' pure cores may use them (import-linter checks it)."""
