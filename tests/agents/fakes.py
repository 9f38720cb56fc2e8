"""Stand-ins for the broker side of `agents.ingest` and `agents.engine_runner`.

`Wire` records every send, delivery, acknowledgement and range marked
committable in one `journal`, in the order they happened, so a test can say
what came before what. Deliveries resolve at once unless `held`; then the
test releases them with `release()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True)
class Message:
    """What the agents read of a Faust message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float = 0.0


@dataclass(frozen=True)
class Event:
    """A Faust event: what is acknowledged, holding its message."""

    message: Message


@dataclass
class Wire:
    held: bool = False
    journal: list[tuple[Any, ...]] = field(default_factory=list)
    sent: list[tuple[str, bytes | None, bytes, int | None]] = field(default_factory=list)
    waiting: list[tuple[asyncio.Future[None], tuple[Any, ...]]] = field(default_factory=list)

    def delivery(self, what: tuple[Any, ...]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: self.journal.append(("delivered", *what)))
        if self.held:
            self.waiting.append((future, what))
        else:
            future.set_result(None)
        return future

    async def send(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None
    ) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, partition))
        self.journal.append(("sent", topic, key))
        return self.delivery((topic, key))

    def set_row(self, table: dict[str, str], partition: int, key: str, value: str) -> Any:
        table[key] = value
        self.journal.append(("row", key))
        return self.delivery(("row", key))

    async def mark_read_back(self, topic: str, partition: int, start: int, stop: int) -> None:
        self.journal.append(("marked", topic, partition, start, stop))

    async def ack(self, event: Event) -> None:
        self.journal.append(("acked", event.message.offset))

    def release(self) -> None:
        waiting, self.waiting = self.waiting, []
        for future, _ in waiting:
            future.set_result(None)

    def kinds(self) -> list[str]:
        return [entry[0] for entry in self.journal]

    def values(self, topic: str) -> list[Any]:
        return [orjson.loads(value) for t, _, value, _ in self.sent if t == topic]


def topic_holding(values: dict[int, bytes], key: bytes = b"k") -> Any:
    """A `ReadRange` over one topic partition holding `values`; `asked` lists the calls."""
    asked: list[tuple[str, int, int, int]] = []

    async def read(topic: str, partition: int, start: int, stop: int) -> AsyncIterator[Any]:
        asked.append((topic, partition, start, stop))
        for offset in range(start, stop):
            yield offset, key, values[offset]

    read.asked = asked  # type: ignore[attr-defined]
    return read


async def settle(condition: Any, what: str) -> None:
    """Let other tasks run until `condition()` holds (a few hundred turns at most)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")
