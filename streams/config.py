"""Engine configuration: validated, with the defaults the README documents.

Durations are text like '90s', '5m', '1h', '1d' (or numbers of seconds).
Loading from a file and the environment lives in `agents.settings`; this
module only says what a valid configuration is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streams.pchart import PChartConfig
from streams.timeutil import US, duration_label, parse_duration_us
from streams.windows import (
    UTC_DAY,
    WEEKDAYS,
    LocalDay,
    Shift,
    ShiftCalendar,
    WindowSet,
    parse_clock,
)

Duration = str | int | float
DAY_US = 86_400 * US


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_duration(value: Duration, *, positive: bool = False) -> Duration:
    us = parse_duration_us(value)
    if positive and us <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return value


class ShiftSettings(_Strict):
    name: str = Field(min_length=1, max_length=64)
    start: str = Field(description="local clock time HH:MM")
    end: str = Field(description="local clock time HH:MM; <= start crosses midnight")
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = list(WEEKDAYS)

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, v: str) -> str:
        parse_clock(v)
        return v

    def build(self) -> Shift:
        return Shift(
            self.name,
            parse_clock(self.start),
            parse_clock(self.end),
            frozenset(WEEKDAYS.index(d) for d in self.days),
        )


class ShiftCalendarSettings(_Strict):
    timezone: str = "UTC"
    shifts: list[ShiftSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _valid(self) -> ShiftCalendarSettings:
        self.build()  # raises ValueError on overlap, unknown zone, duplicate names
        return self

    def build(self) -> ShiftCalendar:
        try:
            return ShiftCalendar([s.build() for s in self.shifts], self.timezone)
        except (KeyError, OSError) as exc:  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc


class PChartSettings(_Strict):
    baseline_n: int = Field(20, ge=2, description="phase-I subgroups before limits freeze")
    center: float | None = Field(None, ge=0, le=1, description="a known p-bar: start in phase II")
    mode: Literal["standard", "laney", "auto"] = "standard"
    trim_phase1: bool = True
    laney_auto_threshold: float = Field(1.5, gt=0)
    min_np: float = Field(5.0, ge=0)
    scrap_window: str = Field("1h", description="window size of the scrap charts' subgroups")
    orders_window: str = Field("1d", description="window size of the order-error charts")

    @model_validator(mode="after")
    def _valid(self) -> PChartSettings:
        self.build()  # e.g. laney with a configured centre has no baseline for sigma_z
        return self

    def build(self) -> PChartConfig:
        return PChartConfig(
            baseline_n=self.baseline_n,
            center=self.center,
            mode=self.mode,
            trim_phase1=self.trim_phase1,
            laney_auto_threshold=self.laney_auto_threshold,
            min_np=self.min_np,
        )


class ServicePolicy(_Strict):
    """One customer segment's service policy (the service-strategy template).

    Applies to the segment's outbound (customer) orders. Every field is
    optional: an unset target is not judged.
    """

    response_time: Duration | None = Field(
        None, description="order creation to its first delivery; later or none is a miss"
    )
    order_fill_rate: float | None = Field(None, ge=0, le=1, description="target share in full")
    perfect_order: float | None = Field(None, ge=0, le=1, description="target perfect-order rate")
    otif: float | None = Field(None, ge=0, le=1, description="target OTIF rate")
    min_order_qty: float | None = Field(
        None, ge=0, description="minimum total ordered quantity (units) of one order"
    )
    consolidated_delivery: bool = Field(False, description="informational only")
    service_level: float | None = Field(
        None, gt=0.5, lt=1, description="cycle service level for safety stock"
    )

    @field_validator("response_time")
    @classmethod
    def _positive(cls, v: Duration | None) -> Duration | None:
        return None if v is None else _check_duration(v, positive=True)


TARGET_KPIS = ("oee", "availability", "performance", "quality", "mttr")


class TargetSettings(_Strict):
    """Performance targets of one line (no `machine`) or one machine."""

    site: str = Field(min_length=1)
    line: str = Field(min_length=1)
    machine: str | None = Field(None, min_length=1)
    oee: float | None = Field(None, ge=0, le=1)
    availability: float | None = Field(None, ge=0, le=1)
    performance: float | None = Field(None, ge=0, le=1)
    quality: float | None = Field(None, ge=0, le=1)
    mttr: Duration | None = Field(None, description="at or below is attained")

    @field_validator("mttr")
    @classmethod
    def _positive(cls, v: Duration | None) -> Duration | None:
        return None if v is None else _check_duration(v, positive=True)

    @model_validator(mode="after")
    def _some_target(self) -> TargetSettings:
        if all(getattr(self, k) is None for k in TARGET_KPIS):
            raise ValueError(f"sets no target: give at least one of {', '.join(TARGET_KPIS)}")
        return self

    @property
    def entity(self) -> tuple[str, str, str | None]:
        return self.site, self.line, self.machine


class ProductionDaySettings(_Strict):
    """A local clock: windows of a size that divides a day follow it, `1d` from `day_start`."""

    timezone: str = Field("UTC", description="IANA zone, e.g. Europe/Berlin")
    day_start: str = Field("00:00", description="local clock time HH:MM the production day starts")

    @field_validator("day_start")
    @classmethod
    def _clock(cls, v: str) -> str:
        parse_clock(v)
        return v

    @model_validator(mode="after")
    def _valid(self) -> ProductionDaySettings:
        self.build()
        return self

    def build(self) -> LocalDay:
        return LocalDay(self.timezone, parse_clock(self.day_start))


class HeartbeatSettings(_Strict):
    """Opt-in: producers of a site, line or machine promise an event at least this often.

    Time more than `timeout` after such a machine's last event is no_data.
    The most specific entry (machine, then line, then site) applies.
    """

    site: str = Field(min_length=1)
    line: str | None = Field(None, min_length=1)
    machine: str | None = Field(None, min_length=1)
    timeout: Duration

    @field_validator("timeout")
    @classmethod
    def _positive(cls, v: Duration) -> Duration:
        return _check_duration(v, positive=True)

    @model_validator(mode="after")
    def _line_for_machine(self) -> HeartbeatSettings:
        if self.machine is not None and self.line is None:
            raise ValueError("a machine entry needs its line too")
        return self


class SafetyStockSettings(_Strict):
    """Safety stock and reorder point per SKU, from demand and lead-time history."""

    enabled: bool = True
    window: Duration = Field("1d", description="records on close of each window of this size")
    horizon: Duration = Field("28d", description="history kept and used (whole days)")
    service_level: float = Field(0.95, gt=0.5, lt=1, description="for SKUs whose segments set none")
    min_demand_days: int = Field(7, ge=2, description="fewer demand days: no recommendation")
    min_lead_time_samples: int = Field(3, ge=2, description="fewer lead times: no recommendation")

    @field_validator("window", "horizon")
    @classmethod
    def _whole_days(cls, v: Duration) -> Duration:
        us = parse_duration_us(v)
        if us <= 0 or us % DAY_US:
            raise ValueError(f"must be a whole number of days, got {v!r}")
        return v

    @model_validator(mode="after")
    def _reachable(self) -> SafetyStockSettings:
        if self.min_demand_days > self.horizon_days:
            raise ValueError(
                f"min_demand_days {self.min_demand_days} exceeds the horizon of "
                f"{self.horizon_days} days"
            )
        return self

    @property
    def horizon_days(self) -> int:
        return parse_duration_us(self.horizon) // DAY_US


class EngineConfig(_Strict):
    """Everything the pure engine needs to know."""

    windows: list[Duration] = Field(
        default_factory=lambda: ["1m", "1h", "1d"],
        min_length=1,
        description="tumbling window sizes (epoch-aligned, UTC)",
    )
    shift_calendar: ShiftCalendarSettings | None = None
    production_day: ProductionDaySettings = Field(
        default_factory=ProductionDaySettings,
        description="the plant's local clock: orders, p-charts of orders, and every site "
        "without an entry in `sites` (default UTC, days from midnight)",
    )
    sites: dict[str, ProductionDaySettings] = Field(
        default_factory=dict, description="a site's own local clock (its machines' windows)"
    )
    allowed_lateness: Duration = Field("5m", description="late events within this still count")
    revision_horizon: Duration = Field(
        "24h",
        description="a machine event this far behind the frontier still revises the closed "
        "windows it belongs to (published again, revision + 1); older: dead-lettered "
        "(too_late). 0s: no revisions",
    )
    past_horizon: Duration | None = Field(
        "7d",
        description="an event older than this behind the newest accepted event (before "
        "there is one, behind the worker's clock) is dead-lettered (past_timestamp): one "
        "stray 1970 stamp must not open 56 years of windows. Off: none",
    )
    state_hold_limit: Duration | None = Field(
        "7d",
        description="a machine's state holds at most this long after its last event of any "
        "kind; later time is not attributed (no windows are opened for it) until the "
        "machine sends again. Off: a state holds for ever",
    )
    heartbeat_timeout: Duration | None = Field(
        None,
        description="opt-in, for producers that send periodically: silence after which a "
        "machine's time is no_data (off: a state holds until the next state event)",
    )
    heartbeats: list[HeartbeatSettings] = Field(
        default_factory=list, description="heartbeat timeouts per site, line or machine"
    )
    silence_alert: Duration | None = Field(
        "30m", description="alert when a running machine has sent nothing for this long"
    )
    counter_modulus: int | None = Field(
        None,
        ge=2,
        description="PLC counters wrap at this value (e.g. 65536); a falling reading is then "
        "a wrap, otherwise a reset",
    )
    on_time_tolerance: Duration = Field("0s", description="slack after promised_at still on time")
    decision_grace: Duration = Field(
        "7d", description="after promised_at + grace an open order is decided"
    )
    decided_memory: Duration = Field("30d", description="how long decided order ids are remembered")
    chain_windows: list[Duration] = Field(default_factory=lambda: ["1d"])
    pchart: PChartSettings = PChartSettings()
    policies: dict[str, ServicePolicy] = Field(
        default_factory=dict, description="service policy per customer segment"
    )
    targets: list[TargetSettings] = Field(
        default_factory=list, description="OEE targets per line or machine"
    )
    target_windows: list[Duration] | None = Field(
        None, description="windows judged against targets; default all sizes but the smallest"
    )
    target_critical_shortfall: float = Field(
        0.1, gt=0, description="relative shortfall from which a miss is critical"
    )
    safety_stock: SafetyStockSettings = SafetyStockSettings()
    max_machines: int = Field(
        100_000,
        ge=1,
        description="distinct machines one engine partition holds; an event of a machine "
        "beyond them is dead-lettered (too_many_machines)",
    )
    max_open_orders: int = Field(
        1_000_000,
        ge=1,
        description="open (undecided) orders one engine partition holds; an event that would "
        "open one more is dead-lettered (too_many_open_orders)",
    )

    @field_validator("allowed_lateness", "on_time_tolerance", "decided_memory", "revision_horizon")
    @classmethod
    def _duration(cls, v: Duration) -> Duration:
        return _check_duration(v)

    @field_validator("decision_grace")
    @classmethod
    def _positive(cls, v: Duration) -> Duration:
        return _check_duration(v, positive=True)

    @field_validator("heartbeat_timeout", "silence_alert", "past_horizon", "state_hold_limit")
    @classmethod
    def _optional_positive(cls, v: Duration | None) -> Duration | None:
        return None if v is None else _check_duration(v, positive=True)

    @field_validator("max_machines", "max_open_orders", mode="before")
    @classmethod
    def _count(cls, v: object) -> object:
        if isinstance(v, bool):  # an int to pydantic: `true` would mean a limit of 1
            raise ValueError(f"must be a positive integer, got {v!r}")
        return v

    @field_validator("windows", "chain_windows")
    @classmethod
    def _sizes(cls, v: list[Duration]) -> list[Duration]:
        for item in v:
            _check_duration(item, positive=True)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EngineConfig:
        sizes = self.window_labels()
        for name, label in (
            ("pchart.scrap_window", self.pchart_scrap_label()),
            ("pchart.orders_window", self.pchart_orders_label()),
        ):
            if label not in sizes:
                raise ValueError(f"{name}: {label!r} is not one of the windows {sizes}")
        for label in self.chain_labels():
            if label not in sizes:
                raise ValueError(f"chain_windows: {label!r} is not one of the windows {sizes}")
        if self.safety_stock.enabled and self.safety_stock_label() not in sizes:
            raise ValueError(
                f"safety_stock.window: {self.safety_stock_label()!r} is not one of the "
                f"windows {sizes}"
            )
        shifts = [s.name for s in self.shift_calendar.shifts] if self.shift_calendar else []
        for item in self.target_windows or []:
            if item not in shifts and _maybe_label(item) not in sizes:
                raise ValueError(
                    f"target_windows: {item!r} is neither one of the windows {sizes} "
                    f"nor a shift {shifts}"
                )
        seen: set[tuple[str, str, str | None]] = set()
        for i, target in enumerate(self.targets):
            if target.entity in seen:
                where = "/".join(p for p in target.entity if p)
                raise ValueError(f"targets[{i}]: a second target entry for {where}")
            seen.add(target.entity)
        self.window_set()  # distinct sizes, shift names not clashing
        return self

    def us(self, name: str) -> int:
        return parse_duration_us(getattr(self, name))

    def optional_us(self, name: str) -> int | None:
        value = getattr(self, name)
        return None if value is None else parse_duration_us(value)

    def heartbeat_us(self, site: str, line: str, machine: str) -> int | None:
        """The heartbeat timeout of one machine: its most specific entry, or the default."""
        best, rank = self.heartbeat_timeout, 0
        for entry in self.heartbeats:
            if entry.site != site or entry.line not in (None, line):
                continue
            if entry.machine not in (None, machine):
                continue
            r = 1 + (entry.line is not None) + (entry.machine is not None)
            if r > rank:
                best, rank = entry.timeout, r
        return None if best is None else parse_duration_us(best)

    def window_set(self, site: str | None = None) -> WindowSet:
        """The windows of a site's machines (its local clock), or with no site the plant's."""
        calendar = self.shift_calendar.build() if self.shift_calendar else None
        local = self.production_day.build()
        if site is not None and site in self.sites:
            local = self.sites[site].build()
        sizes = [parse_duration_us(w) for w in self.windows]
        return WindowSet(sizes, calendar, local=local if local != UTC_DAY else UTC_DAY)

    def window_labels(self) -> list[str]:
        return [_label(w) for w in self.windows]

    def chain_labels(self) -> list[str]:
        return [_label(w) for w in self.chain_windows]

    def pchart_scrap_label(self) -> str:
        return _label(self.pchart.scrap_window)

    def pchart_orders_label(self) -> str:
        return _label(self.pchart.orders_window)

    def target_labels(self) -> list[str]:
        """Window labels judged against targets: by default every size but the smallest."""
        if self.target_windows is not None:
            shifts = {s.name for s in self.shift_calendar.shifts} if self.shift_calendar else set()
            return [w if w in shifts else _label(w) for w in self.target_windows]
        sizes = sorted(parse_duration_us(w) for w in self.windows)
        return [duration_label(us) for us in (sizes[1:] or sizes)]

    def safety_stock_label(self) -> str:
        return _label(self.safety_stock.window)


def _label(value: Duration) -> str:
    return duration_label(parse_duration_us(value))


def _maybe_label(value: Duration) -> str | None:
    try:
        return _label(value)
    except ValueError:
        return None
