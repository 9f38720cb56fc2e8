"""The demo's plant feed: the simulator into a started worker's broker.

`history_days` of the simulated plant up to today's live start go out as fast
as the broker takes them, then the plant plays live at `speed` simulated
seconds per wall second. Live play starts two hours into today's first shift
(08:00 UTC with the default shifts), not at midnight, and only once the worker
has applied the history (its watermark at the history's end; the demo's
worker lets quiet inputs follow the clock after 5 s): the shift's first hours
are closed by then, so every KPI (line OEE of the last closed hour, perfect
order, p-charts) is there from the first second of live play, and the shift
has 14 hours left to play (14 wall minutes at 60x). Events go in the simulator's send order:
a store-and-forward burst (events with older timestamps) goes out at once,
right after the events of its outage's end.

This is `agents.worker.add_simulator` with the simulator's configuration
(producer profiles, outages) given by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agents.app import wall_us
from streams.timeutil import iso, to_us

if TYPE_CHECKING:
    from agents.worker import Running
    from devtools.simulator import SimConfig

DAY_US = 86_400_000_000
LIVE_INTO_SHIFT_S = 7200
"""Live play starts this far into the day's first shift."""
HISTORY_WAIT_S = 120.0
"""At most this long between the history sent and live play (the history applied)."""


def add_simulator(
    running: Running, *, config: SimConfig, seed: int, history_days: float, speed: float
) -> None:
    """Feed the simulated plant: `history_days` at full speed, then live at `speed`x."""
    from devtools.producer import EventProducer
    from devtools.simulator import simulate

    settings = running.runtime.settings
    history_end = live_start_us(config, wall_us())
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
            await _history_applied(running, history_end, HISTORY_WAIT_S)
            print(
                f"kpimon demo: history {iso_minute(start)} to {iso_minute(history_end)} applied; "
                f"live play from {iso_minute(history_end)} at {speed:g}x",
                file=sys.stderr,
                flush=True,
            )
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


async def _history_applied(running: Running, history_end: int, timeout: float) -> None:
    """Wait (at most `timeout` s) until every engine shard's watermark is at the
    end of the history: its last hours closed, live play starts with every KPI."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shards = list(running.runtime.shards.values())
        marks = [s.engine.watermark_us for s in shards]
        if shards and all(m is not None and m >= history_end for m in marks):
            return
        await asyncio.sleep(0.5)


def live_start_us(config: SimConfig, now_us: int) -> int:
    """Where live play starts: two hours into the earliest shift of the day of
    `now_us` (UTC), or that day's midnight when the plant has no shifts."""
    midnight = now_us - now_us % DAY_US
    if not config.shifts:
        return midnight
    first = min(_clock_s(shift.start) for shift in config.shifts)
    return midnight + (first + LIVE_INTO_SHIFT_S) % 86_400 * 1_000_000


def iso_minute(us: int) -> str:
    """`2026-12-03T07:34Z`: the one timestamp format of the demo's terminal output."""
    return iso(us)[:16] + "Z"


def _clock_s(text: str) -> int:
    hours, minutes = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60


def _ts_us(event: dict[str, Any]) -> int:
    return to_us(datetime.fromisoformat(event["ts"]))
