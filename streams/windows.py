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
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.timeutil import US, duration_label, from_us, to_us

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_US = 86_400 * US
_HOUR_US = 3_600 * US


@dataclass(frozen=True, order=True)
class Window:
    """A half-open event-time interval [start_us, end_us) with its label."""

    start_us: int
    end_us: int
    label: str
    date: str | None = None
    """Local production date (ISO) of a window in a configured `LocalDay`."""

    def __repr__(self) -> str:
        # Undated windows print exactly as before the field existed.
        dated = "" if self.date is None else f", date={self.date!r}"
        return (
            f"Window(start_us={self.start_us}, end_us={self.end_us}, label={self.label!r}{dated})"
        )


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
class LocalDay:
    """The local clock a site's windows follow: a time zone and its day start.

    `LocalDay()` is the UTC day from midnight, which is plain epoch alignment.

    >>> LocalDay("Europe/Berlin", time(6))
    LocalDay(timezone='Europe/Berlin', day_start=datetime.time(6, 0))
    """

    timezone: str = "UTC"
    day_start: time = time(0)
    tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.day_start.tzinfo is not None:
            raise ValueError(f"day_start is a local clock time, not zoned: {self.day_start}")
        try:
            tz = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        object.__setattr__(self, "tz", tz)


UTC_DAY = LocalDay()


def _offset_us(tz: ZoneInfo, ts_us: int) -> int:
    """Local wall clock minus UTC at the instant ts_us, in microseconds."""
    offset = from_us(ts_us).astimezone(tz).utcoffset()
    assert offset is not None
    return offset // timedelta(microseconds=1)


def _transition_us(tz: ZoneInfo, after_us: int, until_us: int) -> int:
    """The instant in (after_us, until_us] where the offset at after_us ends.

    Assumes one offset change in the span; callers probe at most an hour.
    """
    before = _offset_us(tz, after_us)
    while until_us - after_us > 1:
        mid = (after_us + until_us) // 2
        if _offset_us(tz, mid) == before:
            after_us = mid
        else:
            until_us = mid
    return until_us


def _first_showing(tz: ZoneInfo, wall: datetime) -> int:
    """The first instant the local clock shows the naive `wall` time or later.

    A repeated wall time (DST ends) gives its first occurrence; a skipped
    one (DST starts) gives the instant the clock jumps over it.
    """
    found = []
    for fold in (0, 1):
        ts_us = to_us(wall.replace(tzinfo=tz, fold=fold))
        if from_us(ts_us).astimezone(tz).replace(tzinfo=None) == wall:
            found.append(ts_us)
    if found:
        return min(found)
    # Skipped (PEP 495): fold=1 maps it to before the jump, fold=0 to after.
    before_us = to_us(wall.replace(tzinfo=tz, fold=1))
    return _transition_us(tz, before_us, to_us(wall.replace(tzinfo=tz, fold=0)))


@dataclass(frozen=True)
class _Day:
    """One local production day [start_us, end_us) and the offsets in it.

    `segments` are (from_us, utc_offset_us), in order; each runs to the
    next one's from_us, the last to end_us. One segment unless the zone's
    offset changes that day.
    """

    date: date
    start_us: int
    end_us: int
    segments: tuple[tuple[int, int], ...]


@lru_cache(maxsize=512)
def _production_day(local: LocalDay, on: date) -> _Day:
    tz = local.tz
    start = _first_showing(tz, datetime.combine(on, local.day_start))
    end = _first_showing(tz, datetime.combine(on + timedelta(days=1), local.day_start))
    segments = [(start, _offset_us(tz, start))]
    probe = start
    while probe < end - 1:
        nxt = min(probe + _HOUR_US, end - 1)
        if _offset_us(tz, nxt) != segments[-1][1]:
            change = _transition_us(tz, probe, nxt)
            segments.append((change, _offset_us(tz, change)))
        probe = nxt
    return _Day(on, start, end, tuple(segments))


def _edges(day: _Day, size_us: int, anchor_us: int) -> list[int]:
    """Window starts (and the day's end) of one size on a day whose offset changes.

    A window starts wherever the local clock shows a multiple of the size
    after day start (both times through a repeated hour), or jumps over one.
    """
    edges = {day.start_us, day.end_us}
    ends = [s for s, _ in day.segments[1:]] + [day.end_us]
    previous: int | None = None
    for (begin, offset), end in zip(day.segments, ends, strict=True):
        edges.update(range(begin + (anchor_us - begin - offset) % size_us, end, size_us))
        if previous is not None and offset > previous:
            skipped = begin + previous  # first wall time the jump skips
            if skipped + (anchor_us - skipped) % size_us < begin + offset:
                edges.add(begin)
        previous = offset
    return sorted(edges)


class LocalWindows:
    """Windows of one size that divides a day, following a `LocalDay`'s clock.

    `1d` runs from day start on one local date to day start on the next
    (23 or 25 hours across DST). A shorter size starts wherever the local
    clock shows day start plus a multiple of the size: Berlin hours are UTC
    hours all year, Kolkata (+05:30) hours start at UTC :30. A DST change
    that is not a multiple of the size (Lord Howe's 30 minutes, for hours)
    makes the windows next to it longer or shorter. Windows carry the local
    production date unless the day is `UTC_DAY`.

    >>> berlin = LocalWindows(DAY_US, LocalDay("Europe/Berlin", time(6)))
    >>> day = berlin.containing(to_us(datetime(2026, 3, 29, 5, tzinfo=berlin.local.tz)))
    >>> day.date, (day.end_us - day.start_us) // (3_600 * US)
    ('2026-03-28', 23)
    """

    def __init__(self, size_us: int, local: LocalDay = UTC_DAY, label: str | None = None) -> None:
        if size_us <= 0 or DAY_US % size_us:
            raise ValueError(f"local windows need a size dividing a day, got {size_us} us")
        self.size_us = size_us
        self.local = local
        self.label = label or duration_label(size_us)
        clock = local.day_start
        since_midnight_us = ((clock.hour * 60 + clock.minute) * 60 + clock.second) * US
        self._anchor_us = (since_midnight_us + clock.microsecond) % size_us
        self._day_offset = timedelta(microseconds=since_midnight_us + clock.microsecond)
        self._dated = local != UTC_DAY
        self._last: Window | None = None  # consecutive events mostly share a window
        self._day: _Day | None = None
        self._date: str | None = None  # the ISO date windows of self._day carry
        self._edges: list[int] | None = None  # window starts of self._day if its offset changes

    def _day_of(self, ts_us: int) -> _Day:
        day = self._day
        if day is not None and day.start_us <= ts_us < day.end_us:
            return day
        wall = from_us(ts_us).astimezone(self.local.tz)
        on = (wall - self._day_offset).date()
        day = _production_day(self.local, on)
        while not day.start_us <= ts_us < day.end_us:  # a repeated or skipped day start
            on += timedelta(days=1 if ts_us >= day.end_us else -1)
            day = _production_day(self.local, on)
        self._day = day
        self._date = day.date.isoformat() if self._dated else None
        self._edges = None
        if len(day.segments) > 1 and self.size_us < DAY_US:
            self._edges = _edges(day, self.size_us, self._anchor_us)
        return day

    def containing(self, ts_us: int) -> Window:
        last = self._last
        if last is not None and last.start_us <= ts_us < last.end_us:
            return last
        day = self._day_of(ts_us)
        size, edges = self.size_us, self._edges
        if size == DAY_US:
            start, end = day.start_us, day.end_us
        elif edges is None:
            offset = day.segments[0][1]
            aligned = ts_us - (ts_us + offset - self._anchor_us) % size
            start, end = max(aligned, day.start_us), min(aligned + size, day.end_us)
        else:
            i = bisect_right(edges, ts_us)
            start, end = edges[i - 1], edges[i]
        self._last = last = Window(start, end, self.label, self._date)
        return last

    def overlapping(self, start_us: int, end_us: int) -> Iterator[Window]:
        """Windows that intersect [start_us, end_us), in time order."""
        if end_us <= start_us:
            return
        window = self.containing(start_us)
        while window.start_us < end_us:
            yield window
            window = self.containing(window.end_us)


def windows_of(size_us: int, local: LocalDay = UTC_DAY) -> TumblingWindows | LocalWindows:
    """The windows of one size at a site: local if the size divides a day.

    Other sizes (`7d`, `1w`, `7s`) and `UTC_DAY` keep epoch alignment.
    """
    if size_us <= 0 or local == UTC_DAY or DAY_US % size_us:
        return TumblingWindows(size_us)
    return LocalWindows(size_us, local)


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


def parse_clock(text: str) -> time:
    """'06:00' -> time(6, 0); raises ValueError naming the problem."""
    try:
        hours, minutes = text.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f"not a clock time HH:MM: {text!r}") from None
