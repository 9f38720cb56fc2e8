"""The read-only probe the bench adds to the kpimon worker it measures.

`install_probe` adds to a running worker a task that every 10 ms reads its
counters (messages consumed, valid events forwarded, events applied by each
engine shard: the shard stats `events.*`) and notes the wall time whenever
they change, and a page `/bench` that returns them. It only reads; no KPI
code changes. The probe is there because `/kpi` builds the whole live view
(every machine's provisional windows) on each call: polling it at a fine
interval would slow the worker being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from agents.runtime import applied_events

PROBE_INTERVAL_S = 0.01


def reading(runtime: Any) -> tuple[int, int, int]:
    """(messages consumed, events forwarded by the ingest agent, events applied)."""
    return (
        sum(runtime.consumed.values()),
        sum(runtime.events_in.values()),
        applied_events(runtime),
    )


def assigned_inputs(app: Any, sources: dict[str, str]) -> int:
    """Input-topic partitions assigned to this worker (0 before it has any)."""
    with contextlib.suppress(Exception):
        return sum(1 for tp in app.consumer.assignment() if tp.topic in sources)
    return 0


def assigned_engine(app: Any, engine_topic: str) -> int:
    """Engine-topic partitions assigned to this worker."""
    with contextlib.suppress(Exception):
        return sum(1 for tp in app.consumer.assignment() if tp.topic == engine_topic)
    return 0


def install_probe(running: Any) -> None:
    """Counters of a running worker, sampled every 10 ms, served at /bench."""
    app, runtime = running.app, running.runtime
    sources = runtime.settings.topics.sources()
    series: list[tuple[float, int, int, int]] = []  # (wall, consumed, forwarded, applied)
    state: dict[str, Any] = {"first_consumed": None}

    @app.task
    async def sample() -> None:
        last = (0, 0, 0)
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            now = time.time()
            current = reading(runtime)
            if current != last:
                if state["first_consumed"] is None and current[0]:
                    state["first_consumed"] = now
                series.append((now, *current))
                last = current

    @app.page("/bench")
    async def bench(web: Any, request: Any) -> Any:
        consumed, forwarded, applied = reading(runtime)
        offset = time.time() - time.monotonic()
        body = {
            "now": time.time(),
            "assigned": assigned_inputs(app, sources),
            "engine_assigned": assigned_engine(app, runtime.settings.topics.engine),
            "first_consumed": state["first_consumed"],
            "consumed": consumed,
            "forwarded": forwarded,
            "applied": applied,
            "dead_letters": sum(runtime.dead_letters.values()),
            "snapshot_wall": max((offset + t for t in runtime.snapshot_at.values()), default=None),
            "machines": sum(len(s.engine.machines) for s in runtime.shards.values()),
            "open_orders": sum(len(s.engine.book.open) for s in runtime.shards.values()),
            "last_change": series[-1][0] if series else None,
        }
        if request.query.get("series"):
            body["series"] = series
        return web.json(body)
