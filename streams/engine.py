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
from typing import Any

from streams.config import EngineConfig
from streams.events import event_to_json
from streams.machine import MachineTimeline
from streams.machine_side import MachineKey, MachineSide
from streams.oee import OeeState
from streams.order_side import OrderSide, SegmentKey
from streams.orders import OrderBook
from streams.pchart import PChart
from streams.perfect_order import PerfectOrderState
from streams.policies import Targets, order_rules
from streams.publishing import Output, Publisher
from streams.revisions import ChartHistory, ClosedWindow, MachineHistory
from streams.safety_stock import SafetyStock
from streams.seen import SeenIds, digest
from streams.timeutil import US, iso
from streams.windows import Window, WindowSet

__all__ = ["REFUSALS", "Engine", "Output"]

REFUSALS = {
    "too_many_machines": ("machine-state",),
    "too_many_open_orders": ("orders", "shipments"),
    "too_late": ("machine-state", "orders", "shipments"),
    "past_timestamp": ("machine-state", "orders", "shipments"),
}
"""Why an event is refused (`Engine.ingest`) -> the sources whose events it can refuse."""
_EVENTS = {source: f"events.{source}" for source in ("machine-state", "orders", "shipments")}


class Engine:
    """Incremental KPI computation over event-time windows.

    The engine holds the state; its parts hold the logic of one path each
    (and the little state only they use): `machine_side` (machine events to
    OEE, late ones revised), `order_side` (decided orders counted, reopened
    ones taken back) and `publisher` (closing windows into records).
    """

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
        self.horizon_us = c.us("revision_horizon")
        self.history: dict[str, MachineHistory] = {}  # machine -> attributed events kept
        self.closed: dict[Window, ClosedWindow] = {}  # closed windows a late event may revise
        self.chart_history: dict[str, ChartHistory] = {}  # p-chart -> its points kept
        self.decided_memory_us = c.us("decided_memory")
        self.max_machines = c.max_machines
        self.max_open_orders = c.max_open_orders
        self._site_windows: dict[str, WindowSet] = {}  # site -> its machines' windows
        self._label_rank = {label: i for i, label in enumerate(self.windows.labels)}
        self.pchart_config = c.pchart.build()
        for site in c.sites:  # known from the start: the history floor must not depend
            self.site_windows(site)  # on which sites a restored engine has seen since

        self.machines: dict[str, MachineTimeline] = {}
        # slice -> generation: which slices of the machines' pending events a
        # worker's snapshot must write again (streams.snapshot_sections.Sliced)
        self.slice_versions: dict[int, int] = {}
        self.history_versions: dict[tuple[int, int], int] = {}  # (bucket, hour): as above
        self.oee: dict[Window, dict[MachineKey, OeeState]] = defaultdict(dict)
        self.orders: dict[Window, dict[SegmentKey, PerfectOrderState]] = defaultdict(dict)
        self.book = OrderBook(c.us("decision_grace"), c.us("on_time_tolerance"), order_rules(c))
        self.book.keep_settled = bool(self.horizon_us)
        self.targets = Targets(c)
        self.stock = SafetyStock(c)
        self.stock.keep_settled = bool(self.horizon_us)
        self.charts: dict[str, PChart] = {}
        self.seen = SeenIds()  # digests of the applied events' ids
        self.machine_side = MachineSide(self)
        self.order_side = OrderSide(self)
        self.publisher = Publisher(self)

        self.watermark_us: int | None = None
        self.closed_until_us: int | None = None
        self.next_close_us: int | None = None  # `advance` closes nothing before this frontier
        self.stats: Counter[str] = Counter()
        self.last_closed: dict[str, dict[str, Any]] = {}  # series -> its latest closed record

    @property
    def frontier_us(self) -> int | None:
        return None if self.watermark_us is None else self.watermark_us - self.lateness_us

    def ingest(self, event: Any, out: Output | None = None) -> str | None:
        """Apply one validated event. Returns why it was not applied: 'duplicate',
        'late', or a refusal (one of `REFUSALS`, also added to `out.rejected`)."""
        source = event.source
        self.stats[_EVENTS.get(source) or f"events.{source}"] += 1
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
        if source != "machine-state" and (changes := self.order_side.reopen(event)) and behind:
            return self._refuse("too_late", changes, event, out)
        # Behind the attributed time: a revision. (Between it and the frontier
        # nothing is attributed yet, so the event simply takes its place.)
        late = self.closed_until_us is not None and ts < self.closed_until_us
        refusal = self._over_limit(event)
        if refusal is not None:
            return self._refuse(*refusal, event, out)
        self.seen.add(key, ts)
        if source == "machine-state":
            self.machine_side.apply(event, ts, late=late)
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

    # -- time ----------------------------------------------------------------
    def advance(self, watermark_us: int) -> Output:
        """Move the watermark forward (never back) and close what is due."""
        if self.watermark_us is None or watermark_us > self.watermark_us:
            self.watermark_us = watermark_us
        frontier = self.frontier_us
        assert frontier is not None
        if self.next_close_us is not None and frontier < self.next_close_us:
            return Output()
        return self._close_until(frontier, final=False)

    def flush(self) -> Output:
        """End of input: attribute time up to the watermark and close every window."""
        if self.watermark_us is None:
            return Output()
        return self._close_until(self.watermark_us, final=True)

    def _close_until(self, frontier: int, *, final: bool) -> Output:
        out = Output()
        self.machine_side.revise(out)
        self.machine_side.attribute_all(frontier, out, inclusive=final)
        self.order_side.decide(frontier, final, out)
        stock_due = self.stock.due(frontier, final)
        due = sorted(
            {w for w in (*self.oee, *self.orders, *stock_due) if final or w.end_us <= frontier},
            key=self.closing_rank,
        )
        for window in due:
            out.extend(self.publisher.close_window(window))
        self.closed_until_us = frontier
        self.next_close_us = self._next_boundary(frontier)
        # Machine events are remembered while they can still come late (a
        # re-sent one must not count twice in a revision).
        self.seen.forget(frontier - self.horizon_us)
        self.seen.pack(frontier)
        if self.horizon_us:
            self._forget_history()
        self.book.forget_decided(frontier - self.decided_memory_us)
        if self.horizon_us:
            self.book.forget_settled(self.order_side.decision_floor())  # type: ignore[arg-type]
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

    # -- revisions (see streams.revisions) -------------------------------------
    def history_floor(self) -> int:
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
        floor = self.history_floor()
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
            history.fold(floor, self.pchart_config)

    def heartbeat_us(self, timeline: MachineTimeline) -> int | None:
        """The machine's opt-in heartbeat timeout (None: states hold through silence)."""
        return self.machine_side.heartbeat_us(timeline)

    def closing_rank(self, window: Window) -> tuple[int, int, int]:
        """Where a window comes in closing order: by end, start, then configured label order."""
        return (window.end_us, window.start_us, self._label_rank[window.label])
