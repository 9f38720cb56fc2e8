"""What an earlier read of a partition sent, read back from the output topics.

Input offsets are acknowledged (and committed, within a second) only after
their forwards and dead letters are delivered; engine offsets only once a
snapshot covers them. A worker killed in between leaves outputs on the
topics for offsets the next reader gets again. Sending them again would
put a bad message twice on the dead-letter topic and count its events
twice. So the first read of a partition after an assignment looks back
first:

- ingest, for an input partition read again from offset C: the engine
  topic's forwards carry, per run, the highest input offset they hold
  (`upto`); the dead-letter topic has a letter per bad input offset;
- an engine partition restored at offset C: the dead-letter topic's
  refusals name their engine offset and index (`agents.letters`).

Each topic is read backwards from its end, newest first, and a partition
is done once it shows something older than C (a run ending before C, a
letter for an offset below C), once its records are older than `floor_ms`
(the write time of the first message read again, less `SKEW_S` for clocks
apart: nothing older can be about it), at its start, or after `MAX_SCAN`
records. Stopping early can only let a letter or forward through twice
(the engine drops repeated events by `event_id`); it never skips one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agents.kafka_client import client_options
from agents.letters import letter_id
from agents.offsets import end_offsets
from agents.pipeline import SentBefore
from agents.settings import KafkaSettings

log = logging.getLogger("kpimon")

SKEW_S = 300
"""Clocks of producers and workers may differ by this much (seconds)."""
CHUNK = 500
"""Offsets read at a time, going backwards."""
MAX_SCAN = 100_000
"""Records read back per partition at most."""

Visit = Callable[[int, int, bytes | None], bool]
"""visit(partition, offset, value) -> whether that partition is done."""


@dataclass(frozen=True)
class Tail:
    """Reads the tails of topics with a group-less client of its own."""

    bootstrap: str
    kafka: KafkaSettings
    embedded: bool
    timeout_s: float = 30.0

    async def scan(self, topic: str, floor_ms: int, visit: Visit) -> int:
        """Visit every partition's records newest first (module docstring); returns
        how many were read. Raises `KafkaError` or `OSError` when the broker fails."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            **client_options(self.kafka),
        )
        await consumer.start()
        try:
            await consumer.topics()  # metadata of every topic
            partitions = sorted(consumer.partitions_for_topic(topic) or ())
            tps = [TopicPartition(topic, p) for p in partitions]
            ends = await end_offsets(consumer, tps, embedded=self.embedded)
            starts = await consumer.beginning_offsets(tps)
            read = 0
            for tp in tps:
                read += await self._partition(consumer, tp, starts[tp], ends[tp], floor_ms, visit)
            return read
        finally:
            await consumer.stop()

    async def _partition(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        start: int,
        end: int,
        floor_ms: int,
        visit: Visit,
    ) -> int:
        consumer.assign([tp])
        read, stop = 0, end
        while stop > start and read < MAX_SCAN:
            first = max(start, stop - CHUNK)
            # The newest chunk is read to the end, and past it if `end` fell short.
            records = await self._range(consumer, tp, first, stop, past=stop == end)
            for offset, timestamp, value in reversed(records):
                read += 1
                if timestamp < floor_ms or visit(tp.partition, offset, value):
                    return read
            stop = first
        return read

    async def _range(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, first: int, stop: int, *, past: bool
    ) -> list[tuple[int, int, bytes | None]]:
        """(offset, timestamp ms, value) of offsets first..stop-1 that hold a record;
        with `past` (`stop` is the end offset), then on until a fetch brings
        nothing (the embedded broker's end offset can fall short of its last
        batch).

        Always up to `stop` first: an empty fetch before it means only that the
        fetch took longer than its wait (large letters, a busy broker), not the
        end. Stopping there missed the newest letters, and a restarted engine
        sent their refusals again (issue 14, finding 2).
        """
        consumer.seek(tp, first)
        found: list[tuple[int, int, bytes | None]] = []
        deadline = time.monotonic() + self.timeout_s
        while True:
            reached = await consumer.position(tp) >= stop
            if reached and not past:
                return found
            if time.monotonic() > deadline:
                raise KafkaError(f"{tp.topic}:{tp.partition}: from {first} on not read")
            fetched = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
            if reached and not fetched:
                return found
            for record in fetched:
                if first <= record.offset and (past or record.offset < stop):
                    found.append((record.offset, record.timestamp, record.value))


async def input_sent_before(
    tail: Tail,
    *,
    engine_topic: str,
    dead_topic: str,
    resumed: dict[tuple[str, int], int],
    floor_ms: int,
) -> SentBefore:
    """What was forwarded and dead-lettered for input partitions read again from
    `resumed` (topic, partition) -> offset, by earlier reads."""
    found = SentBefore()
    pending: dict[int, set[tuple[str, int]]] = {}  # engine partition -> input partitions

    def forwards(partition: int, offset: int, value: bytes | None) -> bool:
        waiting = pending.setdefault(partition, set(resumed))
        message = orjson.loads(value or b"{}")
        # A message can hold several runs of one input partition, interleaved
        # with other partitions' (input order across partitions): its highest
        # `upto` is the last of them. Taking the first one seen made a
        # restarted ingest forward the rest again, and the engine refuse those
        # events again at new coordinates (issue 14, finding 2).
        newest: dict[tuple[str, int], int] = {}
        for run in message.get("runs", ()):
            topic, _, number = run.get("source", "").rpartition(":")
            tp = (topic, int(number)) if number.isdigit() else None
            if tp is not None and tp in waiting and "upto" in run:
                newest[tp] = max(run["upto"], newest.get(tp, -1))
        for tp, upto in newest.items():
            waiting.discard(tp)  # messages come in input order: the newest is the highest
            if upto >= resumed[tp]:
                found.forwarded[(*tp, partition)] = upto
        return not waiting

    waiting_letters = set(resumed)

    def letters(partition: int, offset: int, value: bytes | None) -> bool:
        coordinates = letter_id(value or b"")
        if coordinates is not None and coordinates[0] == "input":
            _, topic, number, source_offset = coordinates
            if (topic, number) in resumed:
                if source_offset >= resumed[topic, number]:
                    found.lettered.add((topic, number, source_offset))
                else:
                    waiting_letters.discard((topic, number))
        return not waiting_letters

    await tail.scan(engine_topic, floor_ms, forwards)
    await tail.scan(dead_topic, floor_ms, letters)
    return found


async def engine_lettered(
    tail: Tail, *, dead_topic: str, engine: tuple[str, int], resumed: int, floor_ms: int
) -> set[tuple[int, int]]:
    """(engine offset, index) of the refusals on the dead-letter topic for engine
    partition `engine` (topic, partition) at offsets from `resumed` on."""
    found: set[tuple[int, int]] = set()

    def letters(partition: int, offset: int, value: bytes | None) -> bool:
        coordinates = letter_id(value or b"")
        if coordinates is None or coordinates[0] != "engine" or coordinates[1:3] != engine:
            return False
        if coordinates[3] < resumed:
            return True
        found.add((coordinates[3], coordinates[4]))
        return False

    await tail.scan(dead_topic, floor_ms, letters)
    return found


def floor_of(first_timestamp_s: float | None) -> int:
    """The scan's floor in ms: the first message read again was written at
    `first_timestamp_s` (Unix seconds; None: unknown, no floor)."""
    if first_timestamp_s is None:
        return 0
    return round((first_timestamp_s - SKEW_S) * 1000)
