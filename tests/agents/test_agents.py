"""The Faust agents of agents.app, driven in-process with Faust's agent test context.

No broker: the app points at an unreachable one and is never started. Each
test builds it inside its own event loop, feeds an agent through
`agent.test_context()`, records what is sent by patching `Topic.send`, pins
the worker's clock, and lets `FakeConsumer` answer what the app would ask
the broker about partitions (assignment, high watermarks, positions).

Faust's `put()` waits only until the agent has *taken* a value (a sink-less
agent cannot report more), so tests then wait on a condition (`settle`).
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import faust
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from faust.topics import Topic
from faust.types import TP

from agents import snapshot_rows
from agents.app import Runtime, build_app
from agents.pipeline import Incoming, SentBefore, Shard, route_batch, tick_message
from agents.progress import InputEnds
from agents.refill import RangeUnavailable
from agents.settings import TopicSettings, load_settings
from streams.records import record_key
from streams.timeutil import US, iso, to_us
from tests import eventfactory as ef
from tests.agents.wire import read_forward

WALL_US = to_us(ef.DAY) + 8 * 3600 * US  # the worker's clock: 08:00 on the events' day
TOPICS = TopicSettings()  # the default topic names
ENGINE_TOPIC, WINDOWS, ALERTS, DEAD = (
    TOPICS.engine,
    TOPICS.windows,
    TOPICS.alerts,
    TOPICS.dead_letter,
)


@dataclass
class FakeConsumer:
    """The consumer's answers about partitions: assignment, high watermarks, positions."""

    partitions: set[TP]
    highwaters: dict[TP, int] = field(default_factory=dict)
    positions: dict[TP, int] = field(default_factory=dict)

    def assignment(self) -> set[TP]:
        return set(self.partitions)

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters.get(tp)

    async def position(self, tp: TP) -> int | None:
        return self.positions.get(tp)


@dataclass(frozen=True)
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None

    @property
    def json(self) -> Any:
        return orjson.loads(self.value)


@dataclass
class Worker:
    """A built, never-started app with its runtime and everything it sent."""

    app: faust.App
    runtime: Runtime
    send: mock.MagicMock
    changelog: list[tuple[str, asyncio.Future[None]]] = field(default_factory=list)
    """Snapshot-table rows sent, with their delivery (resolved at once unless `held`)."""
    held: bool = False

    def agent(self, name: str) -> Any:
        return next(a for n, a in self.app.agents.items() if n.rsplit(".", 1)[-1] == name)

    def sent(self, topic: str) -> list[Sent]:
        out = []
        for call in self.send.call_args_list:
            target, kwargs = call.args[0], call.kwargs
            if target.get_topic_name() == topic:
                out.append(Sent(topic, kwargs.get("key"), kwargs["value"], kwargs.get("partition")))
        return out

    async def tick(self) -> None:
        # app.timer wraps the function twice (timer loop, task); unwrap to run one tick.
        [tick] = [t for t in self.app._app_tasks if inspect.unwrap(t).__name__ == "tick"]
        await inspect.unwrap(tick)()


@pytest.fixture
def send() -> Iterator[mock.MagicMock]:
    """Topic.send recorded (it never reaches a broker), and the worker's clock pinned."""
    with (
        mock.patch.object(Topic, "send", autospec=True) as send,
        mock.patch("agents.app.wall_us", return_value=WALL_US),
        # Test offsets count across partitions: holes are normal here, read back as nothing.
        mock.patch("agents.app.read_range", nothing_to_read),
        # Nor was anything sent before this run (see tests/agents/test_dead_letters.py).
        mock.patch("agents.app.input_sent_before", nothing_sent_before),
        mock.patch("agents.app.engine_lettered", no_refusals_sent_before),
        # The engine's outputs too go through Topic.send, recorded with the rest.
        mock.patch("agents.app.BatchProducer", TopicSends),
    ):
        send.return_value = Delivered()
        yield send


class TopicSends:
    """`agents.batch_producer.BatchProducer`'s stand-in (no broker here): each
    output through `Topic.send`, as `send` records it."""

    def __init__(self, *_: Any) -> None:
        pass

    async def send(
        self, topic: Topic, key: bytes | None, value: bytes, partition: int | None
    ) -> Any:
        return await topic.send(key=key, value=value, partition=partition)

    async def stop(self) -> None:
        pass


async def nothing_to_read(*_: Any, **__: Any) -> AsyncIterator[tuple[int, bytes, bytes]]:
    return
    yield


async def nothing_sent_before(*_: Any, **__: Any) -> SentBefore:
    return SentBefore()


async def no_refusals_sent_before(*_: Any, **__: Any) -> set[tuple[int, int]]:
    return set()


def topic_holding(values: dict[int, bytes], key: bytes, asked: list[Any]) -> Any:
    """A stand-in for `agents.refill.read_range` over a topic partition holding `values`."""

    async def read_range(_b: Any, _k: Any, topic: str, partition: int, start: int, stop: int):  # type: ignore[no-untyped-def]
        asked.append((topic, partition, start, stop))
        for offset in range(start, stop):
            yield offset, key, values[offset]

    return read_range


class Delivered:
    """What awaiting Topic.send gives: an awaitable of the delivery, here at once."""

    def __await__(self) -> Iterator[None]:
        return iter(())


def build_worker(send: mock.MagicMock, consumer: FakeConsumer, **overrides: Any) -> Worker:
    settings = load_settings(None, **overrides)
    app, runtime = build_app(settings, "kafka://127.0.0.1:1", embedded=False)
    # The stream machinery needs Faust's own consumer (unacked counts, acks); only
    # what would ask the broker is answered by the fake.
    for name in ("assignment", "highwater", "position"):
        setattr(app.consumer, name, getattr(consumer, name))
    worker = Worker(app, runtime, send)

    def send_changelog(
        partition: int | None, key: str, value: str | None, *_: Any, **__: Any
    ) -> Any:
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not worker.held:
            delivery.set_result(None)
        worker.changelog.append((key, delivery))
        return delivery

    app.tables["snapshots"].send_changelog = send_changelog  # type: ignore[method-assign]
    return worker


def run(
    send: mock.MagicMock,
    consumer: FakeConsumer,
    scenario: Callable[[Worker], Coroutine[Any, Any, None]],
    **overrides: Any,
) -> Worker:
    """Build a worker inside a fresh event loop, play `scenario` on it, return the worker."""

    async def main() -> Worker:
        worker = build_worker(send, consumer, **overrides)
        try:
            await asyncio.wait_for(scenario(worker), timeout=30)
        finally:
            # Faust's consumer made a loop for its broker thread, never started here.
            worker.app.consumer._thread.thread_loop.close()
        return worker

    return asyncio.run(main())


async def settle(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Wait until `condition()` holds: an agent finishes a value after put() returns."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def put_input(
    agent: Any, topic: str, value: bytes | None, key: bytes | None, partition: int = 0
) -> None:
    """Put a message on one of ingest's input topics.

    ingest reads three topics; `put()` names a message's topic after the
    wrapper's `original_channel`, which for a multi-topic channel is
    "<internal>". Pointing it at the one topic makes the message come from there.
    """
    agent.original_channel = agent.app.topic(topic)
    await agent.put(value, key=key, partition=partition)


def inputs(*names: str) -> set[TP]:
    """TPs from 'topic:partition' names."""
    return {TP(n.split(":")[0], int(n.split(":")[1])) for n in names}


# ---------------------------------------------------------------- ingest


def test_ingest_forwards_a_batch_as_one_message_with_a_run_per_input_partition(
    send: mock.MagicMock,
) -> None:
    reading = ["machine-state:2", "orders:0", "shipments:1"]
    first, second = ef.state(ef.at(7), "running"), ef.state(ef.at(7.1), "down", reason="jam")
    order = ef.order("O-1", ef.at(7), ef.at(30))
    third = ef.state(ef.at(7.2), "running")

    async def scenario(worker: Worker) -> None:
        async with worker.agent("ingest").test_context() as agent:
            await put_input(agent, "machine-state", orjson.dumps(first), b"press-1", partition=2)
            await put_input(agent, "machine-state", orjson.dumps([second]), b"press-1", partition=2)
            await put_input(agent, "orders", orjson.dumps([order]), b"O-1")
            await put_input(agent, "machine-state", orjson.dumps(third), b"press-1", partition=2)
            await settle(lambda: worker.sent(ENGINE_TOPIC), "the forward")

    # A batch is full at four messages; the time limit is far away.
    worker = run(
        send,
        FakeConsumer(inputs(*reading) | {TP(ENGINE_TOPIC, 0)}),
        scenario,
        worker={"ingest_batch": 4, "ingest_within": 60.0},
    )
    [forward] = worker.sent(ENGINE_TOPIC)
    assert (forward.key, forward.partition) == (b"events", 0)
    assert read_forward(forward.value) == {
        "wall_us": WALL_US,
        "runs": [
            {"source": "machine-state:2", "upto": 1, "events": [first, second]},
            {"source": "orders:0", "upto": 2, "events": [order]},
            {"source": "machine-state:2", "upto": 3, "events": [third]},
        ],
        "sources": reading,  # announced once, with the first forward
    }
    assert worker.sent(DEAD) == []
    # Sent now, not attached to one input event for publishing at its commit:
    # the batch's other partitions could commit first.
    assert all(call.kwargs.get("force") is True for call in worker.send.call_args_list)
    rt = worker.runtime
    assert rt.consumed == {"machine-state": 3, "orders": 1}
    assert rt.events_in == {"machine-state": 3, "orders": 1}
    assert rt.ingested == {("machine-state", 2): 3, ("orders", 0): 2}
    assert rt.announced == reading
    assert rt.last_event_wall == {"machine-state": WALL_US / US, "orders": WALL_US / US}
    assert not rt.dead_letters


def test_ingest_reads_back_a_hole_the_consumer_left_and_drops_offsets_forwarded(
    send: mock.MagicMock,
) -> None:
    """Faust's consumer can skip offsets after a rebalance (faust-streaming #606):
    ingest reads them back from the topic, in order, before the message after."""
    events = [ef.state(ef.at(7 + i / 10), "running" if i % 2 else "down") for i in range(5)]
    on_topic = {offset: orjson.dumps(event) for offset, event in enumerate(events)}
    asked: list[Any] = []
    read_range = topic_holding(on_topic, b"press-1", asked)

    async def scenario(worker: Worker) -> None:
        async with worker.agent("ingest").test_context() as agent:
            await put_input(agent, "machine-state", on_topic[0], b"press-1")
            agent.sent_offset = 3  # 1 and 2 never handed over
            await put_input(agent, "machine-state", on_topic[3], b"press-1")
            agent.sent_offset = 2  # handed over again, after 3: already forwarded
            await put_input(agent, "machine-state", on_topic[2], b"press-1")
            agent.sent_offset = 4
            await put_input(agent, "machine-state", on_topic[4], b"press-1")
            await settle(lambda: worker.runtime.next_input.get(("machine-state", 0)) == 5, "4")

    with mock.patch("agents.app.read_range", read_range):
        worker = run(
            send,
            FakeConsumer(inputs("machine-state:0") | {TP(ENGINE_TOPIC, 0)}),
            scenario,
            worker={"ingest_batch": 1, "ingest_within": 60.0},
        )
    assert asked == [("machine-state", 0, 1, 3)]
    forwarded = [
        e
        for f in worker.sent(ENGINE_TOPIC)
        for run in read_forward(f.value).get("runs", [])
        for e in run["events"]
    ]
    assert forwarded == events  # each once, in offset order
    assert worker.runtime.skipped == {("ingest", "refilled"): 2, ("ingest", "again"): 1}


def test_ingest_sends_a_bad_message_to_the_dead_letter_topic(send: mock.MagicMock) -> None:
    order = ef.order("O-1", ef.at(7), ef.at(30))
    values = [b'{"type": "state", "event_id": ', orjson.dumps(order), None]

    async def scenario(worker: Worker) -> None:
        async with worker.agent("ingest").test_context() as agent:
            for value in values:
                await put_input(agent, "machine-state", value, b"press-1")
            await settle(lambda: len(worker.sent(DEAD)) == 3, "three dead letters")

    worker = run(send, FakeConsumer(inputs("machine-state:0", "orders:0")), scenario)
    assert worker.sent(ENGINE_TOPIC) == []
    letters = worker.sent(DEAD)
    assert [s.key for s in letters] == [b"press-1"] * 3
    assert [s.json["reason"] for s in letters] == ["undecodable", "wrong_topic", "tombstone"]
    assert [s.json["source"] for s in letters] == [
        {"topic": "machine-state", "partition": 0, "offset": n, "key": "press-1"} for n in range(3)
    ]
    assert all(s.json["received_us"] == WALL_US for s in letters)
    rt = worker.runtime
    assert rt.dead_letters == {
        ("machine-state", "undecodable"): 1,
        ("machine-state", "wrong_topic"): 1,
        ("machine-state", "tombstone"): 1,
    }
    assert rt.consumed == {"machine-state": 3}
    assert not rt.events_in and not rt.announced  # nothing forwarded, nothing announced yet


def test_ingest_splits_a_mixed_batch_and_counts_the_first_reason(send: mock.MagicMock) -> None:
    good = ef.state(ef.at(7), "running")
    batch = [good, {**good, "event_id": "x", "state": "asleep"}, ef.state(ef.at(9), "down")]

    async def scenario(worker: Worker) -> None:
        async with worker.agent("ingest").test_context() as agent:
            await put_input(agent, "machine-state", orjson.dumps(batch), b"press-1")
            await settle(lambda: worker.sent(DEAD), "the dead letter")  # sent after the forward

    worker = run(send, FakeConsumer(inputs("machine-state:0")), scenario)
    [forward] = worker.sent(ENGINE_TOPIC)
    assert read_forward(forward.value)["runs"] == [
        {"source": "machine-state:0", "upto": 0, "events": [good]}
    ]
    [letter] = worker.sent(DEAD)
    # 09:00 is an hour ahead of the 08:00 clock, beyond the default 15-minute skew.
    assert [e["reason"] for e in letter.json["errors"]] == ["schema", "future_timestamp"]
    assert letter.json["valid_events_forwarded"] == 1
    assert worker.runtime.dead_letters == {("machine-state", "schema"): 1}
    assert worker.runtime.events_in == {"machine-state": 1}


def test_ingest_announces_again_when_its_assignment_changes(send: mock.MagicMock) -> None:
    consumer = FakeConsumer(inputs("machine-state:0"))

    async def scenario(worker: Worker) -> None:
        async with worker.agent("ingest").test_context() as agent:
            for n in range(3):
                if n == 2:
                    consumer.partitions |= inputs("orders:3")
                event = ef.state(ef.at(7 + n / 60), "running")
                await put_input(agent, "machine-state", orjson.dumps(event), b"press-1")
                forwards = n + 1
                await settle(lambda n=forwards: len(worker.sent(ENGINE_TOPIC)) == n, "a forward")

    worker = run(send, consumer, scenario, worker={"ingest_batch": 1})
    assert [s.json.get("sources") for s in worker.sent(ENGINE_TOPIC)] == [
        ["machine-state:0"],
        None,
        ["machine-state:0", "orders:3"],
    ]


def test_every_engine_partition_learns_every_input_before_its_first_event(
    send: mock.MagicMock,
) -> None:
    state, order = ef.state(ef.at(7), "running"), ef.order("O-1", ef.at(7), ef.at(30))

    async def scenario(worker: Worker) -> None:
        async with worker.agent("ingest").test_context() as agent:
            await put_input(agent, "machine-state", orjson.dumps(state), b"press-1")
            await put_input(agent, "orders", orjson.dumps(order), b"O-1")
            await settle(lambda: len(worker.sent(ENGINE_TOPIC)) == 4, "two ticks and two forwards")

    worker = run(
        send,
        FakeConsumer(inputs("machine-state:0", "orders:0")),
        scenario,
        topics={"engine_partitions": 2},
    )
    partitioner = DefaultPartitioner()  # what the producer would pick for these keys
    forwards = [s for s in worker.sent(ENGINE_TOPIC) if s.key != b"tick"]
    assert {s.json["runs"][0]["source"]: s.partition for s in forwards} == {
        "machine-state:0": partitioner(b"plant-1", [0, 1], [0, 1]),
        "orders:0": partitioner(b"orders", [0, 1], [0, 1]),
    }
    first_per_partition: dict[int, Sent] = {}
    for sent in worker.sent(ENGINE_TOPIC):
        first_per_partition.setdefault(sent.partition, sent)
    assert sorted(first_per_partition) == [0, 1]  # "orders" -> 0, "plant-1" -> 1
    for sent in first_per_partition.values():
        # A tick naming every input (not yet caught up), sent before any forward.
        assert sent.key == b"tick"
        assert sent.json["sources"] == {"machine-state:0": False, "orders:0": False}


# ---------------------------------------------------------------- tick timer


def test_a_tick_reports_each_input_partition_caught_up_or_not_to_every_engine_partition(
    send: mock.MagicMock,
) -> None:
    machines, orders, engine = TP("machine-state", 0), TP("orders", 1), TP(ENGINE_TOPIC, 0)
    consumer = FakeConsumer({machines, orders, engine}, highwaters={machines: 5, orders: 3})

    async def scenario(worker: Worker) -> None:
        fresh_ends(worker, {machines: 5, orders: 3}, starts={orders: 0})
        async with worker.agent("ingest").test_context() as agent:
            agent.sent_offset = 4  # the last message of machine-state:0
            event = ef.state(ef.at(7), "idle")
            await put_input(agent, "machine-state", orjson.dumps(event), b"press-1")
            await settle(lambda: worker.sent(ENGINE_TOPIC), "the forward")
        await worker.tick()

    worker = run(send, consumer, scenario, topics={"engine_partitions": 2})
    # The last two: the timer's tick to each engine partition (the first two
    # announced the inputs before the forward).
    ticks = [s for s in worker.sent(ENGINE_TOPIC) if s.key == b"tick"][-2:]
    assert [t.partition for t in ticks] == [0, 1]
    expected = orjson.loads(tick_message(WALL_US, {"machine-state:0": True, "orders:1": False}))
    assert all(t.json == expected for t in ticks)


def fresh_ends(worker: Worker, ends: dict[TP, int], starts: dict[TP, int]) -> None:
    """What the end-offset watcher would have learnt just now."""
    now = time.monotonic()
    for tp, end in ends.items():
        worker.runtime.input_ends.ends[tp.topic, tp.partition] = (end, now)
    for tp, start in starts.items():
        worker.runtime.input_ends.starts[tp.topic, tp.partition] = start


def test_after_a_restart_a_partition_committed_to_its_end_is_caught_up(
    send: mock.MagicMock,
) -> None:
    done, pending = TP("shipments", 0), TP("shipments", 1)
    # Nothing fetched yet: no cached high watermark, and the position is no guide.
    consumer = FakeConsumer({done, pending}, positions={done: 42, pending: 9})

    async def scenario(worker: Worker) -> None:
        fresh_ends(worker, {done: 42, pending: 9}, starts={done: 42, pending: 7})
        await worker.tick()  # a fresh process: nothing read since the restart

    worker = run(send, consumer, scenario)
    [tick] = worker.sent(ENGINE_TOPIC)
    assert tick.json["sources"] == {"shipments:0": True, "shipments:1": False}


@pytest.mark.parametrize(
    ("why", "end", "age_s", "highwater", "expected"),
    [
        ("read to a fresh end", 10, 0.0, 10, True),
        ("the fetch saw more than the broker said", 10, 0.0, 12, False),
        ("the end offset is stale", 10, 60.0, 10, False),
        ("no end offset asked yet", None, 0.0, 10, False),
        ("messages written since", 11, 0.0, 10, False),
    ],
)
def test_caught_up_needs_a_fresh_end_offset(
    why: str, end: int | None, age_s: float, highwater: int, expected: bool
) -> None:
    ends = InputEnds()
    if end is not None:
        ends.ends["orders", 0] = (end, 100.0 - age_s)
    got = ends.caught_up(("orders", 0), 9, highwater, now=100.0, max_age=5.0)
    assert got is expected, why


def test_before_its_first_message_a_partition_is_judged_from_where_reading_resumed() -> None:
    ends = InputEnds(ends={("orders", 0): (5, 100.0)})
    assert not ends.caught_up(("orders", 0), None, None, now=100.0, max_age=5.0)  # start unknown
    ends.starts["orders", 0] = 3
    assert not ends.caught_up(("orders", 0), None, None, now=100.0, max_age=5.0)
    ends.starts["orders", 0] = 5
    assert ends.caught_up(("orders", 0), None, None, now=100.0, max_age=5.0)


# ---------------------------------------------------------------- run_engine


def forward(
    event: dict[str, Any], partition: int, offset: int, wall_us: int, announce: list[str] | None
) -> bytes:
    """The engine-topic message ingest makes of a machine-state message holding `event`."""
    key, value = event["machine"].encode(), orjson.dumps(event)
    message = Incoming("machine-state", partition, offset, key, value)
    batch = route_batch(
        [message], sources={"machine-state": "machine-state"}, wall_us=wall_us, announce=announce
    )
    [(_, forwarded)] = batch.forwards
    return forwarded


def plant_hour() -> list[bytes]:
    """Engine-topic messages: a machine's hour, then a tick an hour later (all quiet)."""
    events = [
        ef.state(ef.at(6), "running"),
        ef.count(ef.at(6.5), 1800, 1750, 1.0),
        ef.state(ef.at(6.75), "down", reason="jam"),
        ef.state(ef.at(6.9), "running"),
    ]
    messages = [
        forward(
            event,
            partition=0,
            offset=n,
            wall_us=WALL_US - 3600 * US + n * US,
            announce=["machine-state:0"] if n == 0 else None,
        )
        for n, event in enumerate(events)
    ]
    tick = tick_message(WALL_US, {"machine-state:0": True})
    return [*messages, tick]


def progress(worker: Worker) -> tuple[int, int]:
    """Engine partition 0: (next offset, messages not yet acknowledged)."""
    shard = worker.runtime.shards.get(0)
    return (shard.next_offset if shard else -1), len(worker.runtime.unacked.get(0, []))


def expected_output(messages: list[bytes], settings: Any) -> tuple[list[Any], list[Any]]:
    shard = Shard(settings.engine, round(settings.worker.idle_advance_after * US))
    records, alerts = [], []
    for offset, value in enumerate(messages):
        out = shard.apply(offset, value)
        assert out is not None
        records += out.records
        alerts += out.alerts
    return records, alerts


def test_run_engine_publishes_the_records_and_alerts_of_its_shard(send: mock.MagicMock) -> None:
    messages = plant_hour()

    async def scenario(worker: Worker) -> None:
        async with worker.agent("run_engine").test_context() as agent:
            for value in messages:
                await agent.put(value, key=b"plant-1", partition=0)
            await settle(lambda: progress(worker) == (len(messages), len(messages)), "the tick")

    worker = run(send, FakeConsumer(set()), scenario, worker={"snapshot_interval": 3600.0})
    records, alerts = expected_output(messages, worker.runtime.settings)
    assert any(
        r["window"] == "1h" and r["start"] == iso(to_us(ef.DAY) + 6 * 3600 * US) for r in records
    )
    assert alerts  # gaps over the 10-minute heartbeat raise no_data alerts
    windows = worker.sent(WINDOWS)
    assert [s.json for s in windows] == records
    assert [s.key for s in windows] == [record_key(r).encode() for r in records]
    assert [s.json for s in worker.sent(ALERTS)] == alerts
    assert [s.key for s in worker.sent(ALERTS)] == [a["alert_id"].encode() for a in alerts]
    rt = worker.runtime
    assert rt.published == {"records": len(records), "alerts": len(alerts)}
    assert rt.shards[0].next_offset == len(messages)
    # No snapshot yet (one every hour here), so nothing is acknowledged.
    assert len(rt.unacked[0]) == len(messages)
    assert worker.app.tables["snapshots"].get("0/manifest") is None


def test_run_engine_snapshots_acks_and_restores_after_a_revocation(send: mock.MagicMock) -> None:
    messages = plant_hour()
    manifests = []

    async def scenario(worker: Worker) -> None:
        table = worker.app.tables["snapshots"]
        async with worker.agent("run_engine").test_context() as agent:
            for n, value in enumerate(messages[:3], start=1):
                await agent.put(value, key=b"plant-1", partition=0)
                done = (n, 0)  # next offset n, nothing left unacknowledged
                await settle(lambda done=done: progress(worker) == done, f"snapshot {n}")
                manifests.append(table["0/manifest"])
            await worker.app.on_partitions_revoked.send(revoked={TP(ENGINE_TOPIC, 0)})
            assert 0 not in worker.runtime.shards
            # The next owner is handed offsets from 1 on (as if the commit lagged the
            # snapshot): the restored shard skips what its snapshot already covers.
            agent.sent_offset = 1
            for value in messages[1:]:
                await agent.put(value, key=b"plant-1", partition=0)
            done = (len(messages), 0)  # the last message applied and snapshotted
            await settle(lambda: progress(worker) == done, "the last message")

    # Every message is snapshotted, however long the last snapshot took.
    with mock.patch("agents.pipeline.SNAPSHOT_SPACING", 0):
        worker = run(send, FakeConsumer(set()), scenario, worker={"snapshot_interval": 1e-9})
    # A manifest of sections (agents.snapshot_rows) each time, naming another index.
    assert [orjson.loads(m)["version"] for m in manifests] == [2, 2, 2]
    assert len(set(manifests)) == 3
    # Every output's delivery was checked by the last snapshot.
    assert worker.runtime.outboxes[0].pending == []
    # Each snapshot sends its changed sections and then the manifest, in that
    # order; rows the manifest before referenced, and this one does not, are
    # deleted (tombstones) after it, and only those.
    keys = [key for key, _ in worker.changelog]
    first, second = [i for i, key in enumerate(keys) if key == "0/manifest"][:2]
    assert first > 0 and all(key.startswith("0/r/") for key in keys[:first])
    assert all(key.startswith("0/r/") for key in keys[first + 1 : second])
    # The table keeps exactly the rows the last manifest references.
    table = worker.app.tables["snapshots"]
    referenced = snapshot_rows.read_sections(table, 0, table["0/manifest"])[1]
    assert snapshot_rows.rows_of(table, 0) == referenced
    shard = worker.runtime.shards[0]
    assert shard.stats["skipped_replayed"] == 2  # offsets 1 and 2, restored from the table
    records, alerts = expected_output(messages, worker.runtime.settings)
    assert [s.json for s in worker.sent(WINDOWS)] == records
    assert [s.json for s in worker.sent(ALERTS)] == alerts


def test_run_engine_acknowledges_only_once_the_snapshot_is_delivered(
    send: mock.MagicMock,
) -> None:
    """A table write only queues its changelog record in Faust's producer buffer,
    and `producer.flush()` may return with it still queued: acknowledging then
    lets a crash restore an older snapshot past the committed offset."""
    messages = plant_hour()[:2]

    async def scenario(worker: Worker) -> None:
        worker.held = True
        async with worker.agent("run_engine").test_context() as agent:
            await agent.put(messages[0], key=b"plant-1", partition=0)
            await settle(
                lambda: worker.changelog and worker.changelog[-1][0] == "0/manifest",
                "the snapshot's rows and its manifest",
            )
            # Snapshot written, not delivered: the message stays unacknowledged.
            await asyncio.sleep(0)
            assert progress(worker) == (1, 1)
            for _, delivery in worker.changelog:
                delivery.set_result(None)
            await settle(lambda: progress(worker) == (1, 0), "the acknowledgement")

    with mock.patch("agents.pipeline.SNAPSHOT_SPACING", 0):
        run(send, FakeConsumer(set()), scenario, worker={"snapshot_interval": 1e-9})


def test_run_engine_dead_letters_and_counts_an_event_the_engine_refuses(
    send: mock.MagicMock,
) -> None:
    """Over engine.max_machines a new machine's event is refused: it goes to the
    dead-letter topic naming its input topic, and counts in runtime.dead_letters."""
    held, refused = ef.state(ef.at(7), "running"), ef.state(ef.at(7.1), "idle", machine="press-9")
    messages = [
        forward(
            event,
            partition=1,
            offset=n,
            wall_us=WALL_US,
            announce=["machine-state:1"] if n == 0 else None,
        )
        for n, event in enumerate((held, refused))
    ]

    async def scenario(worker: Worker) -> None:
        async with worker.agent("run_engine").test_context() as agent:
            for value in messages:
                await agent.put(value, key=b"plant-1", partition=0)
            await settle(lambda: worker.sent(DEAD), "the dead letter")

    worker = run(
        send,
        FakeConsumer(set()),
        scenario,
        engine={"max_machines": 1},
        worker={"snapshot_interval": 3600.0},
    )
    [letter] = worker.sent(DEAD)
    assert letter.key is None
    assert letter.json["reason"] == "too_many_machines"
    assert letter.json["source"] == {
        "topic": "machine-state",
        "partition": 1,
        "offset": None,
        "key": "press-9",
        "engine": {"topic": ENGINE_TOPIC, "partition": 0, "offset": 1, "index": 0},
    }
    assert letter.json["received_us"] == WALL_US
    assert orjson.loads(base64.b64decode(letter.json["value_b64"]))["machine"] == "press-9"
    assert worker.runtime.dead_letters == {("machine-state", "too_many_machines"): 1}
    assert list(worker.runtime.shards[0].engine.machines) == ["press-1"]


def test_run_engine_sends_a_record_again_when_its_delivery_failed(send: mock.MagicMock) -> None:
    messages = plant_hour()
    failed: list[bytes] = []

    def sending(topic: Topic, *_: Any, key: bytes | None = None, **__: Any) -> Any:
        if topic.get_topic_name() == WINDOWS and not failed and key is not None:
            failed.append(key)
            delivery = asyncio.get_running_loop().create_future()
            delivery.set_exception(TimeoutError("request timed out"))
            return delivery
        return Delivered()

    send.side_effect = sending

    async def scenario(worker: Worker) -> None:
        async with worker.agent("run_engine").test_context() as agent:
            for value in messages:
                await agent.put(value, key=b"plant-1", partition=0)
            await settle(lambda: progress(worker) == (len(messages), 0), "every message acked")

    with (
        mock.patch("agents.pipeline.SNAPSHOT_SPACING", 0),
        mock.patch("agents.outbox.BACKOFF_S", 0),
    ):
        worker = run(send, FakeConsumer(set()), scenario, worker={"snapshot_interval": 1e-9})
    records, _ = expected_output(messages, worker.runtime.settings)
    keys = [s.key for s in worker.sent(WINDOWS)]
    assert failed and keys.count(failed[0]) == 2  # sent, failed, sent again
    assert sorted(set(keys)) == sorted(record_key(r).encode() for r in records)
    assert worker.runtime.published["resent"] == 1


def test_run_engine_refills_what_a_stale_snapshot_misses(send: mock.MagicMock) -> None:
    """Reading resumes at the committed offset; a snapshot older than that is
    topped up from the engine topic itself, so nothing between is lost."""
    messages = plant_hour()[:4]
    asked: list[Any] = []
    read_range = topic_holding(dict(enumerate(messages)), b"events", asked)

    async def scenario(worker: Worker) -> None:
        async with worker.agent("run_engine").test_context() as agent:
            await agent.put(messages[0], key=b"plant-1", partition=0)
            agent.sent_offset = 3  # offsets 1 and 2 are not handed over
            await agent.put(messages[3], key=b"plant-1", partition=0)
            await settle(lambda: progress(worker)[0] == 4, "offset 3")

    with mock.patch("agents.app.read_range", read_range):
        worker = run(send, FakeConsumer(set()), scenario)
    assert asked == [(ENGINE_TOPIC, 0, 1, 3)]
    assert worker.runtime.skipped == {("engine", "refilled"): 2}
    records, alerts = expected_output(messages, worker.runtime.settings)
    assert [s.json for s in worker.sent(WINDOWS)] == records
    assert [s.json for s in worker.sent(ALERTS)] == alerts


def test_run_engine_counts_what_it_cannot_refill(send: mock.MagicMock) -> None:
    messages = plant_hour()[:3]

    async def read_range(*_: Any):  # type: ignore[no-untyped-def]
        raise RangeUnavailable("engine:0 starts at offset 2 now, not 1")
        yield  # an async generator

    async def scenario(worker: Worker) -> None:
        async with worker.agent("run_engine").test_context() as agent:
            await agent.put(messages[0], key=b"plant-1", partition=0)
            agent.sent_offset = 2
            await agent.put(messages[2], key=b"plant-1", partition=0)
            await settle(lambda: progress(worker)[0] == 3, "offset 2")

    with mock.patch("agents.app.read_range", read_range):
        worker = run(send, FakeConsumer(set()), scenario)
    assert worker.runtime.skipped == {("engine", "lost"): 1}


# ---------------------------------------------------------------- consumer


@pytest.mark.parametrize(("setting", "expected_ms"), [(None, 100), (0.25, 250)])
def test_the_consumer_waits_at_most_fetch_max_wait_for_a_fetch(
    send: mock.MagicMock, setting: float | None, expected_ms: int
) -> None:
    waits: list[int] = []

    async def scenario(worker: Worker) -> None:
        # The aiokafka consumer Faust makes when the worker starts, made and never started.
        consumer = worker.app.consumer._thread._create_worker_consumer(worker.app.transport)
        waits.append(consumer._fetch_max_wait_ms)
        await consumer.stop()

    kafka = {} if setting is None else {"kafka": {"fetch_max_wait": setting}}
    run(send, FakeConsumer(set()), scenario, **kafka)
    assert waits == [expected_ms]  # Faust's own would be 1500


# ---------------------------------------------------------------- health


async def healthz(worker: Worker) -> tuple[int, Any]:
    response = await worker.app.web.views["/healthz"].get(mock.Mock())
    return response.status, orjson.loads(response.body)


def test_a_worker_without_engine_partitions_is_healthy_on_delivered_ticks(
    send: mock.MagicMock,
) -> None:
    """No tick of its own comes back to it; the broker's acknowledgement of its
    ticks and ingest keeping up are what it is judged on."""
    orders = TP("orders", 0)
    answers: list[tuple[int, Any]] = []

    async def scenario(worker: Worker) -> None:
        answers.append(await healthz(worker))  # before the group assigned anything
        await worker.app.on_partitions_assigned.send({orders})
        fresh_ends(worker, {orders: 0}, starts={orders: 0})  # read to its end
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        send.return_value = delivery
        await worker.tick()
        answers.append(await healthz(worker))  # sent, not yet acknowledged
        delivery.set_result(None)
        await asyncio.sleep(0)  # the done-callback
        answers.append(await healthz(worker))

    run(send, FakeConsumer({orders}), scenario)
    reasons = [body["reason"] for _, body in answers]
    assert [status for status, _ in answers] == [503, 503, 200], reasons
    assert "consumer group" in reasons[0] and "delivered" in reasons[1]
    assert answers[2][1] == {
        "status": "ok",
        "reason": None,
        "basis": "ticks delivered, ingest keeping up",
        "partitions": [],
        "inputs": ["orders:0"],
    }


def test_a_tick_the_broker_refused_does_not_count_as_delivered(send: mock.MagicMock) -> None:
    async def scenario(worker: Worker) -> None:
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        send.return_value = delivery
        await worker.tick()
        delivery.set_exception(ConnectionError("broker gone"))
        await asyncio.sleep(0)

    worker = run(send, FakeConsumer(set()), scenario)
    assert worker.runtime.last_tick_delivered is None


def test_a_worker_holding_an_engine_partition_needs_its_ticks_back(send: mock.MagicMock) -> None:
    engine = TP(ENGINE_TOPIC, 0)
    answers: list[tuple[int, Any]] = []

    async def scenario(worker: Worker) -> None:
        await worker.app.on_partitions_assigned.send({engine})
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivery.set_result(None)
        send.return_value = delivery
        await worker.tick()
        await asyncio.sleep(0)
        answers.append(await healthz(worker))  # delivered is not enough here
        async with worker.agent("run_engine").test_context() as agent:
            await agent.put(tick_message(WALL_US, {}), key=b"tick", partition=0)
            await settle(lambda: worker.runtime.last_tick_seen is not None, "the tick applied")
        answers.append(await healthz(worker))

    run(send, FakeConsumer({engine}), scenario)
    assert [status for status, _ in answers] == [503, 200]
    assert answers[0][1]["basis"] == answers[1][1]["basis"] == "engine round trip"
    assert answers[1][1]["partitions"] == [0]
