"""Scale-out: two workers in one consumer group share the pipeline, and one
takes over when the other is killed; together they publish what one would.

Four sites, one on each of the four engine partitions (machine events go to
the engine partition of their site, orders to the one of "orders"), on
input topics of four partitions. The first worker reads day 1; the second
joins mid-stream; once both are healthy and hold partitions, day 2 is sent
and the first worker is killed (SIGKILL) while it reads it. The windows
topic must then hold every record `kpimon replay`'s engine computes over
each engine partition's events, and a record published twice must be
identical.

    wall time  ─────────────────────────────────────────────────────────────►
    day 1 sent ▌
    worker 1   ████████████████████████████████████████████▌ SIGKILL
    worker 2              ▲ joins (rebalance)   day 2 sent ▌ ▲ takes it all
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.pipeline import engine_partition
from devtools.producer import topic_of
from devtools.simulator import SAMPLE_START_US, SimConfig, simulate
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.records import record_key
from streams.timeutil import iso
from tests.agents.harness import (
    Deployment,
    Worker,
    free_port,
    make_deployment,
    produce,
    read_topic,
    wait_for,
)
from tests.agents.test_health import health
from tests.agents.test_reliability import parse_us, reached
from tests.streams.helpers import run_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY_S = 86_400
HOUR_US = 3_600_000_000
PARTITIONS = 4
SITES = ("plant-5", "plant-2", "plant-3", "plant-1")  # engine partitions 0, 1, 2, 3 of 4
# An hour of lateness: the input is quiet while the second worker starts, and
# a quiet pipeline's event time follows the clock (README, *time*); an hour
# covers any pause the test makes, so no event of day 2 can be late.
LATENESS = "1h"
ENGINE = EngineConfig(windows=["1h", "1d"], allowed_lateness=LATENESS)
# (The harness's configuration sets allowed_lateness; the environment wins.)
ENV = {"KPIMON_ENGINE__ALLOWED_LATENESS": LATENESS, "KPIMON_WORKER__LOG_LEVEL": "INFO"}


def site_events(site: str, seed: int, days: float) -> list[dict[str, Any]]:
    """A simulated site whose machine, order and shipment ids are its own
    (`<site>-press-1-1`, `<site>-SO-1001`): each site's simulator numbers from 1."""
    base = SimConfig()
    lines = tuple(
        replace(spec, machines=tuple(f"{site}-{m}" for m in spec.machines)) for spec in base.lines
    )
    config = SimConfig(site=site, lines=lines, id_prefix=f"x{seed}-{site}-")
    own = ("order_id", "shipment_id")
    return [
        {**event, **{k: f"{site}-{event[k]}" for k in own if k in event}}
        for event in simulate(config, seed, SAMPLE_START_US, days * DAY_S)
    ]


def sites(seed: int, days: float) -> list[dict[str, Any]]:
    """Every site's events, merged in time order."""
    streams = [site_events(site, seed + n, days) for n, site in enumerate(SITES)]
    return list(heapq.merge(*streams, key=lambda e: parse_us(e["ts"])))


def engine_partition_of(event: dict[str, Any]) -> int:
    shard = event["site"] if topic_of(event) == "machine-state" else "orders"
    return engine_partition(shard, PARTITIONS)


def expected_records(events: list[dict[str, Any]]) -> dict[str, set[bytes]]:
    """Record key -> the records (canonical JSON) the offline engine computes,
    run once per engine partition over that partition's events, for windows
    a live worker must have closed. Records of different partitions can
    share a key (the chain of efficiencies is per partition), hence a set."""
    by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_partition[engine_partition_of(event)].append(event)
    assert sorted(by_partition) == list(range(PARTITIONS))  # every partition has work
    lateness_us = ENGINE.us("allowed_lateness")
    expected: dict[str, set[bytes]] = defaultdict(set)
    for part in by_partition.values():
        engine = Engine(ENGINE)
        parsed = [parse_event(e) for e in part]
        out = run_events(engine, parsed)
        out.extend(engine.flush())
        closable = iso(max(e.ts_us for e in parsed) - lateness_us)
        for record in out.records:
            if record["end"] <= closable:
                expected[record_key(record)].add(canonical(record))
    return dict(expected)


def two_days(seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, set[bytes]]]:
    """Every site's events of days 1 and 2 (in time order), and the records
    `expected_records` computes over both."""
    events = sites(seed, 2.0)
    day_2 = iso(SAMPLE_START_US + DAY_S * 1_000_000)
    first_day = [e for e in events if e["ts"] < day_2]
    return first_day, events[len(first_day) :], expected_records(events)


def canonical(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def published(messages: list[tuple[bytes, bytes]]) -> dict[str, set[bytes]]:
    found: dict[str, set[bytes]] = defaultdict(set)
    for key, value in messages:
        found[key.decode()].add(canonical(orjson.loads(value)))
    return dict(found)


def wait_published(dep: Deployment, expected: dict[str, set[bytes]], timeout: float) -> None:
    """Every expected record is on kpi-windows, and every version published of
    an expected key is an expected one (a re-published record is identical)."""

    def complete(messages: list[tuple[bytes, bytes]]) -> bool:
        got = published(messages)
        return all(len(got.get(key, ())) >= len(values) for key, values in expected.items())

    got = published(read_topic(dep.bootstrap, dep.topics["windows"], complete, timeout=timeout))
    differ = [key for key, values in expected.items() if got[key] != values]
    if differ:
        key = differ[0]
        raise AssertionError(
            f"{len(differ)} of {len(expected)} records differ; first {key}:\n"
            f"live   {sorted(got[key] - expected[key])}\nreplay {sorted(expected[key])}"
        )


def serving(worker: Worker) -> dict[str, Any] | None:
    """The worker's /healthz body when it is healthy and holds partitions."""
    answer = health(worker.web_port)
    if answer is None or answer[0] != 200:
        return None
    body = answer[1]
    return body if body["partitions"] or body["inputs"] else None


def events_read(worker: Worker) -> int:
    kpi = worker.try_get("/kpi") or {}
    return sum(kpi.get("pipeline", {}).get("events", {}).values())


@pytest.mark.timeout(1800)
def test_two_workers_share_the_group_and_one_takes_over_from_the_other(
    tmp_path: Path, shared_broker: Any
) -> None:
    first_day, second_day, expected = two_days(61)
    dep = make_deployment(tmp_path, shared_broker, topics=f"engine_partitions = {PARTITIONS}")
    first = Worker(
        dep, "first", env={**ENV, "KPIMON_WORKER__DATA_DIR": str(dep.data_dir / "first")}
    )
    second = None
    try:
        first.wait_started()
        produce(dep, first_day)
        wait_for(lambda: reached(first, iso(SAMPLE_START_US + 12 * HOUR_US)), 600, "day 1 noon")
        second = Worker(
            dep,
            "second",
            web_port=free_port(),
            env={**ENV, "KPIMON_WORKER__DATA_DIR": str(dep.data_dir / "second")},
        )
        both = wait_for(
            lambda: (a := serving(first)) and (b := serving(second)) and (a, b),
            300,
            "both workers healthy, each holding partitions",
        )
        before = events_read(first)
        produce(dep, second_day)
        # Killed while it reads day 2 (unless the second worker holds every input).
        if both[0]["inputs"]:
            wait_for(lambda: events_read(first) > before, 300, "the first worker reading day 2")
        first.kill()
        wait_published(dep, expected, timeout=600)
        took_over = wait_for(
            lambda: (h := serving(second)) and h["partitions"] == list(range(PARTITIONS)) and h,
            120,
            "the second worker holding every engine partition",
        )
        assert took_over["inputs"] == sorted(
            f"{topic}:{p}"
            for topic in (dep.topics[t] for t in ("machine_state", "orders", "shipments"))
            for p in range(4)
        )
    finally:
        if first.proc.poll() is None:
            first.kill()
        if second is not None:
            second.stop()
