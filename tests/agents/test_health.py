"""/healthz: what a worker's health rests on, and the broker round trip.

Holding engine partitions, a worker is healthy while its clock ticks come
back through the broker into its engine; holding none, while the broker
acknowledges its ticks and ingest keeps up with its input partitions
(`agents.health`). Against a real broker: 503 with a reason once the broker
is gone, and the worker itself does not crash.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agents.broker import EmbeddedBroker
from agents.health import DELIVERY, ROUND_TRIP, IngestProgress, judge
from tests.agents.harness import Worker, make_deployment, wait_for

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
