"""p-charts: scrap per line and order errors per segment (uid kpimon-pchart)."""

from __future__ import annotations

from typing import Any

from panels import (
    dashboard,
    field_config,
    fixed,
    override,
    plant_vars,
    query_var,
    stat,
    table,
    target,
    timeseries,
)

SCRAP = 'chart=~"scrap/.+", chart=~"$chart", window="$window"'
ORDER_ERRORS = 'chart=~"orders/.+", chart=~"$order_chart", window="$order_window"'


def per_chart(metric: str, sel: str, suffix: str = "") -> str:
    """One sample per chart and window (a chart moving between workers may
    briefly be exported by both)."""
    return f"max by (chart, window) ({metric}{{{sel}}}{suffix})"


def both_families(metric: str) -> str:
    """A metric over the selected scrap charts and the selected order charts."""
    return f"({metric}{{{SCRAP}}} or {metric}{{{ORDER_ERRORS}}})"


def pchart_panel(title: str, sel: str, grid: tuple[int, int, int, int], repeat: str):  # type: ignore[no-untyped-def]
    """One p-chart: a point per new subgroup, centre line and limits.

    Prometheus holds the latest closed subgroup as sampled at scrape times.
    A point is drawn at a step only when the subgroup changed since the
    previous step (its window end differs from one $__interval, the step,
    earlier): each subgroup Prometheus saw is drawn once, at the time it was
    first seen, not repeated at every step."""
    end = "kpimon_pchart_window_end_timestamp_seconds"
    new = (
        f"({per_chart(end, sel)} unless on (chart, window) "
        f"({per_chart(end, sel, ' offset $__interval')} == on (chart, window) "
        f"{per_chart(end, sel)}))"
    )
    violated = f"({per_chart('kpimon_pchart_out_of_control', sel)} == 1)"
    p = f"{per_chart('kpimon_pchart_proportion', sel)} and on (chart, window) {new}"
    in_control = target(f"{p} unless on (chart, window) {violated}", "p")
    in_control["refId"] = "p__in_control"
    out_of_control = target(f"{p} and on (chart, window) {violated}", "p, rule violated")
    out_of_control["refId"] = "p__out_of_control"
    dashed = {"color": fixed("red"), "custom.lineStyle": {"fill": "dash", "dash": [10, 10]}}
    points = {"custom.drawStyle": "points", "custom.showPoints": "always"}
    limits = [
        override("UCL", dashed),
        override("LCL", dashed),
        override("centre line", {"color": fixed("green")}),
        override("p__in_control", {"color": fixed("blue"), **points}, ref=True),
        override(
            "p__out_of_control",
            {"color": fixed("red"), **points, "custom.pointSize": 14},
            ref=True,
        ),
    ]
    chart_fc = field_config(
        decimals=2,
        minmax=None,
        custom={
            "drawStyle": "line",
            "lineInterpolation": "stepAfter",
            "showPoints": "never",
            "pointSize": 8,
            "spanNulls": True,
        },
        overrides=limits,
    )
    return timeseries(
        title,
        [
            in_control,
            out_of_control,
            target(per_chart("kpimon_pchart_center", sel), "centre line"),
            target(per_chart("kpimon_pchart_ucl", sel), "UCL"),
            target(per_chart("kpimon_pchart_lcl", sel), "LCL"),
        ],
        grid,
        chart_fc,
        repeat=repeat,
        repeatDirection="v",
        maxPerRow=1,
        description="A point per subgroup as Prometheus saw it: p = d/n of each newly "
        "closed window, drawn when it was first scraped (not at its window's time); "
        "red when it violates a Western Electric rule. Centre line and limits (they vary "
        "with n) step with the latest subgroup. Subgroups closed between two scrapes "
        "(a backfill, a replay) show only the last: the worker's built-in wall (/) draws "
        "every subgroup at its window.",
    )


def pchart() -> dict[str, Any]:
    rules_violated = target(
        f"{both_families('kpimon_pchart_out_of_control')} == 1", "{{chart}} {{rule}}", instant=True
    )
    rules_violated["refId"] = "rules__violated"
    in_control = target(
        f"max by (chart, window) ({both_families('kpimon_pchart_out_of_control')}) == 0",
        "{{chart}} in control",
        instant=True,
    )
    in_control["refId"] = "rules__in_control"
    latest = {
        "p": "kpimon_pchart_proportion",
        "UCL": "kpimon_pchart_ucl",
        "n": "kpimon_pchart_subgroup_size",
        "d": "kpimon_pchart_nonconforming",
        "window end": "kpimon_pchart_window_end_timestamp_seconds",
    }
    panels = [
        pchart_panel("$chart", SCRAP, (0, 0, 24, 9), "chart"),
        pchart_panel("$order_chart", ORDER_ERRORS, (0, 9, 24, 9), "order_chart"),
        stat(
            "Rules violated by the latest point",
            [rules_violated, in_control],
            (0, 18, 12, 6),
            field_config(
                "none",
                decimals=None,
                minmax=None,
                overrides=[
                    override("rules__violated", {"color": fixed("red")}, ref=True),
                    override("rules__in_control", {"color": fixed("green")}, ref=True),
                ],
            ),
            text_mode="name",
        ),
        table(
            "Latest point per chart",
            [
                *(
                    target(
                        f"{both_families(metric)}{' * 1000' if name == 'window end' else ''}",
                        table=True,
                    )
                    for name, metric in latest.items()
                ),
                target(both_families("kpimon_pchart_info"), table=True),
            ],
            (12, 18, 12, 6),
            field_config(
                "none",
                decimals=4,
                minmax=None,
                overrides=[override("window end", {"unit": "dateTimeAsIso"})],
            ),
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {
                            "Time": True,
                            "Value #F": True,
                            "job": True,
                            "instance": True,
                        },
                        "renameByName": {
                            f"Value #{ref}": name for ref, name in zip("ABCDE", latest, strict=True)
                        },
                    },
                },
            ],
        ),
    ]
    variables = [
        *plant_vars()[:2],
        query_var(
            "window",
            'label_values(kpimon_pchart_proportion{chart=~"scrap/.+"}, window)',
            multi=False,
            default="1h",
            label="Scrap window",
        ),
        query_var(
            "chart",
            'label_values(kpimon_pchart_proportion{chart=~"scrap/$site/$line", '
            'window="$window"}, chart)',
            label="Scrap chart",
        ),
        query_var(
            "order_window",
            'label_values(kpimon_pchart_proportion{chart=~"orders/.+"}, window)',
            multi=False,
            default="1d",
            label="Order window",
        ),
        query_var(
            "order_chart",
            'label_values(kpimon_pchart_proportion{chart=~"orders/.+", '
            'window="$order_window"}, chart)',
            label="Order chart",
        ),
    ]
    return dashboard(
        "kpimon-pchart",
        "kpimon p-charts",
        panels,
        variables,
        refresh="1m",
        time_from="now-2d",
        tags=("spc",),
        description="Shewhart p-charts (scrap per line, non-perfect orders per segment) "
        "with Western Electric rule violations.",
    )
