"""`kpimon produce` and `kpimon simulate`: events to the input topics of a
broker (the one given, else the embedded broker of a worker running here),
or the simulator's events to a file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from datetime import datetime

import orjson

from agents.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_USAGE,
    input_lines,
    output_file,
    settings_with_broker,
)
from agents.settings import Settings, redact, secrets_of, with_kafka
from devtools.producer import EventProducer


def event_producer(settings: Settings, **options) -> EventProducer:  # type: ignore[no-untyped-def]
    assert settings.kafka.broker is not None
    return EventProducer(
        settings.kafka.broker.removeprefix("kafka://"),
        topics=settings.topics,
        kafka=settings.kafka,
        **options,
    )


def sending_settings(args: argparse.Namespace) -> Settings | None:
    """Settings with a broker to send to: --broker, kafka.broker, or else the
    embedded broker of a `kpimon worker` or `kpimon demo` running here (same
    `worker.data_dir`); None (after saying why) when there is none."""
    from agents.worker import embedded_broker_url

    settings = settings_with_broker(args)
    if settings.kafka.broker:
        return settings
    url = embedded_broker_url(settings)
    if url is None:
        print(
            f"kpimon {args.command}: no broker: give --broker kafka://host:port (or set "
            "kafka.broker), or start `kpimon worker` or `kpimon demo` in this directory "
            "first: its embedded broker is used",
            file=sys.stderr,
        )
        return None
    print(
        f"kpimon {args.command}: to the embedded broker of the worker here, {url}", file=sys.stderr
    )
    return with_kafka(settings, broker=url)


def send_all(settings: Settings, events: Iterable[dict], command: str, **options) -> int:  # type: ignore[no-untyped-def]
    """Send events in chunks; a broker that cannot be reached is a clear error."""
    import asyncio

    from aiokafka.errors import KafkaError

    from agents.worker import check_broker

    url = settings.kafka.broker
    assert url is not None
    why = check_broker(settings, url)
    if why is not None:
        print(f"kpimon {command}: cannot reach the broker {redact(url)}: {why}", file=sys.stderr)
        return EXIT_FAILED

    async def send() -> str:
        async with event_producer(settings, **options) as producer:
            chunk: list[dict] = []
            for event in events:
                chunk.append(event)
                if len(chunk) >= 2000:
                    await producer.send(chunk)
                    chunk = []
            await producer.send(chunk)
            return f"{producer.sent_events} events in {producer.sent_messages} messages"

    try:
        print(f"kpimon {command}: sent {asyncio.run(send())}", file=sys.stderr)
    except KafkaError as exc:
        why = redact(f"{type(exc).__name__}: {exc}", secrets_of(settings))
        print(f"kpimon {command}: cannot send to {redact(url)}: {why}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def run_produce(args: argparse.Namespace) -> int:
    """`kpimon produce`; returns the exit code."""
    from streams.decode import parse_event

    settings_with_broker(args)  # a bad configuration is said first
    # Validate the whole file first: nothing is sent when any line is bad.
    events: list[dict] = []
    with input_lines(args.file) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
                batch = obj if isinstance(obj, list) else [obj]
                for event in batch:
                    if not isinstance(event, dict):
                        raise ValueError("an event must be a JSON object")
                    parse_event(event)
            except ValueError as exc:  # JSONDecodeError and EventValidationError are ValueErrors
                print(f"kpimon produce: line {number}: {exc}; nothing sent", file=sys.stderr)
                return EXIT_REJECTED
            events += batch
    settings = sending_settings(args)
    if settings is None:
        return EXIT_USAGE
    return send_all(settings, events, "produce", max_batch=args.max_batch, validate=False)


def run_simulate(args: argparse.Namespace) -> int:
    """`kpimon simulate`; returns the exit code."""
    from devtools.demo import sim_config
    from devtools.simulator import simulate
    from streams.timeutil import to_us

    start = to_us(datetime.fromisoformat(args.start))
    try:
        config = sim_config(args, id_prefix=args.id_prefix)
    except ValueError as exc:
        print(f"kpimon simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    events = simulate(config, args.seed, start, args.days * 86_400)
    if args.out:
        out = output_file(args.out)
        assert out is not None
        with out:
            for event in events:
                out.write(orjson.dumps(event) + b"\n")
        return EXIT_OK
    settings = sending_settings(args)
    if settings is None:
        return EXIT_USAGE
    return send_all(settings, events, "simulate", validate=False)
