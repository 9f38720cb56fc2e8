"""One open order: its lines, shipments and cancellation, and its judgement.

`OpenOrder` is what `streams.orders.OrderBook` keeps per order id until the
order is decided: when it is decided (`decision`), whether a cancellation
excludes it (`excluded`), and its verdict (`judge`, SCOR RL.1.1 components
per order). `OrderRule` is a segment's per-order policy that the judgement
applies. The decision rules themselves are described in `streams.orders`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(slots=True)
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
    # The snapshot bucket the book put it in (`OrderBook.open_bucket`); not
    # part of the order's data, so not in `to_dict`.
    bucket: int = field(default=0, compare=False, repr=False)

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
