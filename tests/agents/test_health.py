"""/healthz, /livez and /readyz: what a worker's health rests on.

Holding engine partitions, a worker is healthy while its clock ticks come
back through the broker into its engine; holding none, while the broker
acknowledges its ticks and ingest keeps up with its input partitions
(`agents.health`). Against a real broker: 503 with a reason once the broker
is gone, and the worker itself does not crash.

Live: the pipeline moves, however slowly; ready: healthy and caught up. A
flood of bad messages keeps /livez at 200 all the way while /readyz says
how far behind, until it is drained (issue 14, finding 5).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from agents.health import (
    CAUGHT_UP,
    DELIVERY,
    LIVE_IDLE,
    LIVE_MOVING,
    LIVE_REBALANCING,
    ROUND_TRIP,
    Health,
    IngestProgress,
    judge,
    live,
    ready,
)
from devtools.broker import EmbeddedBroker
from tests.agents.harness import Deployment, Worker, make_deployment, wait_for

LIMIT_S = 10.0
NOW = 1000.0


def health(port: int) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return None


def kept_up(**ages_s: float) -> IngestProgress:
    """Input partitions ("orders_0" names orders:0) last kept up `age` seconds before NOW."""
    progress = IngestProgress()
    for name, age in ages_s.items():
        progress.seen[name.replace("_", ":")] = (7, NOW - age)
    return progress


@pytest.mark.parametrize(
    ("why", "holds_engine", "tick_seen", "joined", "delivered", "ingest", "reason"),
    [
        # Holding engine partitions: the round trip alone, as always.
        ("ticks come back", True, NOW - 2, True, None, kept_up(), None),
        ("no tick back yet", True, None, True, NOW, kept_up(), "no clock tick has come back"),
        ("ticks stopped coming back", True, NOW - 11, True, NOW, kept_up(), "came back 11 s ago"),
        ("round trip even if ingest lags", True, NOW - 2, True, NOW, kept_up(orders_0=60), None),
        # Holding none: no tick of its own comes back, so delivery and ingest.
        ("delivered and reading", False, None, True, NOW - 1, kept_up(orders_0=1), None),
        ("a spare worker, no partitions", False, None, True, NOW - 1, kept_up(), None),
        ("an old round trip does not count", False, NOW - 1, True, None, kept_up(), "delivered"),
        ("not in the group yet", False, None, False, NOW, kept_up(), "consumer group"),
        ("broker stopped acknowledging", False, None, True, NOW - 30, kept_up(), "30 s ago"),
        ("ingest stuck behind", False, None, True, NOW, kept_up(orders_0=1, orders_1=12), "orders:1 (12 s)"),
    ],
)  # fmt: skip
def test_health_rests_on_the_round_trip_or_on_delivery_and_ingest(
    why: str,
    holds_engine: bool,
    tick_seen: float | None,
    joined: bool,
    delivered: float | None,
    ingest: IngestProgress,
    reason: str | None,
) -> None:
    got = judge(
        NOW,
        LIMIT_S,
        holds_engine=holds_engine,
        tick_seen=tick_seen,
        joined=joined,
        tick_delivered=delivered,
        ingest=ingest,
    )
    assert got.basis == (ROUND_TRIP if holds_engine else DELIVERY), why
    assert got.healthy is (reason is None), why
    if reason is not None:
        assert got.reason is not None and reason in got.reason, (why, got.reason)


def test_ingest_keeps_up_when_caught_up_or_reading_further() -> None:
    """Observed on each tick; a partition behind its end and not read further stalls."""
    progress = IngestProgress()
    progress.observe(0.0, {"a:0": False, "b:0": False, "c:0": False}, {"a:0": 5})
    # a: read further; b: caught up; c: behind and nothing read since.
    progress.observe(20.0, {"a:0": False, "b:0": True, "c:0": False}, {"a:0": 9})
    assert progress.stalled(20.0, LIMIT_S) == {"c:0": 20.0}
    # a: behind, stuck at offset 9 since t=20; c: moved to another worker.
    progress.observe(40.0, {"a:0": False, "b:0": True}, {"a:0": 9})
    assert progress.stalled(40.0, LIMIT_S) == {"a:0": 20.0}
    # Newly held: kept up from now (reading resumes where the group left it).
    progress.observe(41.0, {"a:0": False, "d:0": False}, {"a:0": 9})
    assert set(progress.stalled(41.0, LIMIT_S)) == {"a:0"}


def caught_up(**ages_s: float | None) -> IngestProgress:
    """Input partitions last read to their end `age` seconds before NOW (None: not yet)."""
    progress = IngestProgress()
    for name, age in ages_s.items():
        progress.caught_up_at[name.replace("_", ":")] = None if age is None else NOW - age
    return progress


@pytest.mark.parametrize(
    ("why", "joined", "rebalancing", "engine", "applied", "processed", "delivered", "ingest", "basis", "reason"),
    [
        ("ticks applied", True, False, True, NOW - 1, None, NOW, caught_up(), LIVE_MOVING, None),
        # A flood: ticks wait behind it (74 s), ingest reads on.
        ("flood, ingest moves", True, False, True, NOW - 74, NOW - 1, NOW, caught_up(orders_0=200), LIVE_MOVING, None),
        ("a spare worker, nothing to do", True, False, False, None, None, NOW - 1, caught_up(), LIVE_IDLE, None),
        ("inputs only, caught up, quiet", True, False, False, None, NOW - 300, NOW - 1, caught_up(orders_0=1), LIVE_IDLE, None),
        ("inputs only, behind, stuck", True, False, False, None, NOW - 30, NOW - 1, caught_up(orders_0=30), LIVE_MOVING, "30 s ago"),
        ("engine stuck", True, False, True, NOW - 30, NOW - 20, NOW, caught_up(), LIVE_MOVING, "engine partitions"),
        ("ticks not delivered", True, False, False, None, None, NOW - 30, caught_up(), LIVE_MOVING, "never"),
        ("restoring tables", True, True, True, None, None, None, caught_up(), LIVE_REBALANCING, None),
        ("first join", False, True, False, None, None, None, caught_up(), LIVE_REBALANCING, None),
        ("never joined", False, False, False, None, None, NOW, caught_up(), LIVE_MOVING, "consumer group"),
    ],
)  # fmt: skip
def test_live_while_the_pipeline_moves_however_slowly(
    why: str,
    joined: bool,
    rebalancing: bool,
    engine: bool,
    applied: float | None,
    processed: float | None,
    delivered: float | None,
    ingest: IngestProgress,
    basis: str,
    reason: str | None,
) -> None:
    got = live(
        NOW,
        LIMIT_S,
        joined=joined,
        rebalancing=rebalancing,
        holds_engine=engine,
        engine_applied=applied,
        ingest_processed=processed,
        tick_delivered=delivered,
        ingest=ingest,
    )
    assert (got.healthy, got.basis) == (reason is None, basis), (why, got)
    if reason is not None:
        assert got.reason is not None and reason in got.reason, (why, got.reason)


def test_ready_when_healthy_and_caught_up() -> None:
    ok = Health(True, ROUND_TRIP)
    assert ready(NOW, LIMIT_S, ok, caught_up(orders_0=1, orders_1=9)) == Health(True, CAUGHT_UP)
    behind = ready(NOW, LIMIT_S, ok, caught_up(orders_0=1, orders_1=40, shipments_0=None))
    assert not behind.healthy
    assert behind.reason == "not caught up within 10 s: orders:1 (40 s), shipments:0 (not yet)"
    slow = Health(False, ROUND_TRIP, "last clock tick came back 26 s ago (limit 10 s)")
    assert ready(NOW, LIMIT_S, slow, caught_up()).reason == slow.reason


def test_caught_up_is_remembered_per_held_partition() -> None:
    progress = IngestProgress()
    progress.observe(0.0, {"a:0": True, "b:0": False}, {})
    progress.observe(5.0, {"a:0": False, "b:0": False}, {})
    assert progress.behind(5.0, LIMIT_S) == {"b:0": None}
    assert progress.behind(20.0, LIMIT_S) == {"a:0": 20.0, "b:0": None}
    progress.observe(21.0, {"b:0": True}, {})  # a:0 moved to another worker
    assert progress.behind(21.0, LIMIT_S) == {}


@pytest.mark.integration
def test_healthz_turns_unhealthy_when_the_broker_goes_away(tmp_path: Path) -> None:
    broker = EmbeddedBroker().start()
    dep = make_deployment(tmp_path, broker)
    worker = Worker(dep)
    try:
        worker.wait_started()
        wait_for(lambda: (h := health(dep.web_port)) and h[0] == 200, 60, "a healthy /healthz")
        broker.stop()
        status, body = wait_for(
            lambda: (h := health(dep.web_port)) and h[0] == 503 and h, 60, "/healthz to report 503"
        )
        assert body["status"] == "unhealthy" and "tick" in body["reason"]
        assert worker.proc.poll() is None, "the worker must not crash when the broker goes away"
    finally:
        worker.kill()  # a Faust app whose broker is gone may hang in a clean shutdown
        broker.stop()


def probe(port: int, path: str) -> tuple[int, dict] | None:
    """Status and body of `path`, as a probe with a 5 s timeout sees it (None: no answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return None


FLOOD = 200_000


def flood(dep: Deployment, n: int) -> None:
    """`n` tiny undecodable messages, as fast as the broker takes them."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=dep.bootstrap, linger_ms=20)
        await producer.start()
        try:
            topic = dep.topics["machine_state"]
            pending = [await producer.send(topic, b"%d" % i) for i in range(n)]
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    asyncio.run(send())


@pytest.mark.integration
def test_livez_stays_up_through_a_flood_while_readyz_waits_for_the_drain(
    tmp_path: Path, shared_broker: Any
) -> None:
    dep = make_deployment(tmp_path, shared_broker)
    worker = Worker(dep)
    port = dep.web_port
    try:
        worker.wait_started()
        wait_for(lambda: (r := probe(port, "/readyz")) and r[0] == 200, 60, "/readyz 200")
        sender = threading.Thread(target=flood, args=(dep, FLOOD))
        began = time.monotonic()
        sender.start()
        seen: dict[str, Counter[int]] = {p: Counter() for p in ("/livez", "/readyz", "/healthz")}
        behind: list[str] = []

        def drained() -> bool:
            assert worker.proc.poll() is None, worker.log_tail()
            consumed = sum(worker.get("/kpi")["pipeline"]["consumed"].values())
            status = {}
            for path, statuses in seen.items():
                got = probe(port, path)
                assert got is not None, f"{path} did not answer within 5 s"
                statuses[got[0]] += 1
                status[path] = got[0]
                if path == "/livez":
                    assert got[0] == 200, f"/livez {got} {time.monotonic() - began:.0f} s in"
                if path == "/readyz" and got[0] == 503:
                    behind.append(got[1]["reason"])
            return consumed >= FLOOD and status["/readyz"] == 200

        wait_for(drained, 240, f"{FLOOD} bad messages drained, /readyz 200 again", every=0.5)
        sender.join()
        assert any("not caught up" in reason for reason in behind), behind
        print(f"{FLOOD} drained in {time.monotonic() - began:.0f} s; probes: {dict(seen)}")
    finally:
        worker.stop()


def test_the_probes_answer_before_the_consumer_has_started() -> None:
    """The web server answers before Faust's consumer thread runs: its
    assignment is then none (a 503 'not in the group yet'), not a 500."""
    from types import SimpleNamespace

    from faust.exceptions import ConsumerNotStarted

    from agents.runtime import assignment_of

    def not_started() -> set[Any]:
        raise ConsumerNotStarted("Consumer thread not yet started")

    assert assignment_of(SimpleNamespace(consumer=SimpleNamespace(assignment=not_started))) == set()
    held = {("orders", 0)}
    assert assignment_of(SimpleNamespace(consumer=SimpleNamespace(assignment=lambda: held))) == held
