"""The Faust app: topics, agents, the snapshot table, timers and web views.

Agents only move bytes: decoding, validation and the dead-letter envelope
are in `agents.pipeline.route`, KPI arithmetic is in `streams`. Agent
concurrency is 1 everywhere (Faust tables and ordering need it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.types import TP

from agents.health import Health, judge, live, ready
from agents.letters import letter_id
from agents.metrics import install_metrics
from agents.outbox import Outbox
from agents.pipeline import (
    Batch,
    Incoming,
    Shard,
    chunks,
    route_batch,
    snapshot_due,
    tick_message,
)
from agents.private_api import (
    committed_offset,
    limit_fetch_wait,
    mark_read_back,
    set_table_row,
)
from agents.progress import EndOffsetWatcher, watch
from agents.refill import RangeUnavailable, read_range
from agents.resume import Tail, engine_lettered, floor_of, input_sent_before
from agents.runtime import Runtime, pipeline_stats
from agents.settings import Settings
from agents.wall import install_wall
from streams.engine import Output
from streams.records import record_key

log = logging.getLogger("kpimon")


def wall_us() -> int:
    return time.time_ns() // 1000


def build_app(settings: Settings, broker_url: str, *, embedded: bool) -> tuple[faust.App, Runtime]:
    s, k, w = settings.topics, settings.kafka, settings.worker
    runtime = Runtime(settings, embedded)
    if embedded:
        from agents.offsets import patch_faust_for_embedded

        patch_faust_for_embedded()
    broker_credentials = None
    if k.sasl_mechanism:
        import ssl

        context = (
            ssl.create_default_context(cafile=k.ssl_cafile)
            if "SSL" in k.security_protocol
            else None
        )
        password = k.sasl_password.get_secret_value() if k.sasl_password else ""
        if k.sasl_mechanism == "PLAIN":
            broker_credentials = faust.SASLCredentials(
                username=k.sasl_username, password=password, ssl_context=context
            )
        else:
            broker_credentials = faust.SASLCredentials(
                username=k.sasl_username,
                password=password,
                ssl_context=context,
                mechanism=k.sasl_mechanism,
            )
    elif k.security_protocol == "SSL":
        import ssl

        broker_credentials = faust.SSLCredentials(ssl.create_default_context(cafile=k.ssl_cafile))

    app = faust.App(
        w.app_id,
        broker=broker_url,
        broker_credentials=broker_credentials,
        store=w.store,
        datadir=w.data_dir,
        web_enabled=True,
        web_bind=w.web_host,
        web_host=w.web_host,
        web_port=w.web_port,
        web_in_thread=False,
        topic_partitions=s.engine_partitions,
        topic_replication_factor=1 if embedded else 3,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=k.session_timeout,
        broker_heartbeat_interval=k.heartbeat_interval,
        broker_rebalance_timeout=k.rebalance_timeout,
        broker_commit_interval=1.0,
        table_standby_replicas=0,
        # Engine input is acknowledged only once a snapshot covers it, so
        # shutdown must not wait for every message to be acked.
        stream_wait_empty=False,
        producer_max_request_size=max(w.max_message_bytes * 2, 2_097_152),
        logging_config=None,
    )
    limit_fetch_wait(app, k.fetch_max_wait)
    bootstrap = broker_url.removeprefix("kafka://").replace(";", ",")
    raw = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    sources = s.sources()
    inputs = app.topic(*sources, **raw)
    engine_topic = app.topic(s.engine, partitions=s.engine_partitions, **raw)
    windows_topic = app.topic(s.windows, **raw)
    alerts_topic = app.topic(s.alerts, **raw)
    dead_topic = app.topic(s.dead_letter, **raw)
    snapshots = app.Table(
        "snapshots",
        default=None,
        partitions=s.engine_partitions,
        key_type=str,
        value_type=str,
    )

    reading_cache: dict[str, Any] = {"assignment": None, "reading": []}

    def reading_inputs() -> list[str]:
        """The assigned input partitions, sorted; sorted again only when they change."""
        assignment = app.consumer.assignment()
        if assignment != reading_cache["assignment"]:
            reading_cache["assignment"] = assignment
            reading_cache["reading"] = sorted(
                f"{tp.topic}:{tp.partition}" for tp in assignment if tp.topic in sources
            )
        return reading_cache["reading"]

    @app.agent(inputs, concurrency=1)
    async def ingest(stream: faust.StreamT) -> None:
        # Batches of whatever arrived within `ingest_within`: one engine-topic
        # message per engine partition instead of one per input message. Ingest
        # writes no table, so take() acknowledging the batch after it is safe.
        async for events in stream.take_events(w.ingest_batch, within=w.ingest_within):
            await forward(events)

    async def send_now(topic: Any, key: bytes | None, value: bytes, partition: int | None) -> Any:
        return await topic.send(key=key, value=value, partition=partition, force=True)

    runtime.ingest_box = Outbox(send_now)
    tail = Tail(bootstrap, k, embedded)

    async def forward(events: list[faust.EventT]) -> None:
        now = wall_us()
        box = runtime.ingest_box
        assert box is not None
        reading = reading_inputs()
        announce = reading if reading != runtime.announced else None
        if announce and s.engine_partitions > 1:
            # Every engine partition must know every input before it
            # trusts any one; the forwards below may reach only some of them.
            told = tick_message(now, dict.fromkeys(reading, False))
            for partition in range(s.engine_partitions):
                await box.put(engine_topic, b"tick", told, partition)
        written: dict[tuple[str, int], float] = {}  # input partition -> oldest write time
        for m in (event.message for event in events):
            tp = (m.topic, m.partition)
            written[tp] = min(written.get(tp, m.timestamp), m.timestamp)
        holes: list[tuple[str, int, int, int]] = []  # read back: (topic, partition, start, stop)
        messages = await contiguous(
            [
                Incoming(m.topic, m.partition, m.offset, m.key, m.value)
                for m in (event.message for event in events)
            ],
            holes,
        )
        if runtime.resumed_at:
            await look_back(written)
        batch = route_batch(
            messages,
            sources=sources,
            wall_us=now,
            engine_partitions=s.engine_partitions,
            max_bytes=w.max_message_bytes,
            max_batch=w.max_batch,
            announce=announce,
            max_future_us=round(w.max_future_skew * 1e6),
            sent_before=runtime.sent_before,
        )
        for partition, value in batch.forwards:
            await box.put(engine_topic, b"events", value, partition)
        if batch.forwards:
            runtime.announced = reading
        held = app.consumer.assignment()  # a rebalance may have taken some away meanwhile
        for msg, routed in batch.routed:
            # Read, as far as the clock ticks tell the engine, once forwarded.
            if TP(msg.topic, msg.partition) in held:
                runtime.ingested[msg.topic, msg.partition] = msg.offset
            if routed.events:
                runtime.last_event_wall[sources[msg.topic]] = now / 1e6
            if routed.dead_letter is not None:
                await box.put(dead_topic, msg.key, routed.dead_letter)
        # Delivered before take() acknowledges the batch: a batch spans input
        # partitions, so Faust's attach-to-the-current-event (publish at
        # commit) would let other partitions' offsets commit before the
        # forward is out, and a crash then would lose it. An output that
        # cannot be delivered holds the batch back (`agents.outbox`).
        runtime.published["resent"] += await box.deliver()
        for hole in holes:  # delivered: committable like the batch's own offsets
            await mark_read_back(app, *hole)
        count(batch)
        if batch.routed:
            runtime.ingest_processed = time.monotonic()

    def count(batch: Batch) -> None:
        """Count a delivered batch: each input offset once, those read again apart."""
        for msg, routed in batch.routed:
            if routed.again:  # counted when it was first read
                runtime.redelivered[msg.topic] += 1
                continue
            runtime.consumed[msg.topic] += 1
            if routed.events:
                runtime.events_in[msg.topic] += routed.events
            if routed.dead_letter is not None:
                runtime.dead_letters[msg.topic, routed.reasons[0]] += 1

    async def look_back(written: dict[tuple[str, int], float]) -> None:
        """Learn what earlier reads of the input partitions read again since their
        assignment forwarded and dead-lettered (`agents.resume`)."""
        resumed, runtime.resumed_at = runtime.resumed_at, {}
        floor_ms = floor_of(min((written[tp] for tp in resumed if tp in written), default=None))
        began = time.monotonic()
        try:
            found = await input_sent_before(
                tail,
                engine_topic=s.engine,
                dead_topic=s.dead_letter,
                resumed=resumed,
                floor_ms=floor_ms,
            )
        except (KafkaError, OSError) as exc:
            log.warning("could not read back what was sent before (%r): it may be sent twice", exc)
            return
        runtime.sent_before.forwarded |= found.forwarded
        runtime.sent_before.lettered |= found.lettered
        log.info(
            "input read again from %s: %s forwards and %s dead letters sent before (%.1f s)",
            resumed,
            len(found.forwarded),
            len(found.lettered),
            time.monotonic() - began,
        )

    async def contiguous(
        messages: list[Incoming], holes: list[tuple[str, int, int, int]]
    ) -> list[Incoming]:
        """The batch with every input partition's offsets following on: a hole
        (offsets the consumer skipped) is read back from the topic and added to
        `holes`, and an offset already forwarded is left out (see `agents.refill`)."""
        out: list[Incoming] = []
        for msg in messages:
            tp = (msg.topic, msg.partition)
            expected = runtime.next_input.get(tp)
            if expected is None:  # the first since assignment: where reading resumed
                expected = committed_offset(app, *tp)
                runtime.resumed_at[tp] = msg.offset if expected is None else expected
            if expected is not None and msg.offset < expected:
                runtime.skipped["ingest", "again"] += 1
                runtime.redelivered[msg.topic] += 1
                continue
            if expected is not None and msg.offset > expected:
                found = await read_back("ingest", msg.topic, msg.partition, expected, msg.offset)
                out += [Incoming(msg.topic, msg.partition, *item) for item in found]
                holes.append((msg.topic, msg.partition, expected, msg.offset))
            out.append(msg)
            runtime.next_input[tp] = msg.offset + 1
        return out

    async def read_back(stage: str, topic: str, partition: int, start: int, stop: int) -> Any:
        """Offsets start..stop-1 the consumer did not hand over, read from the topic
        (see `agents.refill`): [(offset, key, value)], counted as refilled or lost."""
        log.warning(
            "%s:%s: offsets %s to %s were not handed over by the consumer; reading them back",
            topic,
            partition,
            start,
            stop - 1,
        )
        found: list[tuple[int, bytes | None, bytes | None]] = []
        try:
            async for item in read_range(bootstrap, k, topic, partition, start, stop):
                found.append(item)
        except RangeUnavailable as exc:
            lost = stop - start - len(found)
            runtime.skipped[stage, "lost"] += lost
            log.error("%s:%s: %s; up to %s messages lost", topic, partition, exc, lost)
        if found:
            runtime.skipped[stage, "refilled"] += len(found)
        return found

    def load_shard(partition: int) -> Shard:
        shard = runtime.shards.get(partition)
        if shard is not None:
            return shard
        idle_us = round(w.idle_advance_after * 1e6)
        manifest = snapshots.get(f"{partition}/manifest")
        name = f"{s.engine}:{partition}"
        if manifest is None:
            shard = Shard(settings.engine, idle_us, name)
        else:
            slot, count = manifest.split(":")
            data = "".join(snapshots[f"{partition}/{slot}/{i}"] for i in range(int(count))).encode()
            shard = Shard.from_bytes(settings.engine, idle_us, data, name)
            log.info("partition %s restored at offset %s", partition, shard.next_offset)
        runtime.shards[partition] = shard
        runtime.unacked[partition] = []
        runtime.snapshot_at[partition] = time.monotonic()
        runtime.snapshot_s[partition] = 0.0
        return shard

    def save_shard(partition: int, shard: Shard) -> list[Any]:
        """Write chunks to the slot not in use, then switch the manifest (one row).

        Returns the rows' changelog deliveries. A table assignment only puts
        its changelog record in Faust's producer buffer, and neither an offset
        commit nor `producer.flush()` (which gives up on the buffer after
        0.1 s without a send) waits for it: the deliveries are awaited instead.
        """
        manifest = snapshots.get(f"{partition}/manifest")
        slot = "b" if manifest is not None and manifest.startswith("a") else "a"
        parts = chunks(shard.to_bytes().decode())
        rows = [(f"{partition}/{slot}/{i}", part) for i, part in enumerate(parts)]
        rows.append((f"{partition}/manifest", f"{slot}:{len(parts)}"))
        # `snapshots[key] = value`, keeping each row's changelog delivery.
        return [set_table_row(snapshots, partition, key, value) for key, value in rows]

    async def send_out(topic: Any, key: bytes | None, value: bytes, partition: int | None) -> Any:
        return await topic.send(key=key, value=value, partition=partition)

    async def publish(partition: int, out: Output | None) -> None:
        if out is None:
            return
        box = runtime.outboxes.setdefault(partition, Outbox(send_out))
        for record in out.records:
            await box.put(windows_topic, record_key(record).encode(), _json(record))
        runtime.published["records"] += len(out.records)
        for alert in out.alerts:
            await box.put(alerts_topic, alert["alert_id"].encode(), _json(alert))
        runtime.published["alerts"] += len(out.alerts)
        sent_before = runtime.engine_letters.get(partition)
        for topic, reason, value in out.dead_letters:  # events the engine refused
            where = letter_id(value) if sent_before else None
            if where is not None and (where[3], where[4]) in sent_before:  # type: ignore[operator]
                continue  # sent, and counted, before a restart or rebalance
            await box.put(dead_topic, None, value)
            runtime.dead_letters[topic, reason] += 1

    async def engine_resumed(partition: int, shard: Shard, msg: Any) -> None:
        """The refusals an earlier owner of the engine partition sent for the
        offsets it is restored at and beyond (`agents.resume`)."""
        resumed = shard.next_offset
        # Refilled messages before this one were written earlier: no floor then.
        floor_ms = floor_of(msg.timestamp) if msg.offset <= resumed else 0
        try:
            found = await engine_lettered(
                tail,
                dead_topic=s.dead_letter,
                engine=(s.engine, partition),
                resumed=resumed,
                floor_ms=floor_ms,
            )
        except (KafkaError, OSError) as exc:
            log.warning("could not read back the refusals sent before (%r): sent twice maybe", exc)
            found = set()
        runtime.engine_letters[partition] = found
        log.info(
            "engine partition %s resumed at offset %s: %s refusals sent before",
            partition,
            resumed,
            len(found),
        )

    async def refill(partition: int, shard: Shard, upto: int) -> None:
        """Apply the engine messages from the shard's next offset up to `upto`,
        which the consumer handed over instead: a restored snapshot older than
        the committed offset, or messages it skipped."""
        start = shard.next_offset
        for offset, _, value in await read_back(
            "engine", s.engine, partition, shard.next_offset, upto
        ):
            await publish(partition, shard.apply(offset, value or b"{}"))
        # Committable once a snapshot covers them, like the offsets handed over.
        runtime.read_back.setdefault(partition, []).append((start, upto))
        shard.next_offset = upto  # what could not be read back is lost (counted)

    @app.agent(engine_topic, concurrency=1)
    async def run_engine(stream: faust.StreamT) -> None:
        manual = stream.noack()
        async for event in manual.events():
            msg = event.message
            shard = load_shard(msg.partition)
            if msg.partition not in runtime.engine_letters:
                await engine_resumed(msg.partition, shard, msg)
            if msg.offset > shard.next_offset:
                await refill(msg.partition, shard, msg.offset)
            await publish(msg.partition, shard.apply(msg.offset, msg.value))
            runtime.engine_applied = time.monotonic()
            if msg.key == b"tick":
                runtime.last_tick_seen = runtime.engine_applied
            runtime.unacked[msg.partition].append(event)
            if snapshot_due(
                time.monotonic() - runtime.snapshot_at[msg.partition],
                runtime.snapshot_s[msg.partition],
                w.snapshot_interval,
            ):
                began = time.monotonic()
                delivered = save_shard(msg.partition, shard)
                runtime.snapshot_at[msg.partition] = time.monotonic()
                runtime.snapshot_s[msg.partition] = runtime.snapshot_at[msg.partition] - began
                # The snapshot, and the outputs sent so far, are delivered before
                # the offsets they cover are acknowledged: a crash in between
                # would restore an older snapshot past a committed offset, or
                # never send an output again.
                await asyncio.gather(*delivered)
                if msg.partition in runtime.outboxes:
                    runtime.published["resent"] += await runtime.outboxes[msg.partition].deliver()
                pending, runtime.unacked[msg.partition] = runtime.unacked[msg.partition], []
                for done in pending:
                    await manual.ack(done)
                for start, stop in runtime.read_back.pop(msg.partition, ()):
                    await mark_read_back(app, s.engine, msg.partition, start, stop)

    def assigned_inputs() -> list[tuple[str, int]]:
        return sorted(
            (tp.topic, tp.partition) for tp in app.consumer.assignment() if tp.topic in sources
        )

    async def input_progress() -> dict[str, bool]:
        """Assigned input partitions -> caught up (see `agents.progress`)."""
        now = time.monotonic()
        max_age = max(5.0, 4 * w.tick_interval)
        return {
            f"{topic}:{partition}": runtime.input_ends.caught_up(
                (topic, partition),
                runtime.ingested.get((topic, partition)),
                app.consumer.highwater(TP(topic, partition)),
                now=now,
                max_age=max_age,
            )
            for topic, partition in assigned_inputs()
        }

    @app.task
    async def watch_input_ends() -> None:
        watcher = EndOffsetWatcher(
            bootstrap,
            k,
            app.conf.id,  # Faust's consumer group
            embedded=embedded,
        )
        await watch(watcher, assigned_inputs, runtime.input_ends, w.tick_interval)

    def tick_delivered(delivery: asyncio.Future[Any]) -> None:
        if not delivery.cancelled() and delivery.exception() is None:
            runtime.last_tick_delivered = time.monotonic()

    @app.timer(w.tick_interval)
    async def tick() -> None:
        progress = await input_progress()
        read = {f"{topic}:{partition}": o for (topic, partition), o in runtime.ingested.items()}
        runtime.ingest_progress.observe(time.monotonic(), progress, read)
        value = tick_message(wall_us(), progress)
        for partition in range(s.engine_partitions):
            sent = await engine_topic.send(key=b"tick", value=value, partition=partition)
            if isinstance(sent, asyncio.Future):  # acknowledged by the broker: for /healthz
                sent.add_done_callback(tick_delivered)

    @app.on_partitions_assigned.connect
    async def joined(app: faust.App, assigned: set[TP], **_: Any) -> None:
        runtime.joined = True

    @app.on_partitions_revoked.connect
    async def forget(app: faust.App, revoked: set[TP], **_: Any) -> None:
        for tp in revoked:
            # Reading resumes at the committed offset when it comes back.
            runtime.ingested.pop((tp.topic, tp.partition), None)
            runtime.next_input.pop((tp.topic, tp.partition), None)
            runtime.input_ends.starts.pop((tp.topic, tp.partition), None)
            runtime.resumed_at.pop((tp.topic, tp.partition), None)
            runtime.sent_before.forget(tp.topic, tp.partition)
            if tp.topic == s.engine:
                runtime.engine_letters.pop(tp.partition, None)
                runtime.shards.pop(tp.partition, None)
                runtime.unacked.pop(tp.partition, None)
                runtime.read_back.pop(tp.partition, None)
                box = runtime.outboxes.pop(tp.partition, None)  # the next owner sends the rest
                if box is not None:
                    # Sent ones on the topic first: the next owner (maybe this worker
                    # again) reads back the refusals there and sends them once.
                    await box.settle(w.tick_interval * 5)

    health_limit_s = max(10.0, 5 * w.tick_interval)

    def healthy(now: float, assignment: Any) -> Health:
        # Holding engine partitions: healthy while the clock ticks make the round
        # trip through the broker back into the engine (a lost broker or a stuck
        # engine shows here). Holding none: no tick comes back, so ticks delivered
        # and ingest keeping up instead (see `agents.health`).
        undelivered = runtime.undelivered_reason()
        health = judge(
            now,
            health_limit_s,
            holds_engine=any(tp.topic == s.engine for tp in assignment),
            tick_seen=runtime.last_tick_seen,
            joined=runtime.joined,
            tick_delivered=runtime.last_tick_delivered,
            ingest=runtime.ingest_progress,
        )
        if undelivered is not None:  # whatever else holds: nothing after it is acknowledged
            health = Health(False, health.basis, undelivered)
        return health

    def answer(web: Any, health: Health, assignment: Any) -> Any:
        body = {
            "status": "ok" if health.healthy else "unhealthy",
            "reason": health.reason,
            "basis": health.basis,
            "partitions": sorted(runtime.shards),
            "inputs": sorted(
                f"{tp.topic}:{tp.partition}" for tp in assignment if tp.topic in sources
            ),
        }
        return web.json(body, status=200 if health.healthy else 503)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        assignment = app.consumer.assignment()
        return answer(web, healthy(time.monotonic(), assignment), assignment)

    @app.page("/livez")
    async def livez(web: Any, request: Any) -> Any:
        # For liveness probes: progress, however slow (a flood), not promptness.
        assignment = app.consumer.assignment()
        health = live(
            time.monotonic(),
            health_limit_s,
            joined=runtime.joined,
            rebalancing=bool(app.rebalancing or app.in_recovery),
            holds_engine=any(tp.topic == s.engine for tp in assignment),
            engine_applied=runtime.engine_applied,
            ingest_processed=runtime.ingest_processed,
            tick_delivered=runtime.last_tick_delivered,
            ingest=runtime.ingest_progress,
        )
        return answer(web, health, assignment)

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        # For readiness probes and rollouts: healthy and caught up with its inputs.
        assignment = app.consumer.assignment()
        now = time.monotonic()
        health = ready(now, health_limit_s, healthy(now, assignment), runtime.ingest_progress)
        return answer(web, health, assignment)

    @app.page("/kpi")
    async def kpi(web: Any, request: Any) -> Any:
        return web.json({"shards": runtime.views(), "pipeline": pipeline_stats(runtime)})

    install_wall(app, runtime)  # `/`, `/wall.json` (agents.wall)
    install_metrics(app, runtime)
    return app, runtime


def _json(obj: dict[str, Any]) -> bytes:
    import orjson

    return orjson.dumps(obj)
