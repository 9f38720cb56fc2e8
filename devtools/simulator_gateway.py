"""What a machine's gateway sends: the simulated plant rendered as a producer profile.

The plant simulation (`devtools.simulator`) yields one machine's truth as plant
records (`devtools.simulator_records`): a `Span` when the machine enters a
state (with the state's end), and a `Made` for the units made since the
previous `Made`. A producer profile renders those records into events of the
contract:

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

A gateway may also have outages (`devtools.simulator_outages`). Every profile
of the same plant carries the same truth (`devtools.simulator_truth`). This
module still exports their names, so the simulator has one place to import
the gateway from.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

from devtools.simulator_outages import (  # noqa: F401 (re-exported)
    Outage,
    Outages,
    draw_outages,
    lose_plc,
    store_and_forward,
)
from devtools.simulator_records import Made, Record, Span  # noqa: F401 (re-exported)
from devtools.simulator_truth import MachineTruth, tally  # noqa: F401 (re-exported)
from streams.timeutil import iso

if TYPE_CHECKING:
    from devtools.simulator import Product

Profile = Literal["periodic", "on-change", "plc-counter"]
PROFILES: tuple[Profile, ...] = get_args(Profile)
FAILURES = frozenset({"motor_fault", "tool_break"})
"""Down reasons that are breakdowns (a PLC may restart after one)."""


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
