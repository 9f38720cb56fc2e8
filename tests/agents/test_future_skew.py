"""Events stamped far ahead of the worker's clock are dead-lettered, not applied."""

from __future__ import annotations

from datetime import datetime

import orjson

from agents.pipeline import route
from streams.timeutil import to_us
from tests.eventfactory import at, state

WALL_US = to_us(datetime.fromisoformat(at(10.75)))  # the receiving clock: 10:45
SKEW_US = 15 * 60 * 1_000_000


def test_future_event_is_dead_lettered_and_the_rest_of_the_batch_forwarded() -> None:
    now_ok = state(at(10.5), "running")  # 15 minutes before the clock
    future = state(at(12), "down")  # 75 minutes ahead: beyond a 15-minute skew
    routed = route(
        orjson.dumps([now_ok, future]),
        key=b"press-1",
        topic="machine-state",
        source="machine-state",
        partition=0,
        offset=7,
        wall_us=WALL_US,
        max_future_us=SKEW_US,
    )
    assert [e["event_id"] for e in orjson.loads(routed.forward)["events"]] == [now_ok["event_id"]]
    letter = orjson.loads(routed.dead_letter)
    assert letter["reason"] == "future_timestamp"
    assert (
        "ts:" in letter["errors"][0]["error"] and future["event_id"] in letter["errors"][0]["error"]
    )


def test_no_skew_limit_forwards_everything() -> None:
    future = state(at(12), "down")
    routed = route(
        orjson.dumps(future),
        key=b"press-1",
        topic="machine-state",
        source="machine-state",
        partition=0,
        offset=7,
        wall_us=WALL_US,
    )
    assert routed.dead_letter is None and routed.events == 1
