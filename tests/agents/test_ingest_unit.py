"""`agents.ingest.Ingest` with fakes for its collaborators: no Faust, no broker.

Batches of input messages go through `forward`; `Wire` (tests.agents.fakes)
records what is sent, delivered and marked committable, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from agents.ingest import Ingest
from agents.pipeline import SentBefore
from agents.read_back import ReadBack
from agents.refill import RangeUnavailable
from agents.runtime import Runtime
from agents.settings import TopicSettings, load_settings
from streams.timeutil import US, to_us
from tests import eventfactory as ef
from tests.agents.fakes import Message, Wire, settle, topic_holding

WALL_US = to_us(ef.DAY) + 8 * 3600 * US
TOPICS = TopicSettings()
MACHINES, ENGINE, DEAD = TOPICS.machine_state, TOPICS.engine, TOPICS.dead_letter
EVENTS = [ef.state(ef.at(7 + i / 10), "running" if i % 2 else "down") for i in range(6)]
ON_TOPIC = {offset: orjson.dumps(event) for offset, event in enumerate(EVENTS)}


def message(offset: int) -> Message:
    return Message(MACHINES, 0, offset, b"press-1", ON_TOPIC[offset], timestamp=1.0)


def make(
    wire: Wire,
    *,
    committed: int | None = 0,
    read: Any = None,
    sent_before: SentBefore | None = None,
    looked: list[Any] | None = None,
) -> Ingest:
    settings = load_settings(None)
    runtime = Runtime(settings, embedded=False)

    async def sent_before_fn(*, resumed: dict[Any, int], floor_ms: int) -> SentBefore:
        if looked is not None:
            looked.append(resumed)
        return sent_before or SentBefore()

    return Ingest(
        settings,
        runtime,
        send=wire.send,
        engine_topic=ENGINE,
        dead_topic=DEAD,
        assignment=lambda: {(MACHINES, 0)},
        committed=lambda topic, partition: committed,
        read_back=ReadBack(read or topic_holding(ON_TOPIC, b"press-1"), runtime.skipped),
        sent_before=sent_before_fn,
        mark_read_back=wire.mark_read_back,
        clock_us=lambda: WALL_US,
    )


def forwarded(wire: Wire) -> list[int]:
    """The input offsets whose events were forwarded, in order: found by event id,
    whatever form the engine topic gives an event."""
    found = [
        orjson.dumps(e).decode()
        for f in wire.values(ENGINE)
        for run in f.get("runs", [])
        for e in run["events"]
    ]
    return [next(n for n, e in enumerate(EVENTS) if f'"{e["event_id"]}"' in f) for f in found]


def test_a_hole_is_read_back_delivered_and_only_then_marked_committable() -> None:
    """Offsets 1 and 2 never handed over:

    handed over   0 . . 3
    read back       1 2
    forwarded     0 1 2 3   (in offset order)
    marked          [1, 3)  after the forward is delivered
    """
    wire = Wire()
    read = topic_holding(ON_TOPIC, b"press-1")
    ingest = make(wire, read=read)

    async def main() -> None:
        await ingest.forward([message(0)])
        wire.held = True
        forward = asyncio.create_task(ingest.forward([message(3)]))
        await settle(lambda: wire.waiting, "the forward sent")
        assert "marked" not in wire.kinds()  # not delivered yet: not committable
        wire.release()
        await forward

    asyncio.run(main())
    assert read.asked == [(MACHINES, 0, 1, 3)]
    assert forwarded(wire) == [0, 1, 2, 3]
    assert wire.journal[-2:] == [("delivered", ENGINE, b"events"), ("marked", MACHINES, 0, 1, 3)]
    rt = ingest.runtime
    assert rt.skipped == {("ingest", "refilled"): 2}
    assert rt.consumed == {MACHINES: 4}
    assert rt.next_input == {(MACHINES, 0): 4}
    assert rt.ingested == {(MACHINES, 0): 3}


def test_a_redelivered_offset_is_skipped_and_counted() -> None:
    wire = Wire()
    ingest = make(wire)

    async def main() -> None:
        await ingest.forward([message(0), message(1)])
        await ingest.forward([message(1)])  # handed over again

    asyncio.run(main())
    assert forwarded(wire) == [0, 1]  # each once
    rt = ingest.runtime
    assert rt.skipped == {("ingest", "again"): 1}
    assert rt.redelivered == {MACHINES: 1}
    assert rt.consumed == {MACHINES: 2}  # counted when first read
    assert "marked" not in wire.kinds()


def test_a_range_that_cannot_be_read_back_is_counted_lost() -> None:
    async def gone(*_: Any) -> AsyncIterator[Any]:
        raise RangeUnavailable(f"{MACHINES}:0 starts at offset 2 now")
        yield  # an async generator

    wire = Wire()
    ingest = make(wire, read=gone)

    async def main() -> None:
        await ingest.forward([message(0)])
        await ingest.forward([message(2)])

    asyncio.run(main())
    assert forwarded(wire) == [0, 2]
    assert ingest.runtime.skipped == {("ingest", "lost"): 1}
    # Past it anyway, as past a gap the broker left: nothing more can be read.
    assert wire.journal[-1] == ("marked", MACHINES, 0, 1, 2)


def test_after_a_resume_what_was_forwarded_before_is_not_forwarded_again() -> None:
    """Reading resumed at the committed offset 2; an earlier read forwarded up to 3."""
    wire, looked = Wire(), []
    before = SentBefore(forwarded={(MACHINES, 0, 0): 3})
    ingest = make(wire, committed=2, sent_before=before, looked=looked)

    async def main() -> None:
        await ingest.forward([message(2), message(3), message(4)])

    asyncio.run(main())
    assert looked == [{(MACHINES, 0): 2}]
    assert forwarded(wire) == [4]
    rt = ingest.runtime
    assert rt.redelivered == {MACHINES: 2} and rt.consumed == {MACHINES: 1}
    assert rt.resumed_at == {}  # looked back once


def test_a_batch_is_announced_once_with_the_inputs_read() -> None:
    wire = Wire()
    ingest = make(wire, committed=None)

    async def main() -> None:
        await ingest.forward([message(0)])
        await ingest.forward([message(1)])

    asyncio.run(main())
    first, second = wire.values(ENGINE)
    assert first["sources"] == [f"{MACHINES}:0"] and "sources" not in second
    assert ingest.runtime.announced == [f"{MACHINES}:0"]


def test_forget_drops_what_is_known_of_a_revoked_partition() -> None:
    wire = Wire()
    ingest = make(wire, committed=None)
    asyncio.run(ingest.forward([message(0)]))
    rt = ingest.runtime
    rt.sent_before.lettered.add((MACHINES, 0, 0))
    rt.resumed_at[MACHINES, 0] = 0
    ingest.forget(MACHINES, 0)
    assert (rt.ingested, rt.next_input, rt.resumed_at) == ({}, {}, {})
    assert rt.sent_before.lettered == set()


def test_a_tail_not_handed_over_is_read_back_once_the_partition_is_quiet() -> None:
    """Offsets 2 to 5 are on the topic (end offset 6) but never handed over:

    handed over   0 1            at t
    read_tail                    at t + 9 s: nothing (not quiet long enough)
    read back         2 3 4 5    at t + 10 s, forwarded, then marked [2, 6)
    handed over       3          later: left out as read
    """
    wire = Wire()
    read = topic_holding(ON_TOPIC, b"press-1")
    clock = [WALL_US]
    ingest = make(wire, read=read)
    ingest.clock_us = lambda: clock[0]
    ends = {(MACHINES, 0): 6}

    async def main() -> None:
        await ingest.forward([message(0), message(1)])
        clock[0] += 9 * US
        await ingest.read_tail(ends)
        assert read.asked == [] and forwarded(wire) == [0, 1]
        clock[0] += 1 * US
        await ingest.read_tail(ends)
        await ingest.read_tail(ends)  # read: nothing more to do
        await ingest.forward([message(3)])  # the consumer hands one over after all

    asyncio.run(main())
    assert read.asked == [(MACHINES, 0, 2, 6)]
    assert forwarded(wire) == [0, 1, 2, 3, 4, 5]  # each once
    marked = wire.journal.index(("marked", MACHINES, 0, 2, 6))
    # After the tail's forward is delivered (the second forward), not before.
    assert wire.journal[:marked].count(("delivered", ENGINE, b"events")) == 2
    rt = ingest.runtime
    assert rt.next_input == {(MACHINES, 0): 6}
    assert rt.consumed == {MACHINES: 6}
    assert rt.redelivered == {MACHINES: 1}


def test_a_long_tail_is_read_back_a_batch_at_a_time() -> None:
    """`worker.ingest_batch` messages a call: never the whole tail in memory."""
    wire = Wire()
    read = topic_holding(ON_TOPIC, b"press-1")
    clock = [WALL_US]
    ingest = make(wire, read=read)
    worker = ingest.settings.worker.model_copy(update={"ingest_batch": 3})
    ingest.settings = ingest.settings.model_copy(update={"worker": worker})
    ingest.clock_us = lambda: clock[0]
    ends = {(MACHINES, 0): 6}

    async def main() -> None:
        await ingest.forward([message(0), message(1)])
        clock[0] += 10 * US
        await ingest.read_tail(ends)
        assert ingest.runtime.next_input == {(MACHINES, 0): 5}
        await ingest.read_tail(ends)  # the rest at once: no new quiet to wait for
        await ingest.read_tail(ends)  # read to its end: nothing more

    asyncio.run(main())
    assert read.asked == [(MACHINES, 0, 2, 5), (MACHINES, 0, 5, 6)]
    assert forwarded(wire) == [0, 1, 2, 3, 4, 5]
    assert ("marked", MACHINES, 0, 2, 5) in wire.journal
    assert ("marked", MACHINES, 0, 5, 6) in wire.journal
    assert ingest.runtime.next_input == {(MACHINES, 0): 6}


def test_a_tail_of_a_partition_still_handing_over_or_not_assigned_is_left() -> None:
    wire = Wire()
    read = topic_holding(ON_TOPIC, b"press-1")
    clock = [WALL_US]
    ingest = make(wire, read=read)
    ingest.clock_us = lambda: clock[0]

    async def main() -> None:
        await ingest.forward([message(0)])
        clock[0] += 5 * US
        await ingest.forward([message(1)])  # still handing over: the quiet restarts
        clock[0] += 9 * US
        await ingest.read_tail({(MACHINES, 0): 6, (MACHINES, 1): 9})  # 1: not assigned
        await ingest.read_tail({(MACHINES, 0): 2})  # read to its end

    asyncio.run(main())
    assert read.asked == []
    assert forwarded(wire) == [0, 1]


def test_a_tail_of_a_partition_revoked_while_it_is_read_is_dropped() -> None:
    wire = Wire()
    assigned = {(MACHINES, 0)}
    clock = [WALL_US]
    inner = topic_holding(ON_TOPIC, b"press-1")

    def read(*args: Any) -> Any:
        assigned.clear()  # a rebalance takes the partition while its tail is read
        return inner(*args)

    ingest = make(wire, read=read)
    ingest.assignment = lambda: assigned
    ingest.clock_us = lambda: clock[0]

    async def main() -> None:
        await ingest.forward([message(0), message(1)])
        clock[0] += 10 * US
        await ingest.read_tail({(MACHINES, 0): 6})

    asyncio.run(main())
    assert inner.asked == [(MACHINES, 0, 2, 6)]
    assert forwarded(wire) == [0, 1]  # the tail of a revoked partition is not sent
    assert ingest.runtime.next_input == {(MACHINES, 0): 2}
    assert "marked" not in wire.kinds()
