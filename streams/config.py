"""Engine configuration: validated, with the defaults the README documents.

Durations are text like '90s', '5m', '1h', '1d' (or numbers of seconds).
Loading from a file and the environment lives in `agents.settings`; this
module only says what a valid configuration is.

The nested settings blocks (shifts, production days, p-chart, policies,
targets, heartbeats, safety stock) live in `streams.config_sections`; this
module holds `EngineConfig`, the checks across blocks, and re-exports every
name.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from streams.config_sections import (
    DAY_US,
    TARGET_KPIS,
    Duration,
    HeartbeatSettings,
    PChartSettings,
    ProductionDaySettings,
    SafetyStockSettings,
    ServicePolicy,
    ShiftCalendarSettings,
    ShiftSettings,
    StrictSettings,
    TargetSettings,
    check_duration,
)
from streams.timeutil import duration_label, parse_duration_us
from streams.windows import UTC_DAY, WindowSet

__all__ = [
    "DAY_US",
    "TARGET_KPIS",
    "Duration",
    "EngineConfig",
    "HeartbeatSettings",
    "PChartSettings",
    "ProductionDaySettings",
    "SafetyStockSettings",
    "ServicePolicy",
    "ShiftCalendarSettings",
    "ShiftSettings",
    "TargetSettings",
]


class EngineConfig(StrictSettings):
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
        return check_duration(v)

    @field_validator("decision_grace")
    @classmethod
    def _positive(cls, v: Duration) -> Duration:
        return check_duration(v, positive=True)

    @field_validator("heartbeat_timeout", "silence_alert", "past_horizon", "state_hold_limit")
    @classmethod
    def _optional_positive(cls, v: Duration | None) -> Duration | None:
        return None if v is None else check_duration(v, positive=True)

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
            check_duration(item, positive=True)
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
