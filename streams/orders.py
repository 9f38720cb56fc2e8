"""Open orders and the moment each one is decided.

An order is decided at the earliest of:
- complete: the delivery that brings every line to its ordered quantity
  (time: that delivery's `delivered_at`);
- closed: an `order_closed` event (time: its `ts`);
- cancelled: an `order_cancelled` event (time: its `ts`), strictly before
  every other decision (at the same instant the other one stands);
- expired: `promised_at + grace` while still open (time: that instant).

A cancelled order is excluded (no verdict, as if it never was) when
nothing was shipped by the cancellation and it came at or before the
order's deadline (`promised_at` + on-time tolerance), or when the order
itself was never seen. Otherwise it is judged like a short close at the cancellation: not in
full, fill rates from what was delivered by then, and on time only if it
came by the deadline (and something arrived, all of it on time). So
cancelling a late or part-shipped order cannot hide it. "Shipped" means any
shipment of the order delivered at or before the cancellation, whatever its
quantities: the judgement counts every such shipment (on time, documents,
damage), so none may be dropped by cancelling.

A decision at time T is final only once the engine's frontier (watermark
minus allowed lateness) has passed T: until then an earlier delivery may
still arrive. Deliveries up to T are judged; later ones are counted as
arriving after the decision and change nothing. A cancellation is kept on
the open order until then (not applied on arrival), so a shipment or the
order itself read after it, within the allowed lateness, counts as in the
time-ordered stream.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from streams.open_order import OpenOrder, OrderRule, Shipment
from streams.perfect_order import OrderVerdict
from streams.pointlog import HOUR_US

__all__ = ["OpenOrder", "OrderBook", "OrderRule", "Shipment"]

BUCKET_ORDERS = 256
"""Orders opened into one snapshot bucket (`OrderBook.open_bucket`)."""


def settled_row(entry: tuple[OpenOrder, OrderVerdict | None]) -> list[Any]:
    """A settled order (the order, its verdict or None if excluded) as a snapshot keeps it."""
    order, verdict = entry
    return [order.to_dict(), None if verdict is None else verdict.to_dict()]


def settled_bucket(entry: tuple[OpenOrder, OrderVerdict | None]) -> int:
    """The snapshot bucket of a settled order: the hour of its decision (of the
    cancellation that excluded it). Orders settle, and are dropped, mostly in
    time order, so a snapshot makes the newest hour's bucket again and the
    oldest's, not every hour's of the revision horizon."""
    order, verdict = entry
    at = verdict.decided_us if verdict is not None else order.cancelled_us or 0
    return at // HOUR_US


class OrderBook:
    """Open orders keyed by order id, with a heap of decision candidates.

    An order is open (held in `open`) from the first event of its id (the
    order, or a shipment, closing or cancellation that came first: it waits
    for the order) until it is decided, a cancellation included; a decided
    id is then only remembered in `decided` for `decided_memory`. A
    cancellation never opens one in the sense of `opens` (it is never
    refused), but it holds its id in `open` until the frontier passes it.
    """

    def __init__(
        self, grace_us: int, tolerance_us: int, rules: Mapping[str, OrderRule] | None = None
    ) -> None:
        """`rules`: per segment, applied to outbound (customer) orders only."""
        self.grace_us = grace_us
        self.tolerance_us = tolerance_us
        self.rules = dict(rules or {})
        self.open: dict[str, OpenOrder] = {}
        # Snapshot buckets of open orders (`OpenOrder.bucket`) added, changed or
        # removed since a worker's snapshot last looked, and each bucket's
        # version: a snapshot makes only those buckets again.
        self.touched: set[int] = set()
        self.versions: dict[int, int] = {}
        self.opened = 0  # orders put in a bucket so far, in this process
        self.decided: dict[str, int] = {}  # order id -> decision time
        # Decided orders a late event may still change (the engine's revision
        # horizon): id -> (the order, its verdict or None if excluded).
        self.settled: dict[str, tuple[OpenOrder, OrderVerdict | None]] = {}
        # Snapshot buckets (`settled_bucket`) of settled orders added or dropped
        # since a worker's snapshot last looked, and their versions.
        self.settled_touched: set[int] = set()
        self.settled_versions: dict[int, int] = {}
        self.keep_settled = False
        self.ignored: Counter[str] = Counter()
        self._heap: list[tuple[int, str]] = []

    def to_dict(self, *, lazy: bool = False) -> dict[str, Any]:
        """The book's state as JSON-safe data (a snapshot's); `load` takes it
        back. `lazy` leaves the open and the settled orders out
        (`streams.snapshot` adds them lazily)."""
        return {
            **({} if lazy else {"open": [o.to_dict() for o in self.open.values()]}),
            "decided": list(self.decided.items()),
            "ignored": dict(self.ignored),
            **({} if lazy else {"settled": [settled_row(e) for e in self.settled.values()]}),
        }

    def load(self, data: dict[str, Any]) -> None:
        """Take back the state `to_dict` gave (`settled` is absent before revisions)."""
        self.open = {o["order_id"]: OpenOrder.from_dict(o) for o in data["open"]}
        self.opened = 0
        for order in self.open.values():
            order.bucket = self.open_bucket()
        self.decided = dict((k, v) for k, v in data["decided"])
        self.ignored = Counter(data["ignored"])
        # Not in the data (an older snapshot's "heap" is not read): every open
        # order with a decision has an entry for it in the heap (`apply` and
        # `reopen` see to that), and entries of decisions since moved change
        # nothing when they come up, so the heap is rebuilt from the orders.
        self._heap = [
            (found[0], oid)
            for oid, order in self.open.items()
            if (found := order.decision(self.grace_us)) is not None
        ]
        heapq.heapify(self._heap)
        for o, v in data.get("settled", []):
            order = OpenOrder.from_dict(o)
            verdict = None if v is None else OrderVerdict(**{**v, "skus": tuple(v["skus"])})
            self.settled[order.order_id] = (order, verdict)

    def open_bucket(self) -> int:
        """The snapshot bucket of an order opened (or reopened) now: orders by
        the order they opened in, `BUCKET_ORDERS` a bucket. The events of a
        plant come mostly for orders opened lately, so a snapshot makes those
        few buckets again, not (as buckets by a hash of the id would) all."""
        bucket = self.opened // BUCKET_ORDERS
        self.opened += 1
        return bucket

    def opens(self, event: Any) -> bool:
        """Whether `apply` would add an open order: an order id neither open nor
        decided, by any event but a cancellation (never refused: it settles the
        id once the frontier passes it)."""
        oid = event.order_id
        return oid not in self.open and oid not in self.decided and event.type != "order_cancelled"

    def apply(self, event: Any) -> str | None:
        """Apply an orders or shipments event; returns why it was ignored, if it was."""
        oid = event.order_id
        if oid in self.decided:
            self.ignored[f"{event.type}_after_decision"] += 1
            return f"{event.type}_after_decision"
        order = self.open.get(oid)
        if order is None:
            order = self.open[oid] = OpenOrder(oid, bucket=self.open_bucket())
        self.touched.add(order.bucket)
        if event.type in ("order", "order_cancelled") and (
            (found := order.decision(self.grace_us)) is not None
            and (
                event.ts_us > found[0]
                # A cancellation at the decision instant changes nothing either.
                or (event.type == "order_cancelled" and event.ts_us == found[0])
            )
        ):
            # Stamped after the order's decision as the data stand: the decision
            # stands, whether this is read before the close that makes it final
            # (a live worker reads order partitions ahead) or after it.
            self.ignored[f"{event.type}_after_decision"] += 1
            return f"{event.type}_after_decision"
        if event.type == "order":
            ts = event.ts_us
            order.created_us = ts if order.created_us is None else min(order.created_us, ts)
            if order.amended_us is not None and ts < order.amended_us:
                self.ignored["stale_amendment"] += 1
                return "stale_amendment"  # an older version arriving late
            order.amended_us = ts
            order.direction, order.segment, order.partner = (
                event.direction,
                event.segment,
                event.partner,
            )
            order.promised_us = event.promised_at_us
            order.lines = {line.line_no: float(line.qty) for line in event.lines}
            order.skus = {line.line_no: line.sku for line in event.lines}
        elif event.type == "shipment":
            items = [
                (line.line_no, float(line.qty), float(line.damaged_qty)) for line in event.lines
            ]
            order.shipments.append((event.delivered_at_us, event.documents_ok, items))
        elif event.type == "order_closed":
            order.closed_us = (
                event.ts_us if order.closed_us is None else min(order.closed_us, event.ts_us)
            )
        elif event.type == "order_cancelled":
            # Kept, not applied yet: whether it excludes the order or decides
            # it depends on shipments that may still arrive (see `decide`).
            order.cancelled_us = (
                event.ts_us if order.cancelled_us is None else min(order.cancelled_us, event.ts_us)
            )
        if (found := order.decision(self.grace_us)) is not None:
            heapq.heappush(self._heap, (found[0], oid))
        return None

    def decide(
        self, frontier_us: int, floor_us: int | None, moved_to_us: int | None = None
    ) -> list[OrderVerdict]:
        """Orders whose decision time is before the frontier, in time order.

        A decision time before `floor_us` (the oldest window that can still
        take it; e.g. an order that arrived long after its grace ran out) is
        moved up to `moved_to_us` (default `floor_us`), a window still open. A cancelled order that
        is excluded (`OpenOrder.excluded`) leaves without a verdict, counted
        in `ignored` by the reason.
        """
        verdicts: list[OrderVerdict] = []
        while self._heap and self._heap[0][0] < frontier_us:
            _, oid = heapq.heappop(self._heap)
            order = self.open.get(oid)
            if order is None:
                continue
            found = order.decision(self.grace_us)
            if found is None or found[0] >= frontier_us:
                continue  # the candidate moved (an amendment); a newer entry waits
            counted_at = found[0]
            if floor_us is not None and counted_at < floor_us:
                counted_at = floor_us if moved_to_us is None else moved_to_us
            if found[1] == "cancelled" and (reason := order.excluded(self.tolerance_us)):
                del self.open[oid]
                self.touched.add(order.bucket)
                self.decided[oid] = counted_at
                if self.keep_settled:
                    self._settle(oid, (order, None))
                self.ignored[reason] += 1
                continue
            rule = self.rules.get(order.segment or "") if order.direction == "outbound" else None
            verdict = order.judge(found[0], found[1], self.tolerance_us, rule)
            if counted_at != found[0]:
                # Judged at its true decision time, counted in the first open window.
                verdict = replace(verdict, decided_us=counted_at)
            verdicts.append(verdict)
            del self.open[oid]
            self.touched.add(order.bucket)
            self.decided[oid] = verdict.decided_us
            if self.keep_settled:
                self._settle(oid, (order, verdict))
        verdicts.sort(key=lambda v: (v.decided_us, v.order_id))
        return verdicts

    def changes_settled(self, event: Any) -> bool | None:
        """Whether `event` would change the verdict of its decided order, judged
        against the order's true decision time (not the time it was counted
        at); None when the order is no longer kept.

        Like `apply`: a shipment delivered, or a close or cancellation
        stamped, after the decision changes nothing; nor does a cancellation at
        the decision instant, nor an older version of the order.
        """
        found = self.settled.get(event.order_id)
        if found is None:
            return None
        order = found[0]
        decision = order.decision(self.grace_us)
        decided_us = self.decided[event.order_id] if decision is None else decision[0]
        at_us = event.delivered_at_us if event.type == "shipment" else event.ts_us
        if at_us > decided_us:
            return False
        if event.type == "order_cancelled" and at_us == decided_us:
            return False
        return not (
            event.type == "order" and order.amended_us is not None and at_us < order.amended_us
        )

    def reopen(self, order_id: str) -> tuple[bool, OrderVerdict | None]:
        """Put a settled order back among the open ones (a late event changes it).

        Returns whether it could (it is still settled) and its verdict, which
        the caller takes out of the windows it was counted in.
        """
        found = self.settled.pop(order_id, None)
        if found is None:
            return False, None
        self.settled_touched.add(settled_bucket(found))
        order, verdict = found
        if verdict is None and (reason := order.excluded(self.tolerance_us)):
            self.ignored[reason] -= 1  # counted again if it is excluded again
        self.open[order_id] = order
        order.bucket = self.open_bucket()
        self.touched.add(order.bucket)
        if (found := order.decision(self.grace_us)) is not None:
            heapq.heappush(self._heap, (found[0], order_id))
        del self.decided[order_id]
        return True, verdict

    def forget_settled(self, before_us: int) -> None:
        """No late event reaches orders decided before `before_us`: drop their data."""
        decided = self.decided
        for oid in _oldest(self.settled, lambda oid: decided.get(oid, before_us - 1) < before_us):
            self.settled_touched.add(settled_bucket(self.settled.pop(oid)))

    def _settle(self, oid: str, entry: tuple[OpenOrder, OrderVerdict | None]) -> None:
        self.settled[oid] = entry
        self.settled_touched.add(settled_bucket(entry))

    def forget_decided(self, before_us: int) -> None:
        """Drop the memory of orders decided before `before_us`."""
        decided, settled = self.decided, self.settled
        # A settled order's id stays while a late event may still reopen it.
        for oid in _oldest(decided, lambda oid: decided[oid] < before_us and oid not in settled):
            del decided[oid]


def _oldest(table: dict[str, Any], old: Callable[[str], bool]) -> list[str]:
    """The keys at the front of `table` (insertion order, which is about decision
    order) for which `old` holds, up to the first for which it does not.

    Looking no further keeps a close's cost to what it forgets, not to the
    30 days remembered; an entry out of order is forgotten a little later.
    """
    found = []
    for key in table:
        if not old(key):
            break
        found.append(key)
    return found
