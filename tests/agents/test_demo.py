"""`kpimon demo --duration 30` runs start to finish and shows every KPI."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.agents.harness import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration


def kpi(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/kpi", timeout=5) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def kinds(view: dict[str, Any]) -> set[str]:
    found = set()
    for shard in view["shards"]:
        for r in shard["last_closed"]:
            value = {"oee": "oee", "perfect_order": "perfect_order_rate", "pchart": "p"}.get(
                r["kpi"]
            )
            if value and r.get(value) is not None:
                found.add(r["kpi"])
    return found


def test_demo_runs_and_shows_oee_perfect_order_and_pchart(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "demo", "--duration", "30", "--port", str(port)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        view = wait_for(
            lambda: (v := kpi(port)) and {"oee", "perfect_order", "pchart"} <= kinds(v) and v,
            timeout=30,
            what="/kpi to show OEE, perfect-order and p-chart values",
            every=1.0,
        )
        assert view["pipeline"]["events"]
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.stdout.read().decode() if proc.stdout else ""
    assert "embedded broker" in output and f"127.0.0.1:{port}/kpi" in output
