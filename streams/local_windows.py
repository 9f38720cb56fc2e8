"""Windows that follow a site's local clock: its time zone and production-day start.

A `LocalDay` is a time zone and the clock time its production day starts.
`LocalWindows` of `1d` run from day start to day start in local time (23 or
25 hours across a DST change) and carry the local production date; shorter
sizes that divide a day start wherever the local clock shows day start plus a
multiple of the size. The DST arithmetic (offsets, transitions, skipped and
repeated wall times) lives here because only these windows need it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.timeutil import US, duration_label, from_us, to_us
from streams.tumbling import DAY_US, Window

_HOUR_US = 3_600 * US


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
