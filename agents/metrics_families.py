"""The metric families of one scrape, and which record field becomes which metric.

`Families` collects samples while the collector walks the worker's state and
yields `prometheus_client` metric families at the end; a label set given
twice keeps the last value, so a scrape never carries a duplicate sample.
A `None` value (a ratio whose denominator is zero: `null` in the records)
declares the family but adds no sample.

The `*_VALUES` tables map a record field to its metric name and help, one
table per record kind (`agents.metrics_records` exports them); naming
follows `agents.metrics`: `kpimon_` prefix, base units, `_ratio` for 0-1.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from streams.timeutil import US

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
SAFETY_STOCK_VALUES = {
    "safety_stock": (
        "kpimon_safety_stock_units",
        "Safety stock SS = z x sqrt(mean lead time x demand variance + mean demand^2 x lead "
        "time variance), units; no sample while the data are insufficient.",
    ),
    "reorder_point": (
        "kpimon_reorder_point_units",
        "Reorder point = mean daily demand x mean lead time + safety stock, units.",
    ),
    "service_level": (
        "kpimon_safety_stock_service_level_ratio",
        "Cycle service level the stock is for: the highest of the SKU's segments.",
    ),
    "z": ("kpimon_safety_stock_z", "z = inverse standard normal CDF of the service level."),
    "mean_daily_demand": (
        "kpimon_safety_stock_daily_demand_mean_units",
        "Mean daily demand over the horizon (from the SKU's first demand day), units per day.",
    ),
    "sd_daily_demand": (
        "kpimon_safety_stock_daily_demand_sd_units",
        "Sample standard deviation of daily demand over the horizon, units per day.",
    ),
}
SAFETY_STOCK_DAYS = {
    "mean_lead_time_days": (
        "kpimon_safety_stock_lead_time_mean_seconds",
        "Mean supplier lead time (purchase order creation to completing delivery).",
    ),
    "sd_lead_time_days": (
        "kpimon_safety_stock_lead_time_sd_seconds",
        "Sample standard deviation of the supplier lead time.",
    ),
}
"""Record fields in days, exported in seconds."""
SAFETY_STOCK_SAMPLES = {"demand_days": "demand_days", "lead_times": "lead_time_samples"}
"""`kind` label -> the record field counting the samples behind the statistics."""


class Families:
    """Metric families being filled for one scrape; a repeated label set keeps
    the last value (a scrape must never carry duplicate samples)."""

    def __init__(self) -> None:
        self._meta: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        self._samples: dict[str, dict[tuple[str, ...], float]] = {}
        # A record's values go in under one labels dict, which is never changed
        # after it is passed: its values' tuple is made once (a scrape of
        # 10,000 machines holds 650,000 samples; one tuple each was 34 MB).
        self._labels: dict[str, str] | None = None
        self._values: tuple[str, ...] = ()

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
        if labels is not self._labels:
            self._labels, self._values = labels, tuple(labels.values())
        self._samples[name][self._values] = float(value)

    def exposition(self, chunk_lines: int = 20_000) -> Iterator[bytes]:
        """The families in Prometheus's text format, in chunks of at most
        `chunk_lines` samples: the bytes `generate_latest` writes for them,
        without one `Sample` (and its label dict) an exported value.

        At 10,000 machines a scrape has about 650,000 samples: built through
        `prometheus_client`'s objects it took 9.5 s and 290 MiB at its peak,
        as one 78 MB string; here it is written a chunk at a time.
        """
        escaped: dict[str, str] = {}

        def escape(value: str) -> str:
            done = escaped.get(value)
            if done is None:
                done = value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
                escaped[value] = done
            return done

        for name, (kind, help_text, labels) in self._meta.items():
            shown = name
            if kind == "counter":  # as `CounterMetricFamily` names it
                shown = f"{name.removesuffix('_total')}_total"
            help_line = help_text.replace("\\", "\\\\").replace("\n", "\\n")
            lines = [f"# HELP {shown} {help_line}\n# TYPE {shown} {kind}\n"]
            order = sorted(range(len(labels)), key=labels.__getitem__)
            head = shown + "{" if labels else shown
            names = [f'{labels[i]}="' for i in order]
            for values, value in self._samples[name].items():
                if labels:
                    pairs = '",'.join(
                        n + escape(values[i]) for n, i in zip(names, order, strict=True)
                    )
                    lines.append(f'{head}{pairs}"}} {floatToGoString(value)}\n')
                else:
                    lines.append(f"{head} {floatToGoString(value)}\n")
                if len(lines) >= chunk_lines:
                    yield "".join(lines).encode()
                    lines = []
            if lines:
                yield "".join(lines).encode()

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


def seconds(us: int | None) -> float | None:
    """Microseconds (the engine's unit) to seconds (Prometheus's base unit)."""
    return None if us is None else us / US


def iso_seconds(text: str) -> float:
    """An RFC 3339 time of a record as Unix seconds."""
    return datetime.fromisoformat(text).timestamp()
