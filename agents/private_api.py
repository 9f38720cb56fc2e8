"""The one module that reaches into Faust's and aiokafka's private API.

Each function below names the private attribute it uses and why no public
API does the job. Everything else in `agents/` uses public API only
(`tests/agents/test_private_api.py` keeps it so).

Private API changes without notice, so this module checks at import that the
installed faust-streaming and aiokafka are the major.minor versions it was
written and tested against (`TESTED`); any other fails with one line naming
the package, the version installed and the range expected. After an upgrade:
check each function here against the new sources, run the tests, then raise
`TESTED`.
"""

from __future__ import annotations

import asyncio
import bisect
import importlib.metadata
import re
import types
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web as aiohttp_web
from aiokafka import AIOKafkaClient, AIOKafkaConsumer, TopicPartition
from mode.services import WaitResults

from agents.outbox import kept

if TYPE_CHECKING:
    import faust
    from aiokafka.structs import OffsetAndMetadata

__all__ = [
    "TESTED",
    "UntestedVersion",
    "check_versions",
    "committed_offset",
    "delete_table_row",
    "consumer_client",
    "fetch_committed_offsets",
    "hand_over_directly",
    "limit_fetch_wait",
    "mark_read_back",
    "reads_committed",
    "replace_recovery_highwaters",
    "restore_recovery_highwaters",
    "set_table_row",
    "stop_worker",
    "stream_response",
    "wait_on_metadata",
]

TESTED: dict[str, tuple[int, int]] = {"faust-streaming": (0, 15), "aiokafka": (0, 14)}
"""Distribution -> the (major, minor) version this module was tested with."""


class UntestedVersion(ImportError):
    """An installed faust-streaming or aiokafka is not the version `TESTED` names."""


def check_versions(version: Callable[[str], str] = importlib.metadata.version) -> None:
    """Raise `UntestedVersion` unless every `TESTED` package is at its major.minor.

    `version` reads a distribution's installed version (`importlib.metadata`'s
    by default; tests pass their own). Patch releases are accepted.
    """
    for package, (major, minor) in TESTED.items():
        expected = f">={major}.{minor},<{major}.{minor + 1}"
        try:
            installed = version(package)
        except importlib.metadata.PackageNotFoundError:
            installed = "none"
        found = re.match(r"(\d+)\.(\d+)", installed)
        if found is None or (int(found[1]), int(found[2])) != (major, minor):
            raise UntestedVersion(
                f"kpimon: {package} {installed} is installed but agents/private_api.py "
                f"is tested with {package}{expected} only (it uses private API): install "
                f"{package}{expected}, or check agents/private_api.py against "
                f"{package} {installed} and update TESTED"
            )


check_versions()


# ------------------------------------------------------------------ aiokafka


def consumer_client(consumer: AIOKafkaConsumer) -> AIOKafkaClient:
    """The consumer's connected client (`AIOKafkaConsumer._client`).

    `agents.offsets.end_offsets` sends its own ListOffsets and Fetch requests
    over the consumer's connections; the consumer has no public accessor.
    """
    return consumer._client


def reads_committed(consumer: AIOKafkaConsumer) -> bool:
    """Whether the consumer was built with `isolation_level="read_committed"`
    (`AIOKafkaConsumer._isolation_level`; not exposed otherwise)."""
    return consumer._isolation_level == "read_committed"


async def fetch_committed_offsets(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, OffsetAndMetadata]:
    """The group's committed offsets of `partitions`, in one OffsetFetch request
    (`AIOKafkaConsumer._coordinator.fetch_committed_offsets`).

    The public `AIOKafkaConsumer.committed()` sends one request per partition.
    Partitions without a committed offset are missing or carry offset -1.
    """
    return await consumer._coordinator.fetch_committed_offsets(partitions)


async def wait_on_metadata(client: AIOKafkaClient, topic: str) -> None:
    """Refresh the client's metadata until it knows `topic`
    (`AIOKafkaClient._wait_on_metadata`; raises `UnknownTopicOrPartitionError`).

    The public `force_metadata_update()` does not add a topic the client has
    not been asked about yet.
    """
    await client._wait_on_metadata(topic)


# --------------------------------------------------------------------- Faust


def committed_offset(app: faust.App, topic: str, partition: int) -> int | None:
    """The offset the Faust consumer resumed reading `topic:partition` at: its
    committed offset as last read from the group (`Consumer._committed_offset`),
    None when nothing was committed.

    The public `Consumer.committed()` asks the broker again; ingest needs the
    value Faust seeked to, without a round trip per assigned partition.
    """
    from faust.types import TP

    return app.consumer._committed_offset.get(TP(topic, partition))  # type: ignore[attr-defined]


async def mark_read_back(app: faust.App, topic: str, partition: int, start: int, stop: int) -> None:
    """Let the Faust consumer commit past offsets start..stop-1 of `topic:partition`,
    which it read from the broker but never handed to the agent; kpimon read
    them back with a client of its own (`agents.refill`) and applied them.

    Faust commits a partition up to its first offset not acknowledged, and
    only an event handed over can be acknowledged: one offset lost between
    Faust's fetcher and the stream (faust-streaming #216, #606) stopped the
    group's committed offset there for good, however far the worker read
    (seen: 20,000 messages read, committed offset stuck at 157). Faust marks
    offsets the broker itself skipped as a gap (`Consumer._add_gap`, which
    `Consumer._new_offset` counts as acknowledged); this records the range read
    back the same way. The caller does so once the range's outputs are
    delivered, as it acknowledges any other offset.
    """
    from faust.types import TP

    if start < stop:
        await app.consumer._add_gap(TP(topic, partition), start, stop - 1)  # type: ignore[attr-defined]


def count_acks_once(consumer: Any) -> None:
    """Make Faust's commit count each acknowledged offset once.

    `Consumer._new_offset` commits a partition up to the end of the first run
    of consecutive offsets among those acknowledged (`_acked[tp]`, a list),
    merged with the gaps (`_gap[tp]`: offsets the broker skipped, and ranges
    kpimon read back, `mark_read_back`). An offset there twice ends the run
    (`consecutive_numbers` counts positions), so the commit moved on by one
    offset a commit: after a restart under load, an input's committed offset
    crawled about 115 offsets into a 20,000-message backlog in the 120 s the
    lag test waits. Seen twice: offsets both read back and handed over by
    the consumer after all (late), and acknowledged offsets repeated at the
    start of a partition right after an assignment. This wraps the instance's
    `_new_offset` to drop the repeats, and the acknowledged offsets from the
    gaps, before Faust's own count.
    """
    original = consumer._new_offset

    def new_offset(tp: Any) -> Any:
        acked = consumer._acked.get(tp)
        if acked:
            unique = sorted(set(acked))
            if len(unique) != len(acked):
                acked[:] = unique
            gap = consumer._gap.get(tp)
            if gap:
                for interval in sorted(gap):
                    at = bisect.bisect_left(unique, interval.begin)
                    while at < len(unique) and unique[at] < interval.end:
                        gap.chop(unique[at], unique[at] + 1)
                        at += 1
        return original(tp)

    consumer._new_offset = new_offset


def limit_fetch_wait(app: faust.App, seconds: float) -> None:
    """Make the app's consumer wait at most `seconds` for a fetch to fill.

    Faust fixes aiokafka's `fetch_max_wait_ms` at 1,500 ms. A broker that
    answers a fetch only when that wait is over (the embedded one does:
    measured p50 0.40 s from produce to consume at 1.5 s, 0.03 s at 0.1 s)
    then delays every event twice, on the input and on the engine topic.
    Kafka answers as soon as data is there, so this only bounds idle polls.

    Wraps the driver thread's `AIOKafkaConsumerThread._create_worker_consumer`
    (`app.consumer._thread`) to set `AIOKafkaConsumer._fetch_max_wait_ms`,
    which aiokafka reads when the consumer starts.
    """
    thread = app.consumer._thread  # type: ignore[attr-defined]
    create = thread._create_worker_consumer

    def create_worker_consumer(transport: Any) -> Any:
        consumer = create(transport)
        consumer._fetch_max_wait_ms = round(seconds * 1000)  # read when it starts
        return consumer

    thread._create_worker_consumer = create_worker_consumer


def keep_faust_assignor(app: faust.App) -> None:
    """Make the app's consumer join its group with Faust's assignor always.

    Faust's aiokafka driver picks aiokafka's round-robin assignor for an app
    with no changelog table (`_create_worker_consumer`), Faust's own
    otherwise. A group whose members differ in that (an ingest-only worker
    has no table, an engine worker has the snapshot table: `worker.role`)
    cannot form: the broker refuses the second kind to join
    (InconsistentGroupProtocolError). Faust's assignor also gives each member
    only the topics it subscribes to, which a mixed group needs.

    Wraps `AIOKafkaConsumerThread._create_worker_consumer` as
    `limit_fetch_wait` does, to set `AIOKafkaConsumer._partition_assignment_strategy`,
    which aiokafka reads when the consumer starts.

    Holds while `table_standby_replicas` is 0 (`agents.faust_settings`): the
    group's leader fills in every member's assignment with the changelog
    topics it knows itself, so an ingest-only leader would leave out an
    engine worker's standby partitions, and that member fails its check of
    the assignment. Do not turn standbys on without a mixed group's test.
    """
    thread = app.consumer._thread  # type: ignore[attr-defined]
    create = thread._create_worker_consumer

    def create_worker_consumer(transport: Any) -> Any:
        consumer = create(transport)
        thread._assignor = app.assignor
        consumer._partition_assignment_strategy = [app.assignor]  # read when it starts
        return consumer

    thread._create_worker_consumer = create_worker_consumer


def hand_over_directly(consumer: Any) -> None:
    """Hand each fetched message to the streams without four tasks a message.

    Faust's fetch loop (`Consumer._drain_messages`) hands every message over
    with `self.wait_first(callback(message), self.suspend_flow.wait())`, so
    that a rebalance (`suspend_flow`) abandons a hand-over stuck on a full
    stream buffer. `mode`'s `wait_first` makes a task for each awaitable and
    for the service's stopped and crashed events, waits, then cancels the
    losers: per message, whether or not the hand-over ever waits. Measured
    with a Faust agent that does nothing on single-event messages: about a
    fifth of its time (11,000 msg/s, 12,700 with this).

    This wraps the consumer's `wait_first` (an attribute of the instance;
    Faust's code is unchanged): for that one call, recognised by its second
    awaitable being `suspend_flow.wait()`, the hand-over coroutine is run
    up to its first wait here. Most finish there (the buffer had room): done,
    no task made. One that waits continues inside Faust's own `wait_first`
    against `suspend_flow`, as before. Any other call goes to Faust's.
    """
    original = consumer.wait_first
    flow_wait = asyncio.Event.wait.__code__

    def is_flow_wait(awaitable: Any) -> bool:
        frame = getattr(awaitable, "cr_frame", None)
        return (
            frame is not None
            and awaitable.cr_code is flow_wait
            and frame.f_locals.get("self") is consumer.suspend_flow
        )

    async def wait_first(*coros: Any, timeout: Any = None) -> WaitResults:
        if not (
            timeout is None
            and len(coros) == 2
            and asyncio.iscoroutine(coros[0])
            and is_flow_wait(coros[1])
        ):
            return await original(*coros, timeout=timeout)
        handing, flow = coros
        try:
            yielded = handing.send(None)
        except StopIteration as done:
            flow.close()
            if consumer._stopped.is_set() or consumer._crashed.is_set():
                return WaitResults([], [], True)  # as Faust's answers then
            return WaitResults([handing], [done.value], False)
        except BaseException:
            flow.close()
            raise
        return await original(_resumed(handing, yielded), flow)

    consumer.wait_first = wait_first


async def _resumed(coro: Any, yielded: Any) -> Any:
    """Await the rest of `coro`, which already ran up to yielding `yielded`."""
    return await _continue(coro, yielded)


@types.coroutine
def _continue(coro: Any, yielded: Any) -> Any:
    # What `yield from coro` does, from a coroutine's first yield on: each
    # value it yields goes to the task, each answer (or exception) back in.
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as done:
                return done.value


def set_table_row(table: faust.Table, partition: int, key: str, value: Any) -> Any:
    """Set `table[key] = value` and return its changelog delivery (a future).

    What `Table.__setitem__` does (`Table.on_key_set`: `send_changelog`, then
    the local store `Table.data`), except that it keeps the future of the
    changelog record, which `__setitem__` drops, writes to `partition` rather
    than `partition_for_key(key)` (the current event's), and skips the key's
    TTL bookkeeping and the set sensor (the snapshot table has neither).
    The caller awaits the future before acknowledging the input the row covers.
    The value is serialised here as the table's JSON codec would, but into
    bytes of their own size (`agents.outbox.kept`): the codec's `orjson`
    output keeps its whole write buffer while the record waits in the producer.
    """
    serialised = kept(orjson.dumps(value))
    delivered = table.send_changelog(partition, key, serialised, value_serializer="raw")
    table.data[key] = value
    return delivered


def delete_table_row(table: faust.Table, partition: int, key: str) -> Any:
    """Delete `table[key]` and return the tombstone's changelog delivery.

    What `Table.__delitem__` does (`Table.on_key_del`: a changelog record
    with value None, then `del Table.data[key]`), written to `partition`
    rather than the current event's (`del` needs one being processed), as
    `set_table_row` does. A row already gone is no error.
    """
    delivered = table.send_changelog(partition, key, None, value_serializer="raw")
    table.data.pop(key, None)
    return delivered


async def stream_response(request: Any, chunks: Iterable[bytes], content_type: str) -> Any:
    """Answer a Faust page's `request` with `chunks`, written as they come.

    Faust's web views return a whole body (`Web.bytes`); its aiohttp
    driver hands the page aiohttp's own request (`faust.web.drivers.aiohttp`
    routes the view on its `web_app`), so an aiohttp `StreamResponse`
    prepared on it answers instead, and Faust passes it through. Nothing
    public in Faust streams a body.
    """
    response = aiohttp_web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


def stop_worker(worker: faust.Worker) -> None:
    """Stop the worker as Ctrl-C would (`mode.Worker._on_sigint`): a clean
    shutdown scheduled on its loop. mode has no public stop for a worker
    started with `execute_from_commandline()`."""
    worker._on_sigint()


# `AIOKafkaConsumerThread._highwaters` as Faust shipped it, while replaced.
_ORIGINAL: dict[str, Any] = {}

EndOffsets = Callable[
    [AIOKafkaConsumer, list[TopicPartition]], Awaitable[dict[TopicPartition, int]]
]


def replace_recovery_highwaters(end_offsets: EndOffsets) -> bool:
    """Make Faust's table recovery ask `end_offsets` for changelog end offsets.

    Replaces `AIOKafkaConsumerThread._highwaters` (Faust's aiokafka driver),
    process-wide, with a call of `end_offsets(consumer, partitions)` on the
    driver's aiokafka consumer (`_ensure_consumer()`); transactional
    consumers keep Faust's own code. Faust has no hook for this. Idempotent:
    returns True if it replaced it now; undo with `restore_recovery_highwaters`.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
    from faust.types import TP

    if "_highwaters" in _ORIGINAL:
        return False
    original = AIOKafkaConsumerThread._highwaters
    _ORIGINAL["_highwaters"] = original

    async def _highwaters(self: Any, partitions: Iterable[TP]) -> dict[TP, int]:
        if self.consumer.in_transaction:
            return await original(self, partitions)
        found = await end_offsets(
            self._ensure_consumer(), [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        )
        return {TP(tp.topic, tp.partition): offset for tp, offset in found.items()}

    AIOKafkaConsumerThread._highwaters = _highwaters
    return True


def restore_recovery_highwaters() -> None:
    """Undo `replace_recovery_highwaters` (no-op if it is not in effect)."""
    original = _ORIGINAL.pop("_highwaters", None)
    if original is not None:
        from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

        AIOKafkaConsumerThread._highwaters = original
