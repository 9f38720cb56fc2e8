"""Perfect order (SCOR RL.1.1), OTIF and fill rates, as an additive state.

Each decided order is judged once (see `streams.orders`) and counted into a
`PerfectOrderState` per direction, segment and window. Rates are computed
from the sums:

    perfect_order_rate = perfect / decided          (the true per-order rate)
    component_product  = on_time% x in_full% x damage_free% x documents_ok%
    otif_rate          = on time and in full / decided
    line_fill_rate     = lines in full / lines ordered
    unit_fill_rate     = sum(min(delivered, ordered)) / sum(ordered)
    order_fill_rate    = orders in full / decided

Segment policies add two per-order counts (see `streams.orders.OrderRule`),
`below_moq` and `response_time_missed`; the record shows each only where
the segment's policy sets its rule (`streams.records.perfect_order_record`).

>>> s = PerfectOrderState(decided=100, perfect=50, on_time=90, in_full=80, damage_free=70, documents_ok=100)
>>> round(s.result()["component_product"], 3)
0.504
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from streams.oee import ratio
from streams.timeutil import US


@dataclass(frozen=True)
class OrderVerdict:
    """The judgement of one decided order."""

    order_id: str
    direction: str
    segment: str
    partner: str
    decided_us: int
    how: str  # "complete", "closed", "cancelled" or "expired"
    on_time: bool
    in_full: bool
    damage_free: bool
    documents_ok: bool
    lines_ordered: int
    lines_in_full: int
    units_ordered: float
    units_delivered: float
    cycle_time_us: int | None
    # Segment policy (outbound orders of a segment with a policy; else False).
    below_moq: bool = False  # total ordered quantity below the minimum order quantity
    response_time_missed: bool = False  # first delivery after created + response_time, or none
    skus: tuple[str, ...] = ()  # distinct SKUs of the order's lines

    @property
    def perfect(self) -> bool:
        return self.on_time and self.in_full and self.damage_free and self.documents_ok

    def to_dict(self) -> dict[str, Any]:
        """The fields by name, as `dataclasses.asdict` gives them, without its
        deep copy (a snapshot writes every settled order's verdict)."""
        return {name: getattr(self, name) for name in _VERDICT_FIELDS}

    @property
    def quality_ok(self) -> bool:
        """Undamaged with accurate documents (the chain's quality factor)."""
        return self.damage_free and self.documents_ok


@dataclass(slots=True)
class PerfectOrderState:
    """Summable counts of decided orders over one window."""

    decided: int = 0
    perfect: int = 0
    on_time: int = 0
    in_full: int = 0
    damage_free: int = 0
    documents_ok: int = 0
    otif: int = 0
    quality_ok: int = 0
    lines_ordered: int = 0
    lines_in_full: int = 0
    # Quantities in millionths, as integers, so that sums are exact and
    # any merge order gives the same digits.
    units_ordered_micro: int = 0
    units_delivered_micro: int = 0
    cycle_time_us: int = 0
    cycle_count: int = 0
    below_moq: int = 0
    response_time_missed: int = 0

    def add(self, v: OrderVerdict, sign: int = 1) -> None:
        """Count a verdict (`sign=-1`: take one counted before out again)."""
        self.decided += sign
        self.perfect += sign * v.perfect
        self.on_time += sign * v.on_time
        self.in_full += sign * v.in_full
        self.damage_free += sign * v.damage_free
        self.documents_ok += sign * v.documents_ok
        self.otif += sign * (v.on_time and v.in_full)
        self.quality_ok += sign * v.quality_ok
        self.lines_ordered += sign * v.lines_ordered
        self.lines_in_full += sign * v.lines_in_full
        self.units_ordered_micro += sign * round(v.units_ordered * 1_000_000)
        self.units_delivered_micro += sign * round(v.units_delivered * 1_000_000)
        if v.cycle_time_us is not None:
            self.cycle_time_us += sign * v.cycle_time_us
            self.cycle_count += sign
        self.below_moq += sign * v.below_moq
        self.response_time_missed += sign * v.response_time_missed

    def merge(self, other: PerfectOrderState) -> PerfectOrderState:
        for name in _STATE_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def result(self) -> dict[str, Any]:
        shares = [
            ratio(x, self.decided)
            for x in (self.on_time, self.in_full, self.damage_free, self.documents_ok)
        ]
        product = None
        if None not in shares:
            product = shares[0] * shares[1] * shares[2] * shares[3]  # type: ignore[operator]
        mean_cycle = ratio(self.cycle_time_us, self.cycle_count)
        return {
            "decided": self.decided,
            "perfect": self.perfect,
            "on_time": self.on_time,
            "in_full": self.in_full,
            "damage_free": self.damage_free,
            "documents_ok": self.documents_ok,
            "otif": self.otif,
            "lines_ordered": self.lines_ordered,
            "lines_in_full": self.lines_in_full,
            "units_ordered": self.units_ordered_micro / 1_000_000,
            "units_delivered": self.units_delivered_micro / 1_000_000,
            "perfect_order_rate": ratio(self.perfect, self.decided),
            "component_product": product,
            "otif_rate": ratio(self.otif, self.decided),
            "line_fill_rate": ratio(self.lines_in_full, self.lines_ordered),
            "unit_fill_rate": ratio(self.units_delivered_micro, self.units_ordered_micro),
            "order_fill_rate": ratio(self.in_full, self.decided),
            "mean_cycle_time_s": None if mean_cycle is None else mean_cycle / US,
        }

    @property
    def quality_rate(self) -> float | None:
        return ratio(self.quality_ok, self.decided)

    @property
    def delivery_rate(self) -> float | None:
        return ratio(self.otif, self.decided)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _STATE_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PerfectOrderState:
        return cls(**data)


_VERDICT_FIELDS = tuple(f.name for f in fields(OrderVerdict))
_STATE_FIELDS = tuple(f.name for f in fields(PerfectOrderState))
