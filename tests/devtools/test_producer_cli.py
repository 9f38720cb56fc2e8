"""`kpimon simulate --out` and `kpimon produce` against the embedded broker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.agents.harness import ROOT, make_deployment, read_topic

pytestmark = pytest.mark.integration


def kpimon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agents.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_simulate_to_file_then_produce_sends_every_event_keyed(
    tmp_path: Path, shared_broker: Any
) -> None:
    events_file = tmp_path / "events.jsonl"
    done = kpimon("simulate", "--days", "0.1", "--seed", "3", "--out", str(events_file))
    assert done.returncode == 0, done.stderr
    events = [orjson.loads(line) for line in events_file.read_bytes().splitlines()]
    assert len(events) > 100

    dep = make_deployment(tmp_path, shared_broker)
    done = kpimon("produce", str(events_file), "--config", str(dep.config), "--max-batch", "20")
    assert done.returncode == 0, done.stderr
    assert f"sent {len(events)} events" in done.stderr

    sent: list[dict[str, Any]] = []
    for topic in ("machine_state", "orders", "shipments"):
        wanted = sum(1 for e in events if _topic(e) == topic)
        messages = read_topic(
            dep.bootstrap,
            dep.topics[topic],
            lambda msgs, wanted=wanted: sum(_count(v) for _, v in msgs) >= wanted,
            timeout=60,
        )
        for key, value in messages:
            batch = orjson.loads(value)
            batch = batch if isinstance(batch, list) else [batch]
            assert len(batch) <= 20
            for event in batch:  # every event of a message belongs to its key
                assert key.decode() == (
                    event["machine"] if topic == "machine_state" else event["order_id"]
                )
            sent += batch
    assert sorted(e["event_id"] for e in sent) == sorted(e["event_id"] for e in events)


def test_produce_refuses_an_invalid_event_naming_the_line(
    tmp_path: Path, shared_broker: Any
) -> None:
    dep = make_deployment(tmp_path, shared_broker)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "state", "event_id": "x", "ts": "2026-11-22T06:00:00Z"}\n')
    done = kpimon("produce", str(bad), "--config", str(dep.config))
    assert done.returncode == 4  # an invalid line: nothing sent (README, exit codes)
    assert "line 1" in done.stderr and "site" in done.stderr


def _topic(event: dict[str, Any]) -> str:
    return {"state": "machine_state", "count": "machine_state", "shipment": "shipments"}.get(
        event["type"], "orders"
    )


def _count(value: bytes) -> int:
    data = orjson.loads(value)
    return len(data) if isinstance(data, list) else 1
