"""Typed records (`streams.records.Record`): one class per kind, read-only,
serialised exactly as the plain JSON object of the contract."""

from __future__ import annotations

import copy
import pickle

import orjson
import pytest

from streams.oee import OeeState
from streams.records import (
    KINDS,
    ChainRecord,
    OeeRecord,
    PChartRecord,
    PerfectOrderRecord,
    Record,
    SafetyStockRecord,
    oee_record,
    typed,
)
from streams.windows import Window

WINDOW = Window(0, 3_600_000_000, "1h")


def a_record() -> OeeRecord:
    state = OeeState(running_us=3_000_000_000, down_us=600_000_000, total=10, good=9)
    return oee_record("machine", {"site": "s", "line": "l", "machine": "m"}, WINDOW, state)


def test_one_class_per_kind() -> None:
    assert {
        "oee": OeeRecord,
        "perfect_order": PerfectOrderRecord,
        "pchart": PChartRecord,
        "chain": ChainRecord,
        "safety_stock": SafetyStockRecord,
    } == KINDS
    record = a_record()
    assert type(record) is OeeRecord and record.kind == record["kpi"] == "oee"


def test_serialised_as_the_plain_object() -> None:
    record = a_record()
    assert orjson.dumps(record) == orjson.dumps(dict(record))
    assert list(record) == list(dict(record))  # field order kept


def test_read_only_and_with_fields_makes_a_new_one() -> None:
    record = a_record()
    for change in (
        lambda r: r.__setitem__("oee", 1.0),
        lambda r: r.update(oee=1.0),
        lambda r: r.pop("oee"),
        lambda r: r.setdefault("x", 1),
        lambda r: r.clear(),
        lambda r: r.__delitem__("oee"),
    ):
        with pytest.raises(TypeError, match="read-only"):
            change(record)
    stamped = record.with_fields(revision=2)
    assert "revision" not in record and stamped["revision"] == 2
    assert list(stamped)[-1] == "revision" and type(stamped) is OeeRecord


def test_typed_restores_the_class_of_a_plain_object() -> None:
    record = a_record()
    plain = orjson.loads(orjson.dumps(record))
    again = typed(plain)
    assert type(again) is OeeRecord and again == record
    assert typed(record) is record
    with pytest.raises(KeyError):
        typed({"kpi": "no such kind"})


def test_pickles_and_copies_as_itself() -> None:
    record = a_record()
    for again in (pickle.loads(pickle.dumps(record)), copy.deepcopy(record), copy.copy(record)):
        assert type(again) is OeeRecord and again == record
    assert isinstance(record, Record) and isinstance(record, dict)
