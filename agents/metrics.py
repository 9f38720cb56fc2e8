"""Prometheus export: `/metrics` on the worker's web server (the port of `/kpi`).

One custom collector computes every metric family from the worker's state
at scrape time, so a partition moved to another worker takes its series
with it. Each app gets its own `CollectorRegistry` (never the global one).
The collector only reads: output records (`Engine.last_closed` and
`streams.live.current_windows`), `streams.metrics_view` readings and the
`Runtime` counters. No KPI arithmetic happens here. Should two engine
partitions of one worker yield the same series (the chain records, which
each partition computes over its own data), the later partition's wins:
a scrape never carries a duplicate sample.

Naming: `kpimon_` prefix, base units (`_seconds`, timestamps in Unix
seconds), `_ratio` for 0-1 values, `_total` for counters. A ratio whose
denominator is zero has no sample (it is `null` in the records), and
components are exported beside every ratio so that roll-ups across workers
can `sum()` them and divide once (see deploy/prometheus/rules/recording.yml).

Labels (every value set is bounded by configuration or the plant):

- `state`: `current` (the open window holding the watermark, provisional)
  or `closed` (the latest closed window of that size, final). No history:
  Prometheus keeps that.
- `window`: a configured window label (`1h`, `1d`, a shift name).
- OEE families: `scope` (`machine`, `line`, `site`), `site`, `line`,
  `machine`; roll-ups carry an empty `machine` (line) or empty `line` and
  `machine` (site). Sum components with `scope="machine"` to roll up
  without double counting.
- `bucket`: a time bucket (`running`, `idle`, `down`, `setup`,
  `planned_stop`, `no_data`); `reason`: a loss reason code as sent by the
  producer (bounded by its vocabulary; the state's name when none was sent).
- orders: `direction` (`inbound`, `outbound`), `segment`; `kind` names the
  count (`decided`, `perfect`, ...). Never an order id.
- p-charts: `chart` (`scrap/<site>/<line>`, `orders/<direction>/<segment>`),
  `rule` (`WE1`..`WE4`). Only the latest closed point of a chart.
- pipeline: `topic` and `partition` (input partitions), `partition` (engine
  partitions), `source` (`machine-state`, `orders`, `shipments`), `reason`
  (a dead-letter reason), `output` (`records`, `alerts`), `stage`
  (`ingest`, `engine`).
- targets (from the configuration, exported whether or not there are
  data): `kpi` (`oee`, `availability`, `performance`, `quality`, `mttr`;
  `perfect_order`, `otif`, `order_fill_rate`) with `site`/`line`/`machine`
  or `direction`/`segment`, the others empty.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, get_args

from faust.exceptions import NotReady
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from agents.runtime import Runtime
from streams.decode import ErrorReason
from streams.engine import REFUSALS, Engine
from streams.live import current_windows
from streams.metrics_view import (
    WE_RULES,
    consumer_lag,
    engine_counters,
    machine_status,
    window_close_delay_us,
)
from streams.oee import STATE_BUCKETS
from streams.policies import OEE_FIELDS, POLICY_FIELDS, Targets
from streams.timeutil import US

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The text exposition format `generate_latest` writes, as every Prometheus 2.x parses it."""

Highwater = Callable[[], Mapping[tuple[str, int], int | None]]

TARGET_LABELS = ("kpi", "site", "line", "machine", "direction", "segment")

# record field -> (metric, help)
OEE_VALUES = {
    "oee": ("kpimon_oee_ratio", "OEE = availability x performance x quality."),
    "availability": ("kpimon_availability_ratio", "Availability = running / planned busy time."),
    "performance": ("kpimon_performance_ratio", "Performance = ideal time of the units / running."),
    "quality": ("kpimon_quality_ratio", "Quality = good units / total units."),
    "planned_s": ("kpimon_planned_seconds", "Planned busy time: running + setup + down + idle."),
    "running_s": ("kpimon_running_seconds", "Running time (actual production time)."),
    "ideal_s": ("kpimon_ideal_seconds", "Ideal cycle time x units produced."),
    "failures": ("kpimon_failures", "Failures (transitions into down) in the window."),
    "mtbf_s": ("kpimon_mtbf_seconds", "Mean time between failures: running / failures."),
    "mttr_s": ("kpimon_mttr_seconds", "Mean time to repair: down / failures."),
}
ORDER_VALUES = {
    "perfect_order_rate": ("kpimon_perfect_order_ratio", "Perfect orders / decided orders."),
    "component_product": (
        "kpimon_perfect_order_component_product_ratio",
        "On-time x in-full x damage-free x documents-OK shares (textbook approximation).",
    ),
    "otif_rate": ("kpimon_otif_ratio", "Orders on time and in full / decided orders."),
    "line_fill_rate": ("kpimon_line_fill_ratio", "Order lines delivered in full / lines ordered."),
    "unit_fill_rate": ("kpimon_unit_fill_ratio", "Units delivered (capped per line) / ordered."),
    "order_fill_rate": ("kpimon_order_fill_ratio", "Orders delivered in full / decided orders."),
    "mean_cycle_time_s": (
        "kpimon_order_cycle_time_seconds",
        "Mean order cycle time (creation to completing delivery) of complete orders.",
    ),
}
ORDER_COUNTS = ("decided", "perfect", "on_time", "in_full", "damage_free", "documents_ok", "otif")
PCHART_VALUES = {
    "p": ("kpimon_pchart_proportion", "Fraction nonconforming p = d / n of the latest point."),
    "center": ("kpimon_pchart_center", "Centre line p-bar."),
    "ucl": ("kpimon_pchart_ucl", "Upper control limit of the latest point."),
    "lcl": ("kpimon_pchart_lcl", "Lower control limit of the latest point."),
    "sigma": ("kpimon_pchart_sigma", "Sigma behind the limits (sigma_i x sigma_z in Laney mode)."),
    "z": ("kpimon_pchart_z", "z = (p - center) / sigma of the latest point."),
    "n": ("kpimon_pchart_subgroup_size", "Items inspected in the latest subgroup (n)."),
    "d": ("kpimon_pchart_nonconforming", "Nonconforming items in the latest subgroup (d)."),
    "sigma_z": ("kpimon_pchart_sigma_z", "Laney sigma_z of the chart (1 in standard mode)."),
}
CHAIN_VALUES = {
    "ope": ("kpimon_ope_ratio", "Overall procurement efficiency: inbound quality x delivery."),
    "ole": ("kpimon_ole_ratio", "Overall logistics efficiency: outbound quality x delivery."),
    "oee": ("kpimon_chain_oee_ratio", "OEE over all machines' summed components."),
    "overall": (
        "kpimon_supply_chain_efficiency_ratio",
        "Overall customer-service efficiency: OPE x OEE x OLE.",
    ),
}


class Families:
    """Metric families being filled for one scrape; a repeated label set keeps
    the last value (a scrape must never carry duplicate samples)."""

    def __init__(self) -> None:
        self._meta: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        self._samples: dict[str, dict[tuple[str, ...], float]] = {}

    def declare(self, kind: str, name: str, help_text: str, labels: tuple[str, ...]) -> None:
        if name not in self._meta:
            self._meta[name] = (kind, help_text, labels)
            self._samples[name] = {}

    def gauge(self, name: str, help_text: str, labels: dict[str, str], value: float | None) -> None:
        self._add("gauge", name, help_text, labels, value)

    def counter(self, name: str, help_text: str, labels: dict[str, str], value: float) -> None:
        self._add("counter", name, help_text, labels, value)

    def _add(
        self, kind: str, name: str, help_text: str, labels: dict[str, str], value: float | None
    ) -> None:
        self.declare(kind, name, help_text, tuple(labels))
        if value is None:
            return
        declared = self._meta[name][2]
        assert tuple(labels) == declared, f"{name}: labels {tuple(labels)} != {declared}"
        self._samples[name][tuple(labels.values())] = float(value)

    def __iter__(self) -> Iterator[Metric]:
        for name, (kind, help_text, labels) in self._meta.items():
            family: Metric
            if kind == "counter":
                family = CounterMetricFamily(name, help_text, labels=labels)
            else:
                family = GaugeMetricFamily(name, help_text, labels=labels)
            for values, value in self._samples[name].items():
                family.add_metric(list(values), value)
            yield family


class KpimonCollector:
    """Everything a worker knows, as Prometheus metric families."""

    def __init__(self, runtime: Runtime, highwater: Highwater) -> None:
        self.runtime = runtime
        self.highwater = highwater
        self.targets = Targets(runtime.settings.engine)

    def collect(self) -> Iterator[Metric]:
        out = Families()
        for partition, shard in sorted(self.runtime.shards.items()):
            engine = shard.engine
            for record in current_windows(engine):
                self._record(out, record, "current")
            for record in engine.last_closed.values():
                self._record(out, record, "closed")
            self._machines(out, engine)
            self._engine_health(out, str(partition), engine)
        self._targets(out)
        self._pipeline(out)
        yield from out

    # -- KPI records -----------------------------------------------------------
    def _record(self, out: Families, record: dict[str, Any], state: str) -> None:
        kind = record["kpi"]
        if kind == "oee":
            _oee(out, record, state)
        elif kind == "perfect_order":
            _orders(out, record, state)
        elif kind == "pchart":
            _pchart(out, record)
        elif kind == "chain":
            _chain(out, record)

    def _machines(self, out: Families, engine: Engine) -> None:
        for m in machine_status(engine):
            labels = {"site": m.site, "line": m.line, "machine": m.machine}
            for bucket in STATE_BUCKETS:
                out.gauge(
                    "kpimon_machine_state",
                    "1 for the bucket the machine is in now (as of the watermark), else 0.",
                    {**labels, "bucket": bucket},
                    1 if bucket == m.bucket else 0,
                )
            out.gauge(
                "kpimon_machine_silence_seconds",
                "Event time since the machine's newest event (watermark - newest event).",
                labels,
                _seconds(m.silence_us),
            )
            out.gauge(
                "kpimon_machine_silent",
                "1 when the machine is running (as last said), in a shift, and has sent nothing "
                "for longer than engine.silence_alert; else 0.",
                labels,
                1 if m.silent else 0,
            )
            for kind, value in (("reset", m.counter_resets), ("wrap", m.counter_wraps)):
                out.counter(
                    "kpimon_plc_resets",
                    "PLC counter readings below the previous one: kind=reset (counter "
                    "restarted) or wrap (passed engine.counter_modulus).",
                    {**labels, "kind": kind},
                    value,
                )
            out.gauge(
                "kpimon_machine_last_event_timestamp_seconds",
                "Event time (ts) of the machine's newest event, Unix seconds.",
                labels,
                _seconds(m.last_event_us),
            )

    def _targets(self, out: Families) -> None:
        """Configured targets (engine.targets, engine.policies), whatever data there is."""
        kpi_of = {field: kpi for kpi, field in (OEE_FIELDS | POLICY_FIELDS).items()}
        help_ratio = "Configured target: OEE parts per line or machine, rates per segment."
        help_seconds = "Configured MTTR target per line or machine (at or below is attained)."
        out.declare("gauge", "kpimon_target_ratio", help_ratio, TARGET_LABELS)
        entities = [((s, ln, ""), t) for (s, ln), t in self.targets.lines.items()]
        entities += list(self.targets.machines.items())
        for (site, line, machine), targets in sorted(entities):
            where = {"site": site, "line": line, "machine": machine}
            for field, value in targets.items():
                kpi = kpi_of[field]
                if field == "mttr_s":
                    out.gauge("kpimon_target_seconds", help_seconds, {"kpi": kpi, **where}, value)
                else:
                    labels = {"kpi": kpi, **where, "direction": "", "segment": ""}
                    out.gauge("kpimon_target_ratio", help_ratio, labels, value)
        for segment, targets in sorted(self.targets.segments.items()):
            for field, value in targets.items():
                labels = {"kpi": kpi_of[field], "site": "", "line": "", "machine": ""}
                labels |= {"direction": "outbound", "segment": segment}
                out.gauge("kpimon_target_ratio", help_ratio, labels, value)

    # -- pipeline health -------------------------------------------------------
    def _engine_health(self, out: Families, partition: str, engine: Engine) -> None:
        names = {
            "late": (
                "kpimon_late_events_total",
                "Events older than the frontier: machine events within engine.revision_horizon "
                "revise closed windows; the rest are dead-lettered (too_late).",
            ),
            "duplicates": ("kpimon_duplicate_events_total", "Events with an event_id seen before."),
        }
        for (kind, source), count in engine_counters(engine).items():
            name, help_text = names[kind]
            out.counter(name, help_text, {"partition": partition, "source": source}, count)
        labels = {"partition": partition}
        out.gauge(
            "kpimon_watermark_timestamp_seconds",
            "Event-time watermark of the engine partition, Unix seconds.",
            labels,
            _seconds(engine.watermark_us),
        )
        out.gauge(
            "kpimon_window_close_delay_seconds",
            "Watermark - the frontier up to which windows are closed (final).",
            labels,
            _seconds(window_close_delay_us(engine)),
        )
        out.gauge(
            "kpimon_open_orders",
            "Open orders the partition holds (not decided yet); at most kpimon_open_orders_limit.",
            labels,
            len(engine.book.open),
        )
        out.gauge(
            "kpimon_machines_tracked",
            "Machines the partition holds; at most kpimon_machines_limit.",
            labels,
            len(engine.machines),
        )

    def _pipeline(self, out: Families) -> None:
        rt = self.runtime
        topics = rt.settings.topics
        out.gauge("kpimon_worker_up", "1 while the worker serves metrics.", {}, 1)
        out.gauge(
            "kpimon_worker_uptime_seconds",
            "Seconds since the worker started.",
            {},
            time.monotonic() - rt.started,
        )
        out.gauge(
            "kpimon_engine_partitions_assigned",
            "Engine partitions this worker holds.",
            {},
            len(rt.shards),
        )
        engine = rt.settings.engine
        if engine.silence_alert is not None:
            out.gauge(
                "kpimon_silence_alert_seconds",
                "Configured silence of a running machine after which it counts as silent.",
                {},
                engine.us("silence_alert") / US,
            )
        if engine.heartbeat_timeout is not None:
            out.gauge(
                "kpimon_heartbeat_timeout_seconds",
                "Configured (opt-in) silence after which a machine's time is no data.",
                {},
                engine.us("heartbeat_timeout") / US,
            )
        out.gauge(
            "kpimon_allowed_lateness_seconds",
            "Configured allowed lateness (watermark - frontier).",
            {},
            engine.us("allowed_lateness") / US,
        )
        out.gauge(
            "kpimon_machines_limit",
            "Configured engine.max_machines: machines one engine partition holds, at most.",
            {},
            engine.max_machines,
        )
        out.gauge(
            "kpimon_open_orders_limit",
            "Configured engine.max_open_orders: open orders one engine partition holds, at most.",
            {},
            engine.max_open_orders,
        )
        for topic in topics.sources():
            labels = {"topic": topic}
            out.counter(
                "kpimon_messages_consumed_total",
                "Input messages read (an event or a batch each), each input offset once.",
                labels,
                rt.consumed.get(topic, 0),
            )
            out.counter(
                "kpimon_redelivered_messages_total",
                "Input messages read again after a restart or rebalance (their offsets were "
                "read, not yet committed): counted here, not as consumed, received or "
                "dead-lettered again, and what was sent for them is not sent again.",
                labels,
                rt.redelivered.get(topic, 0),
            )
            out.counter(
                "kpimon_events_received_total",
                "Valid events received.",
                labels,
                rt.events_in.get(topic, 0),
            )
        # Every (topic, reason) from the start, at 0: increase() sees the first one.
        known = {(t, r) for t in topics.sources() for r in get_args(ErrorReason)}
        known |= {
            (t, r)
            for t, kind in topics.sources().items()
            for r, kinds in REFUSALS.items()
            if kind in kinds
        }
        for topic, reason in sorted(known | set(rt.dead_letters)):
            out.counter(
                "kpimon_dead_letters_total",
                "Input messages (or events the engine refused) sent to the dead-letter topic, "
                "by first error reason.",
                {"topic": topic, "reason": reason},
                rt.dead_letters.get((topic, reason), 0),
            )
        for stage, held in rt.undelivered().items():
            out.gauge(
                "kpimon_outputs_undelivered",
                "Outputs (forwards and dead letters at ingest; records, alerts and dead letters "
                "at the engine) not delivered after 5 sends and being sent again: their input "
                "is not acknowledged meanwhile.",
                {"stage": stage},
                held,
            )
        for output in ("records", "alerts"):
            out.counter(
                "kpimon_published_messages_total",
                "Messages published to kpi-windows (records) and kpi-alerts (alerts).",
                {"output": output},
                rt.published.get(output, 0),
            )
        for stage in ("ingest", "engine"):
            for outcome in ("refilled", "lost"):
                out.counter(
                    "kpimon_skipped_messages_total",
                    "Messages the consumer did not hand over (a hole in a partition's offsets, "
                    "or a snapshot older than the committed offset): read back from the "
                    "topic (refilled), or no longer there (lost).",
                    {"stage": stage, "outcome": outcome},
                    rt.skipped.get((stage, outcome), 0),
                )
        for source in topics.sources().values():
            out.gauge(
                "kpimon_last_event_received_timestamp_seconds",
                "Wall-clock time the newest valid event of the source was received, Unix seconds.",
                {"source": source},
                rt.last_event_wall.get(source),
            )
        for (topic, partition), lag in input_lag(self.highwater(), rt).items():
            out.gauge(
                "kpimon_consumer_lag_messages",
                "Input messages not read yet, per assigned input partition: end offset - "
                "next offset to read (the larger of the committed offset and last read + 1).",
                {"topic": topic, "partition": str(partition)},
                lag,
            )


def _oee(out: Families, r: dict[str, Any], state: str) -> None:
    labels = {
        "scope": r["scope"],
        "site": r["site"],
        "line": r.get("line", ""),
        "machine": r.get("machine", ""),
        "window": r["window"],
        "state": state,
    }
    for field, (name, help_text) in OEE_VALUES.items():
        out.gauge(name, help_text, labels, r[field])
    for bucket in STATE_BUCKETS:
        out.gauge(
            "kpimon_time_seconds",
            "Time per bucket: running, idle, down, setup, planned_stop, no_data.",
            {**labels, "bucket": bucket},
            r[f"{bucket}_s"],
        )
    for kind in ("good", "total"):
        out.gauge("kpimon_units", "Units produced, by kind.", {**labels, "kind": kind}, r[kind])
    out.gauge(
        "kpimon_units_outside_running",
        "Units counted while the machine's held state was not running.",
        labels,
        r["units_outside_running"],
    )
    out.declare("gauge", "kpimon_downtime_seconds", "Loss time by reason.", (*labels, "reason"))
    for reason, seconds in r["downtime_by_reason_s"].items():
        out.gauge(
            "kpimon_downtime_seconds",
            "Loss time (down, setup, idle) by reason code.",
            {**labels, "reason": reason},
            seconds,
        )


def _orders(out: Families, r: dict[str, Any], state: str) -> None:
    labels = {k: r[k] for k in ("direction", "segment", "window")} | {"state": state}
    for field, (name, help_text) in ORDER_VALUES.items():
        out.gauge(name, help_text, labels, r[field])
    for kind in ORDER_COUNTS:
        out.gauge(
            "kpimon_orders",
            "Decided orders, and those perfect / on time / in full / ... among them.",
            {**labels, "kind": kind},
            r[kind],
        )
    for kind, field in (("ordered", "lines_ordered"), ("in_full", "lines_in_full")):
        out.gauge("kpimon_order_lines", "Order lines, by kind.", {**labels, "kind": kind}, r[field])
    for kind, field in (("ordered", "units_ordered"), ("delivered", "units_delivered")):
        out.gauge(
            "kpimon_order_units", "Units ordered and delivered.", {**labels, "kind": kind}, r[field]
        )


def _pchart(out: Families, r: dict[str, Any]) -> None:
    labels = {"chart": r["chart"], "window": r["window"]}
    for field, (name, help_text) in PCHART_VALUES.items():
        out.gauge(name, help_text, labels, r.get(field))
    for rule in WE_RULES:
        out.gauge(
            "kpimon_pchart_out_of_control",
            "1 when the latest point violates the Western Electric rule, else 0.",
            {**labels, "rule": rule},
            1 if rule in r["violations"] else 0,
        )
    out.gauge(
        "kpimon_pchart_low_np",
        "1 when n x p-bar is below min_np (normal approximation poor).",
        labels,
        1 if r.get("low_count") else 0,
    )
    out.gauge(
        "kpimon_pchart_info",
        "Phase (I, II) and method (standard, laney) of the chart; always 1.",
        {**labels, "phase": r["phase"], "method": r["method"]},
        1,
    )
    out.gauge(
        "kpimon_pchart_window_end_timestamp_seconds",
        "End of the latest point's window, Unix seconds.",
        labels,
        _iso_seconds(r["end"]),
    )


def _chain(out: Families, r: dict[str, Any]) -> None:
    labels = {"window": r["window"]}
    for field, (name, help_text) in CHAIN_VALUES.items():
        out.gauge(name, help_text, labels, r[field])
    for direction in ("inbound", "outbound"):
        d = {**labels, "direction": direction}
        out.gauge(
            "kpimon_chain_quality_ratio",
            "Share of decided orders undamaged with accurate documents.",
            d,
            r[f"{direction}_quality"],
        )
        out.gauge(
            "kpimon_chain_delivery_ratio",
            "Share of decided orders on time and in full.",
            d,
            r[f"{direction}_delivery"],
        )
        out.gauge(
            "kpimon_chain_decided_orders",
            "Decided orders behind the chain.",
            d,
            r[f"{direction}_decided"],
        )


def _seconds(us: int | None) -> float | None:
    return None if us is None else us / US


def _iso_seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def input_lag(
    highwater: Mapping[tuple[str, int], int | None], runtime: Runtime
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> input messages not read yet, for every assigned input partition.

    lag = end − next, in messages, where
    - end: the larger of the end offset the broker last told (`agents.progress`,
      asked every tick) and the consumer's cached high watermark, which is
      unknown after a restart until a fetch returns that partition;
    - next: the next offset to read: the larger of the group's committed
      offset (asked with the end offset) and the last offset read + 1; before
      either is known, where reading resumed (committed offset, else log start).

    So a quiet partition whose committed offset is its end shows 0 from the
    first tick after a restart. `highwater` holds the assigned partitions; one
    without an end offset or a next offset yet is left out.
    """
    ends, committed = runtime.input_ends.ends, runtime.input_ends.committed
    known_end: dict[tuple[str, int], int | None] = {}
    last_read: dict[tuple[str, int], int] = {}
    for tp, cached in highwater.items():
        told = ends.get(tp)
        candidates = [e for e in (cached, told[0] if told else None) if e is not None]
        known_end[tp] = max(candidates) if candidates else None
        nexts = [
            n
            for n in (
                committed.get(tp),
                runtime.ingested[tp] + 1 if tp in runtime.ingested else None,
            )
            if n is not None
        ]
        start = runtime.input_ends.starts.get(tp)
        if not nexts and start is not None:
            nexts = [start]
        if not nexts:  # unknown, not the whole partition: the next tick asks
            known_end[tp] = None
            continue
        last_read[tp] = max(nexts) - 1
    return consumer_lag(known_end, last_read)


def input_highwater(app: Any, sources: Mapping[str, str]) -> Highwater:
    """The Faust consumer's highwater per assigned input partition.

    Empty while the consumer is not running (start-up, shutdown); a
    partition revoked between reading the assignment and its highwater is
    left out. A scrape never fails for either.
    """

    def read() -> dict[tuple[str, int], int | None]:
        consumer = app.consumer
        found: dict[tuple[str, int], int | None] = {}
        try:
            assigned = [tp for tp in consumer.assignment() if tp.topic in sources]
        except NotReady:
            return found
        for tp in assigned:
            # aiokafka asserts the partition is still assigned.
            with contextlib.suppress(AssertionError, NotReady):
                found[tp.topic, tp.partition] = consumer.highwater(tp)
        return found

    return read


def make_registry(runtime: Runtime, highwater: Highwater) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KpimonCollector(runtime, highwater))
    return registry


def install_metrics(app: Any, runtime: Runtime) -> CollectorRegistry:
    """Serve `/metrics` from a registry of this app's own."""
    registry = make_registry(runtime, input_highwater(app, runtime.settings.topics.sources()))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    return registry
