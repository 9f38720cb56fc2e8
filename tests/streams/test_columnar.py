"""The columnar close (`streams.timeline_columns`, `streams.columnar`) against
the per-point one.

The same machine events, cut into the same batches, go through two engines:
one attributes every machine point by point and spreads segment by segment,
the other attributes and spreads in numpy columns. Records, alerts (silence
alerts among them), refusals and snapshots must be byte for byte the same.

    batches   |--- b1 ---|-- b2 --|------ b3 ------|   advance after each
    events    s  c  c  s  C  c (late) s (dup) C ...      several machines
    closes    each covers many segments: columnar on one engine only
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.simulator import SimConfig, simulate
from streams.columnar import plain_sizes
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine, Output
from streams.snapshot import snapshot
from streams.timeutil import iso

US = 1_000_000
START_US = 1_793_577_600 * US  # 2026-11-02T00:00Z
STATES = ("running", "idle", "down", "setup", "planned_stop", "unknown")
REASONS = (None, "jam", "no_material")
CONFIGS = {
    "defaults": {},
    "heartbeat, modulus, short hold": {
        "heartbeat_timeout": "2m",
        "counter_modulus": 1000,
        "state_hold_limit": "20m",
        "silence_alert": "3m",
    },
    "no revisions, 5m windows": {"revision_horizon": "0s", "windows": ["5m", "1h", "1d"]},
}


@st.composite
def machine_streams(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int]]:
    """Events of a few machines, mostly in order, some late or re-sent; batch cuts."""
    n = draw(st.integers(1, 120))
    machines = draw(st.integers(1, 4))
    events: list[dict[str, Any]] = []
    ts = START_US
    for i in range(n):
        ts += draw(st.integers(0, 90)) * US + draw(st.sampled_from((0, 1, 500_000)))
        late = draw(st.integers(0, 9)) == 0
        at = ts - draw(st.integers(1, 3_600)) * US if late else ts
        m = draw(st.integers(0, machines - 1))
        base = {"event_id": f"e{i}", "ts": iso(at), "site": "s", "line": f"l{m % 2}"}
        base["machine"] = f"m{m}"
        kind = draw(st.sampled_from(("state", "count", "counter")))
        if events and draw(st.integers(0, 14)) == 0:  # a re-sent event
            events.append(dict(events[draw(st.integers(0, len(events) - 1))]))
            continue
        if kind == "state":
            state = draw(st.sampled_from(STATES))
            reason = draw(st.sampled_from(REASONS)) if state in ("down", "idle") else None
            events.append({**base, "type": "state", "state": state, "reason": reason})
        elif kind == "count":
            total = draw(st.integers(0, 50))
            good = draw(st.integers(0, total))
            events.append(
                {**base, "type": "count", "product": "p", "ideal_cycle_s": 1.5}
                | {"total": total, "good": good}
            )
        else:
            total = draw(st.integers(0, 1200))
            events.append(
                {**base, "type": "counter", "product": draw(st.sampled_from(("p", "q")))}
                | {"ideal_cycle_s": 0.5, "total": total, "good": None}
            )
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), max_size=8)))
    return events, cuts


def batches(events: list[Any], cuts: list[int]) -> Iterator[list[Any]]:
    bounds = [0, *cuts, len(events)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        if b > a:
            yield events[a:b]


def run(config: EngineConfig, events: list[dict[str, Any]], cuts: list[int], *, columns: bool):
    """(output bytes, snapshot bytes) with the columnar close on or off."""
    engine = Engine(config, auto_watermark=False)
    engine.machine_side.columnar_min = 0 if columns else 1 << 62
    out = Output()
    for batch in batches([parse_event(e) for e in events], cuts):
        for event in batch:
            engine.ingest(event, out)
        out.extend(engine.advance(max(e.ts_us for e in batch)))
    middle = orjson.dumps(snapshot(engine))
    out.extend(engine.flush())
    data = [out.records, out.alerts, out.rejected, snapshot(engine)]
    return orjson.dumps(data), middle


@pytest.mark.parametrize("name", CONFIGS)
@settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(stream=machine_streams())
def test_the_columnar_close_matches_segment_by_segment(
    name: str, stream: tuple[list[dict[str, Any]], list[int]]
) -> None:
    events, cuts = stream
    config = EngineConfig(**CONFIGS[name])
    per_segment = run(config, events, cuts, columns=False)
    columnar = run(config, events, cuts, columns=True)
    assert columnar == per_segment


def simulated(hours: float) -> list[dict[str, Any]]:
    config = SimConfig(profiles="mix")
    events = simulate(config, 3, START_US, hours * 3600.0)
    return [e for e in events if e["type"] in ("state", "count", "counter")]


@pytest.mark.parametrize(
    ("settings_", "columnar"),
    [
        ({}, True),
        (CONFIGS["heartbeat, modulus, short hold"], True),
        (
            {"shift_calendar": {"shifts": [{"name": "day", "start": "06:00", "end": "14:00"}]}},
            False,
        ),
        ({"production_day": {"timezone": "Europe/Berlin"}}, False),
    ],
    ids=["plain windows", "heartbeat, modulus, hold, silence", "shifts", "local days"],
)
def test_a_simulated_plant_gives_the_same_bytes(settings_: dict[str, Any], columnar: bool) -> None:
    """Shifts and local days are not the columnar path's: those closes fall back."""
    config = EngineConfig(**settings_)
    assert (plain_sizes(config.window_set()) is not None) == columnar
    events = simulated(8)
    cuts = list(range(300, len(events), 300))
    assert run(config, events, cuts, columns=True) == run(config, events, cuts, columns=False)


def test_the_sums_are_in_the_order_of_the_states_fields() -> None:
    # `_apply` makes a new state from a row of sums by position.
    from streams import columnar, oee

    assert columnar._FIELDS == oee._SUMMED
