"""`make bench`: every benchmark in turn, each in its own process so one failure does not hide
the others. Each prints its figures with ratios against a baseline measured in the same run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time

BENCHES = (
    ("bench.bpf_cost", "kernel cost per event (BPF run time per program)"),
    ("bench.pipe_slowdown", "workload slowdown: pinned pipe ping-pong with/without the exporter"),
    ("bench.pod_cost", "per-pod attribution: pipe ping-pong on/off, ns/run, RSS with 200 pods"),
    ("bench.exporter_cost", "exporter CPU, RSS and start to first CSV row"),
    ("bench.scrape_latency", "/metrics scrape latency and payload"),
    ("bench.scorer_tick", "one scorer evaluation for 5,000 nodes vs a scalar implementation"),
    ("bench.scorer_replay", "scorer.replay of the 4,569-row real recording"),
    ("bench.webhook", "/validate and /score over TLS with keep-alive"),
    ("bench.scorer_api", "/validate over TLS keep-alive: the Flask app vs a plain WSGI dispatch of its handlers"),
    ("bench.scorer_freshness", "input step change to decision change through Prometheus"),
    ("bench.scheduler_decide", "filters + choice for one pod over 5,000 nodes vs per-node loops"),
    ("bench.scheduler_binds", "bind throughput and API requests per pod vs raw binds"),
    ("bench.scheduler_binds_db", "binds/s and per-pod decision with scores from a real Prometheus vs all-allow"),
    ("bench.lab_quality", "lab quality on one recording and lab tune on the training set"),
    ("bench.fleet", "1,000 nodes through Prometheus and VictoriaMetrics: scorer tick (shipped vs one request at "
                    "a time vs per-series queries), step to decision, scheduler score fetch (~2 min; "
                    "`python -m bench.fleet --help` for 5,000-20,000 nodes)"),
)
#: Arguments of the benchmarks whose defaults measure more than `make bench` has time for.
ARGS = {"bench.fleet": ("--sizes", "1000", "--ticks", "8")}


def main(argv: list[str]) -> int:
    wanted = set(argv)
    failed = []
    for module, what in BENCHES:
        short = module.split(".", 1)[1]
        if wanted and short not in wanted:
            continue
        if importlib.util.find_spec(module) is None:
            continue
        print(f"\n=== {short}: {what}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call([sys.executable, "-m", module, *ARGS.get(module, ())])
        print(f"=== {short}: exit {rc} in {time.monotonic() - t0:.0f} s", flush=True)
        if rc != 0:
            failed.append(short)
    if failed:
        print(f"\nbenchmarks that failed to run: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
