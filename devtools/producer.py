"""A small producer for MES/ERP integrations: validated, batched, keyed.

    async with EventProducer("127.0.0.1:9092") as producer:
        await producer.send([{"type": "state", ...}, {"type": "count", ...}])

Each event is validated against the contract before it leaves (a bad event
raises `EventValidationError` naming the field, and nothing of that call is
sent). Consecutive events of the same topic and key travel as one batch
message (a JSON array), keyed by machine id or order id, so every event of
a batch belongs to the message's key as the contract requires.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Self

import orjson
from aiokafka import AIOKafkaProducer

from agents.kafka_client import client_options
from agents.settings import KafkaSettings, TopicSettings
from streams.decode import parse_event

_TOPICS = dict.fromkeys(["state", "count", "counter"], "machine-state")
_TOPICS |= dict.fromkeys(["order", "order_cancelled", "order_closed"], "orders")
_TOPICS["shipment"] = "shipments"


def topic_of(event: dict) -> str:
    """Input topic of an event: "machine-state", "orders" or "shipments"."""
    try:
        return _TOPICS[event["type"]]
    except KeyError:
        raise ValueError(f"unknown event type {event.get('type')!r}") from None


def key_of(event: dict) -> str:
    """Message key: the machine id for machine-state events, else the order id."""
    return event["machine"] if topic_of(event) == "machine-state" else event["order_id"]


def batched(events: Iterable[dict], max_batch: int = 50) -> Iterator[tuple[str, str, list[dict]]]:
    """Group runs of consecutive events with the same topic and key into (topic, key, batch)."""
    if max_batch < 1:
        raise ValueError("max_batch must be >= 1")
    batch: list[dict] = []
    topic = key = ""
    for event in events:
        where = (topic_of(event), key_of(event))
        if batch and (where != (topic, key) or len(batch) >= max_batch):
            yield topic, key, batch
            batch = []
        topic, key = where
        batch.append(event)
    if batch:
        yield topic, key, batch


class EventProducer:
    def __init__(
        self,
        bootstrap: str,
        *,
        topics: TopicSettings | None = None,
        kafka: KafkaSettings | None = None,
        max_batch: int = 100,
        validate: bool = True,
    ) -> None:
        self.topics = topics or TopicSettings()
        self._names = {kind: name for name, kind in self.topics.sources().items()}
        self.max_batch = max_batch
        self.validate = validate
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=5, **client_options(kafka or KafkaSettings())
        )
        self.sent_events = 0
        self.sent_messages = 0

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def send(self, events: Iterable[dict[str, Any]], *, wait: bool = True) -> int:
        """Validate, batch and send; returns the number of events sent."""
        events = list(events)
        if self.validate:
            for event in events:
                parse_event(event)
        futures = []
        for kind, key, group in batched(events, self.max_batch):
            value = orjson.dumps(group[0] if len(group) == 1 else group)
            futures.append(
                await self._producer.send(self._names[kind], value=value, key=key.encode())
            )
            self.sent_messages += 1
        if wait:
            for fut in futures:
                await fut
        self.sent_events += len(events)
        return len(events)

    async def flush(self) -> None:
        await self._producer.flush()
