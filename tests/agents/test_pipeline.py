"""agents.pipeline without a broker: routing and dead letters, shards, watermarks, chunks.

Wall time and event time are separate clocks here, both explicit: `wall(s)`
is the worker's clock s seconds into a test, `ts(m)` is event time m
minutes after 06:00 (on DAY). Input partitions are named `topic:partition`.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import itertools
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from agents import pipeline
from agents.letters import refusal_letter
from agents.pipeline import (
    Incoming,
    Routed,
    Shard,
    chunks,
    engine_partition,
    route_batch,
    snapshot_due,
    tick_message,
)
from devtools.producer import batched
from devtools.simulator import LineSpec, Product, SimConfig, simulate
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine, Output
from streams.events import event_to_json
from streams.records import record_key
from streams.timeutil import US, iso, to_us
from tests import eventfactory as ef
from tests.agents.wire import read_forward
from tests.streams.helpers import run_events

MINUTE_US = 60 * US
T0_US = to_us(ef.DAY) + 6 * 60 * MINUTE_US  # event time 06:00
W0_US = T0_US + 3 * 60 * MINUTE_US  # the worker's clock starts at 09:00: the clocks differ
IDLE_S = 30
MACHINES, ORDERS = "machine-state:0", "orders:0"


def ts(minutes: float) -> int:
    """Event time, `minutes` after 06:00."""
    return T0_US + round(minutes * MINUTE_US)


def wall(seconds: float) -> int:
    """The worker's clock, `seconds` into the test."""
    return W0_US + round(seconds * US)


# ---------------------------------------------------------------- one input message


def alone(
    value: bytes | None,
    *,
    key: bytes | None = b"press-1",
    topic: str = "machine-state",
    source: str = "machine-state",
    partition: int = 3,
    offset: int = 41,
    wall_us: int | None = None,
    **kwargs: Any,
) -> tuple[Routed, bytes | None]:
    """What `route_batch` makes of one input message: its routing and its
    engine-topic forward (None when no event of it is valid)."""
    message = Incoming(topic, partition, offset, key, value)
    now = wall(0) if wall_us is None else wall_us
    batch = route_batch([message], sources={topic: source}, wall_us=now, **kwargs)
    [(_, routed)] = batch.routed
    if not batch.forwards:
        return routed, None
    [(_, forward)] = batch.forwards
    return routed, forward


def _route(value: bytes | None, **kwargs: Any) -> Routed:
    return alone(value, **kwargs)[0]


def _forward(value: bytes | None, **kwargs: Any) -> dict[str, Any]:
    forward = alone(value, **kwargs)[1]
    assert forward is not None
    return read_forward(forward)


def events_of(forward: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for run in forward["runs"] for e in run["events"]]


def test_a_valid_event_is_forwarded_with_wall_time_and_source() -> None:
    event = ef.state(ef.at(6), "running")
    routed, forward = alone(orjson.dumps(event))
    assert routed.dead_letter is None and routed.reasons == []
    assert routed.events == 1
    assert forward is not None
    assert read_forward(forward) == {
        "wall_us": wall(0),
        "runs": [{"source": "machine-state:3", "upto": 41, "events": [event]}],
    }


def test_a_valid_batch_is_forwarded_whole_in_order() -> None:
    batch = [
        ef.state(ef.at(6), "running"),
        ef.count(ef.at(6.5), 100, 98, 1.5),
        ef.state(ef.at(7), "down", reason="jam"),
    ]
    routed, forward = alone(orjson.dumps(batch))
    assert routed.dead_letter is None and routed.events == 3
    assert forward is not None
    assert read_forward(forward)["runs"] == [
        {"source": "machine-state:3", "upto": 41, "events": batch}
    ]


def test_forwarded_events_are_the_contract_json_of_the_validated_events() -> None:
    event = ef.state("2026-11-22T08:00:00.5+02:00", "running")
    [forwarded] = events_of(_forward(orjson.dumps(event)))
    assert forwarded == event_to_json(parse_event(event))
    assert forwarded["ts"] == "2026-11-22T08:00:00.500000+02:00"  # the same instant, µs


def test_the_forward_names_the_topic_not_the_topic_kind() -> None:
    forward = _forward(orjson.dumps(ef.state(ef.at(6), "running")), topic="acme.machines")
    assert [run["source"] for run in forward["runs"]] == ["acme.machines:3"]


def test_announce_adds_the_input_partitions_read() -> None:
    value = orjson.dumps(ef.state(ef.at(6), "running"))
    reading = ["machine-state:3", "orders:0", "shipments:1"]
    assert _forward(value, announce=reading)["sources"] == reading
    assert "sources" not in _forward(value)
    assert "sources" not in _forward(value, announce=[])


@pytest.mark.parametrize(
    ("event", "key", "source", "shard"),
    [
        (ef.state(ef.at(6), "running"), "press-1", "machine-state", "plant-1"),
        (ef.count(ef.at(6), 5, 5, 1.0, site="plant-9"), "press-1", "machine-state", "plant-9"),
        (ef.order("O-1", ef.at(6), ef.at(30)), "O-1", "orders", "orders"),
        (ef.cancelled("O-1", ef.at(7)), "O-1", "orders", "orders"),
        (ef.shipment("O-1", ef.at(20)), "O-1", "shipments", "orders"),
    ],
    ids=["state", "count-other-site", "order", "cancel", "shipment"],
)
def test_shard_key_is_the_site_for_machine_events_else_orders(
    event: dict[str, Any], key: str, source: str, shard: str
) -> None:
    routed, forward = alone(orjson.dumps(event), key=key.encode(), topic=source, source=source)
    assert forward is not None
    assert routed.shard == shard


# A state event and its wire bytes, for the bad-message table.
GOOD = ef.state(ef.at(6), "running")


def _without(event: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != name}


BAD_MESSAGES = [
    # id, value, alone() overrides, reason, index, error starts with
    (
        "truncated-json",
        b'{"type": "state", "event_id": ',
        {},
        "undecodable",
        None,
        "not valid JSON",
    ),
    ("not-utf8", b"\xff\xfe\x00\x81 binary", {}, "undecodable", None, "not valid JSON"),
    ("empty", b"", {}, "undecodable", None, "not valid JSON"),
    (
        "unknown-state",
        orjson.dumps({**GOOD, "state": "flying"}),
        {},
        "schema",
        None,
        "state: unknown value 'flying'",
    ),
    (
        "missing-field",
        orjson.dumps(_without(GOOD, "line")),
        {},
        "schema",
        None,
        "line: required field is missing",
    ),
    (
        "naive-timestamp",
        orjson.dumps({**GOOD, "ts": "2026-11-22T06:00:00"}),
        {},
        "schema",
        None,
        "ts: timestamp has no timezone offset",
    ),
    (
        "key-mismatch",
        orjson.dumps(GOOD),
        {"key": b"press-2"},
        "key_mismatch",
        None,
        "machine: 'press-1' does not match the message key 'press-2'",
    ),
    (
        "wrong-topic",
        orjson.dumps(ef.order("O-1", ef.at(6), ef.at(30))),
        {"key": b"O-1"},
        "wrong_topic",
        None,
        "type: 'order' does not belong on topic 'machine-state'",
    ),
    (
        "too-large",
        orjson.dumps(GOOD),
        {"max_bytes": 64},
        "message_too_large",
        None,
        f"message is {len(orjson.dumps(GOOD))} bytes, over the limit of 64",
    ),
    (
        "batch-too-long",
        orjson.dumps([GOOD, GOOD, GOOD]),
        {"max_batch": 2},
        "batch_too_long",
        None,
        "batch has 3 events, over the limit of 2",
    ),
    ("not-an-object", b"[42]", {}, "not_an_object", 0, "expected an event object, got integer"),
    (
        "bad-batch-element",
        orjson.dumps([{**GOOD, "total": 3}]),
        {},
        "schema",
        0,
        "total: unknown field",
    ),
    (
        "future-timestamp",
        orjson.dumps(GOOD),
        {"wall_us": ts(-60), "max_future_us": 15 * MINUTE_US},
        "future_timestamp",
        None,
        "ts: 2026-11-22T06:00:00Z is 3600 s ahead",
    ),
]


@pytest.mark.parametrize(
    ("value", "overrides", "reason", "index", "error"),
    [pytest.param(*row[1:], id=row[0]) for row in BAD_MESSAGES],
)
def test_a_bad_message_becomes_one_dead_letter_with_the_original_bytes(
    value: bytes, overrides: dict[str, Any], reason: str, index: int | None, error: str
) -> None:
    routed, forward = alone(value, **overrides)
    assert forward is None and routed.events == 0
    assert routed.reasons == [reason]
    letter = orjson.loads(routed.dead_letter)
    assert letter["reason"] == reason
    [only] = letter["errors"]
    assert (only["index"], only["reason"]) == (index, reason)
    assert only["error"].startswith(error), only["error"]
    key = overrides.get("key", b"press-1").decode()
    assert letter["source"] == {"topic": "machine-state", "partition": 3, "offset": 41, "key": key}
    assert letter["valid_events_forwarded"] == 0
    assert letter["received_us"] == overrides.get("wall_us", wall(0))
    assert base64.b64decode(letter["value_b64"], validate=True) == value
    text = None
    with contextlib.suppress(UnicodeDecodeError):
        text = value.decode("utf-8")
    assert letter.get("value_text") == text


def test_value_text_is_cut_at_4096_characters_but_value_b64_keeps_every_byte() -> None:
    value = b"x" * 10_000
    letter = orjson.loads(_route(value).dead_letter)
    assert letter["value_text"] == "x" * 4096
    assert base64.b64decode(letter["value_b64"]) == value


def test_a_mixed_batch_forwards_the_good_and_dead_letters_the_rest_in_one_envelope() -> None:
    good_1 = ef.state(ef.at(6), "running")
    good_2 = ef.count(ef.at(6.5), 10, 9, 2.0)
    batch = [
        good_1,
        {**ef.state(ef.at(6.1), "idle"), "state": "sleeping"},
        good_2,
        ef.state(ef.at(6.2), "down", machine="press-7"),
        "oops",
    ]
    value = orjson.dumps(batch)
    routed, forward = alone(value)
    assert routed.events == 2
    assert forward is not None and events_of(read_forward(forward)) == [good_1, good_2]
    assert routed.reasons == ["schema", "key_mismatch", "not_an_object"]
    letter = orjson.loads(routed.dead_letter)
    assert letter["reason"] == "schema"  # the first error's
    assert [(e["index"], e["reason"]) for e in letter["errors"]] == [
        (1, "schema"),
        (3, "key_mismatch"),
        (4, "not_an_object"),
    ]
    assert letter["errors"][0]["error"].startswith("state: unknown value 'sleeping'")
    assert letter["errors"][1]["error"].startswith("machine: 'press-7'")
    assert letter["valid_events_forwarded"] == 2
    assert base64.b64decode(letter["value_b64"]) == value


def test_a_future_event_in_a_batch_is_dead_lettered_with_its_index() -> None:
    batch = [ef.state(ef.at(6), "running"), ef.state(ef.at(9), "down")]
    routed = _route(orjson.dumps(batch), wall_us=ts(60), max_future_us=15 * MINUTE_US)
    letter = orjson.loads(routed.dead_letter)
    assert [(e["index"], e["reason"]) for e in letter["errors"]] == [(1, "future_timestamp")]


def test_a_tombstone_has_its_own_dead_letter_reason() -> None:
    routed, forward = alone(None, key=None)
    assert forward is None
    letter = orjson.loads(routed.dead_letter)
    assert letter["reason"] == "tombstone"
    assert "null" in letter["errors"][0]["error"]
    assert letter["source"]["key"] is None
    assert letter["value_b64"] == "" and letter["value_text"] == ""
    # An empty value is another thing: not JSON.
    empty = orjson.loads(_route(b"", key=None).dead_letter)
    assert empty["reason"] == "undecodable"


def test_a_key_that_is_not_utf8_is_reported_readably() -> None:
    routed = _route(orjson.dumps(GOOD), key=b"press-\xff")
    letter = orjson.loads(routed.dead_letter)
    assert letter["reason"] == "key_mismatch"
    assert letter["source"]["key"] == "press-\ufffd"


# ---------------------------------------------------------------- route_batch()

SOURCES = {"machine-state": "machine-state", "orders": "orders", "shipments": "shipments"}


def incoming(source: str, offset: int, value: Any, key: str | None = None) -> Incoming:
    """Input message `offset` of partition `source` ("topic:partition"), JSON-encoded."""
    topic, partition = source.split(":")
    data = value if isinstance(value, bytes) else orjson.dumps(value)
    return Incoming(topic, int(partition), offset, key.encode() if key else None, data)


def test_a_batch_is_one_forward_of_runs_per_input_partition_in_input_order() -> None:
    a, b = ef.state(ef.at(6), "running"), ef.count(ef.at(6.1), 5, 5, 1.0)
    order = ef.order("O-1", ef.at(6), ef.at(30))
    c = ef.state(ef.at(6.2), "down", reason="jam")
    batch = route_batch(
        [
            incoming("machine-state:1", 7, a, "press-1"),
            incoming("machine-state:1", 8, [b], "press-1"),
            incoming("orders:0", 3, order, "O-1"),
            incoming("machine-state:1", 9, c, "press-1"),
        ],
        sources=SOURCES,
        wall_us=wall(0),
        announce=["machine-state:1", "orders:0"],
    )
    [(partition, value)] = batch.forwards
    assert partition == 0
    assert read_forward(value) == {
        "wall_us": wall(0),
        "runs": [
            {"source": "machine-state:1", "upto": 8, "events": [a, b]},
            {"source": "orders:0", "upto": 3, "events": [order]},
            {"source": "machine-state:1", "upto": 9, "events": [c]},
        ],
        "sources": ["machine-state:1", "orders:0"],
    }
    assert [(m.offset, r.events, r.dead_letter) for m, r in batch.routed] == [
        (7, 1, None),
        (8, 1, None),
        (3, 1, None),
        (9, 1, None),
    ]


def test_a_bad_message_of_a_batch_is_its_own_dead_letter_and_the_rest_go_on() -> None:
    good = ef.state(ef.at(6), "running")
    bad = b'{"type": "state", "event_id": '
    mixed = [ef.state(ef.at(6.1), "idle"), {**good, "state": "sleeping"}]
    batch = route_batch(
        [
            incoming("machine-state:0", 0, good, "press-1"),
            incoming("machine-state:0", 1, bad, "press-1"),
            incoming("machine-state:0", 2, mixed, "press-1"),
        ],
        sources=SOURCES,
        wall_us=wall(0),
    )
    [(_, value)] = batch.forwards
    assert read_forward(value)["runs"] == [
        {"source": "machine-state:0", "upto": 2, "events": [good, mixed[0]]}
    ]
    assert "sources" not in orjson.loads(value)
    letters = [(m.offset, r.reasons) for m, r in batch.routed if r.dead_letter is not None]
    assert letters == [(1, ["undecodable"]), (2, ["schema"])]
    # Each dead letter is what routing makes of that message alone.
    for message, routed in batch.routed:
        single = _route(
            message.value,
            key=message.key,
            topic=message.topic,
            source=message.topic,
            partition=message.partition,
            offset=message.offset,
        )
        assert (routed.dead_letter, routed.reasons, routed.events) == (
            single.dead_letter,
            single.reasons,
            single.events,
        )


def test_a_batch_with_nothing_valid_forwards_nothing() -> None:
    batch = route_batch(
        [incoming("orders:0", 0, b"nope")], sources=SOURCES, wall_us=wall(0), announce=[ORDERS]
    )
    assert batch.forwards == []
    assert [r.reasons for _, r in batch.routed] == [["undecodable"]]


@pytest.mark.parametrize("partitions", [2, 3, 8])
def test_each_site_goes_to_the_engine_partition_kafka_would_pick_for_its_key(
    partitions: int,
) -> None:
    sites = [f"plant-{n}" for n in range(12)]
    messages = [
        incoming("machine-state:0", n, ef.state(ef.at(6), "running", site=site), "press-1")
        for n, site in enumerate(sites)
    ] + [incoming("orders:0", 12, ef.order("O-1", ef.at(6), ef.at(30)), "O-1")]
    batch = route_batch(messages, sources=SOURCES, wall_us=wall(0), engine_partitions=partitions)
    every = list(range(partitions))
    expected: dict[int, list[str]] = {}
    for shard in [*sites, "orders"]:
        expected.setdefault(DefaultPartitioner()(shard.encode(), every, every), []).append(shard)
    got = {
        partition: [
            e.get("site", "orders") for run in read_forward(v)["runs"] for e in run["events"]
        ]
        for partition, v in batch.forwards
    }
    assert got == expected  # one forward per partition, its sites in input order
    assert engine_partition("anything", 1) == 0


def test_a_batch_over_max_bytes_is_split_between_input_messages() -> None:
    events = [ef.count(iso(ts(n / 10)), 5, 5, 1.0) for n in range(60)]
    messages = [incoming("machine-state:0", n, e, "press-1") for n, e in enumerate(events)]
    limit = 4096
    batch = route_batch(
        messages, sources=SOURCES, wall_us=wall(0), max_bytes=limit, announce=[MACHINES]
    )
    values = [read_forward(v) for _, v in batch.forwards]
    assert len(values) > 1
    assert all(len(v) <= limit for _, v in batch.forwards)
    assert [e for v in values for run in v["runs"] for e in run["events"]] == events
    assert ["sources" in v for v in values] == [True] + [False] * (len(values) - 1)


def test_an_input_message_whose_forward_is_over_max_bytes_is_forwarded_whole() -> None:
    # Forwarded events are shorter than their input, so a short one: the
    # input fits; with its envelope the forward does not.
    events = [ef.state(ef.at(6), "running")]
    limit = len(orjson.dumps(events))
    batch = route_batch(
        [incoming("machine-state:0", 0, events, "press-1")],
        sources=SOURCES,
        wall_us=wall(0),
        max_bytes=limit,
    )
    [(_, value)] = batch.forwards
    assert len(value) > limit
    assert read_forward(value)["runs"][0]["events"] == events


@pytest.mark.parametrize(
    ("since_s", "last_took_s", "due"),
    [
        (1.9, 0.0, False),  # the interval is 2 s
        (2.0, 0.0, True),
        (2.0, 0.15, True),  # a short snapshot: the interval rules
        (4.9, 0.5, False),  # a 0.5 s snapshot: the next one after 5 s
        (5.0, 0.5, True),
        (46.0, 4.7, False),
    ],
)
def test_a_snapshot_is_due_after_the_interval_or_ten_times_the_last_ones_duration(
    since_s: float, last_took_s: float, due: bool
) -> None:
    assert snapshot_due(since_s, last_took_s, interval_s=2.0) is due


# ---------------------------------------------------------------- Shard: offsets and snapshots


@dataclass
class Feed:
    """Writes engine-topic messages into a shard at increasing offsets, as Kafka would."""

    shard: Shard
    offset: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    trace: list[tuple[int, int | None, int]] = field(default_factory=list)
    """(offset, watermark after it, records it produced) of each message applied."""

    def apply(self, value: bytes) -> Output | None:
        out = self.shard.apply(self.offset, value)
        if out is not None:
            self.records += out.records
            self.alerts += out.alerts
            self.trace.append((self.offset, self.watermark_us, len(out.records)))
        self.offset += 1
        return out

    def send(
        self, source: str, at_s: float, *events: dict[str, Any], announce: list[str] | None = None
    ) -> Output | None:
        """Input partition `source` delivers `events` at wall(at_s), routed alone."""
        topic, partition = source.split(":")
        routed, forward = alone(
            orjson.dumps(list(events)),
            key=None,
            topic=topic,
            source=topic,
            partition=int(partition),
            offset=0,
            wall_us=wall(at_s),
            announce=announce,
        )
        assert forward is not None and routed.dead_letter is None
        return self.apply(forward)

    def tick(self, at_s: float, caught_up: dict[str, bool]) -> Output | None:
        """A tick at wall(at_s): each input partition read to its end or not."""
        return self.apply(tick_message(wall(at_s), caught_up))

    @property
    def watermark_us(self) -> int | None:
        return self.shard.engine.watermark_us


ENGINE = EngineConfig(windows=["1h", "1d"], allowed_lateness="5m")


def new_feed(config: EngineConfig = ENGINE) -> Feed:
    return Feed(Shard(config, IDLE_S * US))


def test_messages_below_next_offset_are_skipped_on_replay() -> None:
    feed = new_feed()
    feed.send(MACHINES, 0, ef.state(iso(ts(0)), "running"), announce=[MACHINES])
    feed.send(MACHINES, 1, ef.count(iso(ts(1)), 60, 59, 1.0))
    feed.tick(2, {MACHINES: True})
    state = feed.shard.to_bytes()
    assert feed.shard.next_offset == 3
    _, again = alone(
        orjson.dumps(ef.count(iso(ts(1)), 60, 59, 1.0)),
        key=None,
        partition=0,
        offset=0,
        wall_us=wall(1),
    )
    assert again is not None
    for offset in (0, 1, 2):
        assert feed.shard.apply(offset, again) is None
    assert feed.shard.stats["skipped_replayed"] == 3
    assert feed.shard.to_bytes() == state


ROUTE_PARTITIONS = 2
SMALL_PLANT = SimConfig(
    lines=(LineSpec("line-1", ("press-1", "press-2"), (Product("SKU-1", 2.0),), 0.02),),
    count_interval_s=300.0,
)


def plant_messages(hours: float, seed: int = 11) -> Iterator[bytes]:
    """Engine-topic messages of a simulated plant, as the ingest agent writes them:
    batches routed from two partitions per input topic, arriving 2 s after their
    event time, with a tick after every 10 messages (everything caught up); then
    the plant falls silent and two hours of ticks, one a minute, follow."""
    sources = [f"{t}:{p}" for t in ("machine-state", "orders", "shipments") for p in (0, 1)]
    events = simulate(SMALL_PLANT, seed, T0_US, hours * 3600)
    now = T0_US
    for n, (topic, key, batch) in enumerate(batched(events, max_batch=5)):
        now = max(parse_event(e).ts_us for e in batch) + 2 * US
        routed, forward = alone(
            orjson.dumps(batch),
            key=key.encode(),
            topic=topic,
            source=topic,
            partition=zlib.crc32(key.encode()) % ROUTE_PARTITIONS,
            offset=n,
            wall_us=now,
            announce=sources if n == 0 else None,
        )
        assert forward is not None and routed.dead_letter is None
        yield forward
        if n % 10 == 9:
            yield tick_message(now, dict.fromkeys(sources, True))
    for minute in range(1, 121):
        yield tick_message(now + minute * MINUTE_US, dict.fromkeys(sources, True))


def run_shard(messages: list[bytes], feed: Feed | None = None, start: int = 0) -> Feed:
    feed = feed or Feed(Shard(EngineConfig(), IDLE_S * US))
    feed.offset = start
    for value in messages[start:]:
        feed.apply(value)
    return feed


@pytest.fixture(scope="module")
def plant_day() -> tuple[list[bytes], Feed]:
    """A day of a small plant and the records of a shard that was never interrupted."""
    messages = list(plant_messages(hours=24))
    return messages, run_shard(messages)


@pytest.mark.parametrize("cut", [1, 97, 555, -125, -60, -3])
def test_restoring_a_snapshot_mid_stream_gives_the_records_of_an_uninterrupted_shard(
    plant_day: tuple[list[bytes], Feed], cut: int
) -> None:
    messages, whole = plant_day
    assert len(whole.records) > 1000 and whole.alerts  # the day closes plenty of windows
    cut %= len(messages)
    before = run_shard(messages[:cut])
    data = before.shard.to_bytes()
    restored = Feed(Shard.from_bytes(EngineConfig(), IDLE_S * US, data))
    # Kafka may hand over messages the snapshot covers (the commit lags it): resume 7 early.
    after = run_shard(messages, restored, start=max(0, cut - 7))
    assert restored.shard.stats["skipped_replayed"] == cut - max(0, cut - 7)
    assert [record_key(r) for r in before.records + after.records] == [
        record_key(r) for r in whole.records
    ]
    assert before.records + after.records == whole.records
    assert before.trace + after.trace == whole.trace  # each at the same message, too
    assert before.alerts + after.alerts == whole.alerts
    assert orjson.loads(after.shard.to_bytes()) == orjson.loads(whole.shard.to_bytes())


def test_a_snapshot_restores_a_shard_that_has_seen_nothing() -> None:
    empty = Shard(ENGINE, IDLE_S * US)
    restored = Shard.from_bytes(ENGINE, IDLE_S * US, empty.to_bytes())
    assert restored.to_bytes() == empty.to_bytes()
    assert restored.next_offset == 0 and restored.clock.first_data is None


def test_a_snapshot_keeps_the_layout_older_workers_wrote_and_read() -> None:
    #   wall (s)         0 (announces both)   40 (tick)           50
    #   machine-state:0  06:00                caught up
    #   orders:0                              not caught up       06:06
    feed = new_feed()
    feed.send(MACHINES, 0, ef.state(iso(ts(0)), "running"), announce=[MACHINES, ORDERS])
    feed.tick(40, {MACHINES: True, ORDERS: False})
    feed.send(ORDERS, 50, ef.order("O-1", iso(ts(6)), iso(ts(180))))
    data = feed.shard.to_bytes()
    # Byte for byte what the shard wrote before its clock was `streams.clock`'s,
    # and then when a tick last named each input (older workers ignore it).
    assert data[: data.index(b',"engine":')] == (
        b'{"next_offset":3,'
        b'"sources":{"machine-state:0":[%d,%d],"orders:0":[%d,%d]},'
        b'"caught_up":{"machine-state:0":true,"orders:0":false},'
        b'"first_data":[%d,%d],"last_event_wall_us":%d,'
        b'"told":{"machine-state:0":%d,"orders:0":%d}'
        % (ts(0), wall(0), ts(6), wall(50), ts(0), wall(0), wall(50), wall(40), wall(40))
    )
    restored = Shard.from_bytes(ENGINE, IDLE_S * US, data)
    assert restored.to_bytes() == data


def test_a_forward_of_runs_gives_what_one_forward_per_run_gives() -> None:
    #   runs:  machine-state:0 [06:00 running, 06:20 count] | orders:0 [order] | machine-state:0 [07:10 down]
    #   as one message, or as three messages at the same wall time: the same
    #   (those three in the one-message format ingest wrote before it sent runs,
    #   which an engine topic written by an older worker still holds)
    sources = [MACHINES, ORDERS]
    runs = [
        (MACHINES, [ef.state(iso(ts(0)), "running"), ef.count(iso(ts(20)), 60, 59, 1.0)]),
        (ORDERS, [ef.order("O-1", iso(ts(5)), iso(ts(200)))]),
        (MACHINES, [ef.state(iso(ts(70)), "down", reason="jam")]),
    ]
    together, apart = new_feed(), new_feed()
    together.tick(0, dict.fromkeys(sources, True))
    apart.tick(0, dict.fromkeys(sources, True))
    value = {
        "wall_us": wall(1),
        "runs": [{"source": s, "events": e} for s, e in runs],
        "sources": sources,
    }
    together.apply(orjson.dumps(value))
    for n, (source, events) in enumerate(runs):
        single = {"wall_us": wall(1), "source": source, "events": events}
        apart.apply(orjson.dumps(single | ({"sources": sources} if n == 0 else {})))
    for feed in (together, apart):
        feed.tick(400, dict.fromkeys(sources, True))  # all quiet: the 06:00 hour closes
    assert together.records and together.records == apart.records
    assert together.alerts == apart.alerts
    assert snapshot_of(together) == snapshot_of(apart)


def snapshot_of(feed: Feed) -> Any:
    """The shard's state without the engine-topic offset it has reached."""
    state = orjson.loads(feed.shard.to_bytes())
    del state["next_offset"]
    return state


def plant_inputs(hours: float, seed: int = 11) -> list[tuple[Incoming, int]]:
    """Input messages of a simulated plant with the wall time each arrives:
    batches of up to 5 events from two partitions per input topic, 2 s after
    their event time."""
    events = simulate(SMALL_PLANT, seed, T0_US, hours * 3600)
    out = []
    for n, (topic, key, batch) in enumerate(batched(events, max_batch=5)):
        now = max(parse_event(e).ts_us for e in batch) + 2 * US
        partition = zlib.crc32(key.encode()) % ROUTE_PARTITIONS
        out.append((incoming(f"{topic}:{partition}", n, batch, key), now))
    return out


@pytest.mark.parametrize("size", [1, 4, 25])
def test_forwarding_input_in_batches_closes_the_same_windows_as_one_by_one(size: int) -> None:
    """Ingest reads a batch at once: every message of it gets the wall time of
    the batch. Forwarded together or one at a time, the records are the same."""
    sources = [f"{t}:{p}" for t in ("machine-state", "orders", "shipments") for p in (0, 1)]
    inputs = plant_inputs(hours=12)
    together, apart = (
        Feed(Shard(EngineConfig(), IDLE_S * US)),
        Feed(Shard(EngineConfig(), IDLE_S * US)),
    )
    for start in range(0, len(inputs), size):
        group = [m for m, _ in inputs[start : start + size]]
        now = inputs[start + len(group) - 1][1]
        announce = sources if start == 0 else None
        batch = route_batch(group, sources=SOURCES, wall_us=now, announce=announce)
        for _, value in batch.forwards:
            together.apply(value)
        for n, m in enumerate(group):
            one = route_batch(
                [m], sources=SOURCES, wall_us=now, announce=announce if n == 0 else None
            )
            [(_, forward)] = one.forwards
            apart.apply(forward)
        if start // size % 3 == 2:
            together.apply(tick_message(now, dict.fromkeys(sources, True)))
            apart.apply(tick_message(now, dict.fromkeys(sources, True)))
    end = (inputs[-1][1] - W0_US) / US
    for minute in range(1, 121):
        together.tick(end + 60 * minute, dict.fromkeys(sources, True))
        apart.tick(end + 60 * minute, dict.fromkeys(sources, True))
    assert len(apart.records) > 300
    assert not any(k.startswith("late.") for k in apart.shard.engine.stats)
    assert together.records == apart.records
    assert sorted(a["alert_id"] for a in together.alerts) == sorted(
        a["alert_id"] for a in apart.alerts
    )
    assert snapshot_of(together)["engine"] == snapshot_of(apart)["engine"]


def kafka_inputs(events: list[dict[str, Any]], partitions: int) -> dict[str, list[Incoming]]:
    """Each input partition's messages as the producer writes them: runs of one
    topic and key (`batched`), on the partition Kafka's default partitioner picks."""
    every = list(range(partitions))
    logs: dict[str, list[Incoming]] = {f"{t}:{p}": [] for t in SOURCES for p in every}
    for topic, key, batch in batched(events, max_batch=50):
        source = f"{topic}:{DefaultPartitioner()(key.encode(), every, every)}"
        logs[source].append(incoming(source, len(logs[source]), batch, key))
    return logs


def replay_records(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`kpimon replay`'s records of the windows a live shard must have closed."""
    engine = Engine(ENGINE)
    out = run_events(engine, (parse_event(e) for e in events))
    out.extend(engine.flush())
    closable = iso(max(parse_event(e).ts_us for e in events) - 5 * MINUTE_US)
    return {record_key(r): r for r in out.records if r["end"] <= closable}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_interleaving_of_the_input_partitions_closes_what_replay_closes(seed: int) -> None:
    """Ingest reads the input partitions in no fixed order: Kafka fetches them
    apart, and a small partition (orders, shipments) is read to its end while
    the machine partitions are hours behind. Whatever the interleaving, the
    batch sizes and the clock, the closed windows are replay's."""
    rng = random.Random(seed)
    events = list(simulate(SimConfig(id_prefix=f"i{seed}-"), seed, T0_US, 2 * 86_400))
    logs = kafka_inputs(events, partitions=4)
    read = dict.fromkeys(logs, 0)
    feed = new_feed(EngineConfig(windows=["1h", "1d"], allowed_lateness="5m"))
    feed.shard.clock.idle_us = 10 * US
    now, next_tick, announce = W0_US, W0_US, sorted(logs)
    while unread := [s for s in logs if read[s] < len(logs[s])]:
        batch: list[Incoming] = []
        for _ in range(rng.randint(1, 1000)):  # the messages of one ingest batch
            if not unread:
                break
            source = rng.choice(unread)
            batch.append(logs[source][read[source]])
            read[source] += 1
            unread = [s for s in unread if read[s] < len(logs[s])]
        now += rng.randint(1, 300) * 1000
        while next_tick <= now:  # half-second ticks; read to its end = caught up
            feed.apply(tick_message(next_tick, {s: read[s] == len(logs[s]) for s in logs}))
            next_tick += US // 2
        routed = route_batch(batch, sources=SOURCES, wall_us=now, announce=announce)
        for _, value in routed.forwards:
            feed.apply(value)
        announce = None
    for _ in range(40):  # everything read: after `idle_us` the clock closes the rest
        now += US // 2
        feed.apply(tick_message(now, dict.fromkeys(logs, True)))
    expected = replay_records(events)
    published = {record_key(r): r for r in feed.records}
    assert len(expected) > 100
    assert not any(k.startswith("late.") for k in feed.shard.engine.stats)
    assert {k: published.get(k) for k in expected} == expected


@pytest.mark.parametrize("enabled", [True, False])
def test_cyclic_gc_is_paused_while_a_shard_is_serialised_and_restored(enabled: bool) -> None:
    feed = new_feed()
    feed.send(MACHINES, 0, ef.state(iso(ts(0)), "running"), announce=[MACHINES])
    seen: list[bool] = []
    snapshot, restore = pipeline.snapshot, pipeline.restore

    def snapshot_spy(engine: Engine) -> Any:
        seen.append(gc.isenabled())
        return snapshot(engine)

    def restore_spy(*args: Any, **kwargs: Any) -> Engine:
        seen.append(gc.isenabled())
        return restore(*args, **kwargs)

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with (
            mock.patch("agents.pipeline.snapshot", snapshot_spy),
            mock.patch("agents.pipeline.restore", restore_spy),
        ):
            data = feed.shard.to_bytes()
            Shard.from_bytes(ENGINE, IDLE_S * US, data)
        assert gc.isenabled() is enabled  # as it was before
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False, False]


# ---------------------------------------------------------------- Shard: watermark rules


def test_an_input_with_unread_data_holds_the_watermark_at_its_newest_event() -> None:
    #   wall (s)         0    1                        600                 601
    #   machine-state:0  06:10 ......caught up, quiet, creeps: 06:10 + 600 s ........
    #   orders:0              06:01 ... unread data ... holds 06:01 | caught up, quiet
    #   watermark             06:01                    06:01               06:20
    feed = new_feed()
    feed.send(MACHINES, 0, ef.state(iso(ts(10)), "running"), announce=[MACHINES, ORDERS])
    assert feed.watermark_us is None  # orders never sent yet
    feed.send(ORDERS, 1, ef.order("O-1", iso(ts(1)), iso(ts(600))))
    assert feed.watermark_us == ts(1)
    feed.tick(600, {MACHINES: True, ORDERS: False})
    assert feed.watermark_us == ts(1)
    # Once read up and quiet, orders too move on: everything is quiet, so event
    # time follows the clock from the newest event (06:10) since the last one (wall 1).
    feed.tick(601, {MACHINES: True, ORDERS: True})
    assert feed.watermark_us == ts(10) + 600 * US


def test_an_input_that_sent_within_idle_holds_the_watermark_even_if_caught_up() -> None:
    #   wall (s)         0           20          29           31
    #   machine-state:0  06:10 ........ caught up, quiet (creeps) ....
    #   orders:0         06:01 (sent) .. caught up, not yet quiet ..| quiet
    #   watermark        06:01       06:01       06:01        06:10 + 31 s
    feed = new_feed()
    feed.send(MACHINES, 0, ef.state(iso(ts(10)), "running"), announce=[MACHINES, ORDERS])
    feed.send(ORDERS, 0, ef.order("O-1", iso(ts(1)), iso(ts(600))))
    for at_s in (20, 29):
        feed.tick(at_s, {MACHINES: True, ORDERS: True})
        assert feed.watermark_us == ts(1)
    feed.tick(31, {MACHINES: True, ORDERS: True})
    assert feed.watermark_us == ts(10) + 31 * US


def test_an_announced_input_that_never_sent_blocks_until_caught_up_and_quiet() -> None:
    #   wall (s)         0            20         100          130
    #   machine-state:0  06:10 (announces orders:0) ... unread data ...
    #   orders:0         -- never sends -----------------------------
    #     tick           .            caught up  NOT caught up caught up, 130 s quiet
    #   watermark        none         none       none          06:10
    feed = new_feed()
    feed.send(MACHINES, 0, ef.state(iso(ts(10)), "running"), announce=[MACHINES, ORDERS])
    assert feed.watermark_us is None
    feed.tick(20, {MACHINES: True, ORDERS: True})  # caught up, but quiet for only 20 s
    assert feed.watermark_us is None
    feed.tick(100, {MACHINES: False, ORDERS: False})  # quiet for long, but not caught up
    assert feed.watermark_us is None
    feed.tick(130, {MACHINES: False, ORDERS: True})
    # orders:0 now creeps from the first event seen (06:10 at wall 0): 06:10 + 130 s;
    # machine-state:0 has unread data and holds at its newest event.
    assert feed.watermark_us == ts(10)


def test_a_dead_input_that_never_sent_creeps_from_the_first_event_seen() -> None:
    #   wall (s)         0       35           40           100
    #   machine-state:0  06:10   (quiet)      06:12        06:14
    #   orders:0         -- never sends, caught up ---------------------------
    #   watermark        none    06:10:35     06:10:40     06:11:40
    #                            (all quiet)  (orders:0 creeps from 06:10 at wall 0)
    feed = new_feed()
    feed.send(MACHINES, 0, ef.state(iso(ts(10)), "running"), announce=[MACHINES, ORDERS])
    feed.tick(35, {MACHINES: True, ORDERS: True})  # everything quiet: follows the clock
    assert feed.watermark_us == ts(10) + 35 * US
    feed.send(MACHINES, 40, ef.count(iso(ts(12)), 10, 10, 1.0))
    assert feed.watermark_us == ts(10) + 40 * US  # orders:0 creeps; machines hold at 06:12
    feed.tick(99, {MACHINES: False, ORDERS: True})  # (its reader says so every tick)
    feed.send(MACHINES, 100, ef.count(iso(ts(14)), 10, 10, 1.0))
    assert feed.watermark_us == ts(10) + 100 * US


def test_a_quiet_input_creeps_at_clock_pace_from_its_newest_event() -> None:
    #   wall (s)         0      25     45        80       100       200
    #   machine-state:0  06:10 ........ caught up, quiet: 06:10 + wall ..........
    #   orders:0                06:12 ...........06:13 ............ 06:13 (190 s)
    #   watermark               06:10  06:10:45  06:11:20 06:11:40  06:13
    #                                  (machines creep)             (orders hold)
    feed = new_feed()
    feed.send(MACHINES, 0, ef.state(iso(ts(10)), "running"), announce=[MACHINES, ORDERS])
    feed.send(ORDERS, 25, ef.order("O-1", iso(ts(12)), iso(ts(600))))
    assert feed.watermark_us == ts(10)
    feed.tick(45, {MACHINES: True, ORDERS: True})
    assert feed.watermark_us == ts(10) + 45 * US
    feed.tick(79, {MACHINES: True, ORDERS: False})  # (ticks come every second)
    feed.send(ORDERS, 80, ef.order("O-2", iso(ts(13)), iso(ts(600))))
    assert feed.watermark_us == ts(10) + 80 * US
    feed.tick(100, {MACHINES: True, ORDERS: True})
    assert feed.watermark_us == ts(10) + 100 * US
    feed.send(ORDERS, 190, ef.order("O-3", iso(ts(13)), iso(ts(600))))
    feed.tick(200, {MACHINES: True, ORDERS: True})
    assert feed.watermark_us == ts(13)  # the creep passed orders' newest event: it holds


def test_when_every_input_is_quiet_a_silent_plants_windows_close_by_ticks_alone() -> None:
    #   event time   06:00     06:10  06:20  06:40               07:00  07:05
    #   1h window    [06:00 ........................................ 07:00)
    #   events              running  order  count (last, wall 2 s)
    #   ticks (wall)                       2 s + 24 min: wm 07:04, frontier 06:59, open
    #                                      2 s + 25 min: wm 07:05, frontier 07:00, closed
    feed = new_feed()
    feed.send(MACHINES, 0, ef.state(iso(ts(10)), "running"), announce=[MACHINES, ORDERS])
    feed.send(ORDERS, 1, ef.order("O-1", iso(ts(20)), iso(ts(600))))
    feed.send(MACHINES, 2, ef.count(iso(ts(40)), 1200, 1180, 1.0))
    for minutes in range(1, 25):
        feed.tick(2 + 60 * minutes, {MACHINES: True, ORDERS: True})
    assert feed.watermark_us == ts(64)
    assert not feed.records
    feed.tick(2 + 60 * 25, {MACHINES: True, ORDERS: True})
    assert feed.watermark_us == ts(65)
    hour = [r for r in feed.records if r["window"] == "1h"]
    assert [(r["kpi"], r.get("scope")) for r in hour] == [
        ("oee", "machine"),
        ("oee", "line"),
        ("oee", "site"),
        ("pchart", None),
    ]
    assert {(r["start"], r["end"]) for r in hour} == {(iso(ts(0)), iso(ts(60)))}
    assert (hour[0]["total"], hour[0]["good"]) == (1200, 1180)


def test_a_burst_on_one_input_does_not_make_another_inputs_next_events_late() -> None:
    # Orders arrive with their event time; machines replay a backlog in a burst
    # that runs an hour ahead of the orders' clock. Allowed lateness is zero.
    #
    #   wall (s)         0         1 ... 4                 20          55         60
    #   orders:0         06:00                              06:00:20    (quiet)    06:01:00
    #   machine-state:0  06:00     06:15 ... 07:00 (burst, unread data) ..................
    #   watermark        06:00     06:00 (held by orders)   06:00:20    06:00:55
    #   engine alone     06:00     07:00 -> both later orders would be late
    config = EngineConfig(windows=["1h", "1d"], allowed_lateness="0s")
    feed = new_feed(config)
    first = ef.order("O-1", iso(ts(0)), iso(ts(600)))
    feed.send(ORDERS, 0, first, announce=[MACHINES, ORDERS])
    feed.send(MACHINES, 0, ef.state(iso(ts(0)), "running"))
    burst = [ef.count(iso(ts(m)), 900, 890, 1.0) for m in (15, 30, 45, 60)]
    for at_s, event in zip(range(1, 5), burst, strict=True):
        feed.send(MACHINES, at_s, event)
        feed.tick(at_s, {MACHINES: False, ORDERS: True})
    assert feed.watermark_us == ts(0)
    second = ef.order("O-2", iso(ts(20 / 60)), iso(ts(600)))
    feed.send(ORDERS, 20, second)
    # Orders are read up and quiet for 35 s: they creep at clock pace.
    feed.tick(55, {MACHINES: False, ORDERS: True})
    assert feed.watermark_us == ts(20 / 60) + 35 * US
    third = ef.order("O-3", iso(ts(1)), iso(ts(600)))
    feed.send(ORDERS, 60, third)
    engine = feed.shard.engine
    assert engine.stats["late.orders"] == 0
    assert {"O-1", "O-2", "O-3"} <= set(engine.book.open)

    alone = Engine(config)  # one watermark for everything: the largest timestamp seen
    for e in (first, *burst, second, third):
        alone.ingest(parse_event(e))
    assert alone.stats["late.orders"] == 2  # (applied: open orders, nothing published yet)


@pytest.mark.parametrize(("lateness", "late"), [("3m", 0), ("1m", 1)])
def test_when_all_fall_quiet_a_lagging_input_needs_lateness_to_cover_its_lag(
    lateness: str, late: int
) -> None:
    # Orders arrive 2 min after their event time; machines are live. Both fall quiet.
    # Everything has been read, so time jumps to the newest event: an input
    # lagging the others by more than the allowed lateness then loses its next
    # event as late (documented: lateness must cover the lag between inputs).
    #
    #   wall (s)         0           10             45 (both quiet)   50
    #   orders:0         05:58 (2 min late) ........................  05:58:50
    #   machine-state:0  06:00       06:00:10 ...........
    #   watermark        05:58       05:58          06:00:45          05:58:50 late unless lateness >= 2 min
    config = EngineConfig(windows=["1h", "1d"], allowed_lateness=lateness)
    feed = new_feed(config)
    feed.send(ORDERS, 0, ef.order("O-1", iso(ts(-2)), iso(ts(600))), announce=[MACHINES, ORDERS])
    feed.send(MACHINES, 0, ef.state(iso(ts(0)), "running"))
    feed.send(MACHINES, 10, ef.count(iso(ts(10 / 60)), 10, 10, 1.0))
    feed.tick(45, {MACHINES: True, ORDERS: True})
    feed.send(ORDERS, 50, ef.order("O-2", iso(ts(-2 + 50 / 60)), iso(ts(600))))
    assert feed.shard.engine.stats["late.orders"] == late


# ---------------------------------------------------------------- Shard: refused events


@pytest.mark.parametrize(
    ("source", "held", "refused", "reason", "limits"),
    [
        (
            "machine-state:3",
            ef.state(iso(ts(0)), "running"),
            ef.state(iso(ts(1)), "idle", machine="press-2"),
            "too_many_machines",
            {"max_machines": 1},
        ),
        (
            "shipments:2",
            ef.shipment("O-1", iso(ts(0))),
            ef.shipment("O-2", iso(ts(1))),
            "too_many_open_orders",
            {"max_open_orders": 1},
        ),
    ],
)
def test_a_refused_event_becomes_a_dead_letter_naming_its_input_partition(
    source: str,
    held: dict[str, Any],
    refused: dict[str, Any],
    reason: str,
    limits: dict[str, int],
) -> None:
    feed = new_feed(EngineConfig(windows=["1h", "1d"], allowed_lateness="5m", **limits))
    first = feed.send(source, 0, held, announce=[source])
    assert first is not None and first.rejected == first.dead_letters == []
    out = feed.send(source, 2, refused)
    assert out is not None
    [rejected] = out.rejected
    assert rejected["reason"] == reason
    topic, partition = source.split(":")
    [(letter_topic, letter_reason, value)] = out.dead_letters
    assert (letter_topic, letter_reason) == (topic, reason)
    letter = orjson.loads(value)
    event = event_to_json(parse_event(refused))
    raw = base64.b64decode(letter.pop("value_b64"), validate=True)
    assert orjson.loads(raw) == event == rejected["event"]
    assert letter == {
        "reason": reason,
        "errors": [{"index": None, "reason": reason, "error": rejected["error"]}],
        "source": {
            "topic": topic,
            "partition": int(partition),
            "offset": None,  # the engine topic does not carry input offsets
            "key": parse_event(refused).key,
            # but the engine message's place does (the feed's shard is unnamed)
            "engine": {"topic": "", "partition": None, "offset": 1, "index": 0},
        },
        "valid_events_forwarded": 0,
        "received_us": wall(2),
        "size_bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "truncated": False,
        "value_text": raw.decode(),
    }


def test_each_refused_event_of_a_forward_names_its_own_run() -> None:
    #   runs: machine-state:0 [press-1 06:00]  machine-state:3 [press-2 06:01, press-1 06:02]
    #   max_machines 1: press-2 is refused; press-1 after it is applied
    feed = new_feed(EngineConfig(windows=["1h", "1d"], allowed_lateness="5m", max_machines=1))
    other = "machine-state:3"
    runs = [
        {"source": MACHINES, "events": [ef.state(iso(ts(0)), "running")]},
        {
            "source": other,
            "events": [
                ef.state(iso(ts(1)), "idle", machine="press-2"),
                ef.count(iso(ts(2)), 10, 10, 1.0),
            ],
        },
    ]
    message = {"wall_us": wall(0), "runs": runs, "sources": [MACHINES, other]}
    out = feed.apply(orjson.dumps(message))
    assert out is not None
    assert [(t, r) for t, r, _ in out.dead_letters] == [("machine-state", "too_many_machines")]
    assert orjson.loads(out.dead_letters[0][2])["source"]["partition"] == 3
    assert feed.shard.engine.stats["events.machine-state"] == 3
    assert feed.shard.engine.stats["refused.too_many_machines"] == 1
    # A refused event still shows how far its input has got (the watermark's rule).
    assert feed.shard.clock.sources[other][0] == ts(2)


@pytest.mark.parametrize(
    ("source", "topic", "partition"),
    [("orders:12", "orders", 12), ("site:a:b:3", "site:a:b", 3), ("?", "?", None)],
)
def test_a_refusal_letter_splits_its_source_into_topic_and_partition(
    source: str, topic: str, partition: int | None
) -> None:
    refused = {"reason": "too_many_open_orders", "error": "order_id: ...", "event": {"a": 1}}
    got_topic, reason, value = refusal_letter(source, refused, "O-1", wall(0))
    assert (got_topic, reason) == (topic, "too_many_open_orders")
    letter = orjson.loads(value)
    assert letter["source"] == {
        "topic": topic,
        "partition": partition,
        "offset": None,
        "key": "O-1",
    }


# ---------------------------------------------------------------- chunks()


@pytest.mark.parametrize("size", [1, 3, 7, 1024])
@pytest.mark.parametrize("length", [1, 2, 3, 6, 7, 8, 100])
def test_chunks_split_at_most_size_and_rejoin_exactly(length: int, size: int) -> None:
    data = "".join(itertools.islice(itertools.cycle("abcé€𝄞\n"), length))
    parts = chunks(data, size)
    assert "".join(parts) == data
    assert all(1 <= len(p) <= size for p in parts)
    assert len(parts) == -(-length // size)  # ceil: only the last one is short


def test_a_snapshot_fits_in_chunks_of_the_default_size() -> None:
    data = "x" * (2 * 512 * 1024 + 5)
    assert [len(p) for p in chunks(data)] == [512 * 1024, 512 * 1024, 5]


def test_empty_state_is_one_empty_chunk() -> None:
    assert chunks("") == [""]
    assert chunks("", 4) == [""]


def test_a_snapshot_frees_its_cut_state_before_the_collector_is_back(
    plant_day: tuple[list[bytes], Feed], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector is paused while a snapshot is cut (`_cyclic_gc_paused`):
    the containers made meanwhile must be gone when it resumes, else its first
    collection walks them all (40-100 ms a snapshot at 450,000 events)."""
    import gc

    import agents.pipeline as pipeline

    _, feed = plant_day
    pending_at_enable: list[int] = []

    class Watched:
        def __getattr__(self, name: str) -> Any:
            return getattr(gc, name)

        def enable(self) -> None:
            # What the first collection will walk: containers made, not yet freed.
            pending_at_enable.append(len(gc.get_objects(generation=0)))
            gc.enable()

    monkeypatch.setattr(pipeline, "gc", Watched())
    gc.collect()
    made = 0
    for _, section in feed.shard.iter_sections(tokened=True):  # as a snapshot's plan takes them
        data = section if isinstance(section, bytes) else section.value()
        made += len(orjson.loads(data))
    del section
    assert gc.isenabled() and len(pending_at_enable) == 1
    assert made > 1000  # the cut state is that many containers and more
    assert pending_at_enable[0] < made / 10
