"""The table `kpimon bench` prints: each measure, its ratio and target, and whether it is met.

`table` turns the run's figures (`devtools.bench.measure_all`) into the text
report: a headline with the conditions of the run (events, broker, CPUs,
load average), one row per measure of (a)-(e) with the targets of `TARGETS`,
then notes (ingest's share of (c), the memory test before its views, the
latency to ingest, and (f)'s summary). Kept apart from the measuring so the
wording and layout of the report can change without touching the phases.
"""

from __future__ import annotations

import argparse
from typing import Any

TARGETS = {"batched": 0.60, "single": 0.90, "latency_p99_s": 1.0, "rss_bytes": 1 << 30}

Row = tuple[str, str, str, str, str]  # (measure, value, ratio, target, met?)


def _rate(value: float, unit: str = "ev/s") -> str:
    return f"{value:,.0f} {unit}"


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def _throughput_rows(result: dict[str, Any], d: dict[str, Any]) -> list[Row]:
    """(a) and (b), the ceilings, and (c), kpimon as a share of them."""
    raw, bare = d["raw"], d["faust_bare"]
    rows: list[Row] = []
    rows.append(
        ("(a) raw aiokafka+orjson, batched", _rate(raw["batched"]["events_per_s"]), "", "", "")
    )
    rows.append(
        ("    raw, single-event messages", _rate(raw["single"]["events_per_s"]), "", "", "")
    )
    rows.append(("(b) bare Faust agent, single", _rate(bare["single"]["events_per_s"]), "", "", ""))
    rows.append(
        ("    bare Faust agent, batched", _rate(bare["batched"]["messages_per_s"], "msg/s"), "", "", "")
    )  # fmt: skip
    ratio_b = result["batched_events_per_s"] / result["raw_events_per_s"]
    ratio_s = result["single_events_per_s"] / result["faust_bare_per_s"]
    rows.append(
        (
            "(c) kpimon, batched messages",
            _rate(result["batched_events_per_s"]),
            f"{ratio_b:.2f} of (a)",
            ">= 0.60 of (a)",
            _met(ratio_b >= TARGETS["batched"]),
        )
    )
    rows.append(
        (
            "(c) kpimon, single-event messages",
            _rate(result["single_events_per_s"]),
            f"{ratio_s:.2f} of (b)",
            ">= 0.90 of (b)",
            _met(ratio_s >= TARGETS["single"]),
        )
    )
    return rows


def _latency_memory_rows(d: dict[str, Any], args: argparse.Namespace) -> list[Row]:
    """(d), the latency, and (e), the peak RSS when the memory test ran."""
    lat = d["latency"]
    rows: list[Row] = []
    rows.append(
        (f"(d) latency p50 at {lat['rate']:,.0f} ev/s", f"{lat['p50_s']:.3f} s", "", "", "")
    )
    rows.append(
        (
            f"(d) latency p99 at {lat['rate']:,.0f} ev/s",
            f"{lat['p99_s']:.3f} s",
            "",
            "<= 1 s",
            _met(lat["p99_s"] <= TARGETS["latency_p99_s"]),
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
                _met(peak <= TARGETS["rss_bytes"]),
            )
        )
    return rows


def _notes(d: dict[str, Any]) -> list[str]:
    """The lines under the table."""
    kp, lat = d["kpimon"], d["latency"]
    lines = [
        f"kpimon ingest (validate and forward) finished after "
        f"{kp['batched']['ingest_done_s']:.1f} s of {kp['batched']['seconds']:.1f} s (batched), "
        f"{kp['single']['ingest_done_s']:.1f} s of {kp['single']['seconds']:.1f} s (single)"
    ]
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


def table(result: dict[str, Any], details: dict[str, Any], args: argparse.Namespace) -> str:
    d = details
    rows = _throughput_rows(result, d) + _latency_memory_rows(d, args)
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
    return "\n".join(lines + _notes(d))
