"""Service policies and performance targets, judged on closed windows.

Targets come from the configuration (`EngineConfig.policies` per customer
segment, `EngineConfig.targets` per line or machine). When a window of a
judged size closes, every record with targets gets them beside its values:

    "targets":  {"oee": 0.65, "mttr_s": 600.0}
    "attained": {"oee": false, "mttr_s": true}     (null when the value is null)

and each miss raises one `target_miss` alert. A window closes once, so an
(entity, KPI, window) has at most one alert, and its `alert_id` is a hash of
exactly those: a replay or a republished window gives the same id.

Which record a target applies to:

    target (site, line)            -> the line's oee record
    target (site, line, machine)   -> that machine's oee record only
    a machine with no target of its own is not judged (no inheritance)
    policy of segment S            -> perfect_order records (outbound, S)

Attained means value >= target, except MTTR: at or below its target.
"""

from __future__ import annotations

from typing import Any

from streams.config import EngineConfig
from streams.orders import OrderRule
from streams.records import OeeRecord, PerfectOrderRecord, Record, target_miss_alert
from streams.timeutil import US, parse_duration_us
from streams.windows import Window

LOWER_IS_BETTER = frozenset({"mttr_s"})
"""Record fields whose target is a ceiling, not a floor."""

OEE_FIELDS = {
    "oee": "oee",
    "availability": "availability",
    "performance": "performance",
    "quality": "quality",
    "mttr": "mttr_s",
}
"""Target setting -> the oee record field it is judged on."""

POLICY_FIELDS = {
    "perfect_order": "perfect_order_rate",
    "otif": "otif_rate",
    "order_fill_rate": "order_fill_rate",
}
"""Policy setting -> the perfect_order record field it is judged on."""


def order_rules(config: EngineConfig) -> dict[str, OrderRule]:
    """Per-order rules (MOQ, response time) of the segments that set any."""
    rules = {}
    for segment, policy in config.policies.items():
        if policy.min_order_qty is None and policy.response_time is None:
            continue
        response_us = (
            None if policy.response_time is None else parse_duration_us(policy.response_time)
        )
        rules[segment] = OrderRule(policy.min_order_qty, response_us)
    return rules


def attained(field: str, value: float | None, target: float) -> bool | None:
    """value >= target (value <= target for MTTR); None when the value is undefined.

    >>> attained("oee", 0.64, 0.65), attained("mttr_s", 600.0, 600.0), attained("oee", None, 0.65)
    (False, True, None)
    """
    if value is None:
        return None
    return value <= target if field in LOWER_IS_BETTER else value >= target


def shortfall(field: str, value: float, target: float) -> float:
    """How far a miss is from its target, relative to the target (0.1 = 10 %)."""
    gap = value - target if field in LOWER_IS_BETTER else target - value
    return gap / target if target else float("inf")


class Targets:
    """The configured targets, looked up by the entity of a record."""

    def __init__(self, config: EngineConfig) -> None:
        self.labels = frozenset(config.target_labels())
        self.critical_shortfall = config.target_critical_shortfall
        self.machines: dict[tuple[str, str, str], dict[str, float]] = {}
        self.lines: dict[tuple[str, str], dict[str, float]] = {}
        for t in config.targets:
            found = {}
            for setting, field in OEE_FIELDS.items():
                value = getattr(t, setting)
                if value is not None:
                    # MTTR is set as a duration and judged in seconds.
                    found[field] = parse_duration_us(value) / US if setting == "mttr" else value
            if t.machine is None:
                self.lines[t.site, t.line] = found
            else:
                self.machines[t.site, t.line, t.machine] = found
        self.segments: dict[str, dict[str, float]] = {}
        for segment, policy in config.policies.items():
            found = {
                field: getattr(policy, setting)
                for setting, field in POLICY_FIELDS.items()
                if getattr(policy, setting) is not None
            }
            if found:
                self.segments[segment] = found

    def of(self, record: Record) -> dict[str, float]:
        """The targets that apply to one closed-window record (empty: none)."""
        if isinstance(record, OeeRecord) and record["scope"] == "machine":
            return self.machines.get((record["site"], record["line"], record["machine"]), {})
        if isinstance(record, OeeRecord) and record["scope"] == "line":
            return self.lines.get((record["site"], record["line"]), {})
        if isinstance(record, PerfectOrderRecord) and record["direction"] == "outbound":
            return self.segments.get(record["segment"], {})
        return {}

    def judge(self, window: Window, records: list[Record]) -> list[dict[str, Any]]:
        """Add `targets` and `attained` to the targeted records; the misses' alerts."""
        if window.label not in self.labels:
            return []
        alerts = []
        for i, record in enumerate(records):
            targets = self.of(record)
            if not targets:
                continue
            record = records[i] = record.with_fields(
                targets=dict(targets),
                attained={f: attained(f, record[f], t) for f, t in targets.items()},
            )
            for field, target in targets.items():
                if record["attained"][field] is not False:
                    continue
                miss = shortfall(field, record[field], target)
                severity = "critical" if miss >= self.critical_shortfall else "warning"
                alerts.append(target_miss_alert(record, field, target, miss, severity))
        return alerts
