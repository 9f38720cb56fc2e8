"""The clock ticks a worker sends to every engine partition.

A tick carries the wall clock and, for each input partition this worker
reads, whether it is caught up (`agents.progress`): the engine moves event
time on through a quiet input only once it is read to its end. Each tick's
delivery by the broker is noted for /healthz. The consumer's assignment and
high-water marks are passed in as functions, so this is testable with fakes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from typing import Any

from agents.pipeline import tick_message
from agents.runtime import Runtime


class Ticks:
    """Sends ticks to `engine_topic`; `highwater(topic, partition)` is the
    consumer's end offset of an input partition, `clock_us()` the wall clock."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        engine_topic: Any,
        assignment: Callable[[], Collection[tuple[str, int]]],
        highwater: Callable[[str, int], int | None],
        clock_us: Callable[[], int],
    ) -> None:
        self.runtime = runtime
        self.engine_topic = engine_topic
        self.assignment = assignment
        self.highwater = highwater
        self.clock_us = clock_us
        self.sources = runtime.settings.topics.sources()

    def assigned_inputs(self) -> list[tuple[str, int]]:
        return sorted(
            (topic, partition) for topic, partition in self.assignment() if topic in self.sources
        )

    def input_progress(self) -> dict[str, bool]:
        """Assigned input partitions -> caught up (see `agents.progress`)."""
        rt, now = self.runtime, time.monotonic()
        max_age = max(5.0, 4 * rt.settings.worker.tick_interval)
        return {
            f"{topic}:{partition}": rt.input_ends.caught_up(
                (topic, partition),
                rt.ingested.get((topic, partition)),
                self.highwater(topic, partition),
                now=now,
                max_age=max_age,
            )
            for topic, partition in self.assigned_inputs()
        }

    async def tick(self) -> None:
        rt = self.runtime
        progress = self.input_progress()
        read = {f"{topic}:{partition}": o for (topic, partition), o in rt.ingested.items()}
        rt.ingest_progress.observe(time.monotonic(), progress, read)
        value = tick_message(self.clock_us(), progress)
        for partition in range(rt.settings.topics.engine_partitions):
            sent = await self.engine_topic.send(key=b"tick", value=value, partition=partition)
            if isinstance(sent, asyncio.Future):  # acknowledged by the broker: for /healthz
                sent.add_done_callback(self.delivered)

    def delivered(self, delivery: asyncio.Future[Any]) -> None:
        if not delivery.cancelled() and delivery.exception() is None:
            self.runtime.last_tick_delivered = time.monotonic()
