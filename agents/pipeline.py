"""The worker's logic between Kafka and the engine, free of Faust.

Two steps, each one an agent in `agents.app`:

1. **route**: an input message (one event or a batch) is decoded and
   validated. Bad messages go to the dead-letter topic whole (original
   bytes, source topic/partition/offset, every error); the valid events of
   a partly bad batch go on. Valid events are forwarded to the engine topic
   with the wall-clock time they were received. `route_batch` does this
   for the input messages ingest took together: one engine-topic message
   per engine partition carries their valid events in input order, as runs
   of consecutive events from one input partition (`source`).
2. **shard**: an engine partition applies forwarded events and clock ticks
   to its `Engine`, in offset order. Its state is snapshotted with the next
   offset it covers; after a restart the snapshot is restored and messages
   below that offset are skipped, so nothing counts twice and nothing is
   lost. Input offsets are acknowledged only once a snapshot covers them.

Event time follows the wall clock only while no event arrives: after
`idle_advance_after` seconds of silence, a tick moves the watermark on by
the wall time elapsed since the last event, so a silent plant's windows
still close and silent machines show as no data. Ticks are messages too,
so a replay after a crash sees the same ticks and gets the same result.
"""

from __future__ import annotations

import contextlib
import gc
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from agents.letters import envelope, refusal_letter
from streams.config import EngineConfig
from streams.decode import DecodeResult, EventError, decode_message, parse_event
from streams.engine import REFUSALS, Engine, Output
from streams.events import event_to_json
from streams.snapshot import restore, snapshot
from streams.timeutil import iso

US = 1_000_000


@dataclass
class Routed:
    """What one input message becomes."""

    forward: bytes | None = None  # engine-topic value, when any event is valid
    dead_letter: bytes | None = None  # dead-letter value, when anything is bad
    reasons: list[str] = field(default_factory=list)
    events: int = 0
    shard: str = "orders"  # engine-topic key: the site for machine events
    again: bool = False  # read before: what was sent for it then is not sent again


def route(
    value: bytes | None,
    *,
    key: bytes | None,
    topic: str,
    source: str,
    partition: int,
    offset: int,
    wall_us: int,
    max_bytes: int = 1_048_576,
    max_batch: int = 10_000,
    announce: list[str] | None = None,
    max_future_us: int | None = None,
) -> Routed:
    """Validate one input message; split it into forwardable events and a dead letter.

    `announce` names the input partitions this worker reads, when that set
    changed: the engine must know every input before it trusts any one.
    """
    routed, events = _check(
        value,
        key=key,
        topic=topic,
        source=source,
        partition=partition,
        offset=offset,
        wall_us=wall_us,
        max_bytes=max_bytes,
        max_batch=max_batch,
        max_future_us=max_future_us,
    )
    if events:
        forward: dict[str, Any] = {
            "wall_us": wall_us,
            "source": f"{topic}:{partition}",
            "events": events,
        }
        if announce:
            forward["sources"] = announce
        routed.forward = orjson.dumps(forward)
    return routed


def _check(
    value: bytes | None,
    *,
    key: bytes | None,
    topic: str,
    source: str,
    partition: int,
    offset: int,
    wall_us: int,
    max_bytes: int,
    max_batch: int,
    max_future_us: int | None,
) -> tuple[Routed, list[dict[str, Any]]]:
    """`route` without the forward: the routing and the valid events' contract JSON."""
    raw = value if value is not None else b""
    key_text = key.decode("utf-8", "replace") if key is not None else None
    decoded = decode_message(
        value, key=key_text, source=source, max_bytes=max_bytes, max_batch=max_batch
    )
    if max_future_us is not None:
        is_batch = raw.lstrip()[:1] == b"["
        decoded = _reject_future(decoded, wall_us + max_future_us, max_future_us, batch=is_batch)
    routed = Routed(events=len(decoded.events))
    if decoded.events and source == "machine-state":
        routed.shard = decoded.events[0].site  # type: ignore[union-attr]
    if decoded.errors:
        routed.reasons = [e.reason for e in decoded.errors]
        routed.dead_letter = envelope(
            raw,
            [{"index": e.index, "reason": e.reason, "error": e.message} for e in decoded.errors],
            topic=topic,
            partition=partition,
            offset=offset,
            key=key_text,
            received_us=wall_us,
            valid_events_forwarded=len(decoded.events),
        )
    return routed, [event_to_json(e) for e in decoded.events]


@dataclass(frozen=True)
class Incoming:
    """One input message as the ingest agent read it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class SentBefore:
    """What earlier reads of input partitions sent, found on the engine and
    dead-letter topics after a restart or rebalance (`agents.resume`).

    Forwards carry, per run, the highest input offset whose events they hold
    (`upto`); an engine partition gets an input partition's runs in input
    order, so every event of that partition up to `upto` bound for that
    engine partition was forwarded.
    """

    forwarded: dict[tuple[str, int, int], int] = field(default_factory=dict)
    """(input topic, partition, engine partition) -> highest input offset forwarded."""
    lettered: set[tuple[str, int, int]] = field(default_factory=set)
    """(input topic, partition, offset) of ingest's dead letters on the topic."""

    def forget(self, topic: str, partition: int) -> None:
        """Drop what is known of an input partition (revoked: the next owner reads it again)."""
        self.forwarded = {k: v for k, v in self.forwarded.items() if k[:2] != (topic, partition)}
        self.lettered = {k for k in self.lettered if k[:2] != (topic, partition)}


@dataclass
class Batch:
    """What a batch of input messages becomes."""

    forwards: list[tuple[int, bytes]] = field(default_factory=list)  # (engine partition, value)
    routed: list[tuple[Incoming, Routed]] = field(default_factory=list)  # in input order


def engine_partition(shard: str, partitions: int) -> int:
    """The engine partition of a shard key: what Kafka's default partitioner
    picks for that key (murmur2), so a site stays on one partition."""
    if partitions == 1:
        return 0
    return (murmur2(shard.encode()) & 0x7FFFFFFF) % partitions


def route_batch(
    messages: list[Incoming],
    *,
    sources: dict[str, str],
    wall_us: int,
    engine_partitions: int = 1,
    max_bytes: int = 1_048_576,
    max_batch: int = 10_000,
    announce: list[str] | None = None,
    max_future_us: int | None = None,
    sent_before: SentBefore | None = None,
) -> Batch:
    """`route` every message of a batch; forward their valid events together.

    `sources`: input topic -> the contract's topic kind. Each engine
    partition gets one message holding its events in input order, as runs
    of consecutive events from one input partition:

        {"wall_us": ..., "runs": [{"source": "machine-state:2", "upto": 1841, "events": [...]}]}

    The engine applies each run as it would a message of its own, so a batch
    gives what the same events give forwarded one input message at a time
    (consecutive messages of one partition as if they were one). Runs keep
    the input order across partitions too: grouping each partition's events
    into one run would move, say, a shipment ahead of its order when their
    partitions come in that order, and change results. A message that would
    outgrow about `max_bytes` is split between input messages. The first
    forward carries `announce`, as `route` does.

    A message read before (`sent_before`) is marked `again`; its events
    already forwarded to their engine partition are not forwarded again,
    nor is its dead letter when that is on the topic already.
    """
    batch = Batch()
    before = sent_before or SentBefore()
    by_partition: dict[int, list[tuple[str, int, int, list[dict[str, Any]]]]] = {}
    for message in messages:
        routed, events = _check(
            message.value,
            key=message.key,
            topic=message.topic,
            source=sources[message.topic],
            partition=message.partition,
            offset=message.offset,
            wall_us=wall_us,
            max_bytes=max_bytes,
            max_batch=max_batch,
            max_future_us=max_future_us,
        )
        batch.routed.append((message, routed))
        tp = (message.topic, message.partition)
        if routed.dead_letter is not None and (*tp, message.offset) in before.lettered:
            routed.dead_letter, routed.again = None, True
        if events:
            target = engine_partition(routed.shard, engine_partitions)
            if message.offset <= before.forwarded.get((*tp, target), -1):
                routed.again = True
                continue
            size = len(message.value or b"")
            source = f"{message.topic}:{message.partition}"
            by_partition.setdefault(target, []).append((source, size, message.offset, events))
    for target, items in by_partition.items():
        for value in _forwards(items, wall_us, announce, max_bytes):
            batch.forwards.append((target, value))
            announce = None
    return batch


def _forwards(
    items: list[tuple[str, int, int, list[dict[str, Any]]]],
    wall_us: int,
    announce: list[str] | None,
    max_bytes: int,
) -> list[bytes]:
    """Engine-topic values for (source, input bytes, input offset, events) items,
    each about `max_bytes` at most unless a single item is larger."""
    # Pack by input size (forwarded JSON is of the same order), then check the result.
    groups: list[list[tuple[str, int, int, list[dict[str, Any]]]]] = [[]]
    size = 0
    for item in items:
        if groups[-1] and size + item[1] > max_bytes // 2:
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += item[1]
    values = []
    while groups:
        group = groups.pop(0)
        runs: list[dict[str, Any]] = []
        for source, _, offset, events in group:
            if runs and runs[-1]["source"] == source:
                runs[-1]["events"] += events
                runs[-1]["upto"] = offset
            else:
                runs.append({"source": source, "upto": offset, "events": list(events)})
        forward: dict[str, Any] = {"wall_us": wall_us, "runs": runs}
        if announce and not values:
            forward["sources"] = announce
        value = orjson.dumps(forward)
        if len(value) > max_bytes and len(group) > 1:
            half = len(group) // 2
            groups[:0] = [group[:half], group[half:]]
            continue
        values.append(value)
    return values


def _reject_future(
    decoded: DecodeResult, limit_us: int, skew_us: int, *, batch: bool
) -> DecodeResult:
    """Events stamped further ahead of this worker's clock than the allowed skew
    would drag the watermark into the future and make everything else late."""
    kept, errors = [], list(decoded.errors)
    bad = {e.index for e in decoded.errors}
    indices = [i for i in range(len(decoded.events) + len(bad)) if i not in bad] if batch else []
    for position, event in enumerate(decoded.events):
        if event.ts_us > limit_us:
            ahead = (event.ts_us - limit_us + skew_us) / US
            errors.append(
                EventError(
                    "future_timestamp",
                    f"ts: {iso(event.ts_us)} is {ahead:.0f} s ahead of the receiving clock "
                    f"(event_id {event.event_id}; at most {skew_us / US:.0f} s allowed)",
                    indices[position] if batch else None,
                )
            )
        else:
            kept.append(event)
    errors.sort(key=lambda e: -1 if e.index is None else e.index)
    return DecodeResult(kept, errors)


def tick_message(wall_us: int, sources: dict[str, bool]) -> bytes:
    """A clock tick: the input partitions this worker reads, and whether each
    is caught up (nothing more to read on it right now)."""
    return orjson.dumps({"tick_us": wall_us, "sources": sources})


class Shard:
    """One engine partition: the engine, the offsets it covers, input progress.

    The watermark is the slowest input's: the least, over input partitions
    (`source`s), of how far each has got in event time.
    - A partition with unread messages, or one that sent something in the
      last `idle_us` of wall time, has got as far as its newest event; one
      that never sent blocks the watermark until it is quiet that long.
    - A quiet partition (read to its end and silent for `idle_us`) is taken
      to move on at the pace of the clock from its newest event (or, if it
      never sent, from the first event the shard saw). So a burst on one
      input does not make the others' next events late, and a dead input
      cannot stop the watermark either.
    - When every input is quiet, everything there is has been read: event
      time follows the clock from the newest event on. An input that lags
      the others (transport delay) then needs `allowed_lateness` to cover
      that lag, or its next event is late.
    """

    def __init__(
        self, config: EngineConfig, idle_advance_after_us: int, engine_source: str = ""
    ) -> None:
        self.config = config
        self.idle_us = idle_advance_after_us
        self.engine_source = engine_source  # `topic:partition` of this engine partition
        self.engine = Engine(config, auto_watermark=False)
        self.next_offset = 0  # messages below this are in the state
        self.sources: dict[str, list[int | None]] = {}  # source -> [newest ts, last wall]
        self.caught_up: dict[str, bool] = {}  # source -> per the latest tick
        self.first_data: tuple[int, int] | None = None  # (event ts, wall) of the first event
        self.last_event_wall_us: int | None = None
        self.stats: Counter[str] = Counter()

    def apply(self, offset: int, value: bytes) -> Output | None:
        """Apply one engine-topic message; None when the state already has it."""
        if offset < self.next_offset:
            self.stats["skipped_replayed"] += 1
            return None
        self.next_offset = offset + 1
        message = orjson.loads(value)
        if "tick_us" in message:
            return self._tick(message["tick_us"], message.get("sources", []))
        wall = message["wall_us"]
        for source in message.get("sources", ()):
            self.sources.setdefault(source, [None, wall])
        out = Output()
        # A forward of one input message (`route`) is a run of its own.
        for run in message.get("runs", (message,)):
            self._run(run.get("source", "?"), run["events"], wall, out)
        return out

    def _run(self, source: str, events: list[dict[str, Any]], wall: int, out: Output) -> None:
        """Events of one input partition, then the watermark their progress allows.

        An event the engine refuses becomes a dead letter naming `source`,
        and the engine message and its index among the message's refusals
        (what a replay of the message refuses again); its time still shows
        the input's progress.
        """
        newest = None
        ingest = self.engine.ingest
        self.engine.wall_us = wall  # the past horizon's reference before any event
        offset = self.next_offset - 1  # of the message being applied
        for data in events:
            event = parse_event(data)
            if ingest(event, out) in REFUSALS:
                where = (self.engine_source, offset, len(out.dead_letters))
                letter = refusal_letter(source, out.rejected[-1], event.key, wall, engine=where)
                out.dead_letters.append(letter)
            ts = event.ts_us
            if newest is None or ts > newest:
                newest = ts
        progress = self.sources.setdefault(source, [None, wall])
        if newest is not None and (progress[0] is None or newest > progress[0]):
            progress[0] = newest
        progress[1] = wall
        self.last_event_wall_us = wall
        if self.first_data is None and newest is not None:
            self.first_data = (newest, wall)
        self._advance(wall, out)

    def _tick(self, wall_us: int, sources: dict[str, bool]) -> Output:
        self.stats["ticks"] += 1
        for source, caught_up in sources.items():
            self.sources.setdefault(source, [None, wall_us])
            self.caught_up[source] = caught_up
        out = Output()
        self._advance(wall_us, out)
        return out

    def _advance(self, wall_us: int, out: Output) -> None:
        if not self.sources:
            return
        holds: list[int] = []
        all_idle = True
        for source, (ts, seen) in self.sources.items():
            idle = self.caught_up.get(source, False) and wall_us - seen >= self.idle_us  # type: ignore[operator]
            all_idle = all_idle and idle
            if not idle:
                if ts is None:
                    return  # an input that never sent may still bring older events
                holds.append(ts)
            elif ts is not None:
                # A quiet input is assumed to move on at the pace of the clock.
                holds.append(ts + (wall_us - seen))  # type: ignore[operator]
            elif self.first_data is not None:
                holds.append(self.first_data[0] + (wall_us - self.first_data[1]))
        if all_idle and self.last_event_wall_us is not None:
            # Everything read and quiet: event time follows the clock from the newest event on.
            newest = max((ts for ts, _ in self.sources.values() if ts is not None), default=None)
            if newest is None:
                return
            watermark = newest + (wall_us - self.last_event_wall_us)
        elif holds:
            watermark = min(holds)
        else:
            return
        out.extend(self.engine.advance(watermark))

    def to_bytes(self) -> bytes:
        with _cyclic_gc_paused():
            return orjson.dumps(
                {
                    "next_offset": self.next_offset,
                    "sources": self.sources,
                    "caught_up": self.caught_up,
                    "first_data": self.first_data,
                    "last_event_wall_us": self.last_event_wall_us,
                    "engine": snapshot(self.engine),
                }
            )

    @classmethod
    def from_bytes(
        cls, config: EngineConfig, idle_advance_after_us: int, data: bytes, engine_source: str = ""
    ) -> Shard:
        with _cyclic_gc_paused():
            return cls._from_bytes(config, idle_advance_after_us, data, engine_source)

    @classmethod
    def _from_bytes(
        cls, config: EngineConfig, idle_advance_after_us: int, data: bytes, engine_source: str
    ) -> Shard:
        state = orjson.loads(data)
        shard = cls(config, idle_advance_after_us, engine_source)
        shard.engine = restore(config, state["engine"], auto_watermark=False)
        shard.next_offset = state["next_offset"]
        shard.sources = state["sources"]
        shard.caught_up = state["caught_up"]
        shard.first_data = tuple(state["first_data"]) if state["first_data"] else None
        shard.last_event_wall_us = state["last_event_wall_us"]
        return shard


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile.

    A snapshot (or its restore) makes millions of containers and no cycles;
    each collection they trigger walks the whole heap. Measured with 10,000
    machines and 100,000 open orders: 4.0 s to serialise, 0.8 s with
    collection paused. Garbage is still freed by reference counting.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


SNAPSHOT_SPACING = 10
"""A snapshot waits at least this many times as long as the last one took."""


def snapshot_due(since_s: float, last_took_s: float, interval_s: float) -> bool:
    """Whether to snapshot `since_s` after the last snapshot ended.

    Serialising the state holds the worker's event loop, so a large state is
    snapshotted less often than every `interval_s`: the gap is at least
    `SNAPSHOT_SPACING` times the last snapshot's duration, so snapshots take
    at most about 1/11 of the time. (The input is acknowledged later too, so
    a restart re-applies more of the engine topic; results are the same.)
    """
    return since_s >= max(interval_s, SNAPSHOT_SPACING * last_took_s)


CHUNK_BYTES = 512 * 1024
"""Snapshot rows are split into chunks well under Kafka's 1 MB message limit."""


def chunks(data: str, size: int = CHUNK_BYTES) -> list[str]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [""]
