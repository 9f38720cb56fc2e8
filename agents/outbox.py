"""Output records, alerts, forwards and dead letters, delivered before their input is acknowledged.

Faust's `topic.send()` returns once the message is queued in the producer;
its delivery (or failure) comes later, in a future nobody else looks at.
The engine acknowledges its input only after a snapshot, and a snapshot
covers every message whose outputs were sent; ingest acknowledges a batch
once its forwards and dead letters are out. If one of those sends failed
unseen, a restart would never produce it again. So every send is kept here
until the acknowledging step checks it; a failed one is sent again, for as
long as it takes: the input stays unacknowledged meanwhile (nothing after
it is acknowledged either), and `undelivered` counts the messages that
failed `ATTEMPTS` sends in a row, for `/healthz` and
`kpimon_outputs_undelivered`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("kpimon")

Send = Callable[[Any, bytes | None, bytes, int | None], Awaitable[Awaitable[Any]]]
"""send(topic, key, value, partition): queue a message, return its delivery."""

Sending = tuple[Any, bytes | None, bytes, int | None, Awaitable[Any]]
"""(topic, key, value, partition, delivery): a message sent, its delivery not checked."""

ATTEMPTS = 5
BACKOFF_S = 0.5
MAX_BACKOFF_S = 10.0


@dataclass
class Outbox:
    send: Send
    pending: list[Sending] = field(default_factory=list)
    undelivered: int = 0
    """Messages being sent again after `ATTEMPTS` failed sends: their input is held back."""
    failure: str | None = None
    """What the latest of those failed with."""

    async def put(
        self, topic: Any, key: bytes | None, value: bytes, partition: int | None = None
    ) -> None:
        value = kept(value)
        delivery = await self.send(topic, key, value, partition)
        self.pending.append((topic, key, value, partition, delivery))

    def take(self) -> list[Sending]:
        """The sends so far, for a `deliver` that checks them later; later sends stay."""
        taken, self.pending = self.pending, []
        return taken

    async def deliver(self, sent: list[Sending] | None = None) -> int:
        """Wait for every pending delivery (or those `take` gave, `sent`); send
        failed ones again until they are through. Returns how many were resent.

        After `ATTEMPTS` failed sends of a message it is counted in
        `undelivered` (and logged as an error) and sent again every
        `MAX_BACKOFF_S` at most: its input must stay unacknowledged.
        """
        pending = self.take() if sent is None else sent
        results = await asyncio.gather(*(d for *_, d in pending), return_exceptions=True)
        resent = 0
        for (topic, key, value, partition, _), result in zip(pending, results, strict=True):
            attempt = 1
            while isinstance(result, Exception):
                if attempt == ATTEMPTS:
                    self.undelivered += 1
                    self.failure = f"{_name(topic)}: key {key!r}: {result}"
                    log.error(
                        "%s: key %r not delivered after %s sends (%s); "
                        "holding back its input and sending it again",
                        _name(topic),
                        key,
                        attempt,
                        result,
                    )
                elif attempt < ATTEMPTS:
                    log.warning(
                        "%s: key %r not delivered (%s); sending it again", _name(topic), key, result
                    )
                await asyncio.sleep(min(BACKOFF_S * attempt, MAX_BACKOFF_S))
                attempt += 1
                resent += 1
                try:
                    await (await self.send(topic, key, value, partition))
                    result = None
                except Exception as exc:  # noqa: BLE001 (any broker error: try again)
                    result = exc
            if attempt > ATTEMPTS:
                self.undelivered -= 1
                log.warning("%s: key %r delivered after %s sends", _name(topic), key, attempt)
        if not self.undelivered:
            self.failure = None
        return resent

    async def settle(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for the pending deliveries, whatever their outcome:
        what got through is then on the topic for the partition's next reader to find."""
        deliveries = [asyncio.ensure_future(d) for *_, d in self.pending]
        if deliveries:
            await asyncio.wait(deliveries, timeout=timeout_s)


def kept(value: bytes) -> bytes:
    """`value` in bytes of its own size, to be kept a while.

    `orjson.dumps` (3.13) returns bytes whose allocation stays as large as
    the buffer it wrote into: 100,000 small records kept take about 400 MiB
    of RSS instead of 5. Everything an outbox keeps until a snapshot is
    acknowledged goes through here (a copy: about 0.1 us for a record).
    """
    return bytes(memoryview(value))


def _name(topic: Any) -> str:
    get = getattr(topic, "get_topic_name", None)
    return get() if get else str(topic)
