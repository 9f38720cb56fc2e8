"""The engine's machine path: machine events to OEE time and units per window.

A machine event joins its machine's timeline (`MachineTimeline`); at each
close the timeline's time up to the frontier is attributed as segments
(running, idle, down, ... and zero-length markers for units and failures),
and each segment is spread over the windows it overlaps, split at shift
edges. A machine event behind the attributed time is late: it waits in its
machine's history and is applied as a revision at the next close, which
recomputes the machine from its history and republishes the closed windows
whose numbers changed (see `streams.revisions`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from streams.columnar import plain_sizes, spread_columns, spread_rows
from streams.machine import MachineTimeline, Segment
from streams.oee import OeeState
from streams.pointlog import PointLog
from streams.publishing import Output
from streams.records import oee_record, silence_alert
from streams.revisions import MachineHistory
from streams.timeline_columns import attribute_columns
from streams.windows import ShiftCalendar, Window, WindowSet, split_planned

if TYPE_CHECKING:
    from streams.engine import Engine

MachineKey = tuple[str, str, str]  # site, line, machine


def segment_pieces(
    seg: Segment, calendar: ShiftCalendar | None
) -> Iterator[tuple[int, int, str, str | None]]:
    """(start, end, bucket, reason) of a segment, split at shift edges.

    Outside shifts all time is planned downtime, except running: overtime
    production is production (its units count too).
    """
    for start, end, in_shift in split_planned(seg.start_us, seg.end_us, calendar):
        bucket = seg.bucket if in_shift or seg.bucket == "running" else "planned_stop"
        yield start, end, bucket, seg.reason if bucket == seg.bucket else None


def spread(seg: Segment, windows: WindowSet, state_of: Callable[[Window], OeeState]) -> None:
    """Add a segment to the state of each window it touches."""
    if seg.start_us == seg.end_us:  # a marker: only units and failures count
        if seg.units is not None or seg.failure_at_start:
            for window in windows.containing(seg.start_us):
                state_of(window).add(seg)
        return
    for start, end, bucket, reason in segment_pieces(seg, windows.calendar):
        for window in windows.overlapping(start, end):
            piece = min(end, window.end_us) - max(start, window.start_us)
            state_of(window).add_time(bucket, piece, reason)


class MachineSide:
    """Applies an engine's machine events, attributes them, revises late ones.

    Its own state: each machine's heartbeat timeout (a cache of the
    configuration) and the machines with late events waiting (`to_list` /
    `load` for a snapshot).
    """

    columnar_min = 256
    """A close with this many segments or more spreads them in columns: below,
    numpy's fixed cost per close is more than it saves."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._heartbeat: dict[str, int | None] = {}  # machine -> its heartbeat timeout
        self._late: set[str] = set()  # machines with late events waiting

    def to_list(self) -> list[str]:
        """The machines with late events waiting, as JSON-safe data."""
        return sorted(self._late)

    def load(self, data: list[str]) -> None:
        """Take back what `to_list` gave."""
        self._late = set(data)

    def apply(self, event: Any, ts: int, *, late: bool = False) -> None:
        """Add a machine event to its timeline (`late`: behind the attributed time)."""
        engine = self.engine
        timeline = engine.machines.get(event.machine)
        if timeline is None:
            timeline = engine.machines[event.machine] = MachineTimeline(
                event.site, event.line, event.machine
            )
            if engine.horizon_us:
                base = MachineTimeline(event.site, event.line, event.machine)
                engine.history[event.machine] = MachineHistory(base)
        if (timeline.site, timeline.line) != (event.site, event.line):
            timeline.site, timeline.line = event.site, event.line
            self._heartbeat.pop(event.machine, None)
        if event.type == "state":
            timeline.add(ts, event.state, event.reason)
        elif event.type == "count":
            ideal_us = round(event.ideal_cycle_s * event.total * 1_000_000)
            timeline.add_count(ts, event.product, event.total, event.good, ideal_us)
        else:
            timeline.add_counter(ts, event.product, event.total, event.good, event.ideal_cycle_s)
        if late:  # behind the frontier: kept apart, applied as a revision at the next step
            engine.history[event.machine].late.append(timeline.take_newest())
            self._late.add(event.machine)

    def heartbeat_us(self, timeline: MachineTimeline) -> int | None:
        """The machine's opt-in heartbeat timeout (None: states hold through silence)."""
        machine = timeline.machine
        if machine not in self._heartbeat:
            self._heartbeat[machine] = self.engine.config.heartbeat_us(
                timeline.site, timeline.line, machine
            )
        return self._heartbeat[machine]

    def attribute(
        self, timeline: MachineTimeline, until_us: int, out: Output, *, inclusive: bool = False
    ) -> None:
        """Spread a machine's time up to `until_us` over its open windows."""
        mkey = (timeline.site, timeline.line, timeline.machine)
        windows = self.engine.site_windows(mkey[0])
        for segment in self._segments(timeline, until_us, out, inclusive):
            spread(segment, windows, lambda window: self._oee_state(window, mkey))

    def attribute_all(self, until_us: int, out: Output, *, inclusive: bool = False) -> None:
        """`attribute` every machine. A close with `columnar_min` due points or
        more is attributed and spread in numpy columns (`streams.timeline_columns`,
        `streams.columnar`), with the same result."""
        engine = self.engine
        timelines = list(engine.machines.values())
        mkeys = [(t.site, t.line, t.machine) for t in timelines]
        plain = plain_sizes(engine.windows)
        if plain is not None and any(
            engine.site_windows(k[0]) is not engine.windows for k in mkeys
        ):
            plain = None
        if (
            plain is not None
            and self._due(timelines, until_us, inclusive) >= self.columnar_min
            and self._attribute_columns(timelines, mkeys, plain, until_us, out, inclusive)
        ):
            return
        segments: list[tuple[int, Segment]] = []
        for m, timeline in enumerate(timelines):
            segments += ((m, seg) for seg in self._segments(timeline, until_us, out, inclusive))
        big = len(segments) >= self.columnar_min
        if (
            plain is not None
            and big
            and spread_columns(segments, mkeys, plain, self.engine.oee.__getitem__)
        ):
            return
        for m, segment in segments:
            mkey = mkeys[m]
            windows = engine.site_windows(mkey[0])
            spread(segment, windows, lambda window, mkey=mkey: self._oee_state(window, mkey))

    def _due(self, timelines: list[MachineTimeline], until_us: int, inclusive: bool) -> int:
        """How many points an attribution up to `until_us` takes (at least)."""
        return sum(len(t.due(until_us, inclusive=inclusive)) for t in timelines)

    def _attribute_columns(
        self,
        timelines: list[MachineTimeline],
        mkeys: list[MachineKey],
        sizes: tuple[tuple[int, str], ...],
        until_us: int,
        out: Output,
        inclusive: bool,
    ) -> bool:
        """The close in columns; False, having changed nothing, when it is out of range."""
        engine = self.engine
        rows = attribute_columns(
            timelines,
            [self.heartbeat_us(t) for t in timelines],
            until_us,
            inclusive=inclusive,
            silence_us=engine.silence_us,
            modulus=engine.modulus,
            hold_us=engine.hold_us,
        )
        if rows is None or not spread_rows(
            rows.times, rows.markers, rows.reason_names, mkeys, sizes, self.engine.oee.__getitem__
        ):
            return False
        for m, points, _ in rows.taken:
            history = engine.history.get(timelines[m].machine)
            if history is not None:
                history.points.extend(points)
        rows.commit(timelines)
        for m, start_us in rows.silences:
            if self._in_shift(start_us):
                alert = silence_alert(*mkeys[m], start_us, timelines[m].last_seen_us)
                out.alerts.append(alert)
        return True

    def _segments(
        self, timeline: MachineTimeline, until_us: int, out: Output, inclusive: bool
    ) -> list[Segment]:
        """A machine's segments up to `until_us`, kept in its history; silence alerts to `out`."""
        engine = self.engine
        history = engine.history.get(timeline.machine)
        if history is not None:
            history.points.extend(timeline.due(until_us, inclusive=inclusive))
        segments = list(
            timeline.attribute(
                until_us,
                self.heartbeat_us(timeline),
                engine.silence_us,
                inclusive=inclusive,
                modulus=engine.modulus,
                hold_us=engine.hold_us,
            )
        )
        mkey = (timeline.site, timeline.line, timeline.machine)
        for segment in segments:
            if segment.silence_starts and self._in_shift(segment.start_us):
                out.alerts.append(silence_alert(*mkey, segment.start_us, timeline.last_seen_us))
        return segments

    def _in_shift(self, ts_us: int) -> bool:
        calendar = self.engine.windows.calendar
        return calendar is None or calendar.containing(ts_us) is not None

    def _oee_state(self, window: Window, mkey: MachineKey) -> OeeState:
        states = self.engine.oee[window]
        state = states.get(mkey)
        if state is None:
            state = states[mkey] = OeeState()
        return state

    def revise(self, out: Output) -> None:
        """Apply the waiting late events: recompute their machines, publish what changed."""
        if not self._late:
            return
        engine = self.engine
        revised: dict[Window, dict[MachineKey, OeeState]] = defaultdict(dict)
        for machine in sorted(self._late):
            self._revise_machine(machine, revised)
        self._late.clear()
        for window in sorted(revised, key=engine.closing_rank):
            out.extend(self._republish(window, revised[window]))

    def _revise_machine(
        self, machine: str, revised: dict[Window, dict[MachineKey, OeeState]]
    ) -> None:
        """Replay a machine with its late events; the closed windows it changes go in `revised`."""
        engine = self.engine
        closed_until = engine.closed_until_us
        assert closed_until is not None
        timeline, history = engine.machines[machine], engine.history[machine]
        late, history.late = sorted(history.late), []
        heartbeat = self.heartbeat_us(timeline)
        kept = history.points.points()
        rules = (heartbeat, engine.modulus, engine.hold_us)
        _, before = history.replay(kept, closed_until, *rules)
        points = sorted(kept + late)
        after, segments = history.replay(points, closed_until, *rules)
        history.points = PointLog.of(points)
        for name in ("frontier_us", "state", "reason", "last_seen_us", "counters"):
            setattr(timeline, name, getattr(after, name))
        timeline.resets, timeline.wraps = after.resets, after.wraps
        mkey = (timeline.site, timeline.line, timeline.machine)
        # Nothing before the first late event changes; a closed window that
        # holds it is computed whole from its start, an open one by difference.
        first = late[0][0]
        windows = engine.site_windows(timeline.site)
        held = windows.containing(first)
        since = min([first] + [w.start_us for w in held if w.end_us <= closed_until])
        old = self._window_states(before, since, windows)
        new = self._window_states(segments, since, windows)
        for window in sorted(old.keys() | new.keys()):
            was, state = old.get(window, OeeState()), new.get(window, OeeState())
            if state == was:
                continue
            if window.end_us > closed_until:  # still open: add the difference
                self._oee_state(window, mkey).subtract(was).merge(state)
                continue
            closed = engine.closed.get(window)
            if closed is None or window.start_us < since:
                continue  # ended before the first late event: unchanged
            closed.revise(mkey, was, state)
            revised[window][mkey] = state

    def _window_states(
        self, segments: list[Segment], since_us: int, windows: WindowSet
    ) -> dict[Window, OeeState]:
        """Per window, what the segments from `since_us` on add to it."""
        states: dict[Window, OeeState] = defaultdict(OeeState)
        for seg in segments:
            if seg.end_us < since_us or (seg.end_us == since_us and seg.start_us < since_us):
                continue
            if seg.start_us < since_us:
                seg = Segment(since_us, seg.end_us, seg.bucket, seg.reason)
            spread(seg, windows, states.__getitem__)
        return states

    def _republish(self, window: Window, machines: dict[MachineKey, OeeState]) -> Output:
        """The records of a closed window that late events changed, one revision up."""
        engine = self.engine
        out = Output()
        kept = engine.closed[window]
        kept.revision += 1
        for (site, line, machine), state in sorted(machines.items()):
            keys = {"site": site, "line": line, "machine": machine}
            out.records.append(oee_record("machine", keys, window, state))
        lines = {(m[0], m[1]): kept.line((m[0], m[1])) for m in machines}
        for (site, line), state in sorted(lines.items()):
            out.records.append(oee_record("line", {"site": site, "line": line}, window, state))
        for site in sorted({m[0] for m in machines}):
            out.records.append(oee_record("site", {"site": site}, window, kept.site(site)))
        engine.publisher.republished(window, kept, out)
        if window.label == engine.config.pchart_scrap_label():
            for (site, line), state in sorted(lines.items()):
                chart = f"scrap/{site}/{line}"
                engine.publisher.revise_chart(
                    chart, window, state.total - state.good, state.total, out
                )
        return out
