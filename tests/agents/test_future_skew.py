"""Events stamped far ahead of the worker's clock are dead-lettered, not applied."""

from __future__ import annotations

from datetime import datetime

import orjson

from agents.pipeline import Incoming, Routed, route_batch
from streams.timeutil import to_us
from tests.agents.wire import read_forward
from tests.eventfactory import at, state

WALL_US = to_us(datetime.fromisoformat(at(10.75)))  # the receiving clock: 10:45
SKEW_US = 15 * 60 * 1_000_000


def route(value: bytes, max_future_us: int | None = None) -> tuple[Routed, list[str]]:
    """A machine-state message of press-1 alone: its routing and the ids it forwards."""
    message = Incoming("machine-state", 0, 7, b"press-1", value)
    batch = route_batch(
        [message],
        sources={"machine-state": "machine-state"},
        wall_us=WALL_US,
        max_future_us=max_future_us,
    )
    [(_, routed)] = batch.routed
    forwarded = [
        e["event_id"]
        for _, forward in batch.forwards
        for run in read_forward(forward)["runs"]
        for e in run["events"]
    ]
    return routed, forwarded


def test_future_event_is_dead_lettered_and_the_rest_of_the_batch_forwarded() -> None:
    now_ok = state(at(10.5), "running")  # 15 minutes before the clock
    future = state(at(12), "down")  # 75 minutes ahead: beyond a 15-minute skew
    routed, forwarded = route(orjson.dumps([now_ok, future]), max_future_us=SKEW_US)
    assert forwarded == [now_ok["event_id"]]
    letter = orjson.loads(routed.dead_letter)
    assert letter["reason"] == "future_timestamp"
    assert (
        "ts:" in letter["errors"][0]["error"] and future["event_id"] in letter["errors"][0]["error"]
    )


def test_no_skew_limit_forwards_everything() -> None:
    future = state(at(12), "down")
    routed, forwarded = route(orjson.dumps(future))
    assert routed.dead_letter is None and routed.events == 1
    assert forwarded == [future["event_id"]]
