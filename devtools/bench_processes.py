"""The processes `kpimon bench` starts and reads, seen from the bench's side.

A `Child` is one measured subprocess (`python -m devtools.bench_workers ...`)
with its log and its memory from /proc; a `Worker` is a child that runs
kpimon, read through the probe page `/bench` (`devtools.bench_probe`).
`BenchError` is how any phase reports that a child failed or timed out:
`kpimon bench` prints it and exits 1, keeping the logs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BenchError(RuntimeError):
    """A phase failed: a child exited, or something did not happen in time."""


class DeadLetters(BenchError):
    """A measured worker dead-lettered some of the bench's messages."""

    def __init__(self, count: int, log: Path) -> None:
        super().__init__(f"{count} dead letters; log {log}")
        self.count = count


class Child:
    """A measured subprocess: `python -m devtools.bench_workers ...`."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devtools.bench_workers", *args],
                cwd=log.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_bytes()[-3000:].decode("utf-8", "replace")
            raise BenchError(f"{self.log.name}: exited {self.proc.returncode}\n{tail}")

    def memory(self) -> dict[str, int]:
        """VmHWM and VmRSS in bytes, from /proc (Linux)."""
        found = {}
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                name, _, value = line.partition(":")
                if name in ("VmHWM", "VmRSS"):
                    found[name] = int(value.split()[0]) * 1024
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def http_get(url: str, timeout: float = 5.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except OSError:
        return None


class Worker:
    """A kpimon worker subprocess with the bench probe."""

    def __init__(self, child: Child, url: str) -> None:
        self.child, self.url = child, url
        self.first_consumed: float | None = None

    def probe(self) -> dict[str, Any] | None:
        body = http_get(self.url + "/bench")
        if body is None:
            return None
        probe = orjson.loads(body)
        self.first_consumed = probe["first_consumed"]
        return probe

    def series(self, applied: int) -> list[list[float]]:
        """The probe's samples, once they include `applied` events applied."""
        deadline = time.monotonic() + 10
        while True:
            body = http_get(self.url + "/bench?series=1", timeout=30)
            if body is None:
                raise BenchError(f"/bench did not answer; log {self.child.log}")
            probe = orjson.loads(body)
            self.first_consumed = probe["first_consumed"]
            series = probe["series"]
            if (series and series[-1][3] >= applied) or time.monotonic() > deadline:
                return series
            time.sleep(0.05)
