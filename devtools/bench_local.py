"""The phases of `kpimon bench` that need no broker: the engine in-process, replay, horizon.

Each runs one module in a process of its own (`devtools.bench_inprocess`
for the engine on the bench mix and the simulator's replay,
`devtools.bench_horizon` for the revision horizon's memory), waits for its
JSON and returns it. What each measures is in those modules' docstrings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from devtools.bench_processes import BenchError
from devtools.bench_run import Bench


def run_module(bench: Bench, name: str, module: str, args: list[str], out: Path) -> dict:
    """`python -m module *args --json|--out out`, the progress line ticking meanwhile."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))
    env = {**os.environ, "PYTHONPATH": path}
    done = threading.Event()

    def tick() -> None:
        while not done.wait(0.5):
            bench.bar.update(0, None)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True
        )
    finally:
        done.set()
        ticker.join()
    if proc.returncode != 0:
        raise BenchError(f"{name}: exited {proc.returncode}\n{proc.stderr[-3000:]}")
    return orjson.loads(out.read_bytes())


def engine_phase(bench: Bench, start_us: int) -> dict[str, Any]:
    """The engine in-process on the bench mix (the same N events), no Kafka."""
    bench.bar.phase("engine in-process")
    out = bench.dir / "engine.json"
    args = bench.args
    command = ["engine", "--events", str(bench.n), "--mix-machines", str(args.mix_machines)]
    command += ["--seed", str(args.seed), "--start-us", str(start_us), "--out", str(out)]
    result = run_module(bench, "engine in-process", "devtools.bench_inprocess", command, out)
    if result["errors"] or result["refused"]:
        raise BenchError(
            f"engine in-process: {result['errors']} errors, {result['refused']} refused"
        )
    bench.bar.done(f"{result['events_per_s']:,.0f} ev/s, {result['us_per_event']:.1f} us an event")
    return result


def replay_phase(bench: Bench, days: float) -> dict[str, Any]:
    """`kpimon replay` of `days` of the simulator's plant, in-process."""
    bench.bar.phase(f"replay {days:g} days")
    out = bench.dir / f"replay-{days:g}.json"
    command = ["replay", "--days", str(days), "--seed", str(bench.args.seed), "--out", str(out)]
    began = time.monotonic()
    result = run_module(bench, f"replay {days:g} days", "devtools.bench_inprocess", command, out)
    result["wall_s"] = time.monotonic() - began
    bench.bar.done(f"{result['events']:,} events, {result['us_per_event']:.0f} us an event")
    return result


def horizon_phase(bench: Bench) -> dict[str, Any]:
    """(f): `devtools.bench_horizon` in a process of its own."""
    from devtools.bench_horizon import describe

    machines = bench.args.horizon_machines
    bench.bar.phase(f"revision horizon, {machines:,} machines")
    out = bench.dir / "horizon.json"
    command = ["--machines", str(machines), "--json", str(out)]
    result = run_module(bench, "revision horizon", "devtools.bench_horizon", command, out)
    bench.bar.done(f"{result['engine_bytes'] / 2**20:,.0f} MiB")
    result["text"] = describe(result)
    return result
