"""The engine partitions a worker holds: apply, publish, snapshot, acknowledge.

The run_engine agent of `agents.app` hands every engine-topic event to
`EngineRunner.step`. An engine partition's `Shard` is loaded from the
snapshot table rows the first time one of its messages arrives; after a
resume, the refusals an earlier owner sent are read back (so none is sent
twice), and offsets the consumer did not hand over are refilled from the
topic. Each message's outputs go to an outbox; once a snapshot is due it is
written to the table, and only after the snapshot and the outputs so far are
delivered are the covered offsets acknowledged and the refilled ranges marked
committable. The collaborators (the table, its row writes, the send, the
read-back, the refusals' look-back, the range marking) are passed in, so all
of it is testable with fakes, without Faust.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from agents import snapshot_rows
from agents.letters import letter_id
from agents.outbox import Outbox, Send, Sending
from agents.pipeline import Shard, snapshot_due
from agents.read_back import ReadBack
from agents.resume import floor_of
from agents.runtime import Runtime
from agents.settings import Settings
from streams.engine import Output
from streams.records import record_key

log = logging.getLogger("kpimon")

PLAN_SLICE_S = 0.005
"""A snapshot's plan returns to the event loop after holding it this long (`plan_shard`).

Each return gives every other task one step; taking a fetched message to the
engine topic takes several (the consumer thread's hand-over, ingest's batch
timer, the producer's request and its answer). The bench's latency phase
alone (8,400 ev/s, 30 s, p99 of the time to the engine): 0.543, 0.453,
0.552, 0.557 s at 20 ms; 0.411, 0.383 s at 5 ms; 0.453, 0.291 s at 0 (a
return after every section)."""


class EngineRunner:
    """Runs the engine partitions this worker holds; keeps their state in `runtime`.

    `table` holds the snapshot rows (`get`, `[]`); `set_row(partition, key,
    value)` writes one and returns its changelog delivery; `lettered(engine=,
    resumed=, floor_ms=)` gives the (offset, index) of the refusals sent
    before (`agents.resume`); `mark_read_back(topic, partition, start, stop)`
    lets the consumer commit past a range read back; `delete_row(partition,
    key)` deletes a row no manifest references any more (the app passes
    `agents.private_api.delete_table_row`; by default `del table[key]`).

    A snapshot writes only the sections whose content changed
    (`agents.snapshot_rows`); `live` holds, per partition, the rows the last
    delivered manifest references, `rows` every row known to be in the table.
    """

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        *,
        table: Mapping[str, str],
        set_row: Callable[[int, str, str], Awaitable[Any]],
        send: Send,
        windows_topic: Any,
        alerts_topic: Any,
        dead_topic: Any,
        read_back: ReadBack,
        lettered: Callable[..., Awaitable[set[tuple[int, int]]]],
        mark_read_back: Callable[[str, int, int, int], Awaitable[None]],
        delete_row: Callable[[int, str], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.table = table
        self.set_row = set_row
        self.send = send
        self.windows_topic = windows_topic
        self.alerts_topic = alerts_topic
        self.dead_topic = dead_topic
        self.read_back = read_back
        self.lettered = lettered
        self.mark_read_back = mark_read_back
        self.engine_topic = settings.topics.engine
        self.delete_row = delete_row or self._del_row
        self.live: dict[int, set[str]] = {}
        self.rows: dict[int, set[str]] = {}
        self.pending: dict[int, set[str]] = {}  # referenced by a manifest not yet delivered
        self.written_bytes: dict[int, int] = {}  # by the last snapshot, per partition
        self.in_flight: dict[int, asyncio.Future[None]] = {}  # delivery, then acks (`snapshot`)
        self.memos: dict[int, snapshot_rows.Memo] = {}  # sections the last plan made
        self.forgetting: set[int] = set()  # revoked, `forget` not done: no snapshot starts
        self.stopping = False  # the worker stops (`stop`): no snapshot starts, no row deleted
        self.deleting: set[asyncio.Future[Any]] = set()  # row deletes not yet delivered

    async def step(self, event: Any, ack: Callable[[Any], Awaitable[Any]]) -> None:
        """Apply one engine-topic event (its `message`), publish what it gives,
        and snapshot when due; `ack(event)` acknowledges what a snapshot covers,
        once it is delivered (`snapshot`)."""
        rt, msg = self.runtime, event.message
        shard = self.load_shard(msg.partition)
        if msg.partition not in rt.engine_letters:
            await self.resumed(msg.partition, shard, msg)
        if msg.offset > shard.next_offset:
            await self.refill(msg.partition, shard, msg.offset)
        await self.publish(msg.partition, shard.apply(msg.offset, msg.value), shard)
        if self.revoked(msg.partition, shard):
            return  # meanwhile: nothing put out, not acknowledged; the next owner applies it
        rt.engine_applied = time.monotonic()
        if msg.key == b"tick":
            rt.last_tick_seen = rt.engine_applied
        rt.unacked[msg.partition].append(event)
        if snapshot_due(
            time.monotonic() - rt.snapshot_at[msg.partition],
            rt.snapshot_s[msg.partition],
            self.settings.worker.snapshot_interval,
        ):
            await self.snapshot(msg.partition, shard, ack)

    async def snapshot_and_ack(
        self, partition: int, shard: Shard, ack: Callable[[Any], Awaitable[Any]]
    ) -> None:
        """Write a snapshot now; wait for its delivery and the acknowledgements."""
        await self.snapshot(partition, shard, ack)
        await self.settled(partition)

    async def snapshot(
        self, partition: int, shard: Shard, ack: Callable[[Any], Awaitable[Any]]
    ) -> None:
        """Write a snapshot; its delivery, then the acknowledgement of the offsets
        it covers, go on beside the engine's next steps (`settled` waits for them).

        One snapshot is in flight per partition: the next one waits for the
        last one's delivery, since what it writes is planned against the rows
        the last delivered manifest references.
        """
        await self.settled(partition)
        rt = self.runtime
        if self.stopping or partition in self.forgetting or self.revoked(partition, shard):
            return  # revoked or stopping: nothing written, the next owner goes on
        planned, held_s = await self.plan_shard(partition, shard)
        if self.stopping or self.revoked(partition, shard):
            return  # revoked (forget has dropped the shard) or stopping while planned
        began = time.monotonic()
        delivered = self.write_planned(partition, planned)
        rt.snapshot_at[partition] = time.monotonic()
        rt.snapshot_s[partition] = held_s + rt.snapshot_at[partition] - began  # the loop held
        box = rt.outboxes.get(partition)
        covered = list(rt.unacked[partition])  # leave it once acknowledged
        self.in_flight[partition] = asyncio.ensure_future(
            self._acknowledge(
                partition,
                delivered,
                box,
                box.take() if box else [],
                covered,
                rt.read_back.pop(partition, []),
                ack,
            )
        )

    def revoked(self, partition: int, shard: Shard) -> bool:
        """Whether `shard` is no longer the partition's (`forget` dropped it):
        a step that waited across a revocation stops at its next look."""
        return self.runtime.shards.get(partition) is not shard

    async def settled(self, partition: int) -> None:
        """Wait for the partition's snapshot in flight, if any (raising what it
        raised; one that `forget` gave up is over). It stays in `in_flight`
        while waited for, so a revocation meanwhile waits for it too."""
        task = self.in_flight.get(partition)
        if task is None:
            return
        await asyncio.wait({task})
        if self.in_flight.get(partition) is task:
            del self.in_flight[partition]
        if not task.cancelled():
            task.result()

    async def _acknowledge(
        self,
        partition: int,
        delivered: list[Awaitable[Any]],
        box: Outbox | None,
        sent: list[Sending],
        covered: list[Any],
        read_back: list[tuple[int, int]],
        ack: Callable[[Any], Awaitable[Any]],
    ) -> None:
        # The snapshot, and the outputs sent before it, are delivered before
        # the offsets they cover are acknowledged: a crash in between
        # would restore an older snapshot past a committed offset, or
        # never send an output again.
        if delivered:
            # `wait`, not `gather`: a cancelled wait (`forget`, `stop`) leaves
            # the deliveries be; cancelling them would not take the rows out
            # of Faust's producer buffer, whose later send then meets a
            # cancelled future.
            await asyncio.wait(delivered)  # type: ignore[arg-type]
            for delivery in delivered:
                delivery.result()  # type: ignore[attr-defined]
        self.collect(partition)
        if box is not None:
            self.runtime.published["resent"] += await box.deliver(sent)
        for done in covered:
            await ack(done)
        unacked = self.runtime.unacked.get(partition)
        if unacked is not None:  # the events after them stay
            del unacked[: len(covered)]
        for start, stop in read_back:
            await self.mark_read_back(self.engine_topic, partition, start, stop)

    def load_shard(self, partition: int) -> Shard:
        rt = self.runtime
        shard = rt.shards.get(partition)
        if shard is not None:
            return shard
        idle_us = round(self.settings.worker.idle_advance_after * 1e6)
        manifest = self.table.get(snapshot_rows.manifest_key(partition))
        name = f"{self.engine_topic}:{partition}"
        referenced: set[str] = set()
        if manifest is None:
            shard = Shard(self.settings.engine, idle_us, name)
        elif snapshot_rows.is_sectioned(manifest):
            sections, referenced = snapshot_rows.read_sections(self.table, partition, manifest)
            shard = Shard.from_sections(self.settings.engine, idle_us, sections, name)
        else:  # the whole state in one slot, as a worker before sections wrote it
            data, _ = snapshot_rows.read_slot(self.table, partition, manifest)
            shard = Shard.from_bytes(self.settings.engine, idle_us, data, name)
        if manifest is not None:
            log.info("partition %s restored at offset %s", partition, shard.next_offset)
        # Rows of a snapshot never completed, or of the older form: deleted
        # once a manifest of this worker is delivered.
        self.live[partition] = referenced
        self.rows[partition] = snapshot_rows.rows_of(self.table, partition)
        self.pending.pop(partition, None)
        self.memos.pop(partition, None)
        rt.shards[partition] = shard
        rt.unacked[partition] = []
        rt.snapshot_at[partition] = time.monotonic()
        rt.snapshot_s[partition] = 0.0
        return shard

    async def plan_shard(self, partition: int, shard: Shard) -> tuple[snapshot_rows.Planned, float]:
        """The rows `save_shard` writes, planned a section at a time, returning
        to the event loop each time the plan has held it `PLAN_SLICE_S`: the
        ingest agent, the pages and the ticks go on meanwhile (at 400,000
        events of the bench mix one plan held the loop 0.1-0.35 s). Nothing
        changes the state meanwhile: only this agent does, and it waits here.
        (The cyclic collector stays paused meanwhile, for the whole process:
        `Shard.iter_sections`.) Returns the plan and the seconds it held the loop."""
        planner = snapshot_rows.Planner(
            partition, self.live.setdefault(partition, set()), self.memos.get(partition)
        )
        held_s = 0.0
        began = time.monotonic()
        with contextlib.closing(shard.iter_sections(tokened=True)) as sections:
            for name, data in sections:
                planner.add(name, data)
                held = time.monotonic() - began
                if held >= PLAN_SLICE_S:
                    held_s += held
                    await asyncio.sleep(0)
                    began = time.monotonic()
        planned = planner.finish()
        return planned, held_s + time.monotonic() - began

    def save_shard(self, partition: int, shard: Shard) -> list[Awaitable[Any]]:
        """Plan and write a snapshot in one synchronous step, for callers outside
        the worker's loop (tests); the worker snapshots through `plan_shard`,
        which plans the same rows, and `write_planned`."""
        planned = snapshot_rows.plan(
            partition,
            shard.iter_sections(tokened=True),
            self.live.setdefault(partition, set()),
            self.memos.get(partition),
        )
        return self.write_planned(partition, planned)

    def write_planned(self, partition: int, planned: snapshot_rows.Planned) -> list[Awaitable[Any]]:
        """Write the sections whose content changed, then switch the manifest
        (one row); `collect` deletes what it no longer references once delivered.

        Returns the rows' changelog deliveries. A table assignment only puts
        its changelog record in Faust's producer buffer, and neither an offset
        commit nor `producer.flush()` (which gives up on the buffer after
        0.1 s without a send) waits for it: the deliveries are awaited instead.
        """
        self.memos[partition] = planned.memo
        self.pending[partition] = planned.referenced
        self.rows.setdefault(partition, set()).update(key for key, _ in planned.rows[:-1])
        self.written_bytes[partition] = planned.bytes_written
        # `snapshots[key] = value`, keeping each row's changelog delivery.
        return [self.set_row(partition, key, value) for key, value in planned.rows]

    def collect(self, partition: int) -> None:
        """The manifest last saved is delivered: delete the rows it does not
        reference (the manifest before it is never read again)."""
        referenced = self.pending.pop(partition, None)
        if referenced is None:
            return
        self.live[partition] = referenced
        if self.stopping:
            return  # the rows stay known: the next owner deletes them (`load_shard`)
        stale = self.rows.get(partition, set()) - referenced
        self.rows[partition] = set(referenced)
        for key in sorted(stale):
            try:
                deleted = self.delete_row(partition, key)
            except (KeyError, TypeError, RuntimeError) as exc:  # kept; tried again next time
                log.warning("snapshot row %s not deleted yet (%r)", key, exc)
                self.rows[partition].add(key)
                continue
            if isinstance(deleted, asyncio.Future) and not deleted.done():
                self.deleting.add(deleted)  # `stop` waits for it
                deleted.add_done_callback(self.deleting.discard)

    def _del_row(self, partition: int, key: str) -> None:
        del self.table[key]  # type: ignore[attr-defined]

    async def publish(self, partition: int, out: Output | None, shard: Shard) -> None:
        """Put `shard`'s outputs out; nothing once its partition was revoked
        (`forget`): the next owner sends them, and its refusals once."""
        rt = self.runtime
        if out is None or self.revoked(partition, shard):
            return
        box = rt.outboxes.setdefault(partition, Outbox(self.send))
        for record in out.records:
            await box.put(self.windows_topic, record_key(record).encode(), orjson.dumps(record))
        rt.published["records"] += len(out.records)
        for alert in out.alerts:
            await box.put(self.alerts_topic, alert["alert_id"].encode(), orjson.dumps(alert))
        rt.published["alerts"] += len(out.alerts)
        sent_before = rt.engine_letters.get(partition)
        for topic, reason, value in out.dead_letters:  # events the engine refused
            where = letter_id(value) if sent_before else None
            if where is not None and (where[3], where[4]) in sent_before:  # type: ignore[operator]
                continue  # sent, and counted, before a restart or rebalance
            await box.put(self.dead_topic, None, value)
            rt.dead_letters[topic, reason] += 1

    async def resumed(self, partition: int, shard: Shard, msg: Any) -> None:
        """The refusals an earlier owner of the engine partition sent for the
        offsets it is restored at and beyond (`agents.resume`)."""
        resumed = shard.next_offset
        # Refilled messages before this one were written earlier: no floor then.
        floor_ms = floor_of(msg.timestamp) if msg.offset <= resumed else 0
        try:
            found = await self.lettered(
                engine=(self.engine_topic, partition), resumed=resumed, floor_ms=floor_ms
            )
        except (KafkaError, OSError) as exc:
            log.warning("could not read back the refusals sent before (%r): sent twice maybe", exc)
            found = set()
        if self.revoked(partition, shard):
            return  # revoked meanwhile (`forget`)
        self.runtime.engine_letters[partition] = found
        log.info(
            "engine partition %s resumed at offset %s: %s refusals sent before",
            partition,
            resumed,
            len(found),
        )

    async def refill(self, partition: int, shard: Shard, upto: int) -> None:
        """Apply the engine messages from the shard's next offset up to `upto`,
        which the consumer handed over instead: a restored snapshot older than
        the committed offset, or messages it skipped."""
        start = shard.next_offset
        for offset, _, value in await self.read_back(
            "engine", self.engine_topic, partition, shard.next_offset, upto
        ):
            await self.publish(partition, shard.apply(offset, value or b"{}"), shard)
        if self.revoked(partition, shard):
            return  # revoked meanwhile (`forget`)
        # Committable once a snapshot covers them, like the offsets handed over.
        self.runtime.read_back.setdefault(partition, []).append((start, upto))
        shard.next_offset = upto  # what could not be read back is lost (counted)

    async def stop(self, settle_s: float) -> None:
        """The worker stops: from here no snapshot is written and no row deleted;
        the snapshots in flight and the row deletes under way have `settle_s`
        to be delivered (and the snapshots' offsets acknowledged).

        Called before Faust flushes and stops its producer (`App.on_stop` sends
        `on_before_shutdown` first). A row write still in the producer's buffer
        when the producer has stopped crashes the worker on its way out (the
        buffer's sender meets `NotReady`, exit code 1), so nothing is put
        there after this, and what is there already is waited for. A write the
        broker does not take within `settle_s` still ends the worker so (the
        snapshot then is not acknowledged: the next owner applies its
        messages again from the last delivered one).
        """
        self.stopping = True
        snapshots = set(self.in_flight.values())
        deletes = set(self.deleting)
        if not snapshots and not deletes:
            return
        _, late = await asyncio.wait(snapshots | deletes, timeout=settle_s)
        given_up = late & snapshots
        for task in given_up:
            task.cancel()
        if given_up:
            await asyncio.wait(given_up)
        if late:
            log.warning(
                "the worker stops with %s snapshot(s) not acknowledged and %s row delete(s) "
                "not delivered after %.1f s",
                len(given_up),
                len(late & deletes),
                settle_s,
            )

    async def forget(self, partition: int, settle_s: float) -> None:
        """Drop a revoked engine partition's state; the next owner sends the rest."""
        began = time.monotonic()
        # From here no snapshot of the partition starts or is written: one
        # due in a step meanwhile would write after (and over) what the
        # next owner restores.
        self.forgetting.add(partition)
        try:
            await self._forget(partition, settle_s, began)
        finally:
            self.forgetting.discard(partition)

    async def _forget(self, partition: int, settle_s: float, began: float) -> None:
        rt = self.runtime
        task = self.in_flight.pop(partition, None)
        if task is not None:  # its deliveries first, as below; acknowledged if in time
            done, _ = await asyncio.wait({task}, timeout=settle_s)
            if not done:
                task.cancel()
            elif not task.cancelled() and task.exception() is not None:
                log.warning(
                    "snapshot of partition %s not delivered (%r)", partition, task.exception()
                )
        settle_s = max(0.0, settle_s - (time.monotonic() - began))
        rt.engine_letters.pop(partition, None)
        rt.shards.pop(partition, None)
        for rows in (self.live, self.rows, self.pending, self.memos):
            rows.pop(partition, None)
        rt.unacked.pop(partition, None)
        rt.read_back.pop(partition, None)
        box = rt.outboxes.pop(partition, None)
        if box is not None:
            # Sent ones on the topic first: the next owner (maybe this worker
            # again) reads back the refusals there and sends them once.
            await box.settle(settle_s)
