"""`kpimon replay`: the engine over a file of events, in event time.

The offline twin of the live pipeline: each line is one event or a JSON
array of events (a batch), exactly as a Kafka message value would be. Lines
that fail validation are never dropped silently: each is reported with its
line number and reason (and written to `--rejects` when given), and so are
valid events the engine refuses (`too_many_machines`, `too_many_open_orders`).
"""

from __future__ import annotations

import gzip
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

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
    """Feed every line through the engine; close all windows at the end."""
    result = ReplayResult(Output(), engine)

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
            if engine.ingest(event, refused) is None and engine.watermark_us is not None:
                emit(engine.advance(engine.watermark_us))
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
