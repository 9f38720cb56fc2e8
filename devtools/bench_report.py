"""The table `kpimon bench` prints: each measure, its ratio and target, and whether it is met.

`table` turns the run's figures (`devtools.bench.measure_all`) into the text
report: a headline with the conditions of the run (events, broker, CPUs,
load average), one row per figure of the JSON with the targets of `TARGETS`
(a ratio within the run and a pass or MISS mark), then notes (ingest's
share of the kpimon time, the memory test before its views, the latency to
ingest, the horizon's summary) and why a figure is n/a. Kept apart from the measuring so the
wording and layout of the report can change without touching the phases.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

Row = tuple[str, str, str, str, str]  # (measure, value, ratio, target, met?)


@dataclass(frozen=True)
class Target:
    """`key` / `of` (or `key` itself when `of` is None) must be >= `low` or <= `high`."""

    key: str
    of: str | None
    low: float | None = None
    high: float | None = None
    what: str = ""
    label: str = ""  # the target as printed, when not `>= low what` / `<= high what`

    def ratio(self, result: dict[str, Any]) -> float | None:
        value = result.get(self.key)
        base = 1.0 if self.of is None else result.get(self.of)
        if value is None or not base:
            return None
        return value / base

    def met(self, ratio: float) -> bool:
        return (self.low is None or ratio >= self.low) and (self.high is None or ratio <= self.high)

    def text(self) -> str:
        if self.label:
            return self.label
        bound = f">= {self.low:g}" if self.low is not None else f"<= {self.high:g}"
        return f"{bound} {self.what}".rstrip()


TARGETS = {
    "engine_events_per_s": Target("engine_events_per_s", "raw_events_per_s", 0.40, what="x (a)"),
    "gateway_events_per_s": Target("gateway_events_per_s", "raw_events_per_s", 0.25, what="x (a)"),
    "batched_events_per_s": Target(
        "batched_events_per_s", "faust_bare_batched_per_s", 0.60, what="x (b) batched"
    ),
    "single_events_per_s": Target(
        "single_events_per_s", "faust_bare_single_per_s", 0.90, what="x (b) single"
    ),
    "single_split_events_per_s": Target(
        "single_split_events_per_s", "faust_bare_single_per_s", 0.90, what="x (b) single"
    ),
    "batched_split_events_per_s": Target(
        "batched_split_events_per_s", "faust_bare_batched_per_s", 0.60, what="x (b) batched"
    ),
    "gateway_split_events_per_s": Target(
        "gateway_split_events_per_s", "raw_events_per_s", 0.25, what="x (a)"
    ),
    "two_workers_gateway_events_per_s": Target(
        "two_workers_gateway_events_per_s", "gateway_events_per_s", 1.6, what="x one worker"
    ),
    "latency_p99_s": Target("latency_p99_s", None, high=0.5, what="s"),
    "peak_rss_bytes": Target("peak_rss_bytes", None, high=512 * 2**20, label="<= 512 MiB"),
    "replay_us_per_event_long": Target(
        "replay_us_per_event_long", "replay_us_per_event_short", high=1.2, what="x short"
    ),
}


def _met(ok: bool) -> str:
    return "pass" if ok else "MISS"


def _row(result: dict[str, Any], reasons: dict[str, str], key: str, name: str, text: str) -> Row:
    """A row for `key`; its ratio and mark when it has a target."""
    target = TARGETS.get(key)
    if result.get(key) is None:
        return (name, "n/a", "", target.text() if target else "", "n/a" if target else "")
    if target is None:
        return (name, text, "", "", "")
    ratio = target.ratio(result)
    if ratio is None:
        return (name, text, "", target.text(), "")
    if target.of is None:
        return (name, text, "", target.text(), _met(target.met(ratio)))
    return (name, text, f"{ratio:.2f}", target.text(), _met(target.met(ratio)))


def _rows(result: dict[str, Any], d: dict[str, Any], reasons: dict[str, str]) -> list[Row]:
    def rate(key: str) -> str:
        value = result.get(key)
        return "" if value is None else f"{value:,.0f} ev/s"

    lat = d["latency"]
    rss = result.get("peak_rss_bytes")
    short, long = d["replay"]["short"], d["replay"]["long"]
    rows = [
        ("(a) raw aiokafka+orjson, batched", "raw_events_per_s", rate("raw_events_per_s")),
        ("(b) bare Faust, single-event msgs", "faust_bare_single_per_s", rate("faust_bare_single_per_s")),
        ("(b) bare Faust, per-machine batches", "faust_bare_batched_per_s", rate("faust_bare_batched_per_s")),
        ("engine in-process, no Kafka", "engine_events_per_s", rate("engine_events_per_s")),
        ("kpimon, single-event messages", "single_events_per_s", rate("single_events_per_s")),
        ("kpimon, per-machine batches", "batched_events_per_s", rate("batched_events_per_s")),
        ("kpimon, gateway batches of 100", "gateway_events_per_s", rate("gateway_events_per_s")),
        ("kpimon, 2 workers, gateway", "two_workers_gateway_events_per_s", rate("two_workers_gateway_events_per_s")),
        ("roles split (2 processes), single", "single_split_events_per_s", rate("single_split_events_per_s")),
        ("roles split (2 processes), batches", "batched_split_events_per_s", rate("batched_split_events_per_s")),
        ("roles split (2 processes), gateway", "gateway_split_events_per_s", rate("gateway_split_events_per_s")),
        (f"latency p50 at {lat['rate']:,.0f} ev/s", "latency_p50_s", f"{lat['p50_s']:.3f} s"),
        (f"latency p99 at {lat['rate']:,.0f} ev/s", "latency_p99_s", f"{lat['p99_s']:.3f} s"),
        (
            f"peak RSS, {result.get('machines') or 0:,} machines, "
            f"{result.get('open_orders') or 0:,} orders",
            "peak_rss_bytes",
            "" if rss is None else f"{rss / 2**20:,.0f} MiB",
        ),
        (f"replay {short['days']:g} days, {short['events']:,} events", "replay_us_per_event_short", f"{short['us_per_event']:.0f} us/ev"),
        (f"replay {long['days']:g} days, {long['events']:,} events", "replay_us_per_event_long", f"{long['us_per_event']:.0f} us/ev"),
    ]  # fmt: skip
    return [_row(result, reasons, key, name, text) for name, key, text in rows]


def _notes(d: dict[str, Any]) -> list[str]:
    """The lines under the table."""
    kp, lat = d["kpimon"], d["latency"]
    lines = [
        f"kpimon ingest (validate and forward) finished after "
        f"{kp['batched']['ingest_done_s']:.1f} s of {kp['batched']['seconds']:.1f} s (batched), "
        f"{kp['single']['ingest_done_s']:.1f} s of {kp['single']['seconds']:.1f} s (single)"
    ]
    g1, g2 = d["gateway"], d["two_workers"]
    if g2["events_per_s"] is not None:
        lines.append(
            f"gateway phases: {g1['engine_partitions']} engine partitions, produced after the "
            f"group joined; applied by worker (2 workers): {g2['applied_by_worker']}"
        )
    lines.append(
        f"raw consumer on single-event messages: {d['raw']['single']['events_per_s']:,.0f} ev/s; "
        f"bare Faust on per-machine batches: "
        f"{d['faust_bare']['batched']['messages_per_s']:,.0f} msg/s"
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
    return lines


def table(
    result: dict[str, Any],
    details: dict[str, Any],
    args: argparse.Namespace,
    reasons: dict[str, str],
) -> str:
    d = details
    rows = _rows(result, d, reasons)
    loads = list(d["load_average_by_phase"].values()) or [d["load_average"][0]]
    head = ("measure", "value", "ratio", "target", "mark")
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
    unmeasured = [f"n/a {key}: {why}" for key, why in reasons.items()]
    return "\n".join(lines + _notes(d) + unmeasured)
