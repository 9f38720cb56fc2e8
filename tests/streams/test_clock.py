"""streams.clock: a live worker's and replay's watermark, on plain numbers.

Wall time and event time are separate clocks here, both explicit: `wall(s)`
is the worker's clock s seconds into a test, `ts(m)` is event time m
minutes after 06:00. Inputs are named `topic:partition`.
"""

from __future__ import annotations

import random

import orjson
import pytest

from streams.clock import IdleAdvanceClock, NewestEventClock
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine, Output
from tests import eventfactory as ef

US = 1_000_000
T0_US = 1_795_327_200_000_000  # 2026-11-22T06:00:00Z
W0_US = 1_000_000_000_000  # the worker's clock: unrelated to event time
IDLE_S = 30
MACHINES, ORDERS, SHIPMENTS = "machine-state:0", "orders:0", "shipments:1"


def ts(minutes: float) -> int:
    return T0_US + round(minutes * 60 * US)


def wall(seconds: float) -> int:
    return W0_US + round(seconds * US)


def live() -> IdleAdvanceClock:
    return IdleAdvanceClock(IDLE_S * US)


# ---------------------------------------------------------------- IdleAdvanceClock


def test_with_several_inputs_the_slowest_holds_the_watermark() -> None:
    #   wall (s)         0       1       2       3
    #   machine-state:0  06:10 ................. 06:20
    #   orders:0                 06:04
    #   shipments:1                      06:07
    #   watermark        none    none    06:04   06:04
    clock = live()
    for source in (MACHINES, ORDERS, SHIPMENTS):
        clock.announce(source, wall(0))
    clock.observe(MACHINES, ts(10), wall(0))
    clock.observe(ORDERS, ts(4), wall(1))
    assert clock.watermark(wall(1)) is None  # shipments:1 never sent: it may bring older events
    clock.observe(SHIPMENTS, ts(7), wall(2))
    assert clock.watermark(wall(2)) == ts(4)
    clock.observe(MACHINES, ts(20), wall(3))
    assert clock.watermark(wall(3)) == ts(4)


def test_an_input_idle_for_idle_advance_after_moves_on_at_clock_pace() -> None:
    #   wall (s)         0      10      29      30            100
    #   machine-state:0  06:10 ...... caught up, quiet ...........
    #   orders:0                06:30 .......... (unread data, holds) ...
    #   watermark        06:10  06:10   06:10   06:10 + 30 s  06:10 + 100 s
    #                                           (machines creep from their newest event)
    clock = live()
    clock.announce(ORDERS, wall(0))
    clock.observe(MACHINES, ts(10), wall(0))
    clock.observe(ORDERS, ts(30), wall(10))
    clock.tick(wall(29), {MACHINES: True, ORDERS: False})
    assert clock.watermark(wall(29)) == ts(10)  # quiet for 29 s only
    clock.tick(wall(30), {MACHINES: True, ORDERS: False})
    assert clock.watermark(wall(30)) == ts(10) + 30 * US
    clock.tick(wall(100), {MACHINES: True, ORDERS: False})  # (a tick every second, live)
    assert clock.watermark(wall(100)) == ts(10) + 100 * US
    # Past orders' newest event the creep stops: orders hold.
    clock.tick(wall(60 * 30), {MACHINES: True, ORDERS: False})
    assert clock.watermark(wall(60 * 30)) == ts(30)


def test_an_input_no_tick_names_for_idle_advance_after_holds_the_watermark_again() -> None:
    #   wall (s)         0      40            70             71     80
    #   machine-state:0  06:10 ...... quiet, caught up (the last tick naming it: 40) .....
    #   orders:0         06:05 ...... quiet, caught up ....................................
    #   ticks            ------ both --|  none (the only reader is gone)  |  both again
    #   watermark        none   06:10 + 40 s  06:10 + 70 s   06:10  06:10 + 80 s
    # With its reader gone an input may have unread events: after idle_advance_after
    # without a word of it, it holds the watermark at its newest event again.
    clock = live()
    clock.observe(MACHINES, ts(10), wall(0))
    clock.observe(ORDERS, ts(5), wall(0))
    clock.tick(wall(40), {MACHINES: True, ORDERS: True})
    assert clock.watermark(wall(40)) == ts(10) + 40 * US  # all quiet: follows the clock
    clock.tick(wall(70), {})  # a worker that reads no input (worker.role = "engine")
    assert clock.watermark(wall(70)) == ts(10) + 70 * US  # the reports are 30 s old: still good
    clock.tick(wall(71), {})
    assert clock.watermark(wall(71)) == ts(5)  # both stale: each holds at its newest event
    clock.tick(wall(80), {MACHINES: True, ORDERS: True})  # a reader is back, caught up
    assert clock.watermark(wall(80)) == ts(10) + 80 * US


def test_an_input_not_caught_up_holds_the_watermark_however_long_it_is_silent() -> None:
    #   wall (s)         0       1                     600          601
    #   machine-state:0  06:10 ...... caught up, quiet ......................
    #   orders:0                 06:01 ... unread data .. | caught up, quiet
    #   watermark        none    06:01                 06:01        06:10 + 600 s
    clock = live()
    clock.announce(ORDERS, wall(0))
    clock.observe(MACHINES, ts(10), wall(0))
    clock.observe(ORDERS, ts(1), wall(1))
    clock.tick(wall(600), {MACHINES: True, ORDERS: False})
    assert clock.watermark(wall(600)) == ts(1)
    # Everything read and quiet: event time follows the clock from the newest
    # event (06:10) since the last one arrived (wall 1).
    clock.tick(wall(601), {MACHINES: True, ORDERS: True})
    assert clock.watermark(wall(601)) == ts(10) + 600 * US


def test_an_input_that_never_sent_creeps_from_the_first_event_seen() -> None:
    #   wall (s)         0       35             40
    #   machine-state:0  06:10   (quiet)        06:12
    #   orders:0         -- never sends, caught up ----------
    #   watermark        none    06:10 + 35 s   06:10 + 40 s (orders creep from 06:10 at wall 0)
    clock = live()
    clock.announce(ORDERS, wall(0))
    clock.observe(MACHINES, ts(10), wall(0))
    assert clock.watermark(wall(0)) is None
    clock.tick(wall(35), {MACHINES: True, ORDERS: True})
    assert clock.watermark(wall(35)) == ts(10) + 35 * US
    clock.observe(MACHINES, ts(12), wall(40))
    assert clock.watermark(wall(40)) == ts(10) + 40 * US


def test_a_clock_that_knows_no_input_has_no_watermark() -> None:
    clock = live()
    assert clock.watermark(wall(0)) is None
    clock.tick(wall(100), {MACHINES: True})  # known, never sent, no event anywhere
    assert clock.watermark(wall(100)) is None


def test_an_empty_run_counts_as_activity_but_not_as_progress() -> None:
    clock = live()
    clock.observe(MACHINES, ts(10), wall(0))
    clock.observe(MACHINES, None, wall(20))
    assert clock.sources[MACHINES] == [ts(10), wall(20)]
    assert clock.first_data == (ts(10), wall(0))
    clock.tick(wall(40), {MACHINES: True})
    assert clock.watermark(wall(40)) == ts(10)  # quiet for 20 s only: holds


# The clock's part of a worker's shard snapshot, byte for byte as the shard
# wrote it before the clock was a module of its own: old snapshots must load.
OLD_STATE = (
    b'{"sources":{"machine-state:0":[1795327200000000,1000000000000],'
    b'"orders:0":[1795327560000000,1000050000000]},'
    b'"caught_up":{"machine-state:0":true,"orders:0":false},'
    b'"first_data":[1795327200000000,1000000000000],'
    b'"last_event_wall_us":1000050000000}'
)


def test_the_snapshot_keeps_the_bytes_before_told_and_round_trips() -> None:
    clock = live()
    for source in (MACHINES, ORDERS):  # as an engine message announces them
        clock.announce(source, wall(0))
    clock.observe(MACHINES, ts(0), wall(0))
    clock.tick(wall(40), {MACHINES: True, ORDERS: False})
    clock.observe(ORDERS, ts(6), wall(50))
    # The same bytes and one key more: when a tick last named each input.
    told = b',"told":{"machine-state:0":1000040000000,"orders:0":1000040000000}}'
    assert orjson.dumps(clock.to_dict()) == OLD_STATE[:-1] + told
    restored = IdleAdvanceClock.from_dict(orjson.loads(OLD_STATE), IDLE_S * US)
    assert orjson.dumps(restored.to_dict()) == OLD_STATE[:-1] + b',"told":{}}'
    assert restored.first_data == (ts(0), wall(0))  # a tuple again, as before the snapshot
    again = IdleAdvanceClock.from_dict(orjson.loads(orjson.dumps(clock.to_dict())), IDLE_S * US)
    assert again.to_dict() == clock.to_dict()
    # The restored clocks go on exactly as the original would (the old one once
    # a tick has named its inputs).
    for clk in (clock, restored, again):
        clk.tick(wall(90), {MACHINES: True, ORDERS: True})
    assert {clk.watermark(wall(90)) for clk in (clock, restored, again)} == {ts(6) + 40 * US}


def test_a_clock_that_has_seen_nothing_round_trips() -> None:
    data = orjson.dumps(live().to_dict())
    assert data == (
        b'{"sources":{},"caught_up":{},"first_data":null,"last_event_wall_us":null,"told":{}}'
    )
    restored = IdleAdvanceClock.from_dict(orjson.loads(data), IDLE_S * US)
    assert restored.first_data is None and restored.watermark(wall(0)) is None


# ---------------------------------------------------------------- NewestEventClock


def test_replay_time_is_the_newest_event_observed_and_never_goes_back() -> None:
    #   observed   06:05  06:20  06:10 (older: changes nothing)
    #   watermark  06:05  06:20  06:20
    clock = NewestEventClock()
    assert clock.watermark() is None
    for observed, expected in ((5, 5), (20, 20), (10, 20)):
        clock.observe(ORDERS, ts(observed))
        assert clock.watermark() == ts(expected)
    clock.tick(wall(3600), {ORDERS: True})  # the wall clock plays no part
    assert clock.watermark(wall(3600)) == ts(20)
    restored = NewestEventClock.from_dict(orjson.loads(orjson.dumps(clock.to_dict())))
    assert restored.watermark() == ts(20)


@pytest.mark.parametrize("seed", [1, 2])
def test_replays_clock_gives_what_the_engines_own_watermark_gave(seed: int) -> None:
    """`kpimon replay` once let the engine move its watermark to the newest
    event it applied; the clock driving an engine that does not must give
    the same records, event for event (late and duplicate events included)."""
    rng = random.Random(seed)
    events = []
    for n in range(300):
        hours = 6 + (n + rng.choice((0, 0, 0, -20, -90))) / 60  # some late, some very late
        if n % 15:
            events.append(ef.count(ef.at(hours), 5, 4, 1.0))
        else:
            events.append(ef.state(ef.at(hours), rng.choice(("running", "idle", "down"))))
    events += rng.sample(events, 10)  # duplicates
    config = EngineConfig(windows=["1h", "1d"], allowed_lateness="10m")

    own = Engine(config)  # auto_watermark: the engine moves its watermark itself
    expected = Output()
    for event in map(parse_event, events):
        if own.ingest(event) is None:
            expected.extend(own.advance(own.watermark_us))  # type: ignore[arg-type]
    expected.extend(own.flush())

    engine, clock, got = Engine(config, auto_watermark=False), NewestEventClock(), Output()
    for event in map(parse_event, events):
        if engine.ingest(event) is None:
            clock.observe(event.source, event.ts_us)
            got.extend(engine.advance(clock.watermark()))  # type: ignore[arg-type]
    got.extend(engine.flush())

    assert own.stats["late.machine-state"] > 0 and own.stats["duplicates.machine-state"] > 0
    assert got.records == expected.records and got.alerts == expected.alerts
    assert engine.stats == own.stats
