"""What `kpimon bench` runs: the synthetic events, the producers, and the
processes it measures (each its own subprocess):

    python -m devtools.bench_workers raw --bootstrap H:P --topics a,b,c --expect N --out R.json
    python -m devtools.bench_workers faust-bare --bootstrap H:P --topics a,b,c --expect M ...
    python -m devtools.bench_workers kpimon --config kpimon.toml [--profile P.prof]

- `raw`: a plain aiokafka consumer (no group) reads the topics from the
  beginning and decodes every message with orjson, counting events (a JSON
  array is a batch). Writes {"first", "last", "events", "messages"} (wall
  times of the first message received and of the N-th event decoded).
- `faust-bare`: a Faust app with one agent (concurrency 1) that iterates
  the stream and does nothing else. Writes the wall times of its first and
  its M-th message.
- `kpimon`: the real worker, `agents.worker.start_worker` on the given
  config, exactly what `kpimon worker --config ... -q` runs, plus a probe:
  a task that every 10 ms reads the worker's counters (messages consumed,
  valid events forwarded, events applied by each engine shard: the shard
  stats `events.*`) and notes the wall time whenever they change, and a
  page `/bench` that returns them. It only reads; no KPI code changes. The
  probe is there because `/kpi` builds the whole live view (every
  machine's provisional windows) on each call: polling it at a fine
  interval would slow the worker being measured. `--profile` runs the
  whole worker under cProfile and writes the stats when it stops.

Both `raw` and `faust-bare` also write `<out>.progress` (the count so far)
about four times a second, for the bench's progress bar.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from streams.timeutil import US, iso

PROBE_INTERVAL_S = 0.01
ROUND_US = 60 * US


def _write(path: str, data: Any) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_bytes(orjson.dumps(data))
    os.replace(tmp, path)


# ----------------------------------------------------------------- the events

_STATES = ("running", "idle", "down", "setup", "planned_stop")
_STATE_WEIGHTS = (60, 10, 15, 10, 5)
_REASONS = {"idle": "no_material", "down": "jam", "setup": "changeover", "planned_stop": "break"}
Message = tuple[str, str, list[dict[str, Any]]]  # (topic kind, key, events)


def machine_names(i: int) -> tuple[str, str, str]:
    """(site, line, machine) of machine i: 10 machines per line, 100 per site."""
    return f"site-{i // 100}", f"line-{i // 10}", f"m-{i}"


class Mix:
    """The synthetic plant: `messages(n)` yields batched messages of n events in all."""

    def __init__(self, machines: int, seed: int, start_us: int, prefix: str) -> None:
        self.machines = machines
        self.rng = random.Random(seed)
        self.start_us = start_us
        self.prefix = prefix
        self.ids = itertools.count(1)
        self.orders = itertools.count(1)
        self.state = ["running"] * machines
        self.pending: list[tuple[int, int, str, str, str, list[dict[str, Any]]]] = []

    @staticmethod
    def rounds_for(n: int, machines: int) -> int:
        return max(1, math.ceil(n / (10 * machines)))

    def _id(self) -> str:
        return f"{self.prefix}{next(self.ids)}"

    def messages(self, n: int) -> Iterator[Message]:
        left = n
        for round_no in itertools.count():
            t0 = self.start_us + round_no * ROUND_US
            for m in range(self.machines):
                group = [self._machine_batch(m, t0)]
                extra = self.rng.choice((0, 1, 1, 2))
                group += [self._order_side(round_no, t0) for _ in range(extra)]
                for kind, key, events in group:
                    events = events[:left]
                    left -= len(events)
                    yield kind, key, events
                    if left <= 0:
                        return

    def _machine_batch(self, m: int, t0: int) -> Message:
        rng = self.rng
        site, line, machine = machine_names(m)
        n_counts, n_states = rng.randint(5, 9), rng.randint(1, 3)
        step = ROUND_US // (n_counts + 1)
        marks = [(t0 + (j + 1) * step + rng.randrange(1000) * 1000, 1) for j in range(n_counts)]
        marks += [(t0 + rng.randrange(ROUND_US // 1000) * 1000, 0) for _ in range(n_states)]
        events = []
        for ts, is_count in sorted(marks):
            base = {"event_id": self._id(), "ts": iso(ts), "site": site, "line": line}
            if is_count:
                running = self.state[m] == "running"
                total = rng.randint(3, 6) if running else 0
                good = total - (1 if total and rng.random() < 0.1 else 0)
                events.append(
                    {
                        "type": "count",
                        **base,
                        "machine": machine,
                        "product": f"SKU-{m % 50}",
                        "ideal_cycle_s": 1.0 + (m % 7) * 0.5,
                        "total": total,
                        "good": good,
                    }
                )
            else:
                state = rng.choices(_STATES, _STATE_WEIGHTS)[0]
                self.state[m] = state
                events.append(
                    {
                        "type": "state",
                        **base,
                        "machine": machine,
                        "state": state,
                        "reason": _REASONS.get(state),
                    }
                )
        return "machine-state", machine, events

    def _order_side(self, round_no: int, t0: int) -> Message:
        rng = self.rng
        ts = t0 + rng.randrange(ROUND_US // 1000) * 1000
        if self.pending and self.pending[0][0] <= round_no:
            _, _, follow, order_id, direction, lines = heapq.heappop(self.pending)
            return self._follow_up(round_no, ts, follow, order_id, direction, lines)
        number = next(self.orders)
        order_id = f"{self.prefix}O{number}"
        direction = "outbound" if rng.random() < 0.7 else "inbound"
        lines = [
            {"line_no": i, "sku": f"SKU-{rng.randrange(500)}", "qty": float(rng.randint(1, 50))}
            for i in range(1, rng.randint(1, 3) + 1)
        ]
        draw = rng.random()
        follow = "cancel" if draw < 0.04 else "short" if draw < 0.12 else "ship"
        due = round_no + rng.randint(1, 8)
        heapq.heappush(self.pending, (due, number, follow, order_id, direction, lines))
        partner = f"C-{rng.randrange(50)}" if direction == "outbound" else f"S-{rng.randrange(20)}"
        event = {
            "type": "order",
            "event_id": self._id(),
            "ts": iso(ts),
            "order_id": order_id,
            "direction": direction,
            "partner": partner,
            "segment": rng.choice("ABC"),
            "promised_at": iso(ts + rng.randint(2, 8) * ROUND_US),
            "lines": lines,
        }
        return "orders", order_id, [event]

    def _follow_up(
        self,
        round_no: int,
        ts: int,
        follow: str,
        order_id: str,
        direction: str,
        lines: list[dict[str, Any]],
    ) -> Message:
        rng = self.rng
        base = {"event_id": self._id(), "ts": iso(ts), "order_id": order_id}
        if follow == "cancel":
            return "orders", order_id, [{"type": "order_cancelled", **base}]
        if follow == "close":
            return "orders", order_id, [{"type": "order_closed", **base}]
        shipped = []
        for line in lines:
            qty = line["qty"] - (1.0 if follow == "short" and line["line_no"] == 1 else 0.0)
            damaged = 1.0 if qty >= 1 and rng.random() < 0.03 else 0.0
            shipped.append({"line_no": line["line_no"], "qty": qty, "damaged_qty": damaged})
        if follow == "short":
            due = round_no + rng.randint(1, 3)
            heapq.heappush(self.pending, (due, 0, "close", order_id, direction, lines))
        event = {
            "type": "shipment",
            **base,
            "shipment_id": f"SH-{base['event_id']}",
            "direction": direction,
            "delivered_at": base["ts"],
            "documents_ok": rng.random() >= 0.03,
            "lines": shipped,
        }
        return "shipments", order_id, [event]


def restamp(events: list[dict[str, Any]], now_us: int) -> None:
    """Live events for the latency test: everything happens now."""
    text = iso(now_us)
    for event in events:
        event["ts"] = text
        if "promised_at" in event:
            event["promised_at"] = iso(now_us + 5 * ROUND_US)
        if "delivered_at" in event:
            event["delivered_at"] = text


def state_load(machines: int, orders: int, now_us: int, prefix: str) -> Iterator[Message]:
    """(e): a state and a count per machine, then open orders promised 30 days ahead."""
    rng = random.Random(11)
    ts = iso(now_us - 2 * ROUND_US)
    for m in range(machines):
        site, line, machine = machine_names(m)
        where = {"ts": ts, "site": site, "line": line, "machine": machine}
        yield (
            "machine-state",
            machine,
            [
                {"type": "state", "event_id": f"{prefix}s{m}", **where, "state": "running"},
                {
                    "type": "count",
                    "event_id": f"{prefix}c{m}",
                    **where,
                    "product": f"SKU-{m % 50}",
                    "ideal_cycle_s": 2.0,
                    "total": 10,
                    "good": 9,
                },
            ],
        )
    promised = iso(now_us + 30 * 86_400 * US)
    for n in range(orders):
        order_id = f"{prefix}O{n}"
        lines = [
            {"line_no": i, "sku": f"SKU-{rng.randrange(500)}", "qty": float(rng.randint(1, 50))}
            for i in range(1, rng.randint(1, 3) + 1)
        ]
        event = {
            "type": "order",
            "event_id": f"{prefix}o{n}",
            "ts": iso(now_us - ROUND_US),
            "order_id": order_id,
            "direction": "outbound" if n % 10 < 7 else "inbound",
            "partner": f"C-{n % 50}",
            "segment": "ABC"[n % 3],
            "promised_at": promised,
            "lines": lines,
        }
        yield "orders", order_id, [event]


def singles(messages: Iterable[Message]) -> Iterator[Message]:
    for kind, key, events in messages:
        for event in events:
            yield kind, key, [event]


def encode(events: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(events[0] if len(events) == 1 else events)


# ------------------------------------------------------------------- producing


async def produce(
    bootstrap: str,
    topics: dict[str, str],
    messages: Iterable[Message],
    tick: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Send as fast as the broker takes it; returns (messages, events)."""
    from aiokafka import AIOKafkaProducer

    from streams.decode import parse_event

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    sent = events = 0
    pending = []
    try:
        for kind, key, group in messages:
            for event in group:
                if (events := events + 1) % 997 == 1:
                    parse_event(event)  # the mix must be contract-valid
            pending.append(await producer.send(topics[kind], encode(group), key=key.encode()))
            sent += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
                if tick:
                    tick(events)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent, events


async def paced(
    bootstrap: str,
    topics: dict[str, str],
    messages: Iterator[Message],
    rate: float,
    seconds: float,
    tick: Callable[[int], None] | None = None,
) -> list[tuple[float, int]]:
    """Send at `rate` events/s for `seconds`, each event stamped with its send time.
    Returns (send time, events sent so far including this message) per message."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    log: list[tuple[float, int]] = []
    sent = 0
    try:
        began = time.time()
        while (elapsed := time.time() - began) < seconds:
            while sent < rate * elapsed:
                kind, key, events = next(messages)
                now = time.time()
                restamp(events, int(now * US))
                await producer.send(topics[kind], encode(events), key=key.encode())
                sent += len(events)
                log.append((now, sent))
            if tick and len(log) % 100 == 0:
                tick(sent)
            await asyncio.sleep(0.005)
        await producer.flush()
    finally:
        await producer.stop()
    return log


async def create_topics(bootstrap: str, plan: dict[str, int]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(t, n, 1) for t, n in plan.items()])
        for entry in response.topic_errors:
            if entry[1] and for_code(entry[1]) is not TopicAlreadyExistsError:
                raise RuntimeError(f"could not create topic {entry[0]}: error {entry[1]}")
    finally:
        await admin.close()


# --------------------------------------------------------------------- raw


async def _raw(bootstrap: str, topics: list[str], expect: int, out: str) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    events = messages = 0
    first = last = None
    shown = time.monotonic()
    loads = orjson.loads
    try:
        while events < expect:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                if first is None:
                    first = time.time()
                for record in records:
                    value = loads(record.value)
                    events += len(value) if isinstance(value, list) else 1
                messages += len(records)
            if events >= expect:
                last = time.time()
            elif time.monotonic() - shown > 0.25:
                shown = time.monotonic()
                _write(out + ".progress", events)
    finally:
        await consumer.stop()
    _write(out, {"first": first, "last": last, "events": events, "messages": messages})


# ---------------------------------------------------------------- faust bare


def _faust_bare(
    bootstrap: str, topics: list[str], expect: int, out: str, app_id: str, data_dir: str
) -> int:
    import faust

    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=data_dir,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=6.0,
        broker_commit_interval=1.0,
        topic_replication_factor=1,
        logging_config=None,
    )
    source = app.topic(
        *topics, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    state: dict[str, Any] = {"n": 0, "first": None, "last": None}

    @app.agent(source, concurrency=1)
    async def bare(stream: Any) -> None:
        async for _ in stream:
            state["n"] += 1
            if state["first"] is None:
                state["first"] = time.time()
            if state["n"] == expect:
                state["last"] = time.time()
                _write(out, {"first": state["first"], "last": state["last"], "messages": expect})

    @app.timer(0.25)
    async def progress() -> None:
        _write(out + ".progress", state["n"])

    Path(data_dir).mkdir(parents=True, exist_ok=True)
    worker = faust.Worker(
        app, loglevel="WARNING", quiet=True, logfile=str(Path(data_dir) / "faust.log")
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


# -------------------------------------------------------------- kpimon probe


def engine_events(runtime: Any) -> int:
    """Events the engine shards have applied (their `events.*` stats)."""
    return sum(
        n
        for shard in list(runtime.shards.values())
        for key, n in shard.engine.stats.items()
        if key.startswith("events.")
    )


def install_probe(running: Any) -> None:
    """Counters of a running worker, sampled every 10 ms, served at /bench."""
    app, runtime = running.app, running.runtime
    sources = runtime.settings.topics.sources()
    series: list[tuple[float, int, int, int]] = []  # (wall, consumed, forwarded, applied)
    state: dict[str, Any] = {"first_consumed": None}

    def reading() -> tuple[int, int, int]:
        return (
            sum(runtime.consumed.values()),
            sum(runtime.events_in.values()),
            engine_events(runtime),
        )

    @app.task
    async def sample() -> None:
        last = (0, 0, 0)
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            now = time.time()
            current = reading()
            if current != last:
                if state["first_consumed"] is None and current[0]:
                    state["first_consumed"] = now
                series.append((now, *current))
                last = current

    def assigned() -> int:
        with contextlib.suppress(Exception):
            return sum(1 for tp in app.consumer.assignment() if tp.topic in sources)
        return 0

    @app.page("/bench")
    async def bench(web: Any, request: Any) -> Any:
        consumed, forwarded, applied = reading()
        offset = time.time() - time.monotonic()
        body = {
            "now": time.time(),
            "assigned": assigned(),
            "first_consumed": state["first_consumed"],
            "consumed": consumed,
            "forwarded": forwarded,
            "applied": applied,
            "dead_letters": sum(runtime.dead_letters.values()),
            "snapshot_wall": max((offset + t for t in runtime.snapshot_at.values()), default=None),
            "machines": sum(len(s.engine.machines) for s in runtime.shards.values()),
            "open_orders": sum(len(s.engine.book.open) for s in runtime.shards.values()),
            "last_change": series[-1][0] if series else None,
        }
        if request.query.get("series"):
            body["series"] = series
        return web.json(body)


def _kpimon(config: str, profile: str | None) -> int:
    from agents.settings import load_settings
    from agents.worker import start_worker

    settings = load_settings(config)
    if not profile:
        return start_worker(settings, extra=install_probe)
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        return start_worker(settings, extra=install_probe)
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


# ---------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench_workers")
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("raw", "faust-bare"):
        p = sub.add_parser(name)
        p.add_argument("--bootstrap", required=True)
        p.add_argument("--topics", required=True, help="comma-separated")
        p.add_argument("--expect", type=int, required=True, help="events (raw) or messages")
        p.add_argument("--out", required=True)
        p.add_argument("--app-id", default="kpimon-bench-bare")
        p.add_argument("--data-dir", default=".kpimon-bench-bare")
    p = sub.add_parser("kpimon")
    p.add_argument("--config", required=True)
    p.add_argument("--profile", help="write cProfile stats of the whole worker here")
    args = parser.parse_args(argv)
    if args.what == "kpimon":
        return _kpimon(args.config, args.profile)
    topics = args.topics.split(",")
    if args.what == "raw":
        asyncio.run(_raw(args.bootstrap, topics, args.expect, args.out))
        return 0
    return _faust_bare(args.bootstrap, topics, args.expect, args.out, args.app_id, args.data_dir)


if __name__ == "__main__":
    sys.exit(main())
