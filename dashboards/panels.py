"""Panel builders: every panel the dashboards use, with the house defaults applied once.

Every panel and every target points at the `$datasource` variable, carries a unit and a
description, and is laid out by `layout` on Grafana's 24-column grid. grafanalib 0.7.1 predates
Grafana 9's heatmap: `heatmap` writes the modern options (`calculate: false`, rows from `le`,
y-axis unit) through `extraJson`, and targets use the `heatmap` format so Grafana reads the
Prometheus buckets as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import attr  # grafanalib's own dependency: evolve keeps its validators
from grafanalib.core import (
    Dashboard,
    GridPos,
    Heatmap,
    Panel,
    RowPanel,
    Stat,
    StateTimeline,
    Target,
    Time,
    TimeSeries,
)

from dashboards import config, variables

REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Grafana unit ids (https://grafana.com/docs/grafana/latest/panels-visualizations/configure-standard-options/).
SECONDS = "s"
RATIO = "percentunit"
BYTES = "bytes"
PER_SECOND = "ops"
REQ_PER_SECOND = "reqps"
COUNT = "short"
NONE = "none"
BOOL = "bool_on_off"


@dataclass(frozen=True)
class Query:
    """One target: a PromQL expression and its legend."""

    expr: str
    legend: str = ""
    instant: bool = False


def _targets(queries: Sequence[Query], fmt: str = "time_series") -> list[Target]:
    return [
        Target(
            expr=q.expr,
            legendFormat=q.legend,
            refId=REF_IDS[i],
            format=fmt,
            instant=q.instant,
            datasource=config.DATASOURCE,
            intervalFactor=1,
        )
        for i, q in enumerate(queries)
    ]


def steps(*pairs: tuple[str, float | None]) -> list[dict]:
    """Threshold steps in Grafana's modern form: the first step's value is null (base color)."""
    return [{"color": color, "value": value} for color, value in pairs]


def value_map(*entries: tuple[str, str, str]) -> list[dict]:
    """Value mappings (value, text, color) in Grafana's modern form."""
    options = {value: {"text": text, "color": color, "index": i} for i, (value, text, color) in enumerate(entries)}
    return [{"type": "value", "options": options}]


def timeseries(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    thresholds: list[dict] | None = None,
    thresholds_style: str = "off",
    mappings: list[dict] | None = None,
    value_min: int | None = None,
    value_max: int | None = None,
    stacked: bool = False,
    interpolation: str = "linear",
    fill: int = 10,
) -> TimeSeries:
    return TimeSeries(
        title=title,
        description=description,
        dataSource=config.DATASOURCE,
        targets=_targets(queries),
        unit=unit,
        thresholds=thresholds or steps(("green", None)),
        thresholdsStyleMode=thresholds_style,
        mappings=mappings or [],
        valueMin=value_min,
        valueMax=value_max,
        stacking={"mode": "normal", "group": "A"} if stacked else {"mode": "none", "group": "A"},
        lineInterpolation=interpolation,
        fillOpacity=fill,
        legendDisplayMode="list",
        legendPlacement="bottom",
        tooltipMode="multi",
        tooltipSort="desc",
        maxDataPoints=None,
    )


def stat(
    title: str,
    description: str,
    queries: Sequence[Query],
    unit: str,
    *,
    thresholds: list[dict] | None = None,
    mappings: list[dict] | None = None,
    graph: bool = False,
    text_mode: str = "auto",
) -> Stat:
    return Stat(
        title=title,
        description=description,
        dataSource=config.DATASOURCE,
        targets=_targets(queries),
        format=unit,
        thresholds=thresholds or steps(("green", None)),
        mappings=mappings or [],
        colorMode="background" if thresholds else "value",
        graphMode="area" if graph else "none",
        reduceCalc="lastNotNull",
        textMode=text_mode,
        noValue="no data",
        maxDataPoints=None,
    )


def state_timeline(title: str, description: str, queries: Sequence[Query], mappings: list[dict]) -> StateTimeline:
    return StateTimeline(
        title=title,
        description=description,
        dataSource=config.DATASOURCE,
        targets=_targets(queries),
        mappings=mappings,
        colorMode="fixed",
        fillOpacity=80,
        rowHeight=0.8,
        showValue="never",
        maxDataPoints=None,
        extraJson={"fieldConfig": {"defaults": {"unit": NONE}}},
    )


def heatmap(title: str, description: str, expr: str, unit: str) -> Heatmap:
    """A Grafana ≥ 9 heatmap of Prometheus histogram buckets (one series per `le`, already
    rates: nothing for the panel to calculate)."""
    modern = {
        "options": {
            "calculate": False,
            "cellGap": 1,
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "exponent": 0.5,
                "fill": "dark-orange",
                "reverse": False,
                "steps": 64,
            },
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-9},
            "legend": {"show": True},
            "rowsFrame": {"layout": "le"},
            "showValue": "never",
            "tooltip": {"mode": "single", "yHistogram": True, "showColorScale": False},
            "yAxis": {"axisPlacement": "left", "reverse": False, "unit": unit},
            "cellValues": {"unit": PER_SECOND},
        },
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"scaleDistribution": {"type": "linear"}, "hideFrom": {"legend": False, "tooltip": False,
                                                                                  "viz": False}},
            },
        },
        "pluginVersion": "10.4.0",
    }
    return Heatmap(
        title=title,
        description=description,
        dataSource=config.DATASOURCE,
        targets=_targets([Query(expr, "{{le}}")], fmt="heatmap"),
        dataFormat="tsbuckets",
        hideZeroBuckets=True,
        maxDataPoints=None,
        extraJson=modern,
    )


def row(title: str) -> RowPanel:
    return RowPanel(title=title)


#: A dashboard body: rows of (panel, width, height).
Layout = Sequence[tuple[str, Sequence[tuple[Panel, int, int]]]]


def layout(rows: Layout) -> list[Panel]:
    """Place panels left to right in 24 columns, wrapping, with a row header before each group."""
    out: list[Panel] = []
    y = 0
    for title, cells in rows:
        out.append(attr.evolve(row(title), gridPos=GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        x, line_h = 0, 0
        for panel, w, h in cells:
            if x + w > 24:
                y, x, line_h = y + line_h, 0, 0
            out.append(attr.evolve(panel, gridPos=GridPos(h=h, w=w, x=x, y=y)))
            x, line_h = x + w, max(line_h, h)
        y += line_h
    return out


def dashboard(uid: str, title: str, description: str, rows: Layout, *, per_node: bool = True) -> Dashboard:
    """A ksense dashboard: fixed uid (stable links), the shared variables, panel ids in order."""
    return Dashboard(
        uid=uid,
        title=title,
        description=description,
        tags=list(config.DASHBOARD_TAGS),
        panels=layout(rows),
        templating=variables.templating(per_node=per_node),
        time=Time(config.TIME_FROM, "now"),
        refresh=config.REFRESH,
        schemaVersion=config.SCHEMA_VERSION,
        timezone="browser",
        graphTooltip=1,
    ).auto_panel_ids()
