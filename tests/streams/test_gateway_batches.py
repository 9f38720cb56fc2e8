"""Gateway batches: one machine-state message of several machines of one line,
keyed `<site>/<line>`; every other key check is as for a machine's batch."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.decode import EventError, decode_message
from tests import eventfactory as ef


def machine(
    name: str, line: str = "line-1", site: str = "plant-1", **fields: Any
) -> dict[str, Any]:
    return ef.state(ef.at(6), "running", machine=name, line=line, site=site) | fields


def ids(batch: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in batch]


def gateway_batch() -> list[dict[str, Any]]:
    return [
        machine("press-1", event_id="g1"),
        machine("press-2", event_id="g2"),
        machine("press-1", event_id="g3", state="down"),
        ef.count(ef.at(6.1), 10, 9, 1.5, machine="saw-1") | {"event_id": "g4"},
    ]


@pytest.mark.parametrize("key", ["plant-1/line-1", b"plant-1/line-1"])
def test_a_lines_machines_in_one_message_keyed_by_the_line(key: str | bytes) -> None:
    batch = gateway_batch()
    result = decode_message(orjson.dumps(batch), key=key, source="machine-state")
    assert result.errors == []
    assert [e.event_id for e in result.events] == ids(batch)  # in order, per machine too


def test_a_single_event_may_be_keyed_by_its_line_too() -> None:
    result = decode_message(orjson.dumps(machine("press-2")), key="plant-1/line-1")
    assert result.errors == [] and len(result.events) == 1


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            machine("press-9", line="line-2"),
            "machine: 'press-9' does not match the message key 'plant-1/line-1', "
            "nor does its line 'plant-1/line-2'",
        ),
        (
            machine("press-9", site="plant-2"),
            "machine: 'press-9' does not match the message key 'plant-1/line-1', "
            "nor does its line 'plant-2/line-1'",
        ),
    ],
)
def test_an_event_of_another_line_is_a_key_mismatch_and_the_rest_go_on(
    event: dict[str, Any], expected: str
) -> None:
    batch = [*gateway_batch(), event]
    result = decode_message(orjson.dumps(batch), key="plant-1/line-1", source="machine-state")
    assert result.errors == [EventError("key_mismatch", expected, 4)]
    assert [e.event_id for e in result.events] == ids(batch[:4])


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        # a machine's key still takes that machine only, worded as ever
        ("press-1", "machine: 'press-2' does not match the message key 'press-1'"),
        # the line is the whole key: neither a site nor a line alone
        ("plant-1", "machine: 'press-1' does not match the message key 'plant-1'"),
        ("line-1", "machine: 'press-1' does not match the message key 'line-1'"),
    ],
)
def test_other_keys_are_checked_as_before(key: str, expected: str) -> None:
    result = decode_message(orjson.dumps(gateway_batch()), key=key, source="machine-state")
    mismatched = [e for e in result.errors if e.reason == "key_mismatch"]
    assert mismatched[0].message == expected


def test_orders_and_shipments_have_no_gateway_key() -> None:
    order = ef.order("SO-1", ef.at(6), ef.at(30))
    result = decode_message(orjson.dumps([order]), key="plant-1/line-1", source="orders")
    assert result.errors == [
        EventError(
            "key_mismatch", "order_id: 'SO-1' does not match the message key 'plant-1/line-1'", 0
        )
    ]
