"""Event-time windows: tumbling windows of fixed size and shift windows.

Tumbling windows are aligned to the Unix epoch (so `1d` runs midnight to
midnight UTC). Shift windows come from a shift calendar in the plant's time
zone; a shift may cross midnight, and DST is honoured by `zoneinfo`.

Every instant lands in exactly one tumbling window per size. An instant
lands in at most one shift window (shifts may not overlap); instants outside
every shift are outside planned operating time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from streams.timeutil import US, duration_label, from_us, to_us

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, order=True)
class Window:
    """A half-open event-time interval [start_us, end_us) with its label."""

    start_us: int
    end_us: int
    label: str


class TumblingWindows:
    """Epoch-aligned windows of one size.

    >>> w = TumblingWindows(3_600 * US)
    >>> w.label, w.containing(5_400 * US)
    ('1h', Window(start_us=3600000000, end_us=7200000000, label='1h'))
    """

    def __init__(self, size_us: int, label: str | None = None) -> None:
        if size_us <= 0:
            raise ValueError(f"window size must be > 0, got {size_us} us")
        self.size_us = size_us
        self.label = label or duration_label(size_us)
        self._last: Window | None = None  # consecutive events mostly share a window

    def containing(self, ts_us: int) -> Window:
        last = self._last
        if last is not None and last.start_us <= ts_us < last.end_us:
            return last
        start = ts_us - ts_us % self.size_us
        self._last = last = Window(start, start + self.size_us, self.label)
        return last

    def overlapping(self, start_us: int, end_us: int) -> Iterator[Window]:
        """Windows that intersect [start_us, end_us), in time order."""
        if end_us <= start_us:
            return
        window = self.containing(start_us)
        while window.start_us < end_us:
            yield window
            window = Window(window.end_us, window.end_us + self.size_us, self.label)


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


class WindowSet:
    """All window kinds the engine keeps: tumbling sizes plus shifts."""

    def __init__(self, sizes_us: Sequence[int], calendar: ShiftCalendar | None = None) -> None:
        self.tumbling = tuple(TumblingWindows(s) for s in sizes_us)
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


def parse_clock(text: str) -> time:
    """'06:00' -> time(6, 0); raises ValueError naming the problem."""
    try:
        hours, minutes = text.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"not a clock time HH:MM: {text!r}") from None
