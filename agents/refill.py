"""Re-read engine-topic messages a restored snapshot does not cover.

An engine partition resumes at the group's committed offset, and its state
at the snapshot the table restored. Offsets are acknowledged only once a
snapshot covering them is delivered, so the snapshot should never be older
than the committed offset. If it is anyway (a table recovery that stopped
short of the newest changelog record has been seen on the embedded broker),
the messages in between are still on the engine topic: `read_range` reads
them with a client of its own (no group, nothing committed), so the engine
applies them before going on and nothing is lost.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.producer import client_options
from agents.settings import KafkaSettings


class RangeUnavailable(Exception):
    """The broker no longer has (all of) the range, or did not answer in time."""


async def read_range(
    bootstrap: str,
    kafka: KafkaSettings,
    topic: str,
    partition: int,
    start: int,
    stop: int,
    *,
    timeout: float = 60.0,
) -> AsyncIterator[tuple[int, bytes | None, bytes | None]]:
    """Yield (offset, key, value) for offsets start <= offset < stop, in order.

    Raises `RangeUnavailable` once it is clear part of the range cannot be
    read (deleted by retention, or no progress within `timeout` seconds);
    what was yielded before stays yielded.
    """
    if start >= stop:
        return
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **client_options(kafka),
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        if first > start:
            raise RangeUnavailable(f"{topic}:{partition} starts at offset {first} now, not {start}")
        consumer.seek(tp, start)
        expected = start
        deadline = time.monotonic() + timeout
        while expected < stop:
            if time.monotonic() > deadline:
                raise RangeUnavailable(
                    f"{topic}:{partition}: offset {expected} not read within {timeout:.0f} s"
                )
            fetched = await consumer.getmany(tp, timeout_ms=500, max_records=500)
            for record in fetched.get(tp, []):
                if record.offset < expected:
                    continue
                if record.offset >= stop:
                    return
                yield record.offset, record.key, record.value
                expected = record.offset + 1
                deadline = time.monotonic() + timeout
    finally:
        await consumer.stop()
