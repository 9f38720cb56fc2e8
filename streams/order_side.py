"""The engine's order side: decided orders counted in their windows, and
taken back out when a late event reopens them.

`OrderBook` says when an order is decided; here its verdict is counted in
the windows holding the decision time. A window already closed takes it as
a revision (republished at the next close). An event of a decided order
stamped before the decision reopens it (`Engine.ingest`): its verdict leaves
the windows it was counted in, and it counts once more when decided again,
so the records equal those of a run that got every event in time order:

    O expired at 10:00, counted in [10:00, 11:00), which closed
    a shipment of O delivered 09:30, read at 12:00: O reopened, uncounted
    next close: O decided again (complete, 09:30), counted in [09:00, 10:00);
                both windows republished, revision + 1

(within the revision horizon; see `reopen`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from streams.perfect_order import OrderVerdict, PerfectOrderState
from streams.publishing import Output
from streams.records import perfect_order_record
from streams.revisions import ClosedWindow, window_to_list
from streams.timeutil import iso
from streams.windows import Window

if TYPE_CHECKING:
    from streams.engine import Engine

SegmentKey = tuple[str, str]  # direction, segment


class OrderSide:
    """Counts an engine's decided orders; reopens one a late event changes.

    Its own state: the closed windows whose orders changed since the last
    close, waiting to be republished (`to_list` / `load` for a snapshot).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Closed windows whose orders a late event reopened: republished at the next close.
        self._revised: dict[Window, set[SegmentKey]] = defaultdict(set)

    def to_list(self) -> list[list[Any]]:
        """The windows waiting to be republished, as JSON-safe data."""
        return [
            [window_to_list(w), [list(k) for k in sorted(keys)]]
            for w, keys in self._revised.items()
        ]

    def load(self, data: list[list[Any]]) -> None:
        """Take back what `to_list` gave."""
        for w, keys in data:
            self._revised[Window(*w)] = {(k[0], k[1]) for k in keys}

    def decision_floor(self) -> int | None:
        """The earliest time a decision is counted at; one before it is moved up.

        Without revisions, the first open window's start (`closed_until`);
        with them, the start of the oldest window a revision may still change.
        """
        engine = self.engine
        if engine.closed_until_us is None or not engine.horizon_us:
            return engine.closed_until_us
        return engine.history_floor()

    def reopen(self, event: Any) -> str | None:
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
        book = self.engine.book
        decided = book.decided.get(event.order_id)
        if decided is None:
            return None
        changes = book.changes_settled(event)
        if changes is False:
            return None
        floor = self.decision_floor()
        if changes and (floor is None or decided >= floor):  # its windows are still kept
            _, verdict = book.reopen(event.order_id)
            self.engine.stats["orders_reopened"] += 1
            if verdict is not None:
                self._uncount(verdict)
            return None
        at = event.delivered_at_us if event.type == "shipment" else event.ts_us
        if at > decided:
            return None
        what = "delivered_at" if event.type == "shipment" else "ts"
        return (
            f"{what}: {iso(at)} is before the decision of order_id {event.order_id!r} at "
            f"{iso(decided)}, older than the revision horizon (engine.revision_horizon)"
        )

    def decide(self, frontier: int, final: bool, out: Output) -> None:
        """Count the orders decided before the frontier; republish the closed
        windows they, or the orders reopened since the last close, changed."""
        engine = self.engine
        # At the end of input a decision at the last instant is final too. Before
        # the first close no window has closed, so no decision needs moving up:
        # however far the first frontier is (a live worker's first batch can
        # span hours), each order lands in its own window, as in a replay.
        revised, self._revised = self._revised, defaultdict(set)
        decisions = engine.book.decide(
            frontier + final, self.decision_floor(), engine.closed_until_us
        )
        for verdict in decisions:
            self._count(verdict, revised)
        for window in sorted(revised, key=engine.closing_rank):
            out.extend(self._republish(window, revised[window]))

    def _count(self, verdict: OrderVerdict, revised: dict[Window, set[SegmentKey]]) -> None:
        """Count a decided order in its windows; a closed one is revised (`revised`)."""
        engine = self.engine
        key = (verdict.direction, verdict.segment)
        closed_until = engine.closed_until_us
        for window in engine.windows.containing(verdict.decided_us):
            if closed_until is not None and window.end_us <= closed_until:
                kept = engine.closed.get(window)
                if kept is None:  # closed with nothing in it: first published now
                    chain = window.label in engine.config.chain_labels()
                    kept = engine.closed[window] = ClosedWindow(orders={} if chain else None)
                    kept.revision = -1
                revised[window].add(kept.add_order(verdict))
                continue
            engine.orders[window].setdefault(key, PerfectOrderState()).add(verdict)
        engine.stock.decided(verdict)
        engine.stats[f"orders_decided.{verdict.how}"] += 1

    def _uncount(self, verdict: OrderVerdict) -> None:
        """Take a reopened order's verdict out of the windows it was counted in."""
        engine = self.engine
        key = (verdict.direction, verdict.segment)
        closed_until = engine.closed_until_us
        for window in engine.windows.containing(verdict.decided_us):
            if closed_until is not None and window.end_us <= closed_until:
                kept = engine.closed.get(window)
                if kept is not None:
                    kept.add_order(verdict, -1)
                    self._revised[window].add(key)
            elif (state := engine.orders.get(window, {}).get(key)) is not None:
                state.add(verdict, -1)
        engine.stock.undecided(verdict)
        engine.stats[f"orders_decided.{verdict.how}"] -= 1  # counted again when decided again

    def _republish(self, window: Window, keys: set[SegmentKey]) -> Output:
        """The order records of a closed window in which late orders were decided."""
        engine = self.engine
        out = Output()
        kept = engine.closed[window]
        kept.revision += 1
        for direction, segment in sorted(keys):
            rule = engine.book.rules.get(segment) if direction == "outbound" else None
            state = kept.segments[direction, segment]
            out.records.append(perfect_order_record(direction, segment, window, state, rule))
        engine.publisher.republished(window, kept, out)
        if window.label == engine.config.pchart_orders_label():
            for direction, segment in sorted(keys):
                state = kept.segments[direction, segment]
                chart = f"orders/{direction}/{segment}"
                engine.publisher.revise_chart(
                    chart, window, state.decided - state.perfect, state.decided, out
                )
        return out
