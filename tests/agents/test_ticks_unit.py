"""`agents.ticks.Ticks` with a fake engine topic and assignment: no Faust."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from agents.runtime import Runtime
from agents.settings import load_settings
from agents.ticks import Ticks


class EngineTopic:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Any, int]] = []
        self.deliveries: list[asyncio.Future[None]] = []

    async def send(self, *, key: bytes, value: bytes, partition: int) -> asyncio.Future[None]:
        self.sent.append((key, orjson.loads(value), partition))
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery


def test_a_tick_goes_to_every_engine_partition_and_counts_once_delivered() -> None:
    settings = load_settings(None, topics={"engine_partitions": 2})
    runtime = Runtime(settings, embedded=False)
    topic = EngineTopic()
    ticks = Ticks(
        runtime,
        engine_topic=topic,
        assignment=lambda: {("machine-state", 1), ("orders", 0), (settings.topics.engine, 0)},
        highwater=lambda topic, partition: None,
        clock_us=lambda: 42,
    )

    async def main() -> None:
        await ticks.tick()
        assert runtime.last_tick_delivered is None  # not acknowledged by the broker yet
        for delivery in topic.deliveries:
            delivery.set_result(None)
        await asyncio.sleep(0)

    asyncio.run(main())
    assert ticks.assigned_inputs() == [("machine-state", 1), ("orders", 0)]
    progress = {"machine-state:1": False, "orders:0": False}  # no end offsets known
    assert topic.sent == [(b"tick", {"tick_us": 42, "sources": progress}, p) for p in (0, 1)]
    assert runtime.last_tick_delivered is not None
