"""Build kpimon's Grafana dashboards (grafana/dashboards/*.json).

    python grafana/generate.py        # rewrite the JSON files

The JSON files are committed (Grafana provisions them as they are); this
script is their source, so every panel uses the same datasource variable,
colours and thresholds. tests/agents/test_dashboards.py checks that the
committed files are what this script writes.

Conventions: every panel queries `${datasource}`; multi-value variables
(site, line, machine, segment, direction, chart, job, instance) are used
with `=~`; single-value ones (window, order_window, chain_window) with `=`.
OEE colour bands: red below the default 60% target (`kpimon:oee_target_default:ratio` in
deploy/prometheus/rules/recording.yml), yellow from 60%, green from 85%
(world class). Perfect-order bands: red below 85%, yellow from 85%, green
from 95%.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from panels import (
    against_target,
    bargauge,
    case_colours,
    dashboard,
    field_config,
    fixed,
    override,
    plant_vars,
    query_var,
    stat,
    table,
    target,
    thresholds,
    timeseries,
    window_var,
)

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

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

# -- the dashboards -------------------------------------------------------------
LINE = 'site=~"$site", line=~"$line"'
MACHINE = 'site=~"$site", line=~"$line", machine=~"$machine"'


def wall() -> dict[str, Any]:
    machine_colours = [
        override(f".*: {bucket}$", {"color": fixed(colour)}, regex=True)
        for bucket, colour in MACHINE_COLOURS.items()
    ]
    now, closed = 'window="$window", state="current"', 'window="$window", state="closed"'
    today = 'window="$day_window", state="current"'
    panels = [
        stat(
            "OEE per line - this hour",
            against_target(
                "oee",
                f"line:kpimon_oee:ratio{{{LINE}, {now}}}",
                OEE_TARGET,
                "site, line",
                "{{line}}",
                always_targeted=True,
            ),
            (0, 0, 12, 8),
            field_config(overrides=case_colours("oee")),
            text={"titleSize": 28, "valueSize": 80},
            description="Provisional OEE of the open window (all lines' machines summed, as "
            f"the alerts). {TARGET_NOTE}",
        ),
        stat(
            "OEE per line - last closed",
            against_target(
                "oee",
                f"line:kpimon_oee:ratio{{{LINE}, {closed}}}",
                OEE_TARGET,
                "site, line",
                "{{line}}",
                always_targeted=True,
            ),
            (12, 0, 6, 8),
            field_config(overrides=case_colours("oee")),
            text={"titleSize": 22, "valueSize": 56},
            description="The last closed window: what KpimonOEEBelowTarget judges. " + TARGET_NOTE,
        ),
        stat(
            "MTTR per line - today",
            against_target(
                "mttr",
                f'max by (site, line) (kpimon_mttr_seconds{{scope="line", {LINE}, {today}}})',
                'max by (site, line) (kpimon_target_seconds{kpi="mttr", machine="", line!=""})',
                "site, line",
                "{{line}}",
                lower_is_better=True,
            ),
            (18, 0, 6, 8),
            field_config("s", decimals=0, minmax=None, overrides=case_colours("mttr")),
            text={"titleSize": 22, "valueSize": 48},
            description="Mean time to repair = down time / failures (transitions into down) "
            "of the day so far; no failure, no value. Red above the line's configured MTTR "
            "target (engine.targets mttr), green at or below it, blue with no target.",
        ),
        bargauge(
            "Availability x performance x quality - this hour",
            [
                t
                for part in ("availability", "performance", "quality")
                for t in against_target(
                    part,
                    f"line:kpimon_{part}:ratio{{{LINE}, {now}}}",
                    f'max by (site, line) (kpimon_target_ratio{{kpi="{part}", machine="", '
                    'line!=""})',
                    "site, line",
                    f"{{{{line}}}} {part}",
                )
            ],
            (0, 8, 12, 8),
            field_config(overrides=case_colours("availability", "performance", "quality")),
            description="OEE's three factors per line, from summed components. Red below the "
            "line's configured target for the factor, green at or above it, blue with no "
            "target configured.",
        ),
        timeseries(
            "OEE per line - closed windows, dashed: target",
            [
                target(f"line:kpimon_oee:ratio{{{LINE}, {closed}}}", "{{line}}"),
                target(f"line:kpimon_oee_target:ratio{{{LINE}}}", "{{line}} target"),
            ],
            (12, 8, 12, 8),
            field_config(
                minmax=None,
                custom={"drawStyle": "line", "lineInterpolation": "stepBefore"},
                overrides=[
                    override(
                        ".* target$",
                        {"custom.lineStyle": {"fill": "dash", "dash": [10, 10]}},
                        regex=True,
                    )
                ],
            ),
            description="Each closed window's OEE, stepping when the next one closes.",
        ),
        stat(
            "Machines",
            [
                target(
                    f"kpimon_machine_state{{{MACHINE}}} == 1",
                    "{{machine}}: {{bucket}}",
                    instant=True,
                )
            ],
            (0, 16, 24, 7),
            field_config("none", decimals=None, minmax=None, overrides=machine_colours),
            text_mode="name",
            text={"titleSize": 22},
            description="What each machine is doing now: green running, yellow idle, red down, "
            "blue setup, grey planned stop, purple no data (silent).",
        ),
        bargauge(
            "Downtime by reason - today",
            [
                target(
                    "topk(8, sum by (reason) "
                    f'(kpimon_downtime_seconds{{scope="machine", {MACHINE}, {today}}}))',
                    "{{reason}}",
                    instant=True,
                )
            ],
            (0, 23, 8, 8),
            field_config("s", decimals=0, minmax=None, custom=None),
            description="Loss time (down, setup, idle) of the selected machines by reason "
            "code, the day so far; the 8 largest.",
        ),
        stat(
            "Perfect orders - today",
            against_target(
                "perfect_order",
                'segment:kpimon_perfect_order:ratio{direction="outbound", segment=~"$segment", '
                'window="$order_window", state="current"}',
                PERFECT_ORDER_TARGET,
                "direction, segment",
                "Segment {{segment}}",
                always_targeted=True,
            ),
            (8, 23, 8, 8),
            field_config(overrides=case_colours("perfect_order")),
            text={"titleSize": 22, "valueSize": 56},
            description="Outbound orders decided today that were perfect. " + TARGET_NOTE,
        ),
        table(
            "Active alerts",
            [
                target(
                    "sum by (alertname, severity, site, line, machine, chart, direction, segment) "
                    '(ALERTS{alertstate="firing", alertname=~"Kpimon.*"})',
                    table=True,
                )
            ],
            (16, 23, 8, 8),
            field_config(
                "none",
                decimals=None,
                minmax=None,
                overrides=[
                    override(
                        "severity",
                        {
                            "custom.cellOptions": {"type": "color-background"},
                            "mappings": [
                                {
                                    "type": "value",
                                    "options": {
                                        "critical": {"color": "red", "index": 0},
                                        "warning": {"color": "orange", "index": 1},
                                    },
                                }
                            ],
                        },
                    )
                ],
            ),
            cell_height="lg",
            transformations=[
                {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}
            ],
        ),
    ]
    variables = [
        *plant_vars(),
        window_var(),
        window_var("day_window", default="1d"),
        query_var("segment", 'label_values(kpimon_orders{direction="outbound"}, segment)'),
        window_var("order_window", "kpimon_orders", "1d"),
    ]
    return dashboard(
        "kpimon-wall",
        "kpimon wall",
        panels,
        variables,
        refresh="30s",
        tags=("wall",),
        description="For a TV on the shop floor: OEE per line against its target, its "
        "factors and trend, MTTR, machine states, downtime by reason, perfect orders, "
        "active alerts.",
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


def orders() -> dict[str, Any]:
    sel = 'direction=~"$direction", segment=~"$segment", window="$order_window"'
    closed = f'{sel}, state="closed"'
    share = [
        target(
            f'kpimon_orders{{kind="{kind}", {closed}}} / ignoring (kind) '
            f'(kpimon_orders{{kind="decided", {closed}}} > 0)',
            f"{{{{direction}}}} {{{{segment}}}} {label}",
        )
        for kind, label in (
            ("on_time", "on time"),
            ("in_full", "in full"),
            ("damage_free", "damage free"),
            ("documents_ok", "documents OK"),
        )
    ]
    chain = 'window="$chain_window"'
    neutral = field_config(color=fixed("blue"))

    def perfect(state: str) -> list[dict[str, Any]]:
        return against_target(
            "perfect_order",
            f'segment:kpimon_perfect_order:ratio{{{sel}, state="{state}"}}',
            PERFECT_ORDER_TARGET,
            "direction, segment",
            "{{direction}} {{segment}}",
            always_targeted=True,
        )

    def policy(kpi: str) -> str:
        """A segment policy's configured target (engine.policies), one per segment."""
        return f'max by (direction, segment) (kpimon_target_ratio{{kpi="{kpi}", segment!=""}})'

    panels = [
        stat(
            "Perfect-order rate - current",
            perfect("current"),
            (0, 0, 12, 6),
            field_config(overrides=case_colours("perfect_order")),
            description=TARGET_NOTE,
        ),
        stat(
            "Perfect-order rate - last closed",
            perfect("closed"),
            (12, 0, 12, 6),
            field_config(overrides=case_colours("perfect_order")),
            description="What KpimonPerfectOrderBelowTarget judges (at 1d). " + TARGET_NOTE,
        ),
        bargauge(
            "Components - last closed (share of decided orders)",
            share,
            (0, 6, 12, 9),
            neutral,
            description="No targets are set for the components: one colour.",
        ),
        timeseries(
            "True rate vs component product",
            [
                target(f"kpimon_perfect_order_ratio{{{closed}}}", "{{direction}} {{segment}} true"),
                target(
                    f"kpimon_perfect_order_component_product_ratio{{{closed}}}",
                    "{{direction}} {{segment}} product",
                ),
            ],
            (12, 6, 12, 9),
            field_config(minmax=None),
            description="The component product equals the true rate only when failures are "
            "independent.",
        ),
        bargauge(
            "OTIF - last closed",
            against_target(
                "otif",
                f"segment:kpimon_otif:ratio{{{closed}}}",
                policy("otif"),
                "direction, segment",
                "{{direction}} {{segment}}",
            ),
            (0, 15, 8, 8),
            field_config(overrides=case_colours("otif")),
            description="Red below the segment's configured OTIF target (engine.policies "
            "otif), green at or above it, blue with none configured.",
        ),
        bargauge(
            "Fill rates - last closed",
            [
                target(f"kpimon_line_fill_ratio{{{closed}}}", "{{direction}} {{segment}} lines"),
                target(f"kpimon_unit_fill_ratio{{{closed}}}", "{{direction}} {{segment}} units"),
                *against_target(
                    "order_fill",
                    f"max by (direction, segment) (kpimon_order_fill_ratio{{{closed}}})",
                    policy("order_fill_rate"),
                    "direction, segment",
                    "{{direction}} {{segment}} orders",
                ),
            ],
            (8, 15, 8, 8),
            field_config(color=fixed("blue"), overrides=case_colours("order_fill")),
            description="Order fill rate: red below the segment's configured target "
            "(engine.policies order_fill_rate), green at or above it, blue with none; line "
            "and unit fill rates have no target (blue).",
        ),
        stat(
            "Decided orders - last closed",
            [
                target(
                    f'kpimon_orders{{kind="decided", {closed}}}',
                    "{{direction}} {{segment}}",
                    instant=True,
                )
            ],
            (16, 15, 4, 8),
            field_config("none", decimals=0, minmax=None),
            color_mode="none",
        ),
        stat(
            "Mean order cycle time",
            [
                target(
                    f"kpimon_order_cycle_time_seconds{{{closed}}}",
                    "{{direction}} {{segment}}",
                    instant=True,
                )
            ],
            (20, 15, 4, 8),
            field_config("s", decimals=1, minmax=None),
            color_mode="none",
        ),
        stat(
            "Chain of efficiencies - last closed",
            [
                target(f"kpimon_ope_ratio{{{chain}}}", "OPE (procurement)", instant=True),
                target(f"kpimon_chain_oee_ratio{{{chain}}}", "OEE (plant)", instant=True),
                target(f"kpimon_ole_ratio{{{chain}}}", "OLE (logistics)", instant=True),
                target(f"kpimon_supply_chain_efficiency_ratio{{{chain}}}", "Overall", instant=True),
            ],
            (0, 23, 12, 7),
            neutral,
            description="Overall = OPE x OEE x OLE; quality = undamaged with accurate "
            "documents, delivery = on time and in full. No targets: one colour.",
        ),
        bargauge(
            "Chain factors - last closed",
            [
                target(f"kpimon_chain_quality_ratio{{{chain}}}", "{{direction}} quality"),
                target(f"kpimon_chain_delivery_ratio{{{chain}}}", "{{direction}} delivery"),
            ],
            (12, 23, 12, 7),
            neutral,
        ),
    ]
    variables = [
        query_var("direction", "label_values(kpimon_orders, direction)"),
        query_var("segment", 'label_values(kpimon_orders{direction=~"$direction"}, segment)'),
        window_var("order_window", "kpimon_orders", "1d"),
        window_var("chain_window", "kpimon_ope_ratio", "1d"),
    ]
    return dashboard(
        "kpimon-orders",
        "kpimon orders",
        panels,
        variables,
        refresh="1m",
        time_from="now-7d",
        tags=("orders",),
        description="Perfect order (SCOR RL.1.1), its components, OTIF, fill rates per "
        "segment, and the chain of efficiencies.",
    )


def pipeline() -> dict[str, Any]:
    w = 'job=~"$job", instance=~"$instance"'
    rate = "[$__rate_interval]"
    seconds = field_config("s", decimals=0, minmax=None)
    panels = [
        stat(
            "Workers",
            [target(f"up{{{w}}}", "{{instance}}", instant=True)],
            (0, 0, 8, 5),
            field_config(
                "none",
                [(None, "red"), (1, "green")],
                decimals=None,
                minmax=None,
                mappings=[
                    {"type": "value", "options": {"0": {"text": "DOWN"}, "1": {"text": "UP"}}}
                ],
            ),
        ),
        stat(
            "Engine partitions, open orders, machines",
            [
                target(
                    f"sum(kpimon_engine_partitions_assigned{{{w}}})", "partitions", instant=True
                ),
                target(f"sum(kpimon_open_orders{{{w}}})", "open orders", instant=True),
                target(f"sum(kpimon_machines_tracked{{{w}}})", "machines", instant=True),
            ],
            (8, 0, 16, 5),
            field_config("none", decimals=0, minmax=None),
            color_mode="none",
        ),
        timeseries(
            "Events received per second",
            [
                target(
                    f"sum by (topic) (rate(kpimon_events_received_total{{{w}}}{rate}))",
                    "{{topic}} events",
                ),
                target(
                    f"sum by (topic) (rate(kpimon_messages_consumed_total{{{w}}}{rate}))",
                    "{{topic}} messages",
                ),
            ],
            (0, 5, 12, 8),
            field_config("ops", decimals=None, minmax=None),
        ),
        timeseries(
            "Consumer lag per input partition",
            [target(f"kpimon_consumer_lag_messages{{{w}}}", "{{topic}}:{{partition}}")],
            (12, 5, 12, 8),
            field_config("none", decimals=0, minmax=None),
        ),
        timeseries(
            "Dead letters per second, by topic and reason",
            [
                target(
                    f"sum by (topic, reason) (rate(kpimon_dead_letters_total{{{w}}}{rate}))",
                    "{{topic}} {{reason}}",
                )
            ],
            (0, 13, 12, 8),
            field_config("ops", decimals=None, minmax=None),
        ),
        bargauge(
            "Dead letters since start, by topic and reason",
            [
                target(
                    f"sum by (topic, reason) (kpimon_dead_letters_total{{{w}}})",
                    "{{topic}} {{reason}}",
                )
            ],
            (12, 13, 12, 8),
            field_config("none", [(None, "green"), (1, "red")], decimals=0, minmax=None),
        ),
        timeseries(
            "Late and duplicate events per second",
            [
                target(
                    f"sum by (source) (rate(kpimon_late_events_total{{{w}}}{rate}))",
                    "{{source}} late",
                ),
                target(
                    f"sum by (source) (rate(kpimon_duplicate_events_total{{{w}}}{rate}))",
                    "{{source}} duplicate",
                ),
            ],
            (0, 21, 12, 8),
            field_config("ops", decimals=None, minmax=None),
        ),
        timeseries(
            "Time since the last event received, per source",
            [target(f"time() - kpimon_last_event_received_timestamp_seconds{{{w}}}", "{{source}}")],
            (12, 21, 12, 8),
            seconds,
        ),
        timeseries(
            "Event time: behind the wall clock, and window-close delay",
            [
                target(
                    f"time() - kpimon_watermark_timestamp_seconds{{{w}}}",
                    "watermark behind wall clock (partition {{partition}})",
                ),
                target(
                    f"kpimon_window_close_delay_seconds{{{w}}}",
                    "close delay: watermark - closed frontier (partition {{partition}})",
                ),
            ],
            (0, 29, 12, 8),
            seconds,
        ),
        timeseries(
            "Records and alerts published per second",
            [
                target(
                    f"sum by (output) (rate(kpimon_published_messages_total{{{w}}}{rate}))",
                    "{{output}}",
                )
            ],
            (12, 29, 12, 8),
            field_config("ops", decimals=None, minmax=None),
        ),
        bargauge(
            "Machine silence (event time since its last event)",
            [target(f"kpimon_machine_silence_seconds{{{MACHINE}}}", "{{machine}}")],
            (0, 37, 24, 9),
            field_config("s", [(None, "green"), (600, "red")], decimals=0, minmax=None),
        ),
        timeseries(
            "Messages read again, read back, lost (per second)",
            [
                target(
                    f"sum by (topic) (rate(kpimon_redelivered_messages_total{{{w}}}{rate}))",
                    "{{topic}} redelivered",
                ),
                target(
                    f"sum by (stage, outcome) (rate(kpimon_skipped_messages_total{{{w}}}{rate}))",
                    "{{stage}} skipped, {{outcome}}",
                ),
            ],
            (0, 46, 12, 8),
            field_config(
                "ops",
                decimals=None,
                minmax=None,
                overrides=[override(".* lost$", {"color": fixed("red")}, regex=True)],
            ),
            description="Redelivered: input read again after a restart or rebalance (counted "
            "once, nothing sent twice). Skipped: offsets the consumer did not hand over, read "
            "back from the topic (refilled) or gone (lost: KpimonMessagesLost).",
        ),
        bargauge(
            "Skipped, lost and redelivered since start",
            [
                target(
                    f"sum by (stage, outcome) (kpimon_skipped_messages_total{{{w}}})",
                    "{{stage}} skipped, {{outcome}}",
                ),
                target(
                    f"sum by (topic) (kpimon_redelivered_messages_total{{{w}}})",
                    "{{topic}} redelivered",
                ),
            ],
            (12, 46, 6, 8),
            field_config(
                "none",
                [(None, "green"), (1, "yellow")],
                decimals=0,
                minmax=None,
                overrides=[
                    override(
                        ".* lost$",
                        {"thresholds": thresholds([(None, "green"), (1, "red")])},
                        regex=True,
                    )
                ],
            ),
            description="Counts since each worker started; any lost message is red.",
        ),
        stat(
            "Outputs undelivered now",
            [
                target(
                    f"sum by (stage) (kpimon_outputs_undelivered{{{w}}})", "{{stage}}", instant=True
                )
            ],
            (18, 46, 6, 8),
            field_config("none", [(None, "green"), (1, "red")], decimals=0, minmax=None),
            description="Outputs not delivered after 5 sends and being sent again; their "
            "input is held back meanwhile (KpimonOutputsUndelivered, /healthz 503).",
        ),
    ]
    variables = [
        query_var("job", "label_values(kpimon_worker_up, job)"),
        query_var("instance", 'label_values(kpimon_worker_up{job=~"$job"}, instance)'),
        *plant_vars(),
    ]
    return dashboard(
        "kpimon-pipeline",
        "kpimon pipeline health",
        panels,
        variables,
        refresh="30s",
        time_from="now-6h",
        tags=("pipeline",),
        description="Workers, throughput, lag, dead letters, late events, event-time "
        "progress, messages read again, skipped or lost, outputs held back.",
    )


DASHBOARDS = {"wall": wall, "pchart": pchart, "orders": orders, "pipeline": pipeline}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"{name}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
