"""The worker's health and state pages: /healthz, /livez, /readyz and /kpi.

Each probe judges the worker from `Runtime` and the consumer's assignment
(`agents.health` says how) and answers 200 or 503 with the same body: the
verdict, its basis, the engine partitions and input partitions held. The
wall (`agents.wall`) and /metrics (`agents.metrics`) are installed apart.
"""

from __future__ import annotations

import time
from typing import Any

import faust

from agents.health import Health, judge, live, ready
from agents.runtime import Runtime, pipeline_stats


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
        assignment = app.consumer.assignment()
        return probes.answer(web, probes.healthy(time.monotonic(), assignment), assignment)

    @app.page("/livez")
    async def livez(web: Any, request: Any) -> Any:
        assignment = app.consumer.assignment()
        return probes.answer(web, probes.live(time.monotonic(), assignment), assignment)

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        assignment = app.consumer.assignment()
        return probes.answer(web, probes.ready(time.monotonic(), assignment), assignment)

    @app.page("/kpi")
    async def kpi(web: Any, request: Any) -> Any:
        return web.json({"shards": runtime.views(), "pipeline": pipeline_stats(runtime)})
