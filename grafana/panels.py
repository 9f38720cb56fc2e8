"""Grafana JSON builders for kpimon's dashboards (used by generate.py).

Small functions returning plain dicts in Grafana's dashboard JSON model
(schemaVersion 39): variables, targets, field configs and panels. Every
panel and variable queries the `${datasource}` variable.
"""

from __future__ import annotations

from typing import Any

DS = {"type": "prometheus", "uid": "${datasource}"}


# -- variables -----------------------------------------------------------------
def datasource_var() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_var(
    name: str, query: str, *, multi: bool = True, default: str | None = None, label: str = ""
) -> dict[str, Any]:
    current: dict[str, Any]
    if multi:
        current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        current = {"selected": True, "text": default, "value": default} if default else {}
    return {
        "name": name,
        "label": label or name.replace("_", " ").capitalize(),
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        "allValue": ".*" if multi else None,
        "current": current,
        "hide": 0,
        "options": [],
        "regex": "",
    }


def plant_vars() -> list[dict[str, Any]]:
    return [
        query_var("site", 'label_values(kpimon_oee_ratio{scope="site"}, site)'),
        query_var("line", 'label_values(kpimon_oee_ratio{scope="line", site=~"$site"}, line)'),
        query_var(
            "machine",
            'label_values(kpimon_oee_ratio{scope="machine", site=~"$site", line=~"$line"}, machine)',
        ),
    ]


def window_var(name: str = "window", metric: str = "kpimon_oee_ratio", default: str = "1h"):
    return query_var(name, f"label_values({metric}, window)", multi=False, default=default)


# -- panels --------------------------------------------------------------------
def target(expr: str, legend: str = "", *, instant: bool = False, table: bool = False):
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto"}
    if instant or table:
        t["instant"] = True
        t["range"] = False
    if table:
        t["format"] = "table"
    return t


def thresholds(bands: list[tuple[float | None, str]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in bands]}


def field_config(
    unit: str = "percentunit",
    bands: list[tuple[float | None, str]] | None = None,
    *,
    decimals: int | None = 1,
    minmax: tuple[float, float] | None = (0, 1),
    custom: dict[str, Any] | None = None,
    overrides: list[dict[str, Any]] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    color: dict[str, Any] | None = None,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": color or {"mode": "thresholds" if bands else "palette-classic"},
        "thresholds": thresholds(bands or [(None, "green")]),
        "mappings": mappings or [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    if minmax is not None:
        defaults["min"], defaults["max"] = minmax
    if custom:
        defaults["custom"] = custom
    return {"defaults": defaults, "overrides": overrides or []}


def panel(
    kind: str,
    title: str,
    targets: list[dict[str, Any]],
    grid: tuple[int, int, int, int],
    fc: dict[str, Any],
    options: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    x, y, w, h = grid
    for ref, t in zip("ABCDEFGHIJKLMNOP", targets, strict=False):
        t.setdefault("refId", ref)
    return {
        "type": kind,
        "title": title,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        "fieldConfig": fc,
        "options": options or {},
        **extra,
    }


def stat(title, targets, grid, fc, *, text_mode="value_and_name", color_mode="background", **kw):  # type: ignore[no-untyped-def]
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": color_mode,
        "graphMode": "none",
        "justifyMode": "center",
        "textMode": text_mode,
        "orientation": "auto",
        "text": kw.pop("text", {}),
    }
    return panel("stat", title, targets, grid, fc, options, **kw)


def bargauge(title, targets, grid, fc, **kw):  # type: ignore[no-untyped-def]
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "horizontal",
        "displayMode": "basic",
        "showUnfilled": True,
    }
    return panel("bargauge", title, targets, grid, fc, options, **kw)


def timeseries(title, targets, grid, fc, **kw):  # type: ignore[no-untyped-def]
    options = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "none"},
    }
    return panel("timeseries", title, targets, grid, fc, options, **kw)


def table(title, targets, grid, fc, **kw):  # type: ignore[no-untyped-def]
    options = {"showHeader": True, "cellHeight": kw.pop("cell_height", "md")}
    return panel("table", title, targets, grid, fc, options, **kw)


def override(
    name: str, props: dict[str, Any], *, regex: bool = False, ref: bool = False
) -> dict[str, Any]:
    """Field properties for the fields named `name` (a regex with `regex`, the
    frames of the query with refId `name` with `ref`)."""
    kind = "byFrameRefID" if ref else "byRegexp" if regex else "byName"
    matcher = {"id": kind, "options": name}
    return {"matcher": matcher, "properties": [{"id": k, "value": v} for k, v in props.items()]}


def fixed(colour: str) -> dict[str, str]:
    return {"mode": "fixed", "fixedColor": colour}


def dashboard(
    uid: str,
    title: str,
    panels: list[dict[str, Any]],
    variables: list[dict[str, Any]],
    *,
    refresh: str = "30s",
    time_from: str = "now-12h",
    tags: tuple[str, ...] = (),
    description: str = "",
) -> dict[str, Any]:
    for i, p in enumerate(panels, start=1):
        p["id"] = i
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["kpimon", *tags],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": refresh,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": time_from, "to": "now"},
        "templating": {"list": [datasource_var(), *variables]},
        "annotations": {"list": []},
        "links": [
            {"type": "dashboards", "tags": ["kpimon"], "asDropdown": True, "title": "kpimon"}
        ],
        "panels": panels,
    }


# -- colours from targets --------------------------------------------------------
# Grafana cannot take a threshold from a query in a plain panel, and one
# "config from query" threshold would be the same for every line. So a
# value judged against its target is queried once per case, each case a
# refId `<series>__<case>`, coloured by an override on that refId. The
# cases are disjoint and together give every series exactly once (the
# dashboard test checks that each series' cases return data).
MISSED, MET, NO_TARGET = "missed_target", "met_target", "no_target"
CASE_COLOURS = {MISSED: "red", MET: "green", NO_TARGET: "blue"}


def against_target(
    key: str,
    value: str,
    target_expr: str,
    on: str,
    legend: str,
    *,
    lower_is_better: bool = False,
    always_targeted: bool = False,
    instant: bool = True,
) -> list[dict[str, Any]]:
    """Targets showing `value` once, split by how it stands against `target_expr`
    (one sample per `on` labels): missed (red), met (green), no target (blue).

    Higher is better unless `lower_is_better` (MTTR: at or below the target is
    met), as the alert rules judge it."""
    worse, better = (">", "<=") if lower_is_better else ("<", ">=")
    cases = [
        (MISSED, f"{value} {worse} on ({on}) group_left () {target_expr}"),
        (MET, f"{value} {better} on ({on}) group_left () {target_expr}"),
    ]
    if not always_targeted:
        cases.append((NO_TARGET, f"{value} unless on ({on}) {target_expr}"))
    found = []
    for case, expr in cases:
        t = target(expr, legend, instant=instant)
        t["refId"] = f"{key}__{case}"
        found.append(t)
    return found


def case_colours(*keys: str) -> list[dict[str, Any]]:
    """Overrides colouring the cases of `against_target` for each key."""
    return [
        override(f"{key}__{case}", {"color": fixed(colour)}, ref=True)
        for key in keys
        for case, colour in CASE_COLOURS.items()
    ]


# -- plant selectors, targets and colours shared by the dashboards -------------------
LINE = 'site=~"$site", line=~"$line"'
MACHINE = 'site=~"$site", line=~"$line", machine=~"$machine"'

# The targets in force, as the alerts read them (deploy/prometheus/rules/
# recording.yml): the configured kpimon_target_ratio, else the default.
OEE_TARGET = "line:kpimon_oee_target:ratio"
PERFECT_ORDER_TARGET = "segment:kpimon_perfect_order_target:ratio"
TARGET_NOTE = (
    "Red below the target in force (the configured kpimon_target_ratio, else the "
    "recording rules' default), green at or above it: the alerts' rule."
)
MACHINE_COLOURS = {
    "running": "green",
    "idle": "yellow",
    "down": "red",
    "setup": "blue",
    "planned_stop": "#808080",
    "no_data": "purple",
}
