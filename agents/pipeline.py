"""The worker's logic between Kafka and the engine, free of Faust.

Two steps, each one an agent in `agents.app`:

1. **route** (`agents.ingest_route`): input messages are validated; bad
   ones become dead letters, valid events are forwarded to the engine
   topic with the wall-clock time they were received.
2. **shard** (here): an engine partition applies forwarded events and clock
   ticks to its `Engine`, in offset order. Its state is snapshotted with the
   next offset it covers; after a restart the snapshot is restored and
   messages below that offset are skipped, so nothing counts twice and
   nothing is lost. Input offsets are acknowledged only once a snapshot
   covers them.

Event time follows the wall clock only while no event arrives: after
`idle_advance_after` seconds of silence, with every input read to its end
as the latest ticks (at most that old) report, a tick moves the watermark
on by the wall time elapsed since the last event, so a silent plant's windows
still close and silent machines show as no data (the policy is
`streams.clock.IdleAdvanceClock`). Ticks are messages too, so a replay
after a crash sees the same ticks and gets the same result.

The routing names are importable from here too, as the agents import them.
"""

from __future__ import annotations

import contextlib
import gc
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from agents.ingest_route import (
    Batch,
    Incoming,
    Routed,
    SentBefore,
    engine_partition,
    route_batch,
)
from agents.letters import refusal_letter
from streams.clock import IdleAdvanceClock
from streams.config import EngineConfig
from streams.decode import trusted_event
from streams.engine import REFUSALS, Engine, Output
from streams.snapshot import restore, snapshot
from streams.snapshot_sections import Tokened, join, materialised, split

__all__ = [
    "CHUNK_BYTES",
    "SNAPSHOT_SPACING",
    "Batch",
    "Incoming",
    "Routed",
    "SentBefore",
    "Shard",
    "chunks",
    "engine_partition",
    "route_batch",
    "snapshot_due",
    "tick_message",
]


def tick_message(wall_us: int, sources: dict[str, bool]) -> bytes:
    """A clock tick: the input partitions this worker reads, and whether each
    is caught up (nothing more to read on it right now)."""
    return orjson.dumps({"tick_us": wall_us, "sources": sources})


class Shard:
    """One engine partition: the engine, the offsets it covers, input progress.

    Its event time is an `IdleAdvanceClock`: the slowest input's progress,
    where an input read to its end and quiet for `idle_advance_after_us`
    moves on at the pace of the wall clock while ticks keep saying so (a
    report no tick renewed for as long holds it again; see `streams.clock`).
    """

    def __init__(
        self, config: EngineConfig, idle_advance_after_us: int, engine_source: str = ""
    ) -> None:
        self.config = config
        self.engine_source = engine_source  # `topic:partition` of this engine partition
        self.engine = Engine(config, auto_watermark=False)
        self.next_offset = 0  # messages below this are in the state
        self.clock = IdleAdvanceClock(idle_advance_after_us)
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
            self.clock.announce(source, wall)
        out = Output()
        # A forward of one input message, as ingest wrote them before it sent
        # runs ({"source": ..., "events": [...]}), is a run of its own.
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
            event = trusted_event(data)
            if ingest(event, out) in REFUSALS:
                where = (self.engine_source, offset, len(out.dead_letters))
                letter = refusal_letter(source, out.rejected[-1], event.key, wall, engine=where)
                out.dead_letters.append(letter)
            ts = event.ts_us
            if newest is None or ts > newest:
                newest = ts
        self.clock.observe(source, newest, wall)
        self._advance(wall, out)

    def _tick(self, wall_us: int, sources: dict[str, bool]) -> Output:
        self.stats["ticks"] += 1
        self.clock.tick(wall_us, sources)
        out = Output()
        self._advance(wall_us, out)
        return out

    def _advance(self, wall_us: int, out: Output) -> None:
        watermark = self.clock.watermark(wall_us)
        if watermark is not None:
            out.extend(self.engine.advance(watermark))

    def to_bytes(self) -> bytes:
        with _cyclic_gc_paused():
            return orjson.dumps(
                {
                    "next_offset": self.next_offset,
                    **self.clock.to_dict(),
                    "engine": snapshot(self.engine),
                }
            )

    def to_sections(self) -> dict[str, bytes]:
        """The state as `to_bytes` has it, cut into named sections
        (`streams.snapshot_sections`), each serialised: a snapshot writes only
        those whose bytes changed. `shard` holds the offset and the clock."""
        return dict(self.iter_sections())  # type: ignore[arg-type]

    def iter_sections(self, *, tokened: bool = False) -> Iterator[tuple[str, bytes | Tokened]]:
        """`to_sections`, a section at a time: the open orders are made into
        data a bucket at a time (`snapshot(lazy=True)`), so a snapshot's
        peak memory is not a second copy of the state. `tokened`: a section
        that has a token (`streams.snapshot_sections.Tokened`) comes as one
        making its bytes, for a writer that knows the token to skip."""
        with _cyclic_gc_paused():
            parts = split(snapshot(self.engine, lazy=True))
            parts["shard"] = {"next_offset": self.next_offset, **self.clock.to_dict()}
            for name, value in materialised(parts, tokened=tokened):
                if isinstance(value, Tokened):
                    yield name, Tokened(_dumping(value.make), value.token)
                else:
                    yield name, orjson.dumps(value)
            # Freed here, by reference counting, before the collector is back:
            # its first collection would otherwise walk all of them (the
            # containers made since the pause), 40-100 ms at 450,000 events.
            parts = value = None

    @classmethod
    def from_sections(
        cls,
        config: EngineConfig,
        idle_advance_after_us: int,
        sections: dict[str, bytes],
        engine_source: str = "",
    ) -> Shard:
        """The shard `to_sections` cut into `sections`."""
        with _cyclic_gc_paused():
            parts = {name: orjson.loads(data) for name, data in sections.items()}
            state = parts.pop("shard")
            shard = cls(config, idle_advance_after_us, engine_source)
            shard.engine = restore(config, join(parts), auto_watermark=False)
            shard.next_offset = state["next_offset"]
            shard.clock = IdleAdvanceClock.from_dict(state, idle_advance_after_us)
            return shard

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
        shard.clock = IdleAdvanceClock.from_dict(state, idle_advance_after_us)
        return shard


def _dumping(make: Callable[[], Any]) -> Callable[[], bytes]:
    return lambda: orjson.dumps(make())


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
