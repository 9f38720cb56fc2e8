"""Seeded, reproducible plant and order-fulfilment simulator.

`simulate(config, seed, start_us, duration_s)` yields the input events of the
event contract (machine-state, orders, shipments) as JSON-ready dicts in
non-decreasing `ts` order. It never reads the clock and never touches global
random state: every machine and the order stream draw from their own
`random.Random("<seed>/<name>")`, so adding a machine leaves the others alone
and a longer run starts with exactly the events of a shorter one.

Machine model, per production period of the shift calendar: run a product for
a drawn amount of running time, then change over (`setup`, reason
`changeover`); while running, minor stops (`down`/`jam`), failures
(`down`/`motor_fault`, `tool_break`) and idle periods (`no_material`,
`blocked`, `no_order`) interrupt it, each after an exponential amount of
running time. Counts come every `count_interval_s` while running, plus one
flush at the end of every running interval (same `ts` as the next state event,
and before it): total = running seconds x speed / ideal cycle, speed in
0.85-0.95, and good = total - Binomial(total, scrap rate). A state that lasts
longer than `heartbeat_s` is repeated every `heartbeat_s`.

    python -m agents.simulator samples/plant-3-days.jsonl.gz   # regenerate the sample
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import itertools
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from agents.producer import batched, key_of, topic_of  # noqa: F401 (re-exported)
from agents.simulator_orders import OrderConfig, order_events
from streams.timeutil import US, iso, to_us

DAY_US = 86_400 * US


@dataclass(frozen=True)
class Product:
    sku: str
    ideal_cycle_s: float


@dataclass(frozen=True)
class LineSpec:
    line: str
    machines: tuple[str, ...]
    products: tuple[Product, ...]
    scrap_rate: float
    """Base probability that a produced unit is scrap."""


@dataclass(frozen=True)
class Shift:
    """A shift in UTC ("HH:MM"; `end` <= `start` crosses midnight) with one planned break."""

    name: str
    start: str
    end: str
    break_start: str | None = None
    break_min: float = 30.0


@dataclass(frozen=True)
class ScrapDrift:
    """From `at_s` after the start (None: noon UTC of the first day), `line`'s scrap
    rate ramps linearly over `ramp_s` up to `factor` times its base rate."""

    line: str = "line-1"
    at_s: float | None = None
    ramp_s: float = 3600.0
    factor: float = 5.0


@dataclass(frozen=True)
class SilentMachine:
    """`machine` sends nothing from `from_s` seconds after the start on."""

    machine: str
    from_s: float


def _default_lines() -> tuple[LineSpec, ...]:
    def machines(kind: str, line_no: int, n: int) -> tuple[str, ...]:
        return tuple(f"{kind}-{line_no}-{i}" for i in range(1, n + 1))

    return (
        LineSpec("line-1", machines("press", 1, 4),
                 (Product("SKU-101", 1.5), Product("SKU-102", 2.0)), 0.015),
        LineSpec("line-2", machines("cnc", 2, 3),
                 (Product("SKU-201", 4.5), Product("SKU-202", 6.0)), 0.010),
        LineSpec("line-3", machines("pack", 3, 4),
                 (Product("SKU-301", 2.5), Product("SKU-302", 3.0), Product("SKU-303", 3.5)),
                 0.020),
    )  # fmt: skip


def _default_shifts() -> tuple[Shift, ...]:
    return (Shift("early", "06:00", "14:00", "10:00"), Shift("late", "14:00", "22:00", "18:00"))


@dataclass(frozen=True)
class SimConfig:
    """Plant layout, shift calendar, stop behaviour and order volumes.

    Durations are seconds; `(low, high)` pairs are uniform ranges; `*_mtbf_s` is
    the mean running time between two stops of that kind (exponential).
    """

    site: str = "plant-1"
    lines: tuple[LineSpec, ...] = field(default_factory=_default_lines)
    shifts: tuple[Shift, ...] = field(default_factory=_default_shifts)
    """No shifts: production around the clock, no planned stops."""
    count_interval_s: float = 60.0
    heartbeat_s: float = 300.0
    speed_factor: tuple[float, float] = (0.85, 0.95)
    product_run_s: tuple[float, float] = (5400.0, 14_400.0)
    changeover_s: tuple[float, float] = (600.0, 1500.0)
    minor_stop_mtbf_s: float = 2400.0
    minor_stop_s: tuple[float, float] = (60.0, 150.0)
    failure_mtbf_s: float = 28_800.0
    failure_s: tuple[float, float] = (600.0, 2400.0)
    idle_mtbf_s: float = 9000.0
    idle_s: tuple[float, float] = (120.0, 1200.0)
    scrap_drift: ScrapDrift | None = field(default_factory=ScrapDrift)
    silent_machine: SilentMachine | None = None
    orders: OrderConfig = field(default_factory=OrderConfig)
    id_prefix: str = ""
    """Prepended to every event_id (e.g. to keep ids of separate runs apart)."""

    def __post_init__(self) -> None:
        if self.count_interval_s <= 0 or self.heartbeat_s <= 0:
            raise ValueError("count_interval_s and heartbeat_s must be > 0")
        names = [m for spec in self.lines for m in spec.machines]
        if len(set(names)) != len(names):
            raise ValueError("machine ids must be unique")
        for spec in self.lines:
            if not spec.machines or not spec.products:
                raise ValueError(f"{spec.line}: needs machines and products")
            if any(p.ideal_cycle_s <= 0 for p in spec.products):
                raise ValueError(f"{spec.line}: ideal_cycle_s must be > 0")
        if not 0 < self.speed_factor[0] <= self.speed_factor[1] <= 1:
            raise ValueError("speed_factor must lie in (0, 1]")


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


class _Machine:
    """Generates one machine's (ts_us, event) stream; all times whole seconds."""

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

    def _state(self, ts_us: int, state: str, reason: str | None) -> tuple[int, dict]:
        return ts_us, {
            "type": "state", "event_id": "", "ts": iso(ts_us), "site": self.config.site,
            "line": self.spec.line, "machine": self.machine, "state": state, "reason": reason,
        }  # fmt: skip

    def _hold(
        self, t_us: int, until_us: int, state: str, reason: str | None
    ) -> Iterator[tuple[int, dict]]:
        """The state at t, repeated every heartbeat while it lasts."""
        while t_us < until_us:
            yield self._state(t_us, state, reason)
            t_us += self.heartbeat_us

    def _scrap_rate(self, ts_us: int) -> float:
        """Base rate, ramping linearly to `factor` x base after the drift starts."""
        rate, drift = self.spec.scrap_rate, self.drift
        if drift is None or ts_us <= self.drift_from_us:
            return rate
        ramp = 1.0 if drift.ramp_s <= 0 else (ts_us - self.drift_from_us) / US / drift.ramp_s
        return min(1.0, rate * (1 + (drift.factor - 1) * min(1.0, ramp)))

    def _count(self, ts_us: int, run_us: int) -> tuple[int, dict]:
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
        return ts_us, {
            "type": "count", "event_id": "", "ts": iso(ts_us), "site": self.config.site,
            "line": self.spec.line, "machine": self.machine, "product": product.sku,
            "ideal_cycle_s": product.ideal_cycle_s, "total": total, "good": total - scrap,
        }  # fmt: skip

    def _new_product(self) -> None:
        choices = [p for p in self.spec.products if p != self.product]
        self.product = self.rng.choice(choices or list(self.spec.products))
        self.speed = self.rng.uniform(*self.config.speed_factor)
        self.progress = 0.0
        self.run_left = self._secs(self.config.product_run_s)

    def events(self, start_us: int, end_us: int) -> Iterator[tuple[int, dict]]:
        cfg = self.config
        self._new_product()
        next_minor = self._exp(cfg.minor_stop_mtbf_s)
        next_failure = self._exp(cfg.failure_mtbf_s)
        next_idle = self._exp(cfg.idle_mtbf_s)
        for seg_start, seg_end, reason in planned_calendar(cfg.shifts, start_us, end_us):
            if reason is not None:
                yield from self._hold(seg_start, seg_end, "planned_stop", reason)
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
                    yield self._state(t, "running", None)
                    end = t + run
                    while t < end:
                        step = min(self.count_us, end - t)
                        t += step
                        yield self._count(t, step)
                    next_minor -= run
                    next_failure -= run
                    next_idle -= run
                    self.run_left -= run
                    continue
                # A stop cut short by a planned stop is over when production resumes.
                until = min(t + length, seg_end)
                yield from self._hold(t, until, state, why)
                t = until


# --- the whole plant ------------------------------------------------------------


def simulate(config: SimConfig, seed: int, start_us: int, duration_s: float) -> Iterator[dict]:
    """The plant's and the order desk's events with start <= ts < start + duration.

    Events come in non-decreasing ts; on equal ts, machines in config order, then
    orders; each machine's count flush precedes its state change at the same ts.
    """
    if duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    end_us = start_us + round(duration_s * US)
    streams: list[Iterator[tuple[int, dict]]] = []
    silent = config.silent_machine
    for spec in config.lines:
        for machine in spec.machines:
            limit_us = end_us
            if silent is not None and silent.machine == machine:
                limit_us = min(end_us, start_us + round(silent.from_s * US))
            events = _Machine(config, spec, machine, seed, start_us).events(start_us, end_us)
            streams.append(
                itertools.takewhile(lambda item, limit=limit_us: item[0] < limit, events)
            )
    order_rng = random.Random(f"{seed}/orders")
    streams.append(order_events(config.orders, order_rng, start_us, end_us))
    numbers: dict[str, int] = {}
    for _, event in heapq.merge(*streams, key=lambda item: item[0]):
        kind = event["type"]
        numbers[kind] = numbers.get(kind, 0) + 1
        event["event_id"] = f"{config.id_prefix}{kind}-{numbers[kind]}"
        yield event


# --- the committed sample day ---------------------------------------------------

SAMPLE_SEED = 7
SAMPLE_START_US = to_us(datetime(2026, 11, 2, tzinfo=UTC))
SAMPLE_DURATION_S = 3 * 86_400.0
SAMPLE_PATH = Path(__file__).resolve().parent.parent / "samples" / "plant-3-days.jsonl.gz"


def sample_events(seed: int = SAMPLE_SEED) -> Iterator[dict]:
    """The sample: three days from 2026-11-02T00:00:00Z, so orders have time to
    ship and the p-charts a phase-I baseline; line-1's scrap drifts from noon
    of the third day."""
    config = SimConfig(scrap_drift=ScrapDrift(at_s=2.5 * 86_400))
    return simulate(config, seed, SAMPLE_START_US, SAMPLE_DURATION_S)


def write_sample(path: str | Path, seed: int = SAMPLE_SEED) -> int:
    """Write the sample day as gzip JSON lines (byte-stable: no name or mtime in
    the gzip header); returns the number of events."""
    n = 0
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out,
    ):
        for event in sample_events(seed):
            out.write(orjson.dumps(event) + b"\n")
            n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agents.simulator", description=__doc__)
    parser.add_argument("out", nargs="?", default=str(SAMPLE_PATH), help="gzip JSON-lines file")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    args = parser.parse_args(argv)
    n = write_sample(args.out, args.seed)
    print(f"wrote {n} events to {args.out}")


if __name__ == "__main__":
    main()
