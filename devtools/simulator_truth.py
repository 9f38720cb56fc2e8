"""What each simulated machine really did, whatever its gateway sent.

Every profile of the same plant carries the same truth: the same units, good
units and state timeline. `tally` sums a machine's plant records into a
`MachineTruth`, so a test can check the engine's KPIs of each rendering
against it; kept apart from the renderings it is the reference for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from devtools.simulator_outages import Outage
from devtools.simulator_records import Made, Record
from streams.timeutil import US

if TYPE_CHECKING:  # not at run time: `devtools.simulator_gateway` re-exports this module
    from devtools.simulator_gateway import Profile


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
