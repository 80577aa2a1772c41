"""`python -m exporter`: the node exporter (eBPF when possible, else procfs) with /metrics and CSV."""

from __future__ import annotations

import logging
import os
import sys

# numpy's OpenBLAS starts a worker thread per CPU when it is imported; the exporter's 4 x 4
# algebra needs none, and giving root up (exporter/privilege.py) must happen while the process
# has a single thread. So one BLAS thread, set before numpy is imported (app imports it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from common import logs
from exporter import app, config


def main(argv: list[str] | None = None) -> int:
    args = config.build_parser("python -m exporter").parse_args(argv)
    try:
        cfg = config.from_env(os.environ, args)
    except config.ConfigError as exc:
        print(f"ksense: {exc}", file=sys.stderr)
        return 2
    logs.setup(cfg.log_format)
    for name in config.unknown_variables(os.environ):
        logging.getLogger("ksense.config").warning("event=unknown_variable name=%s hint='typo?'", name)
    return app.run(cfg, http=True, summary=logs.summary_wanted(os.environ))


if __name__ == "__main__":
    sys.exit(main())
