"""The worker's health and state pages: /healthz, /livez, /readyz and /kpi.

Each probe judges the worker from `Runtime` and the consumer's assignment
(`agents.health` says how) and answers 200 or 503 with the same body: the
verdict, its basis, the engine partitions and input partitions held. The
wall (`agents.wall`) and /metrics (`agents.metrics`) are installed apart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import faust
import orjson

from agents.health import Health, judge, live, ready
from agents.private_api import stream_response
from agents.runtime import Runtime, assignment_of, pipeline_stats
from streams.live import iter_current_windows, live_view


class Probes:
    """The verdicts of the probes, and the body they answer with."""

    def __init__(self, app: faust.App, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.engine_topic = runtime.settings.topics.engine
        self.sources = runtime.settings.topics.sources()
        self.limit_s = max(10.0, 5 * runtime.settings.worker.tick_interval)

    def holds_engine(self, assignment: Any) -> bool:
        return any(tp.topic == self.engine_topic for tp in assignment)

    def healthy(self, now: float, assignment: Any) -> Health:
        # Holding engine partitions: healthy while the clock ticks make the round
        # trip through the broker back into the engine (a lost broker or a stuck
        # engine shows here). Holding none: no tick comes back, so ticks delivered
        # and ingest keeping up instead (see `agents.health`).
        rt = self.runtime
        undelivered = rt.undelivered_reason()
        health = judge(
            now,
            self.limit_s,
            holds_engine=self.holds_engine(assignment),
            tick_seen=rt.last_tick_seen,
            joined=rt.joined,
            tick_delivered=rt.last_tick_delivered,
            ingest=rt.ingest_progress,
        )
        if undelivered is not None:  # whatever else holds: nothing after it is acknowledged
            health = Health(False, health.basis, undelivered)
        return health

    def live(self, now: float, assignment: Any) -> Health:
        # For liveness probes: progress, however slow (a flood), not promptness.
        rt = self.runtime
        return live(
            now,
            self.limit_s,
            joined=rt.joined,
            rebalancing=bool(self.app.rebalancing or self.app.in_recovery),
            holds_engine=self.holds_engine(assignment),
            engine_applied=rt.engine_applied,
            ingest_processed=rt.ingest_processed,
            tick_delivered=rt.last_tick_delivered,
            ingest=rt.ingest_progress,
        )

    def ready(self, now: float, assignment: Any) -> Health:
        # For readiness probes and rollouts: healthy and caught up with its inputs.
        healthy = self.healthy(now, assignment)
        return ready(now, self.limit_s, healthy, self.runtime.ingest_progress)

    def answer(self, web: Any, health: Health, assignment: Any) -> Any:
        body = {
            "status": "ok" if health.healthy else "unhealthy",
            "reason": health.reason,
            "basis": health.basis,
            "partitions": sorted(self.runtime.shards),
            "inputs": sorted(
                f"{tp.topic}:{tp.partition}" for tp in assignment if tp.topic in self.sources
            ),
        }
        return web.json(body, status=200 if health.healthy else 503)


def install_routes(app: faust.App, runtime: Runtime) -> None:
    """Add /healthz, /livez, /readyz and /kpi to `app`."""
    probes = Probes(app, runtime)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        assignment = assignment_of(app)
        return probes.answer(web, probes.healthy(time.monotonic(), assignment), assignment)

    @app.page("/livez")
    async def livez(web: Any, request: Any) -> Any:
        assignment = assignment_of(app)
        return probes.answer(web, probes.live(time.monotonic(), assignment), assignment)

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        assignment = assignment_of(app)
        return probes.answer(web, probes.ready(time.monotonic(), assignment), assignment)

    @app.page("/kpi")
    async def kpi(web: Any, request: Any) -> Any:
        return await stream_response(request, kpi_json(runtime), "application/json")


def kpi_json(runtime: Runtime, chunk_bytes: int = 1 << 18) -> Iterator[bytes]:
    """/kpi's body, `{"shards": runtime.views(), "pipeline": ...}` as JSON,
    written in chunks of about `chunk_bytes`: each shard's current windows
    are made a window at a time (`streams.live.iter_current_windows`), not
    held whole (at 10,000 machines the body is about 17 MB)."""
    pending: list[bytes] = [b'{"shards":[']
    size = 0
    for n, (partition, shard) in enumerate(sorted(runtime.shards.items())):
        head = orjson.dumps({"partition": partition, **live_view(shard.engine, current=False)})
        pending.append(b"," * (n > 0) + head[:-1] + b',"current":[')
        for i, record in enumerate(iter_current_windows(shard.engine)):
            pending.append(b"," * (i > 0) + orjson.dumps(record))
            size += len(pending[-1])
            if size >= chunk_bytes:
                yield b"".join(pending)
                pending, size = [], 0
        pending.append(b"]}")
    pending.append(b'],"pipeline":' + orjson.dumps(pipeline_stats(runtime)) + b"}")
    yield b"".join(pending)
