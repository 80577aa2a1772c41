"""End to end on one machine: kernel → Prometheus → scorer → scheduler → bound (or Pending) pods.

stack.py starts every part (real Prometheus, eBPF and replaying exporters, two scorers, the test
API server with the admission webhook, two schedulers); scenario.py plays and asserts the steps;
timeline.py records what happened and writes the timeline; `python -m tests.e2e` is `make e2e`.
"""
