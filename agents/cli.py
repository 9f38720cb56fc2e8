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
            f"{len(kept)} records",
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
    print(json.dumps(settings.model_dump(mode="json"), indent=2))
    return 0


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
