"""Test helpers that drive an engine the way a replay does."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streams.engine import Engine, Output


def run_events(engine: Engine, events: Iterable[Any]) -> Output:
    """Ingest events in order, advancing the watermark as they come (no flush)."""
    out = Output()
    for event in events:
        if engine.ingest(event, out) is None:
            out.extend(engine.advance(engine.watermark_us))  # type: ignore[arg-type]
    return out
