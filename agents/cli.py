"""The `kpimon` command.

Exit codes (README, *Commands*): 0 done; 1 failed while running (broker
unreachable or not Kafka, a send failed, the worker stopped on an error);
2 usage (a bad option value, a bad or missing configuration, no broker);
3 a file cannot be read or written (missing, a directory, corrupt gzip);
4 every input line was rejected (`replay`), or an invalid line (`produce`,
nothing sent); 130 interrupted (Ctrl-C) before a clean stop.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, NoReturn

import orjson

from agents.argtypes import non_negative, positive, positive_int, rfc3339, share, tcp_port
from agents.settings import SettingsError, load_settings, redact, secrets_of, with_kafka

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_FILE = 3
EXIT_REJECTED = 4
EXIT_INTERRUPTED = 130


class FileProblem(Exception):
    """A file named on the command line cannot be read or written (exit 3)."""


class _Formatter(argparse.HelpFormatter):
    """Shows each option's default, unless its help already names it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "default" not in text
            and default not in (None, False, argparse.SUPPRESS)
        ):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Errors in one line: what is wrong and where to look."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


@contextmanager
def _input(path: str) -> Iterator[Iterator[bytes]]:
    """The lines of `open_input(path)`; the reasons a file cannot be read, as it
    is opened or while it is read, are `FileProblem`s."""
    from agents.replay import open_input

    if path != "-":
        where = Path(path)
        if not where.exists():
            raise FileProblem(f"{path}: no such file")
        if where.is_dir():
            raise FileProblem(f"{path} is a directory, not a file of events")
        if path.endswith(".gz"):
            try:
                with open(where, "rb") as raw:
                    magic = raw.read(2)
            except OSError as exc:
                raise _unreadable(path, exc) from None
            if magic != b"\x1f\x8b":
                raise FileProblem(f"cannot read {path}: not a gzip file (it ends in .gz)")
    with ExitStack() as stack:
        try:
            fh = stack.enter_context(open_input(path))
        except OSError as exc:
            raise _unreadable(path, exc) from None
        yield _lines(fh, path)


def _lines(fh: IO[bytes], path: str) -> Iterator[bytes]:
    try:
        yield from fh
    except (OSError, EOFError, zlib.error) as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: str, exc: Exception) -> FileProblem:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    gz = " (a corrupt or truncated .gz file?)" if path.endswith(".gz") else ""
    return FileProblem(f"cannot read {path}: {reason}{gz}")


def _output(path: str | None) -> IO[bytes] | None:
    if path is None:
        return None
    try:
        return open(path, "wb")  # noqa: SIM115
    except OSError as exc:
        raise FileProblem(f"cannot write {path}: {exc.strerror or exc}") from None


def _cmd_replay(args: argparse.Namespace) -> int:
    from agents.replay import replay
    from streams.engine import Engine, Output
    from streams.summary import Summary

    settings = load_settings(args.config)
    engine = Engine(settings.engine)
    stdout = sys.stdout.buffer
    files = ExitStack()
    lines = files.enter_context(_input(args.file))  # checked before any output is created
    alerts = _output(args.alerts)
    rejects = _output(args.rejects)
    # Built as records come, not from a list of them: memory stays flat
    # however long the input (a revision reaches back at most the horizon).
    largest = settings.engine.window_labels()[-1]
    summary = Summary(largest, forget_after_us=engine.horizon_us + 3 * 86_400_000_000)
    counts: Counter[str] = Counter()

    def write(out: Output) -> None:
        for record in out.records:
            stdout.write(orjson.dumps(record) + b"\n")
            summary.add(record)
            counts["records"] += 1
            counts["revised"] += record.get("revision", 0) > 0
        if alerts is not None:
            for alert in out.alerts:
                alerts.write(orjson.dumps(alert) + b"\n")

    try:
        with files:
            result = replay(lines, engine, rejects=rejects, on_output=write)
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
            f"{rejected} rejected, "
            f"{sum(v for k, v in stats.items() if k.startswith('duplicates.'))} duplicates, "
            f"{sum(v for k, v in stats.items() if k.startswith('late.'))} late, "
            f"{counts['records']} records ({counts['revised']} revised)",
            file=sys.stderr,
        )
        for line in reject_summary(result):
            print(line, file=sys.stderr)
        if counts["records"]:
            print(summary.text(), file=sys.stderr)
    if result.lines and result.lines_rejected == result.lines:
        reasons = ", ".join(sorted(result.rejected))
        print(
            f"kpimon replay: every line of {args.file} was rejected ({reasons}); nothing replayed",
            file=sys.stderr,
        )
        return EXIT_REJECTED
    return EXIT_OK


def reject_summary(result) -> list[str]:  # type: ignore[no-untyped-def]
    """One line per reject reason: how many, and the first one's line and error."""
    lines = []
    for reason, count in result.rejected.most_common():
        number, error = result.first_errors[reason]
        error = " ".join(error.split())
        error = error if len(error) <= 160 else error[:157] + "..."
        lines.append(f"  rejected {count} {reason}; first: line {number}: {error}")
    return lines


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
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, str):
        return redact(value)
    return value


def _settings_with_broker(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    settings = load_settings(args.config)
    updates: dict[str, object] = {}
    if getattr(args, "broker", None):
        updates["broker"] = args.broker
    if getattr(args, "connect_timeout", None) is not None:
        updates["connect_timeout"] = args.connect_timeout
    if updates:
        settings = with_kafka(settings, **updates)
    if getattr(args, "port", None) is not None:
        worker = settings.worker.model_copy(update={"web_port": args.port})
        settings = settings.model_copy(update={"worker": worker})
    return settings


def _cmd_worker(args: argparse.Namespace) -> int:
    from agents.worker import add_console, start_worker

    settings = _settings_with_broker(args)
    return start_worker(settings, extra=None if args.quiet else add_console, duration=args.duration)


def _sim_config(args: argparse.Namespace, id_prefix: str):  # type: ignore[no-untyped-def]
    """The simulator's configuration from `--profiles`, `--outages-per-day`, `--plc-lost-share`."""
    from devtools.simulator import SimConfig
    from devtools.simulator_gateway import Outages

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
    if not engine.targets and not engine.policies:
        # Something to colour the wall against: targets of a plausible plant.
        from streams.config import ServicePolicy, TargetSettings

        updates["targets"] = [
            TargetSettings(site=sim.site, line=spec.line, **DEMO_LINE_TARGETS) for spec in sim.lines
        ]
        updates["policies"] = {
            segment: ServicePolicy(perfect_order=rate)
            for segment, rate in DEMO_PERFECT_ORDER_TARGETS.items()
        }
    return engine.model_copy(update=updates) if updates else engine


#: The demo's targets when the configuration sets none (`kpimon demo` only).
DEMO_LINE_TARGETS = {"oee": 0.65, "availability": 0.8, "performance": 0.9, "quality": 0.97}
DEMO_PERFECT_ORDER_TARGETS = {"A": 0.95, "B": 0.9, "C": 0.85}


def _cmd_demo(args: argparse.Namespace) -> int:
    from agents.worker import add_console, start_worker
    from devtools.demo_feed import add_simulator

    try:
        sim = _sim_config(args, id_prefix=f"demo{args.seed}-")
    except ValueError as exc:
        print(f"kpimon demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = _settings_with_broker(args)
    # The demo compresses time: its plant runs ahead of the wall clock.
    quick = {"max_future_skew": 366 * 86_400.0}
    if "idle_advance_after" not in settings.worker.model_fields_set:
        # After the history, event time reaches its end within seconds (see
        # `devtools.demo_feed`); a quiet input moves on at clock pace, 1/60 of the demo's.
        quick["idle_advance_after"] = 5.0
    worker = settings.worker.model_copy(update=quick)
    engine = _demo_engine(settings, sim)
    topics = settings.topics
    if settings.kafka.broker is None and "input_partitions" not in topics.model_fields_set:
        # Orders and shipments are sparse (a shipment an hour): on one partition
        # each, the slowest input holds the watermark back minutes less.
        topics = topics.model_copy(update={"input_partitions": 1})
    settings = settings.model_copy(update={"worker": worker, "engine": engine, "topics": topics})

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
    from devtools.producer import EventProducer

    return EventProducer(
        settings.kafka.broker.removeprefix("kafka://"),
        topics=settings.topics,
        kafka=settings.kafka,
        **options,
    )


def _sending_settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Settings with a broker to send to: --broker, kafka.broker, or else the
    embedded broker of a `kpimon worker` or `kpimon demo` running here (same
    `worker.data_dir`); None (after saying why) when there is none."""
    from agents.worker import embedded_broker_url

    settings = _settings_with_broker(args)
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


def _send_all(settings, events, command: str, **options) -> int:  # type: ignore[no-untyped-def]
    """Send events in chunks; a broker that cannot be reached is a clear error."""
    import asyncio

    from aiokafka.errors import KafkaError

    from agents.worker import check_broker

    url = settings.kafka.broker
    why = check_broker(settings, url)
    if why is not None:
        print(f"kpimon {command}: cannot reach the broker {redact(url)}: {why}", file=sys.stderr)
        return EXIT_FAILED

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
        print(f"kpimon {command}: sent {asyncio.run(send())}", file=sys.stderr)
    except KafkaError as exc:
        why = redact(f"{type(exc).__name__}: {exc}", secrets_of(settings))
        print(f"kpimon {command}: cannot send to {redact(url)}: {why}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_produce(args: argparse.Namespace) -> int:
    from streams.decode import parse_event

    settings = _settings_with_broker(args)  # a bad configuration is said first
    # Validate the whole file first: nothing is sent when any line is bad.
    events: list[dict] = []
    with _input(args.file) as fh:
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
    settings = _sending_settings(args)
    if settings is None:
        return EXIT_USAGE
    return _send_all(settings, events, "produce", max_batch=args.max_batch, validate=False)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from devtools.simulator import simulate
    from streams.timeutil import to_us

    start = to_us(datetime.fromisoformat(args.start))
    try:
        config = _sim_config(args, id_prefix=args.id_prefix)
    except ValueError as exc:
        print(f"kpimon simulate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    events = simulate(config, args.seed, start, args.days * 86_400)
    if args.out:
        out = _output(args.out)
        assert out is not None
        with out:
            for event in events:
                out.write(orjson.dumps(event) + b"\n")
        return EXIT_OK
    settings = _sending_settings(args)
    if settings is None:
        return EXIT_USAGE
    return _send_all(settings, events, "simulate", validate=False)


def _cmd_bench(args: argparse.Namespace) -> int:
    from devtools.bench import run_bench

    return run_bench(args)


CONFIG_HELP = "TOML settings file (default: $KPIMON_CONFIG, else built-in defaults)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kpimon",
        description="Streaming KPI monitor",
        epilog="exit codes: 0 done, 1 failed while running, 2 usage or configuration, "
        "3 a file cannot be read or written, 4 every input line rejected (replay) or an "
        "invalid line (produce), 130 interrupted",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("replay", help="run the engine over a JSON-lines file of events")
    p.add_argument(
        "file", help="events as JSON lines (one event or batch per line); '-' for stdin; .gz ok"
    )
    p.add_argument("--config", help=CONFIG_HELP)
    p.add_argument(
        "--alerts", metavar="PATH", help="write alert records as JSON lines here (default: none)"
    )
    p.add_argument(
        "--rejects",
        metavar="PATH",
        help="write rejected lines with their reasons here (default: counted only)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=_cmd_replay)

    p = sub.add_parser("schema", help="print the JSON Schemas of the input topics")
    p.add_argument(
        "--topic",
        choices=["machine-state", "orders", "shipments"],
        help="print only this topic's schema (default: all three)",
    )
    p.add_argument(
        "--write",
        metavar="DIR",
        help="write one schema file per topic into DIR instead of printing (default: print)",
    )
    p.set_defaults(func=_cmd_schema)

    def kafka_args(p: argparse.ArgumentParser, *, default_broker: str) -> None:
        p.add_argument("--config", help=CONFIG_HELP)
        p.add_argument(
            "--broker",
            metavar="URL",
            help="kafka://[user:password@]host:port[;host:port]; user info is used as SASL "
            f"PLAIN credentials (default: kafka.broker in the settings, else {default_broker})",
        )
        p.add_argument(
            "--connect-timeout",
            type=positive,
            metavar="S",
            help="seconds to wait for the broker to answer as Kafka before giving up "
            "(default: kafka.connect_timeout, 15)",
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
            type=non_negative,
            default=outages_per_day,
            metavar="N",
            help="gateway outages (1-3 h) per machine and day, about; events held back "
            f"and sent at once when it ends (default: {outages_per_day})",
        )
        p.add_argument(
            "--plc-lost-share",
            type=share,
            default=plc_lost_share,
            metavar="SHARE",
            help="share (0-1) of the outages where the gateway lost the PLC and sends "
            f"'unknown' (default: {plc_lost_share})",
        )

    seed_help = "seed of the simulated plant: the same seed gives the same events"
    embedded = "start the embedded broker"
    running_here = (
        "the embedded broker of a `kpimon worker` or `kpimon demo` running in this directory"
    )

    p = sub.add_parser("worker", help="run a worker (embedded broker when none is configured)")
    kafka_args(p, default_broker=embedded)
    p.add_argument(
        "--port", type=tcp_port, help="HTTP port (default: worker.web_port in the settings, 6066)"
    )
    p.add_argument(
        "--duration", type=positive, metavar="S", help="stop after S seconds (default: Ctrl-C)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no live summary")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("demo", help="broker, simulated plant and worker on this machine")
    kafka_args(p, default_broker=embedded)
    p.add_argument(
        "--port",
        type=tcp_port,
        help="HTTP port (default: worker.web_port, 6066, or a free one if that is taken)",
    )
    p.add_argument(
        "--duration", type=positive, metavar="S", help="stop after S seconds (default: Ctrl-C)"
    )
    p.add_argument("--seed", type=int, default=7, help=seed_help)
    p.add_argument(
        "--history-days",
        type=non_negative,
        default=3.0,
        metavar="DAYS",
        help="simulated days before today, sent as fast as the broker takes them first",
    )
    p.add_argument(
        "--speed",
        type=positive,
        default=60.0,
        metavar="X",
        help="then live play: simulated seconds per wall second",
    )
    gateway_args(p, profiles="mix", outages_per_day=0.5, plc_lost_share=0.0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("produce", help="send a JSON-lines file of events to the input topics")
    kafka_args(p, default_broker=running_here)
    p.add_argument("file", help="events as JSON lines; '-' for stdin; .gz ok")
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=100,
        metavar="N",
        help="events per message at most (consecutive events of one key travel together)",
    )
    p.set_defaults(func=_cmd_produce)

    p = sub.add_parser("simulate", help="drive a broker (or write a file) with the plant simulator")
    kafka_args(p, default_broker=running_here)
    p.add_argument("--seed", type=int, default=7, help=seed_help)
    p.add_argument(
        "--start",
        type=rfc3339,
        default="2026-11-02T00:00:00+00:00",
        metavar="TIME",
        help="RFC 3339 time (with offset) the simulation starts at",
    )
    p.add_argument(
        "--days", type=positive, default=1.0, help="simulated days of events to generate"
    )
    p.add_argument(
        "--id-prefix",
        default="",
        help="prefix of event ids; distinct runs into one broker need distinct ones "
        "(default: none)",
    )
    p.add_argument(
        "--out",
        metavar="PATH",
        help="write JSON lines here instead of sending (default: send to the broker)",
    )
    gateway_args(p, profiles="periodic", outages_per_day=0.0, plc_lost_share=0.0)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("bench", help="measure throughput, latency and memory on this machine")
    from devtools.bench import add_arguments as add_bench_arguments

    add_bench_arguments(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("config", help="print the effective configuration, secrets masked")
    p.add_argument("--config", help=CONFIG_HELP)
    p.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from devtools.broker import BrokerBinaryNotFound, BrokerStartError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"kpimon {args.command}: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except FileProblem as exc:
        print(f"kpimon {args.command}: {exc}", file=sys.stderr)
        return EXIT_FILE
    except (BrokerBinaryNotFound, BrokerStartError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"kpimon {args.command}: the embedded broker did not start: {first}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"kpimon {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
