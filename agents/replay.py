"""`kpimon replay`: the engine over a file of events, in event time.

The offline twin of the live pipeline: each line is one event or a JSON
array of events (a batch), exactly as a Kafka message value would be. Lines
that fail validation are never dropped silently: each is reported with its
line number and reason (and written to `--rejects` when given), and so are
valid events the engine refuses (`too_many_machines`, `too_many_open_orders`).

Event time is `streams.clock.NewestEventClock`: the newest event applied.
"""

from __future__ import annotations

import argparse
import gzip
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from streams.clock import NewestEventClock
from streams.decode import decode_message
from streams.engine import Engine, Output


@dataclass
class ReplayResult:
    output: Output
    engine: Engine
    lines: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    first_errors: dict[str, tuple[int, str]] = field(default_factory=dict)  # reason: (line, error)
    lines_rejected: int = 0  # lines of which no event was accepted


@contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """'-' for stdin; '.gz' files are decompressed."""
    if path == "-":
        yield sys.stdin.buffer
    elif path.endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            yield fh
    else:
        with open(path, "rb") as fh:
            yield fh


def replay(
    lines: Iterator[bytes],
    engine: Engine,
    *,
    rejects: IO[bytes] | None = None,
    on_output: Any = None,
) -> ReplayResult:
    """Feed every line through the engine; close all windows at the end.

    After each event the engine applies, the watermark moves to the newest
    event time applied (`NewestEventClock`) and what is due closes.
    """
    result = ReplayResult(Output(), engine)
    clock = NewestEventClock()

    def emit(out: Output) -> None:
        if on_output is not None:
            on_output(out)
        else:
            result.output.extend(out)

    refused = Output()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        result.lines += 1
        decoded = decode_message(line)
        accepted = len(decoded.events)
        for error in decoded.errors:
            result.rejected[error.reason] += 1
            result.first_errors.setdefault(error.reason, (number, error.message))
            if rejects is not None:
                text = line.decode("utf-8", "replace")
                _reject(rejects, number, error.index, error.reason, error.message, text)
        for event in decoded.events:
            if engine.ingest(event, refused) is None:
                clock.observe(event.source, event.ts_us)
                watermark = clock.watermark()
                assert watermark is not None  # an event was just observed
                emit(engine.advance(watermark))
        for refusal in refused.rejected:  # valid, but refused by the engine
            result.rejected[refusal["reason"]] += 1
            result.first_errors.setdefault(refusal["reason"], (number, refusal["error"]))
            accepted -= 1
            if rejects is not None:
                text = orjson.dumps(refusal["event"]).decode()
                _reject(rejects, number, None, refusal["reason"], refusal["error"], text)
        refused.rejected.clear()
        if accepted <= 0 and (decoded.errors or decoded.events):
            result.lines_rejected += 1
    emit(engine.flush())
    return result


def _reject(
    rejects: IO[bytes], line: int, index: int | None, reason: str, error: str, value: str
) -> None:
    entry = {"line": line, "index": index, "reason": reason, "error": error, "value": value}
    rejects.write(orjson.dumps(entry) + b"\n")


def run_replay(args: argparse.Namespace) -> int:
    """`kpimon replay`: records as JSON lines on stdout, a summary on stderr;
    returns the exit code."""
    from agents import collector
    from agents.cli_common import EXIT_OK, EXIT_REJECTED, input_lines, output_file
    from agents.settings import load_settings
    from streams.summary import Summary

    settings = load_settings(args.config)
    collector.for_long_lived_state()
    engine = Engine(settings.engine, auto_watermark=False)  # `replay` moves it
    stdout = sys.stdout.buffer
    files = ExitStack()
    lines = files.enter_context(input_lines(args.file))  # checked before any output is created
    alerts = output_file(args.alerts)
    rejects = output_file(args.rejects)
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


def reject_summary(result: ReplayResult) -> list[str]:
    """One line per reject reason: how many, and the first one's line and error."""
    lines = []
    for reason, count in result.rejected.most_common():
        number, error = result.first_errors[reason]
        error = " ".join(error.split())
        error = error if len(error) <= 160 else error[:157] + "..."
        lines.append(f"  rejected {count} {reason}; first: line {number}: {error}")
    return lines
