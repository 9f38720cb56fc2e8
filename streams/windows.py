"""Event-time windows: tumbling windows of fixed size, local windows and shifts.

Tumbling windows are aligned to the Unix epoch (so `1d` runs midnight to
midnight UTC). Local windows follow a site's `LocalDay` (time zone and the
clock time its production day starts): `1d` runs from day start to day start
in local time (23 or 25 hours across a DST change) and carries the local
production date; shorter sizes that divide a day follow the local clock.
Shift windows come from a shift calendar in the plant's time zone; a shift
may cross midnight, and DST is honoured by `zoneinfo`.

Every instant lands in exactly one tumbling or local window per size. An
instant lands in at most one shift window (shifts may not overlap); instants
outside every shift are outside planned operating time.

The windows themselves live in `streams.tumbling` (`Window`, epoch-aligned
sizes), `streams.local_windows` (`LocalDay`, local-clock sizes) and
`streams.shifts` (the shift calendar); this module picks the kind of window
per size and holds `WindowSet`, everything the engine keeps for one site.
Every name stays importable from here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from streams.local_windows import UTC_DAY, LocalDay, LocalWindows
from streams.shifts import WEEKDAYS, Shift, ShiftCalendar, parse_clock, split_planned
from streams.tumbling import DAY_US, TumblingWindows, Window

__all__ = [
    "DAY_US",
    "UTC_DAY",
    "WEEKDAYS",
    "LocalDay",
    "LocalWindows",
    "Shift",
    "ShiftCalendar",
    "TumblingWindows",
    "Window",
    "WindowSet",
    "parse_clock",
    "split_planned",
    "windows_of",
]


def windows_of(size_us: int, local: LocalDay = UTC_DAY) -> TumblingWindows | LocalWindows:
    """The windows of one size at a site: local if the size divides a day.

    Other sizes (`7d`, `1w`, `7s`) and `UTC_DAY` keep epoch alignment.

    >>> kolkata = LocalDay("Asia/Kolkata")
    >>> type(windows_of(DAY_US, kolkata)).__name__, type(windows_of(7 * DAY_US, kolkata)).__name__
    ('LocalWindows', 'TumblingWindows')
    """
    if size_us <= 0 or local == UTC_DAY or DAY_US % size_us:
        return TumblingWindows(size_us)
    return LocalWindows(size_us, local)


class WindowSet:
    """All window kinds the engine keeps: one per size, plus shifts.

    `local` is the site's `LocalDay`; the default `UTC_DAY` keeps every size
    epoch-aligned (`TumblingWindows`). A local day aligns the sizes that
    divide a day to the site's clock (`LocalWindows`).
    """

    def __init__(
        self,
        sizes_us: Sequence[int],
        calendar: ShiftCalendar | None = None,
        *,
        local: LocalDay = UTC_DAY,
    ) -> None:
        self.local = local
        self.tumbling = tuple(windows_of(s, local) for s in sizes_us)
        labels = [t.label for t in self.tumbling]
        if len(set(labels)) != len(labels):
            raise ValueError(f"window sizes must be distinct, got {labels}")
        if calendar and set(labels) & {s.name for s in calendar.shifts}:
            raise ValueError("a shift may not be named like a window size")
        self.calendar = calendar

    @property
    def labels(self) -> list[str]:
        names = [t.label for t in self.tumbling]
        if self.calendar:
            names += [s.name for s in self.calendar.shifts]
        return names

    def containing(self, ts_us: int) -> list[Window]:
        """The windows of every kind that hold the instant ts_us."""
        found = [t.containing(ts_us) for t in self.tumbling]
        if self.calendar and (shift := self.calendar.containing(ts_us)):
            found.append(shift)
        return found

    def overlapping(self, start_us: int, end_us: int) -> Iterator[Window]:
        for t in self.tumbling:
            yield from t.overlapping(start_us, end_us)
        if self.calendar:
            yield from self.calendar.occurrences(start_us, end_us)

    def next_end(self, ts_us: int) -> int:
        """The first instant after ts_us at which a window of this set ends.

        Local windows end off the epoch grid (Kolkata hours at UTC :30, a
        Berlin day at 04:00 or 05:00 UTC); this is when to close next.
        """
        nxt = min(t.containing(ts_us).end_us for t in self.tumbling)
        if self.calendar:
            for shift in self.calendar.occurrences(ts_us, nxt):
                if ts_us < shift.end_us < nxt:
                    nxt = shift.end_us
        return nxt
