"""The `kpimon` command: its options, and which code runs each command.

Each command's body lives with what it runs (`agents.replay`, `agents.worker`;
the development tools in `devtools`) and is imported only when that command
runs, so `kpimon worker` never loads the simulator or the benchmark. Exit
codes: `agents.cli_common`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import NoReturn

from agents.argtypes import non_negative, positive, positive_int, rfc3339, share, tcp_port
from agents.cli_common import (
    EXIT_FAILED,
    EXIT_FILE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_USAGE,
    FileProblem,
    settings_with_broker,
)
from agents.settings import SettingsError, load_settings, redact

__all__ = [
    "EXIT_FAILED",
    "EXIT_FILE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_USAGE",
    "build_parser",
    "main",
]


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


def _cmd_replay(args: argparse.Namespace) -> int:
    from agents.replay import run_replay

    return run_replay(args)


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


def _cmd_worker(args: argparse.Namespace) -> int:
    from agents.worker import add_console, start_worker

    def embedded_broker():  # type: ignore[no-untyped-def]
        # Only when no broker is configured: the worker itself never imports devtools.
        from devtools.broker import start_for_worker

        return start_for_worker()

    return start_worker(
        settings_with_broker(args),
        extra=None if args.quiet else add_console,
        duration=args.duration,
        embedded_broker=embedded_broker,
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from devtools.demo import run_demo

    return run_demo(args)


def _cmd_produce(args: argparse.Namespace) -> int:
    from devtools.sending import run_produce

    return run_produce(args)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from devtools.sending import run_simulate

    return run_simulate(args)


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
    p.add_argument(
        "--role",
        choices=("all", "ingest", "engine"),
        help="the agents to run: ingest (input topics to the engine topic), engine (the "
        "engine topic to the KPIs) or all (default: worker.role in the settings, all)",
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

    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for CI (about two minutes); the same figures and JSON keys",
    )
    for flag, text in (
        ("--events", "events per message shape (default 1000000)"),
        ("--machines", "machines of the memory test (default 10000)"),
        ("--open-orders", "open orders, memory test (default 100000)"),
        ("--mix-machines", "machines of the event mix (default 1000)"),
    ):
        p.add_argument(flag, type=positive_int, help=text)
    p.add_argument(
        "--replay-days",
        metavar="SHORT,LONG",
        help="simulated days of the two replays (default 10,100)",
    )
    p.add_argument("--broker", help="kafka://host:port (default: start the embedded broker)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON here (default: none)")
    p.add_argument(
        "--latency-seconds",
        type=positive,
        help="length of the paced part of the latency test (default: events / rate, 5-30 s)",
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the generated events")
    p.add_argument("--skip-rss", action="store_true", help="leave out the memory test")
    p.add_argument(
        "--horizon",
        action="store_true",
        help="also measure the revision horizon's memory (about 30 min at 10000 machines)",
    )
    p.add_argument(
        "--horizon-machines",
        type=positive_int,
        help="machines of the revision-horizon memory (default 10000)",
    )
    p.add_argument("--skip-horizon", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--horizon-only", action="store_true", help="run only the horizon; needs no broker"
    )
    p.add_argument("--profile", metavar="DIR", help="cProfile the kpimon workers into DIR")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("config", help="print the effective configuration, secrets masked")
    p.add_argument("--config", help=CONFIG_HELP)
    p.set_defaults(func=_cmd_config)
    return parser


def _broker_did_not_start(exc: BaseException) -> bool:
    """Whether `exc` is the embedded broker's failure to start (its module is
    loaded only by the commands that start it)."""
    broker = sys.modules.get("devtools.broker")
    return broker is not None and isinstance(
        exc, (broker.BrokerBinaryNotFound, broker.BrokerStartError)
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as exc:
        print(f"kpimon {args.command}: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except FileProblem as exc:
        print(f"kpimon {args.command}: {exc}", file=sys.stderr)
        return EXIT_FILE
    except BrokenPipeError:
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"kpimon {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not _broker_did_not_start(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"kpimon {args.command}: the embedded broker did not start: {first}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
