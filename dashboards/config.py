"""Conventions shared by the dashboards, the rules and `deploy/`: scrape job names, template
variable names, output paths, score bands and the thresholds of the alerts.

The job names are the contract with `deploy/` (stated once, in common/names.py): Prometheus
must scrape the exporter as `job="ksense-exporter"`, the scorer's plain /metrics as
`job="ksense-scorer"` and the scheduler as `job="ksense-scheduler"` (a ServiceMonitor whose
Service has that name gives exactly that label; annotation-based scraping needs a relabel rule
setting `job`). Only `up` and
prometheus_client's `process_*` series are selected by job; every `ksense_*` series is selected
by its name and its `node` label.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from common import names as n

# --- scrape jobs (the contract with deploy/) --------------------------------------------------
JOB_EXPORTER = n.JOB_EXPORTER
JOB_SCORER = n.JOB_SCORER
JOB_SCHEDULER = n.JOB_SCHEDULER
JOBS = (JOB_EXPORTER, JOB_SCORER, JOB_SCHEDULER)

# --- template variables ------------------------------------------------------------------------
DATASOURCE_VAR = "datasource"
NODE_VAR = "node"
#: Every panel and target points at the datasource variable, never at a named datasource.
DATASOURCE = {"type": "prometheus", "uid": f"${{{DATASOURCE_VAR}}}"}

# --- output (relative to the repository root; deploy/ consumes exactly these) -----------------
DASHBOARDS_DIR = PurePosixPath("deploy/dashboards")
RULES_FILE = PurePosixPath("deploy/rules/ksense-rules.yaml")
PROMETHEUS_RULE_FILE = PurePosixPath("deploy/rules/ksense-prometheusrule.yaml")
PROMETHEUS_RULE_NAME = "ksense"
NAMESPACE = n.NAMESPACE
#: Labels of the PrometheusRule object; kube-prometheus selects rules by label, and
#: deploy/ may patch these to match its Prometheus' ruleSelector.
PROMETHEUS_RULE_LABELS = {"app.kubernetes.io/name": "ksense", "app.kubernetes.io/component": "rules"}

# --- dashboards ---------------------------------------------------------------------------------
DASHBOARD_TAGS = ["ksense"]
SCHEMA_VERSION = 39  # Grafana 10/11; older servers migrate forward, newer ones read it as is
REFRESH = "30s"
TIME_FROM = "now-1h"

# --- score bands (docs/design.md#decisions): drawn on the score panel ------------------------------
BAND_MEDIUM = n.LEVEL_MEDIUM  # below is low
BAND_MEDIUM_LOW_UPPER = n.MEDIUM_LOW_UPPER  # FUZZY_MEDIUM_LOW_UPPER default
BAND_MEDIUM_MID_UPPER = n.MEDIUM_MID_UPPER  # FUZZY_MEDIUM_MID_UPPER default
BAND_HIGH = n.LEVEL_HIGH  # from here the node is denied at once

# --- rules ----------------------------------------------------------------------------------------
#: Window of every rate() in the recording rules: ≥ 4 scrape intervals at a 30 s scrape.
RATE_WINDOW = "2m"
#: Pods per node in the per-pod recordings and panels (victims, aggressors, PSI).
POD_TOP_K = 5
#: A scorer whose last good evaluation is older than this is stale (FUZZY_LONG_WIN_S default:
#: the scheduler already ignores decisions older than that).
SCORER_STALE_S = 60
EXPORTER_DOWN_FOR = "5m"
#: A DaemonSet pod normally reports within a minute or two of a node joining.
NODE_NOT_MEASURED_FOR = "10m"
BPF_NOT_ATTACHED_FOR = "5m"
PROCFS_FALLBACK_FOR = "15m"
#: Warm-up is 10 min by default; still calibrating after 20 min means the node never gives
#: 20 usable baseline samples (too quiet, or the source is wrong).
BASELINE_NOT_FROZEN_FOR = "20m"
NODE_DENIED_FOR = "15m"
ALL_DENIED_FOR = "5m"
SCORER_STALE_FOR = "2m"
QUERY_ERRORS_FOR = "10m"
CERT_EXPIRY_DAYS = 30
CERT_EXPIRY_FOR = "10m"

# --- docs (written by dashboards.build next to the dashboards and rules) ------------------------
DASHBOARDS_DOC = PurePosixPath("docs/dashboards.md")
RUNBOOK_DOC = PurePosixPath("docs/runbook.md")
#: Where every alert's `runbook_url` points: `<RUNBOOK_BASE_URL>docs/runbook.md#<alert name in lower
#: case>`. Empty: a path relative to the repository root. Set it to the URL your copy of the
#: repository is browsed at (e.g. `https://git.example.com/you/ksense/blob/v0.1.0/`) and run
#: `make generate`; `python -m dashboards.build --runbook-base-url URL --out DIR` renders once
#: with another base without touching the committed files.
RUNBOOK_BASE_URL = ""
