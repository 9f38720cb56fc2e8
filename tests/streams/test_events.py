"""Input events: the contract's examples, each rejection rule, batches, and hostile bytes."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.decode import (
    DecodeResult,
    EventError,
    EventValidationError,
    decode_message,
    parse_event,
)
from streams.events import (
    EVENT_ADAPTER,
    CountEvent,
    OrderCancelled,
    OrderClosed,
    OrderEvent,
    ShipmentEvent,
    StateEvent,
    event_to_json,
)
from streams.timeutil import to_us

# The contract's examples (event-contract.md v1); the cancel/close ones are
# given there only by their field names.
CONTRACT_EXAMPLES: dict[str, dict[str, Any]] = {
    "state": {"type": "state", "event_id": "a1", "ts": "2026-11-22T06:00:00Z",
              "site": "plant-1", "line": "line-1", "machine": "press-1",
              "state": "running", "reason": None},
    "count": {"type": "count", "event_id": "a2", "ts": "2026-11-22T06:01:00Z",
              "site": "plant-1", "line": "line-1", "machine": "press-1",
              "product": "SKU-7", "ideal_cycle_s": 2.0, "total": 30, "good": 29},
    "order": {"type": "order", "event_id": "o1", "ts": "2026-11-22T08:00:00Z",
              "order_id": "SO-1001", "direction": "outbound", "partner": "C-17", "segment": "A",
              "promised_at": "2026-11-24T17:00:00Z",
              "lines": [{"line_no": 1, "sku": "SKU-7", "qty": 100}]},
    "order_cancelled": {"type": "order_cancelled", "event_id": "o2",
                        "ts": "2026-11-22T09:00:00Z", "order_id": "SO-1001"},
    "order_closed": {"type": "order_closed", "event_id": "o3",
                     "ts": "2026-11-22T09:00:00Z", "order_id": "SO-1001"},
    "shipment": {"type": "shipment", "event_id": "s1", "ts": "2026-11-24T10:00:00Z",
                 "shipment_id": "SH-88", "order_id": "SO-1001", "direction": "outbound",
                 "delivered_at": "2026-11-24T10:00:00Z", "documents_ok": True,
                 "lines": [{"line_no": 1, "qty": 100, "damaged_qty": 0}]},
}  # fmt: skip

MODELS = {
    "state": StateEvent, "count": CountEvent, "order": OrderEvent,
    "order_cancelled": OrderCancelled, "order_closed": OrderClosed, "shipment": ShipmentEvent,
}  # fmt: skip
SOURCES = {
    "state": "machine-state", "count": "machine-state", "order": "orders",
    "order_cancelled": "orders", "order_closed": "orders", "shipment": "shipments",
}  # fmt: skip
KEYS = {"state": "press-1", "count": "press-1"}  # the rest are keyed by SO-1001
REASONS = {
    "undecodable", "schema", "key_mismatch", "wrong_topic",
    "message_too_large", "batch_too_long", "not_an_object",
}  # fmt: skip


def example(name: str, **changes: Any) -> dict[str, Any]:
    """A deep copy of a contract example with top-level fields replaced."""
    return {**copy.deepcopy(CONTRACT_EXAMPLES[name]), **changes}


def with_line(name: str, index: int = 0, **changes: Any) -> dict[str, Any]:
    """A contract example with fields of lines[index] replaced."""
    event = example(name)
    event["lines"][index].update(changes)
    return event


def without(name: str, field: str) -> dict[str, Any]:
    event = example(name)
    del event[field]
    return event


def decode(obj: Any, **kwargs: Any) -> DecodeResult:
    return decode_message(orjson.dumps(obj), **kwargs)


# ---------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", CONTRACT_EXAMPLES)
def test_contract_example_decodes(name: str) -> None:
    result = decode(CONTRACT_EXAMPLES[name], key=KEYS.get(name, "SO-1001"), source=SOURCES[name])
    assert result.errors == []
    (event,) = result.events
    assert type(event) is MODELS[name]
    assert event.source == SOURCES[name]
    assert event.key == KEYS.get(name, "SO-1001")
    assert event.ts_us == to_us(datetime.fromisoformat(CONTRACT_EXAMPLES[name]["ts"]))


def test_time_properties_are_microseconds() -> None:
    order = parse_event(CONTRACT_EXAMPLES["order"])
    shipment = parse_event(CONTRACT_EXAMPLES["shipment"])
    assert order.promised_at_us == to_us(datetime(2026, 11, 24, 17, tzinfo=UTC))
    assert shipment.delivered_at_us == to_us(datetime(2026, 11, 24, 10, tzinfo=UTC))
    assert shipment.lines[0].damaged_qty == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T06:00:00Z", datetime(2026, 11, 22, 6, tzinfo=UTC)),
        ("2026-11-22t06:00:00z", datetime(2026, 11, 22, 6, tzinfo=UTC)),
        ("2026-11-22 06:00:00Z", datetime(2026, 11, 22, 6, tzinfo=UTC)),
        ("2026-11-22T08:00:00+02:00", datetime(2026, 11, 22, 6, tzinfo=UTC)),
        ("2026-11-22T06:00:00-00:00", datetime(2026, 11, 22, 6, tzinfo=UTC)),
        ("2026-11-22T06:00:00.5Z", datetime(2026, 11, 22, 6, 0, 0, 500_000, tzinfo=UTC)),
        # sub-microsecond digits are dropped, not rounded
        ("2026-11-22T06:00:00.123456789Z", datetime(2026, 11, 22, 6, 0, 0, 123_456, tzinfo=UTC)),
    ],
)
def test_rfc3339_forms(text: str, expected: datetime) -> None:
    event = parse_event(example("state", ts=text))
    assert event.ts_us == to_us(expected)


@pytest.mark.parametrize(
    "event",
    [
        example("count", ideal_cycle_s=2),
        with_line("order", qty=2.5),
        with_line("shipment", qty=7, damaged_qty=0.5),
        example("state", reason="jam"),
    ],
)
def test_json_integers_are_fine_for_number_fields(event: dict[str, Any]) -> None:
    result = decode_message(orjson.dumps(event).decode())  # a str value works like bytes
    assert result.errors == []
    assert event_to_json(result.events[0]) == event


def test_python_producers_may_pass_aware_datetimes() -> None:
    ts = datetime(2026, 11, 22, 7, tzinfo=timezone(timedelta(hours=1)))
    assert parse_event(example("state", ts=ts)).ts_us == to_us(ts)
    with pytest.raises(EventValidationError, match="ts: timestamp has no timezone offset"):
        parse_event(example("state", ts=datetime(2026, 11, 22, 7)))  # noqa: DTZ001


def test_events_are_frozen_and_hashable() -> None:
    event = parse_event(CONTRACT_EXAMPLES["shipment"])
    with pytest.raises(ValueError, match="frozen"):
        event.order_id = "SO-2"  # type: ignore[misc]
    assert len({event, parse_event(CONTRACT_EXAMPLES["shipment"])}) == 1


# ---------------------------------------------------------------- rejections

REJECTIONS = [
    # (case id, event object, text the error message must contain)
    ("unknown field", example("state", colour="red"), "colour: unknown field"),
    ("unknown line field", with_line("order", colour="red"), "lines[0].colour: unknown field"),
    ("missing field", without("state", "machine"), "machine: required field is missing"),
    ("str for int", example("count", total="30"), "total: expected an integer, got string"),
    ("float for int", example("count", total=30.5), "total: expected an integer, got number"),
    ("bool for int", example("count", good=True), "good: expected an integer, got boolean"),
    ("str for float", example("count", ideal_cycle_s="2"), "ideal_cycle_s: expected a number"),
    ("bool for qty", with_line("order", qty=True), "lines[0].qty: expected a number, got boolean"),
    ("int for bool", example("shipment", documents_ok=1), "documents_ok: expected true or false"),
    ("int for str", example("state", reason=5), "reason: expected a string, got integer"),
    ("negative qty", with_line("order", qty=-1), "lines[0].qty: must be >= 0, got -1"),
    ("negative delivered", with_line("shipment", qty=-0.5), "lines[0].qty: must be >= 0"),
    ("negative damaged", with_line("shipment", damaged_qty=-1), "lines[0].damaged_qty: must be >= 0"),
    ("negative total", example("count", total=-1, good=0), "total: must be >= 0, got -1"),
    ("good > total", example("count", good=31), "good: 31 exceeds total 30"),
    ("damaged > qty", with_line("shipment", qty=5, damaged_qty=7), "lines[0].damaged_qty: 7 exceeds qty 5"),
    ("zero cycle", example("count", ideal_cycle_s=0), "ideal_cycle_s: must be > 0, got 0"),
    ("negative cycle", example("count", ideal_cycle_s=-2.0), "ideal_cycle_s: must be > 0"),
    ("line_no 0", with_line("order", line_no=0), "lines[0].line_no: must be >= 1, got 0"),
    ("naive ts", example("state", ts="2026-11-22T06:00:00"), "ts: timestamp has no timezone offset"),
    ("naive promised_at", example("order", promised_at="2026-11-24T17:00:00"), "promised_at: timestamp has no timezone offset"),
    ("naive delivered_at", example("shipment", delivered_at="2026-11-24T10:00:00.5"), "delivered_at: timestamp has no timezone offset"),
    ("date only", example("state", ts="2026-11-22"), "ts: not an RFC 3339 timestamp"),
    ("unix seconds text", example("state", ts="1795327200"), "ts: not an RFC 3339 timestamp"),
    ("unix seconds", example("state", ts=1795327200), "ts: expected an RFC 3339 timestamp string, got integer"),
    ("impossible date", example("state", ts="2026-02-30T00:00:00Z"), "ts: not a valid date and time"),
    ("unknown type", example("state", type="alarm"), "type: unknown event type 'alarm'; allowed: state, count, counter, order, order_cancelled, order_closed, shipment"),
    ("missing type", without("state", "type"), "type: required field is missing; allowed: state"),
    ("unknown state", example("state", state="broken"), "state: unknown value 'broken', expected 'running'"),
    ("unknown direction", example("order", direction="sideways"), "direction: unknown value 'sideways'"),
    ("empty event_id", example("state", event_id=""), "event_id: must not be empty"),
    ("empty machine", example("count", machine=""), "machine: must not be empty"),
    ("empty order_id", example("order_closed", order_id=""), "order_id: must not be empty"),
    ("empty sku", with_line("order", sku=""), "lines[0].sku: must not be empty"),
    ("empty reason", example("state", reason=""), "reason: must not be empty"),
    ("huge string", example("state", site="x" * 10_000), "site: longer than 256 characters"),
    ("empty lines", example("order", lines=[]), "lines: must not be empty"),
    ("lines not array", example("shipment", lines={"line_no": 1}), "lines: expected an array, got object"),
    ("line not object", example("order", lines=[5]), "lines[0]: expected an object, got integer"),
    ("duplicate line_no", example("order", lines=[{"line_no": 1, "sku": "A", "qty": 1}, {"line_no": 1, "sku": "B", "qty": 2}]), "lines[1].line_no: duplicate line_no 1 (also in lines[0])"),
    ("duplicate shipped line", example("shipment", lines=[{"line_no": 2, "qty": 1, "damaged_qty": 0}] * 2), "lines[1].line_no: duplicate line_no 2"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("event", "expected"), [c[1:] for c in REJECTIONS], ids=[c[0] for c in REJECTIONS]
)
def test_rejection_names_field_and_problem(event: dict[str, Any], expected: str) -> None:
    result = decode(event)
    assert result.events == []
    (error,) = result.errors
    assert error.reason == "schema"
    assert error.index is None
    assert expected in error.message
    with pytest.raises(EventValidationError) as raised:
        parse_event(event)
    assert str(raised.value) == error.message


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (example("count", ideal_cycle_s=float("nan")), "ideal_cycle_s: must be a finite number"),
        (example("count", ideal_cycle_s=float("inf")), "ideal_cycle_s: must be a finite number"),
        (with_line("shipment", qty=float("inf")), "lines[0].qty: must be a finite number"),
        (with_line("order", qty=float("-inf")), "lines[0].qty: must be a finite number"),
    ],
)
def test_non_finite_numbers_from_python_are_rejected(event: dict[str, Any], expected: str) -> None:
    # JSON cannot carry NaN or Infinity (see test_undecodable), but Python producers can.
    with pytest.raises(EventValidationError, match=expected.replace("[", r"\[")):
        parse_event(event)


def test_every_problem_is_reported_once_joined_by_semicolons() -> None:
    event = example("count", total="30", machine="", colour="red")
    with pytest.raises(EventValidationError) as raised:
        parse_event(event)
    assert str(raised.value) == (
        "machine: must not be empty; total: expected an integer, got string; colour: unknown field"
    )


def test_a_flood_of_problems_is_summarised() -> None:
    lines = [{"line_no": i, "sku": "", "qty": 1} for i in range(1, 31)]
    (error,) = decode(example("order", lines=lines)).errors
    assert error.message.count("must not be empty") == 10
    assert error.message.endswith("... and 20 more")


def test_parse_event_wants_an_object() -> None:
    with pytest.raises(EventValidationError, match="expected an event object, got array"):
        parse_event([CONTRACT_EXAMPLES["state"]])  # type: ignore[arg-type]


# ---------------------------------------------------------------- batches, keys, topics


def test_batch_keeps_good_elements_and_indexes_bad_ones() -> None:
    batch = [
        example("state"),
        example("count", good=31),
        "not an event",
        example("count"),
        example("state", ts="2026-11-22T06:00:00"),
    ]
    result = decode(batch, key="press-1", source="machine-state")
    assert [e.event_id for e in result.events] == ["a1", "a2"]
    assert [(e.index, e.reason) for e in result.errors] == [
        (1, "schema"),
        (2, "not_an_object"),
        (4, "schema"),
    ]
    assert result.errors[0].message == "good: 31 exceeds total 30"


@pytest.mark.parametrize(
    ("value", "got"), [(b"5", "integer"), (b'"state"', "string"), (b"null", "null")]
)
def test_top_level_must_be_an_object_or_array(value: bytes, got: str) -> None:
    expected = EventError("not_an_object", f"expected an event object, got {got}")
    assert decode_message(value) == DecodeResult([], [expected])


def test_empty_batch_is_nothing() -> None:
    assert decode_message(b"[]") == DecodeResult([], [])


@pytest.mark.parametrize(
    ("name", "key", "expected"),
    [
        ("state", "press-2", "machine: 'press-1' does not match the message key 'press-2'"),
        ("count", b"press-2", "machine: 'press-1' does not match the message key 'press-2'"),
        ("order", "SO-2", "order_id: 'SO-1001' does not match the message key 'SO-2'"),
        ("shipment", b"\xff", "order_id: 'SO-1001' does not match the message key"),
    ],
)
def test_key_mismatch(name: str, key: str | bytes, expected: str) -> None:
    result = decode([CONTRACT_EXAMPLES[name]], key=key)
    assert result.events == []
    assert result.errors == [EventError("key_mismatch", result.errors[0].message, 0)]
    assert expected in result.errors[0].message


def test_key_given_as_bytes_matches() -> None:
    assert len(decode(CONTRACT_EXAMPLES["order"], key=b"SO-1001").events) == 1


@pytest.mark.parametrize(
    ("name", "source", "allowed"),
    [
        ("shipment", "orders", "order, order_cancelled, order_closed"),
        ("state", "shipments", "shipment"),
        ("order_closed", "machine-state", "state, count, counter"),
    ],
)
def test_wrong_topic(name: str, source: str, allowed: str) -> None:
    (error,) = decode(CONTRACT_EXAMPLES[name], source=source).errors
    assert error.reason == "wrong_topic"
    assert (
        error.message == f"type: {name!r} does not belong on topic {source!r} (allowed: {allowed})"
    )


def test_unknown_source_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="unknown source 'order'"):
        decode_message(b"{}", source="order")


# ---------------------------------------------------------------- hostile bytes

VALID = orjson.dumps(CONTRACT_EXAMPLES["count"])


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(VALID[:-5], id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"type": "state", "site": "\xff\xfe"}', id="invalid utf-8"),
        pytest.param(VALID.replace(b"2.0", b"NaN"), id="NaN literal"),
        pytest.param(VALID.replace(b"2.0", b"Infinity"), id="Infinity literal"),
        pytest.param(VALID.replace(b"2.0", b"1e400"), id="overflowing number"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100k nested arrays"),
        pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="100k nested objects"),
        pytest.param("\ud800", id="lone surrogate str"),
    ],
)
def test_undecodable(value: bytes | str) -> None:
    result = decode_message(value)
    assert result.events == []
    (error,) = result.errors
    assert error.reason == "undecodable"
    assert error.message.startswith("not valid JSON: ")


def test_deep_nesting_inside_an_event_is_a_schema_error() -> None:
    deep = b"[" * 1000 + b"]" * 1000  # just under orjson's depth limit
    value = VALID[:-1] + b', "extra": ' + deep + b"}"
    (error,) = decode_message(value.replace(b'"SKU-7"', deep)).errors
    assert error.message == "product: expected a string, got array; extra: unknown field"


def test_oversized_message() -> None:
    assert decode_message(VALID, max_bytes=len(VALID)).events  # at the limit is fine
    for value in (VALID, VALID.decode()):
        result = decode_message(value, max_bytes=len(VALID) - 1)
        assert result == DecodeResult(
            [],
            [
                EventError(
                    "message_too_large",
                    f"message is {len(VALID)} bytes, over the limit of {len(VALID) - 1}",
                )
            ],
        )


def test_str_size_counts_utf8_bytes() -> None:
    value = orjson.dumps(example("state", site="é" * 100)).decode()
    assert decode_message(value, max_bytes=len(value) + 50).errors[0].reason == "message_too_large"


def test_batch_too_long() -> None:
    result = decode([CONTRACT_EXAMPLES["state"]] * 3, max_batch=2)
    assert result == DecodeResult(
        [], [EventError("batch_too_long", "batch has 3 events, over the limit of 2")]
    )


def test_a_thousand_event_batch_is_fast() -> None:
    batch = [example("order", event_id=f"o{i}") for i in range(1000)]
    value = orjson.dumps(batch)
    started = time.perf_counter()
    result = decode_message(value, key="SO-1001", source="orders")
    elapsed_s = time.perf_counter() - started
    assert len(result.events) == 1000
    assert elapsed_s < 1.0, f"1000 events took {elapsed_s:.3f} s"


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)  # no lone surrogates
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)
"""Any JSON value, including integers beyond 64 bits (orjson reads those as floats)."""


def assert_well_formed(result: DecodeResult, elements: int | None = None) -> None:
    assert isinstance(result, DecodeResult)
    assert all(isinstance(e, EventError) and e.reason in REASONS for e in result.errors)
    assert all(e.message for e in result.errors)
    if elements is not None:
        assert len(result.events) + len(result.errors) == elements
        indexes = [e.index for e in result.errors]
        assert indexes == sorted(set(indexes))


@settings(derandomize=True, max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(value: bytes) -> None:
    assert_well_formed(decode_message(value, key="k", source="orders"))


@settings(derandomize=True, max_examples=300)
@given(
    name=st.sampled_from(sorted(CONTRACT_EXAMPLES)),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=5),
    cut=st.integers(0, 10_000),
)
def test_mutated_bytes_never_raise(name: str, edits: list[tuple[int, int]], cut: int) -> None:
    value = bytearray(orjson.dumps(CONTRACT_EXAMPLES[name]))
    for position, byte in edits:
        value[position % len(value)] = byte
    assert_well_formed(decode_message(bytes(value[: len(value) - cut % 3])))


@settings(derandomize=True, max_examples=300)
@given(
    names=st.lists(st.sampled_from(sorted(CONTRACT_EXAMPLES)), min_size=1, max_size=5),
    data=st.data(),
)
def test_mutated_fields_give_one_outcome_per_element(names: list[str], data: st.DataObject) -> None:
    batch = []
    for name in names:
        event = example(name)
        field = data.draw(st.sampled_from(sorted(event)))
        event[field] = data.draw(json_values)
        batch.append(event)
    value = json.dumps(batch, allow_nan=False).encode()  # orjson cannot write big integers
    assert_well_formed(decode_message(value), elements=len(batch))


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize("name", CONTRACT_EXAMPLES)
def test_round_trip(name: str) -> None:
    event = parse_event(CONTRACT_EXAMPLES[name])
    as_json = event_to_json(event)
    assert parse_event(as_json) == event
    assert decode_message(orjson.dumps(as_json)).events == [event]
    assert as_json["ts"] == CONTRACT_EXAMPLES[name]["ts"]


@settings(derandomize=True, max_examples=200)
@given(
    ts=st.datetimes(
        min_value=datetime(1971, 1, 1),  # noqa: DTZ001 - bounds for hypothesis, zone added below
        max_value=datetime(2999, 1, 1),  # noqa: DTZ001
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    ),
    qty=st.floats(min_value=0, max_value=1e9) | st.integers(0, 10**9),  # MAX_UNITS
    damaged_share=st.floats(0, 1),
)
def test_round_trip_any_instant_and_quantity(
    ts: datetime, qty: float, damaged_share: float
) -> None:
    event = parse_event(
        with_line("shipment", qty=qty, damaged_qty=qty * damaged_share)
        | {"ts": ts.isoformat(), "delivered_at": ts}
    )
    assert event.ts_us == event.delivered_at_us == to_us(ts)
    assert EVENT_ADAPTER.validate_python(event_to_json(event)) == event
