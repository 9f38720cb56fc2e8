"""`kpimon demo`: the embedded broker, the simulated plant and a worker on
this machine, with targets to colour the wall when the settings have none."""

from __future__ import annotations

import argparse
import sys

from agents.cli_common import EXIT_USAGE, settings_with_broker
from agents.settings import Settings
from devtools.simulator import SimConfig
from streams.config import EngineConfig

#: The demo's targets when the configuration sets none (`kpimon demo` only).
DEMO_LINE_TARGETS = {"oee": 0.65, "availability": 0.8, "performance": 0.9, "quality": 0.97}
DEMO_PERFECT_ORDER_TARGETS = {"A": 0.95, "B": 0.9, "C": 0.85}


def sim_config(args: argparse.Namespace, id_prefix: str) -> SimConfig:
    """The simulator's configuration from `--profiles`, `--outages-per-day`, `--plc-lost-share`."""
    from devtools.simulator_gateway import Outages

    outages = None
    if args.outages_per_day > 0:
        outages = Outages(
            mean_gap_s=86_400 / args.outages_per_day, plc_lost_share=args.plc_lost_share
        )
    return SimConfig(id_prefix=id_prefix, profiles=args.profiles, outages=outages)


def demo_engine(settings: Settings, sim: SimConfig) -> EngineConfig:
    """Engine settings the simulated gateways need: the PLCs' counter modulus,
    and revisions that reach back over the longest gateway outage."""
    from streams.timeutil import parse_duration_us

    engine = settings.engine
    updates: dict[str, object] = {}
    if engine.counter_modulus is None:
        updates["counter_modulus"] = sim.counter_modulus
    if sim.outages is not None:
        longest_s = sim.outages.duration_s[1]
        if parse_duration_us(engine.revision_horizon) < round(longest_s * 1_000_000):
            updates["revision_horizon"] = longest_s
    if not engine.targets and not engine.policies:
        # Something to colour the wall against: targets of a plausible plant.
        from streams.config import ServicePolicy, TargetSettings

        updates["targets"] = [
            TargetSettings(site=sim.site, line=spec.line, **DEMO_LINE_TARGETS) for spec in sim.lines
        ]
        updates["policies"] = {
            segment: ServicePolicy(perfect_order=rate)
            for segment, rate in DEMO_PERFECT_ORDER_TARGETS.items()
        }
    return engine.model_copy(update=updates) if updates else engine


def run_demo(args: argparse.Namespace) -> int:
    """`kpimon demo`; returns the exit code."""
    from agents.worker import add_console, start_worker
    from devtools.broker import start_for_worker
    from devtools.demo_feed import add_simulator

    try:
        sim = sim_config(args, id_prefix=f"demo{args.seed}-")
    except ValueError as exc:
        print(f"kpimon demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = settings_with_broker(args)
    # The demo compresses time: its plant runs ahead of the wall clock.
    quick = {"max_future_skew": 366 * 86_400.0}
    if "idle_advance_after" not in settings.worker.model_fields_set:
        # After the history, event time reaches its end within seconds (see
        # `devtools.demo_feed`); a quiet input moves on at clock pace, 1/60 of the demo's.
        quick["idle_advance_after"] = 5.0
    worker = settings.worker.model_copy(update=quick)
    engine = demo_engine(settings, sim)
    topics = settings.topics
    if settings.kafka.broker is None and "input_partitions" not in topics.model_fields_set:
        # Orders and shipments are sparse (a shipment an hour): on one partition
        # each, the slowest input holds the watermark back minutes less.
        topics = topics.model_copy(update={"input_partitions": 1})
    settings = settings.model_copy(update={"worker": worker, "engine": engine, "topics": topics})

    def extra(running):  # type: ignore[no-untyped-def]
        add_simulator(
            running,
            config=sim,
            seed=args.seed,
            history_days=args.history_days,
            speed=args.speed,
        )
        add_console(running)

    return start_worker(
        settings,
        extra=extra,
        duration=args.duration,
        any_port=args.port is None,
        embedded_broker=start_for_worker,
    )
