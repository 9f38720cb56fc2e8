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
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from streams.perfect_order import OrderVerdict

Shipment = tuple[int, bool, list[tuple[int, float, float]]]
"""(delivered_us, documents_ok, [(line_no, qty, damaged_qty), ...])"""


@dataclass(frozen=True)
class OrderRule:
    """A customer segment's per-order rules, judged with the rest at the decision.

    - below MOQ: the order's total ordered quantity < `min_order_qty`;
    - response time missed: no delivery by the decision, or the first one
      (earliest `delivered_at`) later than creation + `response_time_us`.
    """

    min_order_qty: float | None = None
    response_time_us: int | None = None


@dataclass
class OpenOrder:
    order_id: str
    direction: str | None = None
    segment: str | None = None
    partner: str | None = None
    created_us: int | None = None
    amended_us: int | None = None
    promised_us: int | None = None
    lines: dict[int, float] = field(default_factory=dict)
    skus: dict[int, str] = field(default_factory=dict)  # line_no -> sku
    shipments: list[Shipment] = field(default_factory=list)
    closed_us: int | None = None
    cancelled_us: int | None = None  # the earliest cancellation's ts

    def to_dict(self) -> dict[str, Any]:
        """The order as JSON-safe data (a snapshot's)."""
        return {
            "order_id": self.order_id,
            "direction": self.direction,
            "segment": self.segment,
            "partner": self.partner,
            "created_us": self.created_us,
            "amended_us": self.amended_us,
            "promised_us": self.promised_us,
            "lines": [[n, q] for n, q in self.lines.items()],
            "skus": [[n, sku] for n, sku in self.skus.items()],
            "shipments": [[at, ok, [list(i) for i in items]] for at, ok, items in self.shipments],
            "closed_us": self.closed_us,
            "cancelled_us": self.cancelled_us,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OpenOrder:
        """The order `to_dict` gave (one without `skus` predates them)."""
        return cls(
            **{
                **d,
                "lines": {int(n): float(q) for n, q in d["lines"]},
                "skus": {int(n): sku for n, sku in d.get("skus", [])},
                "shipments": [
                    (at, ok, [tuple(i) for i in items]) for at, ok, items in d["shipments"]
                ],
            }
        )

    def completed_us(self) -> int | None:
        """delivered_at of the delivery that completes every line, if any."""
        if not self.lines:
            return None
        delivered = dict.fromkeys(self.lines, 0.0)
        for at, _, items in sorted(self.shipments, key=lambda s: s[0]):
            for line_no, qty, _ in items:
                if line_no in delivered:
                    delivered[line_no] += qty
            if all(delivered[n] >= q for n, q in self.lines.items()):
                return at
        return None

    def decision(self, grace_us: int) -> tuple[int, str] | None:
        """(time, how) of this order's decision as the data stand now."""
        if self.promised_us is None:
            # Shipments seen, the order itself not yet: it waits for the order,
            # unless cancelled (then it is settled, excluded, at the cancellation).
            return None if self.cancelled_us is None else (self.cancelled_us, "cancelled")
        candidates = [(self.promised_us + grace_us, "expired")]
        if (done := self.completed_us()) is not None:
            candidates.append((done, "complete"))
        if self.closed_us is not None:
            candidates.append((self.closed_us, "closed"))
        found = min(candidates)
        if self.cancelled_us is not None and self.cancelled_us < found[0]:
            return self.cancelled_us, "cancelled"
        return found

    def excluded(self, tolerance_us: int) -> str | None:
        """Why a cancelled order is not counted at all, if it is not.

        - `cancelled`: nothing shipped by the cancellation, and it came at or
          before the deadline (`promised_at` + tolerance): the order was
          withdrawn before it could fail;
        - `cancelled_unknown_order`: the order itself was never seen.
        """
        if self.cancelled_us is None:
            return None
        if self.promised_us is None:
            return "cancelled_unknown_order"
        shipped = any(at <= self.cancelled_us for at, _, _ in self.shipments)
        if not shipped and self.cancelled_us <= self.promised_us + tolerance_us:
            return "cancelled"
        return None

    def judge(
        self, decided_us: int, how: str, tolerance_us: int, rule: OrderRule | None = None
    ) -> OrderVerdict:
        """The verdict on deliveries up to the decision time."""
        assert self.promised_us is not None and self.created_us is not None
        counted = [s for s in self.shipments if s[0] <= decided_us]
        delivered = dict.fromkeys(self.lines, 0.0)
        damaged = 0.0
        for _, _, items in counted:
            for line_no, qty, bad in items:
                damaged += bad
                if line_no in delivered:
                    delivered[line_no] += qty
        lines_in_full = sum(delivered[n] >= q for n, q in self.lines.items())
        deadline = self.promised_us + tolerance_us
        on_time = bool(counted) and all(s[0] <= deadline for s in counted)
        in_full = lines_in_full == len(self.lines)
        if how == "cancelled":
            # What was not delivered by the cancellation never will be: not in
            # full, and late from the deadline on (a cancellation past it).
            on_time = on_time and decided_us <= deadline
            in_full = False
        rule = rule or OrderRule()
        units_ordered = sum(self.lines.values())
        first_us = min((s[0] for s in counted), default=None)
        return OrderVerdict(
            order_id=self.order_id,
            direction=self.direction or "",
            segment=self.segment or "",
            partner=self.partner or "",
            decided_us=decided_us,
            how=how,
            on_time=on_time,
            in_full=in_full,
            damage_free=damaged == 0,
            documents_ok=all(s[1] for s in counted),
            lines_ordered=len(self.lines),
            lines_in_full=lines_in_full,
            units_ordered=units_ordered,
            units_delivered=sum(min(delivered[n], q) for n, q in self.lines.items()),
            cycle_time_us=decided_us - self.created_us if how == "complete" else None,
            below_moq=rule.min_order_qty is not None and units_ordered < rule.min_order_qty,
            response_time_missed=rule.response_time_us is not None
            and (first_us is None or first_us > self.created_us + rule.response_time_us),
            skus=tuple(sorted({self.skus[n] for n in self.lines if n in self.skus})),
        )


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
        self.decided: dict[str, int] = {}  # order id -> decision time
        # Decided orders a late event may still change (the engine's revision
        # horizon): id -> (the order, its verdict or None if excluded).
        self.settled: dict[str, tuple[OpenOrder, OrderVerdict | None]] = {}
        self.keep_settled = False
        self.ignored: Counter[str] = Counter()
        self._heap: list[tuple[int, str]] = []

    def to_dict(self) -> dict[str, Any]:
        """The book's state as JSON-safe data (a snapshot's); `load` takes it back."""
        return {
            "open": [o.to_dict() for o in self.open.values()],
            "decided": list(self.decided.items()),
            "ignored": dict(self.ignored),
            "heap": [list(h) for h in self._heap],
            "settled": [
                [o.to_dict(), None if v is None else asdict(v)] for o, v in self.settled.values()
            ],
        }

    def load(self, data: dict[str, Any]) -> None:
        """Take back the state `to_dict` gave (`settled` is absent before revisions)."""
        self.open = {o["order_id"]: OpenOrder.from_dict(o) for o in data["open"]}
        self.decided = dict((k, v) for k, v in data["decided"])
        self.ignored = Counter(data["ignored"])
        self._heap = [(at, oid) for at, oid in data["heap"]]
        for o, v in data.get("settled", []):
            order = OpenOrder.from_dict(o)
            verdict = None if v is None else OrderVerdict(**{**v, "skus": tuple(v["skus"])})
            self.settled[order.order_id] = (order, verdict)

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
        order = self.open.setdefault(oid, OpenOrder(oid))
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
                self.decided[oid] = counted_at
                if self.keep_settled:
                    self.settled[oid] = (order, None)
                self.ignored[reason] += 1
                continue
            rule = self.rules.get(order.segment or "") if order.direction == "outbound" else None
            verdict = order.judge(found[0], found[1], self.tolerance_us, rule)
            if counted_at != found[0]:
                # Judged at its true decision time, counted in the first open window.
                verdict = replace(verdict, decided_us=counted_at)
            verdicts.append(verdict)
            del self.open[oid]
            self.decided[oid] = verdict.decided_us
            if self.keep_settled:
                self.settled[oid] = (order, verdict)
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
        order, verdict = found
        if verdict is None and (reason := order.excluded(self.tolerance_us)):
            self.ignored[reason] -= 1  # counted again if it is excluded again
        self.open[order_id] = order
        del self.decided[order_id]
        return True, verdict

    def forget_settled(self, before_us: int) -> None:
        """No late event reaches orders decided before `before_us`: drop their data."""
        decided = self.decided
        for oid in _oldest(self.settled, lambda oid: decided.get(oid, before_us - 1) < before_us):
            del self.settled[oid]

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
