"""The measurements of `kpimon bench` through the broker, each a function of the run.

Each phase takes the run (`devtools.bench_run.Bench`), starts what it
measures, waits for it with the progress line, and returns its figures; the
order of the phases and the summary are `devtools.bench.measure_all`. What
each phase measures, and how, is in `devtools.bench`'s docstring; the phases
without a broker are `devtools.bench_local`. At the end are the reductions
of the worker probe's samples to rates and latencies.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from devtools.bench_mix import Message, Mix, state_load
from devtools.bench_processes import BenchError, DeadLetters, Worker, http_get
from devtools.bench_produce import create_topics, paced, produce
from devtools.bench_run import Bench


def produce_shape(bench: Bench, shape: str, messages: Iterable[Message]) -> dict[str, int]:
    bench.bar.phase(f"produce {shape}")
    topics = bench.topics(shape)
    asyncio.run(create_topics(bench.bootstrap, dict.fromkeys(topics.values(), 4)))
    began = time.monotonic()
    sent, events = asyncio.run(
        produce(bench.bootstrap, topics, messages, lambda e: bench.bar.update(e, bench.n))
    )
    seconds = time.monotonic() - began
    bench.bar.done(f"{events:,} events in {sent:,} messages, {events / seconds:,.0f} ev/s")
    return {"messages": sent, "events": events}


def child_phase(bench: Bench, name: str, what: str, shape: str, expect: int, unit: str) -> dict:
    bench.bar.phase(name)
    out = bench.dir / f"{what}-{shape}.json"
    args = [
        what,
        "--bootstrap",
        bench.bootstrap,
        "--topics",
        ",".join(bench.topics(shape).values()),
        "--expect",
        str(expect),
        "--out",
        str(out),
        "--app-id",
        f"{bench.run}-bare-{shape}",
        "--data-dir",
        str(bench.dir / f"bare-{shape}"),
    ]
    child = bench.spawn(args, f"{what}-{shape}.log")
    deadline = time.monotonic() + bench.timeout(expect)
    try:
        while not out.exists():
            child.check()
            if time.monotonic() > deadline:
                raise BenchError(f"{name}: timed out; log {child.log}")
            with contextlib.suppress(OSError, ValueError):
                bench.bar.update(int((Path(f"{out}.progress")).read_text()), expect, unit)
            time.sleep(0.2)
        result = orjson.loads(out.read_bytes())
        result["vm"] = child.memory()
    finally:
        child.stop()
    result["seconds"] = result["last"] - result["first"]
    return result


def raw_phase(bench: Bench, shape: str) -> dict[str, Any]:
    """(a): the plain aiokafka consumer on the `shape` topics."""
    result = child_phase(bench, f"raw consumer {shape}", "raw", shape, bench.n, "ev")
    result["events_per_s"] = bench.n / result["seconds"]
    bench.bar.done(f"{result['events_per_s']:,.0f} ev/s")
    return result


def bare_phase(bench: Bench, shape: str, messages: int) -> dict[str, Any]:
    """(b): the bare Faust agent on the `shape` topics, which hold `messages`."""
    result = child_phase(bench, f"bare Faust {shape}", "faust-bare", shape, messages, "msg")
    result["messages_per_s"] = messages / result["seconds"]
    result["events_per_s"] = bench.n / result["seconds"]
    bench.bar.done(f"{result['messages_per_s']:,.0f} msg/s")
    return result


def kpimon_phase(bench: Bench, shape: str) -> dict[str, Any]:
    bench.bar.phase(f"kpimon {shape}")
    profile = None
    if bench.args.profile:
        Path(bench.args.profile).mkdir(parents=True, exist_ok=True)
        profile = str(Path(bench.args.profile).resolve() / f"worker-{shape}.prof")
    worker = bench.start_kpimon(shape, bench.topics(shape), profile)
    try:
        bench.wait_applied(worker, bench.n)
        series = worker.series(bench.n)
        vm = worker.child.memory()
    finally:
        worker.child.stop()
    first = worker.first_consumed
    done = _first_at(series, 3, bench.n)
    ingested = _first_at(series, 2, bench.n)
    rate = bench.n / (done - first)
    bench.bar.done(f"{rate:,.0f} ev/s")
    return {
        "events_per_s": rate,
        "seconds": done - first,
        "ingest_done_s": ingested - first,
        "worker_vm": vm,
    }


def split_phase(bench: Bench, shape: str) -> dict[str, Any]:
    """`kpimon_phase` with the roles in two processes (`worker.role`): an ingest
    worker and an engine worker in one group, on the messages of `shape`
    already produced. events/s = N / (the engine worker's last event applied -
    the ingest worker's first message consumed)."""
    bench.bar.phase(f"kpimon {shape}, roles split")
    profile = None
    if bench.args.profile:
        Path(bench.args.profile).mkdir(parents=True, exist_ok=True)
        profile = str(Path(bench.args.profile).resolve() / f"worker-{shape}-split")
    ingest, engine = bench.start_split(f"{shape}-split", bench.topics(shape), profile)
    try:
        bench.wait_applied(engine, bench.n)
        series = engine.series(bench.n)
        ingest.probe()  # its first message consumed
        vm = [ingest.child.memory(), engine.child.memory()]
    finally:
        ingest.child.stop()
        engine.child.stop()
    first = ingest.first_consumed
    done = _first_at(series, 3, bench.n)
    rate = bench.n / (done - first)
    bench.bar.done(f"{rate:,.0f} ev/s")
    return {"events_per_s": rate, "seconds": done - first, "worker_vm": vm}


def group_phase(
    bench: Bench,
    tag: str,
    messages: Iterable[Message],
    roles: Sequence[str],
    engine_partitions: int,
) -> dict[str, Any]:
    """kpimon workers in one consumer group on topics of their own, one of each
    of `roles` (`worker.role`): they join first, then the messages are
    produced (so no rebalance falls inside the measurement; the producer runs
    beside them). events/s = N / (the last worker's last event applied -
    the first message any consumed).

    A message the workers dead-letter ends the phase with `events_per_s` None
    and the first letter's reason (a worker that rejects gateway batches)."""
    if set(roles) == {"all"}:
        name = f"{tag}, {len(roles)} worker{'s' * (len(roles) > 1)}"
    else:
        name = f"{tag}, workers of roles {' + '.join(roles)}"
    bench.bar.phase(name)
    topics = bench.topics(tag)
    asyncio.run(create_topics(bench.bootstrap, dict.fromkeys(topics.values(), 4)))
    workers = bench.start_group(tag, topics, roles, engine_partitions)
    try:
        began = time.monotonic()
        sent, events = asyncio.run(produce(bench.bootstrap, topics, messages))
        produce_s = time.monotonic() - began
        try:
            _wait_group(bench, workers, events)
        except DeadLetters as exc:
            reason = asyncio.run(_first_letter(bench.bootstrap, f"{bench.run}-{tag}-dead-letter"))
            bench.bar.done(f"not measured: {exc.count} dead letters ({reason})")
            return {
                "events_per_s": None,
                "reason": f"the worker dead-lettered the batches: {reason}",
                "dead_letters": exc.count,
                "messages": sent,
            }
        ends, per_worker = [], []
        for worker in workers:
            series = worker.series(0)
            final = series[-1][3] if series else 0
            ends.append(_first_at(series, 3, final) if final else 0.0)
            per_worker.append(final)
        vm = [w.child.memory() for w in workers]
    finally:
        for worker in workers:
            worker.child.stop()
    first = min(w.first_consumed for w in workers if w.first_consumed is not None)
    seconds = max(ends) - first
    rate = events / seconds
    bench.bar.done(f"{rate:,.0f} ev/s in {sent:,} messages")
    return {
        "events_per_s": rate,
        "seconds": seconds,
        "messages": sent,
        "produce_s": produce_s,
        "engine_partitions": engine_partitions,
        "applied_by_worker": per_worker,
        "worker_vm": vm,
    }


def _wait_group(bench: Bench, workers: list[Worker], expect: int) -> None:
    deadline = time.monotonic() + bench.timeout(expect)
    while True:
        probes = []
        for worker in workers:
            worker.child.check()
            probes.append(worker.probe())
        letters = sum(p["dead_letters"] for p in probes if p is not None)
        if letters:
            raise DeadLetters(letters, workers[0].child.log)
        applied = sum(p["applied"] for p in probes if p is not None)
        bench.bar.update(applied, expect)
        if None not in probes and applied >= expect:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {expect} events; log {workers[0].child.log}")
        time.sleep(0.2)


async def _first_letter(bootstrap: str, topic: str) -> str:
    """The reason and error of the first dead letter on `topic`."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=5000, max_records=1)
        for records in batches.values():
            letter = orjson.loads(records[0].value)
            errors = letter.get("errors") or [{}]
            return f"{letter.get('reason')}: {errors[0].get('error', '')}"
    finally:
        await consumer.stop()
    return "unknown (no letter read back)"


def latency_phase(bench: Bench, rate: float) -> dict[str, Any]:
    bench.bar.phase("latency")
    topics = bench.topics("latency")
    asyncio.run(create_topics(bench.bootstrap, dict.fromkeys(topics.values(), 4)))
    worker = bench.start_kpimon("latency", topics)
    mix = Mix(bench.args.mix_machines, bench.args.seed + 1, 0, f"{bench.run}-lat-").messages(
        1 << 62
    )
    seconds = bench.args.latency_seconds or min(30.0, max(5.0, bench.n / rate))
    try:
        warm = asyncio.run(paced(bench.bootstrap, topics, mix, rate, 2.0))
        base = warm[-1][1] if warm else 0
        bench.wait_applied(worker, base)
        bench.bar.update(0, None)
        total = round(rate * seconds)
        log = asyncio.run(
            paced(bench.bootstrap, topics, mix, rate, seconds, lambda e: bench.bar.update(e, total))
        )
        sent = log[-1][1] if log else 0
        bench.wait_applied(worker, sent, base)
        series = worker.series(base + sent)
    finally:
        worker.child.stop()
    p50, p99 = _latencies(series, 3, log, base)
    ingest50, ingest99 = _latencies(series, 2, log, base)
    bench.bar.done(f"p50 {p50:.3f} s, p99 {p99:.3f} s at {sent / seconds:,.0f} ev/s")
    return {
        "p50_s": p50,
        "p99_s": p99,
        "to_ingest_p50_s": ingest50,
        "to_ingest_p99_s": ingest99,
        "rate": sent / seconds,
        "seconds": seconds,
        "events": sent,
    }


def rss_phase(bench: Bench) -> dict[str, Any]:
    bench.bar.phase("memory")
    machines, orders = bench.args.machines, bench.args.open_orders
    topics = bench.topics("rss")
    asyncio.run(create_topics(bench.bootstrap, dict.fromkeys(topics.values(), 4)))
    worker = bench.start_kpimon("rss", topics)
    try:
        load = state_load(machines, orders, time.time_ns() // 1000, f"{bench.run}-rss-")
        _, events = asyncio.run(produce(bench.bootstrap, topics, load))
        probe = bench.wait_applied(worker, events)
        done = time.time()
        deadline = time.monotonic() + 120
        while (probe["snapshot_wall"] or 0) <= done:
            worker.child.check()
            if time.monotonic() > deadline:
                raise BenchError(f"no snapshot after the load; log {worker.child.log}")
            time.sleep(0.2)
            probe = worker.probe() or probe
        before_views = worker.child.memory()
        for page in ("/kpi", "/metrics"):
            if http_get(worker.url + page, timeout=120) is None:
                raise BenchError(f"{page} did not answer; log {worker.child.log}")
        vm = worker.child.memory()
    finally:
        worker.child.stop()
    if probe["machines"] != machines or probe["open_orders"] != orders:
        raise BenchError(
            f"memory test state: {probe['machines']} machines, {probe['open_orders']} open "
            f"orders, expected {machines} and {orders}"
        )
    peak = vm["VmHWM"]
    bench.bar.done(f"peak RSS {peak / 2**20:,.0f} MiB")
    return {"peak_rss_bytes": peak, "before_views": before_views, "after_views": vm}


def _first_at(series: list[list[float]], column: int, count: int) -> float:
    for row in series:
        if row[column] >= count:
            return row[0]
    raise BenchError(f"the probe never saw {count} in column {column}")


def _latencies(
    series: list[list[float]], column: int, log: list[tuple[float, int]], base: int
) -> tuple[float, float]:
    """p50 and p99 of (time the probe's `column` count reached an event's position
    in the produced stream) - (its send time), over every event sent."""
    times = [row[0] for row in series]
    counts = [row[column] for row in series]
    latencies: list[float] = []
    before = 0
    for at, upto in log:
        i = bisect.bisect_left(counts, base + upto)
        latencies += [times[i] - at] * (upto - before)
        before = upto
    latencies.sort()
    return _quantile(latencies, 0.50), _quantile(latencies, 0.99)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        raise BenchError("no latency samples")
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]
