"""Re-read messages the Faust consumer did not hand over.

An engine partition resumes at the group's committed offset, and its state
at the snapshot the table restored. Offsets are acknowledged only once a
snapshot covering them is delivered, so the snapshot should never be older
than the committed offset. If it is anyway (a table recovery that stopped
short of the newest changelog record has been seen on the embedded broker),
the messages in between are still on the engine topic: `read_range` reads
them with a client of its own (no group, nothing committed), so the engine
applies them before going on and nothing is lost.

The same holds mid-stream and on the input topics: after a rebalance or a
restart, Faust's consumer can record offsets it never delivered as a gap,
commit past them and drop them when they do arrive (faust-streaming issues
#216, #606). Ingest and engine both check that each partition's offsets
follow on, and read a hole back with `read_range`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agents.kafka_client import client_options
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
    try:
        await consumer.start()
    except (KafkaError, OSError) as exc:
        raise RangeUnavailable(f"{topic}:{partition}: broker not reachable: {exc}") from exc
    try:
        async for item in _read(consumer, tp, start, stop, timeout):
            yield item
    except (KafkaError, OSError) as exc:
        raise RangeUnavailable(f"{topic}:{partition}: {exc!r}") from exc
    finally:
        await consumer.stop()


async def _read(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, stop: int, timeout: float
) -> AsyncIterator[tuple[int, bytes | None, bytes | None]]:
    name = f"{tp.topic}:{tp.partition}"
    consumer.assign([tp])
    first = (await consumer.beginning_offsets([tp]))[tp]
    if first > start:
        raise RangeUnavailable(f"{name} starts at offset {first} now, not {start}")
    consumer.seek(tp, start)
    expected = start
    deadline = time.monotonic() + timeout
    while expected < stop:
        if time.monotonic() > deadline:
            raise RangeUnavailable(f"{name}: offset {expected} not read within {timeout:.0f} s")
        fetched = await consumer.getmany(tp, timeout_ms=500, max_records=500)
        for record in fetched.get(tp, []):
            if record.offset < expected:
                continue
            if record.offset >= stop:
                return
            yield record.offset, record.key, record.value
            expected = record.offset + 1
            deadline = time.monotonic() + timeout
        if await consumer.position(tp) >= stop:
            return  # the rest are offsets with no record (transaction markers)
