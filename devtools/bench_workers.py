"""The processes `kpimon bench` measures, each its own subprocess:

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
  config, exactly what `kpimon worker --config ... -q` runs, plus the
  read-only probe of `devtools.bench_probe` (counters sampled every 10 ms,
  served at `/bench`). `--profile` runs the whole worker under cProfile and
  writes the stats when it stops.

Both `raw` and `faust-bare` also write `<out>.progress` (the count so far)
about four times a second, for the bench's progress bar.

The events these processes read are made by `devtools.bench_mix` and sent
by `devtools.bench_produce`, in the bench's own process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from devtools.bench_probe import install_probe


def _write(path: str, data: Any) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_bytes(orjson.dumps(data))
    os.replace(tmp, path)


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
