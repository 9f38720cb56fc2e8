"""Roles (`worker.role`): an ingest worker and an engine worker in one group
publish what one worker of both roles would, and an ingest worker that is
killed is replaced without a record lost or changed.

Four sites on four engine partitions, as in `test_scaleout`. The engine
worker starts first and takes every engine partition; the ingest worker
joins and takes every input partition (the group mixes the two kinds of
member: Faust's assignor gives each only the topics it reads). Day 1 is
sent; while the ingest worker reads it, it is killed (SIGKILL) and a new
ingest worker takes over, then day 2 is sent. The windows topic must hold
every record `kpimon replay`'s engine computes over each engine partition's
events, a record published twice identical.

    wall time  ─────────────────────────────────────────────────────────────►
    engine     ████████████████████████████████████████████████████████████
    ingest 1       ████████████████▌ SIGKILL (day 1 half read)
    ingest 2                        ▲ joins, reads the rest     day 2 ▌
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.agents.harness import Worker, free_port, make_deployment, produce, wait_for
from tests.agents.test_scaleout import (
    ENV,
    PARTITIONS,
    events_read,
    serving,
    two_days,
    wait_published,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def role_worker(dep: Any, role: str, name: str) -> Worker:
    return Worker(
        dep,
        name,
        web_port=free_port(),
        env={
            **ENV,
            "KPIMON_WORKER__ROLE": role,
            "KPIMON_WORKER__DATA_DIR": str(dep.data_dir / name),
        },
    )


def engine_holds_all(worker: Worker) -> dict[str, Any] | None:
    """The worker's /healthz body when it is healthy and holds every engine partition."""
    body = serving(worker)
    return body if body and body["partitions"] == list(range(PARTITIONS)) else None


def inputs(dep: Any) -> list[str]:
    names = (dep.topics[t] for t in ("machine_state", "orders", "shipments"))
    return sorted(f"{topic}:{p}" for topic in names for p in range(4))


@pytest.mark.timeout(1500)
def test_an_ingest_worker_and_an_engine_worker_publish_what_one_worker_would(
    tmp_path: Path, shared_broker: Any
) -> None:
    first_day, second_day, expected = two_days(67)
    dep = make_deployment(tmp_path, shared_broker, topics=f"engine_partitions = {PARTITIONS}")
    engine = role_worker(dep, "engine", "engine")
    ingest = replacement = None
    try:
        held = wait_for(lambda: engine_holds_all(engine), 120, "the engine worker's partitions")
        assert held["inputs"] == []  # an engine worker reads no input
        ingest = role_worker(dep, "ingest", "ingest-1")
        took = wait_for(
            lambda: (h := serving(ingest)) and h["inputs"] == inputs(dep) and h,
            120,
            "the ingest worker holding every input partition",
        )
        assert took["partitions"] == []  # and an ingest worker holds no engine partition
        roles = [w.get("/kpi")["pipeline"]["role"] for w in (ingest, engine)]
        assert roles == ["ingest", "engine"]
        # The ingest worker's joining moved nothing of the engine's (once the
        # rebalance it caused is over, the engine worker holds them all again).
        wait_for(lambda: engine_holds_all(engine), 120, "the engine worker after the rebalance")
        produce(dep, first_day)
        wait_for(lambda: events_read(ingest) > len(first_day) // 2, 300, "half of day 1 read")
        ingest.kill()
        replacement = role_worker(dep, "ingest", "ingest-2")
        wait_for(
            lambda: (h := serving(replacement)) and h["inputs"] == inputs(dep),
            120,
            "the new ingest worker holding every input partition",
        )
        produce(dep, second_day)
        wait_published(dep, expected, timeout=600)
        wait_for(lambda: engine_holds_all(engine), 120, "the engine worker at the end")
    finally:
        for worker in (ingest, replacement, engine):
            if worker is not None and worker.proc.poll() is None:
                worker.stop()
