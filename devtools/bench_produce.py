"""Sending the bench's events to the broker, from the bench's own process.

`produce` sends a prepared stream as fast as the broker takes it (checking
every 997th event against the contract), `paced` sends at a fixed rate with
every event stamped with its send time (the latency test), and
`create_topics` makes the input topics first. The measured consumers are
elsewhere (`devtools.bench_workers`), so producing never shares their process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from devtools.bench_mix import Message, restamp
from streams.timeutil import US


def encode(events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(events[0] if len(events) == 1 else events)


async def produce(
    bootstrap: str,
    topics: dict[str, str],
    messages: Iterable[Message],
    tick: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Send as fast as the broker takes it; returns (messages, events)."""
    from aiokafka import AIOKafkaProducer

    from streams.decode import parse_event

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent = events = 0
    pending = []
    try:
        for kind, key, group in messages:
            for event in group:
                if (events := events + 1) % 997 == 1:
                    parse_event(event)  # the mix must be contract-valid
            pending.append(await producer.send(topics[kind], encode(group), key=key.encode()))
            sent += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
                if tick:
                    tick(events)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent, events


async def paced(
    bootstrap: str,
    topics: dict[str, str],
    messages: Iterator[Message],
    rate: float,
    seconds: float,
    tick: Callable[[int], None] | None = None,
) -> list[tuple[float, int]]:
    """Send at `rate` events/s for `seconds`, each event stamped with its send time.
    Returns (send time, events sent so far including this message) per message."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    log: list[tuple[float, int]] = []
    sent = 0
    try:
        began = time.time()
        while (elapsed := time.time() - began) < seconds:
            while sent < rate * elapsed:
                kind, key, events = next(messages)
                now = time.time()
                restamp(events, int(now * US))
                await producer.send(topics[kind], encode(events), key=key.encode())
                sent += len(events)
                log.append((now, sent))
            if tick and len(log) % 100 == 0:
                tick(sent)
            await asyncio.sleep(0.005)
        await producer.flush()
    finally:
        await producer.stop()
    return log


async def create_topics(bootstrap: str, plan: dict[str, int]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(t, n, 1) for t, n in plan.items()])
        for entry in response.topic_errors:
            if entry[1] and for_code(entry[1]) is not TopicAlreadyExistsError:
                raise RuntimeError(f"could not create topic {entry[0]}: error {entry[1]}")
    finally:
        await admin.close()
