"""`kpimon_consumer_lag_messages`: end offset − next offset to read, for every
assigned input partition, right after a restart (`agents.metrics.input_lag`).

Before, a restarted worker knew only the offsets it had read since it
started: a quiet partition, read to its end before the restart, showed its
whole length as lag (issue 14, finding 4), and one the consumer had not
fetched yet was missing.
"""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from agents.app import Runtime
from agents.metrics import input_lag
from agents.offsets import committed_offsets, end_offsets
from agents.settings import Settings
from tests.agents.harness import Deployment, Worker, make_deployment, wait_for

LAG = "kpimon_consumer_lag_messages"
SOURCES = ("machine_state", "orders", "shipments")
PARTITIONS = 4  # the harness's input_partitions


def test_lag_counts_from_the_committed_offset_when_nothing_was_read_since_start() -> None:
    #  offsets      0 ........ 59 | 60 ... 64
    #  orders:0     committed 60, end 60            -> 0 (nothing read since start)
    #  orders:1     committed 60, end 65            -> 5
    #  orders:2     committed 50, read up to 61,
    #               end 65 (cached highwater 63)    -> 3
    #  orders:3     nothing committed, log start 10,
    #               end 12                          -> 2
    runtime = Runtime(Settings(), embedded=True)
    ends = runtime.input_ends
    ends.ends = {("orders", p): (end, 0.0) for p, end in enumerate((60, 65, 65, 12))}
    ends.committed = {("orders", 0): 60, ("orders", 1): 60, ("orders", 2): 50, ("orders", 3): None}
    ends.starts = {("orders", 3): 10}
    runtime.ingested[("orders", 2)] = 61
    assigned = {("orders", 0): None, ("orders", 1): None, ("orders", 2): 63, ("orders", 3): None}
    assert input_lag(assigned, runtime) == {
        ("orders", 0): 0,
        ("orders", 1): 5,
        ("orders", 2): 3,
        ("orders", 3): 2,
    }
    # A partition without an end offset (or a next offset) yet is left out; a cached highwater
    # ahead of the told end offset wins.
    ends.ends.pop(("orders", 3))
    assigned[("orders", 0)] = 62
    assert input_lag(assigned, runtime) == {("orders", 0): 2, ("orders", 1): 5, ("orders", 2): 3}
    ends.committed.pop(("orders", 1))
    assert ("orders", 1) not in input_lag(assigned, runtime)


def scrape_lag(worker: Worker) -> dict[tuple[str, int], float] | None:
    try:
        url = f"http://127.0.0.1:{worker.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return {
        (s.labels["topic"], int(s.labels["partition"])): s.value
        for family in text_string_to_metric_families(text)
        if family.name == LAG
        for s in family.samples
    }


def input_partitions(dep: Deployment) -> list[TopicPartition]:
    return [TopicPartition(dep.topics[t], p) for t in SOURCES for p in range(PARTITIONS)]


def group_behind(dep: Deployment) -> dict[tuple[str, int], int]:
    """From outside the worker: end offset − committed offset per input partition."""

    async def ask() -> dict[tuple[str, int], int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=dep.bootstrap, group_id=f"{dep.prefix}kpimon")
        await consumer.start()
        try:
            tps = input_partitions(dep)
            ends = await end_offsets(consumer, tps, embedded=True)
            committed = await committed_offsets(consumer, tps)
        finally:
            await consumer.stop()
        return {(tp.topic, tp.partition): ends[tp] - (committed[tp] or 0) for tp in tps}

    return asyncio.run(ask())


def send_to(dep: Deployment, counts: dict[tuple[str, int], int]) -> None:
    """`counts[(topic key, partition)]` tiny undecodable messages to that partition."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=dep.bootstrap, linger_ms=20)
        await producer.start()
        try:
            sent = []
            for (topic, partition), n in counts.items():
                for i in range(n):
                    value = b"x%d" % i
                    sent.append(await producer.send(dep.topics[topic], value, partition=partition))
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(send())


def wait_caught_up(dep: Deployment, worker: Worker) -> None:
    """The group committed every input partition to its end, and the worker says lag 0."""
    behind: dict[tuple[str, int], int] = {}

    def committed_to_the_ends() -> bool:
        behind.clear()
        behind.update({tp: n for tp, n in group_behind(dep).items() if n})
        return not behind

    try:
        wait_for(committed_to_the_ends, 120, "committed offsets at their ends")
    except AssertionError as exc:
        kpi = worker.try_get("/kpi") or {}
        raise AssertionError(
            f"{exc}; still behind: {behind}; the worker's pipeline: {kpi.get('pipeline')}\n"
            f"{worker.log_tail()}"
        ) from None
    expected = {(tp.topic, tp.partition): 0.0 for tp in input_partitions(dep)}
    wait_for(lambda: scrape_lag(worker) == expected, 30, f"lag 0 on all of {sorted(expected)}")


def restarted_lag_is_right(dep: Deployment, backlog: dict[tuple[str, int], int]) -> Worker:
    """Start a worker on `backlog` unread messages; from its first scrape that has
    any lag, every assigned input partition has a series: 0 where nothing is
    unread, and between 1 and the backlog where messages are; then 0 everywhere."""
    worker = Worker(dep, "worker-again")
    unread = {(dep.topics[t], p): n for (t, p), n in backlog.items()}
    everyone = {(tp.topic, tp.partition) for tp in input_partitions(dep)}
    seen: list[dict[tuple[str, int], float]] = []

    def first_full_scrape() -> bool:
        assert worker.proc.poll() is None, worker.log_tail()
        lag = scrape_lag(worker)
        if lag:
            seen.append(lag)
        return bool(lag) and set(lag) == everyone

    try:
        wait_for(first_full_scrape, 90, "a lag series for every input partition", every=0.05)
        for lag in seen:  # the partial scrapes too: never a wrong value
            for tp, value in lag.items():
                assert 0 <= value <= unread.get(tp, 0), (tp, value, lag)
        first = seen[-1]
        assert {tp for tp, v in first.items() if v} <= set(unread), first
        assert any(first[tp] > 0 for tp in unread), (
            f"the backlog {unread} was read before the first full scrape: {first}"
        )
        wait_caught_up(dep, worker)
    except BaseException:
        worker.stop()
        raise
    return worker


@pytest.mark.integration
def test_lag_is_right_right_after_a_restart_and_a_sigkill(
    tmp_path: Path, shared_broker: Any
) -> None:
    dep = make_deployment(tmp_path, shared_broker)
    worker = Worker(dep)
    try:
        worker.wait_started()
        # Every input partition has messages, all read and committed.
        send_to(dep, {(t, p): 20 + 5 * p for t in SOURCES for p in range(PARTITIONS)})
        wait_caught_up(dep, worker)

        # SIGTERM; a backlog arrives on two partitions while it is away.
        assert worker.stop() == 0
        backlog = {("orders", 1): 20_000, ("shipments", 3): 5_000}
        send_to(dep, backlog)
        worker = restarted_lag_is_right(dep, backlog)

        # SIGKILL once committed (else re-reading is lag, rightly); the same.
        wait_caught_up(dep, worker)
        worker.kill()
        backlog = {("machine_state", 2): 20_000}
        send_to(dep, backlog)
        worker = restarted_lag_is_right(dep, backlog)
    finally:
        worker.stop()
