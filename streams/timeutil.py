"""Event time as integer microseconds since the Unix epoch (UTC).

Every duration the engine sums is an integer number of microseconds, so sums
are exact and associative: any split of a stream into chunks, merged in any
order, gives the same totals to the last digit. Seconds appear only at the
edges (records, metrics).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

US = 1_000_000
"""Microseconds per second."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(dt: datetime) -> int:
    """Aware datetime -> integer microseconds since the epoch."""
    try:
        return (dt - _EPOCH) // _ONE_US  # exact: timedelta // timedelta is integer arithmetic
    except TypeError:
        if isinstance(dt, datetime) and (dt.tzinfo is None or dt.utcoffset() is None):
            raise ValueError("naive datetime: a timezone offset is required") from None
        raise


def from_us(us: int) -> datetime:
    """Integer microseconds since the epoch -> aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def iso(us: int) -> str:
    """RFC 3339 text in UTC with a `Z` suffix, as the output records use."""
    text = from_us(us).isoformat()
    return text.replace("+00:00", "Z")


def seconds(us: int) -> float:
    """Microseconds -> float seconds (for records and metrics)."""
    return us / US


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration_us(text: str | int | float) -> int:
    """'90s', '5m', '1h', '1d', '1w' (or a number of seconds) -> microseconds.

    >>> parse_duration_us("5m")
    300000000
    >>> parse_duration_us(1.5)
    1500000
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"duration must be >= 0, got {text}")
        return round(text * US)
    raw = str(text).strip()
    if not raw:
        raise ValueError("empty duration")
    unit = raw[-1]
    if unit.isdigit():
        return parse_duration_us(float(raw))
    if unit not in _UNITS:
        raise ValueError(f"unknown duration unit {unit!r} in {raw!r} (use s, m, h, d, w)")
    try:
        value = float(raw[:-1])
    except ValueError:
        raise ValueError(f"not a duration: {raw!r}") from None
    if value < 0:
        raise ValueError(f"duration must be >= 0, got {raw!r}")
    return round(value * _UNITS[unit] * US)


def duration_label(us: int) -> str:
    """Microseconds -> the shortest exact label ('1m', '1h', '1d', '90s').

    >>> duration_label(3_600_000_000)
    '1h'
    """
    secs, rest = divmod(us, US)
    if rest:
        return f"{us / US}s"
    for unit in ("w", "d", "h", "m"):
        size = _UNITS[unit]
        if secs and secs % size == 0:
            return f"{secs // size}{unit}"
    return f"{secs}s"
