"""Stack health: is ksense itself working? Scrapes, eBPF programs, collector cost, BPF maps,
CSV sinks, the scorer's queries, the webhook's latency and certificate, the scheduler's leader.
"""

from __future__ import annotations

from common import names as n
from common.csvfile import REASON_QUEUE_FULL, REASONS
from dashboards import config
from dashboards import queries as q
from dashboards.panels import (
    BOOL,
    BYTES,
    COUNT,
    PER_SECOND,
    RATIO,
    SECONDS,
    Query,
    dashboard,
    heatmap,
    stat,
    steps,
    timeseries,
)

UID = "ksense-stack-health"
TITLE = "ksense / Stack health"
FILE = "ksense-stack-health.json"

_DAY_S = 86400

#: Every reason label of ksense_csv_write_errors_total, named in the panel description.
CSV_ERROR_REASONS = (*REASONS, REASON_QUEUE_FULL)


def build():
    scrapes = [
        (stat("Targets up", "Scrape targets answering, per job (exporter per node, scorer replicas, "
              "scheduler replicas).", [Query(q.targets_up_by_job(), "{{job}} up"),
                                       Query(q.targets_by_job(), "{{job}} targets")], COUNT,
              text_mode="value_and_name"), 8, 6),
        (timeseries("Scrape success", "1 when the last scrape of a target succeeded, 0 when it failed.",
                    [Query(q.scrape_up(), "{{job}} {{instance}}")], BOOL, value_min=0, value_max=1,
                    interpolation="stepAfter"), 16, 6),
        (timeseries("Exporter source", "Which source feeds each node's exporter (ebpf, procfs fallback, replay).",
                    [Query(q.node_max(n.SOURCE_INFO, n.LABEL_SOURCE), "{{node}} {{source}}")], BOOL,
                    value_min=0, value_max=1), 12, 6),
        (timeseries("PSI available", "1 when /proc/pressure/<resource> is readable on the node.",
                    [Query(q.node_max(n.PRESSURE_AVAILABLE, n.LABEL_RESOURCE), "{{node}} {{resource}}")], BOOL,
                    value_min=0, value_max=1), 12, 6),
    ]
    bpf = [
        (timeseries("BPF programs attached", "1 per attached tracepoint program; 0 means that tracepoint is "
                    "missing on this kernel and its signal is empty.",
                    [Query(q.node_max(n.BPF_PROGRAM_ATTACHED, n.LABEL_TRACEPOINT), "{{node}} {{tracepoint}}")], BOOL,
                    value_min=0, value_max=1, interpolation="stepAfter"), 12, 7),
        (timeseries("BPF program CPU", "Kernel time spent in each eBPF program per second of wall time (needs "
                    "kernel.bpf_stats_enabled=1).", [Query(q.node_rate(n.BPF_PROGRAM_RUN_SECONDS.name,
                                                                        n.LABEL_PROGRAM), "{{node}} {{program}}")],
                    RATIO, value_min=0), 12, 7),
        (timeseries("BPF run time per invocation", "Mean kernel time per program run (needs "
                    "kernel.bpf_stats_enabled=1).", [Query(q.bpf_run_time_per_run(), "{{node}} {{program}}")],
                    SECONDS, value_min=0), 12, 7),
        (timeseries("BPF map fill", "Live entries / capacity of each timestamp map.",
                    [Query(q.bpf_map_fill(), "{{node}} {{map}}")], RATIO, value_min=0, value_max=1,
                    thresholds=steps(("green", None), ("orange", 0.7), ("red", 0.9)), thresholds_style="line"),
         12, 7),
        (timeseries("BPF map update failures", "Timestamp inserts per second that found their slot taken.",
                    [Query(q.node_rate(n.BPF_MAP_UPDATE_FAILURES.name, n.LABEL_MAP), "{{node}} {{map}}")],
                    PER_SECOND, value_min=0), 24, 6),
    ]
    collector = [
        (timeseries("Collector CPU", "CPU seconds per second used by each node's exporter process.",
                    [Query(q.collector_cpu(), "{{node}}")], RATIO, value_min=0), 8, 7),
        (timeseries("Collector RSS", "Resident memory of each node's exporter process.",
                    [Query(q.collector_rss(), "{{node}}")], BYTES, value_min=0), 8, 7),
        (timeseries("Sample duration p99", "Time to read the source and derive one interval, p99 per node.",
                    [Query(q.sample_duration_quantile(0.99), "{{node}}")], SECONDS, value_min=0), 8, 7),
        (timeseries("CSV rows written", "kernel_metrics.csv rows per second per node.",
                    [Query(q.node_rate(n.CSV_ROWS_WRITTEN.name, n.LABEL_FILE), "{{node}} {{file}}")], PER_SECOND,
                    value_min=0), 12, 6),
        (timeseries("CSV write errors", f"CSV write errors per second by reason ({', '.join(CSV_ERROR_REASONS)}); "
                    "rows are lost, /metrics keeps serving.",
                    [Query(q.node_rate(n.CSV_WRITE_ERRORS.name, n.LABEL_FILE, n.LABEL_REASON),
                           "{{node}} {{file}} {{reason}}")], PER_SECOND, value_min=0), 12, 6),
    ]
    scorer = [
        (timeseries("Scorer query errors", "Failed or rejected input reads per second, per scorer replica, source "
                    "(prometheus / local) and reason (unreachable, timeout, http_5xx, query_error, empty...).",
                    [Query(q.query_errors(), "{{instance}} {{source}} {{reason}}")], PER_SECOND, value_min=0), 12, 7),
        (timeseries("Scorer last good evaluation age", f"Seconds since each replica's last good evaluation; "
                    f"over {config.SCORER_STALE_S} s the scheduler ignores its decisions.",
                    [Query(q.scorer_last_success_age(), "{{instance}}")], SECONDS, value_min=0,
                    thresholds=steps(("green", None), ("red", config.SCORER_STALE_S)), thresholds_style="line"),
         12, 7),
        (heatmap("Webhook latency", "Time to answer /validate, all replicas (answers per second per bucket).",
                 q.heatmap_of(n.ADMISSION_REVIEW_DURATION), SECONDS), 12, 7),
        (timeseries("Webhook latency p50 / p99", "Time to answer /validate per replica.",
                    [Query(q.quantile_of(n.ADMISSION_REVIEW_DURATION, 0.5, "instance"), "{{instance}} p50"),
                     Query(q.quantile_of(n.ADMISSION_REVIEW_DURATION, 0.99, "instance"), "{{instance}} p99")],
                    SECONDS, value_min=0), 12, 7),
        (stat("Webhook certificate expires in", f"Time left on the served certificate per replica (alert below "
              f"{config.CERT_EXPIRY_DAYS} days). No data = plain HTTP.",
              [Query(q.cert_time_left(), "{{instance}}")], SECONDS,
              thresholds=steps(("red", None), ("orange", config.CERT_EXPIRY_DAYS * _DAY_S),
                               ("green", 2 * config.CERT_EXPIRY_DAYS * _DAY_S))), 8, 6),
        (heatmap("Scorer evaluation duration", "One evaluation tick for all nodes (ticks per second per bucket).",
                 q.heatmap_of(n.SCORER_EVALUATION_DURATION), SECONDS), 16, 6),
    ]
    components = [
        (timeseries("Scorer and scheduler CPU", "CPU seconds per second per process.",
                    [Query(q.component_cpu(config.JOB_SCORER), "scorer {{instance}}"),
                     Query(q.component_cpu(config.JOB_SCHEDULER), "scheduler {{instance}}")], RATIO, value_min=0),
         8, 6),
        (timeseries("Scorer and scheduler RSS", "Resident memory per process.",
                    [Query(q.component_rss(config.JOB_SCORER), "scorer {{instance}}"),
                     Query(q.component_rss(config.JOB_SCHEDULER), "scheduler {{instance}}")], BYTES, value_min=0),
         8, 6),
        (timeseries("Scheduler leader", "1 on the replica holding the fuzzy-scheduler Lease.",
                    [Query(q.scheduler_leader(), "{{instance}}")], BOOL, value_min=0, value_max=1,
                    interpolation="stepAfter"), 8, 6),
    ]
    return dashboard(
        UID,
        TITLE,
        "ksense's own health: scrapes, eBPF programs, collector cost, CSV sinks, scorer, webhook, scheduler.",
        [
            ("Scrapes", scrapes),
            ("eBPF", bpf),
            ("Collector", collector),
            ("Scorer and webhook", scorer),
            ("Processes", components),
        ],
    )
