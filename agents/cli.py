"""The `kpimon` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import orjson

from agents.settings import SettingsError, load_settings


def _cmd_replay(args: argparse.Namespace) -> int:
    from agents.replay import open_input, replay
    from streams.engine import Engine, Output
    from streams.summary import summarize

    settings = load_settings(args.config)
    engine = Engine(settings.engine)
    stdout = sys.stdout.buffer
    alerts = open(args.alerts, "wb") if args.alerts else None  # noqa: SIM115
    rejects = open(args.rejects, "wb") if args.rejects else None  # noqa: SIM115
    kept: list[dict] = []

    def write(out: Output) -> None:
        for record in out.records:
            stdout.write(orjson.dumps(record) + b"\n")
        kept.extend(out.records)
        if alerts is not None:
            for alert in out.alerts:
                alerts.write(orjson.dumps(alert) + b"\n")

    try:
        with open_input(args.file) as fh:
            result = replay(iter(fh), engine, rejects=rejects, on_output=write)
    finally:
        stdout.flush()
        for fh in (alerts, rejects):
            if fh is not None:
                fh.close()
    if not args.quiet:
        stats = engine.stats
        rejected = sum(result.rejected.values())
        print(
            f"kpimon replay: {result.lines} lines, "
            f"{sum(v for k, v in stats.items() if k.startswith('events.'))} events, "
            f"{rejected} rejected {dict(result.rejected) or ''}, "
            f"{sum(v for k, v in stats.items() if k.startswith('duplicates.'))} duplicates, "
            f"{sum(v for k, v in stats.items() if k.startswith('late.'))} late, "
            f"{len(kept)} records ({sum(r.get('revision', 0) > 0 for r in kept)} revised)",
            file=sys.stderr,
        )
        largest = settings.engine.window_labels()[-1]
        print(summarize(kept, largest), file=sys.stderr)
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from streams.schema import json_schemas, write_schemas

    if args.write:
        write_schemas(args.write)
        print(f"wrote JSON Schemas to {args.write}", file=sys.stderr)
        return 0
    schemas = json_schemas()
    chosen = {args.topic: schemas[args.topic]} if args.topic else schemas
    print(json.dumps(chosen, indent=2, sort_keys=True))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    print(json.dumps(masked(settings.model_dump(mode="json")), indent=2))
    return 0


def masked(value: object) -> object:
    """Secrets out of printable settings: passwords (already '**********')
    and credentials inside URLs such as kafka://user:secret@host."""
    import re

    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"(://[^/:@\s]*):[^@/\s]*@", r"\1:*****@", value)
    return value


def _settings_with_broker(args: argparse.Namespace):
    settings = load_settings(args.config)
    updates = {}
    if getattr(args, "broker", None):
        updates["broker"] = args.broker
    kafka = settings.kafka.model_copy(update=updates)
    worker = settings.worker
    if getattr(args, "port", None) is not None:
        worker = worker.model_copy(update={"web_port": args.port})
    return settings.model_copy(update={"kafka": kafka, "worker": worker})


def _cmd_worker(args: argparse.Namespace) -> int:
    from agents.worker import add_console, start_worker

    settings = _settings_with_broker(args)
    return start_worker(settings, extra=None if args.quiet else add_console, duration=args.duration)


def _sim_config(args: argparse.Namespace, id_prefix: str):  # type: ignore[no-untyped-def]
    """The simulator's configuration from `--profiles`, `--outages-per-day`, `--plc-lost-share`."""
    from agents.simulator import SimConfig
    from agents.simulator_gateway import Outages

    outages = None
    if args.outages_per_day > 0:
        outages = Outages(
            mean_gap_s=86_400 / args.outages_per_day, plc_lost_share=args.plc_lost_share
        )
    return SimConfig(id_prefix=id_prefix, profiles=args.profiles, outages=outages)


def _demo_engine(settings, sim):  # type: ignore[no-untyped-def]
    """Engine settings the simulated gateways need: the PLCs' counter modulus,
    and revisions that reach back over the longest gateway outage."""
    from streams.timeutil import parse_duration_us

    engine = settings.engine
    updates: dict[str, object] = {}
    if engine.counter_modulus is None:
        updates["counter_modulus"] = sim.counter_modulus
    if sim.outages is not None:
        longest_s = sim.outages.duration_s[1]
        if parse_duration_us(engine.revision_horizon) < round(longest_s * 1_000_000):
            updates["revision_horizon"] = longest_s
    return engine.model_copy(update=updates) if updates else engine


def _cmd_demo(args: argparse.Namespace) -> int:
    from agents.demo_feed import add_simulator
    from agents.worker import add_console, start_worker

    try:
        sim = _sim_config(args, id_prefix=f"demo{args.seed}-")
    except ValueError as exc:
        print(f"kpimon demo: {exc}", file=sys.stderr)
        return 2
    settings = _settings_with_broker(args)
    # The demo compresses time: its plant runs ahead of the wall clock.
    worker = settings.worker.model_copy(update={"max_future_skew": 366 * 86_400.0})
    engine = _demo_engine(settings, sim)
    settings = settings.model_copy(update={"worker": worker, "engine": engine})

    def extra(running):  # type: ignore[no-untyped-def]
        add_simulator(
            running,
            config=sim,
            seed=args.seed,
            history_days=args.history_days,
            speed=args.speed,
        )
        add_console(running)

    return start_worker(settings, extra=extra, duration=args.duration, any_port=args.port is None)


def _event_producer(settings, **options):  # type: ignore[no-untyped-def]
    from agents.producer import EventProducer

    return EventProducer(
        settings.kafka.broker.removeprefix("kafka://"),
        topics=settings.topics,
        kafka=settings.kafka,
        **options,
    )


def _send_all(settings, events, **options) -> int:  # type: ignore[no-untyped-def]
    """Send events in chunks; a broker that cannot be reached is a clear error."""
    import asyncio

    from aiokafka.errors import KafkaError

    async def send() -> str:
        async with _event_producer(settings, **options) as producer:
            chunk: list[dict] = []
            for event in events:
                chunk.append(event)
                if len(chunk) >= 2000:
                    await producer.send(chunk)
                    chunk = []
            await producer.send(chunk)
            return f"{producer.sent_events} events in {producer.sent_messages} messages"

    try:
        print(f"kpimon: sent {asyncio.run(send())}", file=sys.stderr)
    except KafkaError as exc:
        print(f"kpimon: cannot send to {settings.kafka.broker}: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_produce(args: argparse.Namespace) -> int:
    from agents.replay import open_input
    from streams.events import parse_event

    settings = _settings_with_broker(args)
    if not settings.kafka.broker:
        print(
            "kpimon produce: give --broker kafka://host:port (or KPIMON_KAFKA__BROKER)",
            file=sys.stderr,
        )
        return 2
    # Validate the whole file first: nothing is sent when any line is bad.
    events: list[dict] = []
    with open_input(args.file) as fh:
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
                print(f"kpimon produce: line {number}: {exc}", file=sys.stderr)
                return 1
            events += batch
    return _send_all(settings, events, max_batch=args.max_batch, validate=False)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from datetime import datetime

    from agents.simulator import simulate
    from streams.timeutil import to_us

    start = to_us(datetime.fromisoformat(args.start))
    try:
        config = _sim_config(args, id_prefix=args.id_prefix)
    except ValueError as exc:
        print(f"kpimon simulate: {exc}", file=sys.stderr)
        return 2
    events = simulate(config, args.seed, start, args.days * 86_400)
    if args.out:
        with open(args.out, "wb") as fh:
            for event in events:
                fh.write(orjson.dumps(event) + b"\n")
        return 0
    settings = _settings_with_broker(args)
    if not settings.kafka.broker:
        print("kpimon simulate: give --broker kafka://host:port or --out FILE", file=sys.stderr)
        return 2
    return _send_all(settings, events, validate=False)


def _cmd_bench(args: argparse.Namespace) -> int:
    from agents.bench import run_bench

    return run_bench(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kpimon", description="Streaming KPI monitor")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("replay", help="run the engine over a JSON-lines file of events")
    p.add_argument(
        "file", help="events as JSON lines (one event or batch per line); '-' for stdin; .gz ok"
    )
    p.add_argument("--config", help="TOML settings file (default: $KPIMON_CONFIG)")
    p.add_argument("--alerts", metavar="PATH", help="write alert records as JSON lines here")
    p.add_argument("--rejects", metavar="PATH", help="write rejected lines with their reasons here")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("schema", help="print the JSON Schemas of the input topics")
    p.add_argument("--topic", choices=["machine-state", "orders", "shipments"])
    p.add_argument("--write", metavar="DIR", help="write one schema file per topic into DIR")
    p.set_defaults(func=_cmd_schema)

    def kafka_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML settings file (default: $KPIMON_CONFIG)")
        p.add_argument(
            "--broker", help="kafka://host:port (default: settings; none = embedded broker)"
        )

    def gateway_args(
        p: argparse.ArgumentParser, *, profiles: str, outages_per_day: float, plc_lost_share: float
    ) -> None:
        p.add_argument(
            "--profiles",
            default=profiles,
            help="what the machines' gateways send: periodic, on-change, plc-counter, mix, "
            f"or counts like periodic=4,on-change=4,plc-counter=3 (default: {profiles})",
        )
        p.add_argument(
            "--outages-per-day",
            type=float,
            default=outages_per_day,
            help="gateway outages (1-3 h) per machine and day, about; events held back "
            f"and sent at once when it ends (default: {outages_per_day})",
        )
        p.add_argument(
            "--plc-lost-share",
            type=float,
            default=plc_lost_share,
            help="share of the outages where the gateway lost the PLC and sends 'unknown' "
            f"(default: {plc_lost_share})",
        )

    p = sub.add_parser("worker", help="run a worker (embedded broker when none is configured)")
    kafka_args(p)
    p.add_argument("--port", type=int, help="HTTP port (default 6066)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("-q", "--quiet", action="store_true", help="no live summary")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("demo", help="broker, simulated plant and worker on this machine")
    kafka_args(p)
    p.add_argument("--port", type=int, help="HTTP port (default 6066)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--history-days", type=float, default=3.0, help="simulated days sent at once first"
    )
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per wall second")
    gateway_args(p, profiles="mix", outages_per_day=0.5, plc_lost_share=0.0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("produce", help="send a JSON-lines file of events to the input topics")
    kafka_args(p)
    p.add_argument("file", help="events as JSON lines; '-' for stdin; .gz ok")
    p.add_argument("--max-batch", type=int, default=100, help="events per message at most")
    p.set_defaults(func=_cmd_produce)

    p = sub.add_parser("simulate", help="drive a broker (or write a file) with the plant simulator")
    kafka_args(p)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--start", default="2026-11-02T00:00:00+00:00", help="RFC 3339 start of the simulation"
    )
    p.add_argument("--days", type=float, default=1.0)
    p.add_argument(
        "--id-prefix", default="", help="prefix of event ids (distinct runs need distinct ones)"
    )
    p.add_argument("--out", help="write JSON lines here instead of sending")
    gateway_args(p, profiles="periodic", outages_per_day=0.0, plc_lost_share=0.0)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("bench", help="measure throughput, latency and memory on this machine")
    from agents.bench import add_arguments as add_bench_arguments

    add_bench_arguments(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("config", help="print the effective configuration")
    p.add_argument("--config", help="TOML settings file (default: $KPIMON_CONFIG)")
    p.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"kpimon: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
