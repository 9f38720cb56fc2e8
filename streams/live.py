"""The live view: current (still open) windows, as of the watermark.

Closed windows are final; an open window is shown provisionally: each
machine's pending time is attributed up to the watermark (not only up to
the frontier), without changing the engine. A machine that stopped sending
keeps accruing its last state here (until an opt-in heartbeat runs out).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from streams.engine import Engine
from streams.machine import Segment
from streams.machine_side import segment_pieces
from streams.oee import OeeState
from streams.records import oee_rollup, perfect_order_record
from streams.timeutil import iso
from streams.windows import Window


def current_windows(engine: Engine) -> list[dict[str, Any]]:
    """Provisional OEE and perfect-order records of the windows holding the watermark."""
    return list(iter_current_windows(engine))


def iter_current_windows(engine: Engine) -> Iterator[dict[str, Any]]:
    """`current_windows`, made a window at a time (at 10,000 machines the
    records of all windows at once are about 40 MiB)."""
    if engine.watermark_us is None:
        return
    now = engine.watermark_us
    orders_wanted = engine.windows.containing(max(now - 1, 0))
    oee: dict[Window, dict[tuple[str, str, str], OeeState]] = defaultdict(dict)
    for timeline in engine.machines.values():
        key = (timeline.site, timeline.line, timeline.machine)
        windows = engine.site_windows(timeline.site)
        wanted = windows.containing(max(now - 1, 0))
        for window in wanted:
            state = engine.oee.get(window, {}).get(key)
            oee[window][key] = OeeState() if state is None else OeeState.from_dict(state.to_dict())
        # Show time and units up to the machine's own newest event too.
        newest = timeline.newest_us or now
        segments = timeline.preview(
            max(now, newest),
            engine.heartbeat_us(timeline),
            modulus=engine.modulus,
            hold_us=engine.hold_us,
        )
        for seg in segments:
            for window in wanted:
                if seg.start_us == seg.end_us:  # a marker
                    if window.start_us <= seg.start_us < window.end_us:
                        oee[window].setdefault(key, OeeState()).add(seg)
                    continue
                clipped = Segment(
                    max(seg.start_us, window.start_us),
                    min(seg.end_us, window.end_us),
                    seg.bucket,
                    seg.reason,
                )
                for start, end, bucket, reason in segment_pieces(clipped, windows.calendar):
                    oee[window].setdefault(key, OeeState()).add_time(bucket, end - start, reason)
    rank = engine.windows.labels.index
    order = sorted({*oee, *orders_wanted}, key=lambda w: (rank(w.label), w.start_us, w.date or ""))
    for window in order:
        if window in oee:
            yield from oee_rollup(window, oee.pop(window))[0]
        for (direction, segment), state in sorted(engine.orders.get(window, {}).items()):
            yield perfect_order_record(direction, segment, window, state)


def live_view(engine: Engine, *, current: bool = True) -> dict[str, Any]:
    """What /kpi shows: the clock, current windows, latest closed records.
    `current=False` leaves the current windows out (`iter_current_windows`
    makes them a window at a time)."""
    frontier = engine.frontier_us
    return {
        "watermark": None if engine.watermark_us is None else iso(engine.watermark_us),
        "frontier": None if frontier is None else iso(frontier),
        **({"current": current_windows(engine)} if current else {}),
        "last_closed": sorted(
            engine.last_closed.values(),
            key=lambda r: (r["kpi"], r["window"], str(r.get("chart", ""))),
        ),
        "open_orders": len(engine.book.open),
        "machines": len(engine.machines),
        "stats": dict(engine.stats),
    }
