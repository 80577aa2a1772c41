"""Every metric, label and CSV column name of the exporter: the cross-component contract.

docs/metrics.md#exporter-metrics, docs/metrics.md#kernel_metricscsv in code. Other components (scorer,
dashboards, rules, tests) import
these constants; nobody retypes a metric name.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Family(NamedTuple):
    """One metric family: its exposed name (counters end in `_total`, histograms are the base
    name) and its HELP text."""

    name: str
    help: str


# --- labels ---------------------------------------------------------------------------------
LABEL_NODE = "node"
LABEL_RESOURCE = "resource"
LABEL_KIND = "kind"
LABEL_SOURCE = "source"
LABEL_TRACEPOINT = "tracepoint"
LABEL_PROGRAM = "program"
LABEL_MAP = "map"
LABEL_FILE = "file"
LABEL_REASON = "reason"

# --- exporter families (docs/metrics.md#exporter-metrics) -------------------------------------------------------
RUNQUEUE_LATENCY = Family(
    "ksense_runqueue_latency_seconds",
    "Run-queue latency per scheduling event (wakeup, new task or preemption to switch-in).",
)
RUNQUEUE_LATENCY_MAX = Family(
    "ksense_runqueue_latency_max_seconds",
    "Max run-queue latency in the last interval (upper bound of the highest non-empty "
    "log-linear bucket, within 1/16 of the true max). Absent for the procfs source.",
)
RUNQUEUE_LATENCY_P99 = Family(
    "ksense_runqueue_latency_p99_seconds",
    "99th percentile of run-queue latency in the last interval, from the exporter's log-linear "
    "histogram (the CSV's SchedLat_P99_ms / 1000). Absent for the procfs source.",
)
RUNQUEUE_LATENCY_DROPPED = Family(
    "ksense_runqueue_latency_dropped_total",
    "Run-queue samples that could not be timed (timestamp slot taken, clock went backwards).",
)
DSTATE_DURATION = Family(
    "ksense_dstate_duration_seconds",
    "Uninterruptible-sleep (D-state) episodes, switch-out to next wakeup.",
)
SOFTIRQ_NET_RX_DURATION = Family(
    "ksense_softirq_net_rx_duration_seconds",
    "NET_RX softirq handler time per invocation.",
)
CPU_UTILIZATION = Family(
    "ksense_cpu_utilization_ratio", "CPU utilisation over the last interval (CPUUtil / 100)."
)
PRESSURE = Family(
    "ksense_pressure_ratio",
    "PSI share of the last interval per resource and kind (some/full), 0-1.",
)
PRESSURE_WORST = Family(
    "ksense_pressure_worst_ratio",
    "The node's PSI: the worst resource's `some` share over the last interval, 0-1 (the CSV's PSI / 100). "
    "Also exported by the replay source, whose recordings keep only this value.",
)
PRESSURE_AVAILABLE = Family(
    "ksense_pressure_available",
    "1 when /proc/pressure/<resource> is readable, 0 when PSI is disabled or missing.",
)
BASELINE_FROZEN = Family(
    "ksense_baseline_frozen", "1 when the baseline is frozen, 0 while calibrating."
)
BASELINE_SAMPLES = Family("ksense_baseline_samples", "Accepted baseline samples.")
BASELINE_WARMUP_REMAINING = Family(
    "ksense_baseline_warmup_remaining_seconds", "Warm-up time left; 0 once warm-up is over."
)
FRICTION = Family("ksense_friction", "Friction F: regularised Mahalanobis distance to the baseline.")
FRICTION_DIRECTION = Family(
    "ksense_friction_direction", "Friction direction: +1 above the calibrated mean, -1 below, 0 equal."
)
FRICTION_RATE = Family("ksense_friction_rate", "dF/dt per second.")
ENERGY = Family("ksense_energy", "Energy: adaptive-window volatility of Friction.")
ENERGY_WINDOW = Family("ksense_energy_window_samples", "Energy window W (samples).")
ENERGY_VOLATILITY = Family("ksense_energy_volatility", "Energy volatility EWMA (Energy_Vol).")
ENERGY_K_FACTOR = Family("ksense_energy_k_factor", "Energy k factor (Energy_kFactor).")
SOURCE_INFO = Family("ksense_exporter_source_info", "Which source feeds this exporter (value 1).")
BPF_PROGRAM_ATTACHED = Family(
    "ksense_bpf_program_attached", "1 when the eBPF program on this tracepoint is attached."
)
BPF_PROGRAM_RUN_SECONDS = Family(
    "ksense_bpf_program_run_seconds_total",
    "Kernel time spent in the eBPF program (needs kernel.bpf_stats_enabled=1).",
)
BPF_PROGRAM_RUNS = Family(
    "ksense_bpf_program_runs_total", "eBPF program invocations (needs kernel.bpf_stats_enabled=1)."
)
BPF_MAP_ENTRIES = Family("ksense_bpf_map_entries", "Live entries in the timestamp map.")
BPF_MAP_CAPACITY = Family("ksense_bpf_map_capacity", "Capacity of the timestamp map.")
BPF_MAP_UPDATE_FAILURES = Family(
    "ksense_bpf_map_update_failures_total",
    "Timestamp inserts that found their slot held by another live task.",
)
SAMPLE_DURATION = Family(
    "ksense_sample_duration_seconds", "Time to read the source and derive one interval."
)
CSV_ROWS_WRITTEN = Family("ksense_csv_rows_written_total", "CSV rows written.")
CSV_WRITE_ERRORS = Family("ksense_csv_write_errors_total", "CSV write errors by reason.")

#: Every family the exporter serves (docs/metrics.md#exporter-metrics), in contract order.
EXPORTER_FAMILIES = tuple(v for v in tuple(globals().values()) if isinstance(v, Family))

#: Bucket bounds of the exported latency families: le = 2^i µs for these i, then +Inf. Every power
#: of two from 2^10 µs (1.024 ms) to 2^17 µs (131 ms), where a contended node's run-queue p99 lies
#: and histogram_quantile should read it within the old ±25 %; every other power of two below
#: (1, 4, 16, 64, 256 µs) and above (0.52, 2.1, 8.4, 33.6 s). 17 bounds instead of 26 keep a
#: default node under 150 series (docs/sizing.md#series-and-samples-per-node). The kernel
#: histogram, and with it the CSV's p95/p99/max, stays 16 sub-buckets per power of two
#: (exporter/core/histogram.py). One layout for the whole fleet: `sum by (le)` over nodes with
#: different bounds is meaningless, so it is not a setting.
HISTOGRAM_LE_EXPONENTS = (0, 2, 4, 6, 8, 10, 11, 12, 13, 14, 15, 16, 17, 19, 21, 23, 25)

# --- per-pod families (docs/metrics.md#per-pod-metrics) ------------------------------------------
# The pod's namespace, name and uid are not labelled `namespace` and `pod`: every deploy/ scrape
# config attaches those as target labels (the scrape identity below, the ServiceMonitor's pod),
# and with honor_labels off Prometheus would rename ours to exported_namespace/exported_pod.
LABEL_POD_NAMESPACE = "pod_namespace"
LABEL_POD_NAME = "pod_name"
LABEL_POD_UID = "pod_uid"
#: The `pod_uid` of the series that sums every pod outside the exposed top-K.
POD_UID_OTHER = "other"


#: The roles of the pods a denied node's explanation names (the scorer's reason, /score's keys, the
#: `role` of ksense_node_top_pod, the scheduler's event), each by its own per-pod rate:
#: `victim` the most run-queue wait per second, `aggressor` the most CPU seconds per second,
#: `io_aggressor` the most D-state (uninterruptible, mostly IO) seconds per second.
POD_ROLE_VICTIM: Final = "victim"
POD_ROLE_AGGRESSOR: Final = "aggressor"
POD_ROLE_IO_AGGRESSOR: Final = "io_aggressor"
POD_ROLES = (POD_ROLE_VICTIM, POD_ROLE_AGGRESSOR, POD_ROLE_IO_AGGRESSOR)
LABEL_ROLE = "role"


def role_shown(role: str) -> str:
    """How a role is named to people: `victim`, `aggressor`, `io aggressor`."""
    return role.replace("_", " ")


def pod_shown(namespace: str, name: str, uid: str) -> str:
    """How a pod is named to people (the scorer's reason, the scheduler's event): `shop/checkout`,
    or `uid 6c3c22c6-...` for a pod the exporter knows by UID only."""
    return f"{namespace}/{name}" if name else f"uid {uid}"


POD_RUNQUEUE_WAIT = Family(
    "ksense_pod_runqueue_wait_seconds",
    "Run-queue waits of the pod's tasks (wakeup or preemption to switch-in), log2 buckets; _sum is the "
    "wait in seconds, _count the waits. Top-K pods by recent wait, the rest summed under pod_uid=\"other\".",
)
POD_DSTATE = Family("ksense_pod_dstate_seconds_total", "Time the pod's tasks spent in D-state (ended episodes).")
POD_DSTATE_EPISODES = Family("ksense_pod_dstate_episodes_total", "Ended D-state episodes of the pod's tasks.")
POD_CPU = Family("ksense_pod_cpu_seconds_total", "CPU time of the pod's cgroup (cpu.stat usage_usec).")
POD_PRESSURE = Family(
    "ksense_pod_pressure_ratio", "PSI share of the last interval of the pod's cgroup per resource and kind, 0-1."
)
PODS_TRACKED = Family("ksense_pods_tracked", "Pod cgroups found on the node and attributed.")
PODS_CAPACITY = Family("ksense_pods_capacity", "Pods the kernel maps can attribute (KSENSE_POD_MAX).")
PODS_UNTRACKED = Family(
    "ksense_pods_untracked_total",
    "Pods (or pod cgroups) found but not attributed for lack of room, each counted once when refused.",
)
POD_NAMES_AVAILABLE = Family(
    "ksense_pod_names_available",
    "1 while pod names and namespaces are in step with the Kubernetes API (list + watch of this node's pods), "
    "0 when it is unreachable, refused or not configured: new pods are then labelled by pod_uid only.",
)
#: Every per-pod family (docs/metrics.md#per-pod-metrics), served when per-pod accounting is on.
POD_FAMILIES = (
    POD_RUNQUEUE_WAIT, POD_DSTATE, POD_DSTATE_EPISODES, POD_CPU, POD_PRESSURE, PODS_TRACKED, PODS_CAPACITY,
    PODS_UNTRACKED, POD_NAMES_AVAILABLE,
)

# --- label values ---------------------------------------------------------------------------
SOURCE_EBPF = "ebpf"
SOURCE_PROCFS = "procfs"
SOURCE_REPLAY = "replay"
PSI_RESOURCES = ("cpu", "memory", "io")
PSI_SOME = "some"
PSI_KINDS = (PSI_SOME, "full")

# --- kernel_metrics.csv (docs/metrics.md#kernel_metricscsv): 23 columns, this order ------------------------------
COL_TIME = "Time"
KERNEL_METRICS_COLUMNS = (
    "Time",
    "SchedLat_Total_ms",
    "SchedLat_Avg_ms",
    "SchedLat_P95_ms",
    "SchedLat_P99_ms",
    "SchedLat_Max_ms",
    "SchedLat_Count",
    "SchedLat_Dropped",
    "DState_Total_ms",
    "DState_Count",
    "SoftIRQ_Total_ms",
    "SoftIRQ_Count",
    "CPUUtil",
    "PSI",
    "BaselineMode",
    "BaselineSamples",
    "Friction",
    "Direction",
    "dF_dt",
    "Energy",
    "Energy_W",
    "Energy_Vol",
    "Energy_kFactor",
)
MODE_CALIBRATING = "CALIBRATING"
MODE_FROZEN = "FROZEN"
KERNEL_METRICS_CSV_NAME = "kernel_metrics.csv"

# --- pod_metrics.csv (docs/metrics.md#pod_metricscsv): one row per tracked pod per interval ----------
POD_METRICS_COLUMNS = (
    "Level", "Time", "NodeName", "PodNamespace", "PodName", "PodUID", "CgroupID",
    "SchedLat_Total_ms", "SchedLat_Avg_ms", "SchedLat_P95_ms", "SchedLat_P99_ms", "SchedLat_Max_ms",
    "SchedLat_Count", "SchedLat_Dropped", "DState_Total_ms", "DState_Count", "SoftIRQ_Total_ms",
    "SoftIRQ_Count", "CPUUtil", "PSI",
)
LEVEL_POD = "pod"
POD_METRICS_CSV_NAME = "pod_metrics.csv"

# --- scorer families (docs/metrics.md#scorer-metrics) ---------------------------------------------------------
NODE_SCORE = Family("ksense_node_score", "Fuzzy score 0-100 of the last evaluation (100 when inputs are missing).")
NODE_ADMISSION_ALLOWED = Family("ksense_node_admission_allowed", "1 allow, 0 deny (after hysteresis).")
NODE_INPUT_MISSING = Family("ksense_node_input_missing", "1 when that input was missing or stale.")
NODE_DECISION_CHANGES = Family("ksense_node_decision_changes_total", "Decision flips, by the decision flipped to.")
SCORER_EVALUATION_DURATION = Family(
    "ksense_scorer_evaluation_duration_seconds", "One evaluation tick for all nodes (fetch + score + decide)."
)
SCORER_SOURCE_ERRORS = Family("ksense_scorer_source_errors_total", "Failed or rejected input queries.")
SCORER_LAST_SUCCESS = Family(
    "ksense_scorer_last_success_timestamp_seconds", "Unix time at the end of the last good evaluation."
)
ADMISSION_REVIEWS = Family("ksense_admission_reviews_total", "Admission reviews answered, by outcome.")
ADMISSION_REVIEW_DURATION = Family("ksense_admission_review_duration_seconds", "Time to answer /validate.")
WEBHOOK_CERT_EXPIRY = Family(
    "ksense_webhook_certificate_expiry_timestamp_seconds", "notAfter of the served certificate (Unix time)."
)
NODE_TOP_POD = Family(
    "ksense_node_top_pod",
    "A denied node's top pod per role (victim: run-queue wait, aggressor: CPU, io_aggressor: D-state), "
    "its rate in seconds per second over the last minute; only for denied nodes whose pods are known.",
)

#: Every family the scorer serves (docs/metrics.md#scorer-metrics).
SCORER_FAMILIES = (
    NODE_SCORE, NODE_ADMISSION_ALLOWED, NODE_INPUT_MISSING, NODE_DECISION_CHANGES, NODE_TOP_POD,
    SCORER_EVALUATION_DURATION,
    SCORER_SOURCE_ERRORS, SCORER_LAST_SUCCESS, ADMISSION_REVIEWS, ADMISSION_REVIEW_DURATION, WEBHOOK_CERT_EXPIRY,
)

LABEL_INPUT = "input"
LABEL_TO = "to"
LABEL_OUTCOME = "outcome"
INPUTS = ("friction", "energy", "cpu", "psi")
#: The optional controller input a rule file may declare (scorer/core/rules.py): the node's
#: run-queue p99 in ms (ksense_runqueue_latency_p99_seconds × 1000, the CSV's SchedLat_P99_ms).
RQ_P99: Final = "rq_p99_ms"  # Final: a literal, so TypedDicts keyed by it type-check
OPTIONAL_INPUTS = (RQ_P99,)
DECISION_ALLOW = "allow"
DECISION_DENY = "deny"
#: The scorer's input sources: values of `source` on ksense_scorer_source_errors_total.
SCORER_SOURCE_PROMETHEUS = "prometheus"
SCORER_SOURCE_LOCAL = "local"

# --- the score scale (docs/design.md#decisions): what the values of ksense_node_score mean ---
# The scorer decides on these and the dashboards draw them, so they are stated here, once.
#: Scores below are low; from here up medium.
LEVEL_MEDIUM = 45.0
#: From here up high: the node is denied at once.
LEVEL_HIGH = 70.0
#: Defaults of FUZZY_MEDIUM_LOW_UPPER and FUZZY_MEDIUM_MID_UPPER (the fields of the scorer's
#: DecisionParams): medium scores below the first count as good, from the second up as bad.
MEDIUM_LOW_UPPER = 55.0
MEDIUM_MID_UPPER = 60.0
ADMISSION_OUTCOMES = ("recorded", "dry_run", "duplicate", "ignored", "bad_request")

# --- scorer CSV files (docs/metrics.md#fuzzy_monitorcsv) -----------------------------------------------------
FUZZY_MONITOR_COLUMNS = (
    "Time", "Node", "FrictionSigned", "Energy", "CPUUtil", "PSI", "Score", "Level", "Decision", "Reason",
)
FUZZY_SCORE_COLUMNS = (
    "Time", "Uid", "Namespace", "Name", "AllowedNodes", "TotalNodes", "BestNode", "BestScore",
    "TargetNode", "TargetScore", "TargetDecision",
)
REPLAY_COLUMNS = (
    "InputTime", "BaselineMode", "Friction", "Direction", "Energy", "CPUUtil", "PSI", "FrictionSigned",
    "Score", "Level", "Decision", "BadCount", "GoodCount", "MediumBand", "Reason",
)
FUZZY_MONITOR_CSV_NAME = "fuzzy_monitor.csv"
FUZZY_SCORE_CSV_NAME = "fuzzy_score.csv"

# --- scheduler families (docs/metrics.md#scheduler-metrics) -------------------------------------------------------
SCHEDULER_BINDS = Family("ksense_scheduler_binds_total", "Bind attempts by result (bound/conflict/error).")
SCHEDULER_UNSCHEDULABLE = Family(
    "ksense_scheduler_unschedulable_total",
    "Pod attempts that found no node, by the first failing filter per node (aggregated).",
)
SCHEDULER_PENDING_PODS = Family("ksense_scheduler_pending_pods", "Pods waiting for this scheduler.")
SCHEDULER_ATTEMPT_DURATION = Family(
    "ksense_scheduler_attempt_duration_seconds", "One pod's filter + choose time (no API calls)."
)
SCHEDULER_LEADER = Family("ksense_scheduler_leader", "1 on the leader replica, 0 otherwise.")

#: Every family the scheduler serves (docs/metrics.md#scheduler-metrics).
SCHEDULER_FAMILIES = (
    SCHEDULER_BINDS, SCHEDULER_UNSCHEDULABLE, SCHEDULER_PENDING_PODS, SCHEDULER_ATTEMPT_DURATION, SCHEDULER_LEADER,
)

LABEL_RESULT = "result"
BIND_RESULTS = ("bound", "conflict", "error")
UNSCHEDULABLE_REASONS = ("fuzzy_deny", "resources", "taint", "selector", "affinity", "not_ready", "no_score")
SCHEDULER_NAME_DEFAULT = "fuzzy-scheduler"
LEASE_NAME = "fuzzy-scheduler"

# --- scrape identity (the contract with deploy/) ---------------------------------------------
#: What Prometheus attaches to each component's series in every deploy/ scrape config (the
#: ServiceMonitors: job = the Service's name, namespace = its namespace; the with-prometheus
#: scrape config names its jobs and relabels `namespace` alike). Exporter series also get `node`
#: from the pod's node name, with honor_labels off: the scrape, not the exposition, says which
#: node a series speaks for. The scorer and the scheduler select the series they decide on by
#: these labels, so another scrape target of a shared Prometheus cannot publish them.
NAMESPACE = "ksense"
JOB_EXPORTER = "ksense-exporter"
JOB_SCORER = "ksense-scorer"
JOB_SCHEDULER = "ksense-scheduler"
LABEL_JOB = "job"
LABEL_NAMESPACE = "namespace"


def scrape_identity(job: str, namespace: str = NAMESPACE) -> str:
    """PromQL label matchers of one component's series: `job="...",namespace="..."`."""
    return f'{LABEL_JOB}="{job}",{LABEL_NAMESPACE}="{namespace}"'


#: Default of KSENSE_EXPORTER_SELECTOR: the series the scorer reads its inputs from.
EXPORTER_SELECTOR = scrape_identity(JOB_EXPORTER)
#: Default of KSENSE_SCORER_SELECTOR: the series the scheduler reads decisions from.
SCORER_SELECTOR = scrape_identity(JOB_SCORER)
