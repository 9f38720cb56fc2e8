"""Snapshot and restore: continuing from a snapshot equals never stopping."""

from __future__ import annotations

import itertools

import orjson
import pytest

from devtools.simulator import SAMPLE_START_US, SimConfig, simulate
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.live import live_view
from streams.snapshot import restore, snapshot
from tests.streams.helpers import run_events

CONFIG = EngineConfig(windows=["1m", "1h", "1d"], allowed_lateness="2m")


@pytest.fixture(scope="module")
def events() -> list:
    return [parse_event(e) for e in simulate(SimConfig(), 3, SAMPLE_START_US, 2 * 86_400)]


def test_restore_mid_stream_continues_exactly(events: list) -> None:
    whole = Engine(CONFIG)
    expected = run_events(whole, events)
    expected.extend(whole.flush())

    for cut in (1, len(events) // 3, 2 * len(events) // 3):
        first = Engine(CONFIG)
        out = run_events(first, events[:cut])
        data = orjson.loads(orjson.dumps(snapshot(first)))  # through JSON, as a table stores it
        second = restore(CONFIG, data)
        out.extend(run_events(second, events[cut:]))
        out.extend(second.flush())
        assert out.records == expected.records, f"cut at {cut}"
        assert out.alerts == expected.alerts, f"cut at {cut}"
        assert second.stats == whole.stats


def test_snapshot_of_restored_engine_is_identical(events: list) -> None:
    engine = Engine(CONFIG)
    run_events(engine, itertools.islice(events, 5000))
    data = orjson.loads(orjson.dumps(snapshot(engine)))
    assert orjson.loads(orjson.dumps(snapshot(restore(CONFIG, data)))) == data


def test_snapshot_version_is_checked() -> None:
    with pytest.raises(ValueError, match=r"snapshot version 99 is not one this worker reads"):
        restore(CONFIG, {"version": 99})


def test_a_version_1_snapshot_with_its_decision_heap_continues_exactly(events: list) -> None:
    """Version 1 kept the book's decision heap, stale entries and all; version
    2 rebuilds it from the open orders, and both decide the same."""
    whole = Engine(CONFIG)
    expected = run_events(whole, events)
    expected.extend(whole.flush())
    cut = len(events) // 2
    first = Engine(CONFIG)
    out = run_events(first, events[:cut])
    data = orjson.loads(orjson.dumps(snapshot(first)))
    assert data["version"] == 2 and "heap" not in data["book"]
    stale = [[at - 1, oid] for at, oid in first.book._heap]  # as moved decisions leave them
    data["version"] = 1
    data["book"]["heap"] = [list(h) for h in first.book._heap] + stale
    assert data["book"]["open"]  # orders open across the cut
    second = restore(CONFIG, data)
    out.extend(run_events(second, events[cut:]))
    out.extend(second.flush())
    assert out.records == expected.records


def test_live_view_shows_open_windows_up_to_the_watermark(events: list) -> None:
    engine = Engine(CONFIG)
    run_events(engine, events[:8000])
    view = live_view(engine)
    assert view["watermark"] is not None and view["machines"] == 11
    current = [
        r
        for r in view["current"]
        if r["kpi"] == "oee" and r["scope"] == "line" and r["window"] == "1h"
    ]
    assert len(current) == 3
    # Provisional time reaches the watermark: each line's machines cover the
    # hour up to the watermark, minus nothing (no machine is silent here).
    hour = current[0]
    covered = hour["planned_s"] + hour["planned_stop_s"] + hour["no_data_s"]
    start_us = engine.windows.tumbling[1].containing(engine.watermark_us - 1).start_us
    machines_on_line = len(
        {
            m
            for (_, line, m) in {(t.site, t.line, t.machine) for t in engine.machines.values()}
            if line == hour["line"]
        }
    )
    assert covered == pytest.approx(machines_on_line * (engine.watermark_us - start_us) / 1e6)
    assert any(r["kpi"] == "pchart" for r in view["last_closed"])
