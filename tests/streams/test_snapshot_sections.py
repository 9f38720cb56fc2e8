"""`streams.snapshot_sections`: a snapshot cut into named sections and joined back."""

from __future__ import annotations

import base64
import copy
import re
from array import array
from typing import Any

import orjson
import pytest

from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.snapshot import restore, snapshot
from streams.snapshot_sections import (
    KEY_GROUP,
    WHOLE,
    Deferred,
    Lazy,
    bucket_of,
    join,
    materialised,
    split,
)
from streams.timeutil import US
from tests import eventfactory as ef

W1, W2 = [0, 60, "1m"], [60, 120, "1m"]


def packed(*ids: int) -> str:
    """An hour of seen ids as `streams.seen` snapshots them."""
    return base64.b64encode(array("Q", sorted(ids)).tobytes()).decode()


IDS = [n << 58 | n for n in range(0, 64, 3)]

STATE: dict[str, Any] = {
    "version": 1,
    "watermark_us": 5,
    "machines": [{"machine": f"m{n}", "state": "running"} for n in (3, 1, 2)],
    "history": {"m3": {"points": [1]}, "m1": {"points": [2]}},
    "closed": [[W2, {"r": 2}], [W1, {"r": 1}]],
    "last_closed": {"b": {"x": 1}, "a": {"x": 2}},
    "charts": {},
    "seen": {"bucket_us": 3600, "hours": [[7, packed(*IDS)], [8, packed(5)], [9, packed()]]},
    "book": {
        "open": [{"order_id": "o2"}, {"order_id": "o1"}],
        "decided": [["o9", True]],
        "ignored": {},
        "heap": [[1, "o2"]],
        "settled": [[{"order_id": "o7"}, None]],
    },
    "oee": [[W1, [[["l", "m3"], {"s": 1}], [["l", "m1"], {"s": 2}]]], [W2, []]],
    "orders": [],
}


def test_join_gives_back_the_state_in_its_order() -> None:
    parts = split(STATE)
    assert orjson.dumps(join(parts), option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        STATE, option=orjson.OPT_SORT_KEYS
    )
    assert [m["machine"] for m in join(parts)["machines"]] == ["m3", "m1", "m2"]
    assert list(join(parts)["last_closed"]) == ["b", "a"]


def test_sections_have_stable_names() -> None:
    parts = split(STATE)
    assert f"machines#{bucket_of('m3', 64)}" in parts
    assert f"closed/{orjson.dumps(W1).decode()}" in parts
    assert {"seen.hours/7#0", "seen.hours/8#0", "seen.hours/7#31"} <= set(parts)
    assert "book.open.order" in parts
    assert parts["head"]["book"] == {"ignored": {}, "heap": [[1, "o2"]]}


def test_split_leaves_the_state_alone() -> None:
    before = copy.deepcopy(STATE)
    join(split(STATE))
    assert before == STATE


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("machines", [{"machine": "m1"}, {"machine": "m1"}]),  # a key twice
        ("machines", [{"name": "m1"}]),  # no key where expected
        ("closed", {"not": "a list"}),
        ("closed", {}),
        ("closed", None),
        ("oee", [[W1, "not pairs"]]),
        ("seen", {"bucket_us": 3600, "hours": [[7, packed(3, 2)[::-1]]]}),
        ("seen", {"bucket_us": 3600, "hours": [[7, "AAA="]]}),
    ],
)
def test_a_container_not_shaped_as_expected_is_kept_whole(path: str, value: Any) -> None:
    state = {**STATE, path: value}
    parts = split(state)
    if path == "seen":
        assert parts["seen.hours.order"] == {WHOLE: value["hours"]}
    else:
        assert parts[f"{path}.order"] == {WHOLE: value}
    assert join(parts) == state


def test_absent_fields_stay_absent() -> None:
    state = {"version": 1, "watermark_us": None}
    assert split(state) == {"head": state}
    assert join(split(state)) == state


def test_an_engines_snapshot_survives_the_round_trip() -> None:
    engine = Engine(EngineConfig())
    for n in range(30):
        machine = f"press-{n % 7}"
        state = ("running", "down", "idle")[n % 3]
        for event in (
            ef.state(ef.at(7 + n / 20), state, machine=machine),
            ef.count(ef.at(7 + n / 20), 10, 9, 2.0, machine=machine),
        ):
            if engine.ingest(parse_event(event)) is None:
                engine.advance(engine.watermark_us)  # type: ignore[arg-type]
    data = snapshot(engine)
    assert len(data["closed"]) > 1
    joined = join(orjson.loads(orjson.dumps(split(data))))
    assert orjson.dumps(snapshot(restore(EngineConfig(), joined))) == orjson.dumps(data)


def dumped(parts: dict[str, Any]) -> dict[str, bytes]:
    return {name: orjson.dumps(value) for name, value in materialised(parts)}


def test_a_lazy_container_is_cut_as_its_list_is_and_made_a_bucket_at_a_time() -> None:
    orders = [{"order_id": f"o{n}", "qty": n} for n in range(300)]
    made: list[str] = []

    def to_value(order: dict[str, Any]) -> dict[str, Any]:
        made.append(order["order_id"])
        return dict(order)

    lazy = Lazy([(o["order_id"], o) for o in orders], to_value)
    parts = split({**STATE, "book": {**STATE["book"], "open": lazy}})
    buckets = [name for name, value in parts.items() if isinstance(value, Deferred)]
    assert len(buckets) > 30 and made == []  # nothing made by the cut itself
    assert dumped(parts) == dumped(split({**STATE, "book": {**STATE["book"], "open": orders}}))
    assert sorted(made) == sorted(o["order_id"] for o in orders)


def test_a_lazy_container_with_a_repeated_key_is_kept_as_its_list_would_be() -> None:
    orders = [{"order_id": "o1"}, {"order_id": "o1"}]
    lazy = Lazy([("o1", orders[0]), ("o1", orders[1])], dict)
    parts = split({**STATE, "book": {**STATE["book"], "open": lazy}})
    assert parts["book.open.order"] == {WHOLE: orders}
    assert join(parts)["book"]["open"] == orders


def test_an_engines_lazy_snapshot_has_the_bytes_of_its_eager_one() -> None:
    engine = Engine(EngineConfig())
    for n in range(200):
        event = ef.order(f"o{n}", ef.at(7 + n / 100), ef.at(30), qty=n + 1, lines=1 + n % 3)
        machine = f"m{n % 80}"
        made = ef.count(ef.at(7 + n / 100), 5, 4, 2.0, machine=machine)
        for one in (event, ef.state(ef.at(7 + n / 100), "running", machine=machine), made):
            if engine.ingest(parse_event(one)) is None:
                engine.advance(engine.watermark_us)  # type: ignore[arg-type]
    assert len(engine.book.open) == 200 and len(engine.stock.originals) == 200
    assert len(engine.machines) == len(engine.history) == 80
    assert sum(len(t.pending) for t in engine.machines.values()) > 0  # sliced below
    lazy, eager = split(snapshot(engine, lazy=True)), split(snapshot(engine))
    deferred = {
        re.split("[#/]", name)[0] for name, value in lazy.items() if isinstance(value, Deferred)
    }
    assert deferred == {
        *("machines", "machines.pending", "history", "history.points", "book.open"),
        *("stock.originals", "seen.hours"),
    }
    # The same sections but the machines', whose pending events are cut by
    # slice, the seen ids', which come as runs, and the open orders' and
    # originals', which come in their owners' buckets (by opening, by minute).
    owned = ("machines", "seen", "book.open#", "book.settled#", "stock.originals#")
    lazy_bytes, eager_bytes = dumped(lazy), dumped(eager)
    assert {n: b for n, b in lazy_bytes.items() if not n.startswith(owned)} == {
        n: b for n, b in eager_bytes.items() if not n.startswith(owned)
    }
    assert {n for n in lazy if n.startswith("book.open#")} == {"book.open#0"}  # 200 orders
    minutes = {o[0] // (60 * US) for o in engine.stock.originals.values()}
    assert {n for n in lazy if n.startswith("stock.originals#")} == {
        f"stock.originals#{m}" for m in minutes
    }
    wire = orjson.loads(orjson.dumps(dict(materialised(lazy))))
    assert join(wire) == orjson.loads(orjson.dumps(snapshot(engine)))


def test_a_key_joining_an_open_window_changes_its_last_key_group_only() -> None:
    pairs = [[["l", f"m{n}"], {"s": n}] for n in range(2 * KEY_GROUP + 10)]
    before = split({**STATE, "oee": [[W1, pairs]]})
    after = split({**STATE, "oee": [[W1, [*pairs, [["l", "new"], {"s": 0}]]]]})
    changed = {name for name in after if before.get(name) != after[name]}
    w1 = orjson.dumps(W1).decode()
    bucket = f"oee#{bucket_of(w1 + orjson.dumps(['l', 'new']).decode(), 64)}"
    assert changed == {f"oee.keys/{w1}/2", bucket}
    assert join(after)["oee"] == [[W1, [*pairs, [["l", "new"], {"s": 0}]]]]


def test_a_new_id_changes_one_group_of_its_hour() -> None:
    before = split(STATE)
    new = 17 << 59 | 12345
    after = split({**STATE, "seen": {"bucket_us": 3600, "hours": [[7, packed(*IDS, new)]]}})
    changed = {name for name in after if before.get(name) != after[name]}
    assert changed == {"seen.hours/7#17", "seen.hours.order"}  # hours 8 and 9 gone
    assert join(after)["seen"]["hours"] == [[7, packed(*IDS, new)]]


def hours_of_history(until_hours: float, machines: int = 5) -> Engine:
    """An engine whose machines have kept events every 10 minutes up to `until_hours`."""
    engine = Engine(EngineConfig())
    steps = int(until_hours * 6)
    for step in range(steps):
        for m in range(machines):
            when = ef.at(6 + step / 6)
            state = ("running", "down")[(step + m) % 2]
            for event in (
                ef.state(when, state, machine=f"m{m}"),
                ef.count(when, 3, 3, 2.0, machine=f"m{m}"),
            ):
                if engine.ingest(parse_event(event)) is None:
                    engine.advance(engine.watermark_us)  # type: ignore[arg-type]
    return engine


def test_kept_events_are_cut_out_by_hour_and_joined_back() -> None:
    engine = hours_of_history(3.5)
    sections = dict(materialised(split(snapshot(engine, lazy=True))))
    points = [name for name in sections if name.startswith("history.points#")]
    assert len({name.rsplit("/", 1)[1] for name in points}) == 4  # 06:00 to 09:30
    assert all(
        isinstance(h["points"]["packed"], dict)
        for name, bucket in sections.items()
        if name.startswith("history#")
        for h in bucket.values()
    )
    wire = orjson.loads(orjson.dumps(sections))
    assert join(wire) == orjson.loads(orjson.dumps(snapshot(engine)))
    restored = restore(EngineConfig(), join(wire))
    assert orjson.dumps(snapshot(restored)) == orjson.dumps(snapshot(engine))


def test_new_kept_events_change_only_their_hours_sections() -> None:
    engine = hours_of_history(3.5)
    before = dict(materialised(split(snapshot(engine, lazy=True))))
    last_hour = max(
        int(name.rsplit("/", 1)[1]) for name in before if name.startswith("history.points#")
    )
    for m in range(5):  # more events in the same (newest) hour, then a close
        event = ef.count(ef.at(6 + 3.5 + 0.05), 1, 1, 2.0, machine=f"m{m}")
        assert engine.ingest(parse_event(event)) is None
    engine.advance(engine.watermark_us + 120_000_000)  # type: ignore[operator]
    after = dict(materialised(split(snapshot(engine, lazy=True))))
    changed = {
        name
        for name in after
        if name.startswith("history")
        and orjson.dumps(after[name]) != orjson.dumps(before.get(name))
    }
    assert changed  # the newest hour's events joined
    assert all(name.startswith("history.points#") for name in changed)
    assert {int(name.rsplit("/", 1)[1]) for name in changed} == {last_hour}


def test_kept_events_out_of_order_stay_in_their_bucket() -> None:
    engine = hours_of_history(1.0, machines=1)
    data = snapshot(engine)
    history = data["history"]["m0"]
    raw = base64.b64decode(history["points"]["packed"])
    size = len(raw) // len(engine.history["m0"].points)
    swapped = raw[-size:] + raw[size:-size] + raw[:size]  # the first and the last swapped
    history["points"]["packed"] = base64.b64encode(swapped).decode()
    sections = dict(materialised(split(data)))
    assert not any(name.startswith("history.points#") for name in sections)
    assert join(sections)["history"]["m0"]["points"]["packed"] == history["points"]["packed"]


def settled(order_id: str, decided_hours: float | None) -> list[Any]:
    verdict = None if decided_hours is None else {"decided_us": int(decided_hours * 3_600 * 10**6)}
    return [{"order_id": order_id, "lines": []}, verdict]


def test_settled_orders_are_bucketed_by_the_hour_they_were_decided() -> None:
    orders = [settled(f"o{n}", 10 + n / 10) for n in range(30)] + [settled("x", None)]
    state = {**STATE, "book": {**STATE["book"], "settled": orders}}
    parts = split(state)
    buckets = sorted(name for name in parts if name.startswith("book.settled#"))
    by_time = [name for name in buckets if "#t" in name]
    assert by_time == ["book.settled#t10", "book.settled#t11", "book.settled#t12"]
    assert f"book.settled#{bucket_of('x', 64)}" in buckets  # no verdict: by its id's hash
    assert join(orjson.loads(orjson.dumps(parts))) == orjson.loads(orjson.dumps(state))
    later = {**state, "book": {**state["book"], "settled": [*orders, settled("o99", 12.95)]}}
    after = split(later)
    changed = {name for name in after if orjson.dumps(after[name]) != orjson.dumps(parts.get(name))}
    assert changed == {"book.settled#t12", "book.settled.order"}
