"""The engine topic's trusted wire form: validate -> to_wire -> trusted_event == validate."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.decode import (
    WIRE_FIELDS,
    WIRE_VERSION,
    EventValidationError,
    parse_event,
    to_wire,
    trusted_event,
)
from streams.events import EVENT_TYPES, MAX_READING, event_to_json

ids = st.text(min_size=1, max_size=12)
offsets = st.sampled_from(["Z", "z", "+00:00", "-00:00", "+02:00", "-05:30", "+14:00"])
fractions = st.sampled_from(["", ".5", ".123", ".123456", ".123456789", ".000001"])


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    day = draw(st.dates(min_value=date(1971, 1, 2)))
    h, m, s = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    sep = draw(st.sampled_from("Tt "))
    return f"{day.isoformat()}{sep}{h:02}:{m:02}:{s:02}{draw(fractions)}{draw(offsets)}"


# Float fields take JSON integers too; both must come back as validated.
quantities = st.integers(0, 10**9) | st.floats(0, 1e9, allow_nan=False)
cycles = st.integers(1, 100) | st.floats(1e-6, 100.0, allow_nan=False)


@st.composite
def machine_event(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "event_id": draw(ids),
        "ts": draw(timestamps()),
        "site": draw(ids),
        "line": draw(ids),
        "machine": draw(ids),
    }
    if kind == "state":
        event["state"] = draw(
            st.sampled_from(["running", "idle", "down", "setup", "planned_stop", "unknown"])
        )
        reason = draw(st.none() | ids | st.just("absent"))
        if reason != "absent":
            event["reason"] = reason
        return event
    total = draw(st.integers(0, 1000) if kind == "count" else st.integers(0, MAX_READING))
    event |= {"product": draw(ids), "ideal_cycle_s": draw(cycles), "total": total}
    good = draw(st.integers(0, total))
    if kind == "count" or draw(st.booleans()):
        event["good"] = good
    return event


@st.composite
def order_event(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "event_id": draw(ids),
        "ts": draw(timestamps()),
        "order_id": draw(ids),
    }
    if kind in ("order_cancelled", "order_closed"):
        return event
    line_nos = draw(st.lists(st.integers(1, 2**62), min_size=1, max_size=4, unique=True))
    direction = draw(st.sampled_from(["outbound", "inbound"]))
    if kind == "order":
        lines = [{"line_no": n, "sku": draw(ids), "qty": draw(quantities)} for n in line_nos]
        extra = {"partner": draw(ids), "segment": draw(ids), "promised_at": draw(timestamps())}
    else:
        lines = []
        for n in line_nos:
            qty = draw(quantities)
            damaged = draw(st.integers(0, int(qty)) | st.floats(0, qty, allow_nan=False))
            lines.append({"line_no": n, "qty": qty, "damaged_qty": damaged})
        extra = {
            "shipment_id": draw(ids),
            "delivered_at": draw(timestamps()),
            "documents_ok": draw(st.booleans()),
        }
    return event | {"direction": direction, "lines": lines} | extra


def events() -> st.SearchStrategy[dict[str, Any]]:
    machine = ("state", "count", "counter")
    return st.sampled_from(EVENT_TYPES).flatmap(
        lambda kind: machine_event(kind) if kind in machine else order_event(kind)
    )


def over_the_wire(event: Any) -> Any:
    """What the engine partition reads: ingest's `to_wire` through orjson."""
    return trusted_event(orjson.loads(orjson.dumps([to_wire(event)]))[0])


@settings(max_examples=600, derandomize=True, deadline=None)
@given(events())
def test_trusted_decode_gives_the_event_validated_at_ingest(data: dict[str, Any]) -> None:
    validated = parse_event(orjson.loads(orjson.dumps(data)))
    seen = over_the_wire(validated)
    assert seen == validated
    assert type(seen) is type(validated)
    assert hash(seen) == hash(validated)
    assert event_to_json(seen) == event_to_json(validated)  # what dead letters show
    for name, value in validated.__dict__.items():  # same types: 2 stays 2.0, offsets stay
        assert type(seen.__dict__[name]) is type(value), name
        if name in ("ts", "promised_at", "delivered_at"):
            assert seen.__dict__[name].utcoffset() == value.utcoffset()
    for seen_line, line in zip(
        getattr(seen, "lines", ()), getattr(validated, "lines", ()), strict=True
    ):
        assert type(seen_line) is type(line)
        assert {k: type(v) for k, v in seen_line.__dict__.items()} == {
            k: type(v) for k, v in line.__dict__.items()
        }


def test_every_event_type_has_a_wire_layout_pinned_here() -> None:
    # Changing a model changes this layout: bump WIRE_VERSION, so that a worker
    # never reads another version's fields by position.
    assert WIRE_VERSION == 1
    assert WIRE_FIELDS == {
        "state": ("event_id", "ts", "site", "line", "machine", "state", "reason"),
        "count": ("event_id", "ts", "site", "line", "machine", "product", "ideal_cycle_s",
                  "total", "good"),
        "counter": ("event_id", "ts", "site", "line", "machine", "product", "ideal_cycle_s",
                    "total", "good"),
        "order": ("event_id", "ts", "order_id", "direction", "partner", "segment",
                  "promised_at", "lines"),
        "order_cancelled": ("event_id", "ts", "order_id"),
        "order_closed": ("event_id", "ts", "order_id"),
        "shipment": ("event_id", "ts", "order_id", "shipment_id", "direction", "delivered_at",
                     "documents_ok", "lines"),
    }  # fmt: skip


def test_the_wire_form_is_a_versioned_array() -> None:
    event = parse_event(
        {"type": "order_cancelled", "event_id": "o2", "ts": "2026-11-22T09:00:00+02:00",
         "order_id": "SO-1"}
    )  # fmt: skip
    assert orjson.dumps(to_wire(event)) == (
        b'[1,"order_cancelled","o2","2026-11-22T09:00:00+02:00","SO-1"]'
    )


def test_an_older_workers_contract_object_is_validated_as_before() -> None:
    data = {"type": "order_closed", "event_id": "o3", "ts": "2026-11-22T09:00:00Z",
            "order_id": "SO-1"}  # fmt: skip
    assert trusted_event(data) == parse_event(data)
    with pytest.raises(EventValidationError, match="order_id: required field is missing"):
        trusted_event({k: v for k, v in data.items() if k != "order_id"})


def test_an_unknown_wire_version_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="wire version 2; this worker reads 1"):
        trusted_event([2, "order_closed", "o3", "2026-11-22T09:00:00+00:00", "SO-1"])
