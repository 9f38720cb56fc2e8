"""Reliability of the live pipeline: fuzzed input, hard kills, scale-out, broker loss.

Each test runs real workers (subprocesses) on the embedded broker and
compares what they publish on kpi-windows with `kpimon replay`'s engine
over the valid events (`expected_records`): nothing lost, nothing counted
twice. They take minutes, so they are marked `slow` (the test command runs
them; `-m "not slow"` skips them).
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.settings import load_settings
from agents.worker import topic_plan
from devtools.broker import EmbeddedBroker
from devtools.producer import batched, key_of, topic_of
from devtools.simulator import SAMPLE_START_US, SimConfig, simulate
from streams.decode import decode_message
from streams.timeutil import iso, to_us
from tests.agents.harness import (
    Deployment,
    Worker,
    make_deployment,
    produce,
    produce_raw,
    read_topic,
    records_by_key,
    wait_for,
    watermark,
)
from tests.agents.test_health import health
from tests.agents.test_pipeline_integration import assert_same, expected_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAY_S = 86_400
TOPIC_KEYS = {"machine-state": "machine_state", "orders": "orders", "shipments": "shipments"}
MAX_BYTES = 16_384  # the fuzz worker's max_message_bytes
MAX_BATCH = 20  # and max_batch


def plant(seed: int, days: float, count_interval_s: float = 60.0) -> list[dict[str, Any]]:
    config = SimConfig(id_prefix=f"r{seed}-", count_interval_s=count_interval_s)
    return list(simulate(config, seed, SAMPLE_START_US, days * DAY_S))


def parse_us(text: str) -> int:
    return to_us(datetime.fromisoformat(text))


def reached(worker: Worker, at: str) -> bool:
    """Whether the worker's watermark has reached the time `at` (ISO 8601)."""
    mark = watermark(worker)
    return mark is not None and parse_us(mark) >= parse_us(at)


def wait_published(dep: Deployment, expected: dict[str, dict[str, Any]], timeout: float) -> None:
    """Every expected record is on kpi-windows, and equal to it."""
    read: list[tuple[bytes, bytes]] = []

    def complete(msgs: list[tuple[bytes, bytes]]) -> bool:
        read[:] = msgs
        return expected.keys() <= {k.decode() for k, _ in msgs}

    try:
        got = read_topic(dep.bootstrap, dep.topics["windows"], complete, timeout=timeout)
    except AssertionError as exc:
        published = records_by_key(read)
        missing = sorted(expected.keys() - published.keys())
        series = {k.rsplit("|", 2)[0] for k in missing}
        near = sorted(k for k in published if k.rsplit("|", 2)[0] in series)[:10]
        raise AssertionError(
            f"{exc}; {len(missing)} of {len(expected)} expected records missing, first: "
            f"{[(k, expected[k]) for k in missing[:3]]}; published in those series: {near}"
        ) from None
    assert_same(records_by_key(got), expected)  # a record published twice must be identical


# ---------------------------------------------------------------- fuzz


def as_messages(events: list[dict[str, Any]]) -> list[tuple[str, bytes | None, bytes]]:
    """Valid events as the producer sends them: batches of one key."""
    return [
        (TOPIC_KEYS[topic], key.encode(), orjson.dumps(group[0] if len(group) == 1 else group))
        for topic, key, group in batched(events, MAX_BATCH)
    ]


def mutant(rng: random.Random, events: list[dict[str, Any]]) -> tuple[str, bytes | None, bytes]:
    """One message derived from a valid event by a random mutation (maybe still valid)."""
    event = dict(rng.choice(events))
    event["event_id"] = f"fuzz-{rng.getrandbits(64):x}"  # never a valid event's id
    topic, key = TOPIC_KEYS[topic_of(event)], key_of(event).encode()
    text = orjson.dumps(event)
    field = rng.choice(sorted(event))
    # Big mutants (deep nesting, oversized, batch too long) are rarer: they cost memory.
    kind = rng.choices(range(16), weights=[1, 1, 1, 0.2, 1, 0.2, 0.2, *[1] * 9])[0]
    if kind == 0:  # truncated JSON
        return topic, key, text[: rng.randrange(1, len(text))]
    if kind == 1:  # a field of the wrong type
        event[field] = rng.choice([17, "x", None, [], {}, True, 1.5])
    elif kind == 2:  # huge or negative numbers
        number = next((f for f in ("total", "good", "ideal_cycle_s") if f in event), field)
        event[number] = rng.choice([10**30, -1, -(10**30), 1e300, -0.5])
    elif kind == 3:  # deep nesting
        depth = rng.choice([50, 2_000])
        return topic, key, b"[" * depth + text + b"]" * depth
    elif kind == 4:  # invalid UTF-8
        at = rng.randrange(len(text))
        return topic, key, text[:at] + bytes([rng.choice([0xFF, 0xC0, 0x80])]) + text[at:]
    elif kind == 5:  # oversized
        event["event_id"] = "x" * (MAX_BYTES + rng.randrange(1000))
    elif kind == 6:  # a batch too long
        return topic, key, orjson.dumps([event] * (MAX_BATCH + 1))
    elif kind == 7:  # random bytes
        return topic, key, rng.randbytes(rng.randrange(0, 300))
    elif kind == 8:  # a missing field
        del event[field]
    elif kind == 9:  # an unknown field
        event["surprise"] = 1
    elif kind == 10:  # unknown type or state
        event["type" if rng.random() < 0.5 else "state"] = "flying"
    elif kind == 11:  # NaN and infinities (not JSON, but some producers send them)
        return topic, key, text.replace(b"}", b', "ideal_cycle_s": NaN}', 1)
    elif kind == 12:  # a key that is not the event's
        key = b"someone-else"
    elif kind == 13:  # the wrong topic
        topic = rng.choice([t for t in TOPIC_KEYS.values() if t != topic])
    elif kind == 14:  # a naive or malformed timestamp
        event["ts"] = rng.choice(["2026-11-02T06:00:00", "yesterday", "2026-13-40T00:00:00Z"])
    else:  # empty or null values
        return topic, key, rng.choice([b"", b"null", b"[]", b"{}", b"[null]"])
    return topic, key, json.dumps(event).encode()  # orjson refuses integers beyond 64 bits


def wholly_bad(message: tuple[str, bytes | None, bytes]) -> bool:
    topic, key, value = message
    source = next(t for t, k in TOPIC_KEYS.items() if k == topic)
    decoded = decode_message(
        value,
        key=key.decode("utf-8", "replace") if key is not None else None,
        source=source,
        max_bytes=MAX_BYTES,
        max_batch=MAX_BATCH,
    )
    return bool(decoded.errors) and not decoded.events


def test_fuzz_100k_bad_messages_never_crash_the_worker_and_all_reach_the_dead_letters(
    tmp_path: Path, shared_broker: Any
) -> None:
    events = plant(41, 1.0)
    expected = expected_records(events)
    rng = random.Random(41)
    bad: list[tuple[str, bytes | None, bytes]] = []
    while len(bad) < 100_000:
        candidate = mutant(rng, events)
        if wholly_bad(candidate):  # a mutation may leave a valid event: not sent
            bad.append(candidate)
    # Valid messages in order, the bad ones scattered between them.
    stream = as_messages(events)
    for message in bad:
        stream.insert(rng.randrange(len(stream) + 1), message)

    dep = make_deployment(
        tmp_path,
        shared_broker,
        worker=f"max_message_bytes = {MAX_BYTES}\nmax_batch = {MAX_BATCH}",
    )
    worker = Worker(dep)
    try:
        worker.wait_started()
        produce_raw(dep, stream)
        wait_published(dep, expected, timeout=600)
        letters = read_topic(
            dep.bootstrap,
            dep.topics["dead_letter"],
            lambda msgs: len(msgs) >= len(bad),
            timeout=300,
        )
        assert worker.proc.poll() is None, "the worker must survive the fuzz"
        sent = Counter(value for _, _, value in bad)
        lettered = Counter(base64.b64decode(orjson.loads(v)["value_b64"]) for _, v in letters)
        assert lettered == sent  # every bad message exactly once, byte for byte
        reasons = Counter(orjson.loads(v)["reason"] for _, v in letters)
        assert set(reasons) >= {
            "undecodable",
            "schema",
            "key_mismatch",
            "wrong_topic",
            "message_too_large",
            "batch_too_long",
        }, reasons
        dead = worker.get("/kpi")["pipeline"]["dead_letters"]
        assert sum(dead.values()) == len(bad)
    finally:
        worker.stop()


# ---------------------------------------------------------------- crashes


@pytest.mark.timeout(1500)
def test_five_sigkills_in_a_500k_event_run_lose_nothing_and_count_nothing_twice(
    tmp_path: Path, shared_broker: Any
) -> None:
    events = plant(43, 10.5, count_interval_s=10.0)
    assert len(events) >= 500_000
    expected = expected_records(events)
    first_us = SAMPLE_START_US
    last_us = first_us + round(10.5 * DAY_S * 1_000_000)
    rng = random.Random(43)
    kill_at = sorted(iso(round(first_us + rng.uniform(0.05, 0.9) * (last_us - first_us)))
                     for _ in range(5))  # fmt: skip

    dep = make_deployment(tmp_path, shared_broker)
    produce(dep, events)
    for n, at in enumerate(kill_at):
        worker = Worker(dep, f"run-{n}")
        try:
            worker.wait_started()
            wait_for(
                lambda w=worker, t=at: reached(w, t),
                600,
                f"the watermark to pass kill point {n + 1} ({at})",
                every=0.5,
            )
        finally:
            worker.kill()
    final = Worker(dep, "final")
    try:
        final.wait_started()
        try:
            wait_published(dep, expected, timeout=600)
        except AssertionError as exc:
            kpi = final.try_get("/kpi") or {}
            shards = [
                {k: s.get(k) for k in ("partition", "watermark", "frontier", "stats")}
                for s in kpi.get("shards", [])
            ]
            raise AssertionError(f"{exc}\nfinal worker: {shards} {kpi.get('pipeline')}") from None
    finally:
        final.stop()


# ---------------------------------------------------------------- broker outage


def test_the_worker_survives_a_broker_restart_and_turns_healthy_again(tmp_path: Path) -> None:
    """The embedded broker is memory-only: a restarted one is empty (topics, offsets,
    groups). The worker must ride that out: no crash, 503 while the broker is away,
    healthy once clock ticks make the round trip again, its KPIs kept meanwhile.
    (Applying events sent to the emptied broker is not claimed: offsets restart at 0
    below the positions the worker holds; on Kafka the log survives an outage.)"""
    events = plant(53, 1.0)
    broker = EmbeddedBroker().start()
    dep = make_deployment(tmp_path, broker)
    worker = Worker(dep)
    try:
        worker.wait_started()
        produce(dep, events)
        wait_for(lambda: reached(worker, events[-1]["ts"]), 300, "every event applied")
        before = worker.get("/kpi")["shards"][0]["last_closed"]
        assert before
        broker.stop()
        wait_for(lambda: (h := health(dep.web_port)) and h[0] == 503, 60, "/healthz to report 503")
        assert worker.proc.poll() is None, "the worker must not crash when the broker goes away"
        assert worker.get("/kpi")["shards"][0]["last_closed"] == before  # still served
        broker.restart()  # an empty broker on the same port
        broker.create_topics_sync(topic_plan(load_settings(dep.config)))
        wait_for(lambda: (h := health(dep.web_port)) and h[0] == 200, 180, "/healthz healthy again")
        assert worker.proc.poll() is None
        after = worker.get("/kpi")["shards"][0]["last_closed"]
        assert {r["window"] + r["kpi"] for r in after} >= {r["window"] + r["kpi"] for r in before}
    finally:
        worker.kill()  # a Faust app that lost its broker may hang in a clean shutdown
        broker.stop()
