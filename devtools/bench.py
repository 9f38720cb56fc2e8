"""`kpimon bench`: throughput, latency, memory and replay cost, in one run.

    kpimon bench [--quick] [--events 1000000] [--machines 10000] [--open-orders 100000]
                 [--mix-machines 1000] [--replay-days 10,100] [--broker kafka://host:port]
                 [--json PATH] [--skip-rss] [--horizon] [--horizon-only] [-q]

Everything runs on this machine against one broker (the embedded one unless
`--broker` is given). Each measured consumer is its own subprocess
(`devtools.bench_workers`), so it has a core of its own apart from the
producer and the peak RSS is that process's `VmHWM` from /proc. `--quick`
takes the small sizes of `SIZES` (a CI run of about two minutes, the same
figures and JSON keys); a size given explicitly wins.

The events: a synthetic plant of `--mix-machines` machines (10 per line,
100 per site) in rounds of 60 s of event time. Each round every machine
sends 5-9 counts and 1-3 state changes, and for each machine 0-2
order-side events follow (new orders; shipments, some late, short or
damaged; closes of short orders; cancellations): about 70 % counts, 20 %
states, 10 % orders and shipments. The stream ends ten minutes before the
bench starts and is never further out of order than one round. Every 997th
event is checked with `streams.decode.parse_event`. The same N events in
three message shapes (`devtools.bench_mix`): **batched**, a machine's
events of one round as one message (order-side events one per message, as
their keys differ); **single**, one event per message; **gateway**, a line
gateway's 100 events of several machines of one line per message, keyed by
the line (order-side events as in batched).

The figures of `--json` (every rate from the first message consumed to the
last event counted, so start-up and group joins are not in it):

- `raw_events_per_s` (a): a plain aiokafka consumer, no group, reading the
  batched topics from the beginning, decoding every message with orjson.
- `faust_bare_single_per_s`, `faust_bare_batched_per_s` (b): a Faust app
  with one agent that iterates the stream and does nothing (concurrency 1,
  as kpimon's agents), on the single and the batched topics; events/s.
- `engine_events_per_s`: the engine in-process on the same N batched
  events, no Kafka (`devtools.bench_inprocess`: decode and validate as
  ingest does, apply, windows closing as they fall due).
- `single_events_per_s`, `batched_events_per_s`: `start_worker` on a
  generated config (what `kpimon worker --config ... -q` runs) with a
  read-only probe (`devtools.bench_probe`): every 10 ms it notes the wall
  time when the counters of messages consumed, events forwarded by ingest
  and events applied by the engine change. events/s = N / (the engine has
  applied all N - first message consumed), to within 10 ms.
- `gateway_events_per_s`, `two_workers_gateway_events_per_s`: one worker,
  then two workers in one consumer group (2 engine partitions in both, so
  the second worker can take one), on the gateway shape. The workers join
  first and the messages are produced then (`bench_phases.group_phase`),
  so no rebalance falls inside the measurement; the producer runs beside
  them. If the worker dead-letters the batches (a worker that requires a
  message's key to be each event's machine: `key_mismatch`), the figure is
  null and `null_reasons` gives the first letter's reason.
- `single_split_events_per_s`, `batched_split_events_per_s`: the single
  and batched phases again with the roles in two processes
  (`worker.role`): an engine worker, then an ingest worker in the same
  group (`bench_run.Bench.start_split`). events/s = N / (the engine
  worker has applied all N - the ingest worker's first message consumed).
  Two processes against bare Faust's one: what a deployment on two cores
  gets per pair of workers, not what one process does.
- `gateway_split_events_per_s`: the gateway phase again with an engine
  worker and an ingest worker in the group (the engine worker joins first
  and holds both engine partitions), measured as `gateway_events_per_s`.
- `latency_p50_s`, `latency_p99_s`: a fresh worker at half of the batched
  rate just measured; batched messages, every event stamped with the wall
  time it is handed to the producer, paced for `--latency-seconds` after a
  2 s warm-up. An event is visible when the engine's applied count reaches
  its position in the produced stream (one engine partition, so applied in
  the order forwarded; across input partitions a first-in-first-out
  estimate). The probe runs in the worker's event loop, so a step that
  holds the loop (closing windows, a snapshot) delays it too, as it delays
  `/kpi`.
- `peak_rss_bytes`: a fresh worker is sent `--machines` machines (a state
  and a count each) and `--open-orders` orders (promised 30 days ahead, so
  they stay open); once applied and snapshotted, `/kpi` and `/metrics` are
  read once, and the worker's `VmHWM` is the peak RSS.
- `replay_us_per_event_short`, `replay_us_per_event_long`: `kpimon replay`
  in-process of the simulator's plant over `--replay-days` (10 and 100
  days; `devtools.bench_inprocess`); long / short shows whether the cost
  per event grows with the history.
- `events`, `machines`, `open_orders`: the sizes; `horizon_bytes` the
  revision horizon's memory (`devtools.bench_horizon`, only with
  `--horizon`: about 30 minutes at 10,000 machines; `--horizon-only` runs
  just that). A figure that could not be measured is null, with its reason
  in `null_reasons`; `details` holds every phase's particulars.

The worker settings are the defaults (engine windows 1m/1h/1d, snapshot
every 2 s, ticks every 1 s), with the consumer-group timeouts of the
integration tests (6 s session). Other processes on the machine take CPU
from the measured ones: the table shows the load average at the start and
at the end of each phase. The targets (ratios within one run) and their
marks are `devtools.bench_report.TARGETS`.

This module is the command: it checks the arguments, runs the phases in
order (`measure_all`) and prints the table. The run's shared state is
`devtools.bench_run`, the phases through the broker `devtools.bench_phases`
and those without one `devtools.bench_local`, the events
`devtools.bench_mix` (sent by `devtools.bench_produce`), the measured
processes `devtools.bench_workers` and `devtools.bench_inprocess` (seen
from here through `devtools.bench_processes`) and the table
`devtools.bench_report`.
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

from devtools.bench_local import engine_phase, horizon_phase, replay_phase
from devtools.bench_mix import ROUND_US, Message, Mix, gateway, singles
from devtools.bench_phases import (
    bare_phase,
    group_phase,
    kpimon_phase,
    latency_phase,
    produce_shape,
    raw_phase,
    rss_phase,
    split_phase,
)
from devtools.bench_processes import BenchError
from devtools.bench_report import table
from devtools.bench_run import Bench

JSON_KEYS = (
    "raw_events_per_s",
    "faust_bare_single_per_s",
    "faust_bare_batched_per_s",
    "engine_events_per_s",
    "single_events_per_s",
    "batched_events_per_s",
    "gateway_events_per_s",
    "two_workers_gateway_events_per_s",
    "single_split_events_per_s",
    "batched_split_events_per_s",
    "gateway_split_events_per_s",
    "latency_p50_s",
    "latency_p99_s",
    "peak_rss_bytes",
    "replay_us_per_event_short",
    "replay_us_per_event_long",
    "events",
    "machines",
    "open_orders",
    "horizon_bytes",
)
SHAPES = ("batched", "single")
SIZES = {
    # option: (full run, --quick)
    "events": (1_000_000, 10_000),
    "mix_machines": (1000, 200),
    "machines": (10_000, 2000),
    "open_orders": (100_000, 10_000),
    "horizon_machines": (10_000, 100),
    "replay_days": ("10,100", "1,10"),
}
GATEWAY_ENGINE_PARTITIONS = 2


def measure_all(bench: Bench) -> tuple[dict[str, Any], dict[str, str]]:
    """Every phase in order; returns the figures of `JSON_KEYS` and, for each
    figure that is None, why. The details of every phase are left in
    `bench.details`."""
    args = bench.args
    now = time.time_ns() // 1000
    rounds = Mix.rounds_for(bench.n, args.mix_machines)
    start = now - now % ROUND_US - (rounds + 10) * ROUND_US

    def mix() -> Iterator[Message]:
        return Mix(args.mix_machines, args.seed, start, f"{bench.run}-").messages(bench.n)

    d = bench.details
    reasons: dict[str, str] = {}
    d["load_average"] = os.getloadavg()
    d["cpus"] = os.cpu_count()
    produced = {"batched": produce_shape(bench, "batched", mix()), "single": None}
    produced["single"] = produce_shape(bench, "single", singles(mix()))
    d["produced"] = produced
    raw = {shape: raw_phase(bench, shape) for shape in SHAPES}
    bare = {shape: bare_phase(bench, shape, produced[shape]["messages"]) for shape in SHAPES}
    d["raw"], d["faust_bare"] = raw, bare
    d["engine"] = engine_phase(bench, start)
    kpimon = {shape: kpimon_phase(bench, shape) for shape in SHAPES}
    d["kpimon"] = kpimon
    d["split"] = {shape: split_phase(bench, shape) for shape in SHAPES}
    parts = GATEWAY_ENGINE_PARTITIONS
    d["gateway"] = group_phase(bench, "gateway", gateway(mix()), ["all"], parts)
    d["two_workers"] = group_phase(bench, "gateway2", gateway(mix()), ["all", "all"], parts)
    d["gateway_split"] = group_phase(bench, "gateway3", gateway(mix()), ["engine", "ingest"], parts)
    phases = ("gateway", "gateway"), ("two_workers_gateway", "two_workers")
    for key, phase in (*phases, ("gateway_split", "gateway_split")):
        if d[phase]["events_per_s"] is None:
            reasons[f"{key}_events_per_s"] = d[phase]["reason"]
    d["latency"] = latency_phase(bench, kpimon["batched"]["events_per_s"] / 2)
    d["memory"] = None if args.skip_rss else rss_phase(bench)
    if args.skip_rss:
        for key in ("peak_rss_bytes", "machines", "open_orders"):
            reasons[key] = "the memory test was skipped (--skip-rss)"
    short_days, long_days = args.replay_days
    d["replay"] = {"short": replay_phase(bench, short_days), "long": replay_phase(bench, long_days)}
    d["horizon"] = horizon_phase(bench) if args.horizon else None
    if d["horizon"] is None:
        reasons["horizon_bytes"] = "the revision-horizon phase runs only with --horizon"
    d["load_average_by_phase"] = bench.bar.loads
    result = {
        "raw_events_per_s": raw["batched"]["events_per_s"],
        "faust_bare_single_per_s": bare["single"]["events_per_s"],
        "faust_bare_batched_per_s": bare["batched"]["events_per_s"],
        "engine_events_per_s": d["engine"]["events_per_s"],
        "single_events_per_s": kpimon["single"]["events_per_s"],
        "batched_events_per_s": kpimon["batched"]["events_per_s"],
        "gateway_events_per_s": d["gateway"]["events_per_s"],
        "two_workers_gateway_events_per_s": d["two_workers"]["events_per_s"],
        "single_split_events_per_s": d["split"]["single"]["events_per_s"],
        "batched_split_events_per_s": d["split"]["batched"]["events_per_s"],
        "gateway_split_events_per_s": d["gateway_split"]["events_per_s"],
        "latency_p50_s": d["latency"]["p50_s"],
        "latency_p99_s": d["latency"]["p99_s"],
        "peak_rss_bytes": None if d["memory"] is None else d["memory"]["peak_rss_bytes"],
        "replay_us_per_event_short": d["replay"]["short"]["us_per_event"],
        "replay_us_per_event_long": d["replay"]["long"]["us_per_event"],
        "events": bench.n,
        "machines": None if args.skip_rss else args.machines,
        "open_orders": None if args.skip_rss else args.open_orders,
        "horizon_bytes": None if d["horizon"] is None else d["horizon"]["engine_bytes"],
    }
    return result, reasons


def apply_sizes(args: argparse.Namespace) -> str | None:
    """Fill the sizes not given from `SIZES` (full or `--quick`); returns an
    error to print, or None."""
    for name, (full, quick) in SIZES.items():
        if getattr(args, name, None) is None:
            setattr(args, name, quick if args.quick else full)
    if isinstance(args.replay_days, str):
        try:
            days = tuple(float(x) for x in args.replay_days.split(","))
        except ValueError:
            days = ()
        if len(days) != 2 or not 0 < days[0] < days[1]:
            return "--replay-days: two day counts SHORT,LONG with 0 < SHORT < LONG"
        args.replay_days = days
    if args.skip_horizon:
        args.horizon = False
    return None


def run_bench(args: argparse.Namespace) -> int:
    if (error := apply_sizes(args)) is not None:
        print(f"kpimon bench: {error}", file=sys.stderr)
        return 2
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
        result, reasons = measure_all(bench)
        ok = True
    except BenchError as exc:
        print(f"\nkpimon bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nkpimon bench: interrupted", file=sys.stderr)
        return 130
    finally:
        bench.close(ok)
    print(table(result, bench.details, args, reasons))
    if args.json:
        data = {key: result[key] for key in JSON_KEYS}
        data |= {"null_reasons": reasons, "details": bench.details}
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
