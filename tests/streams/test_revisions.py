"""Late machine data revises closed windows; later than the horizon it is refused.

The final records of a run (the newest revision of each record key) must
equal those of a run that got every event on time.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.records import record_key
from streams.snapshot import restore, snapshot
from tests.eventfactory import at, cancelled, count, counter, order, shipment, state
from tests.streams.helpers import run_events

CONFIG = {"windows": ["1m", "1h", "1d"], "allowed_lateness": "0s", "silence_alert": None}


def run(
    events: list[dict[str, Any]], **config: Any
) -> tuple[Engine, list[dict[str, Any]], list[dict[str, Any]]]:
    engine = Engine(EngineConfig(**{**CONFIG, **config}))
    out = run_events(engine, (parse_event(e) for e in events))
    out.extend(engine.flush())
    return engine, out.records, out.rejected


def final(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest revision of each record key, without the revision number."""
    newest: dict[str, dict[str, Any]] = {}
    for r in records:
        key = record_key(r)
        if key in newest:
            assert r["revision"] > newest[key]["revision"], key
        newest[key] = r
    return {k: {f: v for f, v in r.items() if f != "revision"} for k, r in newest.items()}


def plant(hours: int = 6, machines: int = 3, seed: int = 1) -> list[dict[str, Any]]:
    """On-change states and per-minute counts of a few machines, time-ordered."""
    rng = random.Random(seed)
    events = []
    for m in range(machines):
        machine, line = f"m{m}", f"line-{m % 2}"
        t, current = 0.0, None
        while t < hours * 60:
            new = rng.choice(["running", "running", "running", "down", "idle", "setup"])
            if new != current:
                events.append(state(at(t / 60), new, machine=machine, line=line))
                current = new
            span = rng.randint(3, 40)
            if current == "running":
                for k in range(1, span):
                    units = rng.randint(20, 30)
                    ts = at((t + k) / 60 + m / 3600)
                    events.append(count(ts, units, units - rng.randint(0, 2), 2.0, machine, line))
            t += span
    events.sort(key=lambda e: e["ts"])
    return events


def test_store_and_forward_backlog_revises_closed_windows() -> None:
    events = plant()
    # m1's gateway lost its uplink 01:00-04:00 and delivers it all at 04:05.
    outage = [e for e in events if e["machine"] == "m1" and at(1) <= e["ts"] < at(4)]
    rest = [e for e in events if e not in outage]
    cut = next(i for i, e in enumerate(rest) if e["ts"] >= at(4 + 5 / 60))
    engine, records, rejected = run(rest[:cut] + outage + rest[cut:])
    _, reference, _ = run(events)
    assert final(records) == final(reference)
    assert rejected == []
    assert engine.stats["late.machine-state"] == len(outage)
    revised = [r for r in records if r["revision"] > 0]
    assert {r["scope"] for r in revised if r["kpi"] == "oee"} == {"machine", "line", "site"}
    assert {r["window"] for r in revised} == {"1m", "1h"}  # the day was still open
    assert {r["kpi"] for r in revised} == {"oee", "pchart"}
    assert all(r.get("machine") in (None, "m1") for r in revised)
    hours = {r["start"] for r in revised if r["window"] == "1h"}
    assert hours == {at(h) for h in (1, 2, 3)}  # 04:00 was still open at 04:05


def test_revised_units_reach_the_line_and_the_chain() -> None:
    events = [
        state(at(6), "running", machine="a"),
        state(at(6), "running", machine="b"),
        count(at(6.5), 100, 100, 1.0, machine="a"),
        state(at(9), "idle", machine="a"),
        state(at(3, day=1), "idle", machine="a"),  # the day closes
    ]
    late = count(at(6.75), 50, 40, 1.0, machine="b")
    _, records, _ = run([*events, late], windows=["1h", "1d"], revision_horizon="2d")
    (line,) = [
        r for r in records
        if r["kpi"] == "oee" and r["scope"] == "line" and r["window"] == "1h"
        and r["start"] == at(6) and r["revision"] == 1
    ]  # fmt: skip
    assert (line["total"], line["good"]) == (150, 140)
    (chain,) = [r for r in records if r["kpi"] == "chain" and r["revision"] == 1]
    assert chain["start"] == at(0)
    _, reference, _ = run([*events[:3], late, *events[3:]], windows=["1h", "1d"])
    assert final(records) == final(reference)


def test_older_than_the_horizon_is_refused_as_too_late() -> None:
    events = [state(at(0), "running"), state(at(30), "idle")]
    late = count(at(2), 10, 10, 1.0)
    engine, records, rejected = run([*events, late], revision_horizon="24h")
    assert [r["reason"] for r in rejected] == ["too_late"]
    assert "revision horizon" in rejected[0]["error"]
    assert engine.stats["refused.too_late"] == 1
    _, reference, _ = run(events)
    assert final(records) == final(reference)


def test_a_re_sent_late_event_counts_once() -> None:
    events = [state(at(0), "running"), state(at(5), "idle")]
    late = count(at(2), 10, 10, 1.0)
    engine, records, _ = run([*events, late, late])
    assert engine.stats["duplicates.machine-state"] == 1
    hour = [r for r in records if r["kpi"] == "oee" and r["window"] == "1h" and r["revision"]]
    assert [(r["start"], r["total"]) for r in hour if r["scope"] == "site"] == [(at(2), 10)]


def test_counter_readings_delivered_late_give_the_same_deltas() -> None:
    readings = [counter(at(6 + i / 60), 65_000 + 40 * i, machine="p") for i in range(60)]
    readings = [
        r if i < 30 else {**r, "total": (65_000 + 40 * i) % 65_536} for i, r in enumerate(readings)
    ]
    events = [state(at(6), "running", machine="p"), *readings, state(at(9), "idle", machine="p")]
    late = readings[10:25]
    on_time = [e for e in events if e not in late]
    _, records, _ = run(on_time + late, counter_modulus=65_536)
    _, reference, _ = run(events, counter_modulus=65_536)
    assert final(records) == final(reference)


def test_pending_revisions_survive_a_snapshot() -> None:
    events = plant(hours=3, machines=2)
    outage = [e for e in events if e["machine"] == "m0" and at(0.5) <= e["ts"] < at(1.5)]
    rest = [e for e in events if e not in outage]
    cut = next(i for i, e in enumerate(rest) if e["ts"] >= at(2))
    stream = rest[:cut] + outage + rest[cut:]
    config = EngineConfig(**CONFIG)
    first = Engine(config)
    half = len(stream) * 2 // 3
    out = run_events(first, (parse_event(e) for e in stream[:half]))
    second = restore(config, snapshot(first))
    out.extend(run_events(second, (parse_event(e) for e in stream[half:])))
    out.extend(second.flush())
    _, reference, _ = run(events)
    assert final(out.records) == final(reference)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    machine=st.sampled_from(["m0", "m1", "m2"]),
    share=st.floats(0.05, 1.0),
    delay_min=st.integers(1, 20 * 60),
)
def test_any_late_split_of_a_machine_gives_the_in_order_records(
    seed: int, machine: str, share: float, delay_min: int
) -> None:
    """Some of one machine's instants come late (each up to 20 h, inside the horizon)."""
    events = plant(hours=5, seed=seed)
    rng = random.Random(seed)
    instants = sorted({e["ts"] for e in events if e["machine"] == machine})
    late_at = {ts for ts in instants if rng.random() < share}
    late = [e for e in events if e["machine"] == machine and e["ts"] in late_at]
    stream = [e for e in events if e not in late]
    for e in late:  # each delivered delay_min of event time after its own timestamp
        due = at(_hours(e["ts"]) + delay_min / 60)
        i = next((i for i, x in enumerate(stream) if x["ts"] > due), len(stream))
        stream.insert(i, e)
    # A machine's late instants keep their order among themselves.
    _, records, rejected = run(stream)
    _, reference, _ = run(events)
    assert rejected == []
    assert final(records) == final(reference)


def _hours(ts: str) -> float:
    from datetime import datetime

    from tests.eventfactory import DAY

    return (datetime.fromisoformat(ts.replace("Z", "+00:00")) - DAY).total_seconds() / 3600


def test_no_revisions_with_a_zero_horizon() -> None:
    events = [state(at(0), "running"), state(at(5), "idle")]
    _, records, rejected = run([*events, count(at(2), 10, 10, 1.0)], revision_horizon="0s")
    assert [r["reason"] for r in rejected] == ["too_late"]
    assert all(r["revision"] == 0 for r in records)


@pytest.mark.parametrize("windows", [["1h", "1d"], ["90s", "1h"]])
def test_windows_that_do_not_nest_are_revised_whole(windows: list[str]) -> None:
    events = plant(hours=4, machines=2, seed=5)
    late = [e for e in events if e["machine"] == "m1" and at(1) <= e["ts"] < at(2)]
    rest = [e for e in events if e not in late]
    config = {
        "windows": windows,
        "chain_windows": ["1h"],
        "pchart": {"orders_window": "1h"},
        "safety_stock": {"enabled": False},
    }
    _, records, _ = run(rest + late, **config)
    _, reference, _ = run(events, **config)
    assert final(records) == final(reference)


# ---------------------------------------------------------------- orders


def perfect_orders(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["start"]: r for r in records if r["kpi"] == "perfect_order" and r["window"] == "1d"}


def test_a_late_shipment_of_an_open_order_is_applied() -> None:
    # The ERP's feed of deliveries lagged 3 h: the shipment of 02:00 comes
    # after machine data of 05:00. The order is promised tomorrow, still open.
    clock = [state(at(h), "running") for h in range(6)]
    events = [order("A-1", at(0), at(20)), *clock, shipment("A-1", at(2))]
    engine, records, rejected = run(events)
    assert rejected == [] and engine.stats["late.shipments"] == 1
    (day,) = perfect_orders(records).values()
    assert (day["decided"], day["perfect"], day["in_full"]) == (1, 1, 1)
    _, reference, _ = run(
        [order("A-1", at(0), at(20)), *clock[:3], shipment("A-1", at(2)), *clock[3:]]
    )
    assert final(records) == final(reference)


def test_a_late_shipment_reopens_a_decided_order_and_revises_its_windows() -> None:
    # Order promised 01:00, decided at 02:00 (the grace) as not delivered; a
    # shipment delivered at 00:30 is reported at 05:00, after the decision.
    decided_then = [order("A-1", at(0), at(1)), *[state(at(h), "running") for h in range(6)]]
    before = shipment("A-1", at(0.5))
    after = shipment("A-1", at(3))  # delivered after the decision: changes nothing
    config = {"decision_grace": "1h", "windows": ["1h", "1d"]}
    engine, records, rejected = run([*decided_then, before, after], **config)
    assert rejected == []
    assert engine.stats["orders_reopened"] == 1
    hours = [r for r in records if r["kpi"] == "perfect_order" and r["window"] == "1h"]
    assert [(r["start"], r["revision"], r["in_full"]) for r in hours] == [
        (at(2), 0, 0),  # published at 02:00: expired, not delivered
        (at(0), 1, 1),  # the order moves to 00:30, when the late shipment completed it
        (at(2), 1, 0),  # and leaves the 02:00 hour
    ]
    assert hours[-1]["decided"] == 0
    in_order = sorted([*decided_then, before, after], key=lambda e: e["ts"])
    _, reference, _ = run(in_order, **config)
    ours, theirs = final(records), final(reference)
    assert {k: ours[k] for k in theirs} == theirs
    assert all(ours[k]["decided"] == 0 for k in ours.keys() - theirs.keys())  # emptied


def test_a_reopened_order_survives_a_snapshot_taken_before_the_next_close() -> None:
    decided_then = [order("A-1", at(0), at(1)), *[state(at(h), "running") for h in range(6)]]
    late = shipment("A-1", at(0.5))
    config = EngineConfig(**{**CONFIG, "decision_grace": "1h", "windows": ["1h", "1d"]})
    first = Engine(config)
    out = run_events(first, (parse_event(e) for e in [*decided_then, late]))  # reopened, not closed
    assert first.stats["orders_reopened"] == 1 and "A-1" in first.book.open
    second = restore(config, orjson.loads(orjson.dumps(snapshot(first))))
    out.extend(run_events(second, [parse_event(state(at(7), "idle"))]))
    out.extend(second.flush())
    _, straight, _ = run([*decided_then, late, state(at(7), "idle")], **config.model_dump())
    assert final(out.records) == final(straight)


def test_a_delivery_reported_after_the_horizon_of_its_order_is_refused_or_ignored() -> None:
    # Order decided at 02:00 (expired); a day later its 00:30 delivery is reported.
    decided_then = [order("A-1", at(0), at(1)), *[state(at(h), "running") for h in range(30)]]
    config = {"decision_grace": "1h", "windows": ["1h", "1d"], "revision_horizon": "2h"}
    behind = {**shipment("A-1", at(0.5)), "ts": at(28)}  # behind the frontier (29:00)
    engine, _, rejected = run([*decided_then, behind], **config)
    assert [r["reason"] for r in rejected] == ["too_late"]
    assert rejected[0]["error"].startswith(f"delivered_at: {at(0.5)} is before the decision")
    assert "'A-1'" in rejected[0]["error"]
    current = {**shipment("A-1", at(0.5)), "ts": at(29.5)}  # stamped now: ignored, counted
    engine, _, rejected = run([*decided_then, current], **config)
    assert rejected == [] and engine.stats["ignored.shipment_after_decision"] == 1
    assert engine.stats.get("orders_reopened", 0) == 0


def same_final(records: list[dict[str, Any]], reference: list[dict[str, Any]]) -> bool:
    """Final records equal, but for windows a reopened order left empty (decided 0)."""
    ours, theirs = final(records), final(reference)
    emptied = ours.keys() - theirs.keys()
    return {k: ours[k] for k in theirs} == theirs and all(
        ours[k]["kpi"] in ("perfect_order", "pchart") and ours[k].get("decided", 0) == 0
        for k in emptied
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    share=st.floats(0.1, 1.0),
    delay_min=st.integers(1, 600),
    promise_h=st.sampled_from([1, 4, 30]),
)
def test_any_late_split_of_shipments_gives_the_in_order_records(
    seed: int, share: float, delay_min: int, promise_h: int
) -> None:
    """Shipments come up to 10 h late: of open orders (promised in 30 h), and of
    orders already decided by then (promised in 1 or 4 h, an hour's grace): each
    order is decided, or decided again, as if they had come on time."""
    rng = random.Random(seed)
    clock = [state(at(h / 4), "running") for h in range(4 * 14)]
    orders, shipments = [], []
    for n in range(12):
        oid, created = f"SO-{n}", rng.uniform(0, 3)
        promised = at(created + promise_h)
        orders.append(order(oid, at(created), promised, qty=100, lines=rng.randint(1, 2)))
        parts = rng.randint(1, 3)
        for k in range(parts):
            delivered = at(created + rng.uniform(0.2, 8))
            qty = 100 / parts if k < parts - 1 or rng.random() < 0.7 else 10
            shipments.append(shipment(oid, delivered, qty=qty, lines=2))
    events = sorted([*clock, *orders, *shipments], key=lambda e: e["ts"])
    late = [e for e in shipments if rng.random() < share]
    stream = [e for e in events if e not in late]
    for e in sorted(late, key=lambda e: e["ts"]):
        due = at(_hours(e["ts"]) + delay_min / 60)
        i = next((i for i, x in enumerate(stream) if x["ts"] > due), len(stream))
        stream.insert(i, e)
    _, records, rejected = run(stream, decision_grace="1h")
    _, reference, _ = run(events, decision_grace="1h")
    assert rejected == []
    assert same_final(records, reference)


# Found by a second reader: events of a decided order that change nothing must
# not reopen it, and an order whose windows are gone must not be counted twice.


def day_orders(records: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    return {
        r["start"]: (r["decided"], r["in_full"])
        for r in records
        if r["kpi"] == "perfect_order" and r["window"] == "1d"
    }


@pytest.mark.parametrize(
    "late",
    [
        cancelled("A", at(0.5)),  # at the decision instant: the completion stands
        {**order("A", at(0.1), at(1)), "event_id": "older-version"},  # an older version
    ],
)
def test_an_event_that_changes_nothing_leaves_a_decided_order_decided(late: dict) -> None:
    base = [{**order("A", at(0.2), at(1))}, shipment("A", at(0.5)), state(at(2), "running")]
    engine, records, _ = run([*base, late, state(at(3), "running")])
    _, reference, _ = run(base)
    assert engine.stats.get("orders_reopened", 0) == 0 and engine.book.open == {}
    assert final_days(records) == final_days(reference) == {at(0): (1, 1)}


def final_days(records: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    return day_orders(list(final(records).values()))


def test_an_order_decided_before_the_kept_windows_is_not_reopened_nor_counted_twice() -> None:
    config = {"windows": ["1m", "1h"], "revision_horizon": "2h", "decision_grace": "30m"}
    config |= {"pchart": {"orders_window": "1h"}, "chain_windows": ["1h"]}
    config |= {"safety_stock": {"enabled": False}}
    late_b = [order("B", at(5.4), at(9)), shipment("B", at(5.5))]  # decided after A, earlier
    events = [state(at(0), "running"), order("A", at(0), at(9)), shipment("A", at(7))]
    events += [state(at(7.1), "running"), *late_b, state(at(7.2), "running")]
    events += [state(at(8.5), "running")]
    damaged = {**shipment("B", at(5.2), damaged=5), "ts": at(8.6)}  # B's windows are gone
    engine, records, _ = run([*events, damaged, state(at(9), "running")], **config)
    assert engine.stats.get("orders_reopened", 0) == 0
    hours = [r for r in final(records).values() if r["kpi"] == "perfect_order"]
    assert sum(r["decided"] for r in hours if r["window"] == "1h") == 2  # A and B, once each


def test_a_restored_engine_keeps_the_same_history_as_one_never_stopped() -> None:
    # A site with its own production day whose machine has not sent since the
    # restore must still count in the history floor, or the restored engine
    # forgets what the straight one keeps.
    tokyo = {"timezone": "Asia/Tokyo", "day_start": "06:00"}
    config = EngineConfig(**{**CONFIG, "sites": {"plant-9": tokyo}})
    events = [state(at(0), "running", machine="m9", site="plant-9"), state(at(0), "running")]
    events += [count(at(h / 2), 10, 10, 1.0) for h in range(1, 40)]
    straight = Engine(config)
    run_events(straight, (parse_event(e) for e in events))
    restored = restore(config, orjson.loads(orjson.dumps(snapshot(straight))))
    assert restored.history_floor() == straight.history_floor()
    assert restored.closed.keys() == straight.closed.keys()


def test_a_late_cancellation_that_excludes_a_decided_order_takes_back_its_demand() -> None:
    # Order 01:00 promised 03:00, expired at 03:30; its cancellation stamped
    # 02:00 (before the promise, nothing shipped) arrives at 05:00: excluded,
    # and its demand leaves the safety-stock history, as in time order.
    placed, cancel = order("A", at(1), at(3)), cancelled("A", at(2))
    clock = [state(at(5), "running"), state(at(6), "running")]
    in_order, _, _ = run([placed, cancel, *clock], decision_grace="30m")
    late, _, _ = run([placed, clock[0], cancel, clock[1]], decision_grace="30m")
    assert late.stats["orders_reopened"] == 1
    assert late.book.ignored == in_order.book.ignored == {"cancelled": 1}
    assert late.stats["orders_decided.expired"] == in_order.stats["orders_decided.expired"] == 0
    demand = {sku: h.demand for sku, h in late.stock.skus.items()}
    assert demand == {sku: h.demand for sku, h in in_order.stock.skus.items()}
