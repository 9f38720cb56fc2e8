"""The KPI engine: events in, closed-window records and alerts out.

Time is event time. The watermark is the largest event timestamp seen (or a
later instant a timer passes to `advance`); the frontier is the watermark
minus the allowed lateness. An event older than the frontier is late: it is
counted per source and reported, and changes nothing. A window closes when
its end is at or before the frontier; its records are then final.

    events      ...e(ts=100) ........ e(ts=160)
    watermark                              |160
    frontier (lateness 30)           |130
    1m windows  [60,120) closes at frontier >= 120; [120,180) still open

The engine never reads the clock; `advance(now)` is how a live worker lets a
silent plant's windows close.

Memory is bounded: an event that would make the engine hold more than
`max_machines` machines or `max_open_orders` open orders is refused. It
changes nothing (not even the watermark) and comes out in
`Output.rejected`; events of machines and orders already held apply as
usual. Whether an event is refused depends only on the state, so a replay
or a restored snapshot refuses the same events.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from streams.config import EngineConfig
from streams.events import event_to_json
from streams.machine import MachineTimeline, Segment
from streams.oee import OeeState
from streams.orders import OrderBook
from streams.pchart import PChart
from streams.perfect_order import OrderVerdict, PerfectOrderState
from streams.pointlog import PointLog
from streams.policies import Targets, order_rules
from streams.records import (
    chain_record,
    oee_record,
    oee_rollup,
    pchart_alert,
    pchart_record,
    perfect_order_record,
    series_key,
    silence_alert,
)
from streams.revisions import ChartHistory, ClosedWindow, MachineHistory
from streams.safety_stock import SafetyStock
from streams.seen import SeenIds, digest
from streams.timeutil import US, iso
from streams.windows import ShiftCalendar, Window, WindowSet, split_planned

MachineKey = tuple[str, str, str]  # site, line, machine
SegmentKey = tuple[str, str]  # direction, segment

REFUSALS = {
    "too_many_machines": ("machine-state",),
    "too_many_open_orders": ("orders", "shipments"),
    "too_late": ("machine-state", "orders", "shipments"),
    "past_timestamp": ("machine-state", "orders", "shipments"),
}
"""Why an event is refused (`Engine.ingest`) -> the sources whose events it can refuse."""


@dataclass
class Output:
    """What one step of the engine produced.

    `rejected`: refused events, each `{"reason", "error", "event"}` (the
    reason one of `REFUSALS`, the event its contract JSON). `dead_letters`:
    the worker's envelopes of them, `(input topic, reason, value)`.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[tuple[str, str, bytes]] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        self.records += other.records
        self.alerts += other.alerts
        self.rejected += other.rejected
        self.dead_letters += other.dead_letters


def add_marker(state: OeeState, seg: Segment) -> None:
    """Count a zero-length segment: units made, or a failure (a silence start adds nothing)."""
    if seg.units is not None:
        u = seg.units
        state.add_units(u.total, u.good, u.ideal_us, outside_running=u.outside_running)
    elif seg.failure_at_start:
        state.failures += 1


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


class Engine:
    """Incremental KPI computation over event-time windows."""

    def __init__(self, config: EngineConfig | None = None, *, auto_watermark: bool = True) -> None:
        """`auto_watermark`: events move the watermark (replay). A live worker
        sets it False and calls `advance` with the slowest input's progress."""
        self.config = config or EngineConfig()
        self.auto_watermark = auto_watermark
        c = self.config
        self.windows = c.window_set()
        self.lateness_us = c.us("allowed_lateness")
        self.silence_us = c.optional_us("silence_alert")
        self.modulus = c.counter_modulus
        self.hold_us = c.optional_us("state_hold_limit")
        self.past_us = c.optional_us("past_horizon")
        self.wall_us: int | None = None  # a live worker's clock: the past horizon's reference
        self._heartbeat: dict[str, int | None] = {}  # machine -> its heartbeat timeout
        self.horizon_us = c.us("revision_horizon")
        self.history: dict[str, MachineHistory] = {}  # machine -> attributed events kept
        self.closed: dict[Window, ClosedWindow] = {}  # closed windows a late event may revise
        self._late: set[str] = set()  # machines with late events waiting
        self.chart_history: dict[str, ChartHistory] = {}  # p-chart -> its points kept
        self.decided_memory_us = c.us("decided_memory")
        self.max_machines = c.max_machines
        self.max_open_orders = c.max_open_orders
        self._site_windows: dict[str, WindowSet] = {}  # site -> its machines' windows
        self._label_rank = {label: i for i, label in enumerate(self.windows.labels)}
        self._pchart_config = c.pchart.build()
        for site in c.sites:  # known from the start: the history floor must not depend
            self.site_windows(site)  # on which sites a restored engine has seen since

        self.machines: dict[str, MachineTimeline] = {}
        self.oee: dict[Window, dict[MachineKey, OeeState]] = defaultdict(dict)
        self.orders: dict[Window, dict[SegmentKey, PerfectOrderState]] = defaultdict(dict)
        self.book = OrderBook(c.us("decision_grace"), c.us("on_time_tolerance"), order_rules(c))
        self.book.keep_settled = bool(self.horizon_us)
        # Closed windows whose orders a late event reopened: republished at the next close.
        self._orders_revised: dict[Window, set[SegmentKey]] = defaultdict(set)
        self.targets = Targets(c)
        self.stock = SafetyStock(c)
        self.stock.keep_settled = bool(self.horizon_us)
        self.charts: dict[str, PChart] = {}
        self.seen = SeenIds()  # digests of the applied events' ids

        self.watermark_us: int | None = None
        self.closed_until_us: int | None = None
        self._next_close_us: int | None = None
        self.stats: Counter[str] = Counter()
        self.last_closed: dict[str, dict[str, Any]] = {}  # series -> its latest closed record

    # -- input ---------------------------------------------------------------
    @property
    def frontier_us(self) -> int | None:
        return None if self.watermark_us is None else self.watermark_us - self.lateness_us

    def ingest(self, event: Any, out: Output | None = None) -> str | None:
        """Apply one validated event. Returns why it was not applied: 'duplicate',
        'late', or a refusal (one of `REFUSALS`, also added to `out.rejected`)."""
        source = event.source
        self.stats[f"events.{source}"] += 1
        ts = event.ts_us
        past = self._past(ts)
        if past is not None:
            return self._refuse("past_timestamp", past, event, out)
        key = digest(source, event.event_id)
        if (key, ts) in self.seen:
            self.stats[f"duplicates.{source}"] += 1
            return "duplicate"
        frontier = self.frontier_us
        behind = frontier is not None and ts < frontier
        if behind:
            self.stats[f"late.{source}"] += 1
            if not self._revisable(ts):
                return self._refuse("too_late", self._too_late(ts), event, out)
        # An order-side event of a decided order reopens it if it changes the
        # verdict (a delivery reported after the decision, whatever its `ts`).
        if source != "machine-state" and (changes := self._reopen(event)) and behind:
            return self._refuse("too_late", changes, event, out)
        # Behind the attributed time: a revision. (Between it and the frontier
        # nothing is attributed yet, so the event simply takes its place.)
        late = self.closed_until_us is not None and ts < self.closed_until_us
        refusal = self._over_limit(event)
        if refusal is not None:
            return self._refuse(*refusal, event, out)
        self.seen.add(key, ts)
        if source == "machine-state":
            self._machine_event(event, ts, late=late)
        else:
            ignored = self.book.apply(event)
            if ignored:
                self.stats[f"ignored.{ignored}"] += 1
            if ignored is None or ignored == "stale_amendment":
                # A stale amendment may be the order's original version: demand.
                self.stock.order_event(event)
        if self.auto_watermark and (self.watermark_us is None or ts > self.watermark_us):
            self.watermark_us = ts
        return None

    def _reopen(self, event: Any) -> str | None:
        """Reopen the decided order an event changes; why not, if it cannot.

        An event of an open order is applied like any other, late or not:
        nothing of the order is published before its decision. One of a
        decided order stamped after the decision (a shipment's
        `delivered_at`, otherwise `ts`) changes nothing: the book ignores it.
        One before it reopens the order: its verdict leaves the windows it was
        counted in (republished at the next close) and the order is decided
        again with the event. Orders decided before the revision horizon are
        no longer kept: a late event is then refused, an on-time one ignored.
        """
        decided = self.book.decided.get(event.order_id)
        if decided is None:
            return None
        changes = self.book.changes_settled(event)
        if changes is False:
            return None
        floor = self._decision_floor()
        if changes and (floor is None or decided >= floor):  # its windows are still kept
            _, verdict = self.book.reopen(event.order_id)
            self.stats["orders_reopened"] += 1
            if verdict is not None:
                self._uncount_order(verdict)
            return None
        at = event.delivered_at_us if event.type == "shipment" else event.ts_us
        if at > decided:
            return None
        what = "delivered_at" if event.type == "shipment" else "ts"
        return (
            f"{what}: {iso(at)} is before the decision of order_id {event.order_id!r} at "
            f"{iso(decided)}, older than the revision horizon (engine.revision_horizon)"
        )

    def _uncount_order(self, verdict: OrderVerdict) -> None:
        """Take a reopened order's verdict out of the windows it was counted in."""
        key = (verdict.direction, verdict.segment)
        closed_until = self.closed_until_us
        for window in self.windows.containing(verdict.decided_us):
            if closed_until is not None and window.end_us <= closed_until:
                kept = self.closed.get(window)
                if kept is not None:
                    kept.add_order(verdict, -1)
                    self._orders_revised[window].add(key)
            elif (state := self.orders.get(window, {}).get(key)) is not None:
                state.add(verdict, -1)
        self.stock.undecided(verdict)
        self.stats[f"orders_decided.{verdict.how}"] -= 1  # counted again when decided again

    def _past(self, ts_us: int) -> str | None:
        """Why an event is older than the past horizon allows, if it is."""
        reference = self.watermark_us if self.watermark_us is not None else self.wall_us
        if self.past_us is None or reference is None or ts_us >= reference - self.past_us:
            return None
        what = "the newest event" if self.watermark_us is not None else "the receiving clock"
        return (
            f"ts: {iso(ts_us)} is {(reference - ts_us) / US / 86_400:,.1f} days behind {what} "
            f"({iso(reference)}); engine.past_horizon allows "
            f"{self.config.past_horizon}"
        )

    def _refuse(self, reason: str, error: str, event: Any, out: Output | None) -> str:
        self.stats[f"refused.{reason}"] += 1
        if out is not None:
            out.rejected.append({"reason": reason, "error": error, "event": event_to_json(event)})
        return reason

    def _revisable(self, ts_us: int) -> bool:
        """Whether an event this old still revises the windows it belongs to (before
        the first close nothing is published: any event still counts)."""
        if self.closed_until_us is None:
            return True
        return self.horizon_us > 0 and ts_us >= self._revision_floor()

    def _revision_floor(self) -> int:
        assert self.closed_until_us is not None
        return self.closed_until_us - self.horizon_us

    def _too_late(self, ts_us: int) -> str:
        frontier = self.frontier_us
        assert frontier is not None
        behind = (frontier - ts_us) / 1_000_000
        if self.horizon_us == 0 or self.closed_until_us is None:
            return f"ts: {behind:,.0f} s behind the frontier; only machine events are revised"
        floor = self._revision_floor()
        return (
            f"ts: {(floor - ts_us) / 1_000_000:,.0f} s older than the revision horizon "
            f"(engine.revision_horizon behind the closed windows); {behind:,.0f} s late"
        )

    def _over_limit(self, event: Any) -> tuple[str, str] | None:
        """(reason, message) when the event would make the state outgrow a limit."""
        if event.source == "machine-state":
            held, limit = len(self.machines), self.max_machines
            if held < limit or event.machine in self.machines:
                return None
            return "too_many_machines", (
                f"machine: {event.machine!r} would be machine {held + 1:,} held; "
                f"the limit is engine.max_machines = {limit:,}"
            )
        held, limit = len(self.book.open), self.max_open_orders
        if held < limit or not self.book.opens(event):
            return None
        return "too_many_open_orders", (
            f"order_id: {event.order_id!r} would be open order {held + 1:,} held; "
            f"the limit is engine.max_open_orders = {limit:,}"
        )

    def _machine_event(self, event: Any, ts: int, *, late: bool = False) -> None:
        timeline = self.machines.get(event.machine)
        if timeline is None:
            timeline = self.machines[event.machine] = MachineTimeline(
                event.site, event.line, event.machine
            )
            if self.horizon_us:
                base = MachineTimeline(event.site, event.line, event.machine)
                self.history[event.machine] = MachineHistory(base)
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
            self.history[event.machine].late.append(timeline.take_newest())
            self._late.add(event.machine)

    def _oee_state(self, window: Window, mkey: MachineKey) -> OeeState:
        states = self.oee[window]
        state = states.get(mkey)
        if state is None:
            state = states[mkey] = OeeState()
        return state

    def run(self, events: Iterable[Any]) -> Output:
        """Ingest events in order, advancing the watermark as they come."""
        out = Output()
        for event in events:
            if self.ingest(event, out) is None:
                out.extend(self.advance(self.watermark_us))  # type: ignore[arg-type]
        return out

    # -- time ----------------------------------------------------------------
    def advance(self, watermark_us: int) -> Output:
        """Move the watermark forward (never back) and close what is due."""
        if self.watermark_us is None or watermark_us > self.watermark_us:
            self.watermark_us = watermark_us
        frontier = self.frontier_us
        assert frontier is not None
        if self._next_close_us is not None and frontier < self._next_close_us:
            return Output()
        return self._close_until(frontier, final=False)

    def flush(self) -> Output:
        """End of input: attribute time up to the watermark and close every window."""
        if self.watermark_us is None:
            return Output()
        return self._close_until(self.watermark_us, final=True)

    def _close_until(self, frontier: int, *, final: bool) -> Output:
        out = Output()
        if self._late:
            self._revise(out)
        for timeline in self.machines.values():
            self._attribute(timeline, frontier, out, inclusive=final)
        # At the end of input a decision at the last instant is final too. Before
        # the first close no window has closed, so no decision needs moving up:
        # however far the first frontier is (a live worker's first batch can
        # span hours), each order lands in its own window, as in a replay.
        revised, self._orders_revised = self._orders_revised, defaultdict(set)
        decisions = self.book.decide(frontier + final, self._decision_floor(), self.closed_until_us)
        for verdict in decisions:
            self._count_order(verdict, revised)
        for window in sorted(revised, key=self._close_order):
            out.extend(self._republish_orders(window, revised[window]))
        stock_due = self.stock.due(frontier, final)
        due = sorted(
            {w for w in (*self.oee, *self.orders, *stock_due) if final or w.end_us <= frontier},
            key=lambda w: (w.end_us, w.start_us, self._label_rank[w.label]),
        )
        for window in due:
            out.extend(self._close_window(window))
        self.closed_until_us = frontier
        self._next_close_us = self._next_boundary(frontier)
        # Machine events are remembered while they can still come late (a
        # re-sent one must not count twice in a revision).
        self.seen.forget(frontier - self.horizon_us)
        self.seen.pack(frontier)
        if self.horizon_us:
            self._forget_history()
        self.book.forget_decided(frontier - self.decided_memory_us)
        if self.horizon_us:
            self.book.forget_settled(self._decision_floor())  # type: ignore[arg-type]
            self.stock.forget_settled(self.book.settled)
        return out

    def _next_boundary(self, frontier: int) -> int:
        """The first instant after the frontier at which any window ends."""
        sets = [self.windows, *self._site_windows.values()]
        return min(ws.next_end(frontier) for ws in sets)

    def site_windows(self, site: str) -> WindowSet:
        """The windows of a site's machines: its own local clock, or the plant's."""
        found = self._site_windows.get(site)
        if found is None:
            own = site in self.config.sites
            found = self._site_windows[site] = self.config.window_set(site) if own else self.windows
        return found

    # -- attribution ---------------------------------------------------------
    def heartbeat_us(self, timeline: MachineTimeline) -> int | None:
        """The machine's opt-in heartbeat timeout (None: states hold through silence)."""
        machine = timeline.machine
        if machine not in self._heartbeat:
            self._heartbeat[machine] = self.config.heartbeat_us(
                timeline.site, timeline.line, machine
            )
        return self._heartbeat[machine]

    def _attribute(
        self, timeline: MachineTimeline, until_us: int, out: Output, *, inclusive: bool = False
    ) -> None:
        mkey = (timeline.site, timeline.line, timeline.machine)
        history = self.history.get(timeline.machine)
        if history is not None:
            history.points.extend(timeline.due(until_us, inclusive=inclusive))
        segments = timeline.attribute(
            until_us,
            self.heartbeat_us(timeline),
            self.silence_us,
            inclusive=inclusive,
            modulus=self.modulus,
            hold_us=self.hold_us,
        )
        for segment in segments:
            self._add_segment(mkey, segment)
            if segment.silence_starts and self._in_shift(segment.start_us):
                out.alerts.append(silence_alert(*mkey, segment.start_us, timeline.last_seen_us))

    def _in_shift(self, ts_us: int) -> bool:
        calendar = self.windows.calendar
        return calendar is None or calendar.containing(ts_us) is not None

    def _add_segment(self, mkey: MachineKey, seg: Segment) -> None:
        self._spread(seg, self.site_windows(mkey[0]), lambda window: self._oee_state(window, mkey))

    def _spread(
        self, seg: Segment, windows: WindowSet, state_of: Callable[[Window], OeeState]
    ) -> None:
        """Add a segment to the state of each window it touches."""
        if seg.start_us == seg.end_us:  # a marker: only units and failures count
            if seg.units is not None or seg.failure_at_start:
                for window in windows.containing(seg.start_us):
                    add_marker(state_of(window), seg)
            return
        for start, end, bucket, reason in segment_pieces(seg, windows.calendar):
            for window in windows.overlapping(start, end):
                piece = min(end, window.end_us) - max(start, window.start_us)
                state_of(window).add_time(bucket, piece, reason)

    def _decision_floor(self) -> int | None:
        """The earliest time a decision is counted at; one before it is moved up.

        Without revisions, the first open window's start (`closed_until`);
        with them, the start of the oldest window a revision may still change.
        """
        if self.closed_until_us is None or not self.horizon_us:
            return self.closed_until_us
        return self._history_floor()

    def _count_order(self, verdict: OrderVerdict, revised: dict[Window, set[SegmentKey]]) -> None:
        """Count a decided order in its windows; a closed one is revised (`revised`)."""
        key = (verdict.direction, verdict.segment)
        closed_until = self.closed_until_us
        for window in self.windows.containing(verdict.decided_us):
            if closed_until is not None and window.end_us <= closed_until:
                kept = self.closed.get(window)
                if kept is None:  # closed with nothing in it: first published now
                    chain = window.label in self.config.chain_labels()
                    kept = self.closed[window] = ClosedWindow(orders={} if chain else None)
                    kept.revision = -1
                revised[window].add(kept.add_order(verdict))
                continue
            self.orders[window].setdefault(key, PerfectOrderState()).add(verdict)
        self.stock.decided(verdict)
        self.stats[f"orders_decided.{verdict.how}"] += 1

    # -- closing -------------------------------------------------------------
    def _close_window(self, window: Window) -> Output:
        out = Output()
        machines = self.oee.pop(window, {})
        orders = self.orders.pop(window, {})
        records, lines, sites = oee_rollup(window, machines)
        out.records += records
        if window.label == self.config.pchart_scrap_label():
            for (site, line), state in sorted(lines.items()):
                self._chart(
                    f"scrap/{site}/{line}", window, state.total - state.good, state.total, out
                )
        for (direction, segment), state in sorted(orders.items()):
            rule = self.book.rules.get(segment) if direction == "outbound" else None
            out.records.append(perfect_order_record(direction, segment, window, state, rule))
        if window.label == self.config.pchart_orders_label():
            for (direction, segment), state in sorted(orders.items()):
                chart = f"orders/{direction}/{segment}"
                self._chart(chart, window, state.decided - state.perfect, state.decided, out)
        by_direction: dict[str, PerfectOrderState] | None = None
        if window.label in self.config.chain_labels():
            by_direction = defaultdict(PerfectOrderState)
            for (direction, _), state in orders.items():
                by_direction[direction].merge(state)
            if machines or orders:
                plant = OeeState.merged(machines.values()).result()["oee"]
                out.records.append(
                    chain_record(window, by_direction["inbound"], by_direction["outbound"], plant)
                )
        if self.horizon_us and (machines or orders):
            self.closed[window] = ClosedWindow.of(lines, sites, by_direction, orders)
        out.alerts += self.targets.judge(window, out.records)
        if window.label == self.stock.label:
            out.records += self.stock.close(window)
        self.stats["windows_closed"] += 1
        self._published(out.records, 0)
        return out

    def _published(self, records: list[dict[str, Any]], revision: int) -> None:
        """Stamp records with their window's revision; keep each series' newest window."""
        for record in records:
            record["revision"] = revision
            series = series_key(record)
            latest = self.last_closed.get(series)
            if latest is None or latest["start"] <= record["start"]:
                self.last_closed[series] = record

    # -- revisions (see streams.revisions) -------------------------------------
    def _history_floor(self) -> int:
        """The earliest start of a window holding the revision floor.

        A window that holds a revisable event (at or after the floor) and
        starts before this one would hold the floor too: so every window a late
        event can change starts at or after it, and the history kept from it
        recomputes such a window whole.
        """
        floor = self._revision_floor()
        sets = [self.windows, *self._site_windows.values()]
        return min(w.start_us for ws in sets for w in ws.containing(floor))

    def _forget_history(self) -> None:
        """Fold events no late event can reach into each machine's base; drop old windows."""
        assert self.closed_until_us is not None
        floor = self._history_floor()
        for machine, history in self.history.items():
            first = history.points.first_us
            if first is not None and first < floor:
                heartbeat = self.heartbeat_us(self.machines[machine])
                history.fold(floor, heartbeat, self.modulus, self.hold_us)
        while self.closed:  # kept in closing order, which is end order
            oldest = next(iter(self.closed))
            if oldest.end_us > floor:
                break
            del self.closed[oldest]
        for history in self.chart_history.values():
            history.fold(floor, self._pchart_config)

    def _revise(self, out: Output) -> None:
        """Apply the waiting late events: recompute their machines, publish what changed."""
        closed_until = self.closed_until_us
        assert closed_until is not None
        revised: dict[Window, dict[MachineKey, OeeState]] = defaultdict(dict)
        for machine in sorted(self._late):
            timeline, history = self.machines[machine], self.history[machine]
            late, history.late = sorted(history.late), []
            heartbeat = self.heartbeat_us(timeline)
            kept = history.points.points()
            rules = (heartbeat, self.modulus, self.hold_us)
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
            windows = self.site_windows(timeline.site)
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
                kept = self.closed.get(window)
                if kept is None or window.start_us < since:
                    continue  # ended before the first late event: unchanged
                kept.revise(mkey, was, state)
                revised[window][mkey] = state
        self._late.clear()
        for window in sorted(
            revised, key=lambda w: (w.end_us, w.start_us, self._label_rank[w.label])
        ):
            out.extend(self._republish(window, revised[window]))

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
            self._spread(seg, windows, states.__getitem__)
        return states

    def _close_order(self, window: Window) -> tuple[int, int, int]:
        return (window.end_us, window.start_us, self._label_rank[window.label])

    def _republished(self, window: Window, kept: ClosedWindow, out: Output) -> None:
        """Finish a revision's records: the window's chain, targets, the revision."""
        if kept.orders is not None:
            plant = kept.plant().result()["oee"]
            inbound = kept.orders.get("inbound", PerfectOrderState())
            outbound = kept.orders.get("outbound", PerfectOrderState())
            out.records.append(chain_record(window, inbound, outbound, plant))
        out.alerts += self.targets.judge(window, out.records)
        self.stats["windows_revised"] += 1
        self._published(out.records, kept.revision)

    def _republish_orders(self, window: Window, keys: set[SegmentKey]) -> Output:
        """The order records of a closed window in which late orders were decided."""
        out = Output()
        kept = self.closed[window]
        kept.revision += 1
        for direction, segment in sorted(keys):
            rule = self.book.rules.get(segment) if direction == "outbound" else None
            state = kept.segments[direction, segment]
            out.records.append(perfect_order_record(direction, segment, window, state, rule))
        self._republished(window, kept, out)
        if window.label == self.config.pchart_orders_label():
            for direction, segment in sorted(keys):
                state = kept.segments[direction, segment]
                chart = f"orders/{direction}/{segment}"
                self._revise_chart(chart, window, state.decided - state.perfect, state.decided, out)
        return out

    def _republish(self, window: Window, machines: dict[MachineKey, OeeState]) -> Output:
        """The records of a closed window that late events changed, one revision up."""
        out = Output()
        kept = self.closed[window]
        kept.revision += 1
        for (site, line, machine), state in sorted(machines.items()):
            keys = {"site": site, "line": line, "machine": machine}
            out.records.append(oee_record("machine", keys, window, state))
        lines = {(m[0], m[1]): kept.line((m[0], m[1])) for m in machines}
        for (site, line), state in sorted(lines.items()):
            out.records.append(oee_record("line", {"site": site, "line": line}, window, state))
        for site in sorted({m[0] for m in machines}):
            out.records.append(oee_record("site", {"site": site}, window, kept.site(site)))
        self._republished(window, kept, out)
        if window.label == self.config.pchart_scrap_label():
            for (site, line), state in sorted(lines.items()):
                chart = f"scrap/{site}/{line}"
                self._revise_chart(chart, window, state.total - state.good, state.total, out)
        return out

    def _revise_chart(self, name: str, window: Window, d: int, n: int, out: Output) -> None:
        """Give a closed subgroup new counts; publish every point that changes with it."""
        history = self.chart_history.get(name)
        if history is None:  # the line's first data came late
            history = self.chart_history[name] = ChartHistory(PChart(self._pchart_config).to_dict())
        windows = [w for w, _, _ in history.points]
        before = dict(zip(windows, history.replay(self._pchart_config)[1], strict=True))
        history.put(window, d, n)
        chart, after = history.replay(self._pchart_config)
        self.charts[name] = chart
        for (w, _, _), new in zip(history.points, after, strict=True):
            if new is None or new == before.get(w):
                continue
            kept = self.closed.get(w)
            revision = 0
            if kept is not None:
                if w != window:
                    kept.revision += 1
                revision = kept.revision
            record = pchart_record(name, w, new)
            self._published([record], revision)
            out.records.append(record)
            if new.violations:
                out.alerts.append(pchart_alert(name, w, new))

    def _chart(self, name: str, window: Window, d: int, n: int, out: Output) -> None:
        chart = self.charts.get(name)
        if chart is None:
            chart = self.charts[name] = PChart(self._pchart_config)
        if self.horizon_us:
            history = self.chart_history.setdefault(name, ChartHistory(chart.to_dict()))
            history.points.append((window, d, n))
        point = chart.add(d, n)
        if point is None:
            return
        out.records.append(pchart_record(name, window, point))
        if point.violations:
            out.alerts.append(pchart_alert(name, window, point))
