"""Gateway batches through ingest: each event to its site's engine partition,
and a live worker fed a day of them publishes what `kpimon replay` computes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.pipeline import Incoming, engine_partition, route_batch
from devtools.producer import topic_of
from streams.decode import parse_event
from streams.records import record_key
from streams.timeutil import iso
from tests import eventfactory as ef
from tests.agents.harness import Worker, make_deployment, produce_raw, read_topic, records_by_key
from tests.agents.test_pipeline_integration import LATENESS_US, assert_same, plant_day
from tests.agents.wire import read_forward

SOURCES = {"machine-state": "machine-state", "orders": "orders", "shipments": "shipments"}
KPIMON = str(Path(sys.executable).parent / "kpimon")


def gateway_messages(
    events: list[dict[str, Any]], max_batch: int = 50
) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(topic, key, batch): runs of consecutive events of one line (machine
    events, keyed `<site>/<line>`) or one order, as a gateway sends them."""
    out: list[tuple[str, str, list[dict[str, Any]]]] = []
    for event in events:
        topic = topic_of(event)
        key = f"{event['site']}/{event['line']}" if "machine" in event else event["order_id"]
        if out and out[-1][:2] == (topic, key) and len(out[-1][2]) < max_batch:
            out[-1][2].append(event)
        else:
            out.append((topic, key, [event]))
    return out


def test_a_gateway_batch_goes_whole_to_its_sites_engine_partition() -> None:
    batch = [
        ef.state(ef.at(6), "running", machine="press-1"),
        ef.state(ef.at(6), "running", machine="press-2"),
        ef.count(ef.at(6.1), 10, 9, 1.5, machine="press-1"),
    ]
    message = Incoming("machine-state", 0, 5, b"plant-1/line-1", orjson.dumps(batch))
    routed = route_batch([message], sources=SOURCES, wall_us=0, engine_partitions=8)
    [(_, r)] = routed.routed
    assert r.dead_letter is None and r.events == 3
    [(target, value)] = routed.forwards
    assert target == engine_partition("plant-1", 8)
    assert read_forward(value)["runs"] == [
        {"source": "machine-state:0", "upto": 5, "events": batch}
    ]


def test_each_event_goes_to_its_own_sites_partition_however_the_names_are_cut() -> None:
    # `a/b` + `c` and `a` + `b/c` are both the line key `a/b/c`: one message may
    # then hold two sites, and each event still goes to its own site's partition.
    partitions = next(
        n for n in range(2, 64) if len({engine_partition(s, n) for s in ("a/b", "a")}) == 2
    )
    batch = [
        ef.state(ef.at(6), "running", machine="m-1", site="a/b", line="c"),
        ef.state(ef.at(6), "running", machine="m-2", site="a", line="b/c"),
        ef.state(ef.at(7), "down", machine="m-1", site="a/b", line="c"),
    ]
    message = Incoming("machine-state", 0, 9, b"a/b/c", orjson.dumps(batch))
    routed = route_batch([message], sources=SOURCES, wall_us=0, engine_partitions=partitions)
    got = {
        t: [e["event_id"] for r in read_forward(v)["runs"] for e in r["events"]]
        for t, v in routed.forwards
    }
    assert got == {
        engine_partition("a/b", partitions): [batch[0]["event_id"], batch[2]["event_id"]],
        engine_partition("a", partitions): [batch[1]["event_id"]],
    }


def replay_records(path: Path, config: Path, newest_us: int) -> dict[str, dict[str, Any]]:
    """`kpimon replay` of a file of message values: the newest revision of each
    record of a window a live worker must have closed."""
    done = subprocess.run(
        [KPIMON, "replay", str(path), "--config", str(config), "-q"],
        capture_output=True,
        check=True,
        timeout=300,
    )
    closable = iso(newest_us - LATENESS_US)
    records = [orjson.loads(line) for line in done.stdout.splitlines()]
    return {record_key(r): r for r in records if r["end"] <= closable}


@pytest.mark.integration
def test_a_live_worker_fed_gateway_batches_publishes_what_replay_computes(
    tmp_path: Path, shared_broker: Any
) -> None:
    events = plant_day(13)
    messages = gateway_messages(events)
    machine_batches = [b for topic, _, b in messages if topic == "machine-state"]
    assert max(len({e["machine"] for e in b}) for b in machine_batches) >= 3
    dep = make_deployment(tmp_path, shared_broker)

    values = tmp_path / "messages.jsonl"
    values.write_bytes(b"".join(orjson.dumps(b) + b"\n" for _, _, b in messages))
    expected = replay_records(values, dep.config, max(parse_event(e).ts_us for e in events))
    assert len(expected) > 100

    worker = Worker(dep)
    try:
        worker.wait_started()
        topic_keys = {
            "machine-state": "machine_state",
            "orders": "orders",
            "shipments": "shipments",
        }
        produce_raw(
            dep, [(topic_keys[topic], key.encode(), orjson.dumps(b)) for topic, key, b in messages]
        )
        got = read_topic(
            dep.bootstrap,
            dep.topics["windows"],
            lambda msgs: expected.keys() <= {k.decode() for k, _ in msgs},
            timeout=240,
        )
        assert_same(records_by_key(got), expected)
        assert sum(worker.get("/kpi")["pipeline"]["dead_letters"].values()) == 0
    finally:
        worker.stop()
