"""A worker's snapshot cuts the machines' pending events by slice of event time
(`streams.snapshot_sections.Sliced`), the seen ids into runs, and marks the
buckets of open orders and of the safety stock's originals that changed: each
of those sections carries a token, and a writer that saw the token before does
not make it again. So an equal token must mean equal bytes, whatever happened
in between: events in order, late, re-sent, closes by the per-point and by the
columnar path, orders amended, shipped, cancelled, decided and reopened.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine, Output
from streams.machine import SLICE_US
from streams.orders import BUCKET_ORDERS
from streams.pointlog import HOUR_US
from streams.snapshot import snapshot
from streams.snapshot_sections import PENDING, Tokened, join, materialised, split
from streams.timeutil import US
from tests import eventfactory as ef
from tests.streams.test_columnar import CONFIGS, batches, machine_streams

Tokens = dict[str, tuple[Any, bytes]]


def tokened(engine: Engine) -> tuple[Tokens, dict[str, Any]]:
    """Each `Tokened` section's (token, bytes): pending slices and runs of seen
    ids; and the snapshot's sections as they come back from JSON."""
    parts = split(snapshot(engine, lazy=True))
    tokens = {
        name: (value.token, orjson.dumps(value.value()))
        for name, value in parts.items()
        if isinstance(value, Tokened)
    }
    families = ("seen.hours/", "book.open#", "book.settled#", "stock.originals#", "history.points#")
    assert all(PENDING in name or name.startswith(families) for name in tokens)
    return tokens, orjson.loads(orjson.dumps(dict(materialised(parts))))


def slices_of(engine: Engine) -> tuple[Tokens, dict[str, Any]]:
    tokens, sections = tokened(engine)
    return {name: got for name, got in tokens.items() if PENDING in name}, sections


def check(engine: Engine, before: Tokens) -> Tokens:
    """Every tokened section's (token, bytes), checked against `before`'s."""
    tokens, sections = tokened(engine)
    for name, (token, data) in tokens.items():
        if name in before and before[name][0] == token:
            assert before[name][1] == data, name  # same token, same bytes
    assert join(sections) == orjson.loads(orjson.dumps(snapshot(engine)))
    return tokens


def pending_only(tokens: Tokens) -> Tokens:
    return {name: got for name, got in tokens.items() if PENDING in name}


@settings(
    derandomize=True,
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    stream=machine_streams(),
    name=st.sampled_from(sorted(CONFIGS)),
    columnar=st.booleans(),
)
def test_an_unchanged_token_means_unchanged_bytes(
    stream: tuple[list[dict[str, Any]], list[int]], name: str, columnar: bool
) -> None:
    events, cuts = stream
    engine = Engine(EngineConfig(**CONFIGS[name]), auto_watermark=False)
    engine.machine_side.columnar_min = 0 if columnar else 1 << 62
    out = Output()
    tokens: Tokens = {}
    for batch in batches([parse_event(e) for e in events], cuts):
        for i, event in enumerate(batch):
            engine.ingest(event, out)
            if i % 7 == 3:  # snapshots between events, too
                tokens = check(engine, tokens)
        out.extend(engine.advance(max(e.ts_us for e in batch)))
        tokens = check(engine, tokens)
    out.extend(engine.flush())
    check(engine, tokens)


@st.composite
def order_streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Orders of a few ids: placed, amended, shipped, closed, cancelled, some
    late (a decided order reopened within the revision horizon)."""
    # Standing orders in every bucket, so a bucket keeps others when one goes.
    events = [ef.order(f"o{n}", ef.at(6), ef.at(8 + n % 3 * 20), lines=2) for n in range(200)]
    hours = 7.0
    for _ in range(draw(st.integers(1, 60))):
        hours += draw(st.sampled_from((0.0, 0.01, 0.5, 3.0)))
        late = draw(st.integers(0, 6)) == 0
        when = ef.at(hours - 2.0 if late else hours)
        oid = f"o{draw(st.integers(0, 219))}"
        kind = draw(st.sampled_from(("order", "order", "shipment", "closed", "cancelled")))
        if kind == "order":
            direction = draw(st.sampled_from(("outbound", "inbound")))
            due = ef.at(hours + draw(st.sampled_from((0.5, 2.0, 30.0))))
            qty = draw(st.sampled_from((10, 100)))
            events.append(ef.order(oid, when, due, qty=qty, direction=direction, lines=2))
        elif kind == "shipment":
            events.append(ef.shipment(oid, when, qty=draw(st.sampled_from((10, 100))), lines=2))
        elif kind == "closed":
            events.append(ef.closed(oid, when))
        else:
            events.append(ef.cancelled(oid, when))
    return events


@settings(
    derandomize=True,
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(events=order_streams(), every=st.integers(1, 5))
def test_an_unchanged_order_bucket_token_means_unchanged_bytes(
    events: list[dict[str, Any]], every: int
) -> None:
    engine = Engine(EngineConfig())
    tokens: Tokens = {}
    with mock.patch("streams.orders.BUCKET_ORDERS", 8):  # many buckets of open orders
        for n, event in enumerate(events):
            engine.ingest(parse_event(event))  # its watermark decides orders as it moves
            if n >= 199 and n % every == 0:
                tokens = check(engine, tokens)
        engine.advance(parse_event(events[-1]).ts_us + 40 * 24 * 3600 * 10**6)
        check(engine, tokens)


def busy_engine() -> Engine:
    """20 machines, an event every 2 s each for 4 minutes: the allowed
    lateness (5 minutes) holds every event pending."""
    engine = Engine(EngineConfig())
    for step in range(120):
        for m in range(20):
            state = ("running", "idle")[(step + m) % 7 == 0]
            event = ef.state(ef.at(7 + step * 2 / 3600), state, machine=f"m{m}")
            assert engine.ingest(parse_event(event)) is None
    return engine


def test_an_event_changes_the_token_of_its_slice_only() -> None:
    engine = busy_engine()
    first, _ = slices_of(engine)
    assert len(first) == 24  # 4 minutes in slices of 10 s
    again, _ = slices_of(engine)
    assert again == first  # nothing happened: every token and its bytes as they were
    late = ef.at(7 + 30 / 3600)  # 30 s after the first events: late, inside the lateness
    assert engine.ingest(parse_event(ef.state(late, "down", machine="m3"))) is None
    after = pending_only(check(engine, first))
    changed = {name for name in after if after[name][0] != first[name][0]}
    slice_ = parse_event(ef.state(late, "down")).ts_us // SLICE_US
    assert changed == {f"machines{PENDING}{slice_}"}


def test_a_close_changes_the_slices_it_takes_events_from() -> None:
    engine = busy_engine()
    first, _ = slices_of(engine)
    lateness = engine.lateness_us
    engine.advance(parse_event(ef.state(ef.at(7 + 95 / 3600), "down")).ts_us + lateness)
    frontiers = {t.frontier_us for t in engine.machines.values()}
    assert len(frontiers) == 1  # every machine attributed up to the close
    cut = frontiers.pop()
    assert cut % SLICE_US  # inside a slice: its events before the cut go, the rest stay
    after = pending_only(check(engine, first))
    gone = {int(name.rsplit("#", 1)[1]) for name in first.keys() - after.keys()}
    changed = {name for name in after if after[name][0] != first[name][0]}
    assert gone == set(range(engine_slice(ef.at(7)), cut // SLICE_US))
    assert {int(name.rsplit("#", 1)[1]) for name in changed} == {cut // SLICE_US}
    kept = after.keys() - changed
    assert kept and all(after[name] == first[name] for name in kept)


def engine_slice(when: str) -> int:
    return parse_event(ef.state(when, "running")).ts_us // SLICE_US


def test_kept_histories_do_not_gather_touched_slices() -> None:
    """History bases fold their events through a timeline no snapshot looks at."""
    engine = busy_engine()
    engine.advance(parse_event(ef.state(ef.at(9), "down")).ts_us)
    assert engine.history
    assert all(not h.base.touched for h in engine.history.values())


def test_an_order_event_changes_its_buckets_token_only() -> None:
    engine = Engine(EngineConfig())
    orders = BUCKET_ORDERS + 44
    for n in range(orders):
        assert engine.ingest(parse_event(ef.order(f"o{n}", ef.at(7), ef.at(30)))) is None
    first = of_orders(tokened(engine)[0])
    # Open orders by the order they opened in; originals by their minute.
    assert {name for name in first if name.startswith("book.open#")} == {
        "book.open#0",
        "book.open#1",
    }
    minute = parse_event(ef.order("x", ef.at(7), ef.at(30))).ts_us // (60 * US)
    assert {name for name in first if name.startswith("stock.originals#")} == {
        f"stock.originals#{minute}"
    }
    assert of_orders(tokened(engine)[0]) == first  # nothing happened: the same tokens
    engine.ingest(parse_event(ef.shipment("o7", ef.at(7.5), qty=40)))
    after = of_orders(check(engine, first))
    changed = {name for name in after if after[name][0] != first[name][0]}
    assert changed == {"book.open#0"}
    engine.ingest(parse_event(ef.order("new", ef.at(7.6), ef.at(30))))
    again = of_orders(check(engine, after))
    changed = {name for name in again if again[name][0] != after.get(name, (None,))[0]}
    later = parse_event(ef.order("x", ef.at(7.6), ef.at(30))).ts_us // (60 * US)
    assert changed == {"book.open#1", f"stock.originals#{later}"}


def test_a_decided_order_changes_its_bucket_and_a_reopened_one_goes_to_the_newest() -> None:
    engine = Engine(EngineConfig(), auto_watermark=False)
    for n in range(BUCKET_ORDERS + 1):
        assert engine.ingest(parse_event(ef.order(f"o{n}", ef.at(7), ef.at(8)))) is None
    engine.ingest(parse_event(ef.closed("o3", ef.at(7.1))))
    first = of_orders(tokened(engine)[0])  # the close is in: the decision comes later
    engine.advance(parse_event(ef.order("x", ef.at(7.5), ef.at(8))).ts_us)
    assert "o3" not in engine.book.open and "o3" not in engine.stock.originals
    after = of_orders(check(engine, first))
    changed = {name for name in after if after[name][0] != first.get(name, (None,))[0]}
    minute = parse_event(ef.order("x", ef.at(7), ef.at(8))).ts_us // (60 * US)
    assert changed == {"book.open#0", f"stock.originals#{minute}"}
    engine.ingest(parse_event(ef.shipment("o3", ef.at(7.05), qty=1)))  # late: reopens it
    assert engine.book.open["o3"].bucket == 1
    again = of_orders(check(engine, after))
    changed = {name for name in again if again[name][0] != after.get(name, (None,))[0]}
    assert "book.open#1" in changed


def of_orders(tokens: Tokens) -> Tokens:
    return {n: got for n, got in tokens.items() if n.startswith(("book.open#", "stock.originals#"))}


def test_a_fold_of_the_history_changes_the_token_of_the_hour_it_cuts() -> None:
    """A plant on India's clock (UTC+05:30): its days, and so the history
    floor, start inside a UTC hour; the fold takes that hour's first events,
    and its section changes."""
    config = EngineConfig.model_validate(
        {"production_day": {"timezone": "Asia/Kolkata"}, "revision_horizon": "1h"}
    )
    engine = Engine(config, auto_watermark=False)
    tokens: Tokens = {}
    cut_inside_an_hour = False
    for i in range(64):  # every 30 minutes for 32 hours
        event = parse_event(ef.state(ef.at(6 + i / 2), "running" if i % 2 else "down"))
        engine.ingest(event)
        engine.advance(event.ts_us)
        first = engine.history[event.machine].points.first_us
        cut_inside_an_hour |= first is not None and first % HOUR_US != 0 and i > 40
        tokens = check(engine, tokens)
    assert cut_inside_an_hour


def of_settled(tokens: Tokens) -> Tokens:
    return {n: got for n, got in tokens.items() if n.startswith("book.settled#")}


def test_a_settled_order_changes_the_token_of_its_hour() -> None:
    """Settled orders (kept for the revision horizon) by the hour of their
    decision: one settling, reopened or dropped changes that hour's token.
    The plant is on India's clock (UTC+05:30), so the horizon's floor, a
    local day's start, falls inside a UTC hour and drops part of it."""
    config = EngineConfig.model_validate({"production_day": {"timezone": "Asia/Kolkata"}})
    engine = Engine(config, auto_watermark=False)

    def advance(hours: float, day: int = 0) -> None:
        engine.advance(parse_event(ef.state(ef.at(hours, day), "running")).ts_us)

    for n in range(3):
        engine.ingest(parse_event(ef.order(f"o{n}", ef.at(17), ef.at(20, day=3))))
    engine.ingest(parse_event(ef.closed("o0", ef.at(18.1))))  # 18:06 UTC
    advance(18.2)
    first = of_settled(check(engine, {}))
    assert len(first) == 1
    engine.ingest(parse_event(ef.closed("o1", ef.at(18.6))))  # 18:36, the same UTC hour
    advance(18.7)
    after = of_settled(check(engine, first))
    assert after.keys() == first.keys() and after != first
    engine.ingest(parse_event(ef.shipment("o1", ef.at(18.55), qty=10)))  # late: reopens o1
    assert "o1" not in engine.book.settled
    again = of_settled(check(engine, after))
    assert again != after
    advance(18.8)  # o1 settles again
    settled = of_settled(check(engine, again))
    advance(18.9, day=1)  # the floor is the local day's start, 18:30 UTC: o0 goes, o1 stays
    assert list(engine.book.settled) == ["o1"]
    assert of_settled(check(engine, settled)) != settled
