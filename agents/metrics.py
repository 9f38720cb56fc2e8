"""Prometheus export: `/metrics` on the worker's web server (the port of `/kpi`).

One custom collector computes every metric family from the worker's state
at scrape time, so a partition moved to another worker takes its series
with it. Each app gets its own `CollectorRegistry` (never the global one).
The collector only reads: output records (`Engine.last_closed` and
`streams.live.iter_current_windows`), `streams.metrics_view` readings and the
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
- safety stock: `sku` (a SKU with demand or lead times in the horizon,
  bounded by the catalogue), `window`; `kind` names the samples
  (`demand_days`, `lead_times`). Only the latest closed window of a SKU.
- targets (from the configuration, exported whether or not there are
  data): `kpi` (`oee`, `availability`, `performance`, `quality`, `mttr`;
  `perfect_order`, `otif`, `order_fill_rate`) with `site`/`line`/`machine`
  or `direction`/`segment`, the others empty.

Layout: this module holds the collector and `/metrics`;
`agents.metrics_records` exports the KPI records (one table from record
kind to exporter), machine states and targets; `agents.metrics_pipeline`
the pipeline and health families and the consumer lag;
`agents.metrics_families` the record field -> metric tables and the
`Families` a scrape fills.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from agents.metrics_families import (
    CHAIN_VALUES,
    OEE_VALUES,
    ORDER_COUNTS,
    ORDER_VALUES,
    PCHART_VALUES,
    SAFETY_STOCK_DAYS,
    SAFETY_STOCK_VALUES,
    Families,
)
from agents.metrics_pipeline import (
    Highwater,
    export_engine_health,
    export_pipeline,
    input_highwater,
    input_lag,
)
from agents.metrics_records import (
    RECORD_FAMILIES,
    TARGET_LABELS,
    export_machines,
    export_record,
    export_targets,
)
from agents.private_api import stream_response
from agents.record_kinds import UnknownKinds
from agents.runtime import Runtime
from streams.live import iter_current_windows
from streams.policies import Targets

__all__ = [
    "CHAIN_VALUES",
    "CONTENT_TYPE",
    "OEE_VALUES",
    "ORDER_COUNTS",
    "ORDER_VALUES",
    "PCHART_VALUES",
    "RECORD_FAMILIES",
    "SAFETY_STOCK_DAYS",
    "SAFETY_STOCK_VALUES",
    "TARGET_LABELS",
    "Families",
    "Highwater",
    "KpimonCollector",
    "input_highwater",
    "input_lag",
    "install_metrics",
    "make_registry",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The text exposition format `generate_latest` writes, as every Prometheus 2.x parses it."""


class KpimonCollector:
    """Everything a worker knows, as Prometheus metric families."""

    def __init__(self, runtime: Runtime, highwater: Highwater) -> None:
        self.runtime = runtime
        self.highwater = highwater
        self.targets = Targets(runtime.settings.engine)
        self.unknown = UnknownKinds("metrics")

    def collect(self) -> Iterator[Metric]:
        yield from self.families()

    def exposition(self) -> Iterator[bytes]:
        """What `generate_latest` writes for this collector, in chunks (`Families.exposition`)."""
        return self.families().exposition()

    def families(self) -> Families:
        out = Families()
        for partition, shard in sorted(self.runtime.shards.items()):
            engine = shard.engine
            for record in iter_current_windows(engine):
                self._record(out, record, "current")
            for record in engine.last_closed.values():
                self._record(out, record, "closed")
            export_machines(out, engine)
            export_engine_health(out, str(partition), engine)
        export_targets(out, self.targets)
        export_pipeline(out, self.runtime, self.highwater)
        return out

    def _record(self, out: Families, record: dict[str, Any], state: str) -> None:
        if not export_record(out, record, state):
            self.unknown.note(record["kpi"])


def make_registry(runtime: Runtime, highwater: Highwater) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(KpimonCollector(runtime, highwater))
    return registry


def install_metrics(app: Any, runtime: Runtime) -> KpimonCollector:
    """Serve `/metrics` from a collector of this app's own, streamed in chunks
    (the text `generate_latest` would write for it, without building it whole)."""
    collector = KpimonCollector(runtime, input_highwater(app, runtime.settings.topics.sources()))

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return await stream_response(request, collector.exposition(), CONTENT_TYPE)

    return collector
