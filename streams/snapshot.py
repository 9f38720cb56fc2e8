"""The engine's whole state as plain JSON-safe data, and back.

A worker stores the snapshot with the input offsets it covers; after a
crash or a rebalance it restores the snapshot and skips what it covers, so
no event counts twice and none is lost.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from streams.config import EngineConfig
from streams.engine import Engine
from streams.machine import MachineTimeline
from streams.oee import OeeState
from streams.open_order import OpenOrder
from streams.orders import settled_bucket, settled_row
from streams.pchart import PChart
from streams.perfect_order import PerfectOrderState
from streams.records import typed
from streams.revisions import ChartHistory, ClosedWindow, MachineHistory, window_to_list
from streams.safety_stock import Original, SafetyStock, original_row
from streams.seen import BUCKET_US, SeenIds
from streams.snapshot_sections import HistoryHours, Lazy, Runs, Sliced, bumped, json_key
from streams.windows import Window

VERSION = 2
"""The form `snapshot` writes. 2: no decision heap (rebuilt from the open orders)."""
READS = (1, 2)
"""The forms `restore` takes: a worker of the release before reads none of 2,
and says so instead of failing on a missing field."""


def _order_bucket(order: OpenOrder) -> int:
    return order.bucket


def _original_bucket(item: tuple[str, Original]) -> int:
    return SafetyStock.bucket(item[1])


def snapshot(engine: Engine, *, lazy: bool = False) -> dict[str, Any]:
    """Everything needed to continue exactly where the engine is.

    `lazy`: the large containers (open and settled orders, the safety
    stock's open originals) as `streams.snapshot_sections.Lazy`, in their
    owners' buckets, made a bucket at a time when `split` sections are
    written (the worker's snapshots), not every item's dict at once; the
    machine timelines as `Sliced`, their pending events cut by slice of
    event time; their histories as `HistoryHours`, kept events cut by hour;
    the seen ids as `Runs`.
    """
    book = engine.book.to_dict(lazy=lazy)
    stock = engine.stock.to_dict(with_originals=not lazy)
    machines: Any
    history: Any
    if lazy:
        opened = bumped(engine.book.touched, engine.book.versions)
        open_orders = list(engine.book.open.items())
        settled = bumped(engine.book.settled_touched, engine.book.settled_versions)
        book = {
            "open": Lazy(open_orders, OpenOrder.to_dict, opened, _order_bucket),
            **book,
            "settled": Lazy(
                list(engine.book.settled.items()), settled_row, settled, settled_bucket
            ),
        }
        originals = [(json_key(oid), (oid, o)) for oid, o in engine.stock.originals.items()]
        versions = bumped(engine.stock.touched, engine.stock.versions)
        stock = {
            "skus": stock.pop("skus"),
            "originals": Lazy(originals, original_row, versions, _original_bucket),
            **stock,
        }
        pairs = [(str(t.machine), t) for t in engine.machines.values()]
        machines = Sliced(pairs, engine.slice_versions)
        history = HistoryHours(list(engine.history.items()), engine.history_versions)
    else:
        machines = [t.to_dict() for t in engine.machines.values()]
        history = {m: h.to_dict() for m, h in engine.history.items()}
    return {
        "version": VERSION,
        "watermark_us": engine.watermark_us,
        "closed_until_us": engine.closed_until_us,
        "next_close_us": engine.next_close_us,
        "machines": machines,
        "oee": [
            [window_to_list(w), [[list(k), s.to_dict()] for k, s in states.items()]]
            for w, states in engine.oee.items()
        ],
        "orders": [
            [window_to_list(w), [[list(k), s.to_dict()] for k, s in states.items()]]
            for w, states in engine.orders.items()
        ],
        "book": book,
        "charts": {name: chart.to_dict() for name, chart in engine.charts.items()},
        "seen": {"bucket_us": BUCKET_US, "hours": Runs(engine.seen.runs())}
        if lazy
        else engine.seen.to_dict(),
        "stats": dict(engine.stats),
        "last_closed": engine.last_closed,
        "stock": stock,
        "history": history,
        "closed": [[window_to_list(w), c.to_dict()] for w, c in engine.closed.items()],
        "late": engine.machine_side.to_list(),
        "chart_history": {n: h.to_dict() for n, h in engine.chart_history.items()},
        "orders_revised": engine.order_side.to_list(),
    }


def restore(config: EngineConfig, data: dict[str, Any], *, auto_watermark: bool = True) -> Engine:
    """An engine in exactly the state `snapshot` saw."""
    if data.get("version") not in READS:
        raise ValueError(
            f"snapshot version {data.get('version')!r} is not one this worker reads "
            f"({', '.join(map(str, READS))})"
        )
    engine = Engine(config, auto_watermark=auto_watermark)
    engine.watermark_us = data["watermark_us"]
    engine.closed_until_us = data["closed_until_us"]
    engine.next_close_us = data["next_close_us"]
    for t in data["machines"]:
        timeline = MachineTimeline.from_dict(t)
        engine.machines[timeline.machine] = timeline
    engine.oee = defaultdict(dict)
    for w, states in data["oee"]:
        engine.oee[Window(*w)] = {tuple(k): OeeState.from_dict(s) for k, s in states}  # type: ignore[misc]
    engine.orders = defaultdict(dict)
    for w, states in data["orders"]:
        engine.orders[Window(*w)] = {tuple(k): PerfectOrderState.from_dict(s) for k, s in states}  # type: ignore[misc]
    engine.book.load(data["book"])
    pchart_config = config.pchart.build()
    engine.charts = {n: PChart.from_dict(pchart_config, c) for n, c in data["charts"].items()}
    engine.seen = SeenIds.from_dict(data["seen"])
    engine.stats = Counter(data["stats"])
    engine.last_closed = {series: typed(r) for series, r in data["last_closed"].items()}
    if "stock" in data:  # absent in a snapshot taken before safety stock existed
        engine.stock.load(data["stock"])
    # Absent in a snapshot taken before revisions: history starts afresh.
    engine.history = {m: MachineHistory.from_dict(h) for m, h in data.get("history", {}).items()}
    if engine.horizon_us:
        for machine, t in engine.machines.items():
            if machine not in engine.history:
                base = MachineTimeline.from_dict({**t.to_dict(), "pending": []})
                engine.history[machine] = MachineHistory(base)
    engine.closed = {Window(*w): ClosedWindow.from_dict(c) for w, c in data.get("closed", [])}
    engine.machine_side.load(data.get("late", []))
    engine.order_side.load(data.get("orders_revised", []))
    engine.chart_history = {
        n: ChartHistory.from_dict(h) for n, h in data.get("chart_history", {}).items()
    }
    return engine
