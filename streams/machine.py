"""One machine's state timeline: from state events to time per bucket.

A state holds from its event's timestamp until the machine's next state
event. Any event of the machine (state or count) proves it is alive; time
more than `heartbeat_us` after the machine's last event is `no_data` until
its next event, never running.

Events wait in `pending` until the engine's frontier (watermark minus the
allowed lateness) passes them; only then is their time attributed. So an
out-of-order event inside the allowed lateness simply takes its place in
the timeline, and attributed time never has to be taken back:

    events:    S(running)@0      S(down)@50     count@60
    frontier:  ------------------------------|70
    attributed [0, 50) running, [50, 70) down, the rest waits
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

HEARTBEAT = ""
"""Marker in the timeline for an event that carries no state (a count)."""


@dataclass(frozen=True)
class Segment:
    """A stretch of one machine's time in one bucket."""

    start_us: int
    end_us: int
    bucket: str
    reason: str | None = None
    failure_at_start: bool = False
    silence_starts: bool = False


@dataclass
class MachineTimeline:
    """State-timeline of one machine; a plain value for a table row."""

    site: str
    line: str
    machine: str
    frontier_us: int | None = None
    state: str | None = None
    reason: str | None = None
    last_seen_us: int | None = None
    # (ts_us, seq, state or HEARTBEAT, reason): seq keeps equal timestamps
    # in arrival order so the timeline is deterministic.
    pending: list[tuple[int, int, str, str | None]] = field(default_factory=list)
    seq: int = 0

    def add(self, ts_us: int, state: str | None, reason: str | None = None) -> None:
        """Record an event; `state=None` for a count (a heartbeat only)."""
        self.seq += 1
        bisect.insort(self.pending, (ts_us, self.seq, state or HEARTBEAT, reason))

    def attribute(self, until_us: int, heartbeat_us: int) -> Iterator[Segment]:
        """Attribute time up to `until_us` and forget the events before it."""
        if self.frontier_us is None:
            if not self.pending or self.pending[0][0] >= until_us:
                return
            self.frontier_us = self.pending[0][0]
        if until_us <= self.frontier_us:
            return
        taken = bisect.bisect_left(self.pending, (until_us,))
        points, self.pending = self.pending[:taken], self.pending[taken:]
        cursor = self.frontier_us
        for ts, _, state, reason in points:
            yield from self._hold(cursor, ts, heartbeat_us)
            failure = False
            if state != HEARTBEAT:
                failure = state == "down" and self.state != "down"
                self.state, self.reason = state, reason
            self.last_seen_us = ts
            cursor = ts
            if failure:
                # Zero-length marker: the failure belongs to the window of ts.
                yield Segment(ts, ts, "down", reason, failure_at_start=True)
        yield from self._hold(cursor, until_us, heartbeat_us)
        self.frontier_us = until_us

    def preview(self, until_us: int, heartbeat_us: int) -> list[Segment]:
        """What `attribute` would yield, without changing anything."""
        clone = MachineTimeline.from_dict(self.to_dict())
        return list(clone.attribute(until_us, heartbeat_us))

    def _hold(self, start_us: int, end_us: int, heartbeat_us: int) -> Iterator[Segment]:
        """The current state from start to end, with no_data past the heartbeat."""
        if end_us <= start_us:
            return
        live_until = end_us
        if self.last_seen_us is not None:
            live_until = min(end_us, max(start_us, self.last_seen_us + heartbeat_us))
        if self.state is None:
            # Seen, but no state event yet: its time is unknown.
            yield Segment(start_us, end_us, "no_data")
            return
        if live_until > start_us:
            yield Segment(start_us, live_until, self.state, self.reason)
        if end_us > live_until:
            lapse = self.last_seen_us is not None and live_until == self.last_seen_us + heartbeat_us
            yield Segment(live_until, end_us, "no_data", silence_starts=lapse)

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "line": self.line,
            "machine": self.machine,
            "frontier_us": self.frontier_us,
            "state": self.state,
            "reason": self.reason,
            "last_seen_us": self.last_seen_us,
            "pending": list(self.pending),  # tuples: JSON arrays all the same
            "seq": self.seq,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineTimeline:
        return cls(**{**data, "pending": [tuple(p) for p in data["pending"]]})
