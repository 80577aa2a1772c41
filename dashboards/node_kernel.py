"""Node kernel signals: what the exporter measures on each node (docs/design.md: kernel signals, one interval).

Run-queue latency (heatmap, p50/p95/p99, max, events and drops), D-state episodes and NET_RX
softirq time (heatmaps, quantiles, mean, rate), CPU utilisation and PSI per resource, and the
pods on the node: victims (run-queue wait), aggressors (CPU, D-state) and per-pod PSI.
The histogram panels read the recorded per-node bucket rates and quantiles (rules.py).
"""

from __future__ import annotations

from common import names as n
from dashboards import config
from dashboards import queries as q
from dashboards.panels import (
    PER_SECOND,
    RATIO,
    SECONDS,
    Query,
    dashboard,
    heatmap,
    steps,
    timeseries,
)

UID = "ksense-node-kernel"
TITLE = "ksense / Node kernel signals"
FILE = "ksense-node-kernel.json"


def _quantiles(h: q.HistogramRecordings) -> list[Query]:
    return [Query(q.per_node(r), f"{{{{node}}}} {r.record.rsplit(':', 1)[1].split('_')[0]}") for r in h.quantiles]


def _histogram_row(h: q.HistogramRecordings, what: str, events: str) -> list:
    return [
        (heatmap(f"{what}: distribution", f"{what} per event, bucket rates of the selected nodes (events/s "
                 "per bucket; the exporter's buckets are powers of four of a µs: 1 µs, 4 µs, 16 µs … 16.8 s).",
                 q.heatmap_buckets(h), SECONDS), 12, 8),
        (timeseries(f"{what}: p50 / p95 / p99", f"{what} quantiles per node from the histogram over "
                    "the last 2 minutes (recorded).", _quantiles(h), SECONDS), 12, 8),
        (timeseries(f"{what}: mean", f"Mean per event ({what}), per node over the last 2 minutes "
                    "(empty while no event happened).", [Query(q.per_node(h.mean), "{{node}}")], SECONDS), 12, 6),
        (timeseries(f"{events} per second", f"{events} per second per node.",
                    [Query(q.node_rate(q.count(h.family)), "{{node}}")], PER_SECOND), 12, 6),
    ]


def build():
    runq = _histogram_row(q.RUNQUEUE, "Run-queue latency", "Scheduling events")
    runq += [
        (timeseries("Run-queue latency: max per interval", "The longest run-queue wait of each 1 s interval "
                    "(upper bound of the highest non-empty bucket; absent for the procfs source).",
                    [Query(q.node_max(n.RUNQUEUE_LATENCY_MAX), "{{node}}")], SECONDS), 12, 6),
        (timeseries("Run-queue samples dropped per second", "Wake-ups that could not be timed (timestamp slot "
                    "held by another task, clock went backwards). Sustained drops mean the map is too small.",
                    [Query(q.node_rate(n.RUNQUEUE_LATENCY_DROPPED.name), "{{node}}")], PER_SECOND), 12, 6),
    ]
    cpu_psi = [
        (timeseries("CPU utilisation", "CPU busy share of each node over the last interval (scorer input).",
                    [Query(q.node_max(n.CPU_UTILIZATION), "{{node}}")], RATIO, value_min=0, value_max=1,
                    thresholds=steps(("green", None), ("orange", 0.8), ("red", 0.95)),
                    thresholds_style="line"), 12, 8),
        (timeseries("PSI: worst resource (scorer input)", "The node's PSI: the worst resource's `some` share of "
                    "the last interval.", [Query(q.node_max(n.PRESSURE_WORST), "{{node}}")], RATIO, value_min=0),
         12, 8),
        (timeseries("PSI per resource", "Pressure-stall share per resource (cpu, memory, io) and kind (some: at "
                    "least one task stalled; full: all non-idle tasks stalled). Replay sources keep only the worst.",
                    [Query(q.node_max(n.PRESSURE, n.LABEL_RESOURCE, n.LABEL_KIND),
                           "{{node}} {{resource}} {{kind}}")], RATIO, value_min=0), 24, 8),
    ]
    pod = "{{node}} {{pod_namespace}}/{{pod_name}} {{pod_uid}}"
    pods = [
        (timeseries("Victims: run-queue wait per pod", f"Seconds per second the pod's tasks waited for a CPU "
                    f"(wakeup or preemption to switch-in): the {config.POD_TOP_K} most waiting pods of each node "
                    "(recorded).", [Query(q.per_node(q.POD_WAIT), pod)], SECONDS, value_min=0), 12, 8),
        (timeseries("Aggressors: CPU per pod", f"CPU seconds per second of the pod's cgroup: the "
                    f"{config.POD_TOP_K} busiest pods of each node (recorded).",
                    [Query(q.per_node(q.POD_CPU), pod)], SECONDS, value_min=0), 12, 8),
        (timeseries("Aggressors: D-state per pod", f"Seconds per second the pod's tasks spent in uninterruptible "
                    f"sleep (ended episodes): the {config.POD_TOP_K} pods of each node with the most (recorded).",
                    [Query(q.per_node(q.POD_DSTATE), pod)], SECONDS, value_min=0), 12, 8),
        (timeseries("PSI per pod (some)", f"Pressure-stall `some` share of the pod's cgroup per resource: the "
                    f"{config.POD_TOP_K} most stalled pods of each node and resource.",
                    [Query(q.pod_pressure(), pod + " {{resource}}")], RATIO, value_min=0), 12, 8),
    ]
    return dashboard(
        UID,
        TITLE,
        "Kernel friction signals per node: run-queue latency, D-state, NET_RX softirq, CPU and PSI; the pods "
        "waiting (victims) and causing it (aggressors).",
        [
            ("Run-queue latency", runq),
            ("D-state (uninterruptible sleep)", _histogram_row(q.DSTATE, "D-state episode", "D-state episodes")),
            ("NET_RX softirq", _histogram_row(q.SOFTIRQ, "NET_RX handler time", "NET_RX invocations")),
            ("CPU and pressure", cpu_psi),
            ("Pods on this node", pods),
        ],
    )
