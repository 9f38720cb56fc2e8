"""`kpimon bench` at a small N: a smoke test (it completes and writes the JSON).

No timed assertions: the figures depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agents.harness import ROOT

pytestmark = pytest.mark.integration

KEYS = {
    "raw_events_per_s",
    "faust_bare_per_s",
    "batched_events_per_s",
    "single_events_per_s",
    "latency_p50_s",
    "latency_p99_s",
    "peak_rss_bytes",
    "events",
    "machines",
    "open_orders",
    "horizon_bytes",
}


def test_bench_small_run_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "agents.cli",
            "bench",
            "--events",
            "3000",
            "--machines",
            "200",
            "--open-orders",
            "500",
            "--horizon-machines",
            "40",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data.keys() >= KEYS
    for key in KEYS:
        value = data[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value)
    assert (data["events"], data["machines"], data["open_orders"]) == (3000, 200, 500)
    assert "kpimon, batched messages" in proc.stdout  # the table
    assert "(e) peak RSS" in proc.stdout
    assert "(f) revision horizon (24 h), 40 machines" in proc.stdout


def test_bench_horizon_only_measures_a_full_horizon(tmp_path: Path) -> None:
    out = tmp_path / "horizon.json"
    command = ["bench", "--horizon-only", "--horizon-machines", "20", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "agents.cli", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    assert data["machines"] == 20 and data["hours"] == 26
    # 26 h of events, a 24 h horizon: the oldest events were forgotten, the rest kept.
    assert 0 < data["kept_events"] < data["events"]
    assert 0 < data["seen_ids"] < data["events"]
    assert data["engine_bytes"] > 0 and data["snapshot_bytes"] > 0
    assert proc.stdout.startswith("(f) revision horizon (24 h), 20 machines")
