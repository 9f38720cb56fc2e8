"""Whether each input partition is caught up, judged against fresh end offsets.

Every tick tells the engine, per input partition, whether ingest has read
it to its end; the engine lets a caught-up, quiet input stop holding the
watermark (see `agents.pipeline.Shard`). Getting this wrong closes windows
before their events are read, so it is judged on what is known to be true:

- **read**: the next offset ingest will process: the last one it processed
  plus one; before its first message since start-up, where reading resumes
  (the group's committed offset, or the log start when none was committed).
  The consumer's own position is not used: it runs ahead of the agent as
  soon as a fetch fills the stream buffer.
- **end**: the larger of the consumer's cached high watermark and an end
  offset asked of the broker by `EndOffsetWatcher`, a task off the tick
  path, no older than `max_age`. The cached high watermark alone goes stale
  when Faust stops fetching a partition whose buffer is full; after a
  restart it is unknown until the first fetch.

Without a fresh end offset (the first seconds, a broker that does not
answer) nothing is caught up, so the watermark moves only with events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.kafka_client import client_options
from agents.offsets import committed_offsets, end_offsets
from agents.settings import KafkaSettings

log = logging.getLogger("kpimon")


@dataclass
class InputEnds:
    """What the watcher last learnt, per input partition ("topic", partition)."""

    ends: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)
    """End offset and the monotonic time it was asked."""
    starts: dict[tuple[str, int], int] = field(default_factory=dict)
    """Where reading resumed at start-up: committed offset, else log start."""
    committed: dict[tuple[str, int], int | None] = field(default_factory=dict)
    """The group's committed offset, asked with each end offset (None: none yet)."""

    def caught_up(
        self,
        tp: tuple[str, int],
        last_read: int | None,
        cached_highwater: int | None,
        *,
        now: float,
        max_age: float,
    ) -> bool:
        read = last_read + 1 if last_read is not None else self.starts.get(tp)
        fresh = self.ends.get(tp)
        if read is None or fresh is None or now - fresh[1] > max_age:
            return False
        return read >= max(fresh[0], cached_highwater or 0)


class EndOffsetWatcher:
    """A group-less client that asks the broker for end (and start) offsets."""

    def __init__(
        self, bootstrap: str, kafka: KafkaSettings, group_id: str, *, embedded: bool
    ) -> None:
        self.embedded = embedded
        # group_id only to read the group's committed offsets: this consumer
        # never subscribes, so it never joins the group nor commits.
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            **client_options(kafka),
        )
        self._started = False

    async def refresh(self, partitions: Iterable[tuple[str, int]], into: InputEnds) -> None:
        """Ask for the end offsets of `partitions` (and start offsets not yet known)."""
        tps = [TopicPartition(t, p) for t, p in partitions]
        if not tps:
            return
        if not self._started:
            await self._consumer.start()
            self._started = True
        asked = time.monotonic()
        ends = await end_offsets(self._consumer, tps, embedded=self.embedded)
        new = [tp for tp in tps if (tp.topic, tp.partition) not in into.starts]
        if new:
            firsts = await self._consumer.beginning_offsets(new)
            for tp in new:
                committed = await self._consumer.committed(tp)
                into.starts[tp.topic, tp.partition] = (
                    committed if committed is not None else firsts[tp]
                )
        committed = await committed_offsets(self._consumer, tps)
        for tp, end in ends.items():
            into.ends[tp.topic, tp.partition] = (end, asked)
            into.committed[tp.topic, tp.partition] = committed.get(tp)

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self._consumer.stop()


async def watch(
    watcher: EndOffsetWatcher,
    partitions: Callable[[], Iterable[tuple[str, int]]],
    into: InputEnds,
    interval: float,
) -> None:
    """Refresh `into` every `interval` seconds until cancelled; a failure is logged, not raised."""
    timeout = max(5.0, 2 * interval)
    try:
        while True:
            try:
                await asyncio.wait_for(watcher.refresh(partitions(), into), timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker may be away; the next round retries
                log.warning("end offsets of the inputs not refreshed: %s", exc)
            await asyncio.sleep(interval)
    finally:
        await watcher.close()
