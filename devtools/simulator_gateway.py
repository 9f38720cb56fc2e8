"""What a machine's gateway sends: the simulated plant rendered as a producer profile.

The plant simulation (`devtools.simulator`) yields one machine's truth as plant
records: a `Span` when the machine enters a state (with the state's end), and
a `Made` for the units made since the previous `Made`. A producer profile
renders those records into events of the contract:

- `periodic`: every state at its start and again every `heartbeat_s` while it
  lasts (running is kept audible by its counts); a `count` of the units made
  every `count_interval_s` while running, and at the end of every run.
- `on-change`: a state only when the state or its reason changes; the same
  counts, so nothing is sent while the machine is stopped.
- `plc-counter`: states on change; production as readings of the PLC's
  cumulative per-product counters (`counter` events) at the same cadence, and
  one at the start of every run (the first reading of a product is the base).
  The counters are 16-bit: they wrap at `counter_modulus`. A failure may
  restart the PLC (`plc_restart_share`): every counter is back at 0.

Gateway outages, per machine, drawn from their own random stream:

- store-and-forward (the link to Kafka is down): the machine's events of the
  outage are held back and sent, in order and with their own timestamps, all
  at once when it ends: in send order after other machines' later events;
- PLC lost (a share `plc_lost_share` of the outages): the gateway sends
  `unknown` (reason `plc_lost`) when it loses the PLC; when the PLC is back
  it sends the units made meanwhile (per product), then the state as it is.

Every profile of the same plant carries the same truth: the same units, good
units and state timeline (`tally` sums it), so a test can check the engine's
KPIs of each rendering against it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from streams.timeutil import US, iso

if TYPE_CHECKING:
    from devtools.simulator import Product

Profile = Literal["periodic", "on-change", "plc-counter"]
PROFILES: tuple[Profile, ...] = get_args(Profile)
FAILURES = frozenset({"motor_fault", "tool_break"})
"""Down reasons that are breakdowns (a PLC may restart after one)."""


@dataclass(frozen=True)
class Outages:
    """Gateway outages of every machine: exponential gaps of mean `mean_gap_s`
    (wall time) between the end of one and the start of the next, each lasting
    a uniform `duration_s`; a share `plc_lost_share` lose the PLC (sent
    `unknown`), the others hold events back (store-and-forward)."""

    mean_gap_s: float = 2 * 86_400.0
    duration_s: tuple[float, float] = (3600.0, 10_800.0)
    plc_lost_share: float = 0.0

    def __post_init__(self) -> None:
        if self.mean_gap_s <= 0 or not 0 < self.duration_s[0] <= self.duration_s[1]:
            raise ValueError("outages: mean_gap_s and duration_s must be > 0, low <= high")
        if not 0 <= self.plc_lost_share <= 1:
            raise ValueError("outages: plc_lost_share must lie in [0, 1]")


@dataclass(frozen=True)
class Outage:
    """One gateway outage over [start_us, end_us)."""

    machine: str
    start_us: int
    end_us: int
    plc_lost: bool


# --- plant records --------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """The machine is in `state` over [start_us, end_us), making `product`."""

    start_us: int
    end_us: int
    state: str
    reason: str | None
    product: Product | None


@dataclass(frozen=True)
class Made:
    """`total` units of `product` (`good` of them good) made up to `ts_us`."""

    ts_us: int
    product: Product
    total: int
    good: int


Record = Span | Made


def _at(record: Record) -> int:
    return record.ts_us if isinstance(record, Made) else record.start_us


# --- profiles ---------------------------------------------------------------------


def machine_profiles(spec: str, machines: Sequence[str]) -> dict[str, Profile]:
    """Each machine's profile from a spec, machines in config order.

    `periodic`, `on-change` or `plc-counter`: every machine; `mix`: the three
    in turn; `periodic=4,on-change=4,plc-counter=3`: that many of each, dealt
    in turn (the counts must add up to the number of machines).

    >>> machine_profiles("periodic=1,plc-counter=2", ["a", "b", "c"])
    {'a': 'periodic', 'b': 'plc-counter', 'c': 'plc-counter'}
    """
    text = spec.strip()
    if text in PROFILES:
        return dict.fromkeys(machines, text)  # type: ignore[arg-type]
    if text == "mix":
        return {m: PROFILES[i % len(PROFILES)] for i, m in enumerate(machines)}
    left: dict[Profile, int] = {}
    for part in text.split(","):
        name, _, number = part.partition("=")
        name = name.strip()
        if name not in PROFILES or not number.strip().isdigit() or name in left:
            raise ValueError(
                f"profiles: {spec!r} is not one of {', '.join(PROFILES)}, 'mix' "
                f"or counts like 'periodic=4,on-change=4,plc-counter=3'"
            )
        left[name] = int(number)  # type: ignore[index]
    if sum(left.values()) != len(machines):
        raise ValueError(
            f"profiles: {spec!r} gives {sum(left.values())} machines, the plant has {len(machines)}"
        )
    dealt: list[Profile] = []
    while any(left.values()):
        for profile in PROFILES:
            if left.get(profile):
                dealt.append(profile)
                left[profile] -= 1
    return dict(zip(machines, dealt, strict=True))


@dataclass
class Renderer:
    """Builds one machine's events (ids are numbered later, in send order)."""

    site: str
    line: str
    machine: str

    def state(self, ts_us: int, state: str, reason: str | None) -> tuple[int, dict]:
        return ts_us, {
            "type": "state", "event_id": "", "ts": iso(ts_us), "site": self.site,
            "line": self.line, "machine": self.machine, "state": state, "reason": reason,
        }  # fmt: skip

    def units(
        self, kind: str, ts_us: int, product: Product, total: int, good: int
    ) -> tuple[int, dict]:
        return ts_us, {
            "type": kind, "event_id": "", "ts": iso(ts_us), "site": self.site,
            "line": self.line, "machine": self.machine, "product": product.sku,
            "ideal_cycle_s": product.ideal_cycle_s, "total": total, "good": good,
        }  # fmt: skip


def periodic(
    records: Iterable[Record], out: Renderer, heartbeat_us: int
) -> Iterator[tuple[int, dict]]:
    """Every state at its start, repeated every heartbeat; running is kept
    audible by its counts."""
    for r in records:
        if isinstance(r, Made):
            yield out.units("count", r.ts_us, r.product, r.total, r.good)
        elif r.state == "running":
            yield out.state(r.start_us, r.state, r.reason)
        else:
            t = r.start_us
            while t < r.end_us:
                yield out.state(t, r.state, r.reason)
                t += heartbeat_us


def on_change(records: Iterable[Record], out: Renderer) -> Iterator[tuple[int, dict]]:
    """A state only when it (or its reason) changes; counts while running."""
    last: tuple[str, str | None] | None = None
    for r in records:
        if isinstance(r, Made):
            yield out.units("count", r.ts_us, r.product, r.total, r.good)
        elif (r.state, r.reason) != last and r.end_us > r.start_us:
            last = (r.state, r.reason)
            yield out.state(r.start_us, r.state, r.reason)


@dataclass
class PlcCounters:
    """A PLC's cumulative total and good counters per product, wrapping at `modulus`.

    Each product's counters start at a drawn value (`near_wrap`: just below
    the modulus, so the first wrap comes early); a restart sets all to 0.
    """

    rng: random.Random
    modulus: int
    near_wrap: bool = False
    counts: dict[str, list[int]] = field(default_factory=dict)

    def _of(self, product: Product) -> list[int]:
        counts = self.counts.get(product.sku)
        if counts is None:
            if self.near_wrap:
                total = self.modulus - self.rng.randint(300, 1500)
            else:
                total = self.rng.randrange(self.modulus // 4)
            good = total - self.rng.randint(0, total // 50)
            counts = self.counts[product.sku] = [total, good]
        return counts

    def add(self, made: Made) -> None:
        counts = self._of(made.product)
        counts[0] += made.total
        counts[1] += made.good

    def read(self, product: Product) -> tuple[int, int]:
        total, good = self._of(product)
        return total % self.modulus, good % self.modulus

    def restart(self) -> None:
        for counts in self.counts.values():
            counts[0] = counts[1] = 0


def plc_counter(
    records: Iterable[Record], out: Renderer, plc: PlcCounters, restart_share: float
) -> Iterator[tuple[int, dict]]:
    """States on change; a counter reading at the start of every run and for
    every `Made`; a breakdown restarts the PLC with probability `restart_share`."""
    last: tuple[str, str | None] | None = None
    for r in records:
        if isinstance(r, Made):
            plc.add(r)
            yield out.units("counter", r.ts_us, r.product, *plc.read(r.product))
            continue
        if r.end_us <= r.start_us:
            continue
        if r.state == "down" and r.reason in FAILURES and plc.rng.random() < restart_share:
            plc.restart()  # during the breakdown: the next reading shows it
        if (r.state, r.reason) != last:
            last = (r.state, r.reason)
            yield out.state(r.start_us, r.state, r.reason)
            if r.state == "running" and r.product is not None:
                yield out.units("counter", r.start_us, r.product, *plc.read(r.product))


# --- outages ----------------------------------------------------------------------


def draw_outages(
    outages: Outages, machine: str, rng: random.Random, start_us: int, end_us: int
) -> list[Outage]:
    """The machine's outages starting before `end_us`, whole seconds (a longer
    run starts with the outages of a shorter one)."""
    drawn: list[Outage] = []
    t = start_us
    while True:
        t += max(1, round(rng.expovariate(1 / outages.mean_gap_s))) * US
        length = max(1, round(rng.uniform(*outages.duration_s))) * US
        plc_lost = rng.random() < outages.plc_lost_share
        if t >= end_us:
            return drawn
        drawn.append(Outage(machine, t, t + length, plc_lost))
        t += length


def lose_plc(records: Iterable[Record], lost: Sequence[Outage], end_us: int) -> Iterator[Record]:
    """The plant as seen by a gateway that loses its PLC over each outage:
    `unknown` from its start; at its end the units made meanwhile (one `Made`
    per product) and then the state the machine is in, if it started before."""
    pending = sorted(lost, key=lambda o: o.start_us)
    hidden: dict[str, Made] = {}
    current: Span | None = None
    inside: Outage | None = None

    def clipped(span: Span, start_us: int) -> Span:
        """The span from `start_us`, ending where the next loss begins (a renderer
        repeating a state must not repeat it into the loss)."""
        end_us = span.end_us
        if pending and start_us < pending[0].start_us < end_us:
            end_us = pending[0].start_us
        if (start_us, end_us) == (span.start_us, span.end_us):
            return span
        return Span(start_us, end_us, span.state, span.reason, span.product)

    def boundaries(until_us: int) -> Iterator[Record]:
        nonlocal inside
        while True:
            if inside is not None and inside.end_us <= until_us:
                end = inside.end_us
                yield from hidden.values()
                hidden.clear()
                inside = None
                if current is not None and current.start_us < end < current.end_us:
                    yield clipped(current, end)
            elif inside is None and pending and pending[0].start_us <= until_us:
                inside = pending.pop(0)
                product = current.product if current else None
                yield Span(inside.start_us, inside.end_us, "unknown", "plc_lost", product)
            else:
                return

    for r in records:
        yield from boundaries(_at(r))
        if isinstance(r, Span):
            current = r
        if inside is None:
            yield clipped(r, r.start_us) if isinstance(r, Span) else r
        elif isinstance(r, Made):
            seen = hidden.get(r.product.sku)
            hidden[r.product.sku] = Made(
                inside.end_us, r.product, r.total + (seen.total if seen else 0),
                r.good + (seen.good if seen else 0),
            )  # fmt: skip
    yield from boundaries(end_us - 1)


def store_and_forward(
    events: Iterable[tuple[int, dict]], held: Sequence[Outage]
) -> Iterator[tuple[int, dict]]:
    """(ts, event) -> (send time, event): an event inside an outage is sent at its end."""
    pending = sorted(held, key=lambda o: o.start_us)
    for ts_us, event in events:
        while pending and pending[0].end_us <= ts_us:
            pending.pop(0)
        yield (pending[0].end_us if pending and pending[0].start_us <= ts_us else ts_us), event


# --- the truth ----------------------------------------------------------------------


@dataclass
class MachineTruth:
    """What one machine really did over a run, whatever its gateway sent.

    `seconds_by_state`: the plant's time per state; `hidden_by_state`: the part
    of it under a PLC-lost outage (the engine can only count it as no data);
    `total`/`good` units and `ideal_s` = sum(ideal cycle x units) are all sent
    (units made while the PLC was lost come when it is back).
    """

    machine: str
    line: str
    profile: Profile
    total: int = 0
    good: int = 0
    ideal_s: float = 0.0
    failures: int = 0
    seconds_by_state: dict[str, float] = field(default_factory=dict)
    hidden_by_state: dict[str, float] = field(default_factory=dict)

    @property
    def running_s(self) -> float:
        return self.seconds_by_state.get("running", 0.0)

    @property
    def visible_running_s(self) -> float:
        """Running time the engine can see: outside every PLC-lost outage."""
        return self.running_s - self.hidden_by_state.get("running", 0.0)


def tally(
    truth: MachineTruth, records: Iterable[Record], lost: Sequence[Outage], end_us: int
) -> MachineTruth:
    """Sum a machine's plant records (up to `end_us`) into `truth`."""
    ideal_us = 0
    previous: str | None = None
    for r in records:
        if isinstance(r, Made):
            if r.ts_us < end_us:
                truth.total += r.total
                truth.good += r.good
                ideal_us += round(r.product.ideal_cycle_s * r.total * US)
            continue
        span_end = min(r.end_us, end_us)
        if span_end <= r.start_us:
            continue
        seconds = truth.seconds_by_state
        seconds[r.state] = seconds.get(r.state, 0.0) + (span_end - r.start_us) / US
        truth.failures += r.state == "down" and previous != "down"
        previous = r.state
        for outage in lost:
            overlap = min(span_end, outage.end_us) - max(r.start_us, outage.start_us)
            if overlap > 0:
                hidden = truth.hidden_by_state
                hidden[r.state] = hidden.get(r.state, 0.0) + overlap / US
    truth.ideal_s = ideal_us / US
    return truth
