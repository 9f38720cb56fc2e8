"""Python's cyclic garbage collector, set for a process that holds a large state.

A worker (and `kpimon replay`) keeps hundreds of thousands of long-lived
objects: pending events, histories, open orders, seen ids. With Python's
default thresholds (700, 10, 10) a collection of the young generation runs
every 700 allocations and an older one every 7,000, and each walks objects
that a batch of events made and still holds, again and again until they
reach the oldest generation. The engine makes no reference cycles (its
garbage is freed by reference counting); Faust and asyncio make a few.

Measured on the bench mix in-process (`devtools.bench_inprocess engine`,
400,000 events, 1,000 machines): 26.8-29.3 us an event with the default
thresholds, 23.0 with these; the gateway phase alone (500,000 events, one
worker): 17,531 and 17,493 ev/s with the default, 21,450 and 20,570 with
these; the memory phase's peak RSS did not rise (461 MiB).
"""

from __future__ import annotations

import gc

YOUNG = 50_000
"""Allocations (less deallocations) between collections of the young generation."""
MIDDLE = 20
"""Young collections between collections of the middle generation."""
OLD = 10
"""Middle collections before the oldest generation is considered; Python
collects it only once its survivors have grown by a quarter since the last."""


def for_long_lived_state() -> None:
    """Set the thresholds above, and move every object alive now (modules,
    classes, settings: what start-up made) out of the collector's sight."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
