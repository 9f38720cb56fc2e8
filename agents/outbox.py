"""Output records, alerts and dead letters, delivered before their input is acknowledged.

Faust's `topic.send()` returns once the message is queued in the producer;
its delivery (or failure) comes later, in a future nobody else looks at.
The engine acknowledges its input only after a snapshot, and a snapshot
covers every message whose outputs were sent: if one of those sends failed
unseen, a restart would never produce it again. So every send is kept here
until the snapshot step checks it; a failed one is sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("kpimon")

Send = Callable[[Any, bytes | None, bytes], Awaitable[Awaitable[Any]]]
"""send(topic, key, value): queue a message, return its delivery."""

ATTEMPTS = 5
BACKOFF_S = 0.5


class NotDelivered(Exception):
    """A message could not be delivered after `ATTEMPTS` sends."""


@dataclass
class Outbox:
    send: Send
    pending: list[tuple[Any, bytes | None, bytes, Awaitable[Any]]] = field(default_factory=list)

    async def put(self, topic: Any, key: bytes | None, value: bytes) -> None:
        self.pending.append((topic, key, value, await self.send(topic, key, value)))

    async def deliver(self) -> int:
        """Wait for every pending delivery; send failed ones again. Returns how many were resent.

        Raises `NotDelivered` when a message still fails after `ATTEMPTS` sends in all:
        its input must then stay unacknowledged.
        """
        pending, self.pending = self.pending, []
        results = await asyncio.gather(*(d for *_, d in pending), return_exceptions=True)
        resent = 0
        for (topic, key, value, _), result in zip(pending, results, strict=True):
            attempt = 1
            while isinstance(result, Exception):
                if attempt >= ATTEMPTS:
                    raise NotDelivered(
                        f"{_name(topic)}: key {key!r} not delivered after {attempt} sends: {result}"
                    )
                log.warning(
                    "%s: key %r not delivered (%s); sending it again", _name(topic), key, result
                )
                await asyncio.sleep(BACKOFF_S * attempt)
                attempt += 1
                resent += 1
                try:
                    await (await self.send(topic, key, value))
                    result = None
                except Exception as exc:  # noqa: BLE001 (any broker error: try again)
                    result = exc
        return resent


def _name(topic: Any) -> str:
    get = getattr(topic, "get_topic_name", None)
    return get() if get else str(topic)
