"""What the metrics exporter needs beyond the records: small pure readings of
engine state, each a number the collector only has to label.

- `machine_status`: each machine's current bucket (what it is doing now, as
  of the watermark) and how long it has been silent, in event time;
- `window_close_delay_us`: how far the closed-window frontier trails the
  watermark;
- `engine_counters`: late and duplicate events per source, from the
  engine's stats;
- `consumer_lag`: messages not yet read per input partition.

No clock: "now" is always the engine's watermark (event time), or comes in
as an argument.

>>> consumer_lag({("orders", 0): 10, ("orders", 1): None}, {("orders", 0): 6})
{('orders', 0): 3}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from streams.engine import Engine
from streams.oee import STATE_BUCKETS
from streams.windows import split_planned

ENGINE_COUNTERS = ("late", "duplicates")
"""Engine stats kept per source that the exporter turns into counters."""

WE_RULES = ("WE1", "WE2", "WE3", "WE4")
"""The Western Electric rules a p-chart point is judged by (see `streams.pchart`)."""

SOURCES = ("machine-state", "orders", "shipments")
"""The contract's input kinds, so every counter exists (at 0) from the start."""


@dataclass(frozen=True)
class MachineStatus:
    """One machine as of the watermark.

    `bucket` is one of `STATE_BUCKETS`: the machine's newest state; `no_data`
    when it never sent a state, its newest state is `unknown`, or its newest
    event is more than its (opt-in) heartbeat timeout behind the watermark; `planned_stop` outside every
    shift unless it is running (overtime counts as running, as in the OEE).
    `silence_us` = watermark − newest event of the machine, never negative.
    `silent`: running (as last said), in a shift, and silent longer than
    `engine.silence_alert`: it should be sending and is not.
    """

    site: str
    line: str
    machine: str
    bucket: str
    last_event_us: int | None
    silence_us: int | None
    counter_resets: int = 0
    counter_wraps: int = 0
    silent: bool = False


def machine_status(engine: Engine) -> list[MachineStatus]:
    """Every machine the engine knows, sorted by (site, line, machine)."""
    now = engine.watermark_us
    calendar = engine.windows.calendar
    in_shift = True
    if now is not None and calendar is not None:
        in_shift = any(inside for _, _, inside in split_planned(now - 1, now, calendar))
    found = []
    for t in engine.machines.values():
        state = t.held_state()
        last = t.newest_us
        silence = None if now is None or last is None else max(0, now - last)
        heartbeat = engine.heartbeat_us(t)
        lapsed = heartbeat is not None and silence is not None and silence > heartbeat
        if state is None or state == "unknown" or lapsed:
            bucket = "no_data"
        elif not in_shift and state != "running":
            bucket = "planned_stop"
        else:
            bucket = state
        assert bucket in STATE_BUCKETS, bucket
        quiet_for = engine.silence_us
        silent = (
            in_shift
            and state == "running"
            and None not in (quiet_for, silence)
            and silence > quiet_for  # type: ignore[operator]
        )
        found.append(
            MachineStatus(
                t.site, t.line, t.machine, bucket, last, silence, t.resets, t.wraps, silent
            )
        )
    return sorted(found, key=lambda m: (m.site, m.line, m.machine))


def window_close_delay_us(engine: Engine) -> int | None:
    """Watermark − the frontier up to which windows are closed (final).

    At least the allowed lateness; it grows past that by up to the smallest
    window size between two closings, and keeps growing when closing stalls.
    """
    if engine.watermark_us is None or engine.closed_until_us is None:
        return None
    return engine.watermark_us - engine.closed_until_us


def engine_counters(engine: Engine) -> dict[tuple[str, str], int]:
    """(counter, source) -> count, for every counter of `ENGINE_COUNTERS` and
    every source (0 when none happened yet)."""
    counts = {(kind, source): 0 for kind in ENGINE_COUNTERS for source in SOURCES}
    for key, value in engine.stats.items():
        kind, _, source = key.partition(".")
        if kind in ENGINE_COUNTERS and source:
            counts[kind, source] = value
    return counts


def consumer_lag(
    highwater: Mapping[tuple[str, int], int | None],
    last_read: Mapping[tuple[str, int], int],
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> messages not read yet: highwater − (last offset read + 1).

    `highwater` is the offset the next produced message will get; a
    partition whose highwater is not known yet is left out. Never negative.
    """
    lag = {}
    for tp, high in sorted(highwater.items()):
        if high is not None:
            lag[tp] = max(0, high - (last_read.get(tp, -1) + 1))
    return lag
