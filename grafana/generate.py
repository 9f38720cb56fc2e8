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
    bargauge,
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
    window_var,
)

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

OEE_BANDS = [(None, "red"), (0.60, "yellow"), (0.85, "green")]
ORDER_BANDS = [(None, "red"), (0.85, "yellow"), (0.95, "green")]
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
    big = {"titleSize": 28, "valueSize": 80}
    oee = field_config(bands=OEE_BANDS)
    machine_colours = [
        override(f".*: {bucket}$", {"color": fixed(colour)}, regex=True)
        for bucket, colour in MACHINE_COLOURS.items()
    ]
    panels = [
        stat(
            "OEE per line - this hour",
            [
                target(
                    f'kpimon_oee_ratio{{scope="line", {LINE}, window="$window", state="current"}}',
                    "{{line}}",
                    instant=True,
                )
            ],
            (0, 0, 16, 9),
            oee,
            text=big,
            description="Provisional OEE of the open window. Red below the 60% target, "
            "yellow on target, green from 85%.",
        ),
        stat(
            "OEE per line - last closed",
            [
                target(
                    f'kpimon_oee_ratio{{scope="line", {LINE}, window="$window", state="closed"}}',
                    "{{line}}",
                    instant=True,
                )
            ],
            (16, 0, 8, 9),
            oee,
            text={"titleSize": 22, "valueSize": 56},
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
            (0, 9, 24, 7),
            field_config("none", decimals=None, minmax=None, overrides=machine_colours),
            text_mode="name",
            text={"titleSize": 22},
            description="What each machine is doing now: green running, yellow idle, red down, "
            "blue setup, grey planned stop, purple no data (silent).",
        ),
        stat(
            "Perfect orders - today",
            [
                target(
                    'kpimon_perfect_order_ratio{direction="outbound", segment=~"$segment", '
                    'window="$order_window", state="current"}',
                    "Segment {{segment}}",
                    instant=True,
                )
            ],
            (0, 16, 12, 8),
            field_config(bands=ORDER_BANDS),
            text={"titleSize": 22, "valueSize": 56},
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
            (12, 16, 12, 8),
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
        description="For a TV on the shop floor: OEE per line, machine states, "
        "perfect orders, active alerts.",
    )


def pchart() -> dict[str, Any]:
    sel = 'chart=~"$chart", window="$window"'
    limits = [
        override(
            "UCL", {"color": fixed("red"), "custom.lineStyle": {"fill": "dash", "dash": [10, 10]}}
        ),
        override(
            "LCL", {"color": fixed("red"), "custom.lineStyle": {"fill": "dash", "dash": [10, 10]}}
        ),
        override("centre line", {"color": fixed("green")}),
        override("p", {"color": fixed("blue")}),
        override(
            "out of control",
            {"color": fixed("red"), "custom.drawStyle": "points", "custom.pointSize": 14},
        ),
    ]
    chart_fc = field_config(
        decimals=2,
        minmax=None,
        custom={
            "drawStyle": "line",
            "lineInterpolation": "stepAfter",
            "showPoints": "always",
            "pointSize": 6,
            "spanNulls": True,
        },
        overrides=limits,
    )
    panels = [
        timeseries(
            "$chart",
            [
                target(f"kpimon_pchart_proportion{{{sel}}}", "p"),
                target(f"kpimon_pchart_center{{{sel}}}", "centre line"),
                target(f"kpimon_pchart_ucl{{{sel}}}", "UCL"),
                target(f"kpimon_pchart_lcl{{{sel}}}", "LCL"),
                target(
                    f"kpimon_pchart_proportion{{{sel}}} and on (chart, window) "
                    f"(max by (chart, window) (kpimon_pchart_out_of_control{{{sel}}}) == 1)",
                    "out of control",
                ),
            ],
            (0, 0, 24, 9),
            chart_fc,
            repeat="chart",
            repeatDirection="v",
            maxPerRow=1,
            description="Latest closed subgroup of the chart: p = d/n, centre line, limits "
            "(they vary with n). Red points violate a Western Electric rule.",
        ),
        stat(
            "Rules violated by the latest point",
            [
                target(
                    f"kpimon_pchart_out_of_control{{{sel}}} == 1",
                    "{{chart}} {{rule}}",
                    instant=True,
                )
            ],
            (0, 9, 12, 6),
            field_config("none", [(None, "red")], decimals=None, minmax=None),
            text_mode="name",
        ),
        table(
            "Latest point per chart",
            [
                target(f"kpimon_pchart_proportion{{{sel}}}", table=True),
                target(f"kpimon_pchart_ucl{{{sel}}}", table=True),
                target(f"kpimon_pchart_subgroup_size{{{sel}}}", table=True),
                target(f"kpimon_pchart_nonconforming{{{sel}}}", table=True),
                target(f"kpimon_pchart_info{{{sel}}}", table=True),
            ],
            (12, 9, 12, 6),
            field_config("none", decimals=4, minmax=None),
            transformations=[
                {"id": "merge", "options": {}},
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True, "Value #E": True, "job": True},
                        "renameByName": {
                            "Value #A": "p",
                            "Value #B": "UCL",
                            "Value #C": "n",
                            "Value #D": "d",
                        },
                    },
                },
            ],
        ),
    ]
    variables = [
        *plant_vars()[:2],
        window_var(metric="kpimon_pchart_proportion"),
        query_var(
            "chart",
            'label_values(kpimon_pchart_proportion{chart=~"scrap/$site/$line|orders/.+"}, chart)',
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
    panels = [
        stat(
            "Perfect-order rate - current",
            [
                target(
                    f'kpimon_perfect_order_ratio{{{sel}, state="current"}}',
                    "{{direction}} {{segment}}",
                    instant=True,
                )
            ],
            (0, 0, 12, 6),
            field_config(bands=ORDER_BANDS),
        ),
        stat(
            "Perfect-order rate - last closed",
            [
                target(
                    f"kpimon_perfect_order_ratio{{{closed}}}",
                    "{{direction}} {{segment}}",
                    instant=True,
                )
            ],
            (12, 0, 12, 6),
            field_config(bands=ORDER_BANDS),
        ),
        bargauge(
            "Components - last closed (share of decided orders)",
            share,
            (0, 6, 12, 9),
            field_config(bands=ORDER_BANDS),
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
            [target(f"kpimon_otif_ratio{{{closed}}}", "{{direction}} {{segment}}")],
            (0, 15, 8, 8),
            field_config(bands=ORDER_BANDS),
        ),
        bargauge(
            "Fill rates - last closed",
            [
                target(f"kpimon_line_fill_ratio{{{closed}}}", "{{direction}} {{segment}} lines"),
                target(f"kpimon_unit_fill_ratio{{{closed}}}", "{{direction}} {{segment}} units"),
                target(f"kpimon_order_fill_ratio{{{closed}}}", "{{direction}} {{segment}} orders"),
            ],
            (8, 15, 8, 8),
            field_config(bands=ORDER_BANDS),
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
            field_config(bands=[(None, "red"), (0.5, "yellow"), (0.8, "green")]),
            description="Overall = OPE x OEE x OLE; quality = undamaged with accurate "
            "documents, delivery = on time and in full.",
        ),
        bargauge(
            "Chain factors - last closed",
            [
                target(f"kpimon_chain_quality_ratio{{{chain}}}", "{{direction}} quality"),
                target(f"kpimon_chain_delivery_ratio{{{chain}}}", "{{direction}} delivery"),
            ],
            (12, 23, 12, 7),
            field_config(bands=ORDER_BANDS),
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
        description="Workers, throughput, lag, dead letters, late events, event-time progress.",
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
