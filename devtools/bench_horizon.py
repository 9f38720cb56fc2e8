"""`kpimon bench` (f): the memory the revision horizon costs, at 10,000 machines.

    python -m devtools.bench_horizon [--machines 10000] [--hours 26] [--count-every 5]

A late event revises closed windows up to `engine.revision_horizon` (24 h)
back, so the engine keeps every machine's events of the last day (see
`streams.revisions`) and the ids of every event (`streams.seen`). This
phase measures that memory where it lives, in one process with nothing else:
an engine with the default configuration is fed `--hours` of event time
(past the horizon, so the kept history is full and forgetting runs) from
`--machines` machines that send like an MES: states on change (a state
lasts 3-40 minutes; running half the time) and a count every
`--count-every` minutes while running. Events are generated in time order,
parsed as the worker parses them (`streams.decode.parse_event`) and
ingested with the watermark following them, as `kpimon replay` does.

Reported: the process's resident memory before the engine exists and after
the feed (VmRSS, so what the allocator holds, not only live objects), the
events kept for revisions, and the size and time of a snapshot of the
engine (what the worker writes to its changelog) and of its restore.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.snapshot import restore, snapshot
from streams.timeutil import US, iso

MINUTE_US = 60 * US
STATES = ("running", "running", "running", "down", "idle", "setup")


def machine_events(
    m: int, start_us: int, hours: float, count_every: int, seed: int
) -> Iterator[tuple[int, dict[str, Any]]]:
    """One machine's events, in time order: states on change, periodic counts."""
    rng = random.Random(seed * 1_000_003 + m)
    site, line, machine = f"site-{m // 100}", f"line-{m // 10}", f"m-{m}"
    where = {"site": site, "line": line, "machine": machine}
    end, t, current, n = start_us + int(hours * 3600 * US), start_us + m * US, None, 0
    while t < end:
        new = rng.choice(STATES)
        if new != current:
            n += 1
            event = {"type": "state", "event_id": f"{machine}-{n}", "ts": iso(t), **where}
            yield t, {**event, "state": new}
            current = new
        span = rng.randint(3, 40) * MINUTE_US
        if current == "running":
            every = count_every * MINUTE_US
            for at in range(t + every, min(t + span, end), every):
                n += 1
                total = count_every * 25 + rng.randint(-5, 5)
                yield (
                    at,
                    {
                        "type": "count",
                        "event_id": f"{machine}-{n}",
                        "ts": iso(at),
                        **where,
                        "product": f"SKU-{m % 50}",
                        "ideal_cycle_s": 2.0,
                        "total": total,
                        "good": total - rng.randint(0, 3),
                    },
                )
        t += span


def plant_events(args: argparse.Namespace, start_us: int) -> Iterator[dict[str, Any]]:
    streams = [
        machine_events(m, start_us, args.hours, args.count_every, args.seed)
        for m in range(args.machines)
    ]
    for _, event in heapq.merge(*streams, key=lambda pair: pair[0]):
        yield event


def rss() -> dict[str, int]:
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            found[name] = int(value.split()[0]) * 1024
    return found


def measure(args: argparse.Namespace) -> dict[str, Any]:
    start_us = 1_767_225_600 * US  # 2026-01-01T00:00Z
    gc.collect()
    before = rss()
    engine = Engine(EngineConfig())
    events = 0
    began = time.perf_counter()
    for data in plant_events(args, start_us):
        if engine.ingest(parse_event(data)) is None:
            engine.advance(engine.watermark_us)  # type: ignore[arg-type]
        events += 1
    seconds = time.perf_counter() - began
    gc.collect()
    after = rss()
    kept = sum(len(h.points) for h in engine.history.values())
    # As the worker does it (`agents.pipeline.Shard.to_bytes`): cyclic
    # collection paused. Two in a row: the allocator keeps what the first
    # made, as a worker's does between its snapshots.
    gc.disable()
    began = time.perf_counter()
    snap = orjson.dumps(snapshot(engine))
    first_s = time.perf_counter() - began
    del snap
    began = time.perf_counter()
    snap = orjson.dumps(snapshot(engine))
    snapshot_s = time.perf_counter() - began
    gc.enable()
    # What a worker that snapshots holds: the engine, the snapshot's bytes, and
    # what the allocator kept of its transient objects.
    with_saved = rss()["VmRSS"] - before["VmRSS"]
    gc.disable()
    began = time.perf_counter()
    restored = restore(EngineConfig(), orjson.loads(snap))
    restore_s = time.perf_counter() - began
    gc.enable()
    snapshot_bytes = len(snap)
    del snap, restored
    grown = after["VmRSS"] - before["VmRSS"]
    return {
        "machines": args.machines,
        "hours": args.hours,
        "count_every_min": args.count_every,
        "events": events,
        "us_per_event": seconds / events * 1e6,
        "kept_events": kept,
        "seen_ids": len(engine.seen),
        "rss_before_bytes": before["VmRSS"],
        "rss_after_bytes": after["VmRSS"],
        "engine_bytes": grown,
        "bytes_per_machine": grown / args.machines,
        "bytes_per_kept_event": grown / max(kept, 1),
        "snapshot_bytes": snapshot_bytes,
        "engine_bytes_after_snapshot": with_saved,
        "first_snapshot_s": first_s,
        "snapshot_s": snapshot_s,
        "restore_s": restore_s,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    from agents.argtypes import positive, positive_int

    p.add_argument("--machines", type=positive_int, default=10_000, help="machines (default 10000)")
    p.add_argument("--hours", type=positive, default=26.0, help="hours of event time (default 26)")
    p.add_argument(
        "--count-every",
        type=positive_int,
        default=5,
        help="minutes between a running machine's counts (default 5)",
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the generated plant (default 7)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON here")


def describe(r: dict[str, Any]) -> str:
    mib = 2**20
    return (
        f"(f) revision horizon (24 h), {r['machines']:,} machines, {r['hours']:g} h of events "
        f"(on change, a count every {r['count_every_min']} min running): "
        f"{r['events']:,} events at {r['us_per_event']:.0f} us each; "
        f"{r['kept_events']:,} kept for revisions, {r['seen_ids']:,} ids; "
        f"engine memory {r['engine_bytes'] / mib:,.0f} MiB "
        f"({r['bytes_per_machine'] / 1024:,.0f} KiB a machine, "
        f"{r['bytes_per_kept_event']:.0f} B a kept event), "
        f"{r['engine_bytes_after_snapshot'] / mib:,.0f} MiB once snapshotting; "
        f"a snapshot {r['snapshot_bytes'] / mib:,.0f} MiB in {r['snapshot_s']:.1f} s "
        f"(the first {r['first_snapshot_s']:.1f} s), restored in {r['restore_s']:.1f} s"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.bench_horizon", description=__doc__)
    add_arguments(p)
    args = p.parse_args(argv)
    result = measure(args)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
