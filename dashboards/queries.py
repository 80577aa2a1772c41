"""Every PromQL expression of the dashboards and the rules, built from the names of
`common/names.py` (no metric name is typed here).

Two kinds of things live here:
- recorded series: `Recording(record, expr)` of the recording rules (rules.py puts them in
  groups), named `level:metric:operation` as the Prometheus docs recommend; the dashboards read
  the heavy ones (histogram quantiles, per-node aggregates across scorer replicas) from them;
- panel expressions: functions returning the PromQL of one panel target, with Grafana's `$node`
  and `$__rate_interval` left in for Grafana to substitute.

Conventions: scorer series are aggregated across replicas with `max by (node)` for the score
and `min by (node)` for the decision (deny wins, docs/metrics.md#scorer-metrics); exporter series with
`max by (node)` (a node scraped twice is still one node); `process_*` series, which carry no
`node` label, get it from `ksense_exporter_source_info` on (job, instance).
"""

from __future__ import annotations

from dataclasses import dataclass

from common import names as n
from dashboards import config

NODE = n.LABEL_NODE
#: The node matcher of every per-node panel: `node=~"$node"` (the variable is multi-valued).
NODE_MATCH = f'{NODE}=~"${config.NODE_VAR}"'
RATE_INTERVAL = "$__rate_interval"
QUANTILES = (0.5, 0.95, 0.99)

# prometheus_client's process collector (no ksense name to import: these are its own).
PROCESS_CPU = "process_cpu_seconds_total"
PROCESS_RSS = "process_resident_memory_bytes"
UP = "up"


def sel(metric: str, *matchers: str) -> str:
    """`metric{m1, m2}` (or the bare name without matchers)."""
    return f"{metric}{{{', '.join(matchers)}}}" if matchers else metric


def eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def job(name: str) -> str:
    return eq("job", name)


def bucket(h: n.Family) -> str:
    return f"{h.name}_bucket"


def count(h: n.Family) -> str:
    return f"{h.name}_count"


def total(h: n.Family) -> str:
    return f"{h.name}_sum"


def _pct(q: float) -> str:
    return f"p{round(q * 100)}"


@dataclass(frozen=True)
class Recording:
    """One recording rule."""

    record: str
    expr: str


# --- recorded series: the scorer's inputs (one vector per input over all nodes) --------------
def _node_max(f: n.Family) -> Recording:
    return Recording(f"{NODE}:{f.name}:max", f"max by ({NODE}) ({f.name})")


FRICTION = _node_max(n.FRICTION)
DIRECTION = _node_max(n.FRICTION_DIRECTION)
#: Friction × Direction, unsigned friction while Direction does not exist yet (docs/design.md#scorer-inputs).
FRICTION_SIGNED = Recording(
    f"{NODE}:ksense_friction_signed:max",
    f"{FRICTION.record} * on ({NODE}) {DIRECTION.record} or {FRICTION.record}",
)
ENERGY = _node_max(n.ENERGY)
CPU = _node_max(n.CPU_UTILIZATION)
PSI = _node_max(n.PRESSURE_WORST)
FROZEN = _node_max(n.BASELINE_FROZEN)
SCORER_INPUTS = (FRICTION, DIRECTION, FRICTION_SIGNED, ENERGY, CPU, PSI, FROZEN)

# --- recorded series: the scorer's outputs, aggregated across replicas ------------------------
SCORE = Recording(f"{NODE}:{n.NODE_SCORE.name}:max", f"max by ({NODE}) ({n.NODE_SCORE.name})")
ALLOWED = Recording(
    f"{NODE}:{n.NODE_ADMISSION_ALLOWED.name}:min", f"min by ({NODE}) ({n.NODE_ADMISSION_ALLOWED.name})"
)
NODES_ALLOWED = Recording("ksense:nodes_allowed:count", f"sum({ALLOWED.record})")
NODES_SCORED = Recording("ksense:nodes_scored:count", f"count({ALLOWED.record})")
SCORER_OUTPUTS = (SCORE, ALLOWED, NODES_ALLOWED, NODES_SCORED)


# --- recorded series: the latency histograms (the dashboards' heavy queries) ------------------
@dataclass(frozen=True)
class HistogramRecordings:
    """Per-node bucket rates, quantiles and mean of one exporter latency histogram."""

    family: n.Family
    buckets: Recording
    quantiles: tuple[Recording, ...]
    mean: Recording

    @property
    def all(self) -> tuple[Recording, ...]:
        return (self.buckets, *self.quantiles, self.mean)


def _histogram(h: n.Family) -> HistogramRecordings:
    w = config.RATE_WINDOW
    buckets = Recording(f"{NODE}:{bucket(h)}:rate{w}", f"sum by ({NODE}, le) (rate({bucket(h)}[{w}]))")
    quantiles = tuple(
        Recording(f"{NODE}:{h.name}:{_pct(q)}_rate{w}", f"histogram_quantile({q:g}, {buckets.record})")
        for q in QUANTILES
    )
    mean = Recording(
        f"{NODE}:{h.name}:mean_rate{w}",
        f"sum by ({NODE}) (rate({total(h)}[{w}])) / sum by ({NODE}) (rate({count(h)}[{w}]))",
    )
    return HistogramRecordings(h, buckets, quantiles, mean)


RUNQUEUE = _histogram(n.RUNQUEUE_LATENCY)
DSTATE = _histogram(n.DSTATE_DURATION)
SOFTIRQ = _histogram(n.SOFTIRQ_NET_RX_DURATION)
HISTOGRAMS = (RUNQUEUE, DSTATE, SOFTIRQ)

# --- recorded series: the top pods of each node (docs/metrics.md#per-pod-metrics) ---------------
#: The labels that name one pod on one node.
POD_LABELS = (NODE, n.LABEL_POD_NAMESPACE, n.LABEL_POD_NAME, n.LABEL_POD_UID)
#: Every pod but the exporter's `other` sum, which is no pod.
NOT_OTHER = f'{n.LABEL_POD_UID}!="{n.POD_UID_OTHER}"'


def _pod_top(short: str, counter: str) -> Recording:
    """The `config.POD_TOP_K` pods of each node with the highest rate of `counter` (seconds per
    second), so the dashboards read a few series per node however many pods the exporter exposes."""
    w, k = config.RATE_WINDOW, config.POD_TOP_K
    by = ", ".join(POD_LABELS)
    rate = f"sum by ({by}) (rate({sel(counter, NOT_OTHER)}[{w}]))"
    return Recording(f"{NODE}:{short}:top{k}_rate{w}", f"topk by ({NODE}) ({k}, {rate})")


#: Victims: run-queue wait of the pod's tasks; aggressors: CPU and D-state time of the pod.
POD_WAIT = _pod_top("ksense_pod_runqueue_wait_seconds", total(n.POD_RUNQUEUE_WAIT))
POD_CPU = _pod_top(n.POD_CPU.name, n.POD_CPU.name)
POD_DSTATE = _pod_top(n.POD_DSTATE.name, n.POD_DSTATE.name)
POD_TOPS = (POD_WAIT, POD_CPU, POD_DSTATE)


# --- panel expressions ------------------------------------------------------------------------
def per_node(record: Recording | str) -> str:
    """A recorded per-node series restricted to `$node`."""
    name = record.record if isinstance(record, Recording) else record
    return sel(name, NODE_MATCH)


def node_max(f: n.Family, *extra_by: str) -> str:
    by = ", ".join((NODE, *extra_by))
    return f"max by ({by}) ({sel(f.name, NODE_MATCH)})"


def node_rate(metric: str, *extra_by: str) -> str:
    """Per-node (and `extra_by`) rate of a counter over Grafana's rate interval."""
    by = ", ".join((NODE, *extra_by))
    return f"sum by ({by}) (rate({sel(metric, NODE_MATCH)}[{RATE_INTERVAL}]))"


def heatmap_buckets(h: HistogramRecordings) -> str:
    """Bucket rates of the selected nodes summed by `le`: the heatmap's rows."""
    return f"sum by (le) ({per_node(h.buckets)})"


def ratio(numerator: str, denominator: str, *by: str) -> str:
    on = ", ".join(by)
    return f"{numerator} / on ({on}) {denominator}"


def bpf_map_fill() -> str:
    return ratio(node_max(n.BPF_MAP_ENTRIES, n.LABEL_MAP), node_max(n.BPF_MAP_CAPACITY, n.LABEL_MAP), NODE, n.LABEL_MAP)


def bpf_run_time_per_run() -> str:
    """Mean kernel time per program invocation (seconds)."""
    return ratio(
        node_rate(n.BPF_PROGRAM_RUN_SECONDS.name, n.LABEL_PROGRAM),
        node_rate(n.BPF_PROGRAM_RUNS.name, n.LABEL_PROGRAM),
        NODE,
        n.LABEL_PROGRAM,
    )


def _with_node(expr: str) -> str:
    """Give an exporter's `process_*` series the exporter's `node` label (and the `$node`
    filter), joined on the scrape target."""
    info = f"max by (job, instance, {NODE}) ({sel(n.SOURCE_INFO.name, job(config.JOB_EXPORTER), NODE_MATCH)})"
    return f"{expr} * on (job, instance) group_left ({NODE}) {info}"


def collector_cpu() -> str:
    return _with_node(f"rate({sel(PROCESS_CPU, job(config.JOB_EXPORTER))}[{RATE_INTERVAL}])")


def collector_rss() -> str:
    return _with_node(sel(PROCESS_RSS, job(config.JOB_EXPORTER)))


def component_cpu(job_name: str) -> str:
    return f"rate({sel(PROCESS_CPU, job(job_name))}[{RATE_INTERVAL}])"


def component_rss(job_name: str) -> str:
    return sel(PROCESS_RSS, job(job_name))


def scrape_up() -> str:
    return sel(UP, f'job=~"{"|".join(config.JOBS)}"')


def targets_up_by_job() -> str:
    return f"sum by (job) ({scrape_up()})"


def targets_by_job() -> str:
    return f"count by (job) ({scrape_up()})"


def rate_by(metric: str, *by: str) -> str:
    """A process-wide counter's rate summed by `by` (scorer and scheduler series have no node)."""
    grouping = f" by ({', '.join(by)})" if by else ""
    return f"sum{grouping} (rate({metric}[{RATE_INTERVAL}]))"


def quantile_of(h: n.Family, q: float, *by: str) -> str:
    """Quantile of a process-wide histogram over Grafana's rate interval."""
    grouping = ", ".join((*by, "le"))
    return f"histogram_quantile({q:g}, sum by ({grouping}) (rate({bucket(h)}[{RATE_INTERVAL}])))"


def heatmap_of(h: n.Family) -> str:
    return f"sum by (le) (rate({bucket(h)}[{RATE_INTERVAL}]))"


def sample_duration_quantile(q: float) -> str:
    return (
        f"histogram_quantile({q:g}, sum by ({NODE}, le) "
        f"(rate({sel(bucket(n.SAMPLE_DURATION), NODE_MATCH)}[{RATE_INTERVAL}])))"
    )


def scorer_last_success_age() -> str:
    return f"time() - max by (instance) ({n.SCORER_LAST_SUCCESS.name})"


def cert_time_left() -> str:
    return f"min by (instance) ({n.WEBHOOK_CERT_EXPIRY.name}) - time()"


def query_errors() -> str:
    return rate_by(n.SCORER_SOURCE_ERRORS.name, "instance", n.LABEL_SOURCE, n.LABEL_REASON)


def prometheus_query_errors_rate(window: str) -> str:
    """The scorer's failed Prometheus queries per second, per replica and reason (alert input)."""
    errors = sel(n.SCORER_SOURCE_ERRORS.name, eq(n.LABEL_SOURCE, n.SCORER_SOURCE_PROMETHEUS))
    return f"sum by (job, instance, {n.LABEL_REASON}) (rate({errors}[{window}]))"


def decision_flips() -> str:
    """Decision flips per node and direction over the rate interval (replicas agree, so max)."""
    changes = sel(n.NODE_DECISION_CHANGES.name, NODE_MATCH)
    return f"max by ({NODE}, {n.LABEL_TO}) (increase({changes}[{RATE_INTERVAL}]))"


def pod_pressure() -> str:
    """Per-pod PSI `some` share of the selected nodes: the `config.POD_TOP_K` most stalled pods
    per node and resource (a gauge, so no recording: it is as cheap as its series)."""
    by = ", ".join((*POD_LABELS, n.LABEL_RESOURCE))
    some = sel(n.POD_PRESSURE.name, NODE_MATCH, NOT_OTHER, eq(n.LABEL_KIND, n.PSI_SOME))
    return f"topk by ({NODE}, {n.LABEL_RESOURCE}) ({config.POD_TOP_K}, max by ({by}) ({some}))"


def pending_pods() -> str:
    return f"max({n.SCHEDULER_PENDING_PODS.name})"


def scheduler_leader() -> str:
    return f"max by (instance) ({n.SCHEDULER_LEADER.name})"
