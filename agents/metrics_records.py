"""KPI metric families: output records, machine states and configured targets.

Every sample is a record's value as is (or in base units: microseconds and
days as seconds, RFC 3339 times as Unix seconds): no KPI arithmetic here.
`RECORD_FAMILIES` is the one table from a record's kind (`record["kpi"]`)
to the function exporting it; `export_record` says when a kind has none,
so the collector can log it (`agents.record_kinds`) instead of dropping it
in silence. Labels and naming are described in `agents.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.metrics_families import (
    CHAIN_VALUES,
    OEE_VALUES,
    ORDER_COUNTS,
    ORDER_VALUES,
    PCHART_VALUES,
    SAFETY_STOCK_DAYS,
    SAFETY_STOCK_SAMPLES,
    SAFETY_STOCK_VALUES,
    Families,
    iso_seconds,
    seconds,
)
from streams.engine import Engine
from streams.metrics_view import WE_RULES, machine_status
from streams.oee import STATE_BUCKETS
from streams.policies import OEE_FIELDS, POLICY_FIELDS, Targets
from streams.safety_stock import DAY_US
from streams.timeutil import US

TARGET_LABELS = ("kpi", "site", "line", "machine", "direction", "segment")

RecordExport = Callable[[Families, dict[str, Any], str], None]
"""(families, record, state) -> None; `state` is `current` or `closed`."""


def _oee(out: Families, r: dict[str, Any], state: str) -> None:
    labels = {
        "scope": r["scope"],
        "site": r["site"],
        "line": r.get("line", ""),
        "machine": r.get("machine", ""),
        "window": r["window"],
        "state": state,
    }
    for field, (name, help_text) in OEE_VALUES.items():
        out.gauge(name, help_text, labels, r[field])
    for bucket in STATE_BUCKETS:
        out.gauge(
            "kpimon_time_seconds",
            "Time per bucket: running, idle, down, setup, planned_stop, no_data.",
            {**labels, "bucket": bucket},
            r[f"{bucket}_s"],
        )
    for kind in ("good", "total"):
        out.gauge("kpimon_units", "Units produced, by kind.", {**labels, "kind": kind}, r[kind])
    out.gauge(
        "kpimon_units_outside_running",
        "Units counted while the machine's held state was not running.",
        labels,
        r["units_outside_running"],
    )
    out.declare("gauge", "kpimon_downtime_seconds", "Loss time by reason.", (*labels, "reason"))
    for reason, loss_s in r["downtime_by_reason_s"].items():
        out.gauge(
            "kpimon_downtime_seconds",
            "Loss time (down, setup, idle) by reason code.",
            {**labels, "reason": reason},
            loss_s,
        )


def _orders(out: Families, r: dict[str, Any], state: str) -> None:
    labels = {k: r[k] for k in ("direction", "segment", "window")} | {"state": state}
    for field, (name, help_text) in ORDER_VALUES.items():
        out.gauge(name, help_text, labels, r[field])
    for kind in ORDER_COUNTS:
        out.gauge(
            "kpimon_orders",
            "Decided orders, and those perfect / on time / in full / ... among them.",
            {**labels, "kind": kind},
            r[kind],
        )
    for kind, field in (("ordered", "lines_ordered"), ("in_full", "lines_in_full")):
        out.gauge("kpimon_order_lines", "Order lines, by kind.", {**labels, "kind": kind}, r[field])
    for kind, field in (("ordered", "units_ordered"), ("delivered", "units_delivered")):
        out.gauge(
            "kpimon_order_units", "Units ordered and delivered.", {**labels, "kind": kind}, r[field]
        )


def _pchart(out: Families, r: dict[str, Any], state: str) -> None:
    """Only the latest closed point of a chart: no `state` label."""
    labels = {"chart": r["chart"], "window": r["window"]}
    for field, (name, help_text) in PCHART_VALUES.items():
        out.gauge(name, help_text, labels, r.get(field))
    for rule in WE_RULES:
        out.gauge(
            "kpimon_pchart_out_of_control",
            "1 when the latest point violates the Western Electric rule, else 0.",
            {**labels, "rule": rule},
            1 if rule in r["violations"] else 0,
        )
    out.gauge(
        "kpimon_pchart_low_np",
        "1 when n x p-bar is below min_np (normal approximation poor).",
        labels,
        1 if r.get("low_count") else 0,
    )
    out.gauge(
        "kpimon_pchart_info",
        "Phase (I, II) and method (standard, laney) of the chart; always 1.",
        {**labels, "phase": r["phase"], "method": r["method"]},
        1,
    )
    out.gauge(
        "kpimon_pchart_window_end_timestamp_seconds",
        "End of the latest point's window, Unix seconds.",
        labels,
        iso_seconds(r["end"]),
    )


def _chain(out: Families, r: dict[str, Any], state: str) -> None:
    """Closed windows only: no `state` label."""
    labels = {"window": r["window"]}
    for field, (name, help_text) in CHAIN_VALUES.items():
        out.gauge(name, help_text, labels, r[field])
    for direction in ("inbound", "outbound"):
        d = {**labels, "direction": direction}
        out.gauge(
            "kpimon_chain_quality_ratio",
            "Share of decided orders undamaged with accurate documents.",
            d,
            r[f"{direction}_quality"],
        )
        out.gauge(
            "kpimon_chain_delivery_ratio",
            "Share of decided orders on time and in full.",
            d,
            r[f"{direction}_delivery"],
        )
        out.gauge(
            "kpimon_chain_decided_orders",
            "Decided orders behind the chain.",
            d,
            r[f"{direction}_decided"],
        )


def _safety_stock(out: Families, r: dict[str, Any], state: str) -> None:
    """The latest closed window of each SKU (`streams.safety_stock`): no `state` label."""
    labels = {"sku": r["sku"], "window": r["window"]}
    for field, (name, help_text) in SAFETY_STOCK_VALUES.items():
        out.gauge(name, help_text, labels, r[field])
    for field, (name, help_text) in SAFETY_STOCK_DAYS.items():
        days = r[field]
        out.gauge(name, help_text, labels, None if days is None else days * (DAY_US / US))
    for kind, field in SAFETY_STOCK_SAMPLES.items():
        out.gauge(
            "kpimon_safety_stock_samples",
            "Samples behind the statistics in the horizon: kind=demand_days (days of "
            "demand, from the SKU's first) or lead_times (complete purchase orders).",
            {**labels, "kind": kind},
            r[field],
        )
    out.gauge(
        "kpimon_safety_stock_insufficient_data",
        "1 when there are too few demand days or lead times for a safety stock, else 0.",
        labels,
        1 if r["status"] == "insufficient_data" else 0,
    )
    out.gauge(
        "kpimon_safety_stock_window_end_timestamp_seconds",
        "End of the window the SKU's latest record closed with, Unix seconds.",
        labels,
        iso_seconds(r["end"]),
    )


RECORD_FAMILIES: dict[str, RecordExport] = {
    "oee": _oee,
    "perfect_order": _orders,
    "pchart": _pchart,
    "chain": _chain,
    "safety_stock": _safety_stock,
}
"""Record kind (`record["kpi"]`) -> the function exporting its families."""


def export_record(out: Families, record: dict[str, Any], state: str) -> bool:
    """Add a record's samples; False when its kind has no metric families."""
    export = RECORD_FAMILIES.get(record["kpi"])
    if export is None:
        return False
    export(out, record, state)
    return True


def export_machines(out: Families, engine: Engine) -> None:
    """Each machine's current bucket, silence and PLC counter resets."""
    for m in machine_status(engine):
        labels = {"site": m.site, "line": m.line, "machine": m.machine}
        for bucket in STATE_BUCKETS:
            out.gauge(
                "kpimon_machine_state",
                "1 for the bucket the machine is in now (as of the watermark), else 0.",
                {**labels, "bucket": bucket},
                1 if bucket == m.bucket else 0,
            )
        out.gauge(
            "kpimon_machine_silence_seconds",
            "Event time since the machine's newest event (watermark - newest event).",
            labels,
            seconds(m.silence_us),
        )
        out.gauge(
            "kpimon_machine_silent",
            "1 when the machine is running (as last said), in a shift, and has sent nothing "
            "for longer than engine.silence_alert; else 0.",
            labels,
            1 if m.silent else 0,
        )
        for kind, value in (("reset", m.counter_resets), ("wrap", m.counter_wraps)):
            out.counter(
                "kpimon_plc_resets",
                "PLC counter readings below the previous one: kind=reset (counter "
                "restarted) or wrap (passed engine.counter_modulus).",
                {**labels, "kind": kind},
                value,
            )
        out.gauge(
            "kpimon_machine_last_event_timestamp_seconds",
            "Event time (ts) of the machine's newest event, Unix seconds.",
            labels,
            seconds(m.last_event_us),
        )


def export_targets(out: Families, targets: Targets) -> None:
    """Configured targets (engine.targets, engine.policies), whatever data there is."""
    kpi_of = {field: kpi for kpi, field in (OEE_FIELDS | POLICY_FIELDS).items()}
    help_ratio = "Configured target: OEE parts per line or machine, rates per segment."
    help_seconds = "Configured MTTR target per line or machine (at or below is attained)."
    out.declare("gauge", "kpimon_target_ratio", help_ratio, TARGET_LABELS)
    entities = [((s, ln, ""), t) for (s, ln), t in targets.lines.items()]
    entities += list(targets.machines.items())
    for (site, line, machine), found in sorted(entities):
        where = {"site": site, "line": line, "machine": machine}
        for field, value in found.items():
            kpi = kpi_of[field]
            if field == "mttr_s":
                out.gauge("kpimon_target_seconds", help_seconds, {"kpi": kpi, **where}, value)
            else:
                labels = {"kpi": kpi, **where, "direction": "", "segment": ""}
                out.gauge("kpimon_target_ratio", help_ratio, labels, value)
    for segment, found in sorted(targets.segments.items()):
        for field, value in found.items():
            labels = {"kpi": kpi_of[field], "site": "", "line": "", "machine": ""}
            labels |= {"direction": "outbound", "segment": segment}
            out.gauge("kpimon_target_ratio", help_ratio, labels, value)
