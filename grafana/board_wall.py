"""The wall: a TV on the shop floor (uid kpimon-wall)."""

from __future__ import annotations

from typing import Any

from panels import (
    LINE,
    MACHINE,
    MACHINE_COLOURS,
    OEE_TARGET,
    PERFECT_ORDER_TARGET,
    TARGET_NOTE,
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
    timeseries,
    window_var,
)


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
