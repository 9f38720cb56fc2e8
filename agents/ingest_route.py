"""Ingest's routing: input messages become engine-topic forwards and dead letters.

An input message (one event or a batch) is decoded and validated. Bad
messages go to the dead-letter topic whole (original bytes, source
topic/partition/offset, every error); the valid events of a partly bad batch
go on. `route_batch` does this for the input messages ingest took together:
one engine-topic message per engine partition carries their valid events in
input order, with the wall-clock time they were received, as runs of
consecutive events from one input partition (`source`). The engine partition
that applies them is `agents.pipeline.Shard`.

Events cross the engine topic validated: in the trusted wire form of
`streams.decode.to_wire`, which the engine turns back into the same events
without validating them again (`streams.decode.trusted_event`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from aiokafka.partitioner import murmur2

from agents.letters import envelope
from streams.decode import DecodeResult, EventError, decode_message, to_wire
from streams.timeutil import iso

US = 1_000_000


@dataclass(slots=True)
class Routed:
    """What one input message becomes."""

    dead_letter: bytes | None = None  # dead-letter value, when anything is bad
    reasons: list[str] = field(default_factory=list)
    events: int = 0
    shard: str = "orders"  # its first event's shard: the site for machine events
    again: bool = False  # read before: what was sent for it then is not sent again


_BATCH_START = re.compile(rb"\s*\[")
"""A JSON array's start, after whitespace as `bytes.lstrip` takes it (no copy of the value)."""


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
) -> tuple[Routed, list[tuple[str, list[Any]]]]:
    """One input message's routing, and its valid events in the engine topic's
    form, each with its shard: its site (a gateway batch holds several
    machines), "orders" for orders and shipments."""
    raw = value if value is not None else b""
    key_text = key.decode("utf-8", "replace") if key is not None else None
    decoded = decode_message(
        value, key=key_text, source=source, max_bytes=max_bytes, max_batch=max_batch
    )
    if max_future_us is not None:
        limit_us = wall_us + max_future_us
        for event in decoded.events:
            if event.ts_us > limit_us:  # rare: ahead of the clock, worded then
                is_batch = _BATCH_START.match(raw) is not None
                decoded = _reject_future(decoded, limit_us, max_future_us, batch=is_batch)
                break
    routed = Routed(events=len(decoded.events))
    machines = source == "machine-state"
    shards = [e.site if machines else "orders" for e in decoded.events]  # type: ignore[union-attr]
    if shards:
        routed.shard = shards[0]
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
    return routed, [(shard, to_wire(e)) for shard, e in zip(shards, decoded.events, strict=True)]


class Incoming(NamedTuple):
    """One input message as the ingest agent read it (a named tuple: ingest
    makes one for every input message)."""

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


@functools.lru_cache(maxsize=65_536)
def engine_partition(shard: str, partitions: int) -> int:
    """The engine partition of a shard key: what Kafka's default partitioner
    picks for that key (murmur2), so a site stays on one partition. Kept per
    key: aiokafka's murmur2 is Python, about 4 % of a gateway worker's time
    when it ran for every event (py-spy, gateway phase)."""
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
    """Route every message of a batch; forward their valid events together.

    `sources`: input topic -> the contract's topic kind. Each event goes
    to its shard's engine partition: a machine event to its site's (events
    of a gateway batch too), orders and shipments to that of "orders".
    Each engine partition gets one message holding its events in input
    order, as runs of consecutive events from one input partition:

        {"wall_us": ..., "runs": [{"source": "machine-state:2", "upto": 1841, "events": [...]}]}

    The engine applies each run as it would a message of its own, so a batch
    gives what the same events give forwarded one input message at a time
    (consecutive messages of one partition as if they were one). Runs keep
    the input order across partitions too: grouping each partition's events
    into one run would move, say, a shipment ahead of its order when their
    partitions come in that order, and change results. A message that would
    outgrow about `max_bytes` is split between input messages. The first
    forward carries `announce`: the input partitions this worker reads,
    when that set changed (the engine must know every input before it
    trusts any one).

    A message read before (`sent_before`) is marked `again`; its events
    already forwarded to their engine partition are not forwarded again,
    nor is its dead letter when that is on the topic already.
    """
    batch = Batch()
    before = sent_before or SentBefore()
    by_partition: dict[int, list[tuple[str, int, int, list[list[Any]]]]] = {}
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
        targets: dict[int, list[list[Any]]] = {}
        for shard, event in events:
            targets.setdefault(engine_partition(shard, engine_partitions), []).append(event)
        for target, wired in targets.items():
            if message.offset <= before.forwarded.get((*tp, target), -1):
                routed.again = True
                continue
            size = len(message.value or b"") * len(wired) // len(events)
            source = f"{message.topic}:{message.partition}"
            by_partition.setdefault(target, []).append((source, size, message.offset, wired))
    for target, items in by_partition.items():
        for value in _forwards(items, wall_us, announce, max_bytes):
            batch.forwards.append((target, value))
            announce = None
    return batch


def _forwards(
    items: list[tuple[str, int, int, list[list[Any]]]],
    wall_us: int,
    announce: list[str] | None,
    max_bytes: int,
) -> list[bytes]:
    """Engine-topic values for (source, input bytes, input offset, events) items,
    each about `max_bytes` at most unless a single item is larger."""
    # Pack by input size (forwarded JSON is of the same order), then check the result.
    groups: list[list[tuple[str, int, int, list[list[Any]]]]] = [[]]
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
    if all(event.ts_us <= limit_us for event in decoded.events):
        return decoded  # as almost always: nothing to take out
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
