"""The simulator's event stream: reproducible, contract-valid, and plausible."""

from __future__ import annotations

import gzip
from collections import Counter, defaultdict
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.simulator import (
    SAMPLE_DURATION_S,
    SAMPLE_PATH,
    SAMPLE_SEED,
    SAMPLE_START_US,
    LineSpec,
    Product,
    ScrapDrift,
    Shift,
    SilentMachine,
    SimConfig,
    batched,
    key_of,
    planned_calendar,
    sample_events,
    simulate,
    topic_of,
)
from streams.timeutil import US, to_us

HOUR_US = 3600 * US
DAY_US = 24 * HOUR_US
START = SAMPLE_START_US  # 2026-11-02T00:00:00Z

FIELDS = {
    "state": {"type", "event_id", "ts", "site", "line", "machine", "state", "reason"},
    "count": {"type", "event_id", "ts", "site", "line", "machine", "product", "ideal_cycle_s",
              "total", "good"},
    "order": {"type", "event_id", "ts", "order_id", "direction", "partner", "segment",
              "promised_at", "lines"},
    "order_cancelled": {"type", "event_id", "ts", "order_id"},
    "order_closed": {"type", "event_id", "ts", "order_id"},
    "shipment": {"type", "event_id", "ts", "shipment_id", "order_id", "direction",
                 "delivered_at", "documents_ok", "lines"},
}  # fmt: skip
STATES = {"running", "idle", "down", "setup", "planned_stop"}


def us(text: str) -> int:
    assert text.endswith("Z"), f"not RFC 3339 with Z: {text!r}"
    dt = datetime.fromisoformat(text)
    assert dt.tzinfo is not None and dt.utcoffset().total_seconds() == 0
    return to_us(dt)


def nonneg_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_stream(events: list[dict], config: SimConfig, start_us: int, end_us: int) -> None:
    """Every contract rule and simulator invariant a validator or the engine relies on."""
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids), "event_id not unique"
    previous_ts = start_us
    last_state: dict[str, str] = {}
    counted_from: dict[str, int] = {}  # running time since the previous count starts here
    last_seen: dict[str, int] = {}
    orders: dict[str, dict] = {}
    created: dict[str, int] = {}
    for e in events:
        assert set(e) == FIELDS[e["type"]], e
        assert isinstance(e["event_id"], str) and e["event_id"]
        ts = us(e["ts"])
        assert previous_ts <= ts < end_us, e
        previous_ts = ts
        if e["type"] in ("state", "count"):
            machine = e["machine"]
            assert e["site"] == config.site
            if machine in last_seen:  # the heartbeat keeps every machine audible
                assert ts - last_seen[machine] <= config.heartbeat_s * US, e
            last_seen[machine] = ts
        if e["type"] == "state":
            assert e["state"] in STATES
            assert e["reason"] is None or isinstance(e["reason"], str)
            assert (e["state"] == "running") == (e["reason"] is None), e
            if e["state"] == "running" and last_state.get(e["machine"]) != "running":
                counted_from[e["machine"]] = ts
            last_state[e["machine"]] = e["state"]
        elif e["type"] == "count":
            assert last_state.get(e["machine"]) == "running", f"count while not running: {e}"
            assert nonneg_int(e["total"]) and nonneg_int(e["good"]) and e["good"] <= e["total"]
            assert isinstance(e["ideal_cycle_s"], float) and e["ideal_cycle_s"] > 0
            # Units reflect running time only (a fractional unit may carry over).
            running_s = (ts - counted_from[e["machine"]]) / US
            assert e["total"] * e["ideal_cycle_s"] <= running_s + e["ideal_cycle_s"], e
            counted_from[e["machine"]] = ts
        elif e["type"] == "order":
            assert e["direction"] in ("outbound", "inbound") and e["segment"] in "ABC"
            assert isinstance(e["partner"], str) and e["partner"]
            numbers = [line["line_no"] for line in e["lines"]]
            assert 1 <= len(numbers) <= 4 and len(set(numbers)) == len(numbers)
            for line in e["lines"]:
                assert set(line) == {"line_no", "sku", "qty"} and 10 <= line["qty"] <= 500
            created.setdefault(e["order_id"], ts)
            assert DAY_US - HOUR_US < us(e["promised_at"]) - created[e["order_id"]] <= 3 * DAY_US
            orders[e["order_id"]] = e
        elif e["type"] == "shipment":
            order = orders[e["order_id"]]  # the order (latest version) came first
            assert e["ts"] == e["delivered_at"] and e["direction"] == order["direction"]
            assert isinstance(e["documents_ok"], bool) and e["lines"]
            ordered = {line["line_no"] for line in order["lines"]}
            for line in e["lines"]:
                assert set(line) == {"line_no", "qty", "damaged_qty"}
                assert line["line_no"] in ordered
                assert nonneg_int(line["qty"]) and nonneg_int(line["damaged_qty"])
                assert line["damaged_qty"] <= line["qty"]
        else:
            assert e["order_id"] in orders


@pytest.fixture(scope="module")
def day() -> list[dict]:
    """One day of the default plant (scrap drift from noon)."""
    return list(simulate(SimConfig(), SAMPLE_SEED, START, 86_400))


@pytest.fixture(scope="module")
def fortnight() -> list[dict]:
    """Two weeks of orders (one small machine, so it stays quick)."""
    config = SimConfig(lines=(LineSpec("line-1", ("m-1",), (Product("SKU-1", 2.0),), 0.01),))
    return list(simulate(config, 11, START, 14 * 86_400))


def test_same_seed_same_events_different_seed_different(day: list[dict]) -> None:
    again = list(simulate(SimConfig(), SAMPLE_SEED, START, 86_400))
    assert again == day
    other = list(simulate(SimConfig(), SAMPLE_SEED + 1, START, 86_400))
    assert other != day


def test_a_shorter_run_is_a_prefix_of_a_longer_one(day: list[dict]) -> None:
    six_hours = list(simulate(SimConfig(), SAMPLE_SEED, START, 6.5 * 3600))
    assert six_hours == day[: len(six_hours)]
    assert us(day[len(six_hours)]["ts"]) >= START + 6.5 * 3600 * US


def test_sample_day_is_a_valid_stream(day: list[dict]) -> None:
    check_stream(day, SimConfig(), START, START + DAY_US)
    assert Counter(e["type"] for e in day).keys() >= {"state", "count", "order", "shipment"}


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    start_us=st.integers(to_us(datetime(2026, 1, 1, tzinfo=UTC)), to_us(datetime(2027, 1, 1, tzinfo=UTC))),
    hours=st.floats(0.0, 30.0),
    count_interval_s=st.sampled_from([15.0, 60.0, 90.0]),
    around_the_clock=st.booleans(),
)  # fmt: skip
def test_any_run_is_a_valid_stream(
    seed: int, start_us: int, hours: float, count_interval_s: float, around_the_clock: bool
) -> None:
    config = SimConfig(
        count_interval_s=count_interval_s, shifts=() if around_the_clock else SimConfig().shifts
    )
    events = list(simulate(config, seed, start_us, hours * 3600))
    check_stream(events, config, start_us, start_us + round(hours * 3600 * US))


def test_every_machine_starts_with_its_state_at_the_start(day: list[dict]) -> None:
    first: dict[str, dict] = {}
    for e in day:
        if e["type"] in ("state", "count"):
            first.setdefault(e["machine"], e)
    assert len(first) == 11
    assert all(e["ts"] == "2026-11-02T00:00:00Z" for e in first.values())
    assert {(e["state"], e["reason"]) for e in first.values()} == {("planned_stop", "no_shift")}


#   00:00        06:00      10:00 10:30     14:00     18:00 18:30      22:00        24:00
#   |-- no_shift --|-- work --|brk|-- work ---------------|brk|-- work --|-- no_shift --|
def test_default_shift_calendar() -> None:
    def at(hh_mm: str) -> int:
        hours, minutes = hh_mm.split(":")
        return START + (int(hours) * 60 + int(minutes)) * 60 * US

    assert planned_calendar(SimConfig().shifts, START, START + DAY_US) == [
        (at("00:00"), at("06:00"), "no_shift"),
        (at("06:00"), at("10:00"), None),
        (at("10:00"), at("10:30"), "break"),
        (at("10:30"), at("18:00"), None),
        (at("18:00"), at("18:30"), "break"),
        (at("18:30"), at("22:00"), None),
        (at("22:00"), at("24:00"), "no_shift"),
    ]


@pytest.mark.parametrize(
    ("shifts", "expected"),
    [
        ((), [(0, 24, None)]),
        ((Shift("night", "22:00", "06:00"),), [(0, 6, None), (6, 22, "no_shift"), (22, 24, None)]),
        ((Shift("day", "08:00", "16:00", "12:00", 60),),
         [(0, 8, "no_shift"), (8, 12, None), (12, 13, "break"), (13, 16, None),
          (16, 24, "no_shift")]),
    ],
)  # fmt: skip
def test_shift_calendar_table(shifts: tuple[Shift, ...], expected: list[tuple]) -> None:
    hours = [
        ((a - START) // HOUR_US, (b - START) // HOUR_US, reason)
        for a, b, reason in planned_calendar(shifts, START, START + DAY_US)
    ]
    assert hours == expected


def test_states_and_reasons_cover_the_model(day: list[dict]) -> None:
    seen = {(e["state"], e["reason"]) for e in day if e["type"] == "state"}
    assert seen >= {
        ("running", None), ("setup", "changeover"), ("planned_stop", "break"),
        ("planned_stop", "no_shift"), ("down", "jam"), ("down", "motor_fault"),
        ("down", "tool_break"), ("idle", "no_material"), ("idle", "blocked"), ("idle", "no_order"),
    }  # fmt: skip
    machines = {e["machine"] for e in day if e["type"] == "state"}
    assert {"press-1-1", "cnc-2-3", "pack-3-4"} <= machines
    assert len({e["ideal_cycle_s"] for e in day if e["type"] == "count"}) >= 5


def scrap_fraction(events: list[dict], line: str, from_us: int, to_us_: int) -> float:
    total = scrap = 0
    for e in events:
        if e["type"] == "count" and e["line"] == line and from_us <= us(e["ts"]) < to_us_:
            total += e["total"]
            scrap += e["total"] - e["good"]
    return scrap / total


def test_scrap_drift_raises_line_1_scrap_after_noon(day: list[dict]) -> None:
    noon = START + 12 * HOUR_US
    before = scrap_fraction(day, "line-1", START, noon)
    after = scrap_fraction(day, "line-1", noon + HOUR_US, START + DAY_US)
    assert 0.005 < before < 0.03
    assert after > 3 * before
    other_before = scrap_fraction(day, "line-3", START, noon)
    other_after = scrap_fraction(day, "line-3", noon + HOUR_US, START + DAY_US)
    assert other_after < 1.5 * other_before


def test_no_drift_when_switched_off() -> None:
    events = list(simulate(SimConfig(scrap_drift=None), SAMPLE_SEED, START, SAMPLE_DURATION_S))
    noon = START + 12 * HOUR_US
    before = scrap_fraction(events, "line-1", START, noon)
    after = scrap_fraction(events, "line-1", noon + HOUR_US, START + DAY_US)
    assert after < 1.5 * before


def test_drift_time_and_line_are_configurable() -> None:
    drift = ScrapDrift(line="line-2", at_s=8 * 3600, ramp_s=0, factor=8)
    events = list(simulate(SimConfig(scrap_drift=drift), 3, START, SAMPLE_DURATION_S))
    eight = START + 8 * HOUR_US
    assert scrap_fraction(events, "line-2", eight, START + DAY_US) > 4 * scrap_fraction(
        events, "line-2", START, eight
    )


def test_silent_machine_stops_sending() -> None:
    config = SimConfig(silent_machine=SilentMachine("press-1-2", 9 * 3600))
    events = list(simulate(config, SAMPLE_SEED, START, SAMPLE_DURATION_S))
    silent_from = START + 9 * HOUR_US
    times = [us(e["ts"]) for e in events if e.get("machine") == "press-1-2"]
    assert times and max(times) < silent_from
    assert any(us(e["ts"]) >= silent_from for e in events if e.get("machine") == "press-1-1")


def test_order_failures_all_occur_and_perfect_rates_are_plausible(fortnight: list[dict]) -> None:
    check_stream(fortnight, SimConfig(), START, START + 14 * DAY_US)
    orders: dict[str, dict] = {}
    versions: Counter[str] = Counter()
    shipments: defaultdict[str, list[dict]] = defaultdict(list)
    created: dict[str, int] = {}
    cancelled: set[str] = set()
    closed: set[str] = set()
    for e in fortnight:
        if e["type"] == "order":
            orders[e["order_id"]] = e
            versions[e["order_id"]] += 1
            created.setdefault(e["order_id"], us(e["ts"]))
        elif e["type"] == "shipment":
            shipments[e["order_id"]].append(e)
        elif e["type"] == "order_cancelled":
            cancelled.add(e["order_id"])
        elif e["type"] == "order_closed":
            closed.add(e["order_id"])
    assert {o["direction"] for o in orders.values()} == {"outbound", "inbound"}
    assert {o["partner"] for o in orders.values() if o["direction"] == "inbound"} == {
        "SUP-1", "SUP-2", "SUP-3", "SUP-4",
    }  # fmt: skip
    assert any(n > 1 for n in versions.values()), "no amended order"
    assert cancelled and not any(shipments[o] for o in cancelled)
    assert closed and all(shipments[o] for o in closed)

    # Orders created in the first 9 days are all decided well before day 14.
    failures: Counter[str] = Counter()
    perfect: defaultdict[tuple[str, str], list[bool]] = defaultdict(list)
    for order_id, order in orders.items():
        if order_id in cancelled or created[order_id] >= START + 9 * DAY_US:
            continue
        delivered: Counter[int] = Counter()
        for shipment in shipments[order_id]:
            for line in shipment["lines"]:
                delivered[line["line_no"]] += line["qty"]
        promised = us(order["promised_at"])
        ships = shipments[order_id]
        flags = {
            "late": not ships or any(us(s["delivered_at"]) > promised for s in ships),
            "short": any(delivered[li["line_no"]] < li["qty"] for li in order["lines"]),
            "damaged": any(li["damaged_qty"] for s in ships for li in s["lines"]),
            "documents": not all(s["documents_ok"] for s in ships),
        }
        failures.update(k for k, failed in flags.items() if failed)
        if order_id in closed:
            assert flags["short"], "only short orders are closed"
        perfect[order["direction"], order["segment"]].append(not any(flags.values()))
    assert set(failures) == {"late", "short", "damaged", "documents"}
    assert any(len(shipments[o]) == 2 for o in orders), "no partial shipments"
    for (direction, segment), flags_ in perfect.items():
        rate = sum(flags_) / len(flags_)
        assert 0.7 <= rate <= 0.97, (direction, segment, rate)
    outbound = {seg: sum(v) / len(v) for (d, seg), v in perfect.items() if d == "outbound"}
    assert set(outbound) == {"A", "B", "C"}


@pytest.mark.parametrize(
    ("event", "topic", "key"),
    [
        ({"type": "state", "machine": "press-1-1"}, "machine-state", "press-1-1"),
        ({"type": "count", "machine": "cnc-2-1"}, "machine-state", "cnc-2-1"),
        ({"type": "order", "order_id": "SO-1001"}, "orders", "SO-1001"),
        ({"type": "order_cancelled", "order_id": "SO-1002"}, "orders", "SO-1002"),
        ({"type": "order_closed", "order_id": "PO-5001"}, "orders", "PO-5001"),
        ({"type": "shipment", "order_id": "SO-1001"}, "shipments", "SO-1001"),
    ],
)
def test_topic_and_key(event: dict, topic: str, key: str) -> None:
    assert (topic_of(event), key_of(event)) == (topic, key)


def test_unknown_type_has_no_topic() -> None:
    with pytest.raises(ValueError, match="unknown event type"):
        topic_of({"type": "reading"})


@settings(max_examples=30, deadline=None)
@given(max_batch=st.integers(1, 60), begin=st.integers(0, 9000), size=st.integers(0, 1500))
def test_batched_preserves_events_keys_and_order(
    day: list[dict], max_batch: int, begin: int, size: int
) -> None:
    events = day[begin : begin + size]
    batches = list(batched(events, max_batch))
    assert [e for _, _, batch in batches for e in batch] == events
    for topic, key, batch in batches:
        assert 1 <= len(batch) <= max_batch
        assert all(topic_of(e) == topic and key_of(e) == key for e in batch)
    for (t1, k1, b1), (t2, k2, _) in zip(batches, batches[1:], strict=False):
        assert (t1, k1) != (t2, k2) or len(b1) == max_batch, "split a run that fit"


def test_batched_groups_runs_of_one_key(day: list[dict]) -> None:
    batches = list(batched(day))
    assert len(batches) < len(day)
    assert max(len(b) for _, _, b in batches) > 1


def test_committed_sample_matches_the_simulator() -> None:
    day = list(sample_events())
    regenerate = (
        "regenerate it: .venv/bin/python -m devtools.simulator samples/plant-3-days.jsonl.gz"
    )
    assert SAMPLE_PATH.exists(), f"{SAMPLE_PATH} is missing; {regenerate}"
    with gzip.open(SAMPLE_PATH, "rb") as sample:
        committed = [orjson.loads(line) for line in sample]
    assert len(committed) == len(day), f"the sample is stale; {regenerate}"
    assert committed == day, f"the sample is stale; {regenerate}"
    assert SAMPLE_PATH.stat().st_size < 2_000_000
