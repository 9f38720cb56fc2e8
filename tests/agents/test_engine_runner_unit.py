"""`agents.engine_runner.EngineRunner` with fakes for its collaborators: no Faust,
no broker. The snapshot table is a dict; `Wire` (tests.agents.fakes) records
row writes, sends, deliveries, acknowledgements and ranges marked, in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaError

from agents.engine_runner import EngineRunner
from agents.pipeline import Incoming, route_batch, tick_message
from agents.read_back import ReadBack
from agents.runtime import Runtime
from agents.settings import TopicSettings, load_settings
from streams.timeutil import US, to_us
from tests import eventfactory as ef
from tests.agents.fakes import Event, Message, Wire, settle, topic_holding

WALL_US = to_us(ef.DAY) + 8 * 3600 * US
TOPICS = TopicSettings()
ENGINE, WINDOWS, ALERTS, DEAD = TOPICS.engine, TOPICS.windows, TOPICS.alerts, TOPICS.dead_letter


def forward(event: dict[str, Any], offset: int) -> bytes:
    """The engine-topic message ingest makes of a machine-state message holding `event`."""
    incoming = Incoming("machine-state", 0, offset, event["machine"].encode(), orjson.dumps(event))
    batch = route_batch(
        [incoming],
        sources={"machine-state": "machine-state"},
        wall_us=WALL_US,
        announce=["machine-state:0"] if offset == 0 else None,
    )
    [(_, value)] = batch.forwards
    return value


MESSAGES = [
    forward(ef.state(ef.at(7 + n / 10), "running" if n % 2 else "down"), n) for n in range(4)
]


def event(offset: int, value: bytes | None = None, key: bytes = b"events") -> Event:
    return Event(Message(ENGINE, 0, offset, key, value or MESSAGES[offset], 1.0))


def make(
    wire: Wire,
    *,
    table: dict[str, str] | None = None,
    snapshot_interval: float = 3600.0,
    read: Any = None,
    lettered: Any = None,
) -> EngineRunner:
    settings = load_settings(None, worker={"snapshot_interval": snapshot_interval})
    runtime = Runtime(settings, embedded=False)
    rows = {} if table is None else table

    async def nothing_sent_before(**_: Any) -> set[tuple[int, int]]:
        return set()

    return EngineRunner(
        settings,
        runtime,
        table=rows,
        set_row=lambda partition, key, value: wire.set_row(rows, partition, key, value),
        send=wire.send,
        windows_topic=WINDOWS,
        alerts_topic=ALERTS,
        dead_topic=DEAD,
        read_back=ReadBack(read or topic_holding(dict(enumerate(MESSAGES))), runtime.skipped),
        lettered=lettered or nothing_sent_before,
        mark_read_back=wire.mark_read_back,
    )


@pytest.fixture
def snapshot_every_message(monkeypatch: pytest.MonkeyPatch) -> None:
    # A snapshot waits SNAPSHOT_SPACING times as long as the last took: not here.
    monkeypatch.setattr("agents.pipeline.SNAPSHOT_SPACING", 0)


@pytest.mark.usefixtures("snapshot_every_message")
def test_it_acknowledges_only_once_the_snapshot_is_delivered() -> None:
    wire = Wire(held=True)
    runner = make(wire, snapshot_interval=1e-9)

    async def main() -> None:
        await runner.step(event(0), wire.ack)  # the delivery goes on beside
        assert any(kind == "row" for kind in wire.kinds())
        await asyncio.sleep(0)
        assert "acked" not in wire.kinds()  # the snapshot is not delivered yet
        wire.release()
        await runner.settled(0)

    asyncio.run(main())
    kinds = wire.kinds()
    assert kinds.index("acked") > max(i for i, kind in enumerate(kinds) if kind == "delivered")
    assert runner.runtime.unacked == {0: []}


def test_the_engine_goes_on_while_a_snapshot_is_delivered() -> None:
    """A snapshot's delivery does not hold the next messages back; it acknowledges
    only the offsets it covers, and the next snapshot waits for it.

        applied      0   1   2
        snapshot     S1      S2 (waits for S1's delivery before writing)
        acked        0 after S1 delivered; 1, 2 after S2
    """
    wire = Wire(held=True)
    runner = make(wire)
    rt = runner.runtime

    async def main() -> None:
        await runner.step(event(0), wire.ack)
        await runner.snapshot(0, rt.shards[0], wire.ack)
        await runner.step(event(1), wire.ack)  # applied, the snapshot still held
        await runner.step(event(2), wire.ack)
        assert rt.shards[0].next_offset == 3
        assert "acked" not in wire.kinds()
        assert rt.unacked[0] == [event(0), event(1), event(2)]  # none acknowledged yet
        rows = len([kind for kind in wire.kinds() if kind == "row"])
        second = asyncio.create_task(runner.snapshot(0, rt.shards[0], wire.ack))
        for _ in range(50):  # turns enough for a snapshot not held back to be written
            await asyncio.sleep(0)
        assert not second.done()  # the first is not delivered: nothing written yet
        assert len([kind for kind in wire.kinds() if kind == "row"]) == rows
        wire.release()
        await settle(lambda: second.done(), "the second snapshot written")
        assert [e for e in wire.journal if e[0] == "acked"] == [("acked", 0)]
        assert rt.unacked[0] == [event(1), event(2)]
        wire.release()
        await runner.settled(0)

    asyncio.run(main())
    assert [e[1] for e in wire.journal if e[0] == "acked"] == [0, 1, 2]
    assert rt.unacked == {0: []}


def test_a_failed_snapshot_delivery_is_raised_by_the_next_step() -> None:
    wire = Wire(held=True)
    runner = make(wire)

    async def main() -> None:
        await runner.step(event(0), wire.ack)
        await runner.snapshot(0, runner.runtime.shards[0], wire.ack)
        for future, _ in wire.waiting:
            future.set_exception(KafkaError("no leader"))
        with pytest.raises(KafkaError, match="no leader"):
            await runner.snapshot(0, runner.runtime.shards[0], wire.ack)

    asyncio.run(main())
    assert "acked" not in wire.kinds()


def test_forget_waits_for_a_snapshot_in_flight_then_gives_it_up() -> None:
    wire = Wire(held=True)
    runner = make(wire)

    async def main() -> None:
        await runner.step(event(0), wire.ack)
        await runner.snapshot(0, runner.runtime.shards[0], wire.ack)
        await runner.forget(0, settle_s=0.05)  # never delivered: not acknowledged
        assert runner.in_flight == {}

    asyncio.run(main())
    assert "acked" not in wire.kinds()


def test_without_a_snapshot_nothing_is_acknowledged() -> None:
    wire = Wire()
    runner = make(wire)
    asyncio.run(runner.step(event(0), wire.ack))
    assert "acked" not in wire.kinds() and "row" not in wire.kinds()
    assert runner.runtime.unacked == {0: [event(0)]}


def test_a_refilled_range_is_marked_committable_once_a_snapshot_covers_it() -> None:
    """Offsets 1 and 2 not handed over: read back, applied, and marked after the
    snapshot that covers them is delivered, with the offsets acknowledged.

        handed over   0 . . 3
        read back       1 2
        marked          [1, 3)  after the snapshot
    """
    wire = Wire()
    read = topic_holding(dict(enumerate(MESSAGES)), b"events")
    runner = make(wire, read=read)
    rt = runner.runtime

    async def main() -> None:
        await runner.step(event(0), wire.ack)
        await runner.step(event(3), wire.ack)
        assert "marked" not in wire.kinds()  # no snapshot yet
        assert rt.read_back == {0: [(1, 3)]}
        wire.held = True
        snapshot = asyncio.create_task(runner.snapshot_and_ack(0, rt.shards[0], wire.ack))
        await settle(lambda: wire.waiting, "the snapshot rows")
        assert "marked" not in wire.kinds()
        wire.release()
        await snapshot

    asyncio.run(main())
    assert read.asked == [(ENGINE, 0, 1, 3)]
    assert rt.skipped == {("engine", "refilled"): 2}
    assert rt.shards[0].next_offset == 4
    assert wire.journal[-3:] == [("acked", 0), ("acked", 3), ("marked", ENGINE, 0, 1, 3)]
    assert rt.read_back == {}


def test_a_shard_saved_to_the_table_is_loaded_from_it() -> None:
    table: dict[str, str] = {}
    first = make(Wire(), table=table)

    async def main() -> None:
        for offset in range(3):
            await first.step(event(offset), Wire().ack)
        await asyncio.gather(*first.save_shard(0, first.runtime.shards[0]))

    asyncio.run(main())
    assert orjson.loads(table["0/manifest"])["version"] == 2
    restored = make(Wire(), table=table).load_shard(0)
    assert restored.next_offset == 3
    assert restored.to_bytes() == first.runtime.shards[0].to_bytes()


def test_refusals_that_cannot_be_looked_back_at_count_as_none_sent() -> None:
    async def unreachable(**_: Any) -> set[tuple[int, int]]:
        raise KafkaError("no broker")

    wire = Wire()
    runner = make(wire, lettered=unreachable)
    tick = tick_message(WALL_US, {"machine-state:0": True})
    asyncio.run(runner.step(event(0, tick, key=b"tick"), wire.ack))
    assert runner.runtime.engine_letters == {0: set()}
    assert runner.runtime.last_tick_seen is not None


def test_forget_on_revoke_drops_the_partitions_state() -> None:
    wire = Wire()
    runner = make(wire)
    rt = runner.runtime

    async def main() -> None:
        await runner.step(event(0), wire.ack)
        rt.read_back[0] = [(1, 3)]
        assert 0 in rt.outboxes and 0 in rt.engine_letters
        await runner.forget(0, settle_s=1.0)

    asyncio.run(main())
    assert (rt.shards, rt.unacked, rt.read_back, rt.engine_letters, rt.outboxes) == (
        {},
        {},
        {},
        {},
        {},
    )


def _turns_during_snapshot(runner: EngineRunner, wire: Wire) -> tuple[int, int]:
    """(loop turns another task got while a snapshot was planned, rows written)."""
    rt = runner.runtime

    async def main() -> tuple[int, int]:
        await runner.step(event(0), wire.ack)
        turns = 0
        planning = True

        async def other_agent() -> None:
            nonlocal turns
            while planning:
                turns += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(other_agent())
        await asyncio.sleep(0)
        turns = 0
        await runner.snapshot(0, rt.shards[0], wire.ack)
        planning = False
        await other
        await runner.settled(0)
        return turns, len([kind for kind in wire.kinds() if kind == "row"])

    return asyncio.run(main())


def test_a_snapshot_plan_returns_to_the_event_loop_between_sections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a snapshot is planned, the ingest agent and the pages go on: the
    plan gives the loop a turn whenever it has held it `PLAN_SLICE_S`."""
    monkeypatch.setattr("agents.engine_runner.PLAN_SLICE_S", 0.0)
    wire = Wire()
    turns, _ = _turns_during_snapshot(make(wire), wire)
    monkeypatch.setattr("agents.engine_runner.PLAN_SLICE_S", 3600.0)
    wire = Wire()
    held_turns, held_rows = _turns_during_snapshot(make(wire), wire)
    assert held_turns <= 1  # one plan, the loop held throughout
    assert turns > 10  # a turn after every section
    assert held_rows > 0


def test_a_partition_revoked_while_its_snapshot_is_planned_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("agents.engine_runner.PLAN_SLICE_S", 0.0)
    wire = Wire()
    runner = make(wire)
    rt = runner.runtime

    async def main() -> None:
        await runner.step(event(0), wire.ack)
        snapshot = asyncio.create_task(runner.snapshot(0, rt.shards[0], wire.ack))
        await asyncio.sleep(0)  # the plan has begun
        assert not snapshot.done()
        await runner.forget(0, settle_s=0.0)
        await snapshot
        assert runner.in_flight == {}

    asyncio.run(main())
    assert "row" not in wire.kinds() and "acked" not in wire.kinds()


async def _a_snapshot_held(runner: EngineRunner, wire: Wire, offset: int = 0) -> int:
    """Apply a message, snapshot it (its delivery held if `wire.held`); the rows written."""
    await runner.step(event(offset), wire.ack)
    await runner.snapshot(0, runner.runtime.shards[0], wire.ack)
    return wire.kinds().count("row")


def test_no_snapshot_is_written_once_its_partition_is_being_forgotten() -> None:
    """While `forget` waits for the last snapshot's delivery, a step of the
    revoked partition can still come due for a snapshot: it writes nothing
    and leaves nothing in flight (the next owner may be writing already)."""
    wire = Wire(held=True)
    runner = make(wire)
    rt = runner.runtime

    async def main() -> None:
        rows = await _a_snapshot_held(runner, wire)
        forgetting = asyncio.create_task(runner.forget(0, settle_s=3600.0))
        await asyncio.sleep(0)  # forget waits for the held delivery
        assert not forgetting.done()
        await runner.snapshot(0, rt.shards[0], wire.ack)  # the step's, meanwhile
        assert wire.kinds().count("row") == rows
        wire.release()
        await forgetting
        assert runner.in_flight == {}

    asyncio.run(main())


def test_forget_waits_for_a_snapshot_that_a_step_is_also_waiting_for() -> None:
    """A step's next snapshot waits for the last one's delivery; a revocation
    meanwhile waits for (or gives up) that delivery too, and the step's
    snapshot then writes nothing and does not fail."""
    wire = Wire(held=True)
    runner = make(wire)
    rt = runner.runtime

    async def main() -> None:
        rows = await _a_snapshot_held(runner, wire)
        step = asyncio.create_task(runner.snapshot(0, rt.shards[0], wire.ack))
        await asyncio.sleep(0)  # the step waits for the held delivery
        await runner.forget(0, settle_s=0.05)  # not delivered in time: given up
        assert "acked" not in wire.kinds()
        # No error: the snapshot it waited for was given up, not failed.
        await asyncio.wait_for(step, timeout=60)
        assert wire.kinds().count("row") == rows
        assert runner.in_flight == {}

    asyncio.run(main())
    assert "acked" not in wire.kinds()


def test_a_step_suspended_while_its_partition_is_forgotten_leaves_nothing_behind() -> None:
    """A revocation can come while a step waits (here: for the refusals an
    earlier owner sent). The step then applies nothing further: no output,
    no acknowledgement, no state of the revoked partition made again."""
    wire = Wire()
    released = asyncio.Event()

    async def slow_lettered(**_: Any) -> set[tuple[int, int]]:
        await released.wait()
        return set()

    runner = make(wire, lettered=slow_lettered, snapshot_interval=1e-9)
    rt = runner.runtime

    async def main() -> None:
        step = asyncio.create_task(runner.step(event(0), wire.ack))
        await settle(lambda: 0 in rt.shards, "the step began")
        await runner.forget(0, settle_s=0.05)
        released.set()
        await asyncio.wait_for(step, timeout=60)  # no error

    asyncio.run(main())
    assert wire.journal == []
    assert (rt.shards, rt.unacked, rt.engine_letters, rt.outboxes, rt.read_back) == (
        {},
        {},
        {},
        {},
        {},
    )


def test_a_stopping_worker_waits_for_its_snapshot_in_flight_and_writes_no_more() -> None:
    """Faust stops its producer right after `on_before_shutdown`, and a row
    write still in its buffer then crashes the worker on its way out: `stop`
    waits for the snapshot in flight, and from then on nothing is written."""
    wire = Wire(held=True)
    runner = make(wire)
    rt = runner.runtime

    async def main() -> None:
        rows = await _a_snapshot_held(runner, wire)
        stopping = asyncio.create_task(runner.stop(settle_s=3600.0))
        await asyncio.sleep(0)
        assert not stopping.done()  # the rows are not delivered yet
        await runner.step(event(1), wire.ack)
        step_snapshot = asyncio.create_task(runner.snapshot(0, rt.shards[0], wire.ack))
        wire.release()
        await stopping
        await step_snapshot
        assert wire.kinds().count("row") == rows
        assert runner.in_flight == {}

    asyncio.run(main())
    assert [e[1] for e in wire.journal if e[0] == "acked"] == [0]  # delivered in time


def test_a_snapshot_planned_when_the_worker_stops_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("agents.engine_runner.PLAN_SLICE_S", 0.0)
    wire = Wire()
    runner = make(wire)

    async def main() -> None:
        await runner.step(event(0), wire.ack)
        snapshot = asyncio.create_task(runner.snapshot(0, runner.runtime.shards[0], wire.ack))
        await asyncio.sleep(0)  # the plan has begun
        assert not snapshot.done()
        await runner.stop(settle_s=0.0)
        await snapshot
        assert runner.in_flight == {}

    asyncio.run(main())
    assert "row" not in wire.kinds() and "acked" not in wire.kinds()


def test_a_stopping_worker_gives_up_a_snapshot_not_delivered_in_time() -> None:
    wire = Wire(held=True)
    runner = make(wire)

    async def main() -> None:
        await _a_snapshot_held(runner, wire)
        [task] = runner.in_flight.values()
        await runner.stop(settle_s=0.05)
        assert task.cancelled()
        # The rows' deliveries are left be: Faust's buffer would still send them.
        assert [future.cancelled() for future, _ in wire.waiting] == [False] * len(wire.waiting)

    asyncio.run(main())
    assert "acked" not in wire.kinds()


def _deleting(runner: EngineRunner) -> list[asyncio.Future[None]]:
    """Row deletes of `runner` that stay under way until their futures are set."""
    deletes: list[asyncio.Future[None]] = []

    def delete_row(partition: int, key: str) -> asyncio.Future[None]:
        deletes.append(asyncio.get_running_loop().create_future())
        return deletes[-1]

    runner.delete_row = delete_row
    return deletes


def test_a_stopping_worker_waits_for_the_row_deletes_under_way() -> None:
    wire = Wire()
    runner = make(wire)
    deletes = _deleting(runner)

    async def main() -> None:
        await _a_snapshot_held(runner, wire, 0)
        await _a_snapshot_held(runner, wire, 1)
        await runner.settled(0)
        assert deletes  # rows of the first manifest the second does not reference
        stopping = asyncio.create_task(runner.stop(settle_s=3600.0))
        await asyncio.sleep(0)
        assert not stopping.done()
        for future in deletes:
            future.set_result(None)
        await asyncio.wait_for(stopping, timeout=60)

    asyncio.run(main())


def test_a_snapshot_delivered_while_the_worker_stops_deletes_no_row() -> None:
    """The rows its manifest no longer references stay: the next owner deletes
    them (`load_shard`), after the producer is gone they cannot be."""
    wire = Wire()
    runner = make(wire)
    deletes = _deleting(runner)

    async def main() -> None:
        await _a_snapshot_held(runner, wire, 0)
        await runner.settled(0)
        wire.held = True
        await _a_snapshot_held(runner, wire, 1)
        stopping = asyncio.create_task(runner.stop(settle_s=3600.0))
        await asyncio.sleep(0)
        wire.release()
        await stopping

    asyncio.run(main())
    assert [e[1] for e in wire.journal if e[0] == "acked"] == [0, 1]  # the second delivered
    assert deletes == [] and runner.rows[0] - runner.live[0]  # stale rows kept, none deleted
