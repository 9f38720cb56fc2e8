"""Running real workers against the embedded broker in tests.

Workers run as subprocesses (`python -m agents.cli worker`), exactly as in
production; the test talks to them over Kafka and HTTP and waits on
conditions, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parents[2]
_prefixes = itertools.count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll until `condition()` is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@dataclass
class Deployment:
    """Names and settings for one isolated pipeline on a shared broker."""

    prefix: str
    bootstrap: str
    config: Path
    data_dir: Path
    web_port: int

    @property
    def topics(self) -> dict[str, str]:
        p = self.prefix
        return {
            "machine_state": f"{p}machine-state",
            "orders": f"{p}orders",
            "shipments": f"{p}shipments",
            "windows": f"{p}kpi-windows",
            "alerts": f"{p}kpi-alerts",
            "dead_letter": f"{p}dead-letter",
            "engine": f"{p}engine",
        }


def make_deployment(
    tmp_path: Path, broker: Any, engine: str = "", worker: str = "", topics: str = ""
) -> Deployment:
    """A fresh set of topics and a worker configuration; `engine`, `worker` and
    `topics` add lines to those sections (e.g. `topics="engine_partitions = 4"`)."""
    prefix = f"t{os.getpid()}x{next(_prefixes)}-"
    dep = Deployment(
        prefix, broker.bootstrap, tmp_path / "kpimon.toml", tmp_path / "data", free_port()
    )
    names = "\n".join(f'{k} = "{v}"' for k, v in dep.topics.items())
    # The tests' events are of fixed days (tests.eventfactory.DAY), weeks behind
    # the clock by now; a test of the past horizon sets its own.
    past = "" if "past_horizon" in engine else 'past_horizon = "3650d"'
    dep.config.write_text(
        f"""
[kafka]
broker = "kafka://{broker.bootstrap}"
session_timeout = 6.0
heartbeat_interval = 0.5
rebalance_timeout = 6.0

[topics]
{names}
input_partitions = 4
{topics}

[worker]
app_id = "{prefix}kpimon"
web_port = {dep.web_port}
data_dir = "{dep.data_dir}"
snapshot_interval = 0.5
tick_interval = 0.5
idle_advance_after = 10.0
{worker}

[engine]
windows = ["1h", "1d"]
allowed_lateness = "5m"
{past}
{engine}
"""
    )
    from agents.settings import load_settings
    from agents.worker import topic_plan

    broker.create_topics_sync(topic_plan(load_settings(dep.config)))
    return dep


class Worker:
    """A worker subprocess of a deployment."""

    def __init__(
        self,
        dep: Deployment,
        name: str = "worker",
        *,
        web_port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`web_port` (default the deployment's) lets several workers of one
        deployment run side by side; `env` adds environment variables, e.g.
        `KPIMON_WORKER__LOG_LEVEL`."""
        self.dep = dep
        self.web_port = dep.web_port if web_port is None else web_port
        dep.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = dep.data_dir / f"{name}.out"
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        command = [sys.executable, "-m", "agents.cli", "worker", "--config", str(dep.config), "-q"]
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.web_port)],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=5) as resp:
            return json.loads(resp.read())

    def try_get(self, path: str) -> Any:
        try:
            return self.get(path)
        except OSError:
            return None

    def wait_started(self, timeout: float = 90, healthy: bool = True) -> None:
        """Wait until /healthz answers 200 (or, with `healthy=False`, answers at all)."""

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get("/healthz")
            except urllib.error.HTTPError:
                return not healthy
            except OSError:
                return False
            return True

        wait_for(up, timeout, "the worker's /healthz")

    def log_tail(self, n: int = 4000) -> str:
        """The end of the worker's output and, if it wrote one, of its log file
        (`worker.log` in the data dir: warnings such as offsets read back)."""
        text = self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        log_file = self.dep.data_dir / "worker.log"
        if log_file.exists():
            tail = log_file.read_bytes()[-n:].decode("utf-8", "replace")
            text += f"\n--- {log_file.name} (the end) ---\n{tail}"
        return text

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


async def _read_topic(
    bootstrap: str, topic: str, until: Callable[[list[tuple[bytes, bytes]]], bool], timeout: float
) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(got):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s reading {topic}: {len(got)} messages"
                )
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                got += [(m.key, m.value) for m in messages]
    finally:
        await consumer.stop()
    return got


def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[tuple[bytes, bytes]]], bool],
    timeout: float = 120,
) -> list[tuple[bytes, bytes]]:
    """Read a topic from the beginning until `until(messages)` holds."""
    return asyncio.run(_read_topic(bootstrap, topic, until, timeout))


def produce(
    dep: Deployment, events: list[dict[str, Any]], raw: list[tuple[str, bytes, bytes]] = ()
) -> None:
    """Send raw messages (topic key, key, value), then events (validated, batched, keyed),
    in one go: a pause between them would let the inputs go idle."""
    from aiokafka import AIOKafkaProducer

    from agents.settings import load_settings
    from devtools.producer import EventProducer

    settings = load_settings(dep.config)

    async def send() -> None:
        as_they_are = AIOKafkaProducer(bootstrap_servers=dep.bootstrap, linger_ms=5)
        await as_they_are.start()
        try:
            async with EventProducer(
                dep.bootstrap, topics=settings.topics, max_batch=50
            ) as producer:
                for topic_key, key, value in raw:
                    await as_they_are.send_and_wait(dep.topics[topic_key], value=value, key=key)
                await producer.send(events)
        finally:
            await as_they_are.stop()

    asyncio.run(send())


def produce_raw(dep: Deployment, messages: list[tuple[str, bytes | None, bytes]]) -> None:
    """Send (topic key, key, value) messages as they are, in order, without waiting on each."""
    from aiokafka import AIOKafkaProducer

    async def send() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=dep.bootstrap, linger_ms=5, max_request_size=4_194_304
        )
        await producer.start()
        try:
            futures = [
                await producer.send(dep.topics[topic], value=value, key=key)
                for topic, key, value in messages
            ]
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    asyncio.run(send())


def watermark(worker: Worker) -> str | None:
    """The worker's engine watermark (ISO time), None before it has one or when unreachable."""
    kpi = worker.try_get("/kpi")
    marks = [s["watermark"] for s in (kpi or {}).get("shards", []) if s.get("watermark")]
    return min(marks) if marks else None


def records_by_key(messages: list[tuple[bytes, bytes]]) -> dict[str, dict[str, Any]]:
    """Output records by identity, each at its newest revision (what a compacted
    topic keeps); a record published twice at one revision must be identical."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in messages:
        record = orjson.loads(value)
        previous = found.setdefault(key.decode(), record)
        if record["revision"] > previous["revision"]:
            found[key.decode()] = record
        elif record["revision"] == previous["revision"]:
            assert previous == record, f"record {key!r} published twice with different values"
    return found
