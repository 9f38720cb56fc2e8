"""The engine's outputs sent as one record batch per partition, not one `send` a record.

A window close publishes a record per machine, line, site and segment: about
1,150 records a minute at 1,000 machines. Through Faust's `topic.send` each
costs about 21 µs (Faust's message and future, aiokafka's partitioner and
accumulator); aiokafka's `send_batch` takes a whole partition's records at
once. `BatchProducer.send` keeps the `agents.outbox.Send` signature, so the
outbox's delivery checks and resends are unchanged: each message is queued
for its partition and gets a future of its own; once the sender yields to
the event loop (the end of a publish step) every queued message goes out,
a record batch per partition (more if one is full), and each future is
settled by its batch's delivery.

The producer's batches are up to `MAX_BATCH_BYTES` (aiokafka's default is
16 KiB: a close's records at 1,000 machines would be 50 batches sent one
after the other), and one flush runs at a time.

The partition of a keyed message is the one aiokafka's default partitioner
gives (Kafka's murmur2 of the key, as Faust and the Java client choose it),
so a window's records land where `topic.send` put them; a message without a
key goes to any partition, as before. The producer is kpimon's own aiokafka
client with the worker's connection settings (TLS, SASL), started on first
use and stopped with the worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

log = logging.getLogger("kpimon")

MAX_BATCH_BYTES = 1_048_576
"""`max_batch_size` of the producer `BatchProducer` is given (within `max_request_size`)."""

KEY_CACHE = 65_536
"""Partitions remembered by key (records of a machine repeat every window)."""

STOP_GRACE_S = 5.0
"""How long `stop` waits for the queued batches and then for aiokafka's own
stop: with the broker away either would wait out the 40 s request timeout.
What is not delivered by then is sent by the partition's next owner, which
restores the snapshot and resends its undelivered outputs."""

Queued = tuple[bytes | None, bytes, "asyncio.Future[Any]"]


class BatchProducer:
    """`send(topic, key, value, partition)` -> the message's delivery future;
    sent a record batch per partition per event-loop turn."""

    def __init__(self, make_producer: Callable[[], AIOKafkaProducer]) -> None:
        self._make_producer = make_producer
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._sending = asyncio.Lock()
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._by_key: dict[tuple[str, bytes], int] = {}
        self._queued: dict[tuple[str, int], list[Queued]] = {}
        self._flushing: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._stopped = False
        self.batches = 0
        """Record batches sent so far."""

    async def send(
        self, topic: Any, key: bytes | None, value: bytes, partition: int | None
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        delivery: asyncio.Future[Any] = loop.create_future()
        if self._stopped:  # the worker is stopping: not sent (the next owner sends it)
            delivery.set_exception(_stopped())
            return delivery
        producer = await self._started()
        name = topic if isinstance(topic, str) else topic.get_topic_name()
        if partition is None:
            partition = await self._partition(producer, name, key)
        self._queued.setdefault((name, partition), []).append((key, value, delivery))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_soon)
        return delivery

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Send what is queued and stop the producer, waiting at most `grace_s`
        for each; deliveries still open then fail. Later sends fail at once."""
        self._stopped = True
        try:
            await asyncio.wait_for(self.flush(), grace_s)
        except TimeoutError:
            log.warning(
                "outputs not delivered within %.0f s of stopping: the next owner sends them",
                grace_s,
            )
        for messages in self._queued.values():
            _settle([delivery for _, _, delivery in messages], None, _stopped())
        self._queued = {}
        for task in list(self._flushing):
            task.cancel()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                await asyncio.wait_for(producer.stop(), grace_s)
            except TimeoutError:
                log.warning("the output producer did not stop within %.0f s", grace_s)

    async def flush(self) -> None:
        """Send what is queued now and wait until every batch sent so far is handed over."""
        self._scheduled = False
        await self._send_queued()
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)

    # -- inside ---------------------------------------------------------------
    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._starting:
                if self._producer is None:
                    producer = self._make_producer()
                    await producer.start()
                    self._producer = producer
        return self._producer

    async def _partition(self, producer: AIOKafkaProducer, name: str, key: bytes | None) -> int:
        partitions = self._partitions.get(name)
        if partitions is None:
            partitions = self._partitions[name] = sorted(await producer.partitions_for(name))
        if key is None:
            return int(self._partitioner(None, partitions, partitions))
        found = self._by_key.get((name, key))
        if found is None:
            if len(self._by_key) >= KEY_CACHE:
                self._by_key.clear()
            found = self._by_key[name, key] = int(self._partitioner(key, partitions, partitions))
        return found

    def _flush_soon(self) -> None:
        self._scheduled = False
        task = asyncio.ensure_future(self._send_queued())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _send_queued(self) -> None:
        # One flush at a time, in the order they were scheduled: aiokafka takes
        # a partition's next batch only once its last one is drained, and
        # concurrent senders of a partition wait each other out into
        # `KafkaTimeoutError` (seen at 1,000 machines before this lock).
        async with self._sending:
            queued, self._queued = self._queued, {}
            if not queued:
                return
            try:
                await self._send_all(await self._started(), queued)
            except asyncio.CancelledError:  # a stop that waited long enough
                for messages in queued.values():
                    _settle([delivery for _, _, delivery in messages], None, _stopped())
                raise

    async def _send_all(
        self, producer: AIOKafkaProducer, queued: dict[tuple[str, int], list[Queued]]
    ) -> None:
        for (name, partition), messages in queued.items():
            batch, members = producer.create_batch(), []
            for key, value, delivery in messages:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    if members:  # full: send it and start the next
                        await self._send_batch(producer, batch, name, partition, members)
                        batch, members = producer.create_batch(), []
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        delivery.set_exception(ValueError(f"{len(value)} bytes: over a batch"))
                        continue
                members.append(delivery)
            if members:
                await self._send_batch(producer, batch, name, partition, members)

    async def _send_batch(
        self,
        producer: AIOKafkaProducer,
        batch: Any,
        name: str,
        partition: int,
        members: list[asyncio.Future[Any]],
    ) -> None:
        self.batches += 1
        try:
            delivered = await producer.send_batch(batch, name, partition=partition)
        except Exception as exc:  # noqa: BLE001 (any broker error: the outbox resends)
            _settle(members, None, exc)
            return
        delivered.add_done_callback(lambda done: _settle(members, done, None))


def _stopped() -> RuntimeError:
    return RuntimeError("the output producer is stopped")


def _settle(
    members: list[asyncio.Future[Any]], done: asyncio.Future[Any] | None, error: Exception | None
) -> None:
    if error is None and done is not None:
        error = done.exception() if not done.cancelled() else RuntimeError("delivery cancelled")
    result = None if error is not None or done is None else done.result()
    for delivery in members:
        if delivery.done():
            continue
        if error is not None:
            delivery.set_exception(error)
        else:
            delivery.set_result(result)
