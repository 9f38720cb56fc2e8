"""Perfect-order decisions: complete, closed short, expired, cancelled, amended."""

from __future__ import annotations

from typing import Any

import pytest

from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from tests.eventfactory import at, cancelled, closed, order, shipment, state
from tests.streams.helpers import run_events


def decided(events: list[dict[str, Any]], **config: Any) -> tuple[Engine, dict[str, Any] | None]:
    engine = Engine(EngineConfig(**{"windows": ["1h", "1d"], "allowed_lateness": "0s", **config}))
    out = run_events(engine, (parse_event(e) for e in sorted(events, key=lambda e: e["ts"])))
    out.extend(engine.flush())
    days = [r for r in out.records if r["kpi"] == "perfect_order" and r["window"] == "1d"]
    merged: dict[str, Any] | None = None
    for r in days:
        if merged is None:
            merged = dict(r)
        else:
            for k in (
                "decided",
                "perfect",
                "on_time",
                "in_full",
                "damage_free",
                "documents_ok",
                "otif",
            ):
                merged[k] += r[k]
    return engine, merged


def tick(day: int) -> dict[str, Any]:
    """A later event so the watermark passes earlier decisions."""
    return state(at(0, day=day), "idle", machine="clock")


@pytest.mark.parametrize(
    ("name", "events", "expect"),
    [
        (
            "complete on time in two deliveries",
            [
                order("A", at(1), at(12)),
                shipment("A", at(9), qty=60),
                shipment("A", at(11), qty=40),
            ],
            {"decided": 1, "perfect": 1, "on_time": 1, "in_full": 1},
        ),
        (
            "second delivery late: not on time",
            [
                order("A", at(1), at(12)),
                shipment("A", at(9), qty=60),
                shipment("A", at(13), qty=40),
            ],
            {"decided": 1, "perfect": 0, "on_time": 0, "in_full": 1},
        ),
        (
            "closed short on its date: on time, not in full",
            [order("A", at(1), at(12)), shipment("A", at(9), qty=60), closed("A", at(10))],
            {"decided": 1, "perfect": 0, "on_time": 1, "in_full": 0},
        ),
        (
            "bad documents",
            [order("A", at(1), at(12)), shipment("A", at(9), documents_ok=False)],
            {"decided": 1, "perfect": 0, "documents_ok": 0, "damage_free": 1},
        ),
        (
            "damaged units",
            [order("A", at(1), at(12)), shipment("A", at(9), damaged=3)],
            {"decided": 1, "perfect": 0, "documents_ok": 1, "damage_free": 0},
        ),
        (
            "cancelled before its promise with nothing shipped: not counted",
            [order("A", at(1), at(12)), cancelled("A", at(10))],
            {"decided": 0},
        ),
        (
            "cancelled after a part shipment: decided, on time, not in full",
            [order("A", at(1), at(12)), shipment("A", at(9), qty=10), cancelled("A", at(10))],
            {"decided": 1, "perfect": 0, "on_time": 1, "in_full": 0},
        ),
        (
            "cancelled after its promise with nothing shipped: neither on time nor in full",
            [order("A", at(1), at(12)), cancelled("A", at(14))],
            {"decided": 1, "perfect": 0, "on_time": 0, "in_full": 0},
        ),
        (
            "no delivery by promised + grace: expired, neither on time nor in full",
            [order("A", at(1), at(12)), tick(9)],
            {"decided": 1, "perfect": 0, "on_time": 0, "in_full": 0},
        ),
        (
            "amended up: the first delivery no longer completes it",
            [
                order("A", at(1), at(12)),
                order("A", at(2), at(12), qty=150),
                shipment("A", at(9)),
                closed("A", at(10)),
            ],
            {"decided": 1, "in_full": 0, "on_time": 1},
        ),
        (
            "shipment before its order arrives",
            [shipment("A", at(0.5)), order("A", at(1), at(12)), tick(1)],
            {"decided": 1, "perfect": 1},
        ),
    ],
)
def test_order_decisions(name: str, events: list[dict[str, Any]], expect: dict[str, int]) -> None:
    _, record = decided(events, decision_grace="7d")
    if expect["decided"] == 0:
        assert record is None, name
        return
    assert record is not None, name
    assert {k: record[k] for k in expect} == expect, name


def test_on_time_tolerance() -> None:
    events = [order("A", at(1), at(12)), shipment("A", at(12.25))]
    assert decided(events)[1]["on_time"] == 0  # type: ignore[index]
    assert decided(events, on_time_tolerance="30m")[1]["on_time"] == 1  # type: ignore[index]


def test_expired_decision_lands_in_its_window() -> None:
    # promised day 0 12:00, grace 1d: decided day 1 12:00, in day 1's window.
    engine = Engine(EngineConfig(windows=["1h", "1d"], allowed_lateness="0s", decision_grace="1d"))
    events = [order("A", at(1), at(12)), tick(3)]
    out = run_events(engine, (parse_event(e) for e in events))
    [r] = [r for r in out.records if r["kpi"] == "perfect_order" and r["window"] == "1d"]
    assert r["start"] == at(0, day=1) and r["decided"] == 1
    assert engine.stats["orders_decided.expired"] == 1


def test_a_first_frontier_hours_in_moves_no_decision_out_of_its_window() -> None:
    """A live worker's first batch can carry hours of events, so the engine's first
    frontier may be far past decisions it has not closed yet. No window has
    closed then: each order lands in its own hour, as a replay one event at a
    time puts it (seen live: an order complete at 09:08 counted at 11:00)."""
    events = [
        order("A", at(1.5), at(12)),
        shipment("A", at(6.5), qty=40),
        shipment("A", at(9.1), qty=60),
        state(at(0), "running"),
        state(at(12), "running"),
    ]
    engine = Engine(EngineConfig(windows=["1h", "1d"], allowed_lateness="0s"), auto_watermark=False)
    for event in events:
        engine.ingest(parse_event(event))
    out = engine.advance(parse_event(events[-1]).ts_us)  # the first frontier: 12:00
    [hour] = [r for r in out.records if r["kpi"] == "perfect_order" and r["window"] == "1h"]
    assert (hour["start"], hour["decided"]) == (at(9), 1)
    replayed = Engine(EngineConfig(windows=["1h", "1d"], allowed_lateness="0s"))
    run_events(replayed, (parse_event(e) for e in sorted(events, key=lambda e: e["ts"])))
    assert engine.book.decided == replayed.book.decided


@pytest.mark.parametrize("lateness", ["0s", "2h"])
def test_a_cancellation_or_amendment_stamped_after_the_decision_changes_nothing(
    lateness: str,
) -> None:
    """Complete at 07:00, cancelled at 07:30 and amended at 08:00: the order was
    decided before either, however soon they are read (within the allowed
    lateness, or, live, ahead of the machine data that moves the frontier)."""
    events = [
        order("A", at(1), at(12)),
        shipment("A", at(7)),
        cancelled("A", at(7.5)),
        order("A", at(8), at(12), qty=500),
        tick(1),
    ]
    engine, record = decided(events, allowed_lateness=lateness)
    assert record is not None and (record["decided"], record["perfect"]) == (1, 1)
    assert engine.stats["orders_decided.complete"] == 1
    assert engine.book.ignored["order_cancelled_after_decision"] == 1
    assert engine.book.ignored["order_after_decision"] == 1


def test_events_after_decision_change_nothing() -> None:
    events = [
        order("A", at(1), at(12)),
        shipment("A", at(9)),
        tick(1),
        shipment("A", at(1, day=1), qty=5),
    ]
    engine, record = decided(events)
    assert record is not None and record["decided"] == 1 and record["perfect"] == 1
    assert engine.stats["ignored.shipment_after_decision"] == 1


def test_cycle_time_and_fill_rates() -> None:
    events = [
        order("A", at(0), at(12), lines=2, qty=100),
        shipment("A", at(6), lines=2, qty=100),
        order("B", at(2), at(12), lines=2, qty=100),
        shipment("B", at(8), lines=1, qty=50),
        closed("B", at(9)),
    ]
    _, r = decided(events)
    assert r is not None
    assert r["mean_cycle_time_s"] == 6 * 3600.0  # only complete orders have a cycle time
    assert r["line_fill_rate"] == pytest.approx(2 / 4)
    assert r["unit_fill_rate"] == pytest.approx(250 / 400)
    assert r["order_fill_rate"] == pytest.approx(1 / 2)
