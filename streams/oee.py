"""OEE on the ISO 22400-2 time model, as an additive state.

An `OeeState` holds only summable components: time per state bucket in
integer microseconds, ideal time of the produced units, unit counts and the
number of failures. Ratios are computed once, from the sums, by `result()`:
roll-ups (line, site, longer windows) merge states and never average ratios.

    availability = running / planned             (APT / PBT)
    performance  = ideal / running               (sum of ideal cycle x units / APT)
    quality      = good / total
    oee          = availability x performance x quality
    mtbf         = running / failures, mttr = down / failures

>>> s = OeeState(running_us=2_880 * US, down_us=720 * US, ideal_us=2_304 * US, total=1_000, good=950)
>>> r = s.result()
>>> round(r["availability"], 3), round(r["performance"], 3), round(r["quality"], 3), round(r["oee"], 3)
(0.8, 0.8, 0.95, 0.608)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import orjson

from streams.timeutil import US

if TYPE_CHECKING:
    from streams.machine import Segment

STATE_BUCKETS = ("running", "idle", "down", "setup", "planned_stop", "no_data")
"""Time buckets: the five machine states of the contract plus no-data."""

LOSS_STATES = frozenset({"down", "setup", "idle"})
"""States inside planned busy time that lose production; their reasons are kept."""


def ratio(num: float, den: float) -> float | None:
    """num / den, or None when the denominator is zero."""
    return num / den if den else None


@dataclass(slots=True)
class OeeState:
    """Summable OEE components of one machine (or a roll-up) over one window."""

    running_us: int = 0
    idle_us: int = 0
    down_us: int = 0
    setup_us: int = 0
    planned_stop_us: int = 0
    no_data_us: int = 0
    ideal_us: int = 0
    total: int = 0
    good: int = 0
    failures: int = 0
    outside_running: int = 0
    downtime_by_reason_us: dict[str, int] = field(default_factory=dict)

    # -- updates -----------------------------------------------------------
    def add(self, piece: Segment) -> None:
        """Count one observation already clipped to the window (`streams.kpi`):
        a stretch of time in a state bucket, or a marker at an instant: units
        made or a failure (a silence start adds nothing). `add_time` and
        `add_units` are the same for callers that hold the parts."""
        if piece.start_us != piece.end_us:
            self.add_time(piece.bucket, piece.end_us - piece.start_us, piece.reason)
        elif piece.units is not None:
            u = piece.units
            self.add_units(u.total, u.good, u.ideal_us, outside_running=u.outside_running)
        elif piece.failure_at_start:
            self.failures += 1

    def add_time(self, bucket: str, duration_us: int, reason: str | None = None) -> None:
        """Add time to a state bucket; losses also count by reason."""
        attr = f"{bucket}_us"
        setattr(self, attr, getattr(self, attr) + duration_us)
        if bucket in LOSS_STATES:
            key = reason or bucket
            self.downtime_by_reason_us[key] = self.downtime_by_reason_us.get(key, 0) + duration_us

    def add_units(
        self, total: int, good: int, ideal_us: int, *, outside_running: bool = False
    ) -> None:
        """Units made; `outside_running` when the machine's held state was not running."""
        self.total += total
        self.good += good
        self.ideal_us += ideal_us
        if outside_running:
            self.outside_running += total

    def merge(self, other: OeeState) -> OeeState:
        """In-place sum with another state; returns self."""
        # Field by field, not a loop over `_SUMMED`: a close merges every
        # machine's state into its line's and site's (a test keeps the list whole).
        self.running_us += other.running_us
        self.idle_us += other.idle_us
        self.down_us += other.down_us
        self.setup_us += other.setup_us
        self.planned_stop_us += other.planned_stop_us
        self.no_data_us += other.no_data_us
        self.ideal_us += other.ideal_us
        self.total += other.total
        self.good += other.good
        self.failures += other.failures
        self.outside_running += other.outside_running
        reasons = self.downtime_by_reason_us
        for key, value in other.downtime_by_reason_us.items():
            reasons[key] = reasons.get(key, 0) + value
        return self

    def subtract(self, other: OeeState) -> OeeState:
        """In-place difference with another state (a revision takes the old part out)."""
        for name in _SUMMED:
            setattr(self, name, getattr(self, name) - getattr(other, name))
        reasons = self.downtime_by_reason_us
        for key, value in other.downtime_by_reason_us.items():
            left = reasons.get(key, 0) - value
            if left:
                reasons[key] = left
            else:
                reasons.pop(key, None)
        return self

    @classmethod
    def merged(cls, states: Iterable[OeeState]) -> OeeState:
        total = cls()
        for s in states:
            total.merge(s)
        return total

    # -- results -----------------------------------------------------------
    @property
    def planned_us(self) -> int:
        """Planned busy time (PBT): in-shift time not planned-stopped, data known."""
        return self.running_us + self.idle_us + self.down_us + self.setup_us

    def result(self) -> dict[str, Any]:
        """Seconds, counts and ratios in the field names of the `oee` record."""
        # Written out with locals (a close makes one per machine and window);
        # the same operations in the same order as `ratio` would do them.
        running, down, failures = self.running_us, self.down_us, self.failures
        planned = running + self.idle_us + down + self.setup_us
        availability = running / planned if planned else None
        performance = self.ideal_us / running if running else None
        quality = self.good / self.total if self.total else None
        oee = (
            None
            if availability is None or performance is None or quality is None
            else availability * performance * quality
        )
        reasons = self.downtime_by_reason_us
        return {
            "planned_s": planned / US,
            "running_s": running / US,
            "down_s": down / US,
            "setup_s": self.setup_us / US,
            "idle_s": self.idle_us / US,
            "planned_stop_s": self.planned_stop_us / US,
            "no_data_s": self.no_data_us / US,
            "ideal_s": self.ideal_us / US,
            "total": self.total,
            "good": self.good,
            "failures": failures,
            "units_outside_running": self.outside_running,
            "availability": availability,
            "performance": performance,
            "quality": quality,
            "oee": oee,
            "mtbf_s": running / US / failures if failures else None,
            "mttr_s": down / US / failures if failures else None,
            "downtime_by_reason_s": (
                {k: v / US for k, v in sorted(reasons.items())} if reasons else {}
            ),
            # Performance above 1 means the ideal cycle time is set too slow:
            # exported as it is, flagged for data quality, never clipped.
            "performance_above_ideal": performance is not None and performance > 1.0,
        }

    # -- storage -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _SUMMED}
        data["downtime_by_reason_us"] = dict(self.downtime_by_reason_us)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OeeState:
        data = {"outside_running": 0, **data}
        return cls(**{**data, "downtime_by_reason_us": dict(data["downtime_by_reason_us"])})


_SUMMED = tuple(f.name for f in fields(OeeState) if f.name != "downtime_by_reason_us")
"""The plain number fields, in declaration order (the reasons dict is last)."""

_PACKED = struct.Struct(f"<{len(_SUMMED)}q")


def pack(state: OeeState) -> bytes | OeeState:
    """A state as about 100 bytes (kept a day for revisions), or itself if too large."""
    try:
        head = _PACKED.pack(*(getattr(state, name) for name in _SUMMED))
    except struct.error:  # a sum over 2^63
        return OeeState.from_dict(state.to_dict())
    reasons = state.downtime_by_reason_us
    return head + orjson.dumps(reasons) if reasons else head


def unpack(packed: bytes | OeeState) -> OeeState:
    """A fresh state from `pack`'s bytes."""
    if isinstance(packed, OeeState):
        return OeeState.from_dict(packed.to_dict())
    state = OeeState(*_PACKED.unpack_from(packed))
    if len(packed) > _PACKED.size:
        state.downtime_by_reason_us = orjson.loads(packed[_PACKED.size :])
    return state
