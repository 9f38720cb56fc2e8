"""Epoch-aligned tumbling windows and the `Window` interval every kind of window yields.

A tumbling window of size s holds [k·s, (k + 1)·s) in microseconds since the
Unix epoch, so `1d` runs midnight to midnight UTC and every instant lands in
exactly one window per size. `Window` lives here, with the simplest windows,
so the local-clock windows (`streams.local_windows`) and the shift calendar
(`streams.shifts`) can build on it without importing `streams.windows`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from streams.timeutil import US, duration_label

DAY_US = 86_400 * US


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
