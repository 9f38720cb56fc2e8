"""Ingest: forward a batch of input messages to the engine topic.

The ingest agent of `agents.app` hands every batch it takes to
`Ingest.forward`, which makes each input partition's offsets follow on (a
hole the consumer left is read back, an offset already forwarded is left
out), looks back after a resume at what earlier reads sent
(`agents.resume`), routes the batch (`agents.pipeline.route_batch`),
delivers its forwards and dead letters, then marks the ranges read back
committable and counts the batch. Its collaborators (the send, the consumer's
assignment and committed offsets, the read-back, the look-back, the clock)
are passed in, so all of it is testable with fakes, without Faust.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from aiokafka.errors import KafkaError

from agents.outbox import Outbox, Send
from agents.pipeline import Batch, Incoming, SentBefore, route_batch, tick_message
from agents.read_back import ReadBack
from agents.resume import floor_of
from agents.runtime import Runtime
from agents.settings import Settings
from streams.timeutil import US

log = logging.getLogger("kpimon")

Hole = tuple[str, int, int, int]
"""Offsets read back: (topic, partition, start, stop)."""

TAIL_QUIET_S = 10.0
"""An input partition's tail not handed over for this long is read back (`Ingest.read_tail`)."""


class InputMessage(Protocol):
    """What ingest reads of a Faust message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


class Ingest:
    """Forwards batches of input messages; keeps its state in `runtime`.

    `assignment()` is the consumer's assignment, as (topic, partition) pairs
    (Faust's `TP` is one); `committed(topic, partition)` the offset reading
    resumed at (None: nothing committed); `sent_before(resumed=, floor_ms=)`
    what earlier reads forwarded and dead-lettered (`agents.resume`);
    `mark_read_back(topic, partition, start, stop)` lets the consumer commit
    past a range read back; `clock_us()` the wall clock in microseconds.
    """

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        *,
        send: Send,
        engine_topic: Any,
        dead_topic: Any,
        assignment: Callable[[], Collection[tuple[str, int]]],
        committed: Callable[[str, int], int | None],
        read_back: ReadBack,
        sent_before: Callable[..., Awaitable[SentBefore]],
        mark_read_back: Callable[[str, int, int, int], Awaitable[None]],
        clock_us: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.runtime = runtime
        self.box = runtime.ingest_box = Outbox(send)
        self.engine_topic = engine_topic
        self.dead_topic = dead_topic
        self.assignment = assignment
        self.committed = committed
        self.read_back = read_back
        self.sent_before = sent_before
        self.mark_read_back = mark_read_back
        self.clock_us = clock_us
        self.sources = settings.topics.sources()
        self._assignment: Collection[tuple[str, int]] | None = None
        self._reading: list[str] = []
        self._lock = asyncio.Lock()  # a batch or a tail at a time
        self._handed: dict[tuple[str, int], float] = {}  # input partition -> last handed over, s
        self._tail_left: set[tuple[str, int]] = set()  # tails read in part so far

    def reading_inputs(self) -> list[str]:
        """The assigned input partitions, sorted; sorted again only when they change."""
        assignment = self.assignment()
        if assignment != self._assignment:
            self._assignment = assignment
            self._reading = sorted(
                f"{topic}:{partition}" for topic, partition in assignment if topic in self.sources
            )
        return self._reading

    async def forward(self, messages: Sequence[InputMessage]) -> None:
        """Forward one batch, delivered before the caller acknowledges it."""
        async with self._lock:
            handed = self.clock_us() / US
            written: dict[tuple[str, int], float] = {}  # input partition -> oldest write time
            for m in messages:
                tp, at = (m.topic, m.partition), m.timestamp
                if at < written.get(tp, at + 1):
                    written[tp] = at
            for tp in written:
                self._handed[tp] = handed
            holes: list[Hole] = []
            incoming = await self.contiguous(
                [Incoming(m.topic, m.partition, m.offset, m.key, m.value) for m in messages], holes
            )
            await self._forward(incoming, holes, written)

    async def read_tail(self, ends: Mapping[tuple[str, int], int]) -> None:
        """Read back the tail of an input partition the consumer stopped handing
        over: its end offset (`ends`) is past the next offset to ingest, and
        nothing of it was handed over for `TAIL_QUIET_S`.

        A hole between two offsets handed over is found by `contiguous`; one
        at the end of a partition is not, until a later message comes, which on
        a quiet topic can be hours (and its offset is never committed until
        then). Whatever the consumer hands over later is left out as read.

        At most `worker.ingest_batch` messages of a partition are read a
        call, as the consumer hands them over: a long tail is read over the
        next calls (without waiting for quiet again), never held whole.
        """
        now = self.clock_us() / US
        due = [
            (tp, end)
            for tp, end in ends.items()
            if tp[0] in self.sources
            and tp in self.assignment()
            and self.runtime.next_input.get(tp, end) < end
            and (tp in self._tail_left or now - self._handed.get(tp, now) >= TAIL_QUIET_S)
        ]
        if not due:
            return
        async with self._lock:
            holes: list[Hole] = []
            incoming: list[Incoming] = []
            for (topic, partition), end in due:
                start = self.runtime.next_input.get((topic, partition), end)
                if start >= end:  # handed over meanwhile
                    self._tail_left.discard((topic, partition))
                    continue
                stop = min(end, start + self.settings.worker.ingest_batch)
                found = await self.read_back("ingest", topic, partition, start, stop)
                if (topic, partition) not in self.assignment():  # revoked meanwhile
                    continue
                incoming += [Incoming(topic, partition, *item) for item in found]
                holes.append((topic, partition, start, stop))
                self.runtime.next_input[topic, partition] = stop
                self._handed[topic, partition] = now
                if stop < end:
                    self._tail_left.add((topic, partition))
                else:
                    self._tail_left.discard((topic, partition))
            if holes:
                await self._forward(incoming, holes, {})

    async def _forward(
        self, incoming: list[Incoming], holes: list[Hole], written: dict[tuple[str, int], float]
    ) -> None:
        """Route contiguous messages, deliver, then mark `holes` committable and count."""
        w, rt = self.settings.worker, self.runtime
        now = self.clock_us()
        reading = self.reading_inputs()
        announce = reading if reading != rt.announced else None
        await self._announce(now, announce)
        if rt.resumed_at:
            await self.look_back(written)
        batch = route_batch(
            incoming,
            sources=self.sources,
            wall_us=now,
            engine_partitions=self.settings.topics.engine_partitions,
            max_bytes=w.max_message_bytes,
            max_batch=w.max_batch,
            announce=announce,
            max_future_us=round(w.max_future_skew * 1e6),
            sent_before=rt.sent_before,
        )
        await self._send(batch, now, reading)
        # Delivered before take() acknowledges the batch: a batch spans input
        # partitions, so Faust's attach-to-the-current-event (publish at
        # commit) would let other partitions' offsets commit before the
        # forward is out, and a crash then would lose it. An output that
        # cannot be delivered holds the batch back (`agents.outbox`).
        rt.published["resent"] += await self.box.deliver()
        for hole in holes:  # delivered: committable like the batch's own offsets
            await self.mark_read_back(*hole)
        self.count(batch)
        if batch.routed:
            rt.ingest_processed = time.monotonic()

    async def _announce(self, now: int, announce: list[str] | None) -> None:
        if announce and self.settings.topics.engine_partitions > 1:
            # Every engine partition must know every input before it
            # trusts any one; the forwards may reach only some of them.
            told = tick_message(now, dict.fromkeys(announce, False))
            for partition in range(self.settings.topics.engine_partitions):
                await self.box.put(self.engine_topic, b"tick", told, partition)

    async def _send(self, batch: Batch, now: int, reading: list[str]) -> None:
        """Put the batch's forwards and dead letters in the outbox; note what was read."""
        rt = self.runtime
        for partition, value in batch.forwards:
            await self.box.put(self.engine_topic, b"events", value, partition)
        if batch.forwards:
            rt.announced = reading
        held = self.assignment()  # a rebalance may have taken some away meanwhile
        for msg, routed in batch.routed:
            # Read, as far as the clock ticks tell the engine, once forwarded.
            if (msg.topic, msg.partition) in held:
                rt.ingested[msg.topic, msg.partition] = msg.offset
            if routed.events:
                rt.last_event_wall[self.sources[msg.topic]] = now / 1e6
            if routed.dead_letter is not None:
                await self.box.put(self.dead_topic, msg.key, routed.dead_letter)

    def count(self, batch: Batch) -> None:
        """Count a delivered batch: each input offset once, those read again apart."""
        rt = self.runtime
        for msg, routed in batch.routed:
            if routed.again:  # counted when it was first read
                rt.redelivered[msg.topic] += 1
                continue
            rt.consumed[msg.topic] += 1
            if routed.events:
                rt.events_in[msg.topic] += routed.events
            if routed.dead_letter is not None:
                rt.dead_letters[msg.topic, routed.reasons[0]] += 1

    async def look_back(self, written: dict[tuple[str, int], float]) -> None:
        """Learn what earlier reads of the input partitions read again since their
        assignment forwarded and dead-lettered (`agents.resume`)."""
        rt = self.runtime
        resumed, rt.resumed_at = rt.resumed_at, {}
        floor_ms = floor_of(min((written[tp] for tp in resumed if tp in written), default=None))
        began = time.monotonic()
        try:
            found = await self.sent_before(resumed=resumed, floor_ms=floor_ms)
        except (KafkaError, OSError) as exc:
            log.warning("could not read back what was sent before (%r): it may be sent twice", exc)
            return
        rt.sent_before.forwarded |= found.forwarded
        rt.sent_before.lettered |= found.lettered
        log.info(
            "input read again from %s: %s forwards and %s dead letters sent before (%.1f s)",
            resumed,
            len(found.forwarded),
            len(found.lettered),
            time.monotonic() - began,
        )

    async def contiguous(self, messages: list[Incoming], holes: list[Hole]) -> list[Incoming]:
        """The batch with every input partition's offsets following on: a hole
        (offsets the consumer skipped) is read back from the topic and added to
        `holes`, and an offset already forwarded is left out (see `agents.refill`)."""
        rt = self.runtime
        out: list[Incoming] = []
        for msg in messages:
            tp = (msg.topic, msg.partition)
            expected = rt.next_input.get(tp)
            if expected is None:  # the first since assignment: where reading resumed
                expected = self.committed(*tp)
                rt.resumed_at[tp] = msg.offset if expected is None else expected
            if expected is not None and msg.offset < expected:
                rt.skipped["ingest", "again"] += 1
                rt.redelivered[msg.topic] += 1
                continue
            if expected is not None and msg.offset > expected:
                found = await self.read_back(
                    "ingest", msg.topic, msg.partition, expected, msg.offset
                )
                out += [Incoming(msg.topic, msg.partition, *item) for item in found]
                holes.append((msg.topic, msg.partition, expected, msg.offset))
            out.append(msg)
            rt.next_input[tp] = msg.offset + 1
        return out

    def forget(self, topic: str, partition: int) -> None:
        """Drop what is known of a revoked partition: reading resumes at the
        committed offset when it comes back."""
        rt = self.runtime
        rt.ingested.pop((topic, partition), None)
        rt.next_input.pop((topic, partition), None)
        rt.input_ends.starts.pop((topic, partition), None)
        rt.resumed_at.pop((topic, partition), None)
        rt.sent_before.forget(topic, partition)
        self._handed.pop((topic, partition), None)
        self._tail_left.discard((topic, partition))
