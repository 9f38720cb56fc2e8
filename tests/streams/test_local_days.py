"""Local production days through the engine: a site's `1d` follows its clock and day start."""

from __future__ import annotations

from typing import Any

import pytest

from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.snapshot import restore, snapshot
from tests.eventfactory import count, order, shipment, state
from tests.streams.helpers import run_events

BERLIN = {"timezone": "Europe/Berlin", "day_start": "06:00"}


def run(events: list[dict[str, Any]], **config: Any) -> list[dict[str, Any]]:
    engine = Engine(EngineConfig(**{"allowed_lateness": "0s", **config}))
    out = run_events(engine, (parse_event(e) for e in events))
    out.extend(engine.flush())
    return out.records


def days(records: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [
        r
        for r in records
        if r["kpi"] == "oee"
        and r["window"] == "1d"
        and all(r.get(k) == v for k, v in match.items())
    ]


def test_berlin_day_from_06_00_is_23_hours_at_spring_forward() -> None:
    events = [
        state("2026-03-28T05:00:00Z", "running", site="berlin"),  # 06:00 CET
        count("2026-03-28T12:00:00Z", 100, 100, 1.0, site="berlin"),
        state("2026-03-30T04:00:00Z", "idle", site="berlin"),  # 06:00 CEST
    ]
    records = run(events, sites={"berlin": BERLIN})
    day = days(records, scope="site", date="2026-03-28")
    assert len(day) == 1
    d = day[0]
    assert (d["start"], d["end"]) == ("2026-03-28T05:00:00Z", "2026-03-29T04:00:00Z")
    assert d["running_s"] == 23 * 3600.0 and d["total"] == 100
    hours = [
        r for r in records if r["kpi"] == "oee" and r["window"] == "1h" and r["scope"] == "site"
    ]
    assert all(r["start"].endswith(":00:00Z") for r in hours)
    assert {r["date"] for r in hours} == {"2026-03-28", "2026-03-29"}


def test_berlin_day_is_25_hours_at_fall_back() -> None:
    events = [
        state("2026-10-24T04:00:00Z", "running", site="berlin"),
        state("2026-10-26T05:00:00Z", "idle", site="berlin"),
    ]
    records = run(events, sites={"berlin": BERLIN})
    (d,) = days(records, scope="site", date="2026-10-24")
    assert (d["start"], d["end"]) == ("2026-10-24T04:00:00Z", "2026-10-25T05:00:00Z")
    assert d["running_s"] == 25 * 3600.0


def test_half_hour_zone_hours_start_at_half_past_utc() -> None:
    events = [
        state("2026-06-01T00:00:00Z", "running", site="pune"),
        state("2026-06-01T03:00:00Z", "idle", site="pune"),
    ]
    records = run(events, sites={"pune": {"timezone": "Asia/Kolkata"}})
    starts = sorted(r["start"] for r in records if r["window"] == "1h" and r["scope"] == "site")
    assert starts[:2] == ["2026-05-31T23:30:00Z", "2026-06-01T00:30:00Z"]


def test_sites_keep_their_own_days_and_unconfigured_sites_stay_utc() -> None:
    events = [
        state("2026-03-28T00:00:00Z", "running", site="berlin"),
        state("2026-03-28T00:00:00Z", "running", site="utc-plant", machine="press-9"),
        state("2026-03-30T12:00:00Z", "idle", site="berlin"),
        state("2026-03-30T12:00:00Z", "idle", site="utc-plant", machine="press-9"),
    ]
    records = run(events, sites={"berlin": BERLIN})
    utc = days(records, scope="site", site="utc-plant")
    assert all("date" not in r for r in utc)
    assert [r["start"] for r in utc][:2] == ["2026-03-28T00:00:00Z", "2026-03-29T00:00:00Z"]
    berlin = days(records, scope="site", site="berlin")
    assert [r["date"] for r in berlin] == ["2026-03-27", "2026-03-28", "2026-03-29", "2026-03-30"]


def test_production_day_moves_the_daily_perfect_order_window() -> None:
    events = [
        order("A", "2026-03-27T10:00:00Z", "2026-03-28T06:00:00Z"),
        shipment("A", "2026-03-28T04:30:00Z"),  # 05:30 local: still the 27th's day
        state("2026-03-29T12:00:00Z", "idle"),
    ]
    records = run(events, production_day=BERLIN)
    (day,) = [r for r in records if r["kpi"] == "perfect_order" and r["window"] == "1d"]
    assert (day["date"], day["start"]) == ("2026-03-27", "2026-03-27T05:00:00Z")


def test_dated_windows_survive_a_snapshot() -> None:
    config = EngineConfig(allowed_lateness="0s", sites={"berlin": BERLIN})
    events = [
        state("2026-03-28T05:00:00Z", "running", site="berlin"),
        count("2026-03-28T12:00:00Z", 100, 100, 1.0, site="berlin"),
        state("2026-03-30T04:00:00Z", "idle", site="berlin"),
    ]
    whole = run(events, sites={"berlin": BERLIN})
    first = Engine(config)
    out = run_events(first, (parse_event(e) for e in events[:2]))
    second = restore(config, snapshot(first))
    out.extend(run_events(second, (parse_event(e) for e in events[2:])))
    out.extend(second.flush())
    assert out.records == whole


def test_unknown_zone_is_a_config_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        EngineConfig(sites={"x": {"timezone": "Mars/Olympus"}})
