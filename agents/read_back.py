"""Offsets the consumer did not hand over, read back from the topic and counted.

Ingest and the engine partitions both check that each partition's offsets
follow on; a hole is read back with a client of kpimon's own
(`agents.refill.read_range`) and counted in `Runtime.skipped` as
(stage, "refilled") or, what the broker no longer has, (stage, "lost").
The reader is passed in, so the counting is testable without a broker.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable

from agents.refill import RangeUnavailable

log = logging.getLogger("kpimon")

Item = tuple[int, bytes | None, bytes | None]
"""(offset, key, value) of a message read back."""

ReadRange = Callable[[str, int, int, int], AsyncIterator[Item]]
"""read(topic, partition, start, stop): yield offsets start..stop-1, in order;
raise `RangeUnavailable` once part of the range cannot be read."""


class ReadBack:
    """Reads a hole back with `read` and counts it in `skipped`."""

    def __init__(self, read: ReadRange, skipped: Counter[tuple[str, str]]) -> None:
        self.read = read
        self.skipped = skipped

    async def __call__(
        self, stage: str, topic: str, partition: int, start: int, stop: int
    ) -> list[Item]:
        """Offsets start..stop-1 the consumer did not hand over, read from the topic
        (see `agents.refill`): [(offset, key, value)], counted as refilled or lost."""
        log.warning(
            "%s:%s: offsets %s to %s were not handed over by the consumer; reading them back",
            topic,
            partition,
            start,
            stop - 1,
        )
        found: list[Item] = []
        try:
            async for item in self.read(topic, partition, start, stop):
                found.append(item)
        except RangeUnavailable as exc:
            lost = stop - start - len(found)
            self.skipped[stage, "lost"] += lost
            log.error("%s:%s: %s; up to %s messages lost", topic, partition, exc, lost)
        if found:
            self.skipped[stage, "refilled"] += len(found)
        return found
