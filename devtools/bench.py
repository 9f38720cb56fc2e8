"""`kpimon bench`: throughput, latency and memory of the live pipeline, in one run.

    kpimon bench [--events 1000000] [--machines 10000] [--open-orders 100000]
                 [--broker kafka://host:port] [--json PATH] [--skip-rss] [-q]
                 [--horizon-machines 10000] [--skip-horizon] [--horizon-only]

Everything runs on this machine against one broker (the embedded one unless
`--broker` is given). Each measured consumer is its own subprocess
(`devtools.bench_workers`), so it has a core of its own apart from the
producer and the peak RSS is that process's `VmHWM` from /proc.

The events: a synthetic plant of `--mix-machines` machines (default 1,000;
10 per line, 100 per site) in rounds of 60 s of event time. Each round
every machine sends 5-9 counts and 1-3 state changes, and for each machine
0-2 order-side events follow (new orders; shipments, some late, short or
damaged; closes of short orders; cancellations): about 70 % counts, 20 %
states, 10 % orders and shipments. The stream ends ten minutes before
the bench starts and is never further out of order than one round, well
inside the default lateness. Every 997th event is checked with
`streams.decode.parse_event`.

The same N events are produced twice, before anything is timed, to their
own input topics (4 partitions each): **batched**, a machine's events of
one round as one message (a JSON array; order-side events are one per
message, as their keys differ), and **single**, one event per message.

Measurements (every rate is from the first message consumed to the last
event counted, so start-up and group joins are not in it):

(a) raw ceiling: a plain aiokafka consumer, no group, reading the input
    topics from the beginning and decoding every message with orjson.
(b) bare Faust: a Faust app with one agent that iterates the stream and
    does nothing (concurrency 1, as kpimon's agents).
(c) kpimon end to end: `start_worker` on a generated config (what
    `kpimon worker --config ... -q` runs), with a read-only probe added
    (see `devtools.bench_workers`): every 10 ms it reads the counters of
    messages consumed, events forwarded by the ingest agent and events
    applied by the engine shards (`events.*` in their stats, the counts
    `/kpi` shows) and notes the wall time when they change. "All KPIs
    final" is the moment the engine has applied all N events: events/s =
    N / (that moment - first message consumed), to within 10 ms.
(d) latency at half of (c)'s batched rate: a fresh worker; batched
    messages of the same mix, every event stamped with the wall time it is
    handed to the producer, paced to that rate for `--latency-seconds`
    after a 2 s warm-up. An event is visible when the engine's applied
    count reaches its position in the produced stream (the engine topic
    has one partition, so it applies in the order ingest forwarded them;
    across input partitions this is a first-in-first-out estimate). The
    probe's 10 ms sampling runs in the worker's event loop, so a step
    that holds the loop (closing windows, a snapshot) delays it too, as it
    delays `/kpi`. p50 and p99 over every event sent in the measured part.
(e) memory: a fresh worker is sent `--machines` machines (a state and a
    count each, one message per machine) and `--open-orders` orders (1-3
    lines, promised 30 days ahead, so they stay open). Once the engine has
    applied them all and taken a snapshot, `/kpi` and `/metrics` are read
    once (building the live view is part of serving those machines) and
    the worker's `VmHWM` is the peak RSS.

(f) revision-horizon memory: `devtools.bench_horizon` in a process of its
    own feeds an engine (no broker, no worker) 26 hours of on-change events
    from `--horizon-machines` machines and reports the memory the 24-hour
    revision horizon holds, and one snapshot's size and time (see that
    module). `--horizon-only` runs just this phase.

The worker settings are the defaults (engine windows 1m/1h/1d, snapshot
every 2 s, ticks every 1 s), with the consumer-group timeouts of the
integration tests (6 s session). Other processes on the machine take CPU
from the measured ones: the table shows the load average at the start
and at the end of each phase.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from devtools.bench_workers import (
    ROUND_US,
    Message,
    Mix,
    create_topics,
    paced,
    produce,
    singles,
    state_load,
)

KINDS = ("machine-state", "orders", "shipments")
JSON_KEYS = (
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
)
TARGETS = {"batched": 0.60, "single": 0.90, "latency_p99_s": 1.0, "rss_bytes": 1 << 30}


# ------------------------------------------------------------------ processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BenchError(RuntimeError):
    pass


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


def _get(url: str, timeout: float = 5.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except OSError:
        return None


class Bar:
    """One line on stderr: phase, bar, count, elapsed. Plain lines when not a terminal."""

    def __init__(self, phases: int, quiet: bool) -> None:
        self.phases, self.quiet = phases, quiet
        self.tty = sys.stderr.isatty()
        self.number = 0
        self.name = ""
        self.began = time.monotonic()
        self.loads: dict[str, float] = {}  # phase -> 1-minute load average at its end

    def phase(self, name: str) -> None:
        self.number += 1
        self.name, self.began = name, time.monotonic()
        self.update(0, None)

    def update(self, done: int, total: int | None, unit: str = "ev") -> None:
        if self.quiet or not self.tty:
            return
        elapsed = time.monotonic() - self.began
        if total:
            share = min(done / total, 1.0)
            bar = "#" * round(24 * share) + "." * (24 - round(24 * share))
            count = f"{share:4.0%}  {done:,}/{total:,} {unit}"
        else:
            bar, count = "." * 24, f"{done:,} {unit}" if done else ""
        line = f"[{self.number}/{self.phases}] {self.name:<22} [{bar}] {count}  {elapsed:5.1f}s"
        sys.stderr.write("\r\033[K" + line)
        sys.stderr.flush()

    def done(self, note: str) -> None:
        self.loads[self.name] = round(os.getloadavg()[0], 2)
        if self.quiet:
            return
        elapsed = time.monotonic() - self.began
        prefix = "\r\033[K" if self.tty else ""
        line = f"[{self.number}/{self.phases}] {self.name}: {note} ({elapsed:.1f}s)"
        sys.stderr.write(prefix + line + "\n")
        sys.stderr.flush()


# ----------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n = args.events
        self.run = f"kb{os.getpid()}x{int(time.time()) % 100_000}"
        self.dir = Path(tempfile.mkdtemp(prefix="kpimon-bench-"))
        phases = 10 - args.skip_rss + (not args.skip_horizon)
        self.bar = Bar(1 if args.horizon_only else phases, args.quiet)
        self.broker: Any = None
        self.bootstrap = ""
        self.details: dict[str, Any] = {}
        self.children: list[Child] = []

    def topics(self, tag: str) -> dict[str, str]:
        return {kind: f"{self.run}-{tag}-{kind}" for kind in KINDS}

    def timeout(self, events: int) -> float:
        return max(180.0, events / 200)

    # -- phases ----------------------------------------------------------------

    def produce_shape(self, shape: str, messages: Iterable[Message]) -> dict[str, int]:
        self.bar.phase(f"produce {shape}")
        topics = self.topics(shape)
        asyncio.run(create_topics(self.bootstrap, dict.fromkeys(topics.values(), 4)))
        began = time.monotonic()
        sent, events = asyncio.run(
            produce(self.bootstrap, topics, messages, lambda e: self.bar.update(e, self.n))
        )
        seconds = time.monotonic() - began
        self.bar.done(f"{events:,} events in {sent:,} messages, {events / seconds:,.0f} ev/s")
        return {"messages": sent, "events": events}

    def child_phase(self, name: str, what: str, shape: str, expect: int, unit: str) -> dict:
        self.bar.phase(name)
        out = self.dir / f"{what}-{shape}.json"
        args = [
            what,
            "--bootstrap",
            self.bootstrap,
            "--topics",
            ",".join(self.topics(shape).values()),
            "--expect",
            str(expect),
            "--out",
            str(out),
            "--app-id",
            f"{self.run}-bare-{shape}",
            "--data-dir",
            str(self.dir / f"bare-{shape}"),
        ]
        child = self.spawn(args, f"{what}-{shape}.log")
        deadline = time.monotonic() + self.timeout(expect)
        try:
            while not out.exists():
                child.check()
                if time.monotonic() > deadline:
                    raise BenchError(f"{name}: timed out; log {child.log}")
                with contextlib.suppress(OSError, ValueError):
                    self.bar.update(int((Path(f"{out}.progress")).read_text()), expect, unit)
                time.sleep(0.2)
            result = orjson.loads(out.read_bytes())
            result["vm"] = child.memory()
        finally:
            child.stop()
        result["seconds"] = result["last"] - result["first"]
        return result

    def spawn(self, args: list[str], log: str) -> Child:
        child = Child(args, self.dir / log)
        self.children.append(child)
        return child

    def start_kpimon(self, tag: str, inputs: dict[str, str], profile: str | None = None) -> Worker:
        from agents.settings import load_settings
        from agents.worker import topic_plan

        port = _free_port()
        names = {
            "machine_state": inputs["machine-state"],
            "orders": inputs["orders"],
            "shipments": inputs["shipments"],
            "windows": f"{self.run}-{tag}-kpi-windows",
            "alerts": f"{self.run}-{tag}-kpi-alerts",
            "dead_letter": f"{self.run}-{tag}-dead-letter",
            "engine": f"{self.run}-{tag}-engine",
        }
        topics = "\n".join(f'{k} = "{v}"' for k, v in names.items())
        config = self.dir / f"kpimon-{tag}.toml"
        config.write_text(
            f"""[kafka]
broker = "kafka://{self.bootstrap}"
session_timeout = 6.0
heartbeat_interval = 0.5
rebalance_timeout = 6.0

[topics]
{topics}
input_partitions = 4

[worker]
app_id = "{self.run}-{tag}"
web_port = {port}
data_dir = "{self.dir / f"data-{tag}"}"
"""
        )
        asyncio.run(create_topics(self.bootstrap, topic_plan(load_settings(config))))
        args = ["kpimon", "--config", str(config)]
        if profile:
            args += ["--profile", profile]
        child = self.spawn(args, f"kpimon-{tag}.log")
        worker = Worker(child, f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while (probe := worker.probe()) is None or probe["assigned"] < 4 * len(KINDS):
            child.check()
            if time.monotonic() > deadline:
                raise BenchError(f"worker {tag} did not start; log {child.log}")
            time.sleep(0.2)
        return worker

    def wait_applied(self, worker: Worker, expect: int, base: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout(expect)
        while True:
            worker.child.check()
            probe = worker.probe()
            if probe is not None:
                if probe["dead_letters"]:
                    raise BenchError(
                        f"{probe['dead_letters']} dead letters; log {worker.child.log}"
                    )
                self.bar.update(probe["applied"] - base, expect)
                if probe["applied"] >= base + expect:
                    return probe
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {expect} events; log {worker.child.log}")
            time.sleep(0.2)

    def kpimon_phase(self, shape: str) -> dict[str, Any]:
        self.bar.phase(f"kpimon {shape}")
        profile = None
        if self.args.profile:
            Path(self.args.profile).mkdir(parents=True, exist_ok=True)
            profile = str(Path(self.args.profile).resolve() / f"worker-{shape}.prof")
        worker = self.start_kpimon(shape, self.topics(shape), profile)
        try:
            self.wait_applied(worker, self.n)
            series = worker.series(self.n)
            vm = worker.child.memory()
        finally:
            worker.child.stop()
        first = worker.first_consumed
        done = _first_at(series, 3, self.n)
        ingested = _first_at(series, 2, self.n)
        rate = self.n / (done - first)
        self.bar.done(f"{rate:,.0f} ev/s")
        return {
            "events_per_s": rate,
            "seconds": done - first,
            "ingest_done_s": ingested - first,
            "worker_vm": vm,
        }

    def latency_phase(self, rate: float) -> dict[str, Any]:
        self.bar.phase("latency")
        topics = self.topics("latency")
        asyncio.run(create_topics(self.bootstrap, dict.fromkeys(topics.values(), 4)))
        worker = self.start_kpimon("latency", topics)
        mix = Mix(self.args.mix_machines, self.args.seed + 1, 0, f"{self.run}-lat-").messages(
            1 << 62
        )
        seconds = self.args.latency_seconds or min(30.0, max(5.0, self.n / rate))
        try:
            warm = asyncio.run(paced(self.bootstrap, topics, mix, rate, 2.0))
            base = warm[-1][1] if warm else 0
            self.wait_applied(worker, base)
            self.bar.update(0, None)
            total = round(rate * seconds)
            log = asyncio.run(
                paced(
                    self.bootstrap, topics, mix, rate, seconds, lambda e: self.bar.update(e, total)
                )
            )
            sent = log[-1][1] if log else 0
            self.wait_applied(worker, sent, base)
            series = worker.series(base + sent)
        finally:
            worker.child.stop()
        p50, p99 = _latencies(series, 3, log, base)
        ingest50, ingest99 = _latencies(series, 2, log, base)
        self.bar.done(f"p50 {p50:.3f} s, p99 {p99:.3f} s at {sent / seconds:,.0f} ev/s")
        return {
            "p50_s": p50,
            "p99_s": p99,
            "to_ingest_p50_s": ingest50,
            "to_ingest_p99_s": ingest99,
            "rate": sent / seconds,
            "seconds": seconds,
            "events": sent,
        }

    def rss_phase(self) -> dict[str, Any]:
        self.bar.phase("memory")
        machines, orders = self.args.machines, self.args.open_orders
        topics = self.topics("rss")
        asyncio.run(create_topics(self.bootstrap, dict.fromkeys(topics.values(), 4)))
        worker = self.start_kpimon("rss", topics)
        try:
            load = state_load(machines, orders, time.time_ns() // 1000, f"{self.run}-rss-")
            _, events = asyncio.run(produce(self.bootstrap, topics, load))
            probe = self.wait_applied(worker, events)
            done = time.time()
            deadline = time.monotonic() + 120
            while (probe["snapshot_wall"] or 0) <= done:
                worker.child.check()
                if time.monotonic() > deadline:
                    raise BenchError(f"no snapshot after the load; log {worker.child.log}")
                time.sleep(0.2)
                probe = worker.probe() or probe
            before_views = worker.child.memory()
            for page in ("/kpi", "/metrics"):
                if _get(worker.url + page, timeout=120) is None:
                    raise BenchError(f"{page} did not answer; log {worker.child.log}")
            vm = worker.child.memory()
        finally:
            worker.child.stop()
        if probe["machines"] != machines or probe["open_orders"] != orders:
            raise BenchError(
                f"memory test state: {probe['machines']} machines, {probe['open_orders']} open "
                f"orders, expected {machines} and {orders}"
            )
        peak = vm["VmHWM"]
        self.bar.done(f"peak RSS {peak / 2**20:,.0f} MiB")
        return {"peak_rss_bytes": peak, "before_views": before_views, "after_views": vm}

    def horizon_phase(self) -> dict[str, Any]:
        """(f): `devtools.bench_horizon` in a process of its own."""
        from devtools.bench_horizon import describe

        machines = self.args.horizon_machines
        self.bar.phase(f"revision horizon, {machines:,} machines")
        out = self.dir / "horizon.json"
        root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))
        env = {**os.environ, "PYTHONPATH": path}
        command = [sys.executable, "-m", "devtools.bench_horizon", "--machines", str(machines)]
        proc = subprocess.run(
            [*command, "--json", str(out)], env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise BenchError(f"revision horizon: exited {proc.returncode}\n{proc.stderr[-3000:]}")
        result = orjson.loads(out.read_bytes())
        self.bar.done(f"{result['engine_bytes'] / 2**20:,.0f} MiB")
        result["text"] = describe(result)
        return result

    # -- the whole run -----------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        args = self.args
        now = time.time_ns() // 1000
        rounds = Mix.rounds_for(self.n, args.mix_machines)
        start = now - now % ROUND_US - (rounds + 10) * ROUND_US

        def mix() -> Iterator[Message]:
            return Mix(args.mix_machines, args.seed, start, f"{self.run}-").messages(self.n)

        d = self.details
        d["load_average"] = os.getloadavg()
        d["cpus"] = os.cpu_count()
        produced = {"batched": self.produce_shape("batched", mix()), "single": None}
        produced["single"] = self.produce_shape("single", singles(mix()))
        d["produced"] = produced
        raw = {}
        bare = {}
        for shape in ("batched", "single"):
            raw[shape] = self.child_phase(f"raw consumer {shape}", "raw", shape, self.n, "ev")
            raw[shape]["events_per_s"] = self.n / raw[shape]["seconds"]
            self.bar.done(f"{raw[shape]['events_per_s']:,.0f} ev/s")
        for shape in ("batched", "single"):
            messages = produced[shape]["messages"]
            bare[shape] = self.child_phase(
                f"bare Faust {shape}", "faust-bare", shape, messages, "msg"
            )
            bare[shape]["messages_per_s"] = messages / bare[shape]["seconds"]
            bare[shape]["events_per_s"] = self.n / bare[shape]["seconds"]
            self.bar.done(f"{bare[shape]['messages_per_s']:,.0f} msg/s")
        d["raw"], d["faust_bare"] = raw, bare
        kpimon = {shape: self.kpimon_phase(shape) for shape in ("batched", "single")}
        d["kpimon"] = kpimon
        d["latency"] = self.latency_phase(kpimon["batched"]["events_per_s"] / 2)
        d["memory"] = None if args.skip_rss else self.rss_phase()
        d["horizon"] = None if args.skip_horizon else self.horizon_phase()
        d["load_average_by_phase"] = self.bar.loads
        return {
            "raw_events_per_s": raw["batched"]["events_per_s"],
            "faust_bare_per_s": bare["single"]["events_per_s"],
            "batched_events_per_s": kpimon["batched"]["events_per_s"],
            "single_events_per_s": kpimon["single"]["events_per_s"],
            "latency_p50_s": d["latency"]["p50_s"],
            "latency_p99_s": d["latency"]["p99_s"],
            "peak_rss_bytes": None if d["memory"] is None else d["memory"]["peak_rss_bytes"],
            "events": self.n,
            "machines": None if args.skip_rss else args.machines,
            "open_orders": None if args.skip_rss else args.open_orders,
            "horizon_bytes": None if d["horizon"] is None else d["horizon"]["engine_bytes"],
        }

    def close(self, ok: bool) -> None:
        for child in self.children:
            child.stop()
        if self.broker is not None:
            self.broker.stop()
        if ok:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"kpimon bench: logs kept in {self.dir}", file=sys.stderr)


class Worker:
    """A kpimon worker subprocess with the bench probe."""

    def __init__(self, child: Child, url: str) -> None:
        self.child, self.url = child, url
        self.first_consumed: float | None = None

    def probe(self) -> dict[str, Any] | None:
        body = _get(self.url + "/bench")
        if body is None:
            return None
        probe = orjson.loads(body)
        self.first_consumed = probe["first_consumed"]
        return probe

    def series(self, applied: int) -> list[list[float]]:
        """The probe's samples, once they include `applied` events applied."""
        deadline = time.monotonic() + 10
        while True:
            body = _get(self.url + "/bench?series=1", timeout=30)
            if body is None:
                raise BenchError(f"/bench did not answer; log {self.child.log}")
            probe = orjson.loads(body)
            self.first_consumed = probe["first_consumed"]
            series = probe["series"]
            if (series and series[-1][3] >= applied) or time.monotonic() > deadline:
                return series
            time.sleep(0.05)


def _first_at(series: list[list[float]], column: int, count: int) -> float:
    for row in series:
        if row[column] >= count:
            return row[0]
    raise BenchError(f"the probe never saw {count} in column {column}")


def _latencies(
    series: list[list[float]], column: int, log: list[tuple[float, int]], base: int
) -> tuple[float, float]:
    """p50 and p99 of (time the probe's `column` count reached an event's position
    in the produced stream) - (its send time), over every event sent."""
    times = [row[0] for row in series]
    counts = [row[column] for row in series]
    latencies: list[float] = []
    before = 0
    for at, upto in log:
        i = bisect.bisect_left(counts, base + upto)
        latencies += [times[i] - at] * (upto - before)
        before = upto
    latencies.sort()
    return _quantile(latencies, 0.50), _quantile(latencies, 0.99)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        raise BenchError("no latency samples")
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


# ----------------------------------------------------------------------- report


def table(result: dict[str, Any], details: dict[str, Any], args: argparse.Namespace) -> str:
    d = details
    raw, bare, kp = d["raw"], d["faust_bare"], d["kpimon"]
    rows: list[tuple[str, str, str, str, str]] = []

    def rate(value: float, unit: str = "ev/s") -> str:
        return f"{value:,.0f} {unit}"

    def met(ok: bool) -> str:
        return "yes" if ok else "NO"

    rows.append(
        ("(a) raw aiokafka+orjson, batched", rate(raw["batched"]["events_per_s"]), "", "", "")
    )
    rows.append(("    raw, single-event messages", rate(raw["single"]["events_per_s"]), "", "", ""))
    rows.append(("(b) bare Faust agent, single", rate(bare["single"]["events_per_s"]), "", "", ""))
    rows.append(
        ("    bare Faust agent, batched", rate(bare["batched"]["messages_per_s"], "msg/s"), "", "", "")
    )  # fmt: skip
    ratio_b = result["batched_events_per_s"] / result["raw_events_per_s"]
    ratio_s = result["single_events_per_s"] / result["faust_bare_per_s"]
    rows.append(
        (
            "(c) kpimon, batched messages",
            rate(result["batched_events_per_s"]),
            f"{ratio_b:.2f} of (a)",
            ">= 0.60 of (a)",
            met(ratio_b >= TARGETS["batched"]),
        )
    )
    rows.append(
        (
            "(c) kpimon, single-event messages",
            rate(result["single_events_per_s"]),
            f"{ratio_s:.2f} of (b)",
            ">= 0.90 of (b)",
            met(ratio_s >= TARGETS["single"]),
        )
    )
    lat = d["latency"]
    rows.append(
        (f"(d) latency p50 at {lat['rate']:,.0f} ev/s", f"{lat['p50_s']:.3f} s", "", "", "")
    )
    rows.append(
        (
            f"(d) latency p99 at {lat['rate']:,.0f} ev/s",
            f"{lat['p99_s']:.3f} s",
            "",
            "<= 1 s",
            met(lat["p99_s"] <= TARGETS["latency_p99_s"]),
        )
    )
    if d["memory"] is not None:
        peak = d["memory"]["peak_rss_bytes"]
        rows.append(
            (
                f"(e) peak RSS, {args.machines:,} machines, {args.open_orders:,} orders",
                f"{peak / 2**20:,.0f} MiB",
                "",
                "<= 1024 MiB",
                met(peak <= TARGETS["rss_bytes"]),
            )
        )
    loads = list(d["load_average_by_phase"].values()) or [d["load_average"][0]]
    head = ("measure", "value", "ratio", "target", "met?")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(5)]
    lines = [
        f"kpimon bench: {result['events']:,} events per shape ({args.mix_machines:,} machines in "
        f"the mix; batched: {d['produced']['batched']['messages']:,} messages), broker "
        f"{args.broker or 'embedded (Tansu)'}, {d['cpus']} CPUs, 1-min load average "
        f"{d['load_average'][0]:.2f} at the start, {min(loads):.2f}-{max(loads):.2f} at the "
        f"ends of the phases",
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1])]
        cells += [c.ljust(w) for c, w in zip(row[2:], widths[2:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    lines.append(
        f"kpimon ingest (validate and forward) finished after "
        f"{kp['batched']['ingest_done_s']:.1f} s of {kp['batched']['seconds']:.1f} s (batched), "
        f"{kp['single']['ingest_done_s']:.1f} s of {kp['single']['seconds']:.1f} s (single)"
    )
    if d["memory"] is not None:
        lines.append(
            f"peak RSS of the memory test before /kpi and /metrics were read: "
            f"{d['memory']['before_views']['VmHWM'] / 2**20:,.0f} MiB"
        )
    lines.append(
        f"latency to the ingest agent's forward (before the engine): "
        f"p50 {lat['to_ingest_p50_s']:.3f} s, p99 {lat['to_ingest_p99_s']:.3f} s"
    )
    if d.get("horizon") is not None:
        lines.append(d["horizon"]["text"])
    return "\n".join(lines)


def run_bench(args: argparse.Namespace) -> int:
    if args.events < 1 or args.mix_machines < 1 or args.machines < 1 or args.open_orders < 0:
        print("kpimon bench: counts must be positive", file=sys.stderr)
        return 2
    bench = Bench(args)
    if args.horizon_only:
        return run_horizon_only(bench)
    ok = False
    try:
        if args.broker:
            bench.bootstrap = args.broker.removeprefix("kafka://")
        else:
            from devtools.broker import EmbeddedBroker

            bench.broker = EmbeddedBroker(log_path=bench.dir / "tansu.log").start()
            bench.bootstrap = bench.broker.bootstrap
        result = bench.execute()
        ok = True
    except BenchError as exc:
        print(f"\nkpimon bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nkpimon bench: interrupted", file=sys.stderr)
        return 130
    finally:
        bench.close(ok)
    print(table(result, bench.details, args))
    if args.json:
        data = {key: result[key] for key in JSON_KEYS} | {"details": bench.details}
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    return 0


def run_horizon_only(bench: Bench) -> int:
    """`kpimon bench --horizon-only`: (f) alone, in-process engine, no broker."""
    try:
        result = bench.horizon_phase()
    except BenchError as exc:
        print(f"\nkpimon bench: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.close(True)
    print(result["text"])
    if bench.args.json:
        Path(bench.args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0
