"""The demo's plant feed: the simulator into a started worker's broker.

`history_days` of the simulated plant up to today's midnight (UTC) go out as
fast as the broker takes them, then the plant plays live at `speed`
simulated seconds per wall second. Events go in the simulator's send order:
a store-and-forward burst (events with older timestamps) goes out at once,
right after the events of its outage's end.

This is `agents.worker.add_simulator` with the simulator's configuration
(producer profiles, outages) given by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agents.app import wall_us
from streams.timeutil import to_us

if TYPE_CHECKING:
    from agents.simulator import SimConfig
    from agents.worker import Running

DAY_US = 86_400_000_000


def add_simulator(
    running: Running, *, config: SimConfig, seed: int, history_days: float, speed: float
) -> None:
    """Feed the simulated plant: `history_days` at full speed, then live at `speed`x."""
    from agents.producer import EventProducer
    from agents.simulator import simulate

    settings = running.runtime.settings
    now = wall_us()
    history_end = now - now % DAY_US
    start = history_end - round(history_days * DAY_US)

    @running.app.task
    async def feed() -> None:
        producer = EventProducer(
            running.bootstrap, topics=settings.topics, kafka=settings.kafka, validate=False
        )
        await producer.start()
        try:
            events = iter(simulate(config, seed, start, 365 * 86_400))
            batch: list[dict[str, Any]] = []
            first_live = None
            for event in events:  # the history, as fast as the broker takes it
                if _ts_us(event) >= history_end:
                    first_live = event
                    break
                batch.append(event)
                if len(batch) >= 2000:
                    await producer.send(batch, wait=False)
                    batch = []
            await producer.send(batch)
            began = time.monotonic()
            for event in itertools.chain([first_live] if first_live else [], events):
                # A burst's events are older than the events before them: no wait.
                due = began + (_ts_us(event) - history_end) / 1e6 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await producer.send([event], wait=False)
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()


def _ts_us(event: dict[str, Any]) -> int:
    return to_us(datetime.fromisoformat(event["ts"]))
