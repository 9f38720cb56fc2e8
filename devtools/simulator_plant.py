"""The plant model: a shift calendar, and one machine's true behaviour as plant records.

Per production period of the shift calendar a machine runs a product for a
drawn amount of running time, then changes over (`setup`, reason
`changeover`); while running, minor stops (`down`/`jam`), failures
(`down`/`motor_fault`, `tool_break`) and idle periods (`no_material`,
`blocked`, `no_order`) interrupt it, each after an exponential amount of
running time. The records say what happened, not what a gateway sends:
`devtools.simulator_gateway` renders them.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from devtools.simulator_gateway import Made, Record, Span
from streams.timeutil import US

if TYPE_CHECKING:
    from devtools.simulator import LineSpec, Product, Shift, SimConfig

DAY_US = 86_400 * US


# --- shift calendar -------------------------------------------------------------


def _clock_us(text: str) -> int:
    hours, minutes = text.split(":")
    return (int(hours) * 3600 + int(minutes) * 60) * US


def planned_calendar(
    shifts: Iterable[Shift], start_us: int, end_us: int
) -> list[tuple[int, int, str | None]]:
    """Split [start, end) into (from, to, planned-stop reason or None for production)."""
    shifts = tuple(shifts)
    if not shifts:
        return [(start_us, end_us, None)] if start_us < end_us else []
    work: list[tuple[int, int]] = []
    breaks: list[tuple[int, int]] = []
    for day in range(start_us // DAY_US - 1, end_us // DAY_US + 2):
        base = day * DAY_US
        for shift in shifts:
            begin, end = base + _clock_us(shift.start), base + _clock_us(shift.end)
            end += DAY_US if end <= begin else 0
            work.append((begin, end))
            if shift.break_start is not None:
                pause = base + _clock_us(shift.break_start)
                pause += DAY_US if pause < begin else 0
                breaks.append((pause, pause + round(shift.break_min * 60 * US)))
    edges = {start_us, end_us} | {t for span in work + breaks for t in span}
    points = sorted(t for t in edges if start_us <= t <= end_us)
    calendar: list[tuple[int, int, str | None]] = []
    for a, b in itertools.pairwise(points):
        if any(s <= a < e for s, e in breaks):
            reason: str | None = "break"
        elif any(s <= a < e for s, e in work):
            reason = None
        else:
            reason = "no_shift"
        if calendar and calendar[-1][2] == reason:
            calendar[-1] = (calendar[-1][0], b, reason)
        else:
            calendar.append((a, b, reason))
    return calendar


# --- one machine ----------------------------------------------------------------


class Machine:
    """Generates one machine's plant records (`Span`, `Made`); all times whole seconds."""

    def __init__(
        self, config: SimConfig, spec: LineSpec, machine: str, seed: int, start_us: int
    ) -> None:
        self.config, self.spec, self.machine = config, spec, machine
        self.rng = random.Random(f"{seed}/{machine}")
        self.count_us = round(config.count_interval_s * US)
        self.heartbeat_us = round(config.heartbeat_s * US)
        drift = config.scrap_drift
        self.drift = drift if drift is not None and drift.line == spec.line else None
        self.drift_from_us = 0
        if drift is not None:
            noon_us = start_us - start_us % DAY_US + DAY_US // 2
            self.drift_from_us = (
                noon_us if drift.at_s is None else start_us + round(drift.at_s * US)
            )
        self.product: Product | None = None
        self.speed = 1.0
        self.progress = 0.0
        self.run_left = 0

    def _secs(self, low_high: tuple[float, float]) -> int:
        return max(1, round(self.rng.uniform(*low_high))) * US

    def _exp(self, mean_s: float) -> int:
        return max(1, round(self.rng.expovariate(1 / mean_s))) * US if mean_s > 0 else 2**62

    def _span(self, start_us: int, end_us: int, state: str, reason: str | None) -> Span:
        return Span(start_us, end_us, state, reason, self.product)

    def _scrap_rate(self, ts_us: int) -> float:
        """Base rate, ramping linearly to `factor` x base after the drift starts."""
        rate, drift = self.spec.scrap_rate, self.drift
        if drift is None or ts_us <= self.drift_from_us:
            return rate
        ramp = 1.0 if drift.ramp_s <= 0 else (ts_us - self.drift_from_us) / US / drift.ramp_s
        return min(1.0, rate * (1 + (drift.factor - 1) * min(1.0, ramp)))

    def _made(self, ts_us: int, run_us: int) -> Made:
        product = self.product
        assert product is not None, "a product is chosen before the first run"
        # Speed jitters +-3% per interval around the run's speed factor (< 1).
        self.progress += (
            run_us / US * self.speed * self.rng.uniform(0.97, 1.03) / product.ideal_cycle_s
        )
        total = math.floor(self.progress)
        self.progress -= total
        p = self._scrap_rate(ts_us)
        scrap = sum(self.rng.random() < p for _ in range(total))
        return Made(ts_us, product, total, total - scrap)

    def _new_product(self) -> None:
        choices = [p for p in self.spec.products if p != self.product]
        self.product = self.rng.choice(choices or list(self.spec.products))
        self.speed = self.rng.uniform(*self.config.speed_factor)
        self.progress = 0.0
        self.run_left = self._secs(self.config.product_run_s)

    def records(self, start_us: int, end_us: int) -> Iterator[Record]:
        cfg = self.config
        self._new_product()
        next_minor = self._exp(cfg.minor_stop_mtbf_s)
        next_failure = self._exp(cfg.failure_mtbf_s)
        next_idle = self._exp(cfg.idle_mtbf_s)
        for seg_start, seg_end, reason in planned_calendar(cfg.shifts, start_us, end_us):
            if reason is not None:
                yield self._span(seg_start, seg_end, "planned_stop", reason)
                continue
            t = seg_start
            while t < seg_end:
                if self.run_left <= 0:
                    self._new_product()
                    state, why, length = "setup", "changeover", self._secs(cfg.changeover_s)
                elif next_failure <= 0:
                    why = self.rng.choice(["motor_fault", "tool_break"])
                    state, length = "down", self._secs(cfg.failure_s)
                    next_failure = self._exp(cfg.failure_mtbf_s)
                elif next_minor <= 0:
                    state, why, length = "down", "jam", self._secs(cfg.minor_stop_s)
                    next_minor = self._exp(cfg.minor_stop_mtbf_s)
                elif next_idle <= 0:
                    why = self.rng.choice(["no_material", "blocked", "no_order"])
                    state, length = "idle", self._secs(cfg.idle_s)
                    next_idle = self._exp(cfg.idle_mtbf_s)
                else:
                    run = min(next_minor, next_failure, next_idle, self.run_left, seg_end - t)
                    end = t + run
                    yield self._span(t, end, "running", None)
                    while t < end:
                        step = min(self.count_us, end - t)
                        t += step
                        yield self._made(t, step)
                    next_minor -= run
                    next_failure -= run
                    next_idle -= run
                    self.run_left -= run
                    continue
                # A stop cut short by a planned stop is over when production resumes.
                until = min(t + length, seg_end)
                yield self._span(t, until, state, why)
                t = until
