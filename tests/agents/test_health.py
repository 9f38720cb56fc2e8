"""/healthz reports the broker round trip: healthy while clock ticks come back,
503 with a reason once the broker is gone; the worker itself does not crash."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agents.broker import EmbeddedBroker
from tests.agents.harness import Worker, make_deployment, wait_for

pytestmark = pytest.mark.integration


def health(port: int) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return None


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
