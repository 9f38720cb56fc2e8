"""Window closing and output assembly: what the engine publishes.

A window closes once the frontier passes its end (`Engine.advance`): its
machine, line and site OEE, perfect-order and chain records come out with
`revision` 0, then the p-chart points, target alerts and safety stock of
its label. A revision (a late event changed a closed window, see
`streams.revisions`) republishes the changed records with the window's
revision one higher. Either way each series' newest record is kept in
`Engine.last_closed` for the metrics and the live view.

The records are built here, one place, so a window published late or
again looks exactly like one published on time.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streams.oee import OeeState
from streams.pchart import PChart
from streams.perfect_order import PerfectOrderState
from streams.records import (
    Record,
    chain_record,
    oee_rollup,
    pchart_alert,
    pchart_record,
    perfect_order_record,
    series_key,
    typed,
)
from streams.revisions import ChartHistory, ClosedWindow
from streams.windows import Window

if TYPE_CHECKING:
    from streams.engine import Engine


@dataclass
class Output:
    """What one step of the engine produced.

    `rejected`: refused events, each `{"reason", "error", "event"}` (the
    reason one of `REFUSALS`, the event its contract JSON). `dead_letters`:
    the worker's envelopes of them, `(input topic, reason, value)`.
    """

    records: list[Record] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[tuple[str, str, bytes]] = field(default_factory=list)

    def extend(self, other: Output) -> None:
        self.records += other.records
        self.alerts += other.alerts
        self.rejected += other.rejected
        self.dead_letters += other.dead_letters


class Publisher:
    """Turns an engine's closing and revised windows into records and alerts.

    It holds no state of its own: the window states, the kept closed windows
    and the p-charts are the engine's.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close_window(self, window: Window) -> Output:
        """The records of a window the frontier passed; its state leaves the engine."""
        engine, config = self.engine, self.engine.config
        out = Output()
        machines = engine.oee.pop(window, {})
        orders = engine.orders.pop(window, {})
        records, lines, sites = oee_rollup(window, machines)
        out.records += records
        if window.label == config.pchart_scrap_label():
            for (site, line), state in sorted(lines.items()):
                self.chart(
                    f"scrap/{site}/{line}", window, state.total - state.good, state.total, out
                )
        for (direction, segment), state in sorted(orders.items()):
            rule = engine.book.rules.get(segment) if direction == "outbound" else None
            out.records.append(perfect_order_record(direction, segment, window, state, rule))
        if window.label == config.pchart_orders_label():
            for (direction, segment), state in sorted(orders.items()):
                chart = f"orders/{direction}/{segment}"
                self.chart(chart, window, state.decided - state.perfect, state.decided, out)
        by_direction: dict[str, PerfectOrderState] | None = None
        if window.label in config.chain_labels():
            by_direction = defaultdict(PerfectOrderState)
            for (direction, _), state in orders.items():
                by_direction[direction].merge(state)
            if machines or orders:
                plant = OeeState.merged(machines.values()).result()["oee"]
                out.records.append(
                    chain_record(window, by_direction["inbound"], by_direction["outbound"], plant)
                )
        if engine.horizon_us and (machines or orders):
            engine.closed[window] = ClosedWindow.of(lines, sites, by_direction, orders)
        out.alerts += engine.targets.judge(window, out.records)
        if window.label == engine.stock.label:
            out.records += engine.stock.close(window)
        engine.stats["windows_closed"] += 1
        self.published(out.records, 0)
        return out

    def published(self, records: list[Record], revision: int) -> None:
        """Stamp records with their window's revision (in the list: a new record
        each); keep each series' newest window."""
        last_closed = self.engine.last_closed
        for i, old in enumerate(records):
            record = records[i] = typed(old).with_fields(revision=revision)
            series = series_key(record)
            latest = last_closed.get(series)
            if latest is None or latest["start"] <= record["start"]:
                last_closed[series] = record

    def republished(self, window: Window, kept: ClosedWindow, out: Output) -> None:
        """Finish a revision's records: the window's chain, targets, the revision."""
        if kept.orders is not None:
            plant = kept.plant().result()["oee"]
            inbound = kept.orders.get("inbound", PerfectOrderState())
            outbound = kept.orders.get("outbound", PerfectOrderState())
            out.records.append(chain_record(window, inbound, outbound, plant))
        out.alerts += self.engine.targets.judge(window, out.records)
        self.engine.stats["windows_revised"] += 1
        self.published(out.records, kept.revision)

    def revise_chart(self, name: str, window: Window, d: int, n: int, out: Output) -> None:
        """Give a closed subgroup new counts; publish every point that changes with it."""
        engine = self.engine
        config = engine.pchart_config
        history = engine.chart_history.get(name)
        if history is None:  # the line's first data came late
            history = engine.chart_history[name] = ChartHistory(PChart(config).to_dict())
        windows = [w for w, _, _ in history.points]
        before = dict(zip(windows, history.replay(config)[1], strict=True))
        history.put(window, d, n)
        chart, after = history.replay(config)
        engine.charts[name] = chart
        for (w, _, _), new in zip(history.points, after, strict=True):
            if new is None or new == before.get(w):
                continue
            kept = engine.closed.get(w)
            revision = 0
            if kept is not None:
                if w != window:
                    kept.revision += 1
                revision = kept.revision
            records = [pchart_record(name, w, new)]
            self.published(records, revision)
            out.records += records
            if new.violations:
                out.alerts.append(pchart_alert(name, w, new))

    def chart(self, name: str, window: Window, d: int, n: int, out: Output) -> None:
        """Add a closing window's subgroup (`d` of `n` nonconforming) to a p-chart."""
        engine = self.engine
        chart = engine.charts.get(name)
        if chart is None:
            chart = engine.charts[name] = PChart(engine.pchart_config)
        if engine.horizon_us:
            history = engine.chart_history.setdefault(name, ChartHistory(chart.to_dict()))
            history.points.append((window, d, n))
        point = chart.add(d, n)
        if point is None:
            return
        out.records.append(pchart_record(name, window, point))
        if point.violations:
            out.alerts.append(pchart_alert(name, window, point))
