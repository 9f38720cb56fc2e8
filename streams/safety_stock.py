"""Safety stock and reorder point per SKU, from rolling demand and lead times.

Over the horizon (default 28 days) ending with the last day of a closed
window (default: each 1d window):

    d̄, σ_d   mean and sample standard deviation of daily demand (units/day)
    L̄, σ_L   mean and sample standard deviation of supplier lead time (days)
    z        = Φ⁻¹(service level)
    SS       = z · √(L̄ · σ_d² + d̄² · σ_L²)          units
    ROP      = d̄ · L̄ + SS                            units

>>> round(safety_stock(1.6448536269514722, 10.0, 3.0, 4.0, 1.0), 3)
19.182
>>> reorder_point(10.0, 4.0, 19.182)
59.182

Demand: the quantities of outbound order lines, per SKU, on the UTC day the
order was created. An order counts as its original version (the `order`
event with the earliest `ts`); a cancellation on its creation day removes
it; amendments and later cancellations do not rewrite a past day. So a
day's demand is settled once the frontier passes the day's end, whatever
arrives later. Days without demand count as 0, from the SKU's first demand
day on (a SKU first seen three days ago has three demand days, not 28).

Lead time: per inbound (purchase) order decided complete, creation to the
completing delivery in days, one sample for each distinct SKU of its lines,
dated by the decision. Orders closed short or expired give no sample.

Service level of a SKU: the highest among the segments whose orders made
its demand in the horizon, each segment's from its policy or, where it sets
none, the configured default (0.95); the default too with no demand.

Memory is bounded by the horizon: older days and samples are dropped, and a
SKU with neither demand nor lead times in the horizon is forgotten.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

from streams.config import EngineConfig
from streams.perfect_order import OrderVerdict
from streams.records import SafetyStockRecord, window_fields
from streams.timeutil import US, parse_duration_us
from streams.windows import TumblingWindows, Window

DAY_US = 86_400 * US
BUCKET_US = 60 * US
"""Event time of the open originals in one snapshot bucket (`SafetyStock.bucket`)."""
MICRO = 1_000_000  # demand is summed in integer millionths of a unit: exact add and subtract


def safety_stock(
    z: float, mean_demand: float, sd_demand: float, mean_lead: float, sd_lead: float
) -> float:
    """SS = z·√(L̄·σ_d² + d̄²·σ_L²), in units (demand per day, lead time in days)."""
    return z * math.sqrt(mean_lead * sd_demand**2 + mean_demand**2 * sd_lead**2)


def reorder_point(mean_demand: float, mean_lead: float, ss: float) -> float:
    """ROP = d̄·L̄ + SS: expected demand over the lead time plus the safety stock."""
    return mean_demand * mean_lead + ss


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    mean = statistics.fmean(values) if values else None
    return mean, statistics.stdev(values) if len(values) >= 2 else None


@dataclass(slots=True)
class SkuHistory:
    """One SKU's demand and lead times inside the horizon."""

    first_day: int | None = None  # first day with demand (days since the epoch)
    demand: dict[int, dict[str, int]] = field(default_factory=dict)  # day -> segment -> micro
    lead_times: list[tuple[int, int]] = field(default_factory=list)  # (day, lead time us)

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_day": self.first_day,
            "demand": [[day, dict(by_segment)] for day, by_segment in self.demand.items()],
            "lead_times": [list(s) for s in self.lead_times],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SkuHistory:
        return cls(
            d["first_day"],
            {int(day): dict(by_segment) for day, by_segment in d["demand"]},
            [(int(day), int(lead)) for day, lead in d["lead_times"]],
        )


Original = tuple[int, str, dict[str, int]]
"""An open outbound order's counted demand: (created_us, segment, sku -> micro-units)."""


def original_row(item: tuple[str, Original]) -> list[Any]:
    """(order id, original) as a snapshot keeps it."""
    oid, (created_us, segment, lines) = item
    return [oid, created_us, segment, dict(lines)]


class SafetyStock:
    """Rolling demand and lead-time history; records on close of its windows."""

    def __init__(self, config: EngineConfig) -> None:
        s = config.safety_stock
        self.enabled = s.enabled
        self.label = config.safety_stock_label() if s.enabled else None
        self._windows = TumblingWindows(parse_duration_us(s.window))
        self.horizon_days = s.horizon_days
        self.default_level = s.service_level
        self.levels = {
            seg: p.service_level for seg, p in config.policies.items() if p.service_level
        }
        self.min_demand_days = s.min_demand_days
        self.min_lead_time_samples = s.min_lead_time_samples
        self.skus: dict[str, SkuHistory] = {}
        self.originals: dict[str, Original] = {}  # open outbound order id -> its demand
        # Snapshot buckets (`bucket`) of originals set or removed since a
        # worker's snapshot last looked, and their versions.
        self.touched: set[int] = set()
        self.versions: dict[int, int] = {}
        # Decided orders' originals, while a late event may still reopen them.
        self.settled: dict[str, Original] = {}
        self.keep_settled = False
        self.floor_day: int | None = None  # days before this are dropped
        self.emitted_until_us: int | None = None  # end of the last window emitted

    # -- input ---------------------------------------------------------------
    def order_event(self, event: Any) -> None:
        """An accepted `order` or `order_cancelled` event (the book did not drop it)."""
        if not self.enabled:
            return
        oid = event.order_id
        old = self.originals.get(oid)
        if event.type == "order_cancelled":
            self.originals.pop(oid, None)
            self._touch(old)
            if old is not None and old[0] // DAY_US == event.ts_us // DAY_US:
                self._count(old, -1)
            return
        if event.type != "order" or event.direction != "outbound":
            return
        if old is not None and old[0] <= event.ts_us:
            return  # an amendment: the original version is the demand
        lines: dict[str, int] = {}
        for line in event.lines:
            lines[line.sku] = lines.get(line.sku, 0) + round(line.qty * MICRO)
        new = (event.ts_us, event.segment, lines)
        if old is not None:
            self._count(old, -1)  # the original arrived after its amendment
        self._count(new, +1)
        self.originals[oid] = new
        self._touch(old)
        self._touch(new)

    def decided(self, verdict: OrderVerdict) -> None:
        """A decided order: outbound ones leave the open set; complete inbound ones
        give a lead-time sample per SKU."""
        if not self.enabled:
            return
        original = self.originals.pop(verdict.order_id, None)
        self._touch(original)
        if original is not None and self.keep_settled:
            self.settled[verdict.order_id] = original
        if verdict.direction != "inbound" or verdict.cycle_time_us is None:
            return
        day = verdict.decided_us // DAY_US
        if self.floor_day is not None and day < self.floor_day:
            return
        for sku in verdict.skus:
            self.skus.setdefault(sku, SkuHistory()).lead_times.append((day, verdict.cycle_time_us))

    def undecided(self, verdict: OrderVerdict) -> None:
        """A decided order reopened by a late event: open again, its lead-time samples go."""
        if not self.enabled:
            return
        original = self.settled.pop(verdict.order_id, None)
        if original is not None:
            self.originals[verdict.order_id] = original
            self._touch(original)
        if verdict.direction != "inbound" or verdict.cycle_time_us is None:
            return
        sample = (verdict.decided_us // DAY_US, verdict.cycle_time_us)
        for sku in verdict.skus:
            history = self.skus.get(sku)
            if history is not None and sample in history.lead_times:
                history.lead_times.remove(sample)

    def forget_settled(self, still: Container[str]) -> None:
        """Drop the originals of decided orders no longer in `still` (the book's
        settled orders), oldest first, up to the first still there."""
        old = []
        for oid in self.settled:
            if oid in still:
                break
            old.append(oid)
        for oid in old:
            del self.settled[oid]

    @staticmethod
    def bucket(original: Original) -> int:
        """The snapshot bucket of an open original: the minute of event time
        its order was created in. Orders come, and are decided, mostly in
        time order, so a snapshot makes the newest minutes' buckets again
        and those of the orders just decided, not (as buckets by a hash of
        the id would) all."""
        return original[0] // BUCKET_US

    def _touch(self, original: Original | None) -> None:
        if original is not None:
            self.touched.add(self.bucket(original))

    def _count(self, original: Original, sign: int) -> None:
        created_us, segment, lines = original
        day = created_us // DAY_US
        if self.floor_day is not None and day < self.floor_day:
            return  # already outside the horizon
        for sku, micro in lines.items():
            if sign < 0 and sku not in self.skus:
                continue  # forgotten with its days: nothing left to take back
            history = self.skus.setdefault(sku, SkuHistory())
            by_segment = history.demand.setdefault(day, {})
            total = by_segment.get(segment, 0) + sign * micro
            if total:
                by_segment[segment] = total
            else:
                by_segment.pop(segment, None)
            if not by_segment:
                del history.demand[day]
            if sign > 0 and (history.first_day is None or day < history.first_day):
                history.first_day = day

    # -- output --------------------------------------------------------------
    def due(self, frontier_us: int, final: bool) -> list[Window]:
        """Windows to close by `frontier_us` (at the end of input, the partial one too).

        None before the first data, and none after the horizon of the last
        data has run out (every SKU would be forgotten by then).
        """
        if not self.enabled:
            return []
        if (
            not final
            and self.emitted_until_us is not None
            and frontier_us < self._windows.containing(self.emitted_until_us).end_us
        ):
            return []  # the next window is still open: no walk over every SKU's days
        days = [d for h in self.skus.values() for d in (*h.demand, *(s[0] for s in h.lead_times))]
        if not days:
            return []
        start_us = self._windows.containing(min(days) * DAY_US).start_us
        if self.emitted_until_us is not None:
            start_us = max(start_us, self.emitted_until_us)
        stop_us = (max(days) + self.horizon_days) * DAY_US
        found = []
        window = self._windows.containing(start_us)
        while window.start_us < stop_us and (
            window.end_us <= frontier_us or (final and window.start_us < frontier_us)
        ):
            found.append(window)
            window = self._windows.containing(window.end_us)
        return found

    def close(self, window: Window) -> list[dict[str, Any]]:
        """One record per SKU with data in the horizon ending with the window's last day."""
        if self.emitted_until_us is not None and window.end_us <= self.emitted_until_us:
            return []
        last = (window.end_us - 1) // DAY_US
        low = last - self.horizon_days + 1
        records = [
            self._record(sku, history, window, low, last)
            for sku, history in sorted(self.skus.items())
            if any(low <= d <= last for d in history.demand)
            or any(low <= s[0] <= last for s in history.lead_times)
        ]
        self.emitted_until_us = window.end_us
        self._drop_before(low + 1)
        return records

    def _drop_before(self, day: int) -> None:
        self.floor_day = day if self.floor_day is None else max(self.floor_day, day)
        for sku, history in list(self.skus.items()):
            history.demand = {d: q for d, q in history.demand.items() if d >= self.floor_day}
            history.lead_times = [s for s in history.lead_times if s[0] >= self.floor_day]
            if not history.demand and not history.lead_times:
                del self.skus[sku]

    def _record(
        self, sku: str, history: SkuHistory, window: Window, low: int, last: int
    ) -> SafetyStockRecord:
        first = history.first_day
        days = range(max(first, low), last + 1) if first is not None and first <= last else ()
        daily = [sum(history.demand.get(d, {}).values()) / MICRO for d in days]
        segments = sorted({seg for d in days for seg in history.demand.get(d, {})})
        leads = [lead / DAY_US for day, lead in history.lead_times if low <= day <= last]
        mean_d, sd_d = _mean_sd(daily)
        mean_l, sd_l = _mean_sd(leads)
        level = max((self.levels.get(s, self.default_level) for s in segments), default=None)
        level = level or self.default_level
        z = statistics.NormalDist().inv_cdf(level)
        reasons = [
            f"{_plural(n, what)}, at least {least} needed"
            for n, what, least in (
                (len(daily), "demand day", self.min_demand_days),
                (len(leads), "lead-time sample", self.min_lead_time_samples),
            )
            if n < least
        ]
        ss = rop = None
        if not reasons:
            assert None not in (mean_d, sd_d, mean_l, sd_l)
            ss = safety_stock(z, mean_d, sd_d, mean_l, sd_l)  # type: ignore[arg-type]
            rop = reorder_point(mean_d, mean_l, ss)  # type: ignore[arg-type]
        return SafetyStockRecord(
            {
                "kpi": "safety_stock",
                "sku": sku,
                **window_fields(window),
                "horizon_days": self.horizon_days,
                "demand_days": len(daily),
                "mean_daily_demand": mean_d,
                "sd_daily_demand": sd_d,
                "lead_time_samples": len(leads),
                "mean_lead_time_days": mean_l,
                "sd_lead_time_days": sd_l,
                "segments": segments,
                "service_level": level,
                "z": z,
                "safety_stock": ss,
                "reorder_point": rop,
                "status": "insufficient_data" if reasons else "ok",
                "reason": "; ".join(reasons) or None,
            }
        )

    # -- storage -------------------------------------------------------------
    def to_dict(self, *, with_originals: bool = True) -> dict[str, Any]:
        """JSON-safe state for `load`; `with_originals=False` leaves the open
        orders' originals out (`streams.snapshot` adds them lazily)."""
        originals = (
            {"originals": [original_row(o) for o in self.originals.items()]}
            if with_originals
            else {}
        )
        return {
            "skus": {sku: h.to_dict() for sku, h in self.skus.items()},
            **originals,
            "settled": [original_row(o) for o in self.settled.items()],
            "floor_day": self.floor_day,
            "emitted_until_us": self.emitted_until_us,
        }

    def load(self, data: dict[str, Any]) -> None:
        self.skus = {sku: SkuHistory.from_dict(h) for sku, h in data["skus"].items()}
        self.originals = {oid: (at, seg, dict(lines)) for oid, at, seg, lines in data["originals"]}
        settled = data.get("settled", [])
        self.settled = {oid: (at, seg, dict(lines)) for oid, at, seg, lines in settled}
        self.floor_day = data["floor_day"]
        self.emitted_until_us = data["emitted_until_us"]
