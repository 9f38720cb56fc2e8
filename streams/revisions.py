"""Late machine data revises closed windows.

A window's records are published when it closes, but they are not final
forever: a machine event up to `revision_horizon` behind the frontier (a
gateway delivering its store-and-forward backlog, a PLC clock that lagged)
is applied to the windows it belongs to, and every record it changes is
published again, same key, with its window's `revision` one higher:

    closed:    [00:00 ........ 01:00 ........ 02:00) ... frontier 04:00
    backlog:            01:10 ... 03:50  (one machine, delivered at 04:05)
    revised:   the machine's windows from the start of the earliest window
               holding 01:10, and the line, site and chain of those windows

How: each machine keeps the events it has attributed since a base (its
timeline as of the history floor, `MachineHistory`). A late event joins
them; the machine's time since the earliest affected window start is
computed again from the base, before and after, and the difference goes into
the kept line and site sums of the closed windows (`ClosedWindows`). The
cost is the machine's own events in the horizon, never the elapsed time, and
the records equal those of a run that got every event on time.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from streams.machine import MachineTimeline, Segment
from streams.oee import OeeState, pack, unpack
from streams.pchart import PChart, PChartConfig, PChartPoint
from streams.perfect_order import OrderVerdict, PerfectOrderState
from streams.pointlog import PointLog
from streams.windows import Window

LineKey = tuple[str, str]
SegmentKey = tuple[str, str]  # direction, segment


@dataclass(slots=True)
class MachineHistory:
    """A machine's attributed events since `base` (its timeline at the history floor)."""

    base: MachineTimeline
    points: PointLog = field(default_factory=PointLog)  # in event-time order, packed
    late: list[tuple[Any, ...]] = field(default_factory=list)  # waiting to be applied

    def replay(
        self,
        points: list[tuple[Any, ...]],
        until_us: int,
        heartbeat_us: int | None,
        modulus: int | None,
        hold_us: int | None = None,
    ) -> tuple[MachineTimeline, list[Segment]]:
        """The base run through `points` up to `until_us`: the timeline and its segments."""
        clone = MachineTimeline.from_dict(self.base.to_dict())
        clone.pending = sorted(points)
        segments = clone.attribute(until_us, heartbeat_us, None, modulus=modulus, hold_us=hold_us)
        return clone, list(segments)

    def fold(
        self,
        floor_us: int,
        heartbeat_us: int | None,
        modulus: int | None,
        hold_us: int | None = None,
    ) -> None:
        """Move the base up to `floor_us`: the points before it are forgotten."""
        first = self.points.first_us
        if first is None or first >= floor_us:
            return
        self.base.pending = self.points.take_before(floor_us)
        for _ in self.base.attribute(
            floor_us, heartbeat_us, None, modulus=modulus, hold_us=hold_us
        ):
            pass
        self.base.pending = []
        self.base.touched.clear()  # no snapshot looks at the base's slices

    def to_dict(self, packed: Any = None) -> dict[str, Any]:
        """JSON-safe data; `packed`, if given, stands for the points' base64
        (`PointLog.to_dict`)."""
        return {
            "base": self.base.to_dict(),
            "points": self.points.to_dict(packed),
            "late": [list(p) for p in self.late],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MachineHistory:
        return cls(
            MachineTimeline.from_dict(data["base"]),
            PointLog.from_dict(data["points"]),
            [tuple(p) for p in data["late"]],
        )


@dataclass
class ChartHistory:
    """A p-chart's subgroups since `base` (the chart's state before the first of them).

    A revised subgroup can change the points after it (the phase-I centre,
    the run rules), so the chart is computed again from the base.
    """

    base: dict[str, Any]
    points: list[tuple[Window, int, int]] = field(default_factory=list)

    def put(self, window: Window, d: int, n: int) -> None:
        """Set a subgroup's counts (a window with none yet takes its place in time)."""
        for i, (w, _, _) in enumerate(self.points):
            if w == window:
                self.points[i] = (window, d, n)
                return
            if w.start_us > window.start_us:
                self.points.insert(i, (window, d, n))
                return
        self.points.append((window, d, n))

    def replay(self, config: PChartConfig) -> tuple[PChart, list[PChartPoint | None]]:
        chart = PChart.from_dict(config, self.base)
        return chart, [chart.add(d, n) for _, d, n in self.points]

    def fold(self, floor_us: int, config: PChartConfig) -> None:
        """Forget the subgroups that end at or before `floor_us` into the base."""
        taken = 0
        while taken < len(self.points) and self.points[taken][0].end_us <= floor_us:
            taken += 1
        if taken:
            chart = PChart.from_dict(config, self.base)
            for _, d, n in self.points[:taken]:
                chart.add(d, n)
            self.base, self.points = chart.to_dict(), self.points[taken:]

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "points": [[window_to_list(w), d, n] for w, d, n in self.points]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChartHistory:
        return cls(data["base"], [(window_from_list(w), d, n) for w, d, n in data["points"]])


@dataclass
class ClosedWindow:
    """What a closed window's roll-ups need to be published again.

    The line and site sums are kept packed (`streams.oee.pack`): at 1,000
    lines a day of minute windows is 1.4 million of them.
    """

    lines: dict[LineKey, bytes | OeeState] = field(default_factory=dict)
    sites: dict[str, bytes | OeeState] = field(default_factory=dict)
    orders: dict[str, PerfectOrderState] | None = None  # by direction, chain windows only
    revision: int = 0
    segments: dict[SegmentKey, PerfectOrderState] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        lines: dict[LineKey, OeeState],
        sites: dict[str, OeeState],
        orders: dict[str, PerfectOrderState] | None,
        segments: dict[SegmentKey, PerfectOrderState] | None = None,
    ) -> ClosedWindow:
        return cls(
            {k: pack(s) for k, s in lines.items()},
            {k: pack(s) for k, s in sites.items()},
            orders,
            segments=dict(segments or {}),
        )

    def add_order(self, verdict: OrderVerdict, sign: int = 1) -> SegmentKey:
        """An order decided in this window after it closed (`sign=-1`: an order
        counted here reopened by a late event); returns its segment key."""
        key = (verdict.direction, verdict.segment)
        self.segments.setdefault(key, PerfectOrderState()).add(verdict, sign)
        if self.orders is not None:
            self.orders.setdefault(verdict.direction, PerfectOrderState()).add(verdict, sign)
        return key

    def line(self, key: LineKey) -> OeeState:
        return unpack(self.lines[key])

    def site(self, key: str) -> OeeState:
        return unpack(self.sites[key])

    def plant(self) -> OeeState:
        return OeeState.merged(map(unpack, self.sites.values()))

    def revise(self, machine: tuple[str, str, str], was: OeeState, now: OeeState) -> None:
        """A machine's part of the window went from `was` to `now`."""
        site, line = machine[0], machine[1]
        for table, key in ((self.lines, (site, line)), (self.sites, site)):
            old = table.get(key)  # type: ignore[call-overload]
            state = OeeState() if old is None else unpack(old)
            table[key] = pack(state.subtract(was).merge(now))  # type: ignore[index]

    def to_dict(self) -> dict[str, Any]:
        # Not kept between snapshots: the saved form of a day of windows made
        # a snapshotting worker's memory half as large again (bench (f)).
        return {
            "lines": [[list(k), _packed_to_json(s)] for k, s in self.lines.items()],
            "sites": [[k, _packed_to_json(s)] for k, s in self.sites.items()],
            "orders": None
            if self.orders is None
            else {k: s.to_dict() for k, s in self.orders.items()},
            "revision": self.revision,
            "segments": [[list(k), s.to_dict()] for k, s in self.segments.items()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClosedWindow:
        orders = data["orders"]
        return cls(
            {(k[0], k[1]): _packed_from_json(s) for k, s in data["lines"]},
            {k: _packed_from_json(s) for k, s in data["sites"]},
            None
            if orders is None
            else {k: PerfectOrderState.from_dict(s) for k, s in orders.items()},
            data["revision"],
            {(k[0], k[1]): PerfectOrderState.from_dict(s) for k, s in data.get("segments", [])},
        )


def _packed_to_json(packed: bytes | OeeState) -> str | dict[str, Any]:
    return base64.b64encode(packed).decode() if isinstance(packed, bytes) else packed.to_dict()


def _packed_from_json(data: str | dict[str, Any]) -> bytes | OeeState:
    return base64.b64decode(data) if isinstance(data, str) else pack(OeeState.from_dict(data))


def window_to_list(w: Window) -> list[Any]:
    """[start, end, label] and, for a window of a local production day, its date."""
    data: list[Any] = [w.start_us, w.end_us, w.label]
    if w.date is not None:
        data.append(w.date)
    return data


def window_from_list(data: list[Any]) -> Window:
    return Window(*data)
