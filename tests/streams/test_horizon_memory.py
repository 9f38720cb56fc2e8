"""The revision horizon's compact memory: packed points, id digests, packed roll-ups.

Each structure must give back exactly what was put in (the records are
compared elsewhere); here, the edges: every point kind, numbers too large to
pack, snapshots of the old shapes, and ids across the hour they are packed.
"""

from __future__ import annotations

import base64
from array import array

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.oee import OeeState, pack, unpack
from streams.pointlog import PointLog
from streams.seen import BUCKET_US, SeenIds, digest
from streams.timeutil import US
from tests.eventfactory import at, count, state

POINTS = [
    (10, 1, "running", None, None),
    (20, 2, "down", "jam", None),
    (30, 3, "", None, ["count", "SKU-1", 100, 97, 230_400_000]),
    (40, 4, "", None, ["counter", "SKU-1", 65_500, None, 2.304]),
    (50, 5, "", None, ["counter", "SKU-2", 7, 6, 1.5]),
    (60, 6, "", None, ["count", "SKU-1", 2**63 + 5, 1, 10]),  # too large to pack
    (70, 7, "unknown", None, None),
]


def json_round_trip(data: object) -> object:
    return orjson.loads(orjson.dumps(data))


def test_points_come_back_as_they_went_in() -> None:
    log = PointLog.of(POINTS)
    assert log.points() == POINTS
    assert len(log) == len(POINTS) and log.first_us == 10
    again = PointLog.from_dict(json_round_trip(log.to_dict()))  # type: ignore[arg-type]
    assert again.points() == POINTS


def test_points_before_a_floor_are_taken_out() -> None:
    log = PointLog.of(POINTS)
    assert log.take_before(60) == POINTS[:5]
    assert log.points() == POINTS[5:] and log.first_us == 60
    assert log.take_before(1000) == POINTS[5:]
    assert len(log) == 0 and log.first_us is None and log.odd == {}


def test_a_snapshot_of_unpacked_points_still_loads() -> None:
    old = json_round_trip([list(p) for p in POINTS])
    assert PointLog.from_dict(old).points() == POINTS  # type: ignore[arg-type]


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**62),
            st.sampled_from(["running", "idle", "", "down"]),
            st.one_of(st.none(), st.text(min_size=1, max_size=8)),
            st.one_of(
                st.none(),
                st.tuples(
                    st.integers(0, 2**64 - 1), st.integers(0, 2**40), st.integers(0, 2**64 - 1)
                ),
            ),
        ),
        max_size=20,
    )
)
def test_any_points_round_trip(rows: list[tuple]) -> None:
    points = []
    for seq, (ts, state_, reason, units) in enumerate(sorted(rows, key=lambda r: r[0])):
        packed = None if units is None else ["count", "p", units[0], units[1], units[2]]
        points.append((ts, seq, state_, reason, packed))
    log = PointLog.of(points)
    assert log.points() == points
    assert PointLog.from_dict(json_round_trip(log.to_dict())).points() == points  # type: ignore[arg-type]


def test_ids_are_found_in_open_and_packed_hours_and_forgotten_by_hour() -> None:
    seen = SeenIds()
    a, b, c = digest("machine-state", "a"), digest("machine-state", "b"), digest("orders", "a")
    assert len({a, b, c}) == 3  # the source is part of the id
    seen.add(a, 10)
    seen.add(b, BUCKET_US + 10)
    seen.pack(BUCKET_US)  # the first hour is packed
    seen.add(c, 20)  # a late id joins the packed hour
    assert (a, 10) in seen and (b, BUCKET_US + 10) in seen and (c, 20) in seen
    assert (a, BUCKET_US + 10) not in seen  # another hour: another event
    restored = SeenIds.from_dict(json_round_trip(seen.to_dict()))  # type: ignore[arg-type]
    assert (c, 20) in restored and len(restored) == 3
    seen.forget(BUCKET_US)
    assert (a, 10) not in seen and (b, BUCKET_US + 10) in seen and len(seen) == 1


@given(
    st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 3)), max_size=60),
    st.integers(0, 4),
    st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 3)), max_size=20),
)
def test_a_snapshot_holds_each_hours_ids_sorted_and_once(
    first: list[tuple[int, int]], packed_hours: int, later: list[tuple[int, int]]
) -> None:
    seen, expected = SeenIds(), {}
    for key, hour in first:
        seen.add(key, hour * BUCKET_US)
    seen.pack(packed_hours * BUCKET_US)
    for key, hour in first + later:  # some again: a packed hour and its open ids together
        seen.add(key, hour * BUCKET_US)
        expected.setdefault(hour, set()).add(key)
    data = seen.to_dict()
    hours = {h: list(array("Q", base64.b64decode(ids))) for h, ids in data["hours"]}
    assert list(hours) == sorted(expected)
    assert hours == {h: sorted(ids) for h, ids in expected.items()}
    assert SeenIds.from_dict(json_round_trip(data)).to_dict() == data  # type: ignore[arg-type]


Step = tuple[str, int, int]
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 2**64 - 1), st.integers(0, 3)),
        st.tuples(st.just("add"), st.integers(0, 40), st.integers(0, 3)),  # often again
        st.tuples(st.sampled_from(("runs", "pack", "forget")), st.integers(0, 4), st.just(0)),
    ),
    max_size=120,
)


@given(STEPS)
def test_runs_hold_each_hours_ids_and_a_serial_never_changes(steps: list[Step]) -> None:
    """A worker's snapshot takes the ids as runs: each hour's runs together are
    its ids, and a run's serial (its token) always has the same ids."""
    seen, made = SeenIds(), {}
    for what, n, hour in [*steps, ("runs", 0, 0)]:
        if what == "add":
            seen.add(n, hour * BUCKET_US)
        elif what == "pack":
            seen.pack(n * BUCKET_US)
        elif what == "forget":
            seen.forget(n * BUCKET_US)
        else:
            runs = seen.runs()
            expected = {
                h: list(array("Q", base64.b64decode(ids))) for h, ids in seen.to_dict()["hours"]
            }
            assert [h for h, _ in runs] == list(expected)
            for h, of_hour in runs:
                ids = sorted(int(i) for _, run in of_hour for i in run)
                assert ids == expected[h]  # each id in one run only
                assert len(of_hour) <= max(1, len(ids)).bit_length() + 1
                for serial, run in of_hour:
                    assert made.setdefault(serial, run.tobytes()) == run.tobytes()


def test_an_open_hour_takes_only_its_new_ids_into_a_new_run() -> None:
    seen = SeenIds()
    for key in range(1000):
        seen.add(key, 10)
    [(_, [(first, _)])] = seen.runs()
    for key in range(1000, 1010):
        seen.add(key, 10)
    [(_, runs)] = seen.runs()
    assert [serial for serial, _ in runs][0] == first  # kept: not written again
    assert [len(run) for _, run in runs] == [1000, 10]
    assert seen.runs() == [(0, runs)]  # nothing new: the same runs
    for key in range(2000, 2200):  # a snapshot after every id: runs merge
        seen.add(key, 10)
        [(_, runs)] = seen.runs()
        assert len(runs) <= 10
    assert sum(len(run) for _, run in runs) == 1210


def test_a_long_run_is_not_merged_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.seen.RUN_CAP", 16)
    seen = SeenIds()
    for key in range(200):
        seen.add(key, 10)
        [(_, runs)] = seen.runs()
    assert sum(len(run) for _, run in runs) == 200
    assert max(len(run) for _, run in runs) < 2 * 16 + 2  # a merge stops at the cap
    assert len(runs) <= 200 // 16 + 6


def test_a_snapshot_of_plain_ids_still_loads() -> None:
    seen = SeenIds.from_dict([["machine-state", "e1", 5 * US], ["orders", "o1", 9 * US]])
    assert (digest("machine-state", "e1"), 5 * US) in seen
    assert (digest("orders", "o1"), 9 * US) in seen
    assert (digest("orders", "e1"), 5 * US) not in seen


def test_packed_roll_ups_give_back_the_state() -> None:
    state = OeeState(running_us=3_600 * US, down_us=60 * US, total=1000, good=950, failures=1)
    state.downtime_by_reason_us = {"jam": 60 * US}
    assert unpack(pack(state)) == state
    assert unpack(pack(OeeState())) == OeeState()
    huge = OeeState(total=2**63 + 5, good=1)
    assert unpack(pack(huge)) == huge


def test_a_redelivery_hours_later_is_a_duplicate_and_a_day_later_too_late() -> None:
    engine = Engine(EngineConfig(revision_horizon="24h"))
    first = state(at(0), "running")
    later = [count(at(h), 100, 100, 2.0) for h in range(1, 30)]
    for data in [first, *later[:5]]:
        assert engine.ingest(parse_event(data)) is None
        engine.advance(engine.watermark_us)  # type: ignore[arg-type]
    # Its hour was packed long ago; the id is still known: a duplicate, not a revision.
    assert engine.ingest(parse_event(first)) == "duplicate"
    for data in later[5:]:
        engine.ingest(parse_event(data))
        engine.advance(engine.watermark_us)  # type: ignore[arg-type]
    assert engine.ingest(parse_event(first)) == "too_late"  # 29 h behind: forgotten
