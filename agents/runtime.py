"""What a worker process knows besides its tables: the engine shards it
holds, counters, and the state of ingest and of its outputs.

Ingest (`agents.ingest`), the engine partitions (`agents.engine_runner`) and
the clock ticks (`agents.ticks`) fill it in; the HTTP views (`agents.web`, the
wall), the metrics collector (`agents.metrics`) and the console summary read it.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from faust.exceptions import NotReady

from agents.batch_producer import BatchProducer
from agents.health import IngestProgress
from agents.outbox import ATTEMPTS, Outbox
from agents.pipeline import SentBefore, Shard
from agents.progress import InputEnds
from agents.settings import Settings
from streams.live import live_view


@dataclass
class Runtime:
    """What the worker process knows besides the tables: counters and shards."""

    settings: Settings
    embedded: bool
    shards: dict[int, Shard] = field(default_factory=dict)
    unacked: dict[int, list[Any]] = field(default_factory=dict)
    read_back: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # unacked ranges
    snapshot_at: dict[int, float] = field(default_factory=dict)  # monotonic, end of the last
    snapshot_s: dict[int, float] = field(default_factory=dict)  # how long the last one took
    consumed: Counter[str] = field(default_factory=Counter)  # per input topic, each offset once
    redelivered: Counter[str] = field(default_factory=Counter)  # per input topic: read again
    ingested: dict[tuple[str, int], int] = field(default_factory=dict)  # last offset read
    input_ends: InputEnds = field(default_factory=InputEnds)  # end offsets, fresh
    announced: list[str] = field(default_factory=list)  # input partitions the engine was told of
    events_in: Counter[str] = field(default_factory=Counter)  # valid events per input topic
    dead_letters: Counter[tuple[str, str]] = field(default_factory=Counter)  # (topic, reason)
    last_event_wall: dict[str, float] = field(default_factory=dict)  # per source
    published: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    last_tick_seen: float | None = None  # monotonic time the engine last applied a tick
    outboxes: dict[int, Outbox] = field(default_factory=dict)  # sent, delivery unchecked
    skipped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (stage, outcome)
    next_input: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to ingest
    last_tick_delivered: float | None = None  # monotonic time the broker last acked a tick
    joined: bool = False  # the consumer group has given this worker an assignment
    ingest_progress: IngestProgress = field(default_factory=IngestProgress)  # for /healthz
    ingest_processed: float | None = None  # monotonic time ingest last processed input, /livez
    engine_applied: float | None = None  # monotonic time the engine last applied a message
    ingest_box: Outbox | None = None  # forwards and dead letters of the batch being ingested
    outputs: BatchProducer | None = None  # the engine's outputs' producer (agents.batch_producer)
    resumed_at: dict[tuple[str, int], int] = field(default_factory=dict)  # to look back from
    sent_before: SentBefore = field(default_factory=SentBefore)  # by earlier reads
    engine_letters: dict[int, set[tuple[int, int]]] = field(default_factory=dict)  # sent before

    def views(self) -> list[dict[str, Any]]:
        return [{"partition": p, **live_view(s.engine)} for p, s in sorted(self.shards.items())]

    def undelivered(self) -> dict[str, int]:
        """Stage -> outputs held back after `ATTEMPTS` failed sends (see `agents.outbox`)."""
        engine = sum(box.undelivered for box in self.outboxes.values())
        return {"ingest": self.ingest_box.undelivered if self.ingest_box else 0, "engine": engine}

    def undelivered_reason(self) -> str | None:
        """Why /healthz fails while an output cannot be delivered, else None."""
        held = {stage: n for stage, n in self.undelivered().items() if n}
        if not held:
            return None
        boxes = [self.ingest_box, *self.outboxes.values()]
        failure = next((b.failure for b in boxes if b is not None and b.failure), None)
        counts = ", ".join(f"{n} of {stage}" for stage, n in held.items())
        return (
            f"outputs not delivered after {ATTEMPTS} sends, their input held back: {counts} "
            f"(latest: {failure})"
        )


def applied_events(runtime: Runtime) -> int:
    """Events the engine shards of this worker have applied (their `events.*` stats)."""
    return sum(
        n
        for shard in list(runtime.shards.values())
        for key, n in shard.engine.stats.items()
        if key.startswith("events.")
    )


def pipeline_stats(runtime: Runtime) -> dict[str, Any]:
    return {
        "role": runtime.settings.worker.role,  # ingest only: no KPIs here (README, Scale out)
        "consumed": dict(runtime.consumed),
        "redelivered": dict(runtime.redelivered),
        "events": dict(runtime.events_in),
        "dead_letters": {f"{t}/{r}": n for (t, r), n in runtime.dead_letters.items()},
        "published": dict(runtime.published),
        "uptime_s": round(time.monotonic() - runtime.started, 1),
    }


def assignment_of(app: Any) -> Any:
    """The consumer's assignment; none while it is not running (`NotReady`,
    e.g. `ConsumerNotStarted` before its thread has started: the web server
    answers first, and a probe then gets 503 "not in the consumer group
    yet", a scrape no partitions, not a 500)."""
    try:
        return app.consumer.assignment()
    except NotReady:
        return set()
