"""Engine configuration: validated, with the defaults the README documents.

Durations are text like '90s', '5m', '1h', '1d' (or numbers of seconds).
Loading from a file and the environment lives in `agents.settings`; this
module only says what a valid configuration is.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streams.pchart import PChartConfig
from streams.timeutil import duration_label, parse_duration_us
from streams.windows import WEEKDAYS, Shift, ShiftCalendar, WindowSet, parse_clock

Duration = str | int | float


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


class EngineConfig(_Strict):
    """Everything the pure engine needs to know."""

    windows: list[Duration] = Field(
        default_factory=lambda: ["1m", "1h", "1d"],
        min_length=1,
        description="tumbling window sizes (epoch-aligned, UTC)",
    )
    shift_calendar: ShiftCalendarSettings | None = None
    allowed_lateness: Duration = Field("5m", description="late events within this still count")
    heartbeat_timeout: Duration = Field("10m", description="silence after which time is no_data")
    on_time_tolerance: Duration = Field("0s", description="slack after promised_at still on time")
    decision_grace: Duration = Field(
        "7d", description="after promised_at + grace an open order is decided"
    )
    decided_memory: Duration = Field("30d", description="how long decided order ids are remembered")
    chain_windows: list[Duration] = Field(default_factory=lambda: ["1d"])
    pchart: PChartSettings = PChartSettings()

    @field_validator("allowed_lateness", "on_time_tolerance", "decided_memory")
    @classmethod
    def _duration(cls, v: Duration) -> Duration:
        return _check_duration(v)

    @field_validator("heartbeat_timeout", "decision_grace")
    @classmethod
    def _positive(cls, v: Duration) -> Duration:
        return _check_duration(v, positive=True)

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
        self.window_set()  # distinct sizes, shift names not clashing
        return self

    def us(self, name: str) -> int:
        return parse_duration_us(getattr(self, name))

    def window_set(self) -> WindowSet:
        calendar = self.shift_calendar.build() if self.shift_calendar else None
        return WindowSet([parse_duration_us(w) for w in self.windows], calendar)

    def window_labels(self) -> list[str]:
        return [_label(w) for w in self.windows]

    def chain_labels(self) -> list[str]:
        return [_label(w) for w in self.chain_windows]

    def pchart_scrap_label(self) -> str:
        return _label(self.pchart.scrap_window)

    def pchart_orders_label(self) -> str:
        return _label(self.pchart.orders_window)


def _label(value: Duration) -> str:
    return duration_label(parse_duration_us(value))
