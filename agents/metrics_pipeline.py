"""Pipeline and health metric families: is the worker keeping up, and with what.

Per engine partition: late and duplicate events, the watermark, how far
window closing trails it, and the orders and machines held beside their
limits. Per worker: liveness and uptime, the relevant configuration, input
messages consumed, read again, received and dead-lettered, outputs
published, held back or skipped, and the consumer lag of every assigned
input partition (`input_lag`, from `input_highwater` and the offsets the
worker asked the broker for). Everything is read from `agents.runtime.Runtime`
and the engines at scrape time; labels and naming are described in
`agents.metrics`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, get_args

from faust.exceptions import NotReady

from agents.metrics_families import Families, seconds
from agents.runtime import Runtime, assignment_of
from streams.decode import ErrorReason
from streams.engine import REFUSALS, Engine
from streams.metrics_view import consumer_lag, engine_counters, window_close_delay_us
from streams.timeutil import US

Highwater = Callable[[], Mapping[tuple[str, int], int | None]]


def export_engine_health(out: Families, partition: str, engine: Engine) -> None:
    """One engine partition's counters, clock and state held."""
    names = {
        "late": (
            "kpimon_late_events_total",
            "Events older than the frontier: machine events within engine.revision_horizon "
            "revise closed windows; the rest are dead-lettered (too_late).",
        ),
        "duplicates": ("kpimon_duplicate_events_total", "Events with an event_id seen before."),
    }
    for (kind, source), count in engine_counters(engine).items():
        name, help_text = names[kind]
        out.counter(name, help_text, {"partition": partition, "source": source}, count)
    labels = {"partition": partition}
    out.gauge(
        "kpimon_watermark_timestamp_seconds",
        "Event-time watermark of the engine partition, Unix seconds.",
        labels,
        seconds(engine.watermark_us),
    )
    out.gauge(
        "kpimon_window_close_delay_seconds",
        "Watermark - the frontier up to which windows are closed (final).",
        labels,
        seconds(window_close_delay_us(engine)),
    )
    out.gauge(
        "kpimon_open_orders",
        "Open orders the partition holds (not decided yet); at most kpimon_open_orders_limit.",
        labels,
        len(engine.book.open),
    )
    out.gauge(
        "kpimon_machines_tracked",
        "Machines the partition holds; at most kpimon_machines_limit.",
        labels,
        len(engine.machines),
    )


def export_pipeline(out: Families, rt: Runtime, highwater: Highwater) -> None:
    """The worker's liveness, configuration, input and output counters and lag."""
    _worker(out, rt)
    _inputs(out, rt)
    _outputs(out, rt)
    for source in rt.settings.topics.sources().values():
        out.gauge(
            "kpimon_last_event_received_timestamp_seconds",
            "Wall-clock time the newest valid event of the source was received, Unix seconds.",
            {"source": source},
            rt.last_event_wall.get(source),
        )
    for (topic, partition), lag in input_lag(highwater(), rt).items():
        out.gauge(
            "kpimon_consumer_lag_messages",
            "Input messages not read yet, per assigned input partition: end offset - "
            "next offset to read (the larger of the committed offset and last read + 1).",
            {"topic": topic, "partition": str(partition)},
            lag,
        )


def _worker(out: Families, rt: Runtime) -> None:
    """Liveness and the configuration the alerts compare with."""
    out.gauge("kpimon_worker_up", "1 while the worker serves metrics.", {}, 1)
    out.gauge(
        "kpimon_worker_uptime_seconds",
        "Seconds since the worker started.",
        {},
        time.monotonic() - rt.started,
    )
    out.gauge(
        "kpimon_engine_partitions_assigned",
        "Engine partitions this worker holds.",
        {},
        len(rt.shards),
    )
    engine = rt.settings.engine
    if engine.silence_alert is not None:
        out.gauge(
            "kpimon_silence_alert_seconds",
            "Configured silence of a running machine after which it counts as silent.",
            {},
            engine.us("silence_alert") / US,
        )
    if engine.heartbeat_timeout is not None:
        out.gauge(
            "kpimon_heartbeat_timeout_seconds",
            "Configured (opt-in) silence after which a machine's time is no data.",
            {},
            engine.us("heartbeat_timeout") / US,
        )
    out.gauge(
        "kpimon_allowed_lateness_seconds",
        "Configured allowed lateness (watermark - frontier).",
        {},
        engine.us("allowed_lateness") / US,
    )
    out.gauge(
        "kpimon_machines_limit",
        "Configured engine.max_machines: machines one engine partition holds, at most.",
        {},
        engine.max_machines,
    )
    out.gauge(
        "kpimon_open_orders_limit",
        "Configured engine.max_open_orders: open orders one engine partition holds, at most.",
        {},
        engine.max_open_orders,
    )


def _inputs(out: Families, rt: Runtime) -> None:
    """Input messages per topic: consumed, read again, received, dead-lettered."""
    topics = rt.settings.topics
    for topic in topics.sources():
        labels = {"topic": topic}
        out.counter(
            "kpimon_messages_consumed_total",
            "Input messages read (an event or a batch each), each input offset once.",
            labels,
            rt.consumed.get(topic, 0),
        )
        out.counter(
            "kpimon_redelivered_messages_total",
            "Input messages read again after a restart or rebalance (their offsets were "
            "read, not yet committed): counted here, not as consumed, received or "
            "dead-lettered again, and what was sent for them is not sent again.",
            labels,
            rt.redelivered.get(topic, 0),
        )
        out.counter(
            "kpimon_events_received_total",
            "Valid events received.",
            labels,
            rt.events_in.get(topic, 0),
        )
    # Every (topic, reason) from the start, at 0: increase() sees the first one.
    known = {(t, r) for t in topics.sources() for r in get_args(ErrorReason)}
    known |= {
        (t, r)
        for t, kind in topics.sources().items()
        for r, kinds in REFUSALS.items()
        if kind in kinds
    }
    for topic, reason in sorted(known | set(rt.dead_letters)):
        out.counter(
            "kpimon_dead_letters_total",
            "Input messages (or events the engine refused) sent to the dead-letter topic, "
            "by first error reason.",
            {"topic": topic, "reason": reason},
            rt.dead_letters.get((topic, reason), 0),
        )


def _outputs(out: Families, rt: Runtime) -> None:
    """Outputs held back, published, and input messages skipped."""
    for stage, held in rt.undelivered().items():
        out.gauge(
            "kpimon_outputs_undelivered",
            "Outputs (forwards and dead letters at ingest; records, alerts and dead letters "
            "at the engine) not delivered after 5 sends and being sent again: their input "
            "is not acknowledged meanwhile.",
            {"stage": stage},
            held,
        )
    for output in ("records", "alerts"):
        out.counter(
            "kpimon_published_messages_total",
            "Messages published to kpi-windows (records) and kpi-alerts (alerts).",
            {"output": output},
            rt.published.get(output, 0),
        )
    for stage in ("ingest", "engine"):
        for outcome in ("refilled", "lost"):
            out.counter(
                "kpimon_skipped_messages_total",
                "Messages the consumer did not hand over (a hole in a partition's offsets, "
                "or a snapshot older than the committed offset): read back from the "
                "topic (refilled), or no longer there (lost).",
                {"stage": stage, "outcome": outcome},
                rt.skipped.get((stage, outcome), 0),
            )


def input_lag(
    highwater: Mapping[tuple[str, int], int | None], runtime: Runtime
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> input messages not read yet, for every assigned input partition.

    lag = end − next, in messages, where
    - end: the larger of the end offset the broker last told (`agents.progress`,
      asked every tick) and the consumer's cached high watermark, which is
      unknown after a restart until a fetch returns that partition;
    - next: the next offset to read: the larger of the group's committed
      offset (asked with the end offset) and the last offset read + 1; before
      either is known, where reading resumed (committed offset, else log start).

    So a quiet partition whose committed offset is its end shows 0 from the
    first tick after a restart. `highwater` holds the assigned partitions; one
    without an end offset or a next offset yet is left out.
    """
    ends, committed = runtime.input_ends.ends, runtime.input_ends.committed
    known_end: dict[tuple[str, int], int | None] = {}
    last_read: dict[tuple[str, int], int] = {}
    for tp, cached in highwater.items():
        told = ends.get(tp)
        candidates = [e for e in (cached, told[0] if told else None) if e is not None]
        known_end[tp] = max(candidates) if candidates else None
        nexts = [
            n
            for n in (
                committed.get(tp),
                runtime.ingested[tp] + 1 if tp in runtime.ingested else None,
            )
            if n is not None
        ]
        start = runtime.input_ends.starts.get(tp)
        if not nexts and start is not None:
            nexts = [start]
        if not nexts:  # unknown, not the whole partition: the next tick asks
            known_end[tp] = None
            continue
        last_read[tp] = max(nexts) - 1
    return consumer_lag(known_end, last_read)


def input_highwater(app: Any, sources: Mapping[str, str]) -> Highwater:
    """The Faust consumer's highwater per assigned input partition.

    Empty while the consumer is not running (start-up, shutdown); a
    partition revoked between reading the assignment and its highwater is
    left out. A scrape never fails for either.
    """

    def read() -> dict[tuple[str, int], int | None]:
        consumer = app.consumer
        found: dict[tuple[str, int], int | None] = {}
        assigned = [tp for tp in assignment_of(app) if tp.topic in sources]
        for tp in assigned:
            # aiokafka asserts the partition is still assigned.
            with contextlib.suppress(AssertionError, NotReady):
                found[tp.topic, tp.partition] = consumer.highwater(tp)
        return found

    return read
