"""The laws of `streams.kpi.WindowKpi`, for every KPI in `streams.kpi.KPIS`:
observations summed in any grouping and order give the same record fields,
the empty state is the identity, and a state round-trips through JSON."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streams.kpi import KPIS, WindowKpi
from streams.machine import Segment, Units
from streams.oee import STATE_BUCKETS, OeeState
from streams.perfect_order import OrderVerdict, PerfectOrderState

REASONS = st.sampled_from([None, "jam", "changeover", "no material"])

time_pieces = st.builds(
    lambda start, length, bucket, reason: Segment(start, start + length, bucket, reason),
    st.integers(0, 10**12),
    st.integers(1, 10**10),
    st.sampled_from(STATE_BUCKETS),
    REASONS,
)
markers = st.builds(
    lambda at, units, failure: Segment(at, at, "running", None, failure, False, units),
    st.integers(0, 10**12),
    st.none()
    | st.builds(
        Units, st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**12), st.booleans()
    ),
    st.booleans(),
)
verdicts = st.builds(
    OrderVerdict,
    order_id=st.text(min_size=1, max_size=5),
    direction=st.sampled_from(["inbound", "outbound"]),
    segment=st.sampled_from(["A", "B"]),
    partner=st.just("p"),
    decided_us=st.integers(0, 10**12),
    how=st.sampled_from(["complete", "closed", "cancelled", "expired"]),
    on_time=st.booleans(),
    in_full=st.booleans(),
    damage_free=st.booleans(),
    documents_ok=st.booleans(),
    lines_ordered=st.integers(0, 50),
    lines_in_full=st.integers(0, 50),
    units_ordered=st.floats(0, 1e6, allow_nan=False).map(lambda x: round(x, 3)),
    units_delivered=st.floats(0, 1e6, allow_nan=False).map(lambda x: round(x, 3)),
    cycle_time_us=st.none() | st.integers(0, 10**12),
    below_moq=st.booleans(),
    response_time_missed=st.booleans(),
)
OBSERVATIONS: dict[str, Any] = {"oee": time_pieces | markers, "perfect_order": verdicts}


def summed(cls: type[Any], observations: list[Any]) -> Any:
    state = cls()
    for observation in observations:
        state.add(observation)
    return state


def fields(state: Any) -> bytes:
    return orjson.dumps(state.result(), option=orjson.OPT_SORT_KEYS)


def test_every_kpi_is_a_window_kpi_of_its_observation() -> None:
    assert set(KPIS) == set(OBSERVATIONS) == {"oee", "perfect_order"}
    for cls, _ in KPIS.values():
        assert isinstance(cls(), WindowKpi)
    assert KPIS["oee"][0] is OeeState and KPIS["perfect_order"][0] is PerfectOrderState


@given(st.data())
def test_any_grouping_and_order_gives_the_same_fields(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(KPIS)))
    cls, _ = KPIS[kind]
    observations = data.draw(st.lists(OBSERVATIONS[kind], max_size=30))
    cut = data.draw(st.integers(0, len(observations)))
    whole = summed(cls, observations)
    head, tail = summed(cls, observations[:cut]), summed(cls, observations[cut:])
    assert fields(head.merge(tail)) == fields(whole)
    head, tail = summed(cls, observations[:cut]), summed(cls, observations[cut:])
    assert fields(tail.merge(head)) == fields(whole)  # commutative
    assert fields(cls().merge(whole)) == fields(whole.merge(cls())) == fields(whole)  # identity


@given(st.data())
def test_a_state_round_trips_through_json(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(KPIS)))
    cls, _ = KPIS[kind]
    state = summed(cls, data.draw(st.lists(OBSERVATIONS[kind], max_size=30)))
    again = cls.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    assert again == state and fields(again) == fields(state)


def test_oee_add_is_add_time_and_add_units() -> None:
    by_add = summed(
        OeeState,
        [
            Segment(0, 600, "down", "jam"),
            Segment(600, 600, "down", None, True),  # a failure
            Segment(900, 900, "running", None, False, True),  # a silence starts: nothing
            Segment(1_000, 1_000, "running", units=Units(10, 9, 40, False)),
        ],
    )
    by_parts = OeeState(failures=1)
    by_parts.add_time("down", 600, "jam")
    by_parts.add_units(10, 9, 40)
    assert by_add == by_parts


def test_oee_merge_and_subtract_cover_every_summed_field() -> None:
    # `merge` names its fields one by one: a field added to OeeState must be summed too.
    from streams.oee import _SUMMED

    for i, name in enumerate(_SUMMED, start=1):
        one = OeeState(**{name: i}, downtime_by_reason_us={"jam": i})
        merged = OeeState().merge(one).merge(one)
        assert getattr(merged, name) == 2 * i, name
        assert merged.to_dict() == {
            **OeeState().to_dict(),
            name: 2 * i,
            "downtime_by_reason_us": {"jam": 2 * i},
        }
        assert merged.subtract(one) == one


def test_oee_result_ratios_follow_the_definitions() -> None:
    state = OeeState(running_us=45, idle_us=5, down_us=7, setup_us=3, ideal_us=40, total=9, good=8)
    state.failures = 2
    r = state.result()
    assert r["availability"] == 45 / (45 + 5 + 7 + 3)
    assert r["performance"] == 40 / 45 and r["quality"] == 8 / 9
    assert r["oee"] == (45 / 60) * (40 / 45) * (8 / 9)
    assert r["mtbf_s"] == 45 / 1_000_000 / 2 and r["mttr_s"] == 7 / 1_000_000 / 2
    empty = OeeState().result()
    assert empty["availability"] is empty["performance"] is empty["quality"] is None
    assert empty["oee"] is empty["mtbf_s"] is empty["mttr_s"] is None
    assert empty["downtime_by_reason_s"] == {} and empty["performance_above_ideal"] is False
