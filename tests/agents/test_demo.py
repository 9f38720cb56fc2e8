"""`kpimon demo` runs start to finish and shows every KPI from the first
minute of live play on (line OEE of the last closed hour, perfect order,
p-charts), still there a minute later."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
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
    """The KPIs with a value among the latest closed records: `oee` counts only
    a line's hour (what the wall and the summary show first)."""
    found = set()
    for shard in view["shards"]:
        for r in shard["last_closed"]:
            if r["kpi"] == "oee" and not (r["scope"] == "line" and r["window"] == "1h"):
                continue
            value = {"oee": "oee", "perfect_order": "perfect_order_rate", "pchart": "p"}.get(
                r["kpi"]
            )
            if value and r.get(value) is not None:
                found.add(r["kpi"])
    return found


EVERY_KPI = {"oee", "perfect_order", "pchart"}


class Demo:
    """A `kpimon demo` subprocess whose output is collected as it comes."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "demo", "--port", str(self.port), *args],
            cwd=tmp_path,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def line(self, containing: str) -> str | None:
        return next((line for line in self.lines if containing in line), None)

    def live(self, timeout: float = 240) -> float:
        """Wait until live play starts (the history applied); its monotonic time."""
        wait_for(
            lambda: self.line("live play from") or self.proc.poll() is not None,
            timeout=timeout,
            what="the demo to apply its history and start live play",
            every=0.5,
        )
        assert self.line("live play from"), "\n".join(self.lines)
        return time.monotonic()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._reader.join(timeout=5)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def test_demo_shows_every_kpi_from_live_start_and_a_minute_later(tmp_path: Path) -> None:
    demo = Demo(tmp_path, "--duration", "400")
    try:
        began = demo.live()
        view = wait_for(
            lambda: (v := kpi(demo.port)) and kinds(v) >= EVERY_KPI and v,
            timeout=5,
            what="/kpi to show line OEE, perfect-order and p-chart values at live start",
            every=0.5,
        )
        assert view["pipeline"]["events"]
        live_from = demo.line("live play from").rsplit("live play from ", 1)[1][:17]  # type: ignore[union-attr]
        wait_for(
            lambda: time.monotonic() - began >= 60,
            timeout=70,
            what="60 s of live play",
            every=1.0,
        )
        view = kpi(demo.port)
        assert view is not None
        assert kinds(view) >= EVERY_KPI, kinds(view)
        watermark = max(s["watermark"] for s in view["shards"] if s["watermark"])
        assert watermark[:16] > live_from[:16], (watermark, live_from)  # it plays on
        assert demo.stop() == 0
    finally:
        demo.kill()
    output = demo.lines
    assert output[0] == f"kpimon: wall http://127.0.0.1:{demo.port}/", output[:3]
    assert any("embedded broker" in line for line in output)
    assert any(f"127.0.0.1:{demo.port}/kpi" in line for line in output)
    summaries = [line for line in output if line.startswith("kpimon ") and " ev/s" in line]
    assert summaries and all(len(line) <= 100 for line in summaries), summaries
    # One timestamp format: the watermark to the minute.
    stamps = [m for line in summaries for m in re.findall(r"\d{4}-\d\d-\d\dT[\d:.]+Z", line)]
    assert stamps and all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", s) for s in stamps), stamps
    assert any("OEE line-1" in line for line in summaries[-5:]), summaries[-5:]
