"""Cancelled orders: excluded, or decided at the cancellation as not in full.

promised 12:00 (+ on-time tolerance = the deadline)
cancelled ...... nothing shipped by then ..... something shipped by then
at or before     excluded (no verdict)         decided: on time*, not in full
after            decided: late, not in full    decided: late, not in full

* on time when what arrived came by the deadline, as for any decision.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest

from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.snapshot import restore, snapshot
from tests.eventfactory import at, cancelled, closed, order, shipment, state
from tests.streams.helpers import run_events

TOTALS = ("decided", "perfect", "on_time", "in_full", "otif", "lines_in_full", "units_delivered")


def config(**overrides: Any) -> EngineConfig:
    return EngineConfig(
        **{"windows": ["1h", "1d"], "allowed_lateness": "0s", "decision_grace": "7d", **overrides}
    )


def run(
    events: list[dict[str, Any]], *, arrival: bool = False, **overrides: Any
) -> tuple[Engine, list[dict[str, Any]]]:
    """The perfect-order records of a replay, sorted by event time unless `arrival`."""
    engine = Engine(config(**overrides))
    stream = events if arrival else sorted(events, key=lambda e: e["ts"])
    out = run_events(engine, (parse_event(e) for e in stream))
    out.extend(engine.flush())
    return engine, [r for r in out.records if r["kpi"] == "perfect_order"]


def day(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Day 0's record (None: no order decided that day)."""
    found = [r for r in records if r["window"] == "1d" and r["start"] == at(0)]
    return found[0] if found else None


def hours(records: list[dict[str, Any]]) -> dict[str, int]:
    """Window start -> orders decided in that hour."""
    return {r["start"]: r["decided"] for r in records if r["window"] == "1h"}


def tick(hours: float, day: int = 0) -> dict[str, Any]:
    """A machine event that moves the watermark on."""
    return state(at(hours, day=day), "idle", machine="clock")


# ---------------------------------------------------------------- the three cases


def test_a_part_shipped_late_order_cancelled_still_fails_otif() -> None:
    """B ships 60 of 100 at 13:00 (late for 12:00), then is cancelled at 14:00.

    Before, the cancellation dropped B: OTIF 1/1 instead of 1/2.
    """
    perfect = [order("A", at(1), at(12)), shipment("A", at(9))]
    late = [order("B", at(1), at(12)), shipment("B", at(13), qty=60)]
    engine, records = run([*perfect, *late, cancelled("B", at(14)), tick(1, day=1)])
    record = day(records)
    assert record is not None
    assert {k: record[k] for k in TOTALS} == {
        "decided": 2,
        "perfect": 1,
        "on_time": 1,
        "in_full": 1,
        "otif": 1,
        "lines_in_full": 1,
        "units_delivered": 160.0,
    }
    assert record["otif_rate"] == 0.5
    assert hours(records) == {at(9): 1, at(14): 1}  # B decided at the cancellation
    assert engine.stats["orders_decided.cancelled"] == 1

    # Left open instead, B expires at 12:00 + 7 d: cancelling gains nothing.
    _, uncancelled = run([*perfect, *late, tick(13, day=7)])
    week = [r for r in uncancelled if r["window"] == "1d"]
    assert sum(r["otif"] for r in week) == 1 and sum(r["decided"] for r in week) == 2


def test_cancelled_after_its_promise_with_nothing_shipped_is_decided_late_not_in_full() -> None:
    engine, records = run([order("A", at(1), at(12)), cancelled("A", at(14)), tick(16)])
    record = day(records)
    assert record is not None
    assert {k: record[k] for k in TOTALS} == {
        "decided": 1,
        "perfect": 0,
        "on_time": 0,
        "in_full": 0,
        "otif": 0,
        "lines_in_full": 0,
        "units_delivered": 0.0,
    }
    assert record["line_fill_rate"] == 0.0 and record["mean_cycle_time_s"] is None
    assert hours(records) == {at(14): 1}
    assert engine.stats["orders_decided.cancelled"] == 1


def test_cancelled_before_its_promise_with_nothing_shipped_is_not_counted() -> None:
    events = [
        order("A", at(1), at(12)),
        cancelled("A", at(10)),
        tick(11),
        shipment("A", at(11.5)),  # after the cancellation's decision: changes nothing
    ]
    engine, records = run(events)
    assert records == []
    assert engine.book.ignored["cancelled"] == 1
    assert "A" not in engine.book.open and "A" in engine.book.decided
    assert engine.stats["ignored.shipment_after_decision"] == 1
    assert not any(k.startswith("orders_decided.") for k in engine.stats)


# ---------------------------------------------------------------- fill rates, ties


@pytest.mark.parametrize("when", [10.0, 14.0])
def test_fill_rates_are_those_of_an_order_closed_short_at_the_same_time(when: float) -> None:
    """Two lines of 100: line 1 gets 50 at 09:00, line 2 all 100 at 09:30."""
    line_2 = {"lines": [{"line_no": 2, "qty": 100, "damaged_qty": 0}]}
    shipped = [
        order("A", at(1), at(12), lines=2),
        shipment("A", at(9), qty=50),
        shipment("A", at(9.5)) | line_2,
    ]
    _, by_cancel = run([*shipped, cancelled("A", at(when)), tick(23)])
    _, by_close = run([*shipped, closed("A", at(when)), tick(23)])
    fill = ("lines_ordered", "lines_in_full", "units_ordered", "units_delivered")
    rates = ("line_fill_rate", "unit_fill_rate", "order_fill_rate")
    cancel_day, close_day = day(by_cancel), day(by_close)
    assert cancel_day is not None and close_day is not None
    assert {k: cancel_day[k] for k in fill + rates} == {k: close_day[k] for k in fill + rates}
    assert (cancel_day["line_fill_rate"], cancel_day["unit_fill_rate"]) == (0.5, 0.75)
    # On time differs only past the promise: a closed order is judged by its
    # deliveries, a cancelled one never gets the rest.
    assert close_day["on_time"] == 1
    assert cancel_day["on_time"] == (1 if when < 12 else 0)


@pytest.mark.parametrize(
    ("events", "expect"),
    [
        # (tolerance 30 m: deadline 12:30)
        ([cancelled("A", at(12.25))], None),
        ([cancelled("A", at(12.75))], {"decided": 1, "on_time": 0, "in_full": 0}),
        ([shipment("A", at(11), qty=60), cancelled("A", at(12.25))], {"decided": 1, "on_time": 1, "in_full": 0}),
        ([shipment("A", at(11), qty=60), cancelled("A", at(12.75))], {"decided": 1, "on_time": 0, "in_full": 0}),
        # shipped after the cancellation: nothing was shipped by it
        ([cancelled("A", at(10)), shipment("A", at(11), qty=60)], None),
    ],
    ids=[
        "nothing shipped, within tolerance: excluded",
        "nothing shipped, past tolerance: late",
        "part shipped, within tolerance: on time",
        "part shipped, past tolerance: late",
        "shipped after the cancellation: excluded",
    ],
)  # fmt: skip
def test_the_deadline_includes_the_on_time_tolerance(
    events: list[dict[str, Any]], expect: dict[str, int] | None
) -> None:
    _, records = run([order("A", at(1), at(12)), *events, tick(16)], on_time_tolerance="30m")
    record = day(records)
    if expect is None:
        assert record is None
        return
    assert record is not None and {k: record[k] for k in expect} == expect


def test_a_cancellation_at_the_promised_instant_is_not_past_it() -> None:
    _, records = run([order("A", at(1), at(12)), cancelled("A", at(12)), tick(16)])
    assert records == []


@pytest.mark.parametrize(
    ("cancel_at", "how", "decided_at", "ignored"),
    [
        (at(11, day=1), "cancelled", at(11, day=1), 0),  # within the grace: decided by it
        (at(12, day=1), "expired", at(12, day=1), 1),  # at the expiry: the expiry stands
        (at(13, day=1), "expired", at(12, day=1), 1),  # after it: changes nothing
    ],
)
def test_cancellations_and_the_decision_grace(
    cancel_at: str, how: str, decided_at: str, ignored: int
) -> None:
    """Promised day 0 12:00, grace 1 d: it expires day 1 12:00, late (nothing came)."""
    events = [order("A", at(1), at(12)), cancelled("A", cancel_at), tick(0, day=2)]
    engine, records = run(events, decision_grace="1d")
    assert engine.stats[f"orders_decided.{how}"] == 1
    assert hours(records) == {decided_at: 1}
    [record] = [r for r in records if r["window"] == "1d"]
    assert (record["on_time"], record["in_full"]) == (0, 0)
    assert engine.book.ignored["order_cancelled_after_decision"] == ignored


def test_a_cancellation_at_the_completing_delivery_changes_nothing() -> None:
    events = [order("A", at(1), at(12)), shipment("A", at(9)), cancelled("A", at(9)), tick(11)]
    engine, records = run(events)
    record = day(records)
    assert record is not None and (record["decided"], record["perfect"]) == (1, 1)
    assert engine.stats["orders_decided.complete"] == 1
    assert engine.book.ignored["order_cancelled_after_decision"] == 1


# ---------------------------------------------------------------- unknown orders


def test_a_cancellation_of_an_unknown_order_settles_its_id() -> None:
    events = [cancelled("Z", at(3)), tick(4), order("Z", at(5), at(12)), tick(23)]
    engine, records = run(events, arrival=True)
    assert records == []
    assert engine.book.open == {}
    assert engine.book.ignored["cancelled_unknown_order"] == 1
    assert engine.stats["ignored.order_after_decision"] == 1


# ---------------------------------------------------------------- out of order


SCENARIOS = {
    # order 08:00 promised 12:00; the engine's allowed lateness is 3 h
    "part shipped at 09:00, cancelled at 10:00": (
        [
            order("A", at(8), at(12)),
            shipment("A", at(9), qty=60),
            cancelled("A", at(10)),
        ],
        {"decided": 1, "on_time": 1, "in_full": 0},
        {at(10): 1},
    ),
    "promised 09:00, cancelled at 10:00, nothing shipped": (
        [order("A", at(8), at(9)), cancelled("A", at(10)), tick(10.5)],
        {"decided": 1, "on_time": 0, "in_full": 0},
        {at(10): 1},
    ),
    "a 09:00 delivery reported at 10:30, cancelled at 10:00": (
        [
            order("A", at(8), at(12)),
            cancelled("A", at(10)),
            shipment("A", at(9), qty=60) | {"ts": at(10.5)},
        ],
        {"decided": 1, "on_time": 1, "in_full": 0},
        {at(10): 1},
    ),
    "delivered in full at 09:00, cancelled at 10:00": (
        [order("A", at(8), at(12)), shipment("A", at(9)), cancelled("A", at(10))],
        {"decided": 1, "perfect": 1},
        {at(9): 1},
    ),
    "cancelled at 10:00, delivered at 10:30": (
        [order("A", at(8), at(12)), cancelled("A", at(10)), shipment("A", at(10.5))],
        None,
        {},
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_arrival_order_within_the_lateness_gives_the_sorted_result(name: str) -> None:
    """Through `Engine.run`, each permutation of the order's events (all within the
    3 h lateness of each other), then a tick that makes the decision final:

        event time   order 08:00   shipment 09:00   cancel 10:00   tick 23:00
        arrival      any order of the first three                  last
    """
    events, expect, decided_hours = SCENARIOS[name]
    _, sorted_records = run([*events, tick(23)], allowed_lateness="3h")
    record = day(sorted_records)
    if expect is None:
        assert record is None
    else:
        assert record is not None and {k: record[k] for k in expect} == expect
    assert hours(sorted_records) == decided_hours
    for arrival in itertools.permutations(events):
        engine, records = run([*arrival, tick(23)], arrival=True, allowed_lateness="3h")
        assert not any(k.startswith("late.") for k in engine.stats)
        assert records == sorted_records, [e["type"] for e in arrival]


def test_a_cancellation_read_ahead_of_the_frontier_waits_for_its_shipments() -> None:
    """Live, the order partition is read ahead of the machine data that moves the
    frontier: the cancellation is read first, the part shipment delivered at
    09:00 later (reported 09:45), before the frontier passes 10:00. It counts."""
    engine = Engine(config(), auto_watermark=False)
    for event in (order("A", at(8), at(12)), cancelled("A", at(10))):
        engine.ingest(parse_event(event))
    engine.advance(parse_event(tick(9.5)).ts_us)
    assert "A" in engine.book.open  # not settled yet
    assert engine.ingest(parse_event(shipment("A", at(9), qty=60) | {"ts": at(9.75)})) is None
    out = engine.advance(parse_event(tick(11)).ts_us)
    [hour] = [r for r in out.records if r["kpi"] == "perfect_order" and r["window"] == "1h"]
    assert (hour["start"], hour["decided"], hour["in_full"], hour["on_time"]) == (at(10), 1, 0, 1)


def test_a_pending_cancellation_survives_snapshot_and_restore() -> None:
    events = [order("A", at(8), at(12)), cancelled("A", at(14)), tick(14.5), tick(23)]
    cfg = config(allowed_lateness="1h")
    first = Engine(cfg)
    # Up to frontier 13:30: the cancellation waits.
    run_events(first, (parse_event(e) for e in events[:3]))
    assert first.book.open["A"].cancelled_us is not None
    second = restore(cfg, orjson.loads(orjson.dumps(snapshot(first))))
    out = run_events(second, (parse_event(e) for e in events[3:]))
    out.extend(second.flush())
    assert second.stats["orders_decided.cancelled"] == 1
