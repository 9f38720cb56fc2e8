"""`kpimon bench`: throughput, latency and memory of the live pipeline, in one run.

    kpimon bench [--events 1000000] [--machines 10000] [--open-orders 100000]
                 [--broker kafka://host:port] [--json PATH] [--skip-rss] [-q]
                 [--horizon-machines 10000] [--skip-horizon] [--horizon-only]

Everything runs on this machine against one broker (the embedded one unless
`--broker` is given). Each measured consumer is its own subprocess
(`devtools.bench_workers`), so it has a core of its own apart from the
producer and the peak RSS is that process's `VmHWM` from /proc.

The events: a synthetic plant of `--mix-machines` machines (default 1,000;
10 per line, 100 per site) in rounds of 60 s of event time. Each round
every machine sends 5-9 counts and 1-3 state changes, and for each machine
0-2 order-side events follow (new orders; shipments, some late, short or
damaged; closes of short orders; cancellations): about 70 % counts, 20 %
states, 10 % orders and shipments. The stream ends ten minutes before
the bench starts and is never further out of order than one round, well
inside the default lateness. Every 997th event is checked with
`streams.decode.parse_event`.

The same N events are produced twice, before anything is timed, to their
own input topics (4 partitions each): **batched**, a machine's events of
one round as one message (a JSON array; order-side events are one per
message, as their keys differ), and **single**, one event per message.

Measurements (every rate is from the first message consumed to the last
event counted, so start-up and group joins are not in it):

(a) raw ceiling: a plain aiokafka consumer, no group, reading the input
    topics from the beginning and decoding every message with orjson.
(b) bare Faust: a Faust app with one agent that iterates the stream and
    does nothing (concurrency 1, as kpimon's agents).
(c) kpimon end to end: `start_worker` on a generated config (what
    `kpimon worker --config ... -q` runs), with a read-only probe added
    (see `devtools.bench_workers`): every 10 ms it reads the counters of
    messages consumed, events forwarded by the ingest agent and events
    applied by the engine shards (`events.*` in their stats, the counts
    `/kpi` shows) and notes the wall time when they change. "All KPIs
    final" is the moment the engine has applied all N events: events/s =
    N / (that moment - first message consumed), to within 10 ms.
(d) latency at half of (c)'s batched rate: a fresh worker; batched
    messages of the same mix, every event stamped with the wall time it is
    handed to the producer, paced to that rate for `--latency-seconds`
    after a 2 s warm-up. An event is visible when the engine's applied
    count reaches its position in the produced stream (the engine topic
    has one partition, so it applies in the order ingest forwarded them;
    across input partitions this is a first-in-first-out estimate). The
    probe's 10 ms sampling runs in the worker's event loop, so a step
    that holds the loop (closing windows, a snapshot) delays it too, as it
    delays `/kpi`. p50 and p99 over every event sent in the measured part.
(e) memory: a fresh worker is sent `--machines` machines (a state and a
    count each, one message per machine) and `--open-orders` orders (1-3
    lines, promised 30 days ahead, so they stay open). Once the engine has
    applied them all and taken a snapshot, `/kpi` and `/metrics` are read
    once (building the live view is part of serving those machines) and
    the worker's `VmHWM` is the peak RSS.

(f) revision-horizon memory: `devtools.bench_horizon` in a process of its
    own feeds an engine (no broker, no worker) 26 hours of on-change events
    from `--horizon-machines` machines and reports the memory the 24-hour
    revision horizon holds, and one snapshot's size and time (see that
    module). `--horizon-only` runs just this phase.

The worker settings are the defaults (engine windows 1m/1h/1d, snapshot
every 2 s, ticks every 1 s), with the consumer-group timeouts of the
integration tests (6 s session). Other processes on the machine take CPU
from the measured ones: the table shows the load average at the start
and at the end of each phase.

This module is the command: it checks the arguments, runs the phases in
order (`measure_all`) and prints the table. The run's shared state is
`devtools.bench_run`, the phases `devtools.bench_phases`, the events
`devtools.bench_mix` (sent by `devtools.bench_produce`), the measured
processes `devtools.bench_workers` (seen from here through
`devtools.bench_processes`) and the table `devtools.bench_report`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devtools.bench_mix import ROUND_US, Message, Mix, singles
from devtools.bench_phases import (
    bare_phase,
    horizon_phase,
    kpimon_phase,
    latency_phase,
    produce_shape,
    raw_phase,
    rss_phase,
)
from devtools.bench_processes import BenchError
from devtools.bench_report import table
from devtools.bench_run import Bench

JSON_KEYS = (
    "raw_events_per_s",
    "faust_bare_per_s",
    "batched_events_per_s",
    "single_events_per_s",
    "latency_p50_s",
    "latency_p99_s",
    "peak_rss_bytes",
    "events",
    "machines",
    "open_orders",
    "horizon_bytes",
)
SHAPES = ("batched", "single")


def measure_all(bench: Bench) -> dict[str, Any]:
    """(a) to (f) in order; returns the figures of `JSON_KEYS`, and leaves the
    details of every phase in `bench.details`."""
    args = bench.args
    now = time.time_ns() // 1000
    rounds = Mix.rounds_for(bench.n, args.mix_machines)
    start = now - now % ROUND_US - (rounds + 10) * ROUND_US

    def mix() -> Iterator[Message]:
        return Mix(args.mix_machines, args.seed, start, f"{bench.run}-").messages(bench.n)

    d = bench.details
    d["load_average"] = os.getloadavg()
    d["cpus"] = os.cpu_count()
    produced = {"batched": produce_shape(bench, "batched", mix()), "single": None}
    produced["single"] = produce_shape(bench, "single", singles(mix()))
    d["produced"] = produced
    raw = {shape: raw_phase(bench, shape) for shape in SHAPES}
    bare = {shape: bare_phase(bench, shape, produced[shape]["messages"]) for shape in SHAPES}
    d["raw"], d["faust_bare"] = raw, bare
    kpimon = {shape: kpimon_phase(bench, shape) for shape in SHAPES}
    d["kpimon"] = kpimon
    d["latency"] = latency_phase(bench, kpimon["batched"]["events_per_s"] / 2)
    d["memory"] = None if args.skip_rss else rss_phase(bench)
    d["horizon"] = None if args.skip_horizon else horizon_phase(bench)
    d["load_average_by_phase"] = bench.bar.loads
    return {
        "raw_events_per_s": raw["batched"]["events_per_s"],
        "faust_bare_per_s": bare["single"]["events_per_s"],
        "batched_events_per_s": kpimon["batched"]["events_per_s"],
        "single_events_per_s": kpimon["single"]["events_per_s"],
        "latency_p50_s": d["latency"]["p50_s"],
        "latency_p99_s": d["latency"]["p99_s"],
        "peak_rss_bytes": None if d["memory"] is None else d["memory"]["peak_rss_bytes"],
        "events": bench.n,
        "machines": None if args.skip_rss else args.machines,
        "open_orders": None if args.skip_rss else args.open_orders,
        "horizon_bytes": None if d["horizon"] is None else d["horizon"]["engine_bytes"],
    }


def run_bench(args: argparse.Namespace) -> int:
    if args.events < 1 or args.mix_machines < 1 or args.machines < 1 or args.open_orders < 0:
        print("kpimon bench: counts must be positive", file=sys.stderr)
        return 2
    bench = Bench(args)
    if args.horizon_only:
        return run_horizon_only(bench)
    ok = False
    try:
        if args.broker:
            bench.bootstrap = args.broker.removeprefix("kafka://")
        else:
            from devtools.broker import EmbeddedBroker

            bench.broker = EmbeddedBroker(log_path=bench.dir / "tansu.log").start()
            bench.bootstrap = bench.broker.bootstrap
        result = measure_all(bench)
        ok = True
    except BenchError as exc:
        print(f"\nkpimon bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nkpimon bench: interrupted", file=sys.stderr)
        return 130
    finally:
        bench.close(ok)
    print(table(result, bench.details, args))
    if args.json:
        data = {key: result[key] for key in JSON_KEYS} | {"details": bench.details}
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


def run_horizon_only(bench: Bench) -> int:
    """`kpimon bench --horizon-only`: (f) alone, in-process engine, no broker."""
    try:
        result = horizon_phase(bench)
    except BenchError as exc:
        print(f"\nkpimon bench: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.close(True)
    print(result["text"])
    if bench.args.json:
        Path(bench.args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0
