"""The Faust app's wiring: topics, the snapshot table, agents, timer, signal handlers.

The agents hand their events to `agents.ingest` and `agents.engine_runner`,
the timer to `agents.ticks`; pages are in `agents.web`, `agents.wall` and
`agents.metrics`. Agent concurrency is 1 everywhere (Faust tables and
ordering need it).
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from faust.types import TP

from agents.batch_producer import MAX_BATCH_BYTES, BatchProducer
from agents.engine_runner import EngineRunner
from agents.faust_settings import app_options
from agents.ingest import Ingest
from agents.kafka_client import client_options
from agents.metrics import install_metrics
from agents.private_api import (
    committed_offset,
    count_acks_once,
    delete_table_row,
    hand_over_directly,
    keep_faust_assignor,
    limit_fetch_wait,
    mark_read_back,
    set_table_row,
)
from agents.progress import EndOffsetWatcher, watch
from agents.read_back import ReadBack
from agents.refill import read_range
from agents.resume import Tail, engine_lettered, input_sent_before
from agents.runtime import Runtime, assignment_of
from agents.settings import Settings
from agents.ticks import Ticks
from agents.wall import install_wall
from agents.web import install_routes

RAW = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


def wall_us() -> int:
    return time.time_ns() // 1000


def build_app(settings: Settings, broker_url: str, *, embedded: bool) -> tuple[faust.App, Runtime]:
    s, k, w = settings.topics, settings.kafka, settings.worker
    runtime = Runtime(settings, embedded)
    if embedded:
        from agents.offsets import patch_faust_for_embedded

        patch_faust_for_embedded()
    app = faust.App(w.app_id, **app_options(settings, broker_url, embedded=embedded))
    limit_fetch_wait(app, k.fetch_max_wait)
    keep_faust_assignor(app)  # a group may mix roles (worker.role)
    hand_over_directly(app.consumer)  # no tasks a message in Faust's fetch loop
    count_acks_once(app.consumer)  # an offset acknowledged twice stalled the commit
    bootstrap = broker_url.removeprefix("kafka://").replace(";", ",")
    engine_topic = app.topic(s.engine, partitions=s.engine_partitions, **RAW)
    ingestion, engine, ticks = _parts(app, runtime, bootstrap, engine_topic)

    if ingestion is not None:

        @app.agent(app.topic(*s.sources(), **RAW), concurrency=1)
        async def ingest(stream: faust.StreamT) -> None:
            # Batches of whatever arrived within `ingest_within`: one engine-topic
            # message per engine partition instead of one per input message. Ingest
            # writes no table, so take() acknowledging the batch after it is safe.
            async for events in stream.take_events(w.ingest_batch, within=w.ingest_within):
                await ingestion.forward([event.message for event in events])

        @app.task
        async def watch_input_ends() -> None:
            watcher = EndOffsetWatcher(bootstrap, k, app.conf.id, embedded=embedded)  # the group
            await watch(watcher, ticks.assigned_inputs, runtime.input_ends, w.tick_interval)

        @app.timer(w.tick_interval)
        async def read_tails() -> None:
            # A partition's tail the consumer stopped handing over (`Ingest.read_tail`);
            # a timer of its own, so a tail being read never holds the ticks back.
            await ingestion.read_tail({tp: end for tp, (end, _) in runtime.input_ends.ends.items()})

    if engine is not None:

        @app.agent(engine_topic, concurrency=1)
        async def run_engine(stream: faust.StreamT) -> None:
            manual = stream.noack()
            async for event in manual.events():
                await engine.step(event, manual.ack)

    @app.task
    async def stop_outputs_at_the_end() -> None:
        try:
            await asyncio.Event().wait()  # cancelled when the worker stops
        finally:
            if runtime.outputs is not None:
                await runtime.outputs.stop()

    @app.timer(w.tick_interval)
    async def tick() -> None:
        await ticks.tick()

    if engine is not None:

        @app.on_before_shutdown.connect
        async def stop_snapshots(app: faust.App, **_: Any) -> None:
            await engine.stop(settle_s=w.tick_interval * 5)

    @app.on_partitions_assigned.connect
    async def joined(app: faust.App, assigned: set[TP], **_: Any) -> None:
        runtime.joined = True

    @app.on_partitions_revoked.connect
    async def forget(app: faust.App, revoked: set[TP], **_: Any) -> None:
        for tp in revoked:
            if ingestion is not None:
                ingestion.forget(tp.topic, tp.partition)
            if engine is not None and tp.topic == s.engine:  # the next owner sends the rest
                await engine.forget(tp.partition, settle_s=w.tick_interval * 5)

    install_routes(app, runtime)  # /healthz, /livez, /readyz, /kpi (agents.web)
    install_wall(app, runtime)  # `/`, `/wall.json` (agents.wall)
    install_metrics(app, runtime)
    return app, runtime


def _parts(
    app: faust.App, runtime: Runtime, bootstrap: str, engine_topic: Any
) -> tuple[Ingest | None, EngineRunner | None, Ticks]:
    """Ingest, the engine runner and the ticks, with the app's topics, table and
    consumer as their collaborators; a worker of one role (`worker.role`) has
    only its own part, and so subscribes to only its own topics (the engine's
    snapshot table's changelog is one of them)."""
    settings = runtime.settings
    s, k, role = settings.topics, settings.kafka, settings.worker.role
    dead_topic = app.topic(s.dead_letter, **RAW)

    def assignment() -> set[TP]:  # looked up each time: the consumer is made on first use
        return assignment_of(app)  # type: ignore[no-any-return]

    tail = Tail(bootstrap, k, runtime.embedded)
    read_back = ReadBack(functools.partial(read_range, bootstrap, k), runtime.skipped)
    marked = functools.partial(mark_read_back, app)
    ticks = Ticks(
        runtime,
        engine_topic=engine_topic,
        assignment=assignment,
        highwater=lambda topic, partition: app.consumer.highwater(TP(topic, partition)),
        clock_us=wall_us,
    )
    ingestion: Ingest | None = None
    engine: EngineRunner | None = None
    if role != "engine":
        ingestion = Ingest(
            settings,
            runtime,
            send=_send_now,
            engine_topic=engine_topic,
            dead_topic=dead_topic,
            assignment=assignment,
            committed=functools.partial(committed_offset, app),
            read_back=read_back,
            sent_before=functools.partial(
                input_sent_before, tail, engine_topic=s.engine, dead_topic=s.dead_letter
            ),
            mark_read_back=marked,
            clock_us=wall_us,
        )
    if role == "ingest":
        return ingestion, engine, ticks
    snapshots = app.Table(
        "snapshots", default=None, partitions=s.engine_partitions, key_type=str, value_type=str
    )
    outputs = runtime.outputs = BatchProducer(
        functools.partial(
            AIOKafkaProducer,
            bootstrap_servers=bootstrap,
            acks="all",
            max_request_size=app.conf.producer_max_request_size,
            max_batch_size=min(MAX_BATCH_BYTES, app.conf.producer_max_request_size),
            **client_options(k),
        )
    )
    engine = EngineRunner(
        settings,
        runtime,
        table=snapshots,
        set_row=functools.partial(set_table_row, snapshots),
        delete_row=functools.partial(delete_table_row, snapshots),
        send=outputs.send,
        windows_topic=app.topic(s.windows, **RAW),
        alerts_topic=app.topic(s.alerts, **RAW),
        dead_topic=dead_topic,
        read_back=read_back,
        lettered=functools.partial(engine_lettered, tail, dead_topic=s.dead_letter),
        mark_read_back=marked,
    )
    return ingestion, engine, ticks


async def _send_now(topic: Any, key: bytes | None, value: bytes, partition: int | None) -> Any:
    """Sent now, not attached to the current event to be published at its commit."""
    return await topic.send(key=key, value=value, partition=partition, force=True)
