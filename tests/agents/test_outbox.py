"""Outputs are delivered (or sent again) before the input they come from is acknowledged."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

import pytest

from agents import outbox
from agents.outbox import Outbox


class Broker:
    """A send that fails the first `failures[key]` deliveries of each key."""

    def __init__(self, failures: dict[bytes, int]) -> None:
        self.failures = dict(failures)
        self.sends: list[bytes] = []
        self.delivered: list[bytes] = []

    async def send(
        self, topic: Any, key: bytes | None, value: bytes, partition: int | None = None
    ) -> asyncio.Future[None]:
        assert key is not None
        self.sends.append(key)
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.failures.get(key, 0) > 0:
            self.failures[key] -= 1
            delivery.set_exception(TimeoutError(f"request timed out for {key!r}"))
        else:
            self.delivered.append(key)
            delivery.set_result(None)
        return delivery


@pytest.fixture(autouse=True)
def no_backoff() -> Any:
    with mock.patch.object(outbox, "BACKOFF_S", 0):
        yield


def test_every_pending_delivery_is_checked_and_failed_ones_sent_again() -> None:
    broker = Broker({b"r2": 2})

    async def scenario() -> int:
        box = Outbox(broker.send)
        for key in (b"r1", b"r2", b"r3"):
            await box.put("kpi-windows", key, b"{}")
        resent = await box.deliver()
        assert box.pending == []
        return resent

    assert asyncio.run(scenario()) == 2
    assert broker.sends == [b"r1", b"r2", b"r3", b"r2", b"r2"]
    assert sorted(broker.delivered) == [b"r1", b"r2", b"r3"]


def test_a_message_that_keeps_failing_holds_delivery_back_and_is_reported_until_through() -> None:
    broker = Broker({b"r1": outbox.ATTEMPTS + 2})

    async def scenario() -> list[tuple[int, str | None]]:
        box = Outbox(broker.send)
        await box.put("kpi-dead-letter", b"r1", b"{}")
        delivering = asyncio.ensure_future(box.deliver())
        seen = []
        while not delivering.done():  # each resend yields to the loop (its backoff sleep)
            seen.append((box.undelivered, box.failure))
            await asyncio.sleep(0)
        await delivering
        seen.append((box.undelivered, box.failure))
        return seen

    seen = asyncio.run(scenario())
    assert broker.sends == [b"r1"] * (outbox.ATTEMPTS + 3)  # never given up
    assert broker.delivered == [b"r1"]
    failure = "kpi-dead-letter: key b'r1': request timed out for b'r1'"
    assert (1, failure) in seen  # reported while held back
    assert seen[-1] == (0, None)  # and no more once through
