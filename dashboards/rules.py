"""Prometheus rules as code: recording rules (the scorer's inputs and outputs, the dashboards'
histogram queries) and alerting rules, each alert with its runbook text and its promtool unit
tests (firing and not firing), so rules, the runbook (docs/runbook.md) and tests cannot drift apart.

`groups()` is what `deploy/rules/ksense-rules.yaml` holds; `prometheus_rule()` wraps the same
groups in a PrometheusRule; `unit_tests()` is `deploy/rules/tests/ksense-rules-test.yaml`.
Alert annotations use only `$labels` (never `$value`), so the unit tests can state every
expected annotation exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from common import names as n
from dashboards import config
from dashboards import queries as q

SEVERITY = "severity"
CRITICAL, WARNING, INFO = "critical", "warning", "info"


@dataclass(frozen=True)
class Runbook:
    """The runbook section of one alert (docs/runbook.md)."""

    meaning: str
    checks: tuple[str, ...]
    fixes: tuple[str, ...]


@dataclass(frozen=True)
class Case:
    """One promtool alert check: at `at`, exactly `firing` (label sets, severity added) fire."""

    at: str
    firing: tuple[Mapping[str, str], ...] = ()


@dataclass(frozen=True)
class Scenario:
    """promtool input series (series selector -> expanding values) and the checks on them."""

    series: Mapping[str, str]
    cases: tuple[Case, ...]


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook: Runbook
    #: Expressions over the live series the alert watches: the data test requires data from
    #: each in a running stack (the alert itself is, rightly, empty there).
    signals: tuple[str, ...]
    scenarios: tuple[Scenario, ...] = field(default=())

    @property
    def anchor(self) -> str:
        return self.name.lower()

    def runbook_url(self, base: str = config.RUNBOOK_BASE_URL) -> str:
        """`<base><config.RUNBOOK_DOC>#<anchor>`; a base without a trailing slash gets one."""
        prefix = base.rstrip("/") + "/" if base else ""
        return f"{prefix}{config.RUNBOOK_DOC}#{self.anchor}"

    def rule(self, runbook_base: str = config.RUNBOOK_BASE_URL) -> dict:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {SEVERITY: self.severity},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": self.runbook_url(runbook_base),
            },
        }


def expand(template: str, labels: Mapping[str, str]) -> str:
    """What Prometheus renders for a template using only `{{ $labels.NAME }}`."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


# --- series selectors used by the alerts and their tests ----------------------------------------
def _series(metric: str, **labels: str) -> str:
    return q.sel(metric, *(q.eq(k, v) for k, v in labels.items()))


EXPORTER_UP = q.sel(q.UP, q.job(config.JOB_EXPORTER))
SCORER_UP = q.sel(q.UP, q.job(config.JOB_SCORER))
SCORER_LAST_SUCCESS = q.sel(n.SCORER_LAST_SUCCESS.name, q.job(config.JOB_SCORER))
SCORER_AGE = f"time() - {SCORER_LAST_SUCCESS}"
QUERY_ERRORS_WINDOW = "5m"
CERT_LEFT = f"{n.WEBHOOK_CERT_EXPIRY.name} - time()"
_DAY_S = 86400
_CERT_LIMIT_S = config.CERT_EXPIRY_DAYS * _DAY_S

EX, SC = config.JOB_EXPORTER, config.JOB_SCORER
#: kube-state-metrics' one series per cluster node (label `node`): the node inventory.
KUBE_NODE_INFO = "kube_node_info"
NODE = n.LABEL_NODE


def alerts() -> tuple[Alert, ...]:
    tp_ok, tp_bad = "sched:sched_switch", "irq:softirq_entry"
    return (
        Alert(
            "KsenseExporterDown",
            f"{EXPORTER_UP} == 0",
            config.EXPORTER_DOWN_FOR,
            WARNING,
            "ksense exporter {{ $labels.instance }} is down",
            f"Prometheus has failed to scrape the ksense exporter at {{{{ $labels.instance }}}} for "
            f"{config.EXPORTER_DOWN_FOR}. Its node has no fresh inputs, so the scorer denies it "
            "(reason `missing metrics`).",
            Runbook(
                "A node's exporter does not answer /metrics: that node is denied admission until it is back.",
                ("`kubectl -n ksense get pods -l app.kubernetes.io/name=ksense-exporter -o wide` on that node: "
                 "CrashLoopBackOff, OOMKilled, Pending?",
                 "`kubectl -n ksense logs <pod>` (the first lines say which source runs and why).",
                 "From the Prometheus pod: `wget -qO- http://<instance>/metrics | head`; a timeout is network "
                 "policy or a wrong port (9860)."),
                ("Restart the pod; raise its memory limit if it was OOMKilled.",
                 "Fix the DaemonSet's tolerations/node selector if the node has no exporter pod at all."),
            ),
            (EXPORTER_UP,),
            (
                Scenario(
                    {_series(q.UP, job=EX, instance="node-a:9860"): "1 1 0x12",
                     _series(q.UP, job=EX, instance="node-b:9860"): "1x14"},
                    (Case("4m"), Case("10m", ({"job": EX, "instance": "node-a:9860"},))),
                ),
            ),
        ),
        Alert(
            "KsenseNodeNotMeasured",
            f"group by ({NODE}) ({KUBE_NODE_INFO}) unless on ({NODE}) group by ({NODE}) ({n.SOURCE_INFO.name})",
            config.NODE_NOT_MEASURED_FOR,
            WARNING,
            "no ksense exporter reports for node {{ $labels.node }}",
            f"Node {{{{ $labels.node }}}} is in the cluster (kube-state-metrics' {KUBE_NODE_INFO}) but no ksense "
            f"exporter has reported for it for {config.NODE_NOT_MEASURED_FOR}: the scorer has no inputs for it and "
            "the fuzzy scheduler never places pods there (reason `no_score`). Needs kube-state-metrics; "
            "without it this alert stays silent.",
            Runbook(
                "A node has no exporter at all (unlike KsenseExporterDown, there is no target that fails): the "
                "DaemonSet has no pod there, or the pod never became ready.",
                ("`kubectl -n ksense get daemonset ksense-exporter`: DESIRED vs READY.",
                 "`kubectl -n ksense get pods -l app.kubernetes.io/name=ksense-exporter -o wide "
                 "--field-selector spec.nodeName=<node>`: no pod means taints, a node selector or "
                 "resources keep it off the node.",
                 "`kubectl describe node <node>`: taints the DaemonSet does not tolerate."),
                ("Make the DaemonSet tolerate the node's taints or fit its allocatable; restart a pod stuck "
                 "in Init/ContainerCreating after fixing its mounts.",),
            ),
            (n.SOURCE_INFO.name,),
            (
                Scenario(
                    {_series(KUBE_NODE_INFO, job="kube-state-metrics", node="node-a"): "1x20",
                     _series(KUBE_NODE_INFO, job="kube-state-metrics", node="node-b"): "1x20",
                     _series(n.SOURCE_INFO.name, job=EX, node="node-a", source=n.SOURCE_EBPF): "1x20"},
                    (Case("5m"), Case("15m", ({NODE: "node-b"},))),
                ),
            ),
        ),
        Alert(
            "KsenseBpfProbeNotAttached",
            f"{n.BPF_PROGRAM_ATTACHED.name} == 0",
            config.BPF_NOT_ATTACHED_FOR,
            WARNING,
            "eBPF program on {{ $labels.tracepoint }} not attached on {{ $labels.node }}",
            "The ksense eBPF program for tracepoint {{ $labels.tracepoint }} is not attached on node "
            "{{ $labels.node }}; the signals it feeds (run-queue, D-state or NET_RX softirq) are empty there "
            "and Friction is computed from fewer features.",
            Runbook(
                "The kernel refused one tracepoint program (missing tracepoint, verifier error, or headers "
                "that do not match).",
                ("`kubectl -n ksense logs <exporter pod>`: the attach error names the tracepoint.",
                 "On the node: `ls /sys/kernel/tracing/events/<category>/<name>` — does the tracepoint exist?",
                 "Is tracefs mounted in the pod (`/sys/kernel/tracing`) and are kernel headers mounted?"),
                ("Mount tracefs / kernel headers as in the DaemonSet manifest and restart the pod.",
                 "A tracepoint the kernel does not have stays unattached: silence the alert for that "
                 "tracepoint on that kernel."),
            ),
            (n.BPF_PROGRAM_ATTACHED.name,),
            (
                Scenario(
                    {_series(n.BPF_PROGRAM_ATTACHED.name, node="node-a", tracepoint=tp_ok): "1x12",
                     _series(n.BPF_PROGRAM_ATTACHED.name, node="node-a", tracepoint=tp_bad): "0x12"},
                    (Case("3m"), Case("10m", ({NODE: "node-a", n.LABEL_TRACEPOINT: tp_bad},))),
                ),
            ),
        ),
        Alert(
            "KsenseExporterOnProcfs",
            f"{q.sel(n.SOURCE_INFO.name, q.eq(n.LABEL_SOURCE, n.SOURCE_PROCFS))} == 1",
            config.PROCFS_FALLBACK_FOR,
            INFO,
            "ksense exporter on {{ $labels.node }} runs the procfs fallback",
            "The exporter on node {{ $labels.node }} could not load eBPF and runs the procfs source: run-queue "
            "percentiles, D-state and softirq signals are empty, so Friction is coarser.",
            Runbook(
                "eBPF could not be loaded (not privileged, bcc missing, tracefs not mounted), so the exporter fell "
                "back to /proc.",
                ("The exporter's first log line: `source_selected source=procfs reason=...`.",
                 "Is the pod privileged with hostPID, `/sys/kernel/tracing` and kernel headers mounted?"),
                ("Fix the reason in the log line (privileges, mounts) and restart the pod.",),
            ),
            (n.SOURCE_INFO.name,),
            (
                Scenario(
                    {_series(n.SOURCE_INFO.name, node="node-a", source=n.SOURCE_PROCFS): "1x20",
                     _series(n.SOURCE_INFO.name, node="node-b", source=n.SOURCE_EBPF): "1x20"},
                    (Case("10m"), Case("20m", ({NODE: "node-a", n.LABEL_SOURCE: n.SOURCE_PROCFS},))),
                ),
            ),
        ),
        Alert(
            "KsenseBaselineNotFrozen",
            f"{n.BASELINE_FROZEN.name} == 0",
            config.BASELINE_NOT_FROZEN_FOR,
            WARNING,
            "ksense baseline on {{ $labels.node }} still calibrating",
            f"The exporter on node {{{{ $labels.node }}}} has not frozen its baseline after "
            f"{config.BASELINE_NOT_FROZEN_FOR} (warm-up is 10 minutes by default). Until it does, Friction and "
            "Energy are empty and the scorer denies the node (reason `calibrating`).",
            Runbook(
                "The baseline needs the warm-up to pass and 20 accepted samples; an interval is a sample only "
                "with ≥ 50 scheduling events and finite features.",
                ("Friction & Energy dashboard: accepted baseline samples and warm-up left for that node.",
                 "Node kernel signals: scheduling events per second — an idle node may stay under 50/s.",
                 "Exporter log: baseline restore errors, or restarts (each restart without a saved baseline "
                 "starts the warm-up again)."),
                ("A quiet node: lower KSENSE_BASELINE_MIN_COUNT for it.",
                 "Restart loops: fix them; keep KSENSE_STATE_DIR on a persistent hostPath so the baseline "
                 "survives restarts."),
            ),
            (n.BASELINE_FROZEN.name,),
            (
                Scenario(
                    {_series(n.BASELINE_FROZEN.name, node="node-a"): "0x30",
                     _series(n.BASELINE_FROZEN.name, node="node-b"): "0x10 1x20"},
                    (Case("15m"), Case("25m", ({NODE: "node-a"},))),
                ),
            ),
        ),
        Alert(
            "KsenseNodeDenied",
            f"{q.ALLOWED.record} == 0",
            config.NODE_DENIED_FOR,
            WARNING,
            "ksense denies node {{ $labels.node }}",
            f"The fuzzy scorer has denied node {{{{ $labels.node }}}} for {config.NODE_DENIED_FOR} (deny on any "
            "replica wins): the fuzzy scheduler places no pod there.",
            Runbook(
                "The node's score stayed high (≥ 70, or 60–70 repeatedly), or its inputs are missing.",
                ("Admission dashboard: the node's score and its missing inputs.",
                 "`curl -s 'https://<scorer>/score?node=<node>&explain=1'`: reason, inputs and the rules that "
                 "fired.",
                 "Node kernel signals / Friction & Energy for that node: which signal moved?"),
                ("A real overload: drain or rebalance the node; the decision returns to allow after 2 good ticks.",
                 "Missing inputs: see KsenseExporterDown / KsenseBaselineNotFrozen.",
                 "A baseline recorded under unusual load: delete the saved baseline in KSENSE_STATE_DIR on that "
                 "node and restart its exporter to recalibrate."),
            ),
            (q.ALLOWED.record,),
            (
                Scenario(
                    {_series(n.NODE_ADMISSION_ALLOWED.name, node="node-a", instance="scorer-1"): "0x20",
                     _series(n.NODE_ADMISSION_ALLOWED.name, node="node-a", instance="scorer-2"): "1x20",
                     _series(n.NODE_ADMISSION_ALLOWED.name, node="node-b", instance="scorer-1"): "1x20",
                     _series(n.NODE_ADMISSION_ALLOWED.name, node="node-c", instance="scorer-1"): "0x10 1x10"},
                    (Case("10m"), Case("20m", ({NODE: "node-a"},))),
                ),
            ),
        ),
        Alert(
            "KsenseAllNodesDenied",
            f"{q.NODES_ALLOWED.record} == 0",
            config.ALL_DENIED_FOR,
            CRITICAL,
            "ksense denies every node",
            f"No node has been allowed by the fuzzy scorer for {config.ALL_DENIED_FOR}: pods of the fuzzy "
            "scheduler stay Pending (the admission webhook still admits, it only records).",
            Runbook(
                "Every node is denied at once: usually missing inputs everywhere (Prometheus or exporters down, "
                "all baselines calibrating), rarely a cluster-wide overload.",
                ("Admission dashboard: missing inputs per node — all of them?",
                 "Stack health: exporter scrape success and the scorer's query errors.",
                 "`curl -s https://<scorer>/score | jq '.nodes[].reason'`."),
                ("Restore the missing inputs (Prometheus, exporters).",
                 "Emergency: set FUZZY_ALLOW_ON_MISSING=true on the scorer so missing inputs count as 0, or "
                 "schedule critical pods with the default scheduler."),
            ),
            (q.NODES_ALLOWED.record,),
            (
                Scenario(
                    {_series(n.NODE_ADMISSION_ALLOWED.name, node="node-a"): "1 1 0x10",
                     _series(n.NODE_ADMISSION_ALLOWED.name, node="node-b"): "1 0x11"},
                    (Case("4m"), Case("8m", ({},))),
                ),
                Scenario(
                    {_series(n.NODE_ADMISSION_ALLOWED.name, node="node-a"): "0x10",
                     _series(n.NODE_ADMISSION_ALLOWED.name, node="node-b"): "1x10"},
                    (Case("10m"),),
                ),
            ),
        ),
        Alert(
            "KsenseScorerStale",
            f"({SCORER_AGE} > {config.SCORER_STALE_S}) or ({SCORER_UP} == 0) "
            f"or ({SCORER_UP} == 1 unless on (job, instance) {SCORER_LAST_SUCCESS})",
            config.SCORER_STALE_FOR,
            CRITICAL,
            "ksense scorer {{ $labels.instance }} is stale",
            f"The scorer replica {{{{ $labels.instance }}}} has not completed a good evaluation in the last "
            f"{config.SCORER_STALE_S} s, or cannot be scraped. The scheduler ignores decisions older than "
            f"{config.SCORER_STALE_S} s: with every replica stale, nothing is scheduled.",
            Runbook(
                "A scorer replica is down, stuck, or cannot read its inputs.",
                ("`kubectl -n ksense get pods -l app.kubernetes.io/name=ksense-scorer` and the pod's logs "
                 "(`event=prometheus_unavailable`?).",
                 "Stack health: scorer query errors by reason, evaluation duration.",
                 "`curl -s http://<pod>:9861/metrics | grep last_success`."),
                ("Restore its Prometheus (see KsensePrometheusQueryErrors) or restart the pod; decision state is "
                 "rebuilt from the last 5 minutes of inputs.",),
            ),
            (SCORER_UP, SCORER_AGE),
            (
                Scenario(
                    {_series(q.UP, job=SC, instance="scorer-1"): "1x10",
                     _series(n.SCORER_LAST_SUCCESS.name, job=SC, instance="scorer-1"): "0+60x10",
                     _series(q.UP, job=SC, instance="scorer-2"): "1x10",
                     _series(n.SCORER_LAST_SUCCESS.name, job=SC, instance="scorer-2"): "0+60x3 180x7",
                     _series(q.UP, job=SC, instance="scorer-3"): "0x10",
                     _series(q.UP, job=SC, instance="scorer-4"): "1x10"},
                    (
                        Case("1m"),
                        Case("10m", tuple({"job": SC, "instance": f"scorer-{i}"} for i in (2, 3, 4))),
                    ),
                ),
            ),
        ),
        Alert(
            "KsensePrometheusQueryErrors",
            f"{q.prometheus_query_errors_rate(QUERY_ERRORS_WINDOW)} > 0",
            config.QUERY_ERRORS_FOR,
            WARNING,
            "ksense scorer {{ $labels.instance }} fails to query Prometheus ({{ $labels.reason }})",
            f"The scorer replica {{{{ $labels.instance }}}} has had failing Prometheus queries (reason "
            f"{{{{ $labels.reason }}}}) for {config.QUERY_ERRORS_FOR}. Inputs it cannot read are missing and the "
            "affected nodes are denied.",
            Runbook(
                "The scorer's PromQL queries fail: `unreachable`/`timeout`/`http_5xx` (Prometheus down or "
                "overloaded), `query_error` (a query Prometheus rejects), `empty` (no exporter series at all: "
                "wrong URL, or no series with the scrape identity KSENSE_EXPORTER_SELECTOR names).",
                ("The scorer log: `event=prometheus_unavailable url=... reason=...`.",
                 "`curl -s '<KSENSE_PROMETHEUS_URL>/api/v1/query?query=ksense_baseline_frozen'` from the scorer "
                 "pod.",
                 "Prometheus' own health (`up{job=\"prometheus\"}`, its query latency)."),
                ("Fix KSENSE_PROMETHEUS_URL or the network path; give Prometheus more resources.",
                 "`empty`: scrape the exporters as `deploy/` does (job `ksense-exporter`, namespace `ksense`, "
                 "`node` from the pod), or set KSENSE_EXPORTER_SELECTOR to the labels your scrape config gives "
                 "them — never of a job with honor_labels: true."),
            ),
            (q.prometheus_query_errors_rate(QUERY_ERRORS_WINDOW),),
            (
                Scenario(
                    {_series(n.SCORER_SOURCE_ERRORS.name, job=SC, instance="scorer-1",
                             source=n.SCORER_SOURCE_PROMETHEUS, reason="timeout"): "0+5x30",
                     _series(n.SCORER_SOURCE_ERRORS.name, job=SC, instance="scorer-2",
                             source=n.SCORER_SOURCE_PROMETHEUS, reason="timeout"): "3x30",
                     _series(n.SCORER_SOURCE_ERRORS.name, job=SC, instance="scorer-3",
                             source=n.SCORER_SOURCE_LOCAL, reason="unreachable"): "0+5x30"},
                    (Case("5m"), Case("20m", ({"job": SC, "instance": "scorer-1", n.LABEL_REASON: "timeout"},))),
                ),
            ),
        ),
        Alert(
            "KsenseWebhookCertificateExpiring",
            f"{CERT_LEFT} < {_CERT_LIMIT_S}",
            config.CERT_EXPIRY_FOR,
            WARNING,
            "ksense webhook certificate on {{ $labels.instance }} expires soon",
            f"The certificate served by the scorer's admission webhook on {{{{ $labels.instance }}}} expires in "
            f"less than {config.CERT_EXPIRY_DAYS} days. The webhook has failurePolicy Ignore: once it expires, "
            "admission reviews fail silently and nothing is recorded.",
            Runbook(
                "The webhook's serving certificate is close to its notAfter.",
                ("Stack health: 'Webhook certificate expires in' per replica.",
                 "cert-manager overlay: `kubectl -n ksense get certificate,certificaterequest` — a failed renewal?",
                 "Script-made certificate: it is not renewed automatically."),
                ("Re-run `scripts/setup_webhook_tls.sh` (patches the caBundle too) or fix the cert-manager issuer; "
                 "the scorer re-reads changed certificate files without a restart.",),
            ),
            (CERT_LEFT,),
            (
                Scenario(
                    {_series(n.WEBHOOK_CERT_EXPIRY.name, job=SC, instance="scorer-1"): f"{2 * _CERT_LIMIT_S}x30",
                     _series(n.WEBHOOK_CERT_EXPIRY.name, job=SC, instance="scorer-2"): f"{_CERT_LIMIT_S // 2}x30"},
                    (Case("5m"), Case("15m", ({"job": SC, "instance": "scorer-2"},))),
                ),
            ),
        ),
    )


def _records(recordings: tuple[q.Recording, ...]) -> list[dict]:
    return [{"record": r.record, "expr": r.expr} for r in recordings]


def recording_groups() -> list[dict]:
    histograms = tuple(r for h in q.HISTOGRAMS for r in h.all)
    return [
        {"name": "ksense-scorer-inputs", "rules": _records(q.SCORER_INPUTS)},
        {"name": "ksense-scorer-outputs", "rules": _records(q.SCORER_OUTPUTS)},
        {"name": "ksense-histograms", "rules": _records(histograms)},
        {"name": "ksense-pods", "rules": _records(q.POD_TOPS)},
    ]


def groups(runbook_base: str = config.RUNBOOK_BASE_URL) -> list[dict]:
    return [*recording_groups(), {"name": "ksense-alerts", "rules": [a.rule(runbook_base) for a in alerts()]}]


def rules_file(runbook_base: str = config.RUNBOOK_BASE_URL) -> dict:
    return {"groups": groups(runbook_base)}


def prometheus_rule(runbook_base: str = config.RUNBOOK_BASE_URL) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": config.PROMETHEUS_RULE_NAME,
            "namespace": config.NAMESPACE,
            "labels": dict(config.PROMETHEUS_RULE_LABELS),
        },
        "spec": {"groups": groups(runbook_base)},
    }


def recordings() -> tuple[q.Recording, ...]:
    return (*q.SCORER_INPUTS, *q.SCORER_OUTPUTS, *(r for h in q.HISTOGRAMS for r in h.all), *q.POD_TOPS)


def unit_tests(rules_path: str, runbook_base: str = config.RUNBOOK_BASE_URL) -> dict:
    """promtool's test file: one test per scenario, every alert checked at every case time."""
    by_name = {a.name: a for a in alerts()}
    tests = []
    for alert in by_name.values():
        for scenario in alert.scenarios:
            checks = []
            for case in scenario.cases:
                expected = []
                for labels in case.firing:
                    full = {**labels, SEVERITY: alert.severity}
                    expected.append({
                        "exp_labels": full,
                        "exp_annotations": {
                            "summary": expand(alert.summary, full),
                            "description": expand(alert.description, full),
                            "runbook_url": alert.runbook_url(runbook_base),
                        },
                    })
                checks.append({"eval_time": case.at, "alertname": alert.name, "exp_alerts": expected})
            tests.append({
                "name": f"{alert.name}: {', '.join(c.at for c in scenario.cases)}",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in scenario.series.items()],
                "alert_rule_test": checks,
            })
    return {"rule_files": [rules_path], "evaluation_interval": "1m", "tests": tests}
