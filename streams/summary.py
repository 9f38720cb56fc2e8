"""A readable summary of a run's records, for people at a terminal.

Roll-ups here follow the engine's rule: sum the components of the closed
windows of one size, divide once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from streams.oee import OeeState, ratio
from streams.perfect_order import PerfectOrderState
from streams.records import record_key
from streams.timeutil import US

_OEE_TIME = ("running", "idle", "down", "setup", "planned_stop", "no_data")
_PO_FIELDS = ("decided", "perfect", "on_time", "in_full", "damage_free", "documents_ok", "otif")


def _oee_from_record(r: Mapping[str, Any]) -> OeeState:
    state = OeeState(
        total=r["total"], good=r["good"], failures=r["failures"], ideal_us=round(r["ideal_s"] * US)
    )
    for name in _OEE_TIME:
        setattr(state, f"{name}_us", round(r[f"{name}_s"] * US))
    return state


def _pct(x: float | None) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


def summarize(records: Iterable[Mapping[str, Any]], window: str) -> str:
    """Lines and segments over all closed windows labelled `window`.

    A record published again by a revision replaces its earlier revision.
    """
    lines: dict[tuple[str, str], OeeState] = defaultdict(OeeState)
    segments: dict[tuple[str, str], PerfectOrderState] = defaultdict(PerfectOrderState)
    charts: dict[str, Counter[str]] = defaultdict(Counter)
    newest = {record_key(r): r for r in records}
    for r in newest.values():
        if r.get("window") != window and r["kpi"] != "pchart":
            continue
        if r["kpi"] == "oee" and r["scope"] == "line":
            lines[r["site"], r["line"]].merge(_oee_from_record(r))
        elif r["kpi"] == "perfect_order":
            segments[r["direction"], r["segment"]].merge(
                PerfectOrderState(**{k: r[k] for k in _PO_FIELDS})
            )
        elif r["kpi"] == "pchart":
            charts[r["chart"]]["points"] += 1
            charts[r["chart"]]["violations"] += bool(r["violations"])
    out = [f"Summary over all closed {window} windows"]
    if lines:
        out.append(f"  {'line':<24} {'OEE':>6} {'avail':>6} {'perf':>6} {'qual':>6} {'MTTR':>8}")
        for (site, line), s in sorted(lines.items()):
            r = s.result()
            mttr = "n/a" if r["mttr_s"] is None else f"{r['mttr_s'] / 60:.1f}m"
            out.append(
                f"  {site + '/' + line:<24} {_pct(r['oee'])} {_pct(r['availability'])}"
                f" {_pct(r['performance'])} {_pct(r['quality'])} {mttr:>8}"
            )
    if segments:
        out.append(f"  {'orders':<24} {'n':>6} {'perfect':>7} {'OTIF':>6}")
        for (direction, segment), s in sorted(segments.items()):
            out.append(
                f"  {direction + '/' + segment:<24} {s.decided:>6} {_pct(ratio(s.perfect, s.decided)):>7}"
                f" {_pct(ratio(s.otif, s.decided))}"
            )
    if charts:
        out.append(f"  {'p-chart':<24} {'points':>6} {'out of control':>15}")
        for name, c in sorted(charts.items()):
            out.append(f"  {name:<24} {c['points']:>6} {c['violations']:>15}")
    return "\n".join(out)
