"""The worker's logic between Kafka and the engine, free of Faust.

Two steps, each one an agent in `agents.app`:

1. **route**: an input message (one event or a batch) is decoded and
   validated. Bad messages go to the dead-letter topic whole (original
   bytes, source topic/partition/offset, every error); the valid events of
   a partly bad batch go on. Valid events are forwarded to the engine topic
   with the wall-clock time they were received.
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

import base64
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.config import EngineConfig
from streams.engine import Engine, Output
from streams.events import decode_message, event_to_json, parse_event
from streams.snapshot import restore, snapshot

US = 1_000_000


@dataclass
class Routed:
    """What one input message becomes."""

    forward: bytes | None = None  # engine-topic value, when any event is valid
    dead_letter: bytes | None = None  # dead-letter value, when anything is bad
    reasons: list[str] = field(default_factory=list)
    events: int = 0
    shard: str = "orders"  # engine-topic key: the site for machine events


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
) -> Routed:
    """Validate one input message; split it into forwardable events and a dead letter."""
    raw = value if value is not None else b""
    key_text = key.decode("utf-8", "replace") if key is not None else None
    decoded = decode_message(
        raw, key=key_text, source=source, max_bytes=max_bytes, max_batch=max_batch
    )
    routed = Routed(events=len(decoded.events))
    if decoded.events:
        first = decoded.events[0]
        if source == "machine-state":
            routed.shard = first.site  # type: ignore[union-attr]
        routed.forward = orjson.dumps(
            {
                "wall_us": wall_us,
                "source": f"{topic}:{partition}",
                "events": [event_to_json(e) for e in decoded.events],
            }
        )
    if decoded.errors:
        routed.reasons = [e.reason for e in decoded.errors]
        letter: dict[str, Any] = {
            "reason": decoded.errors[0].reason,
            "errors": [
                {"index": e.index, "reason": e.reason, "error": e.message} for e in decoded.errors
            ],
            "source": {"topic": topic, "partition": partition, "offset": offset, "key": key_text},
            "valid_events_forwarded": len(decoded.events),
            "received_us": wall_us,
            "value_b64": base64.b64encode(raw).decode(),
        }
        with contextlib.suppress(UnicodeDecodeError):
            letter["value_text"] = raw.decode("utf-8")[:4096]
        routed.dead_letter = orjson.dumps(letter)
    return routed


def tick_message(wall_us: int, sources: list[str]) -> bytes:
    """A clock tick, naming the input partitions this worker reads."""
    return orjson.dumps({"tick_us": wall_us, "sources": sources})


class Shard:
    """One engine partition: the engine, the offsets it covers, input progress.

    The watermark is the slowest input's: the least of the newest event time
    of each input partition (`source`) that is still active. A partition
    that sent nothing for `idle_us` of wall time stops holding the others
    back; a partition a tick names but that never sent holds them until it
    has been idle that long. When every input is idle, event time follows
    the wall clock from the last event on.
    """

    def __init__(self, config: EngineConfig, idle_advance_after_us: int) -> None:
        self.config = config
        self.idle_us = idle_advance_after_us
        self.engine = Engine(config, auto_watermark=False)
        self.next_offset = 0  # messages below this are in the state
        self.sources: dict[str, list[int | None]] = {}  # source -> [newest ts, last wall]
        self.last_event_wall_us: int | None = None
        self.last_event_watermark_us: int | None = None
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
        out = Output()
        newest = None
        for data in message["events"]:
            event = parse_event(data)
            self.engine.ingest(event)
            newest = event.ts_us if newest is None else max(newest, event.ts_us)
        progress = self.sources.setdefault(message.get("source", "?"), [None, wall])
        if newest is not None and (progress[0] is None or newest > progress[0]):
            progress[0] = newest
        progress[1] = wall
        self.last_event_wall_us = wall
        self._advance(wall, out)
        return out

    def _tick(self, wall_us: int, sources: list[str]) -> Output:
        self.stats["ticks"] += 1
        for source in sources:
            self.sources.setdefault(source, [None, wall_us])
        out = Output()
        self._advance(wall_us, out)
        return out

    def _advance(self, wall_us: int, out: Output) -> None:
        active = [ts for ts, seen in self.sources.values() if wall_us - seen < self.idle_us]  # type: ignore[operator]
        if active:
            if None in active:
                return  # an input that never sent may still bring older events
            watermark = min(active)  # type: ignore[type-var]
            self.last_event_watermark_us = max(watermark, self.last_event_watermark_us or watermark)
        elif self.last_event_wall_us is not None and self.last_event_watermark_us is not None:
            # Everything idle: event time follows the clock from the last event on.
            newest = max((ts for ts, _ in self.sources.values() if ts is not None), default=None)
            base = max(self.last_event_watermark_us, newest or self.last_event_watermark_us)
            watermark = base + (wall_us - self.last_event_wall_us)
        else:
            return
        out.extend(self.engine.advance(watermark))

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "next_offset": self.next_offset,
                "sources": self.sources,
                "last_event_wall_us": self.last_event_wall_us,
                "last_event_watermark_us": self.last_event_watermark_us,
                "engine": snapshot(self.engine),
            }
        )

    @classmethod
    def from_bytes(cls, config: EngineConfig, idle_advance_after_us: int, data: bytes) -> Shard:
        state = orjson.loads(data)
        shard = cls(config, idle_advance_after_us)
        shard.engine = restore(config, state["engine"], auto_watermark=False)
        shard.next_offset = state["next_offset"]
        shard.sources = state["sources"]
        shard.last_event_wall_us = state["last_event_wall_us"]
        shard.last_event_watermark_us = state["last_event_watermark_us"]
        return shard


CHUNK_BYTES = 512 * 1024
"""Snapshot rows are split into chunks well under Kafka's 1 MB message limit."""


def chunks(data: str, size: int = CHUNK_BYTES) -> list[str]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [""]
