"""The plant's truth as records: what a simulated machine did, before any gateway.

The plant simulation (`devtools.simulator_plant`) yields one machine's history
as these records; the gateway profiles (`devtools.simulator_gateway`) render
them as events, the outages (`devtools.simulator_outages`) hide or delay them,
and `devtools.simulator_truth` sums them. They live in a module of their own
because all four use them and none of those should import another for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from devtools.simulator import Product


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
