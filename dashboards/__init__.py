"""Grafana dashboards (grafanalib) and Prometheus rules for ksense, generated as code.

`python -m dashboards.build` writes the committed output under `deploy/`: one JSON file per
dashboard in `deploy/dashboards/`, the plain rules file `deploy/rules/ksense-rules.yaml` and
the same groups wrapped as a PrometheusRule in `deploy/rules/ksense-prometheusrule.yaml`.
Layout: config (conventions), queries (every PromQL expression and recorded series), variables
(template variables), panels (panel builders), one module per dashboard, rules, build.
"""
