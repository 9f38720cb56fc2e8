"""Limits on the state the engine holds: machines and open orders.

Beyond `max_machines` / `max_open_orders` an event that would add one is
refused: not applied, reported in `Output.rejected`, counted; the KPIs of
every other event are those of a run without the refused ones.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine, Output
from streams.events import event_to_json
from streams.snapshot import restore, snapshot
from tests.eventfactory import at, cancelled, closed, count, order, shipment, state
from tests.streams.helpers import run_events

BASE = {"windows": ["1h", "1d"], "allowed_lateness": "0s", "heartbeat_timeout": "2h"}


def config(**limits: Any) -> EngineConfig:
    return EngineConfig(**{**BASE, **limits})


def replay(events: list[dict[str, Any]], **limits: Any) -> tuple[Engine, Output]:
    engine = Engine(config(**limits))
    out = run_events(engine, (parse_event(e) for e in events))
    out.extend(engine.flush())
    return engine, out


def contract(event: dict[str, Any]) -> dict[str, Any]:
    return event_to_json(parse_event(event))


# ---------------------------------------------------------------- machines


def plant(extra: str = "press-3") -> list[dict[str, Any]]:
    """Two machines from 06:00; a third appears at 06:30 and sends the newest event.

    press-1  |running.....................count..down......|
    press-2  |idle...............running..................|
    press-3               |running..count.................. 09:00 (newest)
    """
    return [
        state(at(6), "running"),
        state(at(6), "idle", machine="press-2"),
        state(at(6.5), "running", machine=extra),
        state(at(6.75), "running", machine="press-2"),
        count(at(7), 100, 98, 2.0, machine=extra),
        count(at(7.25), 500, 490, 1.0),
        state(at(7.5), "down", reason="jam"),
        state(at(9), "running", machine=extra),
    ]


def test_a_machine_beyond_the_limit_is_refused_and_the_others_kpis_are_unchanged() -> None:
    events = plant()
    engine, out = replay(events, max_machines=2)
    refused = [e for e in events if e["machine"] == "press-3"]
    _, without = replay([e for e in events if e["machine"] != "press-3"], max_machines=2)
    # Refused events change nothing, not even the watermark (press-3's 09:00 is the newest).
    assert out.records == without.records and out.alerts == without.alerts
    assert engine.watermark_us == parse_event(events[-2]).ts_us
    assert sorted(engine.machines) == ["press-1", "press-2"]
    assert [r["event"] for r in out.rejected] == [contract(e) for e in refused]
    assert {r["reason"] for r in out.rejected} == {"too_many_machines"}
    assert out.rejected[0]["error"] == (
        "machine: 'press-3' would be machine 3 held; the limit is engine.max_machines = 2"
    )
    assert engine.stats["refused.too_many_machines"] == 3
    # Under the limit the same events all count.
    _, roomy = replay(events, max_machines=3)
    assert roomy.rejected == [] and any(r.get("machine") == "press-3" for r in roomy.records)


def test_the_limit_message_groups_thousands() -> None:
    engine = Engine(config(max_machines=1000))
    run_events(engine, (parse_event(state(at(6), "idle", machine=f"m-{n}")) for n in range(1000)))
    out = Output()
    assert engine.ingest(parse_event(state(at(6), "idle", machine="M-123")), out) == (
        "too_many_machines"
    )
    assert out.rejected[0]["error"] == (
        "machine: 'M-123' would be machine 1,001 held; the limit is engine.max_machines = 1,000"
    )


def test_a_refused_event_is_not_remembered_as_seen() -> None:
    # Sent again once there is room (a larger limit after a restart), it counts.
    late_comer = state(at(6.5), "running", machine="press-3")
    engine, out = replay([state(at(6), "running"), late_comer], max_machines=1)
    assert len(out.rejected) == 1
    data = snapshot(engine)
    bigger = restore(config(max_machines=2), orjson.loads(orjson.dumps(data)))
    assert bigger.ingest(parse_event(late_comer)) is None
    assert "press-3" in bigger.machines


# ---------------------------------------------------------------- orders


def order_day() -> list[dict[str, Any]]:
    """Orders A and B open; C, and a shipment of an order D not seen yet, come while both are."""
    return [
        order("A", at(1), at(12)),
        order("B", at(2), at(12), direction="inbound"),
        order("C", at(3), at(12)),
        shipment("D", at(4)),
        shipment("A", at(9), qty=60),
        shipment("C", at(9)),
        closed("C", at(10)),
        shipment("B", at(11), direction="inbound"),
        shipment("A", at(11), qty=40),
    ]


def test_an_order_beyond_the_limit_is_refused_and_the_others_kpis_are_unchanged() -> None:
    events = order_day()
    engine, out = replay(events, max_open_orders=2)
    refused = [e for e in events if e["order_id"] in ("C", "D")]
    _, without = replay([e for e in events if e["order_id"] in ("A", "B")], max_open_orders=2)
    assert out.records == without.records and out.alerts == without.alerts
    assert any(r["kpi"] == "perfect_order" and r["decided"] for r in out.records)
    assert [r["event"] for r in out.rejected] == [contract(e) for e in refused]
    assert {r["reason"] for r in out.rejected} == {"too_many_open_orders"}
    assert out.rejected[0]["error"] == (
        "order_id: 'C' would be open order 3 held; the limit is engine.max_open_orders = 2"
    )
    assert engine.stats["refused.too_many_open_orders"] == 4
    _, roomy = replay(events, max_open_orders=4)  # C and D's placeholder fit
    assert roomy.rejected == []


@pytest.mark.parametrize(
    ("how", "frees"),
    [
        ("complete", [shipment("A", at(9))]),
        ("closed", [closed("A", at(9))]),
        ("cancelled", [cancelled("A", at(9))]),
    ],
)
def test_once_an_order_is_decided_or_cancelled_a_new_one_is_accepted(
    how: str, frees: list[dict[str, Any]]
) -> None:
    #   01:00 A opens   02:00 B opens   03:00 C refused (2 held)
    #   09:00 A complete, closed or cancelled
    #   10:00 the frontier reaches a window edge: A is decided, its room freed
    #   10:30 C again, and a shipment of A: A's id is decided, not open again
    c = order("C", at(3), at(12))
    events = [
        order("A", at(1), at(12)),
        order("B", at(2), at(12)),
        c,
        *frees,
        state(at(10), "idle", machine="clock"),
        {**c, "ts": at(10.5)},
        shipment("A", at(10.5)),
    ]
    engine = Engine(config(max_open_orders=2))
    out = run_events(engine, (parse_event(e) for e in events))
    assert [r["event"]["order_id"] for r in out.rejected] == ["C"], how
    assert sorted(engine.book.open) == ["B", "C"]
    assert engine.stats["ignored.shipment_after_decision"] == 1


def test_a_cancellation_or_an_event_of_an_open_order_is_never_refused() -> None:
    engine = Engine(config(max_open_orders=1))
    out = Output()
    for event in (
        order("A", at(1), at(12)),
        shipment("A", at(2), qty=10),  # A is held: applied
        cancelled("Z", at(3)),  # opens nothing: it only remembers Z
        order("Z", at(4), at(12)),  # ignored after its cancellation, as without a limit
    ):
        assert engine.ingest(parse_event(event), out) in (None, "late"), event
    assert out.rejected == []
    assert engine.stats["ignored.order_after_decision"] == 1
    assert engine.ingest(parse_event(order("B", at(5), at(12))), out) == "too_many_open_orders"


# ---------------------------------------------------------------- snapshot and settings


def test_limits_survive_snapshot_and_restore() -> None:
    events = plant() + order_day()
    events.sort(key=lambda e: e["ts"])
    limits = {"max_machines": 2, "max_open_orders": 2}
    _, whole = replay(events, **limits)
    assert {r["reason"] for r in whole.rejected} == {"too_many_machines", "too_many_open_orders"}
    for cut in range(1, len(events)):
        first = Engine(config(**limits))
        out = run_events(first, (parse_event(e) for e in events[:cut]))
        data = orjson.loads(orjson.dumps(snapshot(first)))  # through JSON, as a table stores it
        second = restore(config(**limits), data)
        out.extend(run_events(second, (parse_event(e) for e in events[cut:])))
        out.extend(second.flush())
        assert out.rejected == whole.rejected, f"cut at {cut}"
        assert out.records == whole.records, f"cut at {cut}"


def test_limit_defaults_bound_memory_far_above_a_large_plant() -> None:
    defaults = EngineConfig()
    assert (defaults.max_machines, defaults.max_open_orders) == (100_000, 1_000_000)


@pytest.mark.parametrize("value", [0, -5, 1.5, True, "many"])
@pytest.mark.parametrize("name", ["max_machines", "max_open_orders"])
def test_limits_must_be_positive_integers(name: str, value: object) -> None:
    with pytest.raises(ValidationError, match=name):
        EngineConfig(**{name: value})
