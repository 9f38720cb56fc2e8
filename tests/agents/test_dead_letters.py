"""Dead letters exactly once, whatever their size and whatever crashes; counters
that count each input offset once (issue 14, findings 1, 2 and 6).

The live test runs real workers (subprocesses) on the embedded broker, feeds
them bad messages of every size between good ones, SIGKILLs them right after
they have read everything (before the offsets are committed, so the next
worker reads the same messages again), and reads the dead-letter topic. The
unit tests below it pin the envelope and the hold-back.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import random
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents import outbox
from agents.app import Runtime
from agents.letters import ORIGINAL_BYTES, envelope, letter_id
from agents.metrics import make_registry
from agents.outbox import Outbox
from agents.pipeline import Incoming, SentBefore, route_batch
from agents.settings import Settings
from tests.agents.harness import Deployment, Worker, make_deployment, read_topic, wait_for
from tests.agents.test_reliability import as_messages, plant
from tests.agents.wire import read_forward

MB = 1_000_000
REFUSALS = {"too_many_machines", "too_many_open_orders", "too_late"}


# ---------------------------------------------------------------- look-back


class FakeTail:
    """Topics as lists of values; `scan` visits them newest first, as `Tail` does."""

    def __init__(self, topics: dict[str, list[bytes]]) -> None:
        self.topics = topics

    async def scan(self, topic: str, floor_ms: int, visit: Any) -> int:
        values = self.topics.get(topic, [])
        for offset in reversed(range(len(values))):
            if visit(0, offset, values[offset]):
                break
        return len(values)


def test_look_back_takes_the_highest_run_of_a_message_not_the_first() -> None:
    """A forward holds runs in input order across partitions, so one input
    partition can have several runs in one message: the last is its highest.
    The look-back took the first, and a restarted ingest forwarded the rest
    again; the engine refused those events again at new engine coordinates."""
    from agents.resume import input_sent_before

    forward = orjson.dumps(
        {
            "wall_us": 1,
            "runs": [
                {"source": "ms:1", "upto": 2, "events": []},
                {"source": "orders:0", "upto": 7, "events": []},
                {"source": "ms:1", "upto": 5, "events": []},
            ],
        }
    )
    tick = orjson.dumps({"tick_us": 2})
    tail = FakeTail({"engine": [forward, tick]})
    found = asyncio.run(
        input_sent_before(
            tail,  # type: ignore[arg-type]
            engine_topic="engine",
            dead_topic="dead",
            resumed={("ms", 1): 0, ("orders", 0): 0},
            floor_ms=0,
        )
    )
    # Read again from 0, ms:1 is forwarded from offset 6 on (was: from 3).
    assert found.forwarded == {("ms", 1, 0): 5, ("orders", 0, 0): 7}


# ---------------------------------------------------------------- live


def bad_messages(rng: random.Random, events: list[dict[str, Any]], huge: bool) -> list[Any]:
    """(topic key, key, value, what) of bad messages: oversized, tombstone, undecodable,
    schema, empty; `huge` adds a 100 MB one."""
    event = dict(rng.choice([e for e in events if e["type"] == "state"]))
    key = event["machine"].encode()
    big = orjson.dumps({**event, "event_id": "x" * 3 * MB})  # valid JSON, 3 MB
    out = [
        ("machine_state", key, big, "oversized"),
        ("machine_state", key, None, "tombstone"),
        ("machine_state", key, b'{"type": "state", "event_id": ', "undecodable"),
        ("machine_state", key, orjson.dumps({**event, "state": "flying"}), "schema"),
        ("orders", b"O-nothing", b"", "empty"),
        ("machine_state", key, rng.randbytes(5 * MB), "oversized"),
    ]
    if huge:
        out.append(("shipments", b"S-huge", b"[" + b" " * (100 * MB) + b"]", "oversized"))
    return out


def produce_round(dep: Deployment, messages: list[Any]) -> list[tuple[str, int, int]]:
    """Send (topic key, key, value) messages in order; their (topic, partition, offset)."""

    async def send() -> list[tuple[str, int, int]]:
        producer = AIOKafkaProducer(
            bootstrap_servers=dep.bootstrap, linger_ms=5, max_request_size=110 * MB
        )
        await producer.start()
        try:
            futures = [
                await producer.send(dep.topics[topic], value=value, key=key)
                for topic, key, value, *_ in messages
            ]
            return [(m.topic, m.partition, m.offset) for m in await asyncio.gather(*futures)]
        finally:
            await producer.stop()

    return asyncio.run(send())


def counters(worker: Worker) -> Counter[str]:
    """The worker's pipeline counters, summed over topics: consumed, redelivered,
    events, and ingest's dead letters (the engine's refusals apart)."""
    kpi = worker.try_get("/kpi")
    got: Counter[str] = Counter()
    if kpi is None:  # busy, or not up yet
        return got
    pipeline = kpi["pipeline"]
    for name in ("consumed", "redelivered", "events"):
        got[name] = sum(pipeline.get(name, {}).values())
    for where, n in pipeline["dead_letters"].items():
        got["refused" if where.split("/")[-1] in REFUSALS else "dead_letters"] += n
    return got


def read_all(worker: Worker, unread: int) -> Counter[str] | None:
    """The worker's counters once it has consumed `unread` messages, else None."""
    got = counters(worker)
    return got if got["consumed"] >= unread else None


def every_letter(worker: Worker, letters: list[tuple[bytes, bytes]], bad: dict[Any, Any]) -> bool:
    """Whether `letters` has one for every bad input offset, and as many refusals
    as the worker's engine made (its state counts each once, across restores)."""
    ids = {letter_id(value) for _, value in letters}
    if not {("input", *at) for at in bad} <= ids:
        return False
    kpi = worker.try_get("/kpi") or {"shards": []}
    made = sum(n for s in kpi["shards"] for k, n in s["stats"].items() if k.startswith("refused."))
    return made > 0 and sum(1 for i in ids if i and i[0] == "engine") >= made


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_bad_offset_is_dead_lettered_once_across_sigkills_and_counted_once(
    tmp_path: Path, shared_broker: Any
) -> None:
    rng = random.Random(14)
    events = plant(14, 0.15)
    good = as_messages(events)
    rounds = 3  # a worker per round; the first two are SIGKILLed
    dep = make_deployment(
        tmp_path,
        shared_broker,
        # 11 machines: three are refused by the engine, which makes engine dead letters.
        engine="max_machines = 8",
    )
    # The engine re-applies (and refuses again) everything since its last snapshot.
    rare_snapshots = {"KPIMON_WORKER__SNAPSHOT_INTERVAL": "30", "KPIMON_WORKER__LOG_LEVEL": "INFO"}
    sent: list[tuple[str, int, int]] = []  # every input message
    bad: dict[tuple[str, int, int], tuple[bytes | None, str]] = {}  # input offset -> value, kind
    totals: Counter[str] = Counter()  # counters of the killed workers
    for n in range(rounds):
        part = [(*m, "good") for m in good[n * len(good) // rounds : (n + 1) * len(good) // rounds]]
        for message in bad_messages(rng, events, huge=n == 0):
            part.insert(rng.randrange(len(part) + 1), message)
        worker = Worker(dep, f"run-{n}", env=rare_snapshots)
        worker.wait_started()
        where = produce_round(dep, part)
        sent += where
        bad |= {at: (m[2], m[3]) for at, m in zip(where, part, strict=True) if m[3] != "good"}
        # Everything read (and delivered: counted only then); then killed at once,
        # before the offsets read last are committed.
        read = wait_for(
            functools.partial(read_all, worker, len(sent) - totals["consumed"]),
            300,
            f"round {n}: every message read",
            every=0.05,
        )
        if n < rounds - 1:
            worker.kill()
            totals += read
    try:
        letters = read_topic(
            dep.bootstrap,
            dep.topics["dead_letter"],
            lambda msgs: every_letter(worker, msgs, bad),
            timeout=180,
        )
        totals += counters(worker)
    finally:
        worker.stop()

    # Each bad input offset exactly once.
    ids = Counter(letter_id(value) for _, value in letters)
    ingest = {i: n for i, n in ids.items() if i and i[0] == "input"}
    assert {i: n for i, n in ingest.items() if n > 1} == {}, "dead letters sent twice"
    assert set(ingest) == {("input", *at) for at in bad}
    # Each refusal once, by engine coordinates and by event.
    engine = {i: n for i, n in ids.items() if i and i[0] == "engine"}
    doubled = {i for i, n in engine.items() if n > 1}
    twice = [(at, i) for at, (_, v) in enumerate(letters) if (i := letter_id(v)) in doubled]
    assert engine and not twice, f"refusals sent twice (position, id): {twice}"
    refused_ids = Counter(
        orjson.loads(orjson.loads(v)["value_text"])["event_id"]
        for _, v in letters
        if orjson.loads(v)["reason"] in REFUSALS
    )
    assert max(refused_ids.values()) == 1 and len(refused_ids) == len(engine)

    # Oversized originals cut, with their size and hash; the others whole.
    for _, value in letters:
        letter = orjson.loads(value)
        source = letter["source"]
        if source.get("engine"):
            continue
        original, kind = bad[source["topic"], source["partition"], source["offset"]]
        raw = original or b""
        carried = base64.b64decode(letter["value_b64"])
        assert letter["size_bytes"] == len(raw)
        assert letter["sha256"] == hashlib.sha256(raw).hexdigest()
        assert letter["truncated"] == (kind == "oversized")
        assert carried == raw[:ORIGINAL_BYTES]
        assert len(value) < MB
        expected = {"oversized": "message_too_large", "tombstone": "tombstone", "empty": None}
        if kind in expected:
            assert letter["reason"] == (expected[kind] or "undecodable"), kind
    assert max(len(raw or b"") for raw, _ in bad.values()) > 100 * MB

    # Counters: each input offset once, whatever was read again.
    assert totals["consumed"] == len(sent)
    assert totals["events"] == len(events)
    assert totals["dead_letters"] == len(bad)
    assert totals["redelivered"] > 0, "no kill came before a commit: nothing was read again"


# ---------------------------------------------------------------- envelope


def test_an_original_over_the_cap_is_cut_with_its_size_hash_and_coordinates() -> None:
    raw = "é".encode() * (ORIGINAL_BYTES // 2) + b"tail"  # cut inside nothing; text whole
    letter = orjson.loads(
        envelope(
            raw,
            [{"index": None, "reason": "message_too_large", "error": "too big"}],
            topic="machine-state",
            partition=2,
            offset=41,
            key="press-1",
            received_us=1,
            valid_events_forwarded=0,
        )
    )
    assert letter["truncated"] is True
    assert letter["size_bytes"] == len(raw) == ORIGINAL_BYTES + 4
    assert letter["sha256"] == hashlib.sha256(raw).hexdigest()
    assert base64.b64decode(letter["value_b64"]) == raw[:ORIGINAL_BYTES]
    assert letter["value_text"] == "é" * 4096  # the cut original's first characters
    assert letter["source"] == {
        "topic": "machine-state",
        "partition": 2,
        "offset": 41,
        "key": "press-1",
    }
    assert letter_id(orjson.dumps(letter)) == ("input", "machine-state", 2, 41)


def test_an_envelope_of_any_original_stays_under_a_broker_message_limit() -> None:
    raw = b"\x01" * (ORIGINAL_BYTES - 1)  # carried whole; escaped 6 bytes a character as text
    errors = [{"index": i, "reason": "schema", "error": "x" * 5000} for i in range(10_000)]
    value = envelope(
        raw,
        errors,
        topic="t",
        partition=0,
        offset=0,
        key=None,
        received_us=0,
        valid_events_forwarded=0,
    )
    assert len(value) < 1_000_000  # Kafka's default message.max.bytes is 1,048,588
    letter = orjson.loads(value)
    assert letter["truncated"] is False and letter["errors_total"] == 10_000
    assert len(letter["errors"]) == 100


# ---------------------------------------------------------------- read again


def test_a_message_read_again_sends_nothing_twice_and_is_counted_apart() -> None:
    good = orjson.dumps(
        {
            "type": "state",
            "event_id": "e1",
            "ts": "2026-11-02T06:00:00Z",
            "site": "plant-1",
            "line": "line-1",
            "machine": "press-1",
            "state": "running",
        }
    )
    messages = [
        Incoming("machine-state", 0, 7, b"press-1", good),
        Incoming("machine-state", 0, 8, b"press-1", None),  # lettered before
        Incoming("machine-state", 0, 9, b"press-1", None),  # not yet
        Incoming("machine-state", 0, 10, b"press-1", good.replace(b"e1", b"e2")),  # not yet
    ]
    before = SentBefore({("machine-state", 0, 0): 7}, {("machine-state", 0, 8)})
    batch = route_batch(
        messages,
        sources={"machine-state": "machine-state"},
        wall_us=1_793_599_200_000_000,
        sent_before=before,
    )
    assert [(m.offset, r.again, r.dead_letter is not None) for m, r in batch.routed] == [
        (7, True, False),
        (8, True, False),
        (9, False, True),
        (10, False, False),
    ]
    [(_, value)] = batch.forwards
    [run] = read_forward(value)["runs"]
    assert (run["upto"], [e["event_id"] for e in run["events"]]) == (10, ["e2"])


# ---------------------------------------------------------------- held back


def test_an_undeliverable_output_holds_its_input_and_shows_in_metrics() -> None:
    class Refusing:
        """A broker that refuses everything until `accept` is set."""

        def __init__(self) -> None:
            self.accept = False
            self.sends = 0

        async def send(self, topic: Any, key: Any, value: bytes, partition: Any) -> Any:
            self.sends += 1
            delivery = asyncio.get_running_loop().create_future()
            if self.accept:
                delivery.set_result(None)
            else:
                delivery.set_exception(RuntimeError("MessageSizeTooLargeError"))
            return delivery

    broker = Refusing()
    runtime = Runtime(Settings(), embedded=True)
    runtime.ingest_box = Outbox(broker.send)
    registry = make_registry(runtime, lambda: {})

    async def scenario() -> tuple[float | None, str | None, bool]:
        await runtime.ingest_box.put("kpi-dead-letter", b"k", b"{}")
        delivering = asyncio.ensure_future(runtime.ingest_box.deliver())
        while not runtime.ingest_box.undelivered:
            assert not delivering.done()
            await asyncio.sleep(0)
        gauge = registry.get_sample_value("kpimon_outputs_undelivered", {"stage": "ingest"})
        reason = runtime.undelivered_reason()
        held = not delivering.done()  # the batch is not acknowledged meanwhile
        broker.accept = True
        await delivering
        return gauge, reason, held

    with mock.patch.object(outbox, "BACKOFF_S", 0), mock.patch.object(outbox, "MAX_BACKOFF_S", 0):
        gauge, reason, held = asyncio.run(scenario())
    assert gauge == 1 and held
    assert reason is not None and "1 of ingest" in reason and "MessageSizeTooLarge" in reason
    assert runtime.undelivered_reason() is None
    assert registry.get_sample_value("kpimon_outputs_undelivered", {"stage": "ingest"}) == 0
