"""Engine behaviour: edge splitting, heartbeat, lateness, duplicates, shifts."""

from __future__ import annotations

from typing import Any

import pytest

from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from tests.eventfactory import at, count, state
from tests.streams.helpers import run_events


def run(
    events: list[dict[str, Any]], **config: Any
) -> tuple[Engine, list[dict[str, Any]], list[dict[str, Any]]]:
    engine = Engine(EngineConfig(**{"windows": ["1h", "1d"], "allowed_lateness": "0s", **config}))
    out = run_events(engine, (parse_event(e) for e in events))
    out.extend(engine.flush())
    return engine, out.records, out.alerts


def machine_hours(
    records: list[dict[str, Any]], machine: str = "press-1"
) -> dict[str, dict[str, Any]]:
    return {
        r["start"]: r
        for r in records
        if r["kpi"] == "oee"
        and r["scope"] == "machine"
        and r["window"] == "1h"
        and r["machine"] == machine
    }


def test_interval_crossing_a_window_edge_is_split() -> None:
    #   06:00        06:30   07:00    07:15      08:00
    #     |running....|down...|........|idle......|
    #   1h windows: [06,07) 30m running + 30m down; [07,08) 15m down + 45m idle
    _, records, _ = run(
        [
            state(at(6), "running"),
            state(at(6.5), "down"),
            state(at(7.25), "idle"),
            state(at(8), "idle"),
        ],
        heartbeat_timeout="2h",
    )
    hours = machine_hours(records)
    assert (hours[at(6)]["running_s"], hours[at(6)]["down_s"]) == (1800.0, 1800.0)
    assert (hours[at(7)]["down_s"], hours[at(7)]["idle_s"]) == (900.0, 2700.0)
    assert hours[at(6)]["failures"] == 1 and hours[at(7)]["failures"] == 0
    assert hours[at(7)]["mtbf_s"] is None and hours[at(7)]["mttr_s"] is None


def test_silence_beyond_heartbeat_is_no_data_not_running() -> None:
    #   06:00   06:10 (heartbeat 10m)      07:00
    #     |running|no_data..................|running (next event)
    engine, records, alerts = run(
        [state(at(6), "running"), state(at(7), "running"), state(at(7.5), "running")],
        heartbeat_timeout="10m",
    )
    hour = machine_hours(records)[at(6)]
    assert hour["running_s"] == 600.0 and hour["no_data_s"] == 3000.0
    assert hour["availability"] == 1.0  # unknown time neither helps nor hurts
    # One alert per silence: 06:10-07:00 and 07:10-07:30.
    assert [(a["kind"], a["machine"], a["since"]) for a in alerts] == [
        ("silent", "press-1", at(6 + 1 / 6)),
        ("silent", "press-1", at(7 + 1 / 6)),
    ]


def test_counts_keep_a_machine_alive() -> None:
    events = [state(at(6), "running")] + [count(at(6 + i / 12), 10, 10, 1.0) for i in range(1, 12)]
    events.append(state(at(7), "down"))
    _, records, alerts = run(events, heartbeat_timeout="10m")
    assert machine_hours(records)[at(6)]["running_s"] == 3600.0
    assert alerts == []


def test_late_events_beyond_the_horizon_are_refused_and_change_nothing() -> None:
    base = [state(at(6), "running"), state(at(7), "down"), state(at(8), "running")]
    late = count(at(6.5), 100, 90, 1.0)
    config = {"allowed_lateness": "30m", "heartbeat_timeout": "2h", "revision_horizon": "0s"}
    engine, records, _ = run([*base, late], **config)
    assert engine.stats["late.machine-state"] == 1
    assert engine.stats["refused.too_late"] == 1
    _, reference, _ = run(base, **config)
    assert records == reference


def test_out_of_order_within_lateness_counts() -> None:
    #   arrival order: running@6, down@7, count@6.5 (30 min late, lateness 1h)
    events = [
        state(at(6), "running"),
        state(at(7), "down"),
        count(at(6.5), 100, 90, 1.0),
        state(at(8), "down"),
    ]
    engine, records, _ = run(events, allowed_lateness="1h", heartbeat_timeout="2h")
    assert engine.stats["late.machine-state"] == 0
    assert machine_hours(records)[at(6)]["total"] == 100


def test_duplicates_never_count_twice() -> None:
    c = count(at(6.5), 100, 90, 1.0)
    events = [state(at(6), "running"), c, dict(c), state(at(7), "down")]
    engine, records, _ = run(events, heartbeat_timeout="2h")
    assert engine.stats["duplicates.machine-state"] == 1
    assert machine_hours(records)[at(6)]["total"] == 100


def test_line_and_site_roll_up_sums_components() -> None:
    #   press-1: 60 min running, 100 units at 36 s  -> perf 100%
    #   press-2: 30 min running, 30 min down, 10 units at 36 s -> perf 20%
    #   line: availability 90/120, performance 3960/5400 (not the mean of ratios)
    events = [
        state(at(6), "running", machine="press-1"),
        state(at(6), "running", machine="press-2"),
        count(at(6.4), 10, 10, 36.0, machine="press-2"),
        state(at(6.5), "down", machine="press-2"),
        count(at(6.9), 100, 100, 36.0, machine="press-1"),
        state(at(7), "idle", machine="press-1"),
        state(at(7), "idle", machine="press-2"),
    ]
    _, records, _ = run(events, heartbeat_timeout="2h")
    [line] = [
        r for r in records if r["kpi"] == "oee" and r["scope"] == "line" and r["window"] == "1h"
    ]
    assert line["availability"] == pytest.approx(90 / 120)
    assert line["performance"] == pytest.approx(3960 / 5400)
    assert line["oee"] == pytest.approx((90 / 120) * (3960 / 5400))


def test_performance_above_one_is_exported_and_flagged() -> None:
    events = [state(at(6), "running"), count(at(6.5), 1000, 1000, 10.0), state(at(7), "idle")]
    _, records, _ = run(events, heartbeat_timeout="2h")
    hour = machine_hours(records)[at(6)]
    assert hour["performance"] == pytest.approx(10_000 / 3600)
    assert hour["performance_above_ideal"] is True


def test_time_outside_shifts_is_planned_downtime() -> None:
    # Shift 06:00-07:00 only; the machine runs 05:30-07:30 and sits idle until 08:00.
    #   05:30   06:00          07:00   07:30      08:00
    #     |run (overtime)|run in shift|run (overtime)|idle outside shift -> planned_stop
    calendar = {"timezone": "UTC", "shifts": [{"name": "early", "start": "06:00", "end": "07:00"}]}
    events = [state(at(5.5), "running"), state(at(7.5), "idle"), state(at(8), "idle")]
    _, records, _ = run(events, shift_calendar=calendar, heartbeat_timeout="2h")
    [shift] = [
        r
        for r in records
        if r["kpi"] == "oee" and r["scope"] == "machine" and r["window"] == "early"
    ]
    assert (shift["start"], shift["end"], shift["running_s"]) == (at(6), at(7), 3600.0)
    hour7 = machine_hours(records)[at(7)]
    assert (
        hour7["running_s"] == 1800.0
        and hour7["planned_stop_s"] == 1800.0
        and hour7["idle_s"] == 0.0
    )


def test_night_shift_crosses_midnight_in_local_time() -> None:
    calendar = {
        "timezone": "Europe/Berlin",
        "shifts": [{"name": "night", "start": "22:00", "end": "06:00"}],
    }
    events = [
        state(at(20), "running"),
        state(at(23, day=0), "running"),
        state(at(6, day=1), "idle"),
    ]
    _, records, _ = run(events, shift_calendar=calendar, heartbeat_timeout="8h")
    [night] = [r for r in records if r["window"] == "night" and r["scope"] == "machine"]
    # 22:00 Berlin (UTC+1 in November) is 21:00 UTC; 06:00 Berlin is 05:00 UTC.
    assert (night["start"], night["end"]) == (at(21), at(5, day=1))
    assert night["running_s"] == 8 * 3600.0


def test_pchart_alert_has_a_stable_id() -> None:
    events = [state(at(0), "running")]
    for h in range(30):
        bad = 400 if h == 25 else 10
        events.append(count(at(h + 0.5), 1000, 1000 - bad, 1.0))
    events.append(state(at(30), "idle"))
    _, records, alerts = run(events, heartbeat_timeout="2h")
    pchart_alerts = [a for a in alerts if a["kind"] == "pchart_rule"]
    assert [a["start"] for a in pchart_alerts] == [at(25)]
    assert "WE1" in pchart_alerts[0]["rules"]
    _, _, again = run(events, heartbeat_timeout="2h")
    assert [a["alert_id"] for a in again if a["kind"] == "pchart_rule"] == [
        pchart_alerts[0]["alert_id"]
    ]
