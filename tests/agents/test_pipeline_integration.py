"""The live pipeline on the embedded broker equals `kpimon replay`.

A seeded simulated plant day goes through real workers (subprocesses) on
the embedded broker; what they publish to kpi-windows must equal the
engine run offline over the same events, record for record, for every
window the worker has closed. Bad messages must all be in the dead-letter
topic, and only they.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.producer import batched
from agents.simulator import SAMPLE_START_US, SimConfig, simulate
from streams.config import EngineConfig
from streams.engine import Engine
from streams.events import parse_event
from streams.records import record_key
from streams.timeutil import iso
from tests.agents.harness import Worker, make_deployment, produce, read_topic, records_by_key

pytestmark = pytest.mark.integration

ENGINE = EngineConfig(windows=["1h", "1d"], allowed_lateness="5m")
LATENESS_US = 5 * 60 * 1_000_000


def plant_day(seed: int) -> list[dict[str, Any]]:
    return list(simulate(SimConfig(id_prefix=f"s{seed}-"), seed, SAMPLE_START_US, 86_400))


def expected_records(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The offline engine's records for windows a live worker must have closed."""
    engine = Engine(ENGINE)
    out = engine.run(parse_event(e) for e in events)
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


def assert_same(published: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    mismatched = [k for k in expected if published[k] != expected[k]]
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


def test_worker_killed_mid_stream_recovers_exactly(tmp_path: Path, shared_broker: Any) -> None:
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
            lambda msgs: expected.keys() <= {k.decode() for k, _ in msgs},
            timeout=300,
        )
        assert_same(records_by_key(got), expected)  # re-published records must be identical
    finally:
        second.stop()
