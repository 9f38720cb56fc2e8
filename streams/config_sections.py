"""The settings blocks an `EngineConfig` nests, one concern each.

Shift calendar, production days, p-chart, service policies, performance
targets, heartbeats and safety stock: each block validates its own fields
and, where the engine has a matching object, `build()`s it (a `ShiftCalendar`,
a `LocalDay`, a `PChartConfig`). Checks that span blocks (a p-chart window
that must be one of the window sizes) stay in `streams.config`.

Durations are text like '90s', '5m', '1h', '1d' (or numbers of seconds).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streams.pchart import PChartConfig
from streams.timeutil import US, parse_duration_us
from streams.windows import WEEKDAYS, LocalDay, Shift, ShiftCalendar, parse_clock

Duration = str | int | float
DAY_US = 86_400 * US


class StrictSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_duration(value: Duration, *, positive: bool = False) -> Duration:
    us = parse_duration_us(value)
    if positive and us <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return value


class ShiftSettings(StrictSettings):
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


class ShiftCalendarSettings(StrictSettings):
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


class PChartSettings(StrictSettings):
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


class ServicePolicy(StrictSettings):
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
        return None if v is None else check_duration(v, positive=True)


TARGET_KPIS = ("oee", "availability", "performance", "quality", "mttr")


class TargetSettings(StrictSettings):
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
        return None if v is None else check_duration(v, positive=True)

    @model_validator(mode="after")
    def _some_target(self) -> TargetSettings:
        if all(getattr(self, k) is None for k in TARGET_KPIS):
            raise ValueError(f"sets no target: give at least one of {', '.join(TARGET_KPIS)}")
        return self

    @property
    def entity(self) -> tuple[str, str, str | None]:
        return self.site, self.line, self.machine


class ProductionDaySettings(StrictSettings):
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


class HeartbeatSettings(StrictSettings):
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
        return check_duration(v, positive=True)

    @model_validator(mode="after")
    def _line_for_machine(self) -> HeartbeatSettings:
        if self.machine is not None and self.line is None:
            raise ValueError("a machine entry needs its line too")
        return self


class SafetyStockSettings(StrictSettings):
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
