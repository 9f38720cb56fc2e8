"""Seeded, reproducible plant and order-fulfilment simulator.

`simulate(config, seed, start_us, duration_s)` yields the input events of the
event contract (machine-state, orders, shipments) as JSON-ready dicts in send
order: non-decreasing `ts`, except for the bursts of a store-and-forward
gateway outage. It never reads the clock and never touches global random
state: every machine, its gateway and the order stream draw from their own
`random.Random("<seed>/<name>")`, so adding a machine leaves the others alone
and a longer run starts with exactly the events of a shorter one.

Machine model (`devtools.simulator_plant`), per production period of the shift
calendar: run a product for a drawn amount of running time, then change over
(`setup`, reason `changeover`); while running, minor stops (`down`/`jam`),
failures (`down`/`motor_fault`, `tool_break`) and idle periods
(`no_material`, `blocked`, `no_order`) interrupt it, each after an
exponential amount of running time. Units are reported every
`count_interval_s` while running, plus once at the end of every running
interval (same `ts` as the next state event, and before it): total = running
seconds x speed / ideal cycle, speed in 0.85-0.95, and good = total -
Binomial(total, scrap rate).

What each machine's gateway sends is its producer profile (`profiles`), and
gateways may have outages (`outages`); see `devtools.simulator_gateway`. The
default, `periodic`, repeats a state that lasts longer than `heartbeat_s`
every `heartbeat_s`. `plant_truth` gives what the machines really did (units,
good units, time per state), the same for every profile.

    python -m devtools.simulator samples/plant-3-days.jsonl.gz   # regenerate the sample
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from devtools.producer import batched, key_of, topic_of  # noqa: F401 (re-exported)
from devtools.simulator_gateway import (
    MachineTruth,
    Outage,
    Outages,
    PlcCounters,
    Profile,
    Record,
    Renderer,
    draw_outages,
    lose_plc,
    machine_profiles,
    on_change,
    periodic,
    plc_counter,
    store_and_forward,
    tally,
)
from devtools.simulator_orders import OrderConfig, order_events
from devtools.simulator_plant import Machine, planned_calendar  # noqa: F401 (re-exported)
from streams.timeutil import US, to_us


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
    profiles: str = "periodic"
    """What the machines' gateways send: `periodic`, `on-change`, `plc-counter`,
    `mix` (the three in turn) or counts like `periodic=4,on-change=4,plc-counter=3`."""
    outages: Outages | None = None
    """Gateway outages of every machine (store-and-forward bursts, PLC lost)."""
    counter_modulus: int = 65_536
    """PLC counters wrap here; the first `plc-counter` machine starts just below it."""
    plc_restart_share: float = 0.25
    """Share of breakdowns after which a `plc-counter` machine's PLC restarts at 0."""

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
        if self.counter_modulus < 2 or not 0 <= self.plc_restart_share <= 1:
            raise ValueError("counter_modulus must be >= 2, plc_restart_share in [0, 1]")
        self.machine_profiles()  # a bad spec fails here

    def machine_profiles(self) -> dict[str, Profile]:
        """Each machine's producer profile."""
        return machine_profiles(self.profiles, [m for spec in self.lines for m in spec.machines])


# --- the whole plant ------------------------------------------------------------


def _plant(
    config: SimConfig, spec: LineSpec, machine: str, seed: int, start_us: int, end_us: int
) -> tuple[Iterator[Record], list[Outage]]:
    """One machine's plant records and its gateway's outages."""
    records = Machine(config, spec, machine, seed, start_us).records(start_us, end_us)
    outages: list[Outage] = []
    if config.outages is not None:
        rng = random.Random(f"{seed}/{machine}/gateway")
        outages = draw_outages(config.outages, machine, rng, start_us, end_us)
    return records, outages


def _machine_events(
    config: SimConfig, spec: LineSpec, machine: str, profile: Profile, near_wrap: bool,
    seed: int, start_us: int, end_us: int,
) -> Iterator[tuple[int, dict]]:  # fmt: skip
    """One machine's (send time, event) stream as its gateway sends it."""
    records, outages = _plant(config, spec, machine, seed, start_us, end_us)
    lost = [o for o in outages if o.plc_lost]
    seen = lose_plc(records, lost, end_us) if lost else records
    out = Renderer(config.site, spec.line, machine)
    if profile == "periodic":
        events = periodic(seen, out, round(config.heartbeat_s * US))
    elif profile == "on-change":
        events = on_change(seen, out)
    else:
        plc = PlcCounters(
            random.Random(f"{seed}/{machine}/plc"), config.counter_modulus, near_wrap=near_wrap
        )
        events = plc_counter(seen, out, plc, config.plc_restart_share)
    held = [o for o in outages if not o.plc_lost]
    return store_and_forward(events, held) if held else events


def simulate(config: SimConfig, seed: int, start_us: int, duration_s: float) -> Iterator[dict]:
    """The plant's and the order desk's events sent before start + duration, in
    send order (events held back by a gateway outage are sent at its end).

    Events come in non-decreasing send time, which is `ts` but for outage
    bursts; on equal send time, machines in config order, then orders; each
    machine's count flush precedes its state change at the same ts.
    """
    if duration_s < 0:
        raise ValueError(f"duration_s must be >= 0, got {duration_s}")
    end_us = start_us + round(duration_s * US)
    streams: list[Iterator[tuple[int, dict]]] = []
    silent = config.silent_machine
    profiles = config.machine_profiles()
    first_counter = next((m for m, p in profiles.items() if p == "plc-counter"), None)
    for spec in config.lines:
        for machine in spec.machines:
            limit_us = end_us
            if silent is not None and silent.machine == machine:
                limit_us = min(end_us, start_us + round(silent.from_s * US))
            events = _machine_events(
                config, spec, machine, profiles[machine], machine == first_counter,
                seed, start_us, end_us,
            )  # fmt: skip
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


def gateway_outages(config: SimConfig, seed: int, start_us: int, duration_s: float) -> list[Outage]:
    """Every machine's gateway outages of a run, by start."""
    end_us = start_us + round(duration_s * US)
    outages = [
        outage
        for spec in config.lines
        for machine in spec.machines
        for outage in _plant(config, spec, machine, seed, start_us, end_us)[1]
    ]
    return sorted(outages, key=lambda o: (o.start_us, o.machine))


def plant_truth(
    config: SimConfig, seed: int, start_us: int, duration_s: float
) -> dict[str, MachineTruth]:
    """What each machine really did over [start, start + duration), whatever its
    profile sends: units, good units, ideal seconds, failures, time per state,
    and the part of it hidden by PLC-lost outages. It is the plant's: a silent
    machine's, or one whose outage is still open at the end (its events held
    back), is more than it sent."""
    end_us = start_us + round(duration_s * US)
    profiles = config.machine_profiles()
    truth: dict[str, MachineTruth] = {}
    for spec in config.lines:
        for machine in spec.machines:
            records, outages = _plant(config, spec, machine, seed, start_us, end_us)
            lost = [o for o in outages if o.plc_lost]
            found = MachineTruth(machine, spec.line, profiles[machine])
            truth[machine] = tally(found, records, lost, end_us)
    return truth


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
    parser = argparse.ArgumentParser(prog="python -m devtools.simulator", description=__doc__)
    parser.add_argument("out", nargs="?", default=str(SAMPLE_PATH), help="gzip JSON-lines file")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    args = parser.parse_args(argv)
    n = write_sample(args.out, args.seed)
    print(f"wrote {n} events to {args.out}")


if __name__ == "__main__":
    main()
