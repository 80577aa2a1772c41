"""Template variables shared by every dashboard: the Prometheus datasource and the node.

`$datasource` lets one JSON file work against any Prometheus-compatible datasource (Thanos,
Mimir); `$node` is multi-valued with an All option matching any node (`.+`), read from
`ksense_exporter_source_info`, which every exporter source exports once per node.
"""

from __future__ import annotations

from grafanalib.core import REFRESH_ON_TIME_RANGE_CHANGE, SORT_ALPHA_ASC, Template, Templating

from common import names as n
from dashboards import config


def datasource() -> Template:
    return Template(
        name=config.DATASOURCE_VAR,
        label="Data source",
        type="datasource",
        query="prometheus",
        default="default",
    )


def node() -> Template:
    template = Template(
        name=config.NODE_VAR,
        label="Node",
        type="query",
        dataSource=config.DATASOURCE,
        query={
            "query": f"label_values({n.SOURCE_INFO.name}, {n.LABEL_NODE})",
            "refId": "PrometheusVariableQueryEditor-VariableQuery",
        },
        includeAll=True,
        multi=True,
        allValue=".+",
        refresh=REFRESH_ON_TIME_RANGE_CHANGE,
        sort=SORT_ALPHA_ASC,
    )
    # Grafana's own "All" selection (grafanalib would store the literal text as the value).
    template._current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return template


def templating(*, per_node: bool = True) -> Templating:
    """The datasource variable, and the node variable for dashboards with per-node panels."""
    return Templating(list=[datasource(), node()] if per_node else [datasource()])
