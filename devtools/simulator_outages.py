"""Gateway outages: when a machine's gateway loses its link or its PLC.

Gateway outages, per machine, drawn from their own random stream:

- store-and-forward (the link to Kafka is down): the machine's events of the
  outage are held back and sent, in order and with their own timestamps, all
  at once when it ends: in send order after other machines' later events;
- PLC lost (a share `plc_lost_share` of the outages): the gateway sends
  `unknown` (reason `plc_lost`) when it loses the PLC; when the PLC is back
  it sends the units made meanwhile (per product), then the state as it is.

Split from the profiles (`devtools.simulator_gateway`) because an outage
acts on any profile's records or events, before or after rendering.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from devtools.simulator_records import Made, Record, Span
from streams.timeutil import US


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


def _at(record: Record) -> int:
    return record.ts_us if isinstance(record, Made) else record.start_us


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
