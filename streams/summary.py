"""A readable summary of a run's records, for people at a terminal.

Roll-ups here follow the engine's rule: sum the components of the closed
windows of one size, divide once.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from streams.oee import OeeState, ratio
from streams.perfect_order import PerfectOrderState
from streams.records import OeeRecord, PChartRecord, PerfectOrderRecord, record_key, typed
from streams.timeutil import US, to_us

_OEE_TIME = ("running", "idle", "down", "setup", "planned_stop", "no_data")
_PO_FIELDS = ("decided", "perfect", "on_time", "in_full", "damage_free", "documents_ok", "otif")


def _pct(x: float | None) -> str:
    return "   n/a" if x is None else f"{100 * x:5.1f}%"


class Summary:
    """Lines, segments and p-charts over all closed windows labelled `window`,
    built record by record (`kpimon replay` prints it at the end).

    A record published again by a revision replaces its earlier revision:
    each key's last contribution is remembered until its window is older than
    `forget_after_us` behind the newest record seen (no revision reaches it
    then), so memory stays bounded however long the input.
    """

    def __init__(self, window: str, forget_after_us: int = 3 * 86_400 * US) -> None:
        self.window = window
        self.forget_after_us = forget_after_us
        self.sums: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
        self._last: dict[str, tuple[int, tuple[str, ...], Counter[str]]] = {}
        self._newest_us = 0
        self._added = 0

    def add(self, r: Mapping[str, Any]) -> None:
        part = _part(r, self.window)
        if part is None:
            return
        where, values = part
        key = record_key(r)
        old = self._last.pop(key, None)
        if old is not None:
            self.sums[old[1]].subtract(old[2])
        self.sums[where].update(values)
        end_us = to_us(datetime.fromisoformat(r["end"].replace("Z", "+00:00")))
        self._last[key] = (end_us, where, values)
        self._newest_us = max(self._newest_us, end_us)
        self._added += 1
        if self._added % 4096 == 0:
            cutoff = self._newest_us - self.forget_after_us
            self._last = {k: v for k, v in self._last.items() if v[0] >= cutoff}

    def text(self) -> str:
        lines = {w[1:]: _oee_state(c) for w, c in self.sums.items() if w[0] == "line"}
        segments = {
            w[1:]: PerfectOrderState(**{k: c[k] for k in _PO_FIELDS})
            for w, c in self.sums.items()
            if w[0] == "orders"
        }
        charts = {w[1]: c for w, c in self.sums.items() if w[0] == "pchart"}
        return _text(self.window, lines, segments, charts)  # type: ignore[arg-type]


def _part(record: Mapping[str, Any], window: str) -> tuple[tuple[str, ...], Counter[str]] | None:
    """Where a record counts in the summary, and what it adds there."""
    r = typed(record)
    if isinstance(r, PChartRecord):
        return ("pchart", r["chart"]), Counter(points=1, violations=bool(r["violations"]))
    if r.get("window") != window:
        return None
    if isinstance(r, OeeRecord) and r["scope"] == "line":
        values = Counter({f"{name}_us": round(r[f"{name}_s"] * US) for name in _OEE_TIME})
        values.update(
            total=r["total"],
            good=r["good"],
            failures=r["failures"],
            ideal_us=round(r["ideal_s"] * US),
        )
        return ("line", r["site"], r["line"]), values
    if isinstance(r, PerfectOrderRecord):
        return ("orders", r["direction"], r["segment"]), Counter({k: r[k] for k in _PO_FIELDS})
    return None


def _oee_state(c: Counter[str]) -> OeeState:
    return OeeState(
        **{k: c[k] for k in ("total", "good", "failures", "ideal_us")},
        **{f"{n}_us": c[f"{n}_us"] for n in _OEE_TIME},
    )


def summarize(records: Iterable[Mapping[str, Any]], window: str) -> str:
    """`Summary` of a list of records."""
    summary = Summary(window)
    for r in records:
        summary.add(r)
    return summary.text()


def _text(
    window: str,
    lines: Mapping[tuple[str, str], OeeState],
    segments: Mapping[tuple[str, str], PerfectOrderState],
    charts: Mapping[str, Counter[str]],
) -> str:
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
