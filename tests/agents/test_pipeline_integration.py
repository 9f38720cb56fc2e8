"""The live pipeline on the embedded broker equals `kpimon replay`.

A seeded simulated plant day goes through real workers (subprocesses) on
the embedded broker; what they publish to kpi-windows must equal the
engine run offline over the same events, record for record, for every
window the worker has closed. Bad messages must all be in the dead-letter
topic, and only they.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from devtools.producer import batched
from devtools.simulator import SAMPLE_START_US, SimConfig, simulate
from devtools.simulator_gateway import Outages
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.records import record_key
from streams.timeutil import iso
from tests.agents.harness import Worker, make_deployment, produce, read_topic, records_by_key
from tests.streams.helpers import run_events

pytestmark = pytest.mark.integration

ENGINE = EngineConfig(windows=["1h", "1d"], allowed_lateness="5m")
LATENESS_US = 5 * 60 * 1_000_000


def plant_day(seed: int) -> list[dict[str, Any]]:
    return list(simulate(SimConfig(id_prefix=f"s{seed}-"), seed, SAMPLE_START_US, 86_400))


def real_producers_day(seed: int) -> list[dict[str, Any]]:
    """A day as real gateways send it: on change, PLC counters (a reset, a
    wrap), store-and-forward bursts of 1-3 h delivered late, in send order;
    and an ERP that reports one delivery in five 1-5 h after it happened."""
    config = SimConfig(
        id_prefix=f"r{seed}-", profiles="mix", outages=Outages(mean_gap_s=0.5 * 86_400)
    )
    events = list(simulate(config, seed, SAMPLE_START_US, 86_400))
    assert any(e["type"] == "counter" for e in events)
    rng = random.Random(seed)
    lagging = [e for e in events if e["type"] == "shipment" and rng.random() < 0.2]
    assert lagging
    sent = [e for e in events if e not in lagging]
    for e in lagging:
        due = iso(parse_event(e).ts_us + rng.randint(1, 5) * 3_600_000_000)
        sent.insert(next((i for i, x in enumerate(sent) if x["ts"] > due), len(sent)), e)
    return sent


def expected_records(
    events: list[dict[str, Any]], config: EngineConfig = ENGINE
) -> dict[str, dict[str, Any]]:
    """The offline engine's final records (newest revision) for windows a live
    worker must have closed."""
    engine = Engine(config)
    out = run_events(engine, (parse_event(e) for e in events))
    out.extend(engine.flush())
    newest = max(parse_event(e).ts_us for e in events)
    closable = iso(newest - LATENESS_US)
    return {record_key(r): r for r in out.records if r["end"] <= closable}


def bad_messages(events: list[dict[str, Any]]) -> list[tuple[str, bytes, bytes]]:
    """Four bad messages, each wholly invalid, of different kinds."""
    state = next(e for e in events if e["type"] == "state")
    machine = state["machine"]
    other = next(e for e in events if e["type"] == "state" and e["machine"] != machine)
    order = next(e for e in events if e["type"] == "order")
    return [
        ("machine_state", machine.encode(), b'{"type": "state", "event_id": '),  # truncated JSON
        (
            "machine_state",
            machine.encode(),
            orjson.dumps(dict(state, event_id="bad-1", state="flying")),
        ),
        (
            "machine_state",
            machine.encode(),
            orjson.dumps([dict(other, event_id="bad-2")]),
        ),  # key mismatch
        ("machine_state", order["order_id"].encode(), orjson.dumps(order)),  # wrong topic
    ]


def _content(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "revision"}


def caught_up(published: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> bool:
    """Every expected record is published, at its final content."""
    return all(
        k in published and _content(published[k]) == _content(r) for k, r in expected.items()
    )


def assert_same(published: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    """Each expected record's newest revision equals the live one's. The revision
    numbers themselves may differ: how often a window was revised depends on how
    its late events were batched."""
    mismatched = [k for k in expected if _content(published[k]) != _content(expected[k])]
    if mismatched:
        k = mismatched[0]
        raise AssertionError(
            f"{len(mismatched)} of {len(expected)} records differ; first {k}:\n"
            f"live   {published[k]}\nreplay {expected[k]}"
        )


def test_worker_publishes_what_replay_computes_and_dead_letters_the_bad(
    tmp_path: Path, shared_broker: Any
) -> None:
    events = plant_day(11)
    expected = expected_records(events)
    assert len(expected) > 100
    raw = bad_messages(events)

    dep = make_deployment(tmp_path, shared_broker)
    worker = Worker(dep)
    try:
        worker.wait_started()
        # A mixed batch: a real batch of one machine plus one invalid element;
        # its valid events must still count.
        _, key, batch = next(
            b for b in batched(events, 50) if b[0] == "machine-state" and len(b[2]) >= 2
        )
        mixed = orjson.dumps([*batch, dict(batch[0], event_id="bad-3", ts="yesterday")])
        first_ids = {e["event_id"] for e in batch}
        rest = [e for e in events if e["event_id"] not in first_ids]
        produce(dep, rest, raw=[*raw, ("machine_state", key.encode(), mixed)])

        got = read_topic(
            dep.bootstrap,
            dep.topics["windows"],
            lambda msgs: expected.keys() <= {k.decode() for k, _ in msgs},
            timeout=240,
        )
        assert_same(records_by_key(got), expected)

        letters = read_topic(
            dep.bootstrap, dep.topics["dead_letter"], lambda msgs: len(msgs) >= 5, timeout=60
        )
        reasons = sorted(orjson.loads(v)["reason"] for _, v in letters)
        assert reasons == ["key_mismatch", "schema", "schema", "undecodable", "wrong_topic"]
        mixed_letter = next(
            orjson.loads(v) for _, v in letters if orjson.loads(v)["valid_events_forwarded"]
        )
        assert mixed_letter["valid_events_forwarded"] == len(batch)
        assert mixed_letter["errors"][0]["index"] == len(batch)
        assert mixed_letter["source"]["topic"] == dep.topics["machine_state"]
        kpi = worker.get("/kpi")
        dead = kpi["pipeline"]["dead_letters"]
        assert sum(dead.values()) == 5
    finally:
        worker.stop()


@pytest.mark.parametrize("producers", ["periodic", "real"])
def test_worker_killed_mid_stream_recovers_exactly(
    tmp_path: Path, shared_broker: Any, producers: str
) -> None:
    """Periodic producers, or real ones: on change, PLC counters and late bursts,
    whose revised records must end equal to replay's and whose counter deltas
    stay exact across the SIGKILL."""
    if producers == "real":
        events = real_producers_day(13)
        engine = EngineConfig(windows=["1h", "1d"], allowed_lateness="5m", counter_modulus=65_536)
        revised = expected_records(events, engine)
        assert any(r["revision"] > 0 for r in revised.values())  # bursts revised windows
        assert any(r["revision"] > 0 for r in revised.values() if r["kpi"] == "perfect_order")
        # Revised, the records equal those of the same events sent in time order
        # (but for windows a reopened order left with no order: decided 0).
        in_order = sorted(events, key=lambda e: e["ts"])
        expected = expected_records(in_order, engine)
        assert {k: _content(revised[k]) for k in expected} == {
            k: _content(r) for k, r in expected.items()
        }
        assert all(revised[k]["decided"] == 0 for k in revised.keys() - expected.keys())
        expected = revised
        dep = make_deployment(tmp_path, shared_broker, engine="counter_modulus = 65536")
    else:
        events = plant_day(12)
        expected = expected_records(events)
        dep = make_deployment(tmp_path, shared_broker)
    half = len(events) // 2
    first = Worker(dep, "first")
    try:
        first.wait_started()
        produce(dep, events[:half])
        # Wait until the worker has applied a good part of it, then kill it hard.
        read_topic(dep.bootstrap, dep.topics["windows"], lambda msgs: len(msgs) > 40, timeout=180)
    finally:
        first.kill()
    second = Worker(dep, "second")
    try:
        second.wait_started()
        produce(dep, events[half:])
        got = read_topic(
            dep.bootstrap,
            dep.topics["windows"],
            lambda msgs: caught_up(records_by_key(msgs), expected),
            timeout=300,
        )
        assert_same(records_by_key(got), expected)  # re-published records must be identical
    finally:
        second.stop()
