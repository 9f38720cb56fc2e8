"""One `kpimon bench` run: its scratch directory, broker, children and progress line.

`Bench` holds what every phase shares (the arguments, the run's name that
prefixes its topics, the temporary directory with the logs, the broker's
address, the children to stop at the end) and starts the kpimon workers
the phases measure. `Bar` is the one progress line on stderr. The phases
themselves are in `devtools.bench_phases`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from devtools.bench_processes import BenchError, Child, DeadLetters, Worker, free_port
from devtools.bench_produce import create_topics

KINDS = ("machine-state", "orders", "shipments")


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


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n = args.events
        self.run = f"kb{os.getpid()}x{int(time.time()) % 100_000}"
        self.dir = Path(tempfile.mkdtemp(prefix="kpimon-bench-"))
        phases = 18 - args.skip_rss + bool(args.horizon)
        self.bar = Bar(1 if args.horizon_only else phases, args.quiet)
        self.broker: Any = None
        self.bootstrap = ""
        self.details: dict[str, Any] = {}
        self.children: list[Child] = []

    def topics(self, tag: str) -> dict[str, str]:
        return {kind: f"{self.run}-{tag}-{kind}" for kind in KINDS}

    def timeout(self, events: int) -> float:
        return max(180.0, events / 200)

    def spawn(self, args: list[str], log: str) -> Child:
        child = Child(args, self.dir / log)
        self.children.append(child)
        return child

    def write_config(
        self,
        tag: str,
        inputs: dict[str, str],
        member: str = "",
        engine_partitions: int = 1,
        role: str = "all",
    ) -> tuple[Path, int]:
        """A worker config for `tag` (topics, app id, web port, data dir), reading
        the `inputs` topics; returns its path and the web port. Workers of one
        `tag` with distinct `member`s are one consumer group (the same app id and
        topics), each with its own web port and data dir."""
        port = free_port()
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
        config = self.dir / f"kpimon-{tag}{member}.toml"
        config.write_text(
            f"""[kafka]
broker = "kafka://{self.bootstrap}"
session_timeout = 6.0
heartbeat_interval = 0.5
rebalance_timeout = 6.0

[topics]
{topics}
input_partitions = 4
engine_partitions = {engine_partitions}

[worker]
app_id = "{self.run}-{tag}"
role = "{role}"
web_port = {port}
data_dir = "{self.dir / f"data-{tag}{member}"}"
"""
        )
        return config, port

    def start_kpimon(self, tag: str, inputs: dict[str, str], profile: str | None = None) -> Worker:
        """A kpimon worker on the `inputs` topics, once it holds every input partition."""
        from agents.settings import load_settings
        from agents.worker import topic_plan

        config, port = self.write_config(tag, inputs)
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

    def start_split(
        self, tag: str, inputs: dict[str, str], profile: str | None = None
    ) -> tuple[Worker, Worker]:
        """Two kpimon workers in one consumer group on the `inputs` topics, one
        of each role (`worker.role`): (ingest, engine), once the ingest worker
        holds every input partition and the engine worker the engine partition.
        `profile`: write each one's cProfile stats to `<profile>-<role>.prof`."""
        from agents.settings import load_settings
        from agents.worker import topic_plan

        workers = []
        for role in ("engine", "ingest"):  # the engine first: nothing is read before it is in
            config, port = self.write_config(tag, inputs, f"-{role}", role=role)
            if role == "engine":
                asyncio.run(create_topics(self.bootstrap, topic_plan(load_settings(config))))
            args = ["kpimon", "--config", str(config)]
            if profile:
                args += ["--profile", f"{profile}-{role}.prof"]
            child = self.spawn(args, f"kpimon-{tag}-{role}.log")
            workers.append(Worker(child, f"http://127.0.0.1:{port}"))
            deadline = time.monotonic() + 120
            while True:
                probe = workers[-1].probe()
                child.check()
                if probe is not None:
                    if role == "engine" and probe.get("engine_assigned", 0) == 1:
                        break
                    if role == "ingest" and probe["assigned"] == 4 * len(KINDS):
                        break
                if time.monotonic() > deadline:
                    raise BenchError(f"the {role} worker of {tag} did not take its partitions")
                time.sleep(0.2)
        engine, ingest = workers
        return ingest, engine

    def start_group(
        self,
        tag: str,
        inputs: dict[str, str],
        roles: Sequence[str],
        engine_partitions: int,
    ) -> list[Worker]:
        """kpimon workers in one consumer group on the `inputs` topics, one of
        each of `roles` (`worker.role`: "all", "ingest", "engine") in that
        order, once every input and engine partition is assigned and each
        worker holds some of the partitions of its role."""
        from agents.settings import load_settings
        from agents.worker import topic_plan

        workers = []
        for i, role in enumerate(roles):
            config, port = self.write_config(tag, inputs, f"-w{i}", engine_partitions, role)
            if i == 0:
                asyncio.run(create_topics(self.bootstrap, topic_plan(load_settings(config))))
            child = self.spawn(["kpimon", "--config", str(config)], f"kpimon-{tag}-w{i}.log")
            workers.append(Worker(child, f"http://127.0.0.1:{port}"))
        reads = [role != "engine" for role in roles]
        applies = [role != "ingest" for role in roles]
        deadline = time.monotonic() + 180
        stable_since = None
        while True:
            probes = [w.probe() for w in workers]
            for w in workers:
                w.child.check()
            ready = all(p is not None for p in probes)
            held = [p["assigned"] for p, r in zip(probes, reads, strict=True) if p and r]
            engines = [
                p.get("engine_assigned", 1) for p, a in zip(probes, applies, strict=True) if p and a
            ]
            spread = ready and min(held) > 0 and sum(held) == 4 * len(KINDS)
            spread = spread and sum(engines) == engine_partitions and min(engines) > 0
            if spread:
                # Settled: the same assignment for 2 s (no rebalance under way).
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since > 2:
                    return workers
            else:
                stable_since = None
            if time.monotonic() > deadline:
                raise BenchError(f"workers {tag} did not share the partitions: {probes}")
            time.sleep(0.2)

    def wait_applied(self, worker: Worker, expect: int, base: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout(expect)
        while True:
            worker.child.check()
            probe = worker.probe()
            if probe is not None:
                if probe["dead_letters"]:
                    raise DeadLetters(probe["dead_letters"], worker.child.log)
                self.bar.update(probe["applied"] - base, expect)
                if probe["applied"] >= base + expect:
                    return probe
            if time.monotonic() > deadline:
                raise BenchError(f"timed out waiting for {expect} events; log {worker.child.log}")
            time.sleep(0.2)

    def close(self, ok: bool) -> None:
        for child in self.children:
            child.stop()
        if self.broker is not None:
            self.broker.stop()
        if ok:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"kpimon bench: logs kept in {self.dir}", file=sys.stderr)
