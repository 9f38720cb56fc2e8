"""Service policies and performance targets: validation, attainment, target_miss alerts,
minimum order quantity and response time."""

from __future__ import annotations

import doctest
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import streams.policies
from agents.settings import SettingsError, load_settings
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.perfect_order import OrderVerdict, PerfectOrderState
from streams.policies import attained, shortfall
from tests.eventfactory import at, closed, count, order, shipment, state
from tests.streams.helpers import run_events

LINE_TARGETS = {"site": "plant-1", "line": "line-1", "oee": 0.65, "mttr": "10m"}
PRESS_1_TARGETS = {"site": "plant-1", "line": "line-1", "machine": "press-1", "availability": 0.9}


def run(events: list[dict[str, Any]], **config: Any) -> tuple[list[dict], list[dict]]:
    cfg = {"windows": ["1m", "1h", "1d"], "allowed_lateness": "0s", "heartbeat_timeout": "1d"}
    engine = Engine(EngineConfig(**{**cfg, **config}))
    out = run_events(engine, (parse_event(e) for e in sorted(events, key=lambda e: e["ts"])))
    out.extend(engine.flush())
    return out.records, out.alerts


def select(records: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


# --- configuration --------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"policies": {"A": {"service_level": 1.2}}}, "policies.A.service_level"),
        ({"policies": {"A": {"service_level": 0.5}}}, "policies.A.service_level"),
        ({"policies": {"A": {"min_order_qty": -1}}}, "policies.A.min_order_qty"),
        ({"policies": {"A": {"colour": "red"}}}, "policies.A.colour"),
        ({"policies": {"A": {"otif": 1.5}}}, "policies.A.otif"),
        ({"policies": {"A": {"response_time": "soon"}}}, "policies.A.response_time"),
        ({"policies": {"A": {"response_time": "0s"}}}, "policies.A.response_time"),
        ({"targets": [{"site": "p", "line": "l"}]}, "sets no target"),
        ({"targets": [{"site": "p", "line": "l", "oee": 65}]}, "targets.0.oee"),
        ({"targets": [{"line": "l", "oee": 0.6}]}, "targets.0.site"),
        ({"targets": [LINE_TARGETS, {**LINE_TARGETS, "oee": 0.7}]}, "second target entry"),
        ({"target_windows": ["night"]}, "target_windows: 'night'"),
        ({"target_windows": ["15m"]}, "target_windows: '15m'"),
    ],
)
def test_bad_policies_and_targets_name_the_setting(settings: dict[str, Any], names: str) -> None:
    with pytest.raises(ValidationError, match=names.replace(".", r"\.")):
        EngineConfig(**settings)


def test_bad_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "kpimon.toml"
    path.write_text(
        '[engine.policies.A]\nservice_level = 1.2\nmin_order_qty = -5\ncolour = "red"\n'
    )
    with pytest.raises(SettingsError) as err:
        load_settings(path)
    message = str(err.value)
    for name in ("service_level", "min_order_qty", "colour"):
        assert f"engine.policies.A.{name}" in message


def test_policy_file_shape(tmp_path: Path) -> None:
    path = tmp_path / "kpimon.toml"
    path.write_text(
        """
[engine]
target_windows = ["1d"]

[engine.policies.A]
response_time = "24h"
order_fill_rate = 0.98
perfect_order = 0.95
otif = 0.95
min_order_qty = 10
consolidated_delivery = true
service_level = 0.98

[[engine.targets]]
site = "plant-1"
line = "line-1"
oee = 0.65
mttr = "10m"

[[engine.targets]]
site = "plant-1"
line = "line-1"
machine = "press-1"
availability = 0.9
"""
    )
    engine = load_settings(path).engine
    assert engine.policies["A"].service_level == 0.98
    assert engine.policies["A"].consolidated_delivery is True
    assert [t.machine for t in engine.targets] == [None, "press-1"]
    assert engine.target_labels() == ["1d"]


def test_default_judged_windows_are_all_but_the_smallest() -> None:
    assert EngineConfig().target_labels() == ["1h", "1d"]
    assert EngineConfig(windows=["1d"], pchart={"scrap_window": "1d"}).target_labels() == ["1d"]


# --- attainment and target_miss alerts -------------------------------------------


def two_presses() -> list[dict[str, Any]]:
    """line-1: press-1 (own target) and press-2 (none), two hours, then a planned stop.

            06:00        06:48   07:00              08:00
    press-1   |running.....|down...|running.............|planned_stop ...
    press-2   |running..............................|planned_stop ...

    press-1 06h: availability 48/60 = 0.8 < 0.9 (miss); one failure of 12 min.
    press-1 07h: availability 1.0; no failure, MTTR null.
    line-1 06h:  MTTR 720 s > 600 s (miss); OEE 0.805 >= 0.65.
    line-1 day:  MTTR 720 s (miss); press-1 availability 108/120 = 0.9 (attained).
    """
    events = []
    for machine in ("press-1", "press-2"):
        events.append(state(at(6), "running", machine=machine))
        events.append(state(at(8), "planned_stop", machine=machine, reason="break"))
        events.append(state(at(23), "planned_stop", machine=machine, reason="break"))
    events += [
        count(at(6.5), 1000, 950, 2.304, machine="press-1"),
        state(at(6.8), "down", machine="press-1", reason="jam"),
        state(at(7), "running", machine="press-1"),
        count(at(7.5), 1500, 1500, 2.4, machine="press-1"),
        count(at(6.5), 1800, 1800, 2.0, machine="press-2"),
        count(at(7.5), 1800, 1800, 2.0, machine="press-2"),
    ]
    return events


def test_targets_beside_values_and_one_alert_per_miss() -> None:
    records, alerts = run(two_presses(), targets=[LINE_TARGETS, PRESS_1_TARGETS])
    misses = [a for a in alerts if a["kind"] == "target_miss"]
    assert sorted((a["scope"], a["kpi"], a["window"], a["start"]) for a in misses) == [
        ("line", "mttr_s", "1d", at(0)),
        ("line", "mttr_s", "1h", at(6)),
        ("machine", "availability", "1h", at(6)),
    ]
    # exactly one alert per (entity, kpi, window)
    assert len({a["alert_id"] for a in misses}) == len(misses)

    hour6 = select(records, kpi="oee", scope="machine", machine="press-1", window="1h", start=at(6))
    assert hour6[0]["targets"] == {"availability": 0.9}
    assert hour6[0]["attained"] == {"availability": False}
    line6 = select(records, kpi="oee", scope="line", window="1h", start=at(6))[0]
    assert line6["targets"] == {"oee": 0.65, "mttr_s": 600.0}
    assert line6["attained"] == {"oee": True, "mttr_s": False}
    line7 = select(records, kpi="oee", scope="line", window="1h", start=at(7))[0]
    assert line7["mttr_s"] is None and line7["attained"] == {"oee": True, "mttr_s": None}
    day = select(records, kpi="oee", scope="machine", machine="press-1", window="1d")[0]
    assert day["availability"] == 0.9 and day["attained"] == {"availability": True}

    alert = next(a for a in misses if a.get("machine") == "press-1")
    assert alert == {
        "alert_id": alert["alert_id"],
        "kind": "target_miss",
        "severity": "critical",  # (0.9 - 0.8) / 0.9 = 11 % short, beyond the default 10 %
        "record": "oee",
        "scope": "machine",
        "site": "plant-1",
        "line": "line-1",
        "machine": "press-1",
        "window": "1h",
        "start": at(6),
        "end": at(7),
        "kpi": "availability",
        "value": pytest.approx(0.8),
        "target": 0.9,
        "shortfall": pytest.approx(1 / 9),
    }


def test_no_inheritance_no_site_targets_and_small_windows_not_judged() -> None:
    records, _ = run(two_presses(), targets=[LINE_TARGETS])
    targeted = {(r["scope"], r.get("machine"), r["window"]) for r in records if "targets" in r}
    # press-2 and press-1 have no target of their own; the site and 1m windows are not judged.
    assert targeted == {("line", None, "1h"), ("line", None, "1d")}


def test_attained_everywhere_raises_nothing() -> None:
    easy = {**LINE_TARGETS, "oee": 0.5, "mttr": "15m"}
    records, alerts = run(two_presses(), targets=[easy])
    assert not [a for a in alerts if a["kind"] == "target_miss"]
    assert all(v is not False for r in records if "attained" in r for v in r["attained"].values())


def test_same_miss_same_alert_id_on_a_repeated_run() -> None:
    settings = {"targets": [LINE_TARGETS, PRESS_1_TARGETS]}
    first = [a for a in run(two_presses(), **settings)[1] if a["kind"] == "target_miss"]
    again = [a for a in run(two_presses(), **settings)[1] if a["kind"] == "target_miss"]
    assert first and [a["alert_id"] for a in again] == [a["alert_id"] for a in first]


def test_configured_windows_and_severity() -> None:
    _, alerts = run(
        two_presses(),
        targets=[LINE_TARGETS, PRESS_1_TARGETS],
        target_windows=["1d"],
        target_critical_shortfall=0.5,
    )
    misses = [a for a in alerts if a["kind"] == "target_miss"]
    assert [(a["kpi"], a["window"], a["severity"]) for a in misses] == [
        ("mttr_s", "1d", "warning")  # 720 s is 20 % over 600 s: short of the 50 % for critical
    ]


@pytest.mark.parametrize(
    ("field", "value", "target", "expect"),
    [
        ("oee", 0.65, 0.65, True),
        ("oee", 0.6499, 0.65, False),
        ("mttr_s", 600.0, 600.0, True),  # MTTR: at or below is attained
        ("mttr_s", 600.1, 600.0, False),
        ("mttr_s", None, 600.0, None),
        ("otif_rate", None, 0.95, None),
    ],
)
def test_attained(field: str, value: float | None, target: float, expect: bool | None) -> None:
    assert attained(field, value, target) is expect


def test_shortfall_is_relative_to_the_target() -> None:
    assert shortfall("oee", 0.52, 0.65) == pytest.approx(0.2)
    assert shortfall("mttr_s", 900.0, 600.0) == pytest.approx(0.5)


def test_segment_targets_on_outbound_perfect_order_records() -> None:
    """Ten outbound orders of segment A, one late: perfect 90 %, OTIF 90 %, fill 100 %."""
    events: list[dict[str, Any]] = []
    for i in range(10):
        events.append(order(f"SO-{i}", at(1), promised_at=at(12)))
        events.append(shipment(f"SO-{i}", at(13 if i == 0 else 10)))
        events.append(order(f"PO-{i}", at(1), promised_at=at(12), direction="inbound"))
        events.append(shipment(f"PO-{i}", at(13), direction="inbound"))
    policy = {"perfect_order": 0.9, "otif": 0.95, "order_fill_rate": 0.9}
    records, alerts = run(events, windows=["1h", "1d"], policies={"A": policy})
    day = select(records, kpi="perfect_order", direction="outbound", window="1d")[0]
    assert day["targets"] == {"perfect_order_rate": 0.9, "otif_rate": 0.95, "order_fill_rate": 0.9}
    assert day["attained"] == {
        "perfect_order_rate": True,
        "otif_rate": False,
        "order_fill_rate": True,
    }
    assert "targets" not in select(records, kpi="perfect_order", direction="inbound")[0]
    misses = [a for a in alerts if a["kind"] == "target_miss"]
    assert [(a["segment"], a["direction"], a["kpi"], a["value"]) for a in misses] == [
        ("A", "outbound", "otif_rate", pytest.approx(0.9))
    ]


# --- minimum order quantity and response time ------------------------------------


def test_moq_and_response_time_are_counted_per_order() -> None:
    """Segment A: MOQ 50 units, response time 24 h (creation 00:00 -> first delivery).

    SO-1  100 units, delivered 10:00                -> ok
    SO-2   20 units, delivered 10:00                -> below MOQ
    SO-3  100 units, 50 at 30:00 and 50 at 31:00    -> response time missed (30 h)
    SO-4  100 units, nothing, closed at 20:00       -> response time missed (none)
    SO-5  100 units, delivered at 24:00 exactly     -> ok (at the limit)
    PO-1   10 units inbound, segment A              -> not judged (policies are for customers)
    SB-1   10 units, segment B (no policy)          -> not judged
    """
    events = [
        order("SO-1", at(0), promised_at=at(48)),
        shipment("SO-1", at(10)),
        order("SO-2", at(0), promised_at=at(48), qty=20),
        shipment("SO-2", at(10), qty=20),
        order("SO-3", at(0), promised_at=at(48)),
        shipment("SO-3", at(30), qty=50),
        shipment("SO-3", at(31), qty=50),
        order("SO-4", at(0), promised_at=at(48)),
        closed("SO-4", at(20)),
        order("SO-5", at(0), promised_at=at(48)),
        shipment("SO-5", at(24)),
        order("PO-1", at(0), promised_at=at(48), qty=10, direction="inbound"),
        shipment("PO-1", at(40), qty=10, direction="inbound"),
        order("SB-1", at(0), promised_at=at(48), qty=10, segment="B"),
        shipment("SB-1", at(40), qty=10),
    ]
    policy = {"min_order_qty": 50, "response_time": "24h"}
    records, _ = run(events, windows=["1h", "1d"], policies={"A": policy})
    days = select(records, kpi="perfect_order", direction="outbound", segment="A", window="1d")
    assert sum(r["decided"] for r in days) == 5
    assert sum(r["below_moq"] for r in days) == 1
    assert sum(r["response_time_missed"] for r in days) == 2
    # Only where a policy sets the rule does the record carry the count.
    for other in [
        *select(records, kpi="perfect_order", direction="inbound"),
        *select(records, kpi="perfect_order", segment="B"),
    ]:
        assert "below_moq" not in other and "response_time_missed" not in other
    only_moq, _ = run(events, windows=["1h", "1d"], policies={"A": {"min_order_qty": 50}})
    day = select(only_moq, kpi="perfect_order", direction="outbound", segment="A")[0]
    assert "below_moq" in day and "response_time_missed" not in day


def test_policy_counts_merge_associatively() -> None:
    def part(below_moq: bool, missed: bool) -> PerfectOrderState:
        state = PerfectOrderState()
        verdict = OrderVerdict(
            "o", "outbound", "A", "p", 0, "complete", True, True, True, True, 1, 1, 1.0, 1.0, 0
        )
        state.add(
            OrderVerdict(
                **{**verdict.__dict__, "below_moq": below_moq, "response_time_missed": missed}
            )
        )
        return state

    a, b, c = part(True, False), part(False, True), part(True, True)
    left = PerfectOrderState().merge(a).merge(b).merge(c)
    right = PerfectOrderState().merge(c).merge(PerfectOrderState().merge(b).merge(a))
    assert left.to_dict() == right.to_dict()
    assert (left.below_moq, left.response_time_missed) == (2, 2)
    assert PerfectOrderState.from_dict(left.to_dict()) == left


def test_doctest() -> None:
    result = doctest.testmod(streams.policies)
    assert result.attempted and not result.failed
