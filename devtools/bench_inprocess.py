"""`kpimon bench`'s in-process measurements: the engine alone, no Kafka, no Faust.

    python -m devtools.bench_inprocess engine --events N --mix-machines M --seed S
                                              --start-us T --prefix P --out R.json
    python -m devtools.bench_inprocess replay --days D --seed S --out R.json

- `engine`: the bench mix (`devtools.bench_mix.Mix`, the same N events as
  the Kafka phases, as batched messages) is encoded first, untimed; then
  every message is decoded and validated as ingest does it
  (`streams.decode.decode_message` with its key and topic kind) and every
  event applied by an `Engine` of the default configuration, the watermark
  following the newest event as `kpimon replay` moves it, windows closing
  as they fall due. Timed with `perf_counter`, the cyclic garbage collector
  set as a worker sets it (`agents.collector`): events/s = N / seconds. What the worker adds to this is Kafka, Faust,
  the engine-topic hop (re-encoding, a second decode) and snapshots.
- `replay`: the simulator's plant (`devtools.simulator.simulate`, profiles
  `mix`, as `kpimon simulate --days D --profiles mix`) is written to a JSON
  lines file first, untimed; then `agents.replay.replay` (what `kpimon
  replay FILE` runs, records discarded instead of printed) reads it back.
  Reported: microseconds an event. Over 10 and 100 days the ratio shows
  whether the cost per event grows with the history.

Each runs in a process of its own (started by `devtools.bench_local`), so the
bench's own memory and garbage do not weigh on it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from agents import collector
from devtools.bench_mix import Mix
from devtools.bench_produce import encode

SOURCES = {"machine-state": "machine-state", "orders": "orders", "shipments": "shipments"}


def measure_engine(args: argparse.Namespace) -> dict[str, Any]:
    from streams.clock import NewestEventClock
    from streams.config import EngineConfig
    from streams.decode import decode_message
    from streams.engine import Engine, Output

    mix = Mix(args.mix_machines, args.seed, args.start_us, args.prefix)
    messages = [(kind, key, encode(events)) for kind, key, events in mix.messages(args.events)]
    engine = Engine(EngineConfig(), auto_watermark=False)
    clock = NewestEventClock()
    refused = Output()
    events = errors = 0
    began = time.perf_counter()
    for kind, key, value in messages:
        decoded = decode_message(value, key=key, source=SOURCES[kind])
        errors += len(decoded.errors)
        for event in decoded.events:
            events += 1
            if engine.ingest(event, refused) is None:
                clock.observe(event.source, event.ts_us)
                engine.advance(clock.watermark())  # type: ignore[arg-type]
    engine.flush()
    seconds = time.perf_counter() - began
    return {
        "events": events,
        "messages": len(messages),
        "errors": errors,
        "refused": len(refused.rejected),
        "seconds": seconds,
        "events_per_s": events / seconds,
        "us_per_event": seconds / max(events, 1) * 1e6,
    }


def measure_replay(args: argparse.Namespace) -> dict[str, Any]:
    from agents.replay import replay
    from devtools.simulator import SimConfig, simulate
    from streams.config import EngineConfig
    from streams.engine import Engine

    start_us = 1_793_577_600_000_000  # 2026-11-02T00:00Z, `kpimon simulate`'s default
    path = Path(args.out).with_suffix(".jsonl")
    began = time.perf_counter()
    with path.open("wb") as out:
        for event in simulate(SimConfig(profiles="mix"), args.seed, start_us, args.days * 86_400):
            out.write(orjson.dumps(event) + b"\n")
    simulate_s = time.perf_counter() - began
    engine = Engine(EngineConfig(), auto_watermark=False)
    records = 0

    def discard(out: Any) -> None:
        nonlocal records
        records += len(out.records)

    with path.open("rb") as lines:
        began = time.perf_counter()
        result = replay(iter(lines), engine, on_output=discard)
        seconds = time.perf_counter() - began
    path.unlink()
    return {
        "days": args.days,
        "events": result.lines,
        "rejected": sum(result.rejected.values()),
        "records": records,
        "simulate_s": simulate_s,
        "seconds": seconds,
        "us_per_event": seconds / max(result.lines, 1) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.bench_inprocess")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("engine")
    p.add_argument("--events", type=int, required=True)
    p.add_argument("--mix-machines", type=int, required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start-us", type=int, required=True)
    p.add_argument("--prefix", default="inproc-")
    p.add_argument("--out", required=True)
    p = sub.add_parser("replay")
    p.add_argument("--days", type=float, required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    collector.for_long_lived_state()  # as a worker and `kpimon replay` do
    result = measure_engine(args) if args.what == "engine" else measure_replay(args)
    Path(args.out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
