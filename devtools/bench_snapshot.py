"""What a worker's snapshot serialises as a live plant runs: in-process, no Kafka.

    python -m devtools.bench_snapshot --rate 6000 --minutes 4 [--every 2.5]

The latency test's load (the bench mix, every event stamped "now" as it is
produced, `devtools.bench_mix.restamp`) goes into an engine at `--rate`
events a second of event time; every `--every` seconds of event time a
snapshot is planned as a worker plans it (`agents.snapshot_rows.plan` with
the last plan's rows and memo). Printed once a minute of event time: the
bytes the snapshot made (serialised; a section whose token the last plan
saw is not made) by section family, and the milliseconds the plan took.
With `--untokened` every section is made, as before sections had tokens.

A 30-second latency test never reaches the steady state, where the allowed
lateness (5 minutes) holds `rate` x 300 events pending and the open hour's
seen ids, open orders and their originals keep growing; this shows it.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator

from agents import snapshot_rows
from agents.pipeline import Shard
from devtools.bench_inprocess import SOURCES
from devtools.bench_mix import Mix, restamp
from devtools.bench_produce import encode
from streams.clock import NewestEventClock
from streams.config import EngineConfig
from streams.decode import decode_message
from streams.engine import Engine, Output
from streams.snapshot_sections import Tokened

START_US = 1_800_000_000_000_000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.bench_snapshot")
    p.add_argument("--rate", type=float, default=6000.0, help="events a second of event time")
    p.add_argument("--minutes", type=float, default=4.0, help="minutes of event time")
    p.add_argument("--every", type=float, default=2.5, help="seconds between snapshots")
    p.add_argument("--machines", type=int, default=1000)
    p.add_argument("--untokened", action="store_true", help="make every section")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.minutes <= 0 or args.every <= 0:
        p.error("--rate, --minutes and --every must be positive")
    for line in run(args.rate, args.minutes, args.every, args.machines, not args.untokened):
        print(line, flush=True)
    return 0


def run(rate: float, minutes: float, every: float, machines: int, tokens: bool) -> Iterator[str]:
    engine = Engine(EngineConfig(), auto_watermark=False)
    clock, out = NewestEventClock(), Output()
    shard = Shard.__new__(Shard)
    shard.engine, shard.next_offset, shard.clock = engine, 0, clock
    present: set[str] = set()
    memo: snapshot_rows.Memo | None = None
    now_us, next_us, end_us = START_US, START_US + every * 1e6, START_US + minutes * 60e6
    shown = -1
    for kind, key, events in Mix(machines, 8, START_US, "s-").messages(1 << 62):
        restamp(events, int(now_us))
        for event in decode_message(encode(events), key=key, source=SOURCES[kind]).events:
            if engine.ingest(event, out) is None:
                clock.observe(event.source, event.ts_us)
                engine.advance(clock.watermark())  # type: ignore[arg-type]
        out = Output()
        now_us += len(events) * 1e6 / rate
        if now_us < next_us:
            continue
        next_us += every * 1e6
        made: Counter[str] = Counter()
        sections = _counted(shard.iter_sections(tokened=tokens), made)
        began = time.perf_counter()
        planned = snapshot_rows.plan(0, sections, present, memo)
        took = time.perf_counter() - began
        present, memo = planned.referenced, planned.memo
        second = int((now_us - START_US) / 1e6)
        if second // 60 != shown:
            shown = second // 60
            top = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in made.most_common(5))
            yield (
                f"{second:5d} s  made {sum(made.values()) / 1e6:7.2f} MB in {took * 1000:5.0f} ms"
                f"  ({top})"
            )
        if now_us >= end_us:
            return


def _counted(
    sections: Iterator[tuple[str, bytes | Tokened]], made: Counter[str]
) -> Iterator[tuple[str, bytes | Tokened]]:
    """`sections`, counting the bytes of each one made, by family."""
    for name, data in sections:
        family = re.split(r"[#/]", name, maxsplit=1)[0]
        if isinstance(data, Tokened):
            yield name, Tokened(_counting(data, family, made), data.token)
        else:
            made[family] += len(data)
            yield name, data


def _counting(data: Tokened, family: str, made: Counter[str]):  # type: ignore[no-untyped-def]
    def make() -> bytes:
        value = data.value()
        made[family] += len(value)
        return value

    return make


if __name__ == "__main__":
    sys.exit(main())
