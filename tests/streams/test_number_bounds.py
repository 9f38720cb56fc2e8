"""Numbers no machine or order has are refused, so none can stop a worker.

A valid order of 1e300 units, a count with an ideal cycle of 1e308 s, or a
PLC counter jumping by 2^53 units used to make sums that no snapshot or
record could hold (orjson writes 64-bit integers; a float infinity has no
integer): the worker would stop at its next snapshot, on every restart.
"""

from __future__ import annotations

import orjson
import pytest

from streams.config import EngineConfig
from streams.decode import decode_message, parse_event
from streams.engine import Engine
from streams.snapshot import snapshot
from tests.eventfactory import at, count, counter, order, shipment, state
from tests.streams.helpers import run_events


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (count(at(0), 10, 10, 1e308), "ideal_cycle_s: Input should be less than or equal to 86400"),
        (count(at(0), 10**10, 1, 1.0), "total: Input should be less than or equal to 1000000000"),
        (count(at(0), 10**9, 1, 86_000.0), "total: 1000000000 units at an ideal 86000.0 s each"),
        (order("A", at(0), at(1), qty=1e300), "lines[0].qty: Input should be less than or equal"),
        (shipment("A", at(0), qty=1e300), "lines[0].qty: Input should be less than or equal"),
        (counter(at(0), 2**60), "total: Input should be less than or equal to 9007199254740991"),
    ],
)
def test_absurd_numbers_are_refused_naming_the_field(event: dict, error: str) -> None:
    decoded = decode_message(orjson.dumps(event))
    assert decoded.events == []
    (problem,) = decoded.errors
    assert problem.reason == "schema" and problem.message.startswith(error), problem.message


def test_a_counter_jump_no_machine_makes_is_a_new_base_and_the_state_stays_writable() -> None:
    engine = Engine(EngineConfig(windows=["1h", "1d"]))
    readings = [
        state(at(0), "running"),
        counter(at(0.1), 10, ideal_cycle_s=2.0),
        # A misread: 2^53 units in 6 minutes at a day per unit. A new base.
        counter(at(0.2), 2**53 - 1, ideal_cycle_s=86_400.0),
        counter(at(0.3), 5_000_000, ideal_cycle_s=86_400.0),  # a fall to a new base again
        counter(at(0.4), 5_000_099, ideal_cycle_s=86_400.0),  # 99 units: counted
        state(at(2), "idle"),
    ]
    out = run_events(engine, (parse_event(e) for e in readings))
    out.extend(engine.flush())
    hour = next(r for r in out.records if r.get("scope") == "machine" and r["start"] == at(0))
    assert hour["total"] == 99
    assert engine.machines["press-1"].resets == 2
    orjson.dumps(snapshot(engine))
    orjson.dumps(out.records)
