"""A live worker given a 1970 stamp first: dead-lettered, and nothing else moves.

Issue 14, finding 3: before there is a watermark (a first deployment, a new
`app_id` re-reading retained input) one event stamped 1970 followed by a
current one took a worker from 78 MiB to 3.3 GiB. The worker's clock is now
the past horizon's reference until an event is accepted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.timeutil import iso
from tests.agents.harness import Worker, make_deployment, produce, read_topic, wait_for
from tests.eventfactory import count, state

pytestmark = pytest.mark.integration


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_1970_event_first_is_dead_lettered_and_the_current_ones_counted(
    tmp_path: Path, shared_broker: Any
) -> None:
    now = time.time_ns() // 1000
    stray = state("1970-01-01T00:00:00Z", "running", machine="stray")
    current = [
        state(iso(now - 40 * 60_000_000), "running"),
        count(iso(now - 30 * 60_000_000), 500, 490, 2.0),
        state(iso(now - 20 * 60_000_000), "down", reason="jam"),
    ]
    dep = make_deployment(tmp_path, shared_broker, engine='past_horizon = "7d"')
    worker = Worker(dep)
    try:
        worker.wait_started()
        produce(dep, current, raw=[("machine_state", b"stray", orjson.dumps(stray))])
        (letter,) = [
            orjson.loads(v)
            for _, v in read_topic(dep.bootstrap, dep.topics["dead_letter"], lambda m: len(m) >= 1)
        ]
        assert letter["reason"] == "past_timestamp"
        assert "1970-01-01T00:00:00Z" in letter["errors"][0]["error"]
        assert "receiving clock" in letter["errors"][0]["error"]

        def shown() -> str | None:
            text = orjson.dumps(worker.get("/kpi")["shards"]).decode()
            return text if '"machine":"press-1"' in text else None

        text = wait_for(shown, 90, "the current machine on /kpi")
        assert '"stray"' not in text
        dead = worker.get("/kpi")["pipeline"]["dead_letters"]
        assert dead == {f"{dep.topics['machine_state']}/past_timestamp": 1}
        assert worker.get("/healthz") is not None
        assert rss_bytes(worker.proc.pid) < 1 << 30  # was 3.3 GiB within 40 s
    finally:
        worker.stop()
