"""Local windows: a site's time zone and production-day start (streams/local_windows.py)."""

from __future__ import annotations

import doctest
from bisect import bisect_right
from datetime import UTC, datetime, time
from functools import cache
from types import ModuleType
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.local_windows
import streams.tumbling
import streams.windows
from streams.records import window_fields
from streams.timeutil import US, iso, to_us
from streams.windows import (
    DAY_US,
    UTC_DAY,
    LocalDay,
    LocalWindows,
    Shift,
    ShiftCalendar,
    TumblingWindows,
    Window,
    WindowSet,
    windows_of,
)

M, H = 60 * US, 3_600 * US
BERLIN_0600 = LocalDay("Europe/Berlin", time(6))
ZONES = (
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",  # +05:30
    "Asia/Kathmandu",  # +05:45
    "Australia/Adelaide",  # +09:30 / +10:30
    "Australia/Lord_Howe",  # +10:30 / +11:00, a 30-minute DST change
)
DAY_STARTS = (time(0), time(6), time(6, 30), time(2, 30), time(22), time(5, 45))
SIZES = (M, 5 * M, 15 * M, 30 * M, H, 2 * H, 8 * H, 12 * H, DAY_US)
# DST changes of 2026 (UTC): Berlin, New York, Adelaide, Lord Howe.
CHANGES = tuple(
    to_us(datetime.fromisoformat(text))
    for text in (
        "2026-03-29T01:00Z",
        "2026-10-25T01:00Z",
        "2026-03-08T07:00Z",
        "2026-11-01T06:00Z",
        "2026-04-04T16:30Z",
        "2026-10-03T16:30Z",
        "2026-04-04T15:00Z",
        "2026-10-03T15:30Z",
    )
)
YEAR_2026 = (to_us(datetime(2026, 1, 1, tzinfo=UTC)), to_us(datetime(2027, 1, 1, tzinfo=UTC)))


def utc(text: str) -> int:
    return to_us(datetime.fromisoformat(text))


def local(zone: str, *args: int) -> int:
    return to_us(datetime(*args, tzinfo=ZoneInfo(zone)))  # type: ignore[misc]


# Instants anywhere in 2026, weighted towards the two days around a DST change.
instants = st.one_of(
    st.integers(*YEAR_2026),
    st.builds(lambda at, d: at + d, st.sampled_from(CHANGES), st.integers(-36 * H, 36 * H)),
)
local_days = st.builds(LocalDay, st.sampled_from(ZONES), st.sampled_from(DAY_STARTS))


# --- Berlin plant, day from 06:00 local ------------------------------------------------------


# Production days are named by the local date they start on, so the DST night
# belongs to the day that began on Saturday morning:
#
#   local  Sat 06:00 CET ......... Sun 02:00 -> 03:00 ......... Sun 06:00 CEST
#   UTC    Mar 28 05:00Z                 01:00Z                  Mar 29 04:00Z
#          [---------------- "2026-03-28", 23 h -----------------)
#
#   local  Sat 06:00 CEST ........ Sun 03:00 -> 02:00 ......... Sun 06:00 CET
#   UTC    Oct 24 04:00Z                 01:00Z                  Oct 25 05:00Z
#          [---------------- "2026-10-24", 25 h -----------------)
@pytest.mark.parametrize(
    ("at", "start", "end", "production_date", "hours"),
    [
        ("2026-03-28T04:59:59Z", "2026-03-27T05:00:00Z", "2026-03-28T05:00:00Z", "2026-03-27", 24),
        ("2026-03-28T05:00:00Z", "2026-03-28T05:00:00Z", "2026-03-29T04:00:00Z", "2026-03-28", 23),
        ("2026-03-29T01:30:00Z", "2026-03-28T05:00:00Z", "2026-03-29T04:00:00Z", "2026-03-28", 23),
        ("2026-03-29T04:00:00Z", "2026-03-29T04:00:00Z", "2026-03-30T04:00:00Z", "2026-03-29", 24),
        ("2026-10-24T04:00:00Z", "2026-10-24T04:00:00Z", "2026-10-25T05:00:00Z", "2026-10-24", 25),
        ("2026-10-25T04:59:59Z", "2026-10-24T04:00:00Z", "2026-10-25T05:00:00Z", "2026-10-24", 25),
        ("2026-10-25T05:00:00Z", "2026-10-25T05:00:00Z", "2026-10-26T05:00:00Z", "2026-10-25", 24),
    ],
)
def test_berlin_production_days_across_dst(
    at: str, start: str, end: str, production_date: str, hours: int
) -> None:
    day = LocalWindows(DAY_US, BERLIN_0600).containing(utc(at))
    assert day == Window(utc(start), utc(end), "1d", production_date)
    assert day.end_us - day.start_us == hours * H


def test_berlin_day_starts_at_0600_local_on_both_sides_of_dst() -> None:
    days = list(
        LocalWindows(DAY_US, BERLIN_0600).overlapping(
            utc("2026-03-27T12:00Z"), utc("2026-03-30T12:00Z")
        )
    )
    assert [d.start_us for d in days] == [
        local("Europe/Berlin", 2026, 3, day, 6) for day in (27, 28, 29, 30)
    ]
    assert [d.date for d in days] == ["2026-03-27", "2026-03-28", "2026-03-29", "2026-03-30"]


@pytest.mark.parametrize("night", ["2026-03-28T20:00Z", "2026-10-24T20:00Z"])
def test_berlin_hours_are_utc_hours_through_dst_nights(night: str) -> None:
    # Both passes through the repeated 02:00-03:00 of October are hours of their own.
    hours = list(LocalWindows(H, BERLIN_0600).overlapping(utc(night), utc(night) + 12 * H))
    assert [w.start_us for w in hours] == list(range(utc(night), utc(night) + 12 * H, H))
    assert all(w.end_us - w.start_us == H for w in hours)
    day = LocalWindows(DAY_US, BERLIN_0600)
    assert all(w.date == day.containing(w.start_us).date for w in hours)


def test_berlin_8h_windows_stretch_and_shrink_like_the_day() -> None:
    # 06-14-22 local: the night window holds the DST change (7 h in March, 9 h in October).
    eight = LocalWindows(8 * H, BERLIN_0600)
    march = eight.containing(utc("2026-03-29T01:00Z"))
    october = eight.containing(utc("2026-10-25T01:00Z"))
    assert (march.start_us, march.end_us) == (utc("2026-03-28T21:00Z"), utc("2026-03-29T04:00Z"))
    assert (october.start_us, october.end_us) == (
        utc("2026-10-24T20:00Z"),
        utc("2026-10-25T05:00Z"),
    )


def test_skipped_day_start_begins_the_day_when_the_clock_jumps() -> None:
    # Day start 02:30 does not exist on 2026-03-29 in Berlin; the day starts at the jump.
    day = LocalWindows(DAY_US, LocalDay("Europe/Berlin", time(2, 30)))
    assert day.containing(utc("2026-03-29T01:00Z")).start_us == utc("2026-03-29T01:00Z")
    assert day.containing(utc("2026-03-29T00:59:59Z")).date == "2026-03-28"


def test_repeated_day_start_begins_the_day_at_its_first_occurrence() -> None:
    day = LocalWindows(DAY_US, LocalDay("Europe/Berlin", time(2, 30)))
    window = day.containing(utc("2026-10-25T01:30Z"))  # the second 02:30
    assert (window.start_us, window.date) == (utc("2026-10-25T00:30Z"), "2026-10-25")
    assert window.end_us - window.start_us == 25 * H


# --- half-hour and 45-minute zones ---------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "size", "minute_past_utc_hour"),
    [
        ("Asia/Kolkata", H, 30),
        ("Asia/Kolkata", 30 * M, 0),
        ("Asia/Kolkata", 15 * M, 0),
        ("Asia/Kathmandu", H, 15),
        ("Asia/Kathmandu", 30 * M, 15),
        ("Asia/Kathmandu", 15 * M, 0),
        ("Australia/Adelaide", H, 30),
        ("Europe/Berlin", H, 0),
    ],
)
def test_windows_follow_local_hours_in_offset_zones(
    zone: str, size: int, minute_past_utc_hour: int
) -> None:
    # A whole year, both Adelaide DST changes included.
    windows = LocalWindows(size, LocalDay(zone))
    for window in windows.overlapping(*YEAR_2026):
        assert window.end_us - window.start_us == size
        assert window.start_us % min(size, 15 * M) == 0
        assert (window.start_us - minute_past_utc_hour * M) % size == 0


def test_kolkata_day_runs_from_local_midnight() -> None:
    day = LocalWindows(DAY_US, LocalDay("Asia/Kolkata")).containing(utc("2026-06-01T12:00Z"))
    assert (iso(day.start_us), iso(day.end_us)) == ("2026-05-31T18:30:00Z", "2026-06-01T18:30:00Z")
    assert day.date == "2026-06-01"


def test_half_hour_day_start_puts_hours_on_the_half_hour() -> None:
    hour = LocalWindows(H, LocalDay("Europe/Berlin", time(6, 30))).containing(
        utc("2026-06-01T12:00Z")
    )
    assert iso(hour.start_us) == "2026-06-01T11:30:00Z"


def test_lord_howe_30_minute_dst_change_gives_a_short_and_a_long_hour() -> None:
    hours = LocalWindows(H, LocalDay("Australia/Lord_Howe"))
    #   October: 02:00 +10:30 jumps to 02:30 +11  ->  [01:00, 02:00+02:30) is 1 h, [02:30, 03:00) 30 min
    spring = list(hours.overlapping(utc("2026-10-03T14:30Z"), utc("2026-10-03T17:00Z")))
    assert [(w.end_us - w.start_us) // M for w in spring] == [60, 30, 60]
    #   April: 02:00 +11 falls back to 01:30 +10:30  ->  01:00 until 02:00 (+10:30) is 90 min
    autumn = hours.containing(utc("2026-04-04T15:00Z"))
    assert (autumn.start_us, autumn.end_us) == (utc("2026-04-04T14:00Z"), utc("2026-04-04T15:30Z"))


# --- properties: every instant in exactly one window per size ------------------------------


def wall_us(zone: ZoneInfo, ts_us: int) -> int:
    """Local wall-clock time of the day, in us after midnight."""
    wall = datetime.fromtimestamp(ts_us // US, tz=UTC).astimezone(zone)
    return ((wall.hour * 60 + wall.minute) * 60 + wall.second) * US + ts_us % US


def offset_us(zone: ZoneInfo, ts_us: int) -> int:
    offset = datetime.fromtimestamp(ts_us // US, tz=UTC).astimezone(zone).utcoffset()
    assert offset is not None
    return int(offset.total_seconds()) * US


@cache
def shared(size_us: int, day: LocalDay) -> LocalWindows:
    """One instance per (size, day) across examples, to exercise its caches."""
    return LocalWindows(size_us, day)


@settings(max_examples=600, derandomize=True, deadline=None)
@given(day=local_days, size=st.sampled_from(SIZES), ts=instants)
def test_windows_tile_time_and_nest_in_the_day(day: LocalDay, size: int, ts: int) -> None:
    fresh = LocalWindows(size, day)
    window = fresh.containing(ts)
    assert window.start_us <= ts < window.end_us
    assert shared(size, day).containing(ts) == window
    # Neighbours abut, so every instant is in exactly one window.
    assert LocalWindows(size, day).containing(window.start_us) == window
    assert LocalWindows(size, day).containing(window.end_us - 1) == window
    assert LocalWindows(size, day).containing(window.end_us).start_us == window.end_us
    assert LocalWindows(size, day).containing(window.start_us - 1).end_us == window.start_us
    production_day = LocalWindows(DAY_US, day).containing(ts)
    assert production_day.start_us <= window.start_us < window.end_us <= production_day.end_us
    assert window.date == production_day.date
    assert (window.date is None) == (day == UTC_DAY)
    # A window starts where the clock shows day start plus a multiple of the size,
    # or where the clock jumps.
    zone = day.tz
    anchor = (day.day_start.hour * H + day.day_start.minute * M) % size
    on_grid = (wall_us(zone, window.start_us) - anchor) % size == 0
    assert on_grid or offset_us(zone, window.start_us - 1) != offset_us(zone, window.start_us)
    # Away from clock jumps, a window is exactly its size.
    edges = (window.start_us - 1, window.start_us, window.end_us - 1, window.end_us)
    if len({offset_us(zone, t) for t in edges}) == 1:
        assert window.end_us - window.start_us == size


@cache
def month_of(zone: str, size_us: int) -> tuple[list[int], list[Window]]:
    """October 2026 walked window by window (Europe and Australia change clocks)."""
    windows = list(
        LocalWindows(size_us, LocalDay(zone, time(6))).overlapping(
            utc("2026-10-01T00:00Z"), utc("2026-11-01T00:00Z")
        )
    )
    return [w.start_us for w in windows], windows


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    size=st.sampled_from((M, 15 * M, H, 8 * H, DAY_US)),
    ts=st.integers(utc("2026-10-01T00:00Z"), utc("2026-11-01T00:00Z") - 1),
)
def test_every_instant_of_a_month_lands_in_exactly_one_window(
    zone: str, size: int, ts: int
) -> None:
    starts, windows = month_of(zone, size)
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.end_us == b.start_us
    i = bisect_right(starts, ts) - 1
    holding = [w for w in windows[max(i - 1, 0) : i + 2] if w.start_us <= ts < w.end_us]
    assert holding == [windows[i]]


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    day=local_days,
    size=st.sampled_from(SIZES),
    start=instants,
    length=st.integers(1, 3 * DAY_US),
)
def test_overlapping_covers_a_range_without_gaps(
    day: LocalDay, size: int, start: int, length: int
) -> None:
    windows = list(LocalWindows(size, day).overlapping(start, start + length))
    assert windows[0].start_us <= start < windows[0].end_us
    assert windows[-1].start_us < start + length <= windows[-1].end_us
    for a, b in zip(windows, windows[1:], strict=False):
        assert a.end_us == b.start_us


# --- default: epoch alignment, byte for byte -----------------------------------------------


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    size=st.sampled_from((*SIZES, 90 * US, 7 * US, 7 * DAY_US)),
    ts=st.integers(0, to_us(datetime(2100, 1, 1, tzinfo=UTC))),
)
def test_default_local_day_is_epoch_alignment(size: int, ts: int) -> None:
    expected = TumblingWindows(size).containing(ts)
    assert WindowSet([size]).containing(ts) == [expected]
    assert WindowSet([size], local=UTC_DAY).containing(ts) == [expected]
    assert WindowSet([size], local=LocalDay()).containing(ts) == [expected]
    if DAY_US % size == 0:
        assert LocalWindows(size).containing(ts) == expected


def test_default_window_set_holds_tumbling_windows_only() -> None:
    windows = WindowSet([M, H, DAY_US], local=LocalDay("UTC", time(0)))
    assert all(type(t) is TumblingWindows for t in windows.tumbling)


def test_sizes_not_dividing_a_day_keep_epoch_alignment() -> None:
    for size in (7 * DAY_US, 2 * DAY_US, 7 * US, 7 * H):
        assert type(windows_of(size, BERLIN_0600)) is TumblingWindows
    assert type(windows_of(90 * US, BERLIN_0600)) is LocalWindows  # 960 per day


def test_undated_window_fields_are_unchanged() -> None:
    window = TumblingWindows(H).containing(utc("2026-03-29T01:30Z"))
    assert window.date is None
    assert window_fields(window) == {
        "window": "1h",
        "start": "2026-03-29T01:00:00Z",
        "end": "2026-03-29T02:00:00Z",
    }
    assert repr(window) == "Window(start_us=1774746000000000, end_us=1774749600000000, label='1h')"


def test_dated_window_fields_add_the_production_date_last() -> None:
    day = LocalWindows(DAY_US, BERLIN_0600).containing(utc("2026-10-25T01:30Z"))
    assert list(window_fields(day).items()) == [
        ("window", "1d"),
        ("start", "2026-10-24T04:00:00Z"),
        ("end", "2026-10-25T05:00:00Z"),
        ("date", "2026-10-24"),
    ]


def test_window_keeps_its_positional_constructor_and_hashes() -> None:
    undated, dated = Window(0, 10, "10s"), Window(0, 10, "10s", "1970-01-01")
    assert undated.date is None and undated != dated
    assert len({undated, dated, Window(0, 10, "10s")}) == 2
    assert sorted([Window(10, 20, "10s"), undated]) == [undated, Window(10, 20, "10s")]


# --- the window set ------------------------------------------------------------------------


def test_window_set_in_a_local_day_mixes_local_and_epoch_sizes() -> None:
    windows = WindowSet([H, DAY_US, 2 * DAY_US], local=BERLIN_0600)
    found = windows.containing(utc("2026-10-25T01:30Z"))
    assert [(w.label, iso(w.start_us), w.date) for w in found] == [
        ("1h", "2026-10-25T01:00:00Z", "2026-10-24"),
        ("1d", "2026-10-24T04:00:00Z", "2026-10-24"),
        ("2d", "2026-10-24T00:00:00Z", None),
    ]
    assert windows.labels == ["1h", "1d", "2d"]


def test_next_end_is_the_first_local_window_end() -> None:
    kolkata = WindowSet([H, DAY_US], local=LocalDay("Asia/Kolkata"))
    assert kolkata.next_end(utc("2026-06-01T10:10Z")) == utc("2026-06-01T10:30Z")
    berlin = WindowSet([DAY_US], local=BERLIN_0600)
    assert berlin.next_end(utc("2026-10-25T01:00Z")) == utc("2026-10-25T05:00Z")


def test_next_end_by_default_matches_the_epoch_tick() -> None:
    calendar = ShiftCalendar([Shift("early", time(6), time(14, 20))], "Europe/Berlin")
    windows = WindowSet([M, H], calendar)
    assert windows.next_end(utc("2026-06-01T12:10:30Z")) == utc("2026-06-01T12:11Z")
    assert windows.next_end(utc("2026-06-01T12:19:30Z")) == utc("2026-06-01T12:20Z")


# --- caching and validation ----------------------------------------------------------------


def test_consecutive_events_reuse_the_cached_window_and_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    computed: list[object] = []
    original = streams.local_windows._production_day

    def counting(local: LocalDay, on: object) -> object:
        computed.append(on)
        return original(local, on)  # type: ignore[arg-type]

    monkeypatch.setattr(streams.local_windows, "_production_day", counting)
    minutes = LocalWindows(M, LocalDay("Europe/Berlin", time(6, 15)))
    start = utc("2026-10-24T04:15Z")  # a 25-hour production day, one event a second
    first = minutes.containing(start)
    assert minutes.containing(start + US) is first
    seen = [minutes.containing(t) for t in range(start, start + 25 * H, US)]
    assert len({id(w) for w in seen}) == len(set(seen)) == 25 * 60
    assert len(computed) == 1


def test_invalid_local_days_and_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        LocalDay("Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="local clock time"):
        LocalDay("Europe/Berlin", time(6, tzinfo=UTC))
    with pytest.raises(ValueError, match="dividing a day"):
        LocalWindows(7 * DAY_US, BERLIN_0600)
    with pytest.raises(ValueError, match="must be > 0"):
        WindowSet([0], local=BERLIN_0600)


def test_local_day_is_hashable_and_compares_by_value() -> None:
    assert LocalDay("Europe/Berlin", time(6)) == BERLIN_0600
    assert len({BERLIN_0600, LocalDay("Europe/Berlin", time(6)), UTC_DAY}) == 2


@pytest.mark.parametrize(
    "module", [streams.windows, streams.tumbling, streams.local_windows], ids=lambda m: m.__name__
)
def test_doctest(module: ModuleType) -> None:
    result = doctest.testmod(module)
    assert result.failed == 0 and result.attempted > 0
