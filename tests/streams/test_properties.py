"""Hypothesis properties of the engine: additivity, windowing, duplicates, lateness.

Every property is deterministic (`derandomize=True`): the same examples run on
every machine. Plant streams come from the seeded simulator in a small
layout; single-machine streams are drawn by hypothesis directly.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from devtools.simulator import LineSpec, Product, SilentMachine, SimConfig, simulate
from devtools.simulator_orders import FulfilmentProfile, OrderConfig
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine, Output
from streams.oee import OeeState
from streams.perfect_order import OrderVerdict, PerfectOrderState
from streams.publishing import Publisher
from streams.windows import Window
from tests.streams.helpers import run_events

US = 1_000_000
MINUTE_US = 60 * US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START = datetime(2026, 11, 2, tzinfo=UTC)
STATES = ("running", "idle", "down", "setup", "planned_stop")

PROPERTY = settings(
    derandomize=True,
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# A plant stream is a function of its seed: shrinking a seed teaches nothing, so
# a failing plant example is reported as found.
PLANT_PROPERTY = settings(
    PROPERTY, max_examples=8, phases=[Phase.explicit, Phase.reuse, Phase.generate]
)


def to_us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def iso(t_us: int) -> str:
    return (EPOCH + timedelta(microseconds=t_us)).isoformat().replace("+00:00", "Z")


def ts_us(event: dict[str, Any]) -> int:
    return to_us(datetime.fromisoformat(event["ts"]))


def config(**overrides: Any) -> EngineConfig:
    base: dict[str, Any] = {
        "windows": ["15m", "1h", "1d"],
        "allowed_lateness": "0s",
        "heartbeat_timeout": "10m",
        "decision_grace": "4h",
    }
    return EngineConfig(**{**base, **overrides})


class RecordingEngine(Engine):
    """An engine that keeps a copy of every window's states as it closes it."""

    def __init__(self, cfg: EngineConfig) -> None:
        super().__init__(cfg)
        self.closed_oee: dict[Window, dict[tuple[str, str, str], OeeState]] = {}
        self.closed_orders: dict[Window, dict[tuple[str, str], PerfectOrderState]] = {}
        self.publisher = RecordingPublisher(self)


class RecordingPublisher(Publisher):
    """Copies a closing window's states into its `RecordingEngine`."""

    engine: RecordingEngine

    def close_window(self, window: Window) -> Output:
        engine = self.engine
        engine.closed_oee[window] = {
            k: OeeState.from_dict(s.to_dict()) for k, s in engine.oee.get(window, {}).items()
        }
        engine.closed_orders[window] = {
            k: PerfectOrderState.from_dict(s.to_dict())
            for k, s in engine.orders.get(window, {}).items()
        }
        return super().close_window(window)


def run(
    events: list[dict[str, Any]],
    cfg: EngineConfig,
    *,
    engine: Engine | None = None,
    flush_at: int | None = None,
) -> tuple[list[dict[str, Any]], Engine]:
    """Records of one engine over the events, flushed (at `flush_at` if given)."""
    engine = engine or Engine(cfg)
    out = run_events(engine, (parse_event(e) for e in events))
    if flush_at is not None:
        out.extend(engine.advance(flush_at))
    out.extend(engine.flush())
    return out.records, engine


# --- a small simulated plant ----------------------------------------------------

_ROUGH = FulfilmentProfile(late=0.2, short=0.2, damaged=0.1, documents_bad=0.1)
SMALL_PLANT = SimConfig(
    lines=(
        LineSpec(
            "line-1", ("press-1", "press-2"), (Product("SKU-1", 1.5), Product("SKU-2", 2.0)), 0.02
        ),
        LineSpec(
            "line-2", ("cnc-1", "cnc-2"), (Product("SKU-3", 4.0), Product("SKU-4", 6.0)), 0.01
        ),
    ),
    count_interval_s=300.0,
    heartbeat_s=900.0,
    silent_machine=SilentMachine("cnc-2", from_s=20 * 3_600.0),
    orders=OrderConfig(
        outbound_per_day=60.0,
        inbound_per_day=20.0,
        segments={"A": _ROUGH, "B": _ROUGH, "C": _ROUGH},
        suppliers={"SUP-1": ("A", _ROUGH), "SUP-2": ("C", _ROUGH)},
        promised_after_h=(24, 30),
        amend_rate=0.2,
        cancel_rate=0.05,
    ),
)
MACHINES = ("press-1", "press-2", "cnc-1", "cnc-2")


def plant_events(seed: int) -> list[dict[str, Any]]:
    """About 1,750 events: 40 h of four machines on two lines, and their orders."""
    return list(simulate(SMALL_PLANT, seed, to_us(START), 40 * 3_600.0))


seeds = st.integers(0, 2**16)


def key_of(event: dict[str, Any]) -> str:
    return event.get("machine") or event["order_id"]


# --- one machine, drawn by hypothesis -------------------------------------------

gaps_us = st.one_of(st.just(0), st.integers(1, 3 * HOUR_US), st.integers(1, 20 * MINUTE_US))
state_step = st.tuples(
    st.just("state"), st.sampled_from(STATES), st.sampled_from([None, "jam", "break", "changeover"])
)
count_step = st.tuples(
    st.just("count"),
    st.integers(0, 400),
    st.integers(0, 400),
    st.sampled_from([0.5, 2.0, 7.5, 60.0]),
)
machine_steps = st.lists(
    st.tuples(gaps_us, st.one_of(state_step, count_step)), min_size=1, max_size=40
)


def machine_events(
    start_us: int, steps: list[tuple[int, tuple]], machine: str = "m-1", line: str = "line-1"
) -> list[dict[str, Any]]:
    events, t = [], start_us
    for i, (gap, step) in enumerate(steps):
        t += gap
        base = {
            "event_id": f"{machine}-{i}",
            "ts": iso(t),
            "site": "s",
            "line": line,
            "machine": machine,
        }
        if step[0] == "state":
            events.append({"type": "state", **base, "state": step[1], "reason": step[2]})
        else:
            total, good, ideal = step[1], min(step[1], step[2]), step[3]
            count = {"product": "P", "ideal_cycle_s": ideal, "total": total, "good": good}
            events.append({"type": "count", **base, **count})
    return events


def span_s(record: dict[str, Any]) -> float:
    """All the time a record accounts for: planned busy + planned stop + no data."""
    return record["planned_s"] + record["planned_stop_s"] + record["no_data_s"]


def machine_records(records: list[dict[str, Any]], label: str) -> list[dict[str, Any]]:
    return sorted(
        (
            r
            for r in records
            if r["kpi"] == "oee" and r["scope"] == "machine" and r["window"] == label
        ),
        key=lambda r: r["start"],
    )


def record_us(text: str) -> int:
    return to_us(datetime.fromisoformat(text))


# --- 1. merge is associative and order-independent ------------------------------

amounts = st.integers(0, 10**12)
oee_states = st.builds(
    OeeState,
    running_us=amounts,
    idle_us=amounts,
    down_us=amounts,
    setup_us=amounts,
    planned_stop_us=amounts,
    no_data_us=amounts,
    ideal_us=amounts,
    total=st.integers(0, 10**6),
    good=st.integers(0, 10**6),
    failures=st.integers(0, 100),
    downtime_by_reason_us=st.dictionaries(
        st.sampled_from(["jam", "break", "changeover", "no_material", "down"]), amounts, max_size=3
    ),
)
whole_units = st.integers(0, 10**6).map(float)
order_states = st.builds(
    PerfectOrderState,
    **{
        name: st.integers(0, 1_000)
        for name in (
            "decided",
            "perfect",
            "on_time",
            "in_full",
            "damage_free",
            "documents_ok",
            "otif",
            "quality_ok",
            "lines_ordered",
            "lines_in_full",
            "cycle_count",
        )
    },
    units_ordered_micro=whole_units,
    units_delivered_micro=whole_units,
    cycle_time_us=amounts,
)


def merged_in_groups(states: list[Any], order: list[int], cuts: list[int]) -> dict[str, Any]:
    """Merge the states permuted by `order`, in groups cut at `cuts`, groups last to first."""
    kind = type(states[0])
    clones = [kind.from_dict(states[i].to_dict()) for i in order]
    bounds = [0, *sorted({c % (len(clones) + 1) for c in cuts}), len(clones)]
    groups = []
    for a, b in itertools.pairwise(bounds):
        total = kind()
        for s in clones[a:b]:
            total.merge(s)
        groups.append(total)
    result = kind()
    for g in reversed(groups):
        result.merge(g)
    return result.to_dict()


@pytest.mark.parametrize("states", [oee_states, order_states], ids=["oee", "perfect_order"])
def test_merge_is_associative_and_order_independent(states: st.SearchStrategy) -> None:
    @PROPERTY
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        items = data.draw(st.lists(states, min_size=1, max_size=8))
        snapshot = [s.to_dict() for s in items]
        n = len(items)
        reference = merged_in_groups(items, list(range(n)), [])
        order = data.draw(st.permutations(range(n)))
        cuts = data.draw(st.lists(st.integers(0, n), max_size=4))
        assert merged_in_groups(items, order, cuts) == reference
        if n >= 3:
            kind = type(items[0])
            a, b, c = (kind.from_dict(s.to_dict()) for s in items[:3])
            left = kind.from_dict(a.to_dict()).merge(b).merge(c)
            right = a.merge(kind.from_dict(b.to_dict()).merge(c))
            assert left.to_dict() == right.to_dict()
        assert [s.to_dict() for s in items] == snapshot  # inputs untouched

    check()


def test_perfect_order_merge_with_fractional_units_is_exact() -> None:
    def part(q: float) -> PerfectOrderState:
        state = PerfectOrderState()
        state.add(
            OrderVerdict(
                "o", "outbound", "A", "p", 0, "complete", True, True, True, True, 1, 1, q, q, 0
            )
        )
        return state

    parts = [part(q) for q in (0.1, 0.2, 0.3)]
    left = PerfectOrderState().merge(parts[0]).merge(parts[1]).merge(parts[2])
    right = PerfectOrderState().merge(parts[2]).merge(parts[1]).merge(parts[0])
    assert left.to_dict() == right.to_dict()
    assert left.result()["units_ordered"] == 0.6


# --- 2. any split of the stream gives the same result ---------------------------


@PLANT_PROPERTY
@given(seed=seeds, data=st.data())
def test_engines_over_disjoint_machines_merge_to_one_engine(seed: int, data: st.DataObject) -> None:
    """Two engines on disjoint machines (and orders); their states merge to one engine's.

    one engine:   press-1 press-2 cnc-1 cnc-2 | all orders   -> line roll-ups
    engine A:     press-1        (cnc-1)      | some orders  \\ merged per window
    engine B:             press-2      (cnc-2)| the others   /  = the same roll-ups
    (the cnc machines go to A or B at random)
    """
    events = plant_events(seed)
    flush_us = max(ts_us(e) for e in events)
    # press-1 and press-2 always go apart, so line-1's roll-up needs both engines.
    in_a = {"press-1"} | data.draw(st.sets(st.sampled_from(["cnc-1", "cnc-2"])), label="A")
    rng = random.Random(data.draw(seeds, label="rng seed"))
    orders_a = {e["order_id"] for e in events if "order_id" in e and rng.random() < 0.5}
    to_a = [e.get("machine") in in_a or e.get("order_id") in orders_a for e in events]
    part_a = [e for e, yes in zip(events, to_a, strict=True) if yes]
    part_b = [e for e, yes in zip(events, to_a, strict=True) if not yes]

    cfg = config()
    whole, one = run(events, cfg, engine=RecordingEngine(cfg))
    _, a = run(part_a, cfg, engine=RecordingEngine(cfg), flush_at=flush_us)
    _, b = run(part_b, cfg, engine=RecordingEngine(cfg), flush_at=flush_us)
    assert isinstance(one, RecordingEngine) and isinstance(a, RecordingEngine)
    assert isinstance(b, RecordingEngine)

    def states_of(engine: RecordingEngine, attr: str) -> dict[tuple, Any]:
        found = {}
        for window, states in getattr(engine, attr).items():
            for key, state in states.items():
                found[window, key] = state
        return found

    # Every machine's state is the same whichever engine computed it.
    machines_a, machines_b = states_of(a, "closed_oee"), states_of(b, "closed_oee")
    assert not machines_a.keys() & machines_b.keys()
    merged_machines = {k: s.to_dict() for k, s in {**machines_a, **machines_b}.items()}
    assert merged_machines == {k: s.to_dict() for k, s in states_of(one, "closed_oee").items()}

    # Line and site roll-ups of the merged parts, merged in a random order, are one engine's.
    lines: dict[tuple, list[OeeState]] = defaultdict(list)
    for (window, (site, line, _)), state in [*machines_a.items(), *machines_b.items()]:
        lines[window, site, line].append(state)
        lines[window, site, None].append(state)
    expected = {
        (r["window"], r["start"], r["site"], r.get("line")): r
        for r in whole
        if r["kpi"] == "oee" and r["scope"] in ("line", "site")
    }
    assert len(expected) == len(lines)
    for (window, site, line), parts in lines.items():
        rng.shuffle(parts)
        result = OeeState.merged(parts).result()
        record = expected[window.label, iso(window.start_us), site, line]
        assert {k: record[k] for k in result} == result

    # Perfect-order states per window and segment merge the same way.
    orders: dict[tuple, PerfectOrderState] = defaultdict(PerfectOrderState)
    for key, state in [
        *states_of(a, "closed_orders").items(),
        *states_of(b, "closed_orders").items(),
    ]:
        orders[key].merge(state)
    want = {k: s.to_dict() for k, s in states_of(one, "closed_orders").items()}
    assert {k: s.to_dict() for k, s in orders.items()} == want
    assert sum(s["decided"] for s in want.values()) > 0


@PLANT_PROPERTY
@given(seed=seeds, data=st.data())
def test_short_windows_merge_to_their_day(seed: int, data: st.DataObject) -> None:
    """Chunks in time: a machine's 15 m (or 1 h) states, merged in any order, are its day.

    1d     [------------------------------ day ------------------------------)
    1h     [ h0 )[ h1 )[ h2 ) ...                                       [ h23 )
    """
    cfg = config()
    _, engine = run(plant_events(seed), cfg, engine=RecordingEngine(cfg))
    assert isinstance(engine, RecordingEngine)
    rng = random.Random(data.draw(seeds, label="rng seed"))
    days = {w: states for w, states in engine.closed_oee.items() if w.label == "1d"}
    for label in ("15m", "1h"):
        parts: dict[tuple, list[OeeState]] = defaultdict(list)
        for window, states in engine.closed_oee.items():
            if window.label == label:
                day = window.start_us - window.start_us % DAY_US
                for key, state in states.items():
                    parts[day, key].append(state)
        merged = {}
        for key, states in parts.items():
            rng.shuffle(states)
            merged[key] = OeeState.merged(states).to_dict()
        want = {
            (w.start_us, k): s.to_dict() for w, states in days.items() for k, s in states.items()
        }
        assert merged == want


@PLANT_PROPERTY
@given(seed=seeds, data=st.data())
def test_extra_advances_between_events_change_no_record(seed: int, data: st.DataObject) -> None:
    """A timer calling advance() between events (never past the next event) changes nothing."""
    events = plant_events(seed)
    cfg = config()
    whole, _ = run(events, cfg)

    rng = random.Random(data.draw(seeds, label="rng seed"))
    cuts = sorted(rng.sample(range(1, len(events)), k=min(60, len(events) - 1)))
    engine, out = Engine(cfg), Output()
    previous = 0
    for cut in cuts:
        out.extend(run_events(engine, (parse_event(e) for e in events[previous:cut])))
        watermark = engine.watermark_us
        assert watermark is not None
        nxt = ts_us(events[cut])
        # Right at the watermark, right at the next event, or anywhere between.
        for at in sorted({watermark, nxt, rng.randint(watermark, nxt)}):
            out.extend(engine.advance(at))
        previous = cut
    out.extend(run_events(engine, (parse_event(e) for e in events[previous:])))
    out.extend(engine.flush())
    assert out.records == whole


# --- 3. every instant in exactly one bucket of one window per size --------------

SIZES = {"15m": 15 * MINUTE_US, "1h": HOUR_US, "1d": DAY_US}


@PROPERTY
@given(offset=st.integers(0, DAY_US), steps=machine_steps, lateness=st.sampled_from(["0s", "5m"]))
def test_every_instant_in_one_window_per_size(offset: int, steps: list, lateness: str) -> None:
    """Windows of one size tile [first event, flush point) without gaps or overlaps.

    events   e0 ...... e1 ............... e2 ...... F
    1h       |  [0,1h) | [1h,2h)  | [2h,3h)  | [3h,4h)
    each window's planned + planned_stop + no_data = its overlap with [e0, F)
    """
    events = machine_events(to_us(START) + offset, steps)
    first, flush = ts_us(events[0]), ts_us(events[-1])
    records, _ = run(events, config(allowed_lateness=lateness))
    for label, size in SIZES.items():
        windows = machine_records(records, label)
        total = 0.0
        for prev, cur in itertools.pairwise(windows):
            assert record_us(prev["end"]) <= record_us(cur["start"])  # no overlap
        for r in windows:
            start, end = record_us(r["start"]), record_us(r["end"])
            assert start % size == 0 and end - start == size
            overlap = max(0, min(end, flush) - max(start, first))
            assert span_s(r) * US == pytest.approx(overlap, abs=1), (label, r["start"])
            total += span_s(r)
        assert total * US == pytest.approx(flush - first, abs=len(windows))


BERLIN = ZoneInfo("Europe/Berlin")
SHIFTS = {"night": (time(22, 0), time(6, 0)), "day": (time(6, 0), time(14, 0))}
SHIFT_CONFIG = {
    "timezone": "Europe/Berlin",
    "shifts": [
        {"name": name, "start": s.strftime("%H:%M"), "end": e.strftime("%H:%M")}
        for name, (s, e) in SHIFTS.items()
    ],
}


def shift_occurrences(first_us: int, last_us: int) -> dict[tuple[str, int], int]:
    """(shift, start) -> end of each shift met in [first, last], straight from zoneinfo."""
    found = {}
    day = (EPOCH + timedelta(microseconds=first_us)).astimezone(BERLIN).date() - timedelta(days=1)
    last_day = (EPOCH + timedelta(microseconds=last_us)).astimezone(BERLIN).date()
    while day <= last_day:
        for name, (start, end) in SHIFTS.items():
            end_day = day + timedelta(days=1) if end <= start else day
            s = to_us(datetime.combine(day, start, tzinfo=BERLIN))
            found[name, s] = to_us(datetime.combine(end_day, end, tzinfo=BERLIN))
        day += timedelta(days=1)
    return found


DST_STARTS = st.sampled_from(
    [
        datetime(2024, 3, 30, 12, tzinfo=UTC),  # spring forward in the night to Sunday
        datetime(2024, 10, 26, 12, tzinfo=UTC),  # fall back
        datetime(2024, 7, 1, tzinfo=UTC),
    ]
)


@PROPERTY
@given(start=DST_STARTS, offset=st.integers(0, DAY_US), steps=machine_steps)
def test_shift_windows_hold_exactly_the_in_shift_time(
    start: datetime, offset: int, steps: list
) -> None:
    """With a Berlin calendar (night 22:00-06:00 across midnight, day 06:00-14:00),
    shift windows hold exactly the in-shift time; 14:00-22:00 is in none of them.

        local    14:00      22:00         06:00      14:00     22:00
                 | no shift | night ------ | day ---- | no shift |
    """
    events = machine_events(to_us(start) + offset, steps)
    first, flush = ts_us(events[0]), ts_us(events[-1])
    records, _ = run(events, config(shift_calendar=SHIFT_CONFIG))
    shifts = shift_occurrences(first, flush)
    in_shift = sum(max(0, min(e, flush) - max(s, first)) for (_, s), e in shifts.items())

    found = sorted(
        (
            r
            for r in records
            if r["kpi"] == "oee" and r["scope"] == "machine" and r["window"] in SHIFTS
        ),
        key=lambda r: r["start"],
    )
    for prev, cur in itertools.pairwise(found):
        assert record_us(prev["end"]) <= record_us(cur["start"])  # shifts never overlap
    total = 0
    for r in found:
        start_us, end_us = record_us(r["start"]), record_us(r["end"])
        assert shifts[r["window"], start_us] == end_us
        overlap = max(0, min(end_us, flush) - max(start_us, first))
        assert span_s(r) * US == pytest.approx(overlap, abs=1)
        total += overlap
    assert total == in_shift
    # The tumbling windows still hold all the time, in shift or not.
    day_total = sum(span_s(r) for r in machine_records(records, "1d"))
    assert day_total * US == pytest.approx(flush - first, abs=10)


@pytest.mark.parametrize(
    ("night", "hours"),
    [(date(2024, 3, 30), 7), (date(2024, 10, 26), 9), (date(2024, 7, 1), 8)],
    ids=["spring-forward", "fall-back", "summer"],
)
def test_night_shift_across_dst_change(night: date, hours: int) -> None:
    """A machine running all night: the night shift holds 7 h, 9 h or 8 h of it."""
    begin = to_us(datetime.combine(night, time(18, 0), tzinfo=BERLIN))
    steps = [(0, ("state", "running", None))] + [(5 * MINUTE_US, ("count", 10, 10, 1.0))] * 168
    records, _ = run(machine_events(begin, steps), config(shift_calendar=SHIFT_CONFIG))
    (shift,) = [r for r in records if r["window"] == "night" and r["scope"] == "machine"]
    assert shift["start"] == iso(to_us(datetime.combine(night, time(22, 0), tzinfo=BERLIN)))
    assert shift["running_s"] == shift["planned_s"] == hours * 3_600.0
    assert shift["no_data_s"] == shift["planned_stop_s"] == 0.0


# --- 4. duplicates and late events ----------------------------------------------


@PLANT_PROPERTY
@given(seed=seeds, data=st.data(), lateness=st.sampled_from(["0s", "5m", "1h"]))
def test_duplicates_change_no_record(seed: int, data: st.DataObject, lateness: str) -> None:
    """Single events re-sent (at once or later) and a re-sent batch are dropped.

    stream   e0 e1 e2 e3 e4 e5 e6 ...
    re-sent  e0 e1 e1 e2 e3 e4 [e2 e3 e4] e5 e3 e6 ...
    """
    events = plant_events(seed)
    cfg = config(allowed_lateness=lateness)
    whole, _ = run(events, cfg)

    rng = random.Random(data.draw(seeds, label="rng seed"))
    resent: list[list[dict[str, Any]]] = [[e] for e in events]
    copies = 0
    for _ in range(30):  # single events, re-sent at once or up to 200 events later
        i = rng.randrange(len(events))
        j = min(len(events) - 1, i + rng.choice([0, 1, rng.randrange(200)]))
        resent[j].append(dict(events[i]))
        copies += 1
    a = rng.randrange(len(events) - 50)
    batch = [dict(e) for e in events[a : a + 50]]  # a batch delivered twice
    resent[rng.randrange(a + 49, len(events))].extend(batch)
    copies += len(batch)

    records, engine = run([e for group in resent for e in group], cfg)
    assert records == whole
    dropped = sum(v for k, v in engine.stats.items() if k.startswith(("duplicates.", "late.")))
    assert dropped == copies


@PLANT_PROPERTY
@given(seed=seeds, data=st.data(), lateness=st.sampled_from(["0s", "5m", "1h"]))
def test_late_events_change_nothing_and_are_counted(
    seed: int, data: st.DataObject, lateness: str
) -> None:
    """An event older than watermark - allowed lateness is counted per source and ignored.

    watermark                         |W
    frontier (W - lateness)      |F
    late event              x (ts < F): counted as late.<source>, changes nothing
    """
    events = plant_events(seed)
    cfg = config(allowed_lateness=lateness, revision_horizon="0s")  # no revisions
    lateness_us = cfg.us("allowed_lateness")
    whole, _ = run(events, cfg)

    rng = random.Random(data.draw(seeds, label="rng seed"))
    order_ids = [e["order_id"] for e in events if e["type"] == "order"]
    stream: list[dict[str, Any]] = []
    injected: Counter[str] = Counter()
    watermark = None
    for i, e in enumerate(events):
        if watermark is not None and rng.random() < 0.03:
            ts = iso(watermark - lateness_us - rng.randint(1, 2 * HOUR_US))
            kind = rng.choice(
                ["state", "count", "shipment", "order", "order_closed", "order_cancelled"]
            )
            late: dict[str, Any] = {"type": kind, "event_id": f"late-{i}", "ts": ts}
            oid = rng.choice(order_ids)
            if kind in ("state", "count"):
                machine = rng.choice(MACHINES)
                late |= {"site": "plant-1", "line": "line-1", "machine": machine}
                late |= (
                    {"state": rng.choice(STATES), "reason": None}
                    if kind == "state"
                    else {"product": "P", "ideal_cycle_s": 1.0, "total": 50, "good": 10}
                )
                injected["machine-state"] += 1
            elif kind == "shipment":
                late |= {"shipment_id": f"SH-late-{i}", "order_id": oid, "direction": "outbound"}
                late |= {"delivered_at": ts, "documents_ok": False}
                late["lines"] = [{"line_no": 1, "qty": 10_000, "damaged_qty": 5}]
                injected["shipments"] += 1
            elif kind == "order":
                late |= {"order_id": rng.choice([oid, f"SO-late-{i}"]), "direction": "inbound"}
                late |= {"partner": "X", "segment": "Z", "promised_at": ts}
                late["lines"] = [{"line_no": 1, "sku": "S", "qty": 1}]
                injected["orders"] += 1
            else:
                late["order_id"] = oid
                injected["orders"] += 1
            stream.append(late)
        stream.append(e)
        watermark = max(watermark or 0, ts_us(e))

    records, engine = run(stream, cfg)
    assert records == whole
    assert {k: v for k, v in engine.stats.items() if k.startswith("late.")} == {
        f"late.{source}": n for source, n in injected.items()
    }


# --- 5. out of order within the allowed lateness --------------------------------


@PLANT_PROPERTY
@given(seed=seeds, data=st.data(), lateness_min=st.sampled_from([1, 5, 20]))
def test_out_of_order_within_lateness_equals_sorted(
    seed: int, data: st.DataObject, lateness_min: int
) -> None:
    """Events delayed by up to the allowed lateness give the sorted stream's records.

    event time   e1 e2 e3 e4 e5        arrival: e1 e3 e2 e5 e4
    each arrives at most `lateness` after its event time
    """
    events = plant_events(seed)
    cfg = config(allowed_lateness=f"{lateness_min}m")
    whole, _ = run(events, cfg)

    rng = random.Random(data.draw(seeds, label="rng seed"))
    delay: dict[int, int] = {}  # one delay per timestamp keeps equal-ts events in order
    arrival = []
    for i, e in enumerate(events):
        t = ts_us(e)
        delay.setdefault(t, rng.randint(0, lateness_min * MINUTE_US))
        arrival.append((t + delay[t], i))
    shuffled = [events[i] for _, i in sorted(arrival)]
    assert shuffled != events

    records, engine = run(shuffled, cfg)
    assert not any(k.startswith("late.") for k in engine.stats)
    assert records == whole


def test_original_order_arriving_after_its_amendment() -> None:
    """Within a 1 h lateness the amendment (08:30) overtakes the original (08:00).

    event time  order@08:00  amendment@08:30  shipment@09:00 (completes)
    arrival     amendment    order            shipment
    cycle time  09:00 - 08:00 = 3600 s either way
    """

    def order(eid: str, at: str, qty: int) -> dict[str, Any]:
        return {
            "type": "order", "event_id": eid, "ts": at, "order_id": "SO-1",
            "direction": "outbound", "partner": "C-1", "segment": "A",
            "promised_at": "2026-11-02T12:00:00Z",
            "lines": [{"line_no": 1, "sku": "S", "qty": qty}],
        }  # fmt: skip

    original, amendment = (
        order("o1", "2026-11-02T08:00:00Z", 5),
        order("o2", "2026-11-02T08:30:00Z", 10),
    )
    shipment = {
        "type": "shipment", "event_id": "s1", "ts": "2026-11-02T09:00:00Z",
        "shipment_id": "SH-1", "order_id": "SO-1", "direction": "outbound",
        "delivered_at": "2026-11-02T09:00:00Z", "documents_ok": True,
        "lines": [{"line_no": 1, "qty": 10, "damaged_qty": 0}],
    }  # fmt: skip
    cfg = config(allowed_lateness="1h")
    day = [
        [r for r in run(stream, cfg)[0] if r["kpi"] == "perfect_order" and r["window"] == "1d"]
        for stream in ([original, amendment, shipment], [amendment, original, shipment])
    ]
    assert day[0][0]["mean_cycle_time_s"] == 3_600.0
    assert day[1][0]["mean_cycle_time_s"] == 3_600.0  # got 1800.0: 09:00 - 08:30
    assert day[1] == day[0]


# --- decisions moved up to the floor --------------------------------------------


def _order_day(extra_shipments: list[dict[str, Any]]) -> dict[str, Any]:
    """One order completed by a delivery at 09:10 that is only reported at 11:30.

    event time  order@08:00  count@11:10 (closes 10:00-11:00)  report@11:30  count@12:30
    delivered                      09:10 <- the completing delivery
    1h windows  [08,09) [09,10) [10,11) closed before the report arrives
    """
    order = {
        "type": "order", "event_id": "o1", "ts": "2026-11-02T08:00:00Z", "order_id": "SO-1",
        "direction": "outbound", "partner": "C-1", "segment": "A",
        "promised_at": "2026-11-02T12:00:00Z",
        "lines": [{"line_no": 1, "sku": "S", "qty": 10}],
    }  # fmt: skip

    def tick(eid: str, at: str) -> dict[str, Any]:
        return {
            "type": "count", "event_id": eid, "ts": at, "site": "s", "line": "l", "machine": "m",
            "product": "P", "ideal_cycle_s": 1.0, "total": 0, "good": 0,
        }  # fmt: skip

    def shipment(eid: str, at: str, delivered: str, damaged: int) -> dict[str, Any]:
        return {
            "type": "shipment", "event_id": eid, "ts": at, "shipment_id": eid,
            "order_id": "SO-1", "direction": "outbound", "delivered_at": delivered,
            "documents_ok": True, "lines": [{"line_no": 1, "qty": 10, "damaged_qty": damaged}],
        }  # fmt: skip

    stream = [
        order,
        tick("t1", "2026-11-02T11:10:00Z"),
        shipment("s1", "2026-11-02T11:30:00Z", "2026-11-02T09:10:00Z", 0),
        *(
            shipment(f"s{i + 2}", at, delivered, 1)
            for i, (at, delivered) in enumerate(extra_shipments)
        ),
        tick("t2", "2026-11-02T12:30:00Z"),
    ]
    # Hourly ticks: the windows close at 11:10, then not before 12:00.
    records, _ = run(stream, config(windows=["1h", "1d"]))
    (day,) = [r for r in records if r["kpi"] == "perfect_order" and r["window"] == "1d"]
    return day


def test_cycle_time_of_a_late_reported_delivery_is_delivery_minus_creation() -> None:
    assert _order_day([])["mean_cycle_time_s"] == 4_200.0  # 09:10 - 08:00


def test_late_reported_order_is_judged_on_deliveries_up_to_its_completion() -> None:
    # A second, damaged delivery at 10:00, after the 09:10 one completed the order.
    day = _order_day([("2026-11-02T11:31:00Z", "2026-11-02T10:00:00Z")])
    assert day["damage_free"] == day["perfect"] == 1


# --- 6. ratios ------------------------------------------------------------------

SHARES = {
    "oee": ("availability", "quality"),
    "perfect_order": (
        "perfect_order_rate", "component_product", "otif_rate", "line_fill_rate",
        "unit_fill_rate", "order_fill_rate",
    ),
    "chain": (
        "ope", "ole", "inbound_quality", "inbound_delivery", "outbound_quality",
        "outbound_delivery",
    ),
    "pchart": ("p", "center", "ucl", "lcl"),
}  # fmt: skip


def check_ratios(records: list[dict[str, Any]]) -> None:
    for r in records:
        for name in SHARES.get(r["kpi"], ()):
            assert r[name] is None or 0.0 <= r[name] <= 1.0, (name, r)
        if r["kpi"] != "oee":
            continue
        performance = r["performance"]
        assert r["performance_above_ideal"] == (performance is not None and performance > 1.0)
        assert performance is None or performance >= 0.0
        if r["oee"] is not None:
            # OEE inherits an unclipped performance above 1; otherwise it is a share.
            assert r["oee"] == pytest.approx(r["availability"] * performance * r["quality"])
            assert r["oee"] >= 0.0 and (r["oee"] <= 1.0 or r["performance_above_ideal"])


@PROPERTY
@given(offset=st.integers(0, DAY_US), lines=st.lists(machine_steps, min_size=1, max_size=3))
def test_machine_ratios_are_shares_and_performance_above_one_is_flagged(
    offset: int, lines: list
) -> None:
    events = sorted(
        (
            e
            for i, steps in enumerate(lines)
            for e in machine_events(to_us(START) + offset, steps, f"m-{i}", f"line-{i % 2}")
        ),
        key=ts_us,
    )
    records, _ = run(events, config())
    check_ratios(records)


@PLANT_PROPERTY
@given(seed=seeds)
def test_plant_ratios_are_shares(seed: int) -> None:
    records, _ = run(plant_events(seed), config())
    check_ratios(records)
    assert {r["kpi"] for r in records} >= {"oee", "perfect_order", "chain", "pchart"}


def test_performance_above_one_is_exported_unclipped_and_flagged() -> None:
    """100 s running, 100 units at an ideal 2 s each: performance 2.0, never clipped."""
    steps = [(0, ("state", "running", None)), (100 * US, ("count", 100, 100, 2.0))]
    records, _ = run(machine_events(to_us(START), steps), config())
    (r,) = [r for r in records if r["window"] == "15m" and r["scope"] == "machine"]
    assert r["performance"] == 2.0 and r["performance_above_ideal"] is True
    assert r["availability"] == r["quality"] == 1.0


def test_plant_streams_are_reproducible() -> None:
    # The properties rely on the simulator being a pure function of its seed.
    assert plant_events(3) == plant_events(3)
    assert len({key_of(e) for e in plant_events(3)}) > len(MACHINES)
