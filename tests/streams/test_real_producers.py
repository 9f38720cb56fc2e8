"""What real MES and PLC gateways send: states on change, PLC counters, `unknown`.

Every case runs through the engine with the default configuration unless the
case is about a setting: a state holds until the next state event however
long the silence; no_data only from `unknown` or an opt-in heartbeat.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.snapshot import restore, snapshot
from tests.eventfactory import at, count, counter, state
from tests.streams.helpers import run_events


def run(events: list[dict[str, Any]], **config: Any) -> tuple[Engine, list[dict], list[dict]]:
    engine = Engine(EngineConfig(**config))
    out = run_events(engine, (parse_event(e) for e in events))
    out.extend(engine.flush())
    return engine, out.records, out.alerts


def oee(records: list[dict], window: str, start: str, scope: str = "machine", **keys: str) -> dict:
    (found,) = [
        r
        for r in records
        if r["kpi"] == "oee"
        and r["scope"] == scope
        and r["window"] == window
        and r["start"] == start
        and all(r.get(k) == v for k, v in keys.items())
    ]
    return found


def textbook() -> list[dict[str, Any]]:
    """The issue's textbook hour, sent on change: one count at 00:47:59."""
    return [
        state(at(0), "running"),
        count(at(47 / 60 + 59 / 3600), 1_000, 950, 2.304),
        state(at(0.8), "down", reason="jam"),
        state(at(1), "planned_stop"),
    ]


def test_textbook_hour_sent_on_change_is_60_8_percent_by_default() -> None:
    _, records, alerts = run(textbook())
    hour = oee(records, "1h", at(0))
    assert (hour["running_s"], hour["down_s"], hour["no_data_s"]) == (2_880.0, 720.0, 0.0)
    assert hour["availability"] == pytest.approx(0.8)
    assert hour["performance"] == pytest.approx(0.8)
    assert hour["oee"] == pytest.approx(0.608)
    assert not hour["performance_above_ideal"]
    assert hour["failures"] == 1 and hour["mttr_s"] == 720.0
    assert hour["units_outside_running"] == 0
    # 47:59 without an event while running is longer than the default 30 min.
    assert [(a["kind"], a["since"]) for a in alerts] == [("silent", at(0.5))]


def test_two_hour_breakdown_sent_once_is_two_hours_down() -> None:
    events = [
        state(at(6), "running"),
        count(at(7), 1_000, 1_000, 3.6),
        state(at(8), "down", reason="motor"),
        state(at(10), "running"),
        count(at(12), 1_000, 1_000, 7.2),
    ]
    _, records, _ = run(events, silence_alert=None)
    day = oee(records, "1d", at(0))
    assert (day["running_s"], day["down_s"], day["no_data_s"]) == (4 * 3600.0, 2 * 3600.0, 0.0)
    assert day["availability"] == pytest.approx(4 / 6)
    assert day["mttr_s"] == 7_200.0  # not capped at a heartbeat


def test_weekend_planned_stop_sent_once_is_planned_with_no_alert() -> None:
    events = [
        state(at(18), "running"),
        state(at(22), "planned_stop", reason="weekend"),
        state(at(6, day=3), "running"),
        count(at(7, day=3), 100, 100, 1.0),
    ]
    _, records, alerts = run(events)
    weekend = oee(records, "1d", at(0, day=1))
    assert weekend["planned_stop_s"] == 86_400.0 and weekend["no_data_s"] == 0.0
    assert weekend["availability"] is None  # nothing was planned
    # Silent while running (18:00-22:00, 06:00-07:00) alerts; the weekend does not.
    assert [a["since"] for a in alerts] == [at(18.5), at(6.5, day=3)]


def test_silence_alert_only_while_running_and_in_shift() -> None:
    events = [
        state(at(6), "running"),
        count(at(6.25), 10, 10, 1.0),  # then silent while running: alert at 06:45
        state(at(8), "idle"),  # silent while idle for hours: no alert
        state(at(12), "planned_stop"),
        state(at(20), "unknown"),
        state(at(23), "running"),
    ]
    _, _, alerts = run(events, silence_alert="30m")
    assert [(a["kind"], a["since"], a["last_event"]) for a in alerts] == [
        ("silent", at(6.75), at(6.25))
    ]
    calendar = {"timezone": "UTC", "shifts": [{"name": "day", "start": "06:00", "end": "06:30"}]}
    _, _, alerts = run(events, silence_alert="30m", shift_calendar=calendar)
    assert alerts == []  # 06:45 is outside every shift


def test_unknown_is_no_data_until_the_next_state() -> None:
    events = [
        state(at(6), "running"),
        state(at(6.5), "unknown", reason="plc_lost"),
        state(at(7.5), "running"),
        state(at(8), "idle"),
    ]
    _, records, _ = run(events)
    six, seven = oee(records, "1h", at(6)), oee(records, "1h", at(7))
    assert (six["running_s"], six["no_data_s"]) == (1_800.0, 1_800.0)
    assert (seven["running_s"], seven["no_data_s"]) == (1_800.0, 1_800.0)
    assert six["availability"] == 1.0  # unknown time neither helps nor hurts


def test_heartbeat_is_opt_in_per_site_line_or_machine() -> None:
    events = [
        state(at(6), "running", machine="m1"),
        state(at(6), "running", machine="m2", line="line-2"),
        state(at(8), "idle", machine="m1"),
        state(at(8), "idle", machine="m2", line="line-2"),
    ]
    beats = [
        {"site": "plant-1", "timeout": "30m"},
        {"site": "plant-1", "line": "line-2", "machine": "m2", "timeout": "1h"},
    ]
    _, records, _ = run(events, heartbeats=beats, silence_alert=None)
    m1, m2 = oee(records, "1h", at(6), machine="m1"), oee(records, "1h", at(6), machine="m2")
    assert (m1["running_s"], m1["no_data_s"]) == (1_800.0, 1_800.0)
    assert (m2["running_s"], m2["no_data_s"]) == (3_600.0, 0.0)
    _, records, _ = run(events)
    assert oee(records, "1h", at(6), machine="m1")["no_data_s"] == 0.0  # off by default


def test_units_counted_outside_running_are_flagged() -> None:
    events = [
        state(at(6), "running"),
        count(at(6.2), 100, 100, 1.0),
        state(at(6.5), "idle"),
        count(at(6.6), 40, 40, 1.0),  # made while the held state is idle
        state(at(7), "running"),
    ]
    _, records, _ = run(events)
    hour = oee(records, "1h", at(6))
    assert (hour["total"], hour["units_outside_running"]) == (140, 40)
    line = oee(records, "1h", at(6), scope="line")
    assert line["units_outside_running"] == 40


def test_plc_counters_give_deltas_resets_and_wraps() -> None:
    events = [
        state(at(6), "running"),
        counter(at(6.1), 1_000, 990),  # first reading: the base, no units
        counter(at(6.2), 1_050, 1_038),
        counter(at(6.3), 1_100, 1_087),
        counter(at(6.4), 30, 30),  # reset: PLC restarted
        counter(at(6.5), 65_500, 65_400, machine="m2"),
        counter(at(6.6), 64, 60, machine="m2"),  # wrapped at 65536
    ]
    engine, records, _ = run(events, counter_modulus=65_536)
    hour = oee(records, "1h", at(6), machine="press-1")
    assert (hour["total"], hour["good"]) == (50 + 50 + 30, 48 + 49 + 30)
    assert hour["ideal_s"] == pytest.approx(130 * 2.0)
    m2 = oee(records, "1h", at(6), machine="m2")
    assert m2["total"] == 65_536 - 65_500 + 64
    assert m2["good"] == min(65_536 - 65_400 + 60, m2["total"])
    assert (engine.machines["press-1"].resets, engine.machines["press-1"].wraps) == (1, 0)
    assert (engine.machines["m2"].resets, engine.machines["m2"].wraps) == (0, 1)
    _, records, _ = run(events)  # no modulus: the fall is a reset
    assert oee(records, "1h", at(6), machine="m2")["total"] == 64


def test_counters_per_product_and_cumulative_sum_is_not_taken() -> None:
    events = [
        state(at(6), "running"),
        counter(at(6.1), 1_000, product="A"),
        counter(at(6.1), 500, product="B"),
        counter(at(6.2), 1_050, product="A"),
        counter(at(6.3), 1_100, product="A"),
        counter(at(6.3), 520, product="B"),
    ]
    _, records, _ = run(events)
    assert oee(records, "1h", at(6))["total"] == 100 + 20  # not 3,150 + 1,020


def test_counter_deltas_exact_across_a_snapshot() -> None:
    events = [state(at(6), "running")] + [
        counter(at(6 + i / 60), 65_000 + 37 * i if i < 40 else 37 * i - 1_480) for i in range(90)
    ]
    config = EngineConfig(allowed_lateness="2m", counter_modulus=65_536)
    whole = Engine(config)
    out = run_events(whole, (parse_event(e) for e in events))
    out.extend(whole.flush())
    first = Engine(config)
    split = run_events(first, (parse_event(e) for e in events[:50]))
    second = restore(config, snapshot(first))
    split.extend(run_events(second, (parse_event(e) for e in events[50:])))
    split.extend(second.flush())
    assert split.records == out.records


_STATES = ("running", "idle", "down", "setup", "planned_stop")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 4 * 3600), st.sampled_from((*_STATES, "count"))),
        min_size=1,
        max_size=40,
    )
)
def test_on_change_time_lands_in_exactly_one_bucket(steps: list[tuple[int, str]]) -> None:
    """Every instant from the first event to the end lands in one bucket; no no_data."""
    events, t = [state(at(6), "running")], 6 * 3600
    for gap, kind in steps:
        t += gap
        ts = at(t / 3600)
        events.append(count(ts, 1, 1, 1.0) if kind == "count" else state(ts, kind))
    _, records, _ = run(events)
    hours = [r for r in records if r["kpi"] == "oee" and r["scope"] == "machine"]
    hours = [r for r in hours if r["window"] == "1h"]
    buckets = ("running_s", "idle_s", "down_s", "setup_s", "planned_stop_s", "no_data_s")
    covered = sum(r[b] for r in hours for b in buckets)
    assert covered == pytest.approx(t - 6 * 3600)
    assert sum(r["no_data_s"] for r in hours) == 0
