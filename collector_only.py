"""Collector-only mode: the exporter's collector with the CSV sink alone — no HTTP, no
Kubernetes, no network. One machine, one CSV (KSENSE_METRICS_CSV).

Before loading eBPF it checks root, bcc and tracefs and, when one is missing, prints the exact
fix and exits 2. `--source procfs` or `--source replay:FILE` run without eBPF.
"""

from __future__ import annotations

import logging
import os
import sys

from common import logs
from exporter import app, config, preflight


def main(argv: list[str] | None = None) -> int:
    parser = config.build_parser("collector_only.py", http=False)
    parser.description = (
        "Write kernel_metrics.csv on this machine (eBPF run-queue latency, D-state, NET_RX softirq, "
        "CPU, PSI, baseline -> Friction/Energy). No HTTP server. Needs root for eBPF."
    )
    args = parser.parse_args(argv)
    try:
        cfg = config.from_env(os.environ, args)
    except config.ConfigError as exc:
        print(f"collector_only: {exc}", file=sys.stderr)
        return 2
    if cfg.csv_path is None:
        print("collector_only: --no-csv leaves nothing to do: the CSV is this mode's only output", file=sys.stderr)
        return 2
    if cfg.source in ("auto", "ebpf"):
        problems = preflight.check()
        if problems:
            print(preflight.report(problems), file=sys.stderr)
            return 2
    logs.setup(cfg.log_format)
    for name in config.unknown_variables(os.environ):
        logging.getLogger("ksense.config").warning("event=unknown_variable name=%s hint='typo?'", name)
    return app.run(cfg, http=False, summary=logs.summary_wanted(os.environ), strict_ebpf=True)


if __name__ == "__main__":
    sys.exit(main())
