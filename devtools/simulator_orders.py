"""Order-fulfilment half of the simulator: customer and purchase orders, shipments.

Orders arrive as one Poisson process (outbound and inbound mixed by rate). Each
order's whole future (amendment, cancellation, shipments, short close) is
planned at creation from the order stream's own RNG, then released in time
order through a small heap, so the stream is lazy and every prefix of a longer
run equals the shorter run.

Failure components are drawn independently per order from the profile of the
customer's segment (outbound) or of the supplier (inbound), so the expected
perfect-order rate is about (1-late)(1-short)(1-damaged)(1-documents_bad).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from streams.timeutil import US, iso

HOUR_US = 3600 * US
DAY_US = 24 * HOUR_US


@dataclass(frozen=True)
class FulfilmentProfile:
    """Probability per order of each perfect-order failure (independent draws)."""

    late: float
    short: float
    damaged: float
    documents_bad: float


def _default_segments() -> dict[str, FulfilmentProfile]:
    return {
        "A": FulfilmentProfile(late=0.03, short=0.03, damaged=0.02, documents_bad=0.02),
        "B": FulfilmentProfile(late=0.05, short=0.04, damaged=0.03, documents_bad=0.02),
        "C": FulfilmentProfile(late=0.07, short=0.05, damaged=0.03, documents_bad=0.03),
    }


def _default_suppliers() -> dict[str, tuple[str, FulfilmentProfile]]:
    """Supplier -> (segment it is reported under, its profile); lateness differs most."""
    return {
        f"SUP-{i}": (segment, FulfilmentProfile(late, 0.03, 0.02, 0.02))
        for i, (segment, late) in enumerate(
            [("A", 0.03), ("A", 0.06), ("B", 0.10), ("C", 0.12)], start=1
        )
    }


@dataclass(frozen=True)
class OrderConfig:
    """Order volumes, shapes and failure rates (probabilities per order)."""

    outbound_per_day: float = 150.0
    inbound_per_day: float = 30.0
    customers: int = 40
    """Customers C-1..C-n: the first 25% are segment A, the next 40% B, the rest C."""
    segments: Mapping[str, FulfilmentProfile] = field(default_factory=_default_segments)
    suppliers: Mapping[str, tuple[str, FulfilmentProfile]] = field(
        default_factory=_default_suppliers
    )
    outbound_skus: tuple[str, ...] = (
        "SKU-101", "SKU-102", "SKU-201", "SKU-202", "SKU-301", "SKU-302", "SKU-303",
    )  # fmt: skip
    # Purchase orders replenish the goods sold as well as raw material, so
    # safety stock has both demand and supplier lead time for those SKUs.
    inbound_skus: tuple[str, ...] = (
        "SKU-101", "SKU-102", "SKU-201", "SKU-202", "SKU-301", "SKU-302", "SKU-303",
        "RM-1", "RM-2", "RM-3", "RM-4",
    )  # fmt: skip
    lines_per_order: tuple[int, int] = (1, 4)
    qty: tuple[int, int] = (10, 500)
    promised_after_h: tuple[int, int] = (24, 72)
    cancel_rate: float = 0.02
    amend_rate: float = 0.05
    split_rate: float = 0.25
    """Share of orders delivered in two partial shipments."""
    close_short_rate: float = 0.6
    """Share of short orders that get an `order_closed` after their last shipment."""


def customer_segment(index: int, customers: int) -> str:
    """Segment of customer C-<index> (1-based): 25% A, 40% B, 35% C."""
    if index <= round(customers * 0.25):
        return "A"
    if index <= round(customers * 0.65):
        return "B"
    return "C"


def _seconds_us(rng: random.Random, low_s: float, high_s: float) -> int:
    return round(rng.uniform(low_s, high_s)) * US


class _OrderPlanner:
    """Plans one order's events at creation; ids are sequential in creation order."""

    def __init__(self, config: OrderConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.outbound_ids = itertools.count(1001)
        self.inbound_ids = itertools.count(5001)
        self.shipment_ids = itertools.count(1)

    def plan(self, created_us: int, outbound: bool) -> list[tuple[int, dict]]:
        cfg, rng = self.config, self.rng
        if outbound:
            order_id = f"SO-{next(self.outbound_ids)}"
            index = rng.randint(1, cfg.customers)
            partner, segment = f"C-{index}", customer_segment(index, cfg.customers)
            profile, skus = cfg.segments[segment], cfg.outbound_skus
        else:
            order_id = f"PO-{next(self.inbound_ids)}"
            partner = rng.choice(sorted(cfg.suppliers))
            segment, profile = cfg.suppliers[partner]
            skus = cfg.inbound_skus
        direction = "outbound" if outbound else "inbound"
        promised_us = created_us + rng.randint(*cfg.promised_after_h) * HOUR_US
        promised_us -= promised_us % HOUR_US
        n_lines = rng.randint(*cfg.lines_per_order)
        lines = [
            {"line_no": no, "sku": sku, "qty": rng.randint(*cfg.qty)}
            for no, sku in enumerate(rng.sample(skus, min(n_lines, len(skus))), start=1)
        ]

        def order_event(ts_us: int, order_lines: list[dict]) -> tuple[int, dict]:
            return ts_us, {
                "type": "order", "event_id": "", "ts": iso(ts_us),
                "order_id": order_id, "direction": direction, "partner": partner,
                "segment": segment, "promised_at": iso(promised_us), "lines": order_lines,
            }  # fmt: skip

        events = [order_event(created_us, lines)]
        if rng.random() < cfg.amend_rate:
            amended = [dict(line) for line in lines]
            changed = rng.choice(amended)
            new_qty = rng.randint(cfg.qty[0], cfg.qty[1] - 1)
            changed["qty"] = new_qty + 1 if new_qty >= changed["qty"] else new_qty
            events.append(order_event(created_us + _seconds_us(rng, 1800, 3 * 3600), amended))
            lines = amended
        if rng.random() < cfg.cancel_rate:
            ts_us = created_us + _seconds_us(rng, 4 * 3600, 12 * 3600)
            events.append((ts_us, _closing("order_cancelled", ts_us, order_id)))
            return events
        # Shipments follow the latest version of the order.
        events += self._shipments(events[-1][0], promised_us, order_id, direction, lines, profile)
        return events

    def _shipments(
        self,
        not_before_us: int,
        promised_us: int,
        order_id: str,
        direction: str,
        lines: list[dict],
        profile: FulfilmentProfile,
    ) -> list[tuple[int, dict]]:
        cfg, rng = self.config, self.rng
        late = rng.random() < profile.late
        short = rng.random() < profile.short
        damaged = rng.random() < profile.damaged
        documents_bad = rng.random() < profile.documents_bad
        split = rng.random() < cfg.split_rate

        # The last delivery decides on-time: early by up to 18 h, or late by 1-36 h.
        if late:
            last_us = promised_us + _seconds_us(rng, 3600, 36 * 3600)
        else:
            last_us = promised_us - _seconds_us(rng, 0, 18 * 3600)
        deliveries: list[tuple[int, list[dict]]] = []
        qty = {line["line_no"]: line["qty"] for line in lines}
        if split:
            span_s = (last_us - not_before_us) // US
            first_us = not_before_us + round(span_s * rng.uniform(0.3, 0.8)) * US
            share = rng.uniform(0.4, 0.7)
            first = {no: int(q * share) for no, q in qty.items()}
            rest = {no: q - first[no] for no, q in qty.items()}
            if short and rng.random() < 0.5:
                # The second shipment never comes; the first one is the last.
                deliveries = [(last_us, _ship_lines(first))]
            else:
                if short:
                    _shorten(rng, rest)
                deliveries = [(first_us, _ship_lines(first)), (last_us, _ship_lines(rest))]
        else:
            if short:
                _shorten(rng, qty)
            deliveries = [(last_us, _ship_lines(qty))]
        deliveries = [(ts, ship_lines) for ts, ship_lines in deliveries if ship_lines]

        damaged_at = rng.randrange(len(deliveries)) if damaged else -1
        bad_docs_at = rng.randrange(len(deliveries)) if documents_bad else -1
        events = []
        for i, (ts_us, ship_lines) in enumerate(deliveries):
            if i == damaged_at:
                line = rng.choice(ship_lines)
                line["damaged_qty"] = rng.randint(1, min(line["qty"], 5))
            events.append(
                (ts_us, {
                    "type": "shipment", "event_id": "", "ts": iso(ts_us),
                    "shipment_id": f"SH-{next(self.shipment_ids)}", "order_id": order_id,
                    "direction": direction, "delivered_at": iso(ts_us),
                    "documents_ok": i != bad_docs_at, "lines": ship_lines,
                })
            )  # fmt: skip
        if short and rng.random() < cfg.close_short_rate:
            ts_us = deliveries[-1][0] + _seconds_us(rng, 2 * 3600, 48 * 3600)
            events.append((ts_us, _closing("order_closed", ts_us, order_id)))
        return events


def _shorten(rng: random.Random, qty: dict[int, int]) -> None:
    """Take 1..half of one line's quantity away (a line with qty 0 is then not shipped)."""
    no = rng.choice([no for no, q in qty.items() if q > 0])
    qty[no] -= rng.randint(1, max(1, qty[no] // 2))


def _ship_lines(qty: Mapping[int, int]) -> list[dict]:
    return [{"line_no": no, "qty": q, "damaged_qty": 0} for no, q in qty.items() if q > 0]


def _closing(kind: str, ts_us: int, order_id: str) -> dict:
    return {"type": kind, "event_id": "", "ts": iso(ts_us), "order_id": order_id}


def order_events(
    config: OrderConfig, rng: random.Random, start_us: int, end_us: int
) -> Iterator[tuple[int, dict]]:
    """(ts_us, event) for orders created in [start, end), in ts order, all ts < end.

    `event_id` is left empty for the caller to number.
    """
    if config.outbound_per_day + config.inbound_per_day <= 0:
        return
    planner = _OrderPlanner(config, rng)
    rate_per_s = (config.outbound_per_day + config.inbound_per_day) / 86_400
    outbound_share = config.outbound_per_day / (config.outbound_per_day + config.inbound_per_day)
    pending: list[tuple[int, int, dict]] = []
    seq = itertools.count()
    t_us = start_us
    while True:
        t_us += round(rng.expovariate(rate_per_s)) * US
        if t_us >= end_us:
            break
        while pending and pending[0][0] <= t_us:
            ts_us, _, event = heapq.heappop(pending)
            yield ts_us, event
        for ts_us, event in planner.plan(t_us, rng.random() < outbound_share):
            heapq.heappush(pending, (ts_us, next(seq), event))
    while pending and pending[0][0] < end_us:
        ts_us, _, event = heapq.heappop(pending)
        yield ts_us, event
