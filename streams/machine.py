"""One machine's state timeline: from state and count events to time and units.

A state holds from its event's timestamp until the machine's next state
event, however long the silence (ISO 22400; MES send states on change).
Time is `no_data` only when the machine said so (state `unknown`, sent by a
gateway that lost its PLC), before its first state, or, for producers that
promise periodic events, more than an opt-in `heartbeat_us` after its last
event of any kind.

Events wait in `pending` until the engine's frontier (watermark minus the
allowed lateness) passes them; only then is their time attributed and their
units counted, in event-time order. So an out-of-order event inside the
allowed lateness simply takes its place in the timeline, and a count knows
the state the machine was in when it was made:

    events:    S(running)@0      S(down)@50     count@60
    frontier:  ------------------------------|70
    attributed [0, 50) running, [50, 70) down, units@60 (outside running)

Cumulative PLC counters become units here too: the first reading of a
product sets the base, a rise is units, a fall is a reset (the units are the
new reading) or, with a counter modulus, a wrap (see `_delta`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

HEARTBEAT = ""
"""Marker in the timeline for an event that carries no state (a count)."""

JUMP = 1000
"""A counter rise or reset of more than this many times what the machine can
make at twice its ideal rate since the previous reading is a new base."""

QUIET = frozenset({"planned_stop", "unknown"})
"""Held states in which silence is expected: no silence alert."""

SLICE_US = 10_000_000
"""A snapshot cuts the pending events by these spans of event time
(`pending_slices`); `touched` names the spans changed since it last looked,
so it writes those again, not the allowed lateness's worth of events."""


@dataclass(frozen=True)
class Units:
    """Units counted at one instant: `total`, `good`, their ideal time."""

    total: int
    good: int
    ideal_us: int
    outside_running: bool


@dataclass(frozen=True)
class Segment:
    """A stretch of one machine's time in one bucket, or a marker at an instant.

    Markers have `start_us == end_us`: a failure (a transition into down), the
    start of a silence, or units counted.
    """

    start_us: int
    end_us: int
    bucket: str
    reason: str | None = None
    failure_at_start: bool = False
    silence_starts: bool = False
    units: Units | None = None


@dataclass(slots=True)
class MachineTimeline:
    """State-timeline of one machine; a plain value for a table row."""

    site: str
    line: str
    machine: str
    frontier_us: int | None = None
    state: str | None = None
    reason: str | None = None
    last_seen_us: int | None = None
    # (ts_us, seq, state or HEARTBEAT, reason, units or None): seq keeps equal
    # timestamps in arrival order so the timeline is deterministic. units is
    # ["count", product, total, good, ideal_us] or
    # ["counter", product, total, good or None, ideal_cycle_s].
    pending: list[tuple[Any, ...]] = field(default_factory=list)
    seq: int = 0
    # product -> [total, good, ts_us] of the newest counter reading
    counters: dict[str, list[int]] = field(default_factory=dict)
    resets: int = 0
    wraps: int = 0
    touched: set[int] = field(default_factory=set, compare=False, repr=False)
    """Slices of event time (`SLICE_US`) whose pending events changed; the
    snapshot clears it. Not part of the state: a restored timeline has every
    slice of its pending events touched."""

    def __post_init__(self) -> None:
        self.touched.update(point[0] // SLICE_US for point in self.pending)

    def add(self, ts_us: int, state: str | None, reason: str | None = None) -> None:
        """Record a state event, or with `state=None` an event that only shows life."""
        self.seq += 1
        self._insert((ts_us, self.seq, state or HEARTBEAT, reason, None))

    def add_count(self, ts_us: int, product: str, total: int, good: int, ideal_us: int) -> None:
        """Units made since the machine's previous count of the product (deltas)."""
        self.seq += 1
        self._insert((ts_us, self.seq, HEARTBEAT, None, ["count", product, total, good, ideal_us]))

    def add_counter(
        self, ts_us: int, product: str, total: int, good: int | None, ideal_cycle_s: float
    ) -> None:
        """A reading of cumulative counters; units come from the previous reading."""
        self.seq += 1
        units = ["counter", product, total, good, ideal_cycle_s]
        self._insert((ts_us, self.seq, HEARTBEAT, None, units))

    def _insert(self, point: tuple[Any, ...]) -> None:
        bisect.insort(self.pending, point)
        self.touched.add(point[0] // SLICE_US)

    def drop_due(self, count: int) -> None:
        """Forget the `count` oldest pending events (attributed).

        Only the slice of the last one may keep events; the slices before it
        are gone from the next snapshot, so they leave `touched` (which stays
        as small as the pending events' span, snapshots or not)."""
        if count:
            last = self.pending[count - 1][0] // SLICE_US
            del self.pending[:count]
            if self.touched and min(self.touched) < last:
                self.touched = {where for where in self.touched if where >= last}
            self.touched.add(last)

    def pending_slices(self) -> list[tuple[int, int, int]]:
        """(slice, start, end): the pending events in each slice of event time
        (`SLICE_US`) that holds any, as index ranges, in order."""
        out, pending, i = [], self.pending, 0
        while i < len(pending):
            where = pending[i][0] // SLICE_US
            end = bisect.bisect_left(pending, ((where + 1) * SLICE_US,), i)
            out.append((where, i, end))
            i = end
        return out

    def due(self, until_us: int, *, inclusive: bool = False) -> list[tuple[Any, ...]]:
        """The pending events an `attribute` up to `until_us` would take."""
        key = (until_us + 1,) if inclusive else (until_us,)
        return self.pending[: bisect.bisect_left(self.pending, key)]

    def due_frontier(self, until_us: int, *, inclusive: bool = False) -> int | None:
        """Where an `attribute` up to `until_us` would start; None: it would do nothing."""
        frontier = self.frontier_us
        if frontier is None:
            if not self.pending or self.pending[0][0] > until_us:
                return None
            if self.pending[0][0] == until_us and not inclusive:
                return None
            frontier = self.pending[0][0]
        if until_us < frontier or (until_us == frontier and not inclusive):
            return None
        return frontier

    def take_newest(self) -> tuple[Any, ...]:
        """Remove and return the event added last (to keep it elsewhere)."""
        for i in range(len(self.pending) - 1, -1, -1):
            if self.pending[i][1] == self.seq:
                self.touched.add(self.pending[i][0] // SLICE_US)
                return self.pending.pop(i)
        raise LookupError("no event added")

    @property
    def newest_us(self) -> int | None:
        """Timestamp of the machine's newest event, attributed or not."""
        return self.pending[-1][0] if self.pending else self.last_seen_us

    def held_state(self) -> str | None:
        """The state of the machine's newest state event, attributed or not."""
        for point in reversed(self.pending):
            if point[2] != HEARTBEAT:
                return point[2]
        return self.state

    def attribute(
        self,
        until_us: int,
        heartbeat_us: int | None = None,
        silence_us: int | None = None,
        *,
        inclusive: bool = False,
        modulus: int | None = None,
        hold_us: int | None = None,
    ) -> Iterator[Segment]:
        """Attribute time up to `until_us` and forget the events before it.

        `inclusive`: events at `until_us` itself are taken too (end of input).
        `silence_us`: a marker where a running machine has been silent that long.
        `hold_us`: no time is attributed later than that after the machine's
        last event (a state is not held for ever; the engine's `state_hold_limit`).
        """
        cursor = self.due_frontier(until_us, inclusive=inclusive)
        if cursor is None:
            return
        points = self.due(until_us, inclusive=inclusive)
        self.frontier_us = cursor
        self.drop_due(len(points))
        for ts, _, state, reason, units in points:
            yield from self._hold(cursor, ts, heartbeat_us, silence_us, hold_us)
            cursor = ts
            self.last_seen_us = ts
            if state != HEARTBEAT:
                failure = state == "down" and self.state != "down"
                self.state, self.reason = state, reason
                if failure:
                    # Zero-length marker: the failure belongs to the window of ts.
                    yield Segment(ts, ts, "down", reason, failure_at_start=True)
            if units is not None and (made := self._units(ts, units, modulus)) is not None:
                yield Segment(ts, ts, "units", units=made)
        yield from self._hold(cursor, until_us, heartbeat_us, silence_us, hold_us)
        self.frontier_us = until_us

    def preview(
        self,
        until_us: int,
        heartbeat_us: int | None = None,
        silence_us: int | None = None,
        *,
        modulus: int | None = None,
        hold_us: int | None = None,
    ) -> list[Segment]:
        """What an inclusive `attribute` would yield, without changing anything."""
        clone = MachineTimeline.from_dict(self.to_dict())
        segments = clone.attribute(
            until_us, heartbeat_us, silence_us, inclusive=True, modulus=modulus, hold_us=hold_us
        )
        return list(segments)

    def _units(self, ts_us: int, units: list[Any], modulus: int | None) -> Units | None:
        if units[0] == "count":
            made: tuple[int, int, int] | None = (units[2], units[3], units[4])
        else:
            made, how = counter_units(self.counters, ts_us, units, modulus)
            if how == "reset":
                self.resets += 1
            elif how == "wrap":
                self.wraps += 1
        if made is None:
            return None
        return Units(*made, outside_running=self.state != "running")

    def _hold(
        self,
        start_us: int,
        end_us: int,
        heartbeat_us: int | None,
        silence_us: int | None,
        hold_us: int | None = None,
    ) -> Iterator[Segment]:
        """The held state from start to end, with no_data past an opt-in heartbeat."""
        if hold_us is not None and self.last_seen_us is not None:
            end_us = min(end_us, self.last_seen_us + hold_us)
        if end_us <= start_us:
            return
        state = self.state
        if state is None or state == "unknown":
            # Seen but no state yet, or the gateway said it does not know.
            yield Segment(start_us, end_us, "no_data")
            return
        live_until = end_us
        seen = self.last_seen_us
        if heartbeat_us is not None and seen is not None:
            live_until = min(end_us, max(start_us, seen + heartbeat_us))
        if silence_us is not None and seen is not None and state == "running":
            at = seen + silence_us
            if start_us <= at < live_until:
                yield Segment(at, at, state, silence_starts=True)
        if live_until > start_us:
            yield Segment(start_us, live_until, state, self.reason)
        if end_us > live_until:
            lapse = seen is not None and live_until == seen + heartbeat_us  # type: ignore[operator]
            yield Segment(
                live_until, end_us, "no_data", silence_starts=lapse and state not in QUIET
            )

    def to_dict(self, *, with_pending: bool = True) -> dict[str, Any]:
        """The timeline as plain data; `with_pending=False` leaves the pending
        events out (a snapshot cutting them by slice puts them elsewhere)."""
        return {
            "site": self.site,
            "line": self.line,
            "machine": self.machine,
            "frontier_us": self.frontier_us,
            "state": self.state,
            "reason": self.reason,
            "last_seen_us": self.last_seen_us,
            "pending": list(self.pending) if with_pending else [],  # tuples: JSON arrays
            "seq": self.seq,
            "counters": {k: list(v) for k, v in self.counters.items()},
            "resets": self.resets,
            "wraps": self.wraps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineTimeline:
        pending = [(*p, None) if len(p) == 4 else tuple(p) for p in data["pending"]]
        counters = {k: list(v) for k, v in data.get("counters", {}).items()}
        return cls(**{**data, "pending": pending, "counters": counters})


def counter_units(
    counters: dict[str, list[int]], ts_us: int, units: list[Any], modulus: int | None
) -> tuple[tuple[int, int, int] | None, str | None]:
    """A counter reading (`units`: ["counter", product, total, good or None,
    ideal_cycle_s]) against the product's previous one in `counters`, which
    it replaces: (total, good, ideal_us) made since then, or None for a new
    base; and "reset" or "wrap" when the counter did so (a jump is a reset)."""
    product, total = units[1], units[2]
    good = total if units[3] is None else units[3]
    previous = counters.get(product)
    counters[product] = [total, good, ts_us]
    if previous is None:
        return None, None  # the first reading sets the base
    # A wrap must be a count the machine could have made since then.
    elapsed_s = (ts_us - previous[2]) / 1_000_000 if len(previous) > 2 else None
    possible = None if elapsed_s is None else 2 * elapsed_s / units[4] + 1
    total, how = _delta(total, previous[0], modulus, possible)
    if possible is not None and total > JUMP * possible:
        # No machine makes that: a counter preset or a misread. The reading
        # is a new base, counted as a reset (it also keeps the sums within
        # what a snapshot can hold).
        return None, "reset"
    good = min(_delta(good, previous[1], modulus, possible)[0], total)
    return (total, good, round(units[4] * total * 1_000_000)), how


def _delta(
    now: int, before: int, modulus: int | None, possible: float | None = None
) -> tuple[int, str | None]:
    """Units between two counter readings, and whether the counter reset or wrapped.

    With a modulus, a fall is a wrap when the units it implies are under half
    the counter's range and, given `possible` (twice what the machine makes
    at its ideal cycle between the readings), no more than that: 65,500 -> 64
    at 65,536 is a wrap of 100 units. Any other fall is a reset: 1,100 -> 30
    (the PLC restarted and has made 30 since), and 35,755 -> 0 five minutes
    later, which as a wrap would be 29,781 units.

    >>> _delta(1_100, 1_050, None), _delta(30, 1_100, 65_536), _delta(64, 65_500, 65_536, 300)
    ((50, None), (30, 'reset'), (100, 'wrap'))
    >>> _delta(0, 35_755, 65_536, 300)
    (0, 'reset')
    """
    if now >= before:
        return now - before, None
    wrapped = None if modulus is None or before >= modulus else now + modulus - before
    if wrapped is not None and 2 * wrapped < modulus and (possible is None or wrapped <= possible):
        return wrapped, "wrap"
    return now, "reset"
