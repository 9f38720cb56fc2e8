"""The protocol every windowed KPI state follows, and the laws it keeps.

A KPI over event-time windows is kept as a *summable state*, never as a ratio:

- it starts empty: `cls()`;
- it takes one observation at a time: `add(observation)`;
- it sums with the state of another machine, line, site or window of the
  same kind: `merge(other)`, in place, returning itself; associative and
  commutative, with the empty state as its identity, so roll-ups and the
  engine partitions of a scaled-out worker add up to the same digits in any
  order;
- it reads out as the fields of its record: `result()`, computed once from
  the sums (ratios are never averaged);
- it round-trips through JSON for snapshots: `to_dict()`, `from_dict()`.

`tests/streams/test_kpi.py` checks these laws for every entry of `KPIS`.

Taking a counted observation back out (a revision by late data) is KPI
specific: `OeeState.subtract(state)`, `PerfectOrderState.add(verdict, -1)`.

The p-chart and safety stock are not window sums but judges over the
sequence of closed windows (`PChart.add(d, n)` takes a closed window's
defectives and subgroup size, from the OEE or perfect-order sums;
`SafetyStock.close(window)` reads the demand and lead times of decided
orders): their state is a history, not a sum, so they do not follow it.
"""

from __future__ import annotations

from typing import Any, Protocol, Self, TypeVar, runtime_checkable

from streams.machine import Segment
from streams.oee import OeeState
from streams.perfect_order import OrderVerdict, PerfectOrderState

Observation = TypeVar("Observation", contravariant=True)


@runtime_checkable
class WindowKpi(Protocol[Observation]):
    """A KPI's summable state over one window of one entity (module docstring)."""

    def add(self, observation: Observation) -> None: ...

    def merge(self, other: Self) -> Self: ...

    def result(self) -> dict[str, Any]: ...

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self: ...


KPIS: dict[str, tuple[type[Any], type[Any]]] = {
    "oee": (OeeState, Segment),
    "perfect_order": (PerfectOrderState, OrderVerdict),
}
"""Record kind -> (its state class, the observation its `add` takes)."""
