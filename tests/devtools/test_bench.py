"""`kpimon bench --quick`: a smoke test (it completes and writes every figure).

No timed assertions: the figures depend on the machine and its load.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.bench_snapshot import run
from tests.agents.harness import ROOT

pytestmark = pytest.mark.integration

KEYS = (
    "raw_events_per_s",
    "faust_bare_single_per_s",
    "faust_bare_batched_per_s",
    "engine_events_per_s",
    "single_events_per_s",
    "batched_events_per_s",
    "gateway_events_per_s",
    "two_workers_gateway_events_per_s",
    "single_split_events_per_s",
    "batched_split_events_per_s",
    "gateway_split_events_per_s",
    "latency_p50_s",
    "latency_p99_s",
    "peak_rss_bytes",
    "replay_us_per_event_short",
    "replay_us_per_event_long",
    "events",
    "machines",
    "open_orders",
)


def test_bench_quick_writes_every_figure(tmp_path: Path) -> None:
    """`kpimon bench --quick`: every figure a positive number, or null with a reason."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "agents.cli", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    reasons = data["null_reasons"]
    for key in KEYS:
        value = data[key]
        if value is None:
            assert reasons.get(key), f"{key} is null without a reason"
        else:
            assert isinstance(value, int | float) and math.isfinite(value), (key, value)
            assert value > 0, (key, value)
    assert data["events"] == 10_000  # --quick's size
    assert data["horizon_bytes"] is None and reasons["horizon_bytes"]
    # The table: a row and a mark for every target.
    assert "kpimon, gateway batches of 100" in proc.stdout
    assert "roles split (2 processes), batches" in proc.stdout
    assert "<= 512 MiB" in proc.stdout and "<= 1.2 x short" in proc.stdout


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


def test_the_snapshot_bench_shows_tokened_sections_skipped() -> None:
    """`python -m devtools.bench_snapshot`: a minute of a live plant; with tokens
    a snapshot makes less than with every section made."""

    def made(tokens: bool) -> float:
        *_, last = run(600.0, 1.1, 2.5, 100, tokens)
        assert last.lstrip().startswith("60 s")
        return float(last.split("made")[1].split("MB")[0])

    assert made(True) < made(False) / 1.5
