"""Shift windows: named shifts of a plant calendar, and planned operating time.

A `ShiftCalendar` turns shifts (local start and end, on some weekdays, in the
plant's time zone) into windows labelled by shift name; a shift may cross
midnight and DST is honoured by `zoneinfo`. Shifts may not overlap, so an
instant lands in at most one shift window; `split_planned` cuts time into
pieces inside and outside every shift (outside is not planned operating time).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from streams.timeutil import US, from_us, to_us
from streams.tumbling import Window

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Shift:
    """A named shift: local start and end time, on some weekdays.

    `end <= start` means the shift crosses midnight; its weekday is the day
    it starts on.
    """

    name: str
    start: time
    end: time
    days: frozenset[int] = frozenset(range(7))


class ShiftCalendar:
    """Shift occurrences in a time zone, as windows labelled by shift name."""

    def __init__(self, shifts: Sequence[Shift], timezone: str = "UTC") -> None:
        if not shifts:
            raise ValueError("a shift calendar needs at least one shift")
        names = [s.name for s in shifts]
        if len(set(names)) != len(names):
            raise ValueError(f"shift names must be unique, got {names}")
        self.shifts = tuple(shifts)
        self.tz = ZoneInfo(timezone)
        self._check_no_overlap()

    def _check_no_overlap(self) -> None:
        # Two weeks from an arbitrary Monday show every weekday combination.
        monday = to_us(datetime(2024, 1, 1, tzinfo=self.tz))
        found = self.occurrences(monday, monday + 14 * 86_400 * US)
        for a, b in zip(found, found[1:], strict=False):
            if b.start_us < a.end_us:
                raise ValueError(f"shifts {a.label!r} and {b.label!r} overlap")

    def _local(self, day: date, at: time) -> int:
        return to_us(datetime.combine(day, at, tzinfo=self.tz))

    def occurrences(self, start_us: int, end_us: int) -> list[Window]:
        """Shift windows that intersect [start_us, end_us), in time order."""
        first = from_us(start_us).astimezone(self.tz).date() - timedelta(days=1)
        last = from_us(end_us).astimezone(self.tz).date()
        found: list[Window] = []
        day = first
        while day <= last:
            for shift in self.shifts:
                if day.weekday() not in shift.days:
                    continue
                s = self._local(day, shift.start)
                end_day = day + timedelta(days=1) if shift.end <= shift.start else day
                e = self._local(end_day, shift.end)
                if e > start_us and s < end_us and e > s:
                    found.append(Window(s, e, shift.name))
            day += timedelta(days=1)
        found.sort()
        return found

    def containing(self, ts_us: int) -> Window | None:
        for window in self.occurrences(ts_us, ts_us + 1):
            if window.start_us <= ts_us < window.end_us:
                return window
        return None


def split_planned(
    start_us: int, end_us: int, calendar: ShiftCalendar | None
) -> Iterator[tuple[int, int, bool]]:
    """Split [start, end) into (start, end, inside_shift) pieces.

    With no calendar, all time is planned operating time (24/7).
    """
    if end_us <= start_us:
        return
    if calendar is None:
        yield start_us, end_us, True
        return
    cursor = start_us
    for shift in calendar.occurrences(start_us, end_us):
        s, e = max(shift.start_us, start_us), min(shift.end_us, end_us)
        if s > cursor:
            yield cursor, s, False
        yield s, e, True
        cursor = e
    if cursor < end_us:
        yield cursor, end_us, False


def parse_clock(text: str) -> time:
    """'06:00' -> time(6, 0); raises ValueError naming the problem."""
    try:
        hours, minutes = text.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"not a clock time HH:MM: {text!r}") from None
