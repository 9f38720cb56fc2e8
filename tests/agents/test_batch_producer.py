"""`agents.batch_producer`: outputs sent a record batch per partition, with a fake producer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from agents.batch_producer import BatchProducer
from agents.outbox import Outbox


class FakeBatch:
    def __init__(self, room: int) -> None:
        self.room = room
        self.messages: list[tuple[bytes | None, bytes]] = []

    def append(self, *, key: bytes | None, value: bytes, timestamp: Any) -> object | None:
        if len(self.messages) == self.room or len(value) > 100:
            return None
        self.messages.append((key, value))
        return object()


class FakeProducer:
    """What BatchProducer uses of AIOKafkaProducer; `fail` makes the next deliveries fail."""

    def __init__(self, partitions: int = 6, room: int = 1000) -> None:
        self.partitions, self.room = partitions, room
        self.started = self.stopped = False
        self.sent: list[tuple[str, int, list[tuple[bytes | None, bytes]]]] = []
        self.fail: Exception | None = None

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.room)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch.messages))
        delivered = asyncio.get_running_loop().create_future()
        if self.fail is not None:
            delivered.set_exception(self.fail)
        else:
            delivered.set_result((topic, partition))
        return delivered


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_turns_messages_go_as_one_batch_a_partition_where_the_key_hashes() -> None:
    fake = FakeProducer()

    async def publish() -> list[Any]:
        outputs = BatchProducer(lambda: fake)
        deliveries = [
            await outputs.send("kpi-windows", f"m-{n}".encode(), b"r%d" % n, None)
            for n in range(40)
        ]
        deliveries.append(await outputs.send("kpi-alerts", b"a", b"alert", 2))
        assert fake.sent == []  # nothing before the sender yields
        return await asyncio.gather(*deliveries)

    results = run(publish())
    partitioner = DefaultPartitioner()
    expected: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
    for n in range(40):
        key = f"m-{n}".encode()
        where = partitioner(key, list(range(6)), list(range(6)))
        expected.setdefault(("kpi-windows", where), []).append((key, b"r%d" % n))
    expected[("kpi-alerts", 2)] = [(b"a", b"alert")]
    assert {(t, p): m for t, p, m in fake.sent} == expected
    assert len(fake.sent) == len(expected)  # one batch a partition
    assert results[-1] == ("kpi-alerts", 2) and fake.started


def test_a_full_batch_is_sent_and_the_next_one_started() -> None:
    fake = FakeProducer(partitions=1, room=3)

    async def publish() -> None:
        outputs = BatchProducer(lambda: fake)
        deliveries = [await outputs.send("t", None, b"%d" % n, 0) for n in range(7)]
        await asyncio.gather(*deliveries)

    run(publish())
    assert [len(m) for _, _, m in fake.sent] == [3, 3, 1]
    assert [v for _, _, m in fake.sent for _, v in m] == [b"%d" % n for n in range(7)]


def test_a_message_too_large_for_a_batch_fails_alone() -> None:
    fake = FakeProducer(partitions=1)

    async def publish() -> list[Any]:
        outputs = BatchProducer(lambda: fake)
        deliveries = [await outputs.send("t", None, value, 0) for value in (b"a", b"x" * 500, b"b")]
        return await asyncio.gather(*deliveries, return_exceptions=True)

    ok, too_large, ok_too = run(publish())
    assert isinstance(too_large, ValueError) and "500 bytes" in str(too_large)
    assert ok == ok_too == ("t", 0)
    assert [v for _, _, m in fake.sent for _, v in m] == [b"a", b"b"]


def test_a_failed_batch_fails_each_message_and_the_outbox_sends_it_again() -> None:
    fake = FakeProducer(partitions=2)

    async def publish() -> int:
        outputs = BatchProducer(lambda: fake)
        box = Outbox(outputs.send)
        fake.fail = OSError("broker away")
        for n in range(5):
            await box.put("t", b"k%d" % n, b"v%d" % n)

        async def back() -> None:
            await asyncio.sleep(0)
            fake.fail = None

        asyncio.ensure_future(back())
        return await box.deliver()

    resent = run(publish())
    assert resent == 5
    values = [v for _, _, m in fake.sent for _, v in m]
    assert sorted(values) == sorted([b"v%d" % n for n in range(5)] * 2)


def test_stop_sends_what_is_queued_then_stops_and_later_sends_fail() -> None:
    fake = FakeProducer(partitions=1)

    async def publish() -> Any:
        outputs = BatchProducer(lambda: fake)
        delivery = await outputs.send("t", b"k", b"v", None)
        await outputs.stop()
        late = await outputs.send("t", b"k2", b"v2", None)
        with pytest.raises(RuntimeError, match="stopped"):
            await late
        return delivery

    delivery = run(publish())
    assert delivery.result() == ("t", 0) and fake.stopped
    assert fake.sent == [("t", 0, [(b"k", b"v")])]


class AwayProducer(FakeProducer):
    """A broker that is gone: batches are never handed over, and stop waits for them."""

    def __init__(self) -> None:
        super().__init__(partitions=1)
        self.never = asyncio.Event()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch.messages))
        await self.never.wait()

    async def stop(self) -> None:
        await self.never.wait()


def test_stop_with_the_broker_away_gives_up_after_the_grace_and_fails_what_is_open() -> None:
    away = AwayProducer()

    async def publish() -> list[BaseException | None]:
        outputs = BatchProducer(lambda: away)
        first = await outputs.send("t", b"k", b"v1", None)
        while not away.sent:  # the first turn's batch is being sent, and hangs
            await asyncio.sleep(0)
        second = await outputs.send("t", b"k", b"v2", None)  # queued behind it
        # Bounded by the test only so a regression fails instead of hanging CI.
        await asyncio.wait_for(outputs.stop(grace_s=0.05), 10)
        return [d.exception() if d.done() else None for d in (first, second)]

    errors = run(publish())
    assert [str(e) for e in errors] == ["the output producer is stopped"] * 2
    assert away.sent == [("t", 0, [(b"k", b"v1")])]


@pytest.mark.parametrize("key", [b"m-1", b"site-3/line-7", b"\x00\xff"])
def test_the_partition_of_a_key_is_aiokafkas_default(key: bytes) -> None:
    fake = FakeProducer(partitions=12)

    async def publish() -> int:
        outputs = BatchProducer(lambda: fake)
        await (await outputs.send("t", key, b"v", None))
        return fake.sent[0][1]

    assert run(publish()) == DefaultPartitioner()(key, list(range(12)), list(range(12)))


def test_flushes_of_later_turns_wait_for_the_one_sending_and_keep_the_order() -> None:
    """aiokafka lets one batch of a partition wait for the last to drain;
    two senders of a partition at once time each other out, so one flush
    sends at a time, and a partition's messages go in the order put."""

    class SlowProducer(FakeProducer):
        in_flight = most = 0

        async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            for _ in range(3):
                await asyncio.sleep(0)
            self.in_flight -= 1
            return await super().send_batch(batch, topic, partition=partition)

    fake = SlowProducer(partitions=1, room=4)

    async def publish() -> None:
        outputs = BatchProducer(lambda: fake)
        deliveries = []
        for turn in range(6):
            for n in range(5):
                deliveries.append(await outputs.send("t", None, b"%d.%d" % (turn, n), 0))
            await asyncio.sleep(0)  # the next publish step, a loop turn later
        await asyncio.gather(*deliveries)

    run(publish())
    assert fake.most == 1
    sent = [v for _, _, m in fake.sent for _, v in m]
    assert sent == [b"%d.%d" % (turn, n) for turn in range(6) for n in range(5)]
