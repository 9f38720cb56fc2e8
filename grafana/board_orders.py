"""Orders: perfect order, its components, OTIF, fill rates, the chain (uid kpimon-orders)."""

from __future__ import annotations

from typing import Any

from panels import (
    PERFECT_ORDER_TARGET,
    TARGET_NOTE,
    against_target,
    bargauge,
    case_colours,
    dashboard,
    field_config,
    fixed,
    query_var,
    stat,
    target,
    timeseries,
    window_var,
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
