"""Event-time clocks: the watermark that what the inputs sent allows.

The engine closes windows up to a watermark it is given (`Engine.advance`).
Where that watermark comes from is a policy of its own, kept here apart from
the engine and from Kafka, so that it can be tested on plain numbers:

- `IdleAdvanceClock`, a live worker's (`agents.pipeline.Shard`): the slowest
  input's progress, where an input read to its end and quiet for
  `idle_advance_after` moves on at the pace of the wall clock.
- `NewestEventClock`, `kpimon replay`'s: the newest event time applied. A
  file is read in order and has no other input to wait for.

Both answer `observe(source, ts_us, wall_us)`, `tick(wall_us, caught_up)`,
`watermark(wall_us)` and `to_dict()` / `from_dict()`. Their state is plain
numbers; wall time, like event time, always comes in as an argument.

A silent plant (06:00 = 1_000 s) whose two inputs are read to their end:

>>> clock = IdleAdvanceClock(idle_advance_after_us=30_000_000)
>>> clock.announce("orders:0", wall_us=0)
>>> clock.observe("machine-state:0", ts_us=1_000_000_000, wall_us=0)
>>> clock.watermark(wall_us=0) is None  # orders:0 never sent: it may bring older events
True
>>> clock.tick(40_000_000, {"machine-state:0": True, "orders:0": True})
>>> clock.watermark(wall_us=40_000_000)  # all quiet: event time follows the clock
1040000000
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class EventClock(Protocol):
    """What a driver (a worker's shard, replay) asks of an event-time clock."""

    def observe(self, source: str, ts_us: int | None, wall_us: int | None = None) -> None:
        """Events of input `source` were applied; the newest is stamped `ts_us`."""

    def tick(self, wall_us: int, caught_up: Mapping[str, bool]) -> None:
        """The wall clock reads `wall_us`; which inputs are read to their end."""

    def watermark(self, wall_us: int | None = None) -> int | None:
        """The watermark the inputs allow at `wall_us`; None: none yet."""

    def to_dict(self) -> dict[str, Any]:
        """The clock's state, for a snapshot."""


class IdleAdvanceClock:
    """A live worker's clock: the slowest input's progress.

    The watermark is the least, over input partitions (`source`s), of how
    far each has got in event time.
    - A partition with unread messages, or one that sent something in the
      last `idle_us` of wall time, has got as far as its newest event; one
      that never sent blocks the watermark until it is quiet that long.
    - A quiet partition (read to its end and silent for `idle_us`) is taken
      to move on at the pace of the clock from its newest event (or, if it
      never sent, from the first event the clock saw). So a burst on one
      input does not make the others' next events late, and a dead input
      cannot stop the watermark either.
    - When every input is quiet, everything there is has been read: event
      time follows the clock from the newest event on. An input that lags
      the others (transport delay) then needs `allowed_lateness` to cover
      that lag, or its next event is late.
    - An input's "read to its end" holds for `idle_us` of wall time after
      the tick that said so: an input no tick names for that long (its
      reader died and no worker took it over, as when the only ingest
      worker of a group is down: `worker.role`) holds the watermark again
      instead of moving on with the clock, so the windows wait for what it
      has not read.

    The watermark is recomputed from this state at each call and may be
    below one given before (a new input, a quiet one that sends again); the
    engine never moves its own back.
    """

    def __init__(self, idle_advance_after_us: int) -> None:
        self.idle_us = idle_advance_after_us
        self.sources: dict[str, list[int | None]] = {}  # source -> [newest ts, last wall]
        self.caught_up: dict[str, bool] = {}  # source -> per the latest tick
        self.told: dict[str, int] = {}  # source -> wall time of the latest tick naming it
        self.first_data: tuple[int, int] | None = None  # (event ts, wall) of the first event
        self.last_event_wall_us: int | None = None

    def announce(self, source: str, wall_us: int) -> None:
        """An input to wait for, known from `wall_us` on (its silence counts from then)."""
        self.sources.setdefault(source, [None, wall_us])

    def observe(self, source: str, ts_us: int | None, wall_us: int | None = None) -> None:
        """Events of `source` arrived at `wall_us`; the newest is stamped `ts_us`
        (None: no event). Called once per run of events, refused ones included:
        their time still shows the input's progress."""
        assert wall_us is not None, "a live clock needs the wall time of every event"
        progress = self.sources.setdefault(source, [None, wall_us])
        if ts_us is not None and (progress[0] is None or ts_us > progress[0]):
            progress[0] = ts_us
        progress[1] = wall_us
        self.last_event_wall_us = wall_us
        if self.first_data is None and ts_us is not None:
            self.first_data = (ts_us, wall_us)

    def tick(self, wall_us: int, caught_up: Mapping[str, bool]) -> None:
        """Which inputs have nothing more to read right now, at `wall_us`."""
        for source, up in caught_up.items():
            self.sources.setdefault(source, [None, wall_us])
            self.caught_up[source] = up
            self.told[source] = wall_us

    def watermark(self, wall_us: int | None = None) -> int | None:
        """The slowest input's progress at `wall_us`; None while an input that
        never sent may still bring older events."""
        assert wall_us is not None, "a live clock's watermark depends on the wall time"
        if not self.sources:
            return None
        holds: list[int] = []
        all_idle = True
        for source, (ts, seen) in self.sources.items():
            idle = (
                self.caught_up.get(source, False)
                and wall_us - seen >= self.idle_us  # type: ignore[operator]
                and source in self.told
                and wall_us - self.told[source] <= self.idle_us
            )
            all_idle = all_idle and idle
            if not idle:
                if ts is None:
                    return None  # an input that never sent may still bring older events
                holds.append(ts)
            elif ts is not None:
                # A quiet input is assumed to move on at the pace of the clock.
                holds.append(ts + (wall_us - seen))  # type: ignore[operator]
            elif self.first_data is not None:
                holds.append(self.first_data[0] + (wall_us - self.first_data[1]))
        if all_idle and self.last_event_wall_us is not None:
            # Everything read and quiet: event time follows the clock from the newest event on.
            newest = max((ts for ts, _ in self.sources.values() if ts is not None), default=None)
            if newest is None:
                return None
            return newest + (wall_us - self.last_event_wall_us)
        return min(holds) if holds else None

    def to_dict(self) -> dict[str, Any]:
        """The state as a snapshot holds it (these five keys, in this order).
        Shares the clock's containers: serialise it before the clock moves on."""
        return {
            "sources": self.sources,
            "caught_up": self.caught_up,
            "first_data": self.first_data,
            "last_event_wall_us": self.last_event_wall_us,
            "told": self.told,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], idle_advance_after_us: int) -> IdleAdvanceClock:
        """A clock from `to_dict()`'s keys, as JSON gave them back (other keys ignored)."""
        clock = cls(idle_advance_after_us)
        clock.sources = data["sources"]
        clock.caught_up = data["caught_up"]
        clock.first_data = tuple(data["first_data"]) if data["first_data"] else None  # type: ignore[assignment]
        clock.last_event_wall_us = data["last_event_wall_us"]
        # A snapshot from before `told`: every report stale until the next tick names it.
        clock.told = data.get("told", {})
        return clock


class NewestEventClock:
    """`kpimon replay`'s clock: the watermark is the newest event time observed.

    The driver observes only the events the engine applied (not duplicates,
    late or refused ones). Sources and wall time play no part.

    >>> clock = NewestEventClock()
    >>> for ts_us in (100, 160, 130):
    ...     clock.observe("machine-state", ts_us)
    >>> clock.watermark()
    160
    """

    def __init__(self, watermark_us: int | None = None) -> None:
        self.watermark_us = watermark_us

    def observe(self, source: str, ts_us: int | None, wall_us: int | None = None) -> None:
        if ts_us is not None and (self.watermark_us is None or ts_us > self.watermark_us):
            self.watermark_us = ts_us

    def tick(self, wall_us: int, caught_up: Mapping[str, bool]) -> None:
        """Nothing: the wall clock does not move a replay's event time."""

    def watermark(self, wall_us: int | None = None) -> int | None:
        return self.watermark_us

    def to_dict(self) -> dict[str, Any]:
        return {"watermark_us": self.watermark_us}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NewestEventClock:
        return cls(data["watermark_us"])
