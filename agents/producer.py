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

import asyncio
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from typing import Any, Self

import orjson
from aiokafka import AIOKafkaClient, AIOKafkaProducer

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


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka connection options from the settings (TLS, SASL)."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if "SSL" in kafka.security_protocol:
        import ssl

        options["ssl_context"] = ssl.create_default_context(cafile=kafka.ssl_cafile)
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return options


class BrokerUnreachable(RuntimeError):
    """The broker did not answer as a Kafka broker within the connect timeout."""


async def probe_broker(bootstrap: str, kafka: KafkaSettings, timeout: float | None = None) -> None:
    """Raise `BrokerUnreachable`, with the reason, unless the broker at `bootstrap`
    (`host:port[;host:port]`) answers a Kafka metadata request (after TLS and SASL
    as configured) within `timeout` seconds (default: `kafka.connect_timeout`).

    A TCP connection to each host first, so a refused or unresolvable address is
    named as such; then a Kafka bootstrap, so a port that is open but is not
    Kafka (or never answers) gives up at the deadline instead of hanging.
    """
    timeout = kafka.connect_timeout if timeout is None else timeout
    hosts = [h.strip() for h in bootstrap.replace(";", ",").split(",") if h.strip()]
    deadline = asyncio.get_running_loop().time() + timeout
    reasons = []
    for host in hosts:
        name, _, port = host.rpartition(":")
        left = max(deadline - asyncio.get_running_loop().time(), 0.001)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(name.strip("[]"), int(port)), left
            )
        except (TimeoutError, OSError, ValueError) as exc:
            reason = _why(exc)
            reasons.append(f"{host}: {reason}")
            continue
        writer.close()
        break
    else:
        raise BrokerUnreachable(f"cannot connect ({'; '.join(reasons) or 'no host given'})")
    # aiokafka logs why each host failed (and raises only "Unable to bootstrap"):
    # keep those lines for the reason, and off stderr, where Python would print
    # them for want of a handler.
    heard = _Heard()
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.addHandler(heard)
    client = AIOKafkaClient(
        bootstrap_servers=hosts,
        request_timeout_ms=max(int(timeout * 1000), 1),
        **client_options(kafka),
    )
    try:
        left = max(deadline - asyncio.get_running_loop().time(), 0.001)
        await asyncio.wait_for(client.bootstrap(), left)
    except TimeoutError:
        raise BrokerUnreachable(
            f"no Kafka answer within {timeout:g} s (connect timeout; is it a Kafka broker?)"
        ) from None
    except Exception as exc:  # aiokafka's SASL code raises more than KafkaError
        why = heard.messages[-1] if heard.messages else f"{type(exc).__name__}: {exc}"
        what = "a Kafka broker"
        if kafka.sasl_mechanism:
            what += f" that takes these {kafka.sasl_mechanism} credentials"
        raise BrokerUnreachable(f"it did not answer as {what} ({why})") from None
    finally:
        aiokafka_log.removeHandler(heard)
        await client.close()


def _why(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer (connect timeout)"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


class _Heard(logging.Handler):
    """Collects aiokafka's error lines during a probe."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


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
