"""The wall's alerts: what stands now, as short lines for the TV (`/wall.json` `alerts`).

Derived from the wall's own view and the latest closed records: p-charts
whose newest subgroup broke a Western Electric rule, newest closed windows
that missed a target (`attained` false in the record; critical from
`engine.target_critical_shortfall`, the relative shortfall as
`streams.policies.shortfall` computes it, as the engine's `target_miss`
alerts do), and machines silent while running.
"""

from __future__ import annotations

from typing import Any

from streams.policies import shortfall

KPI_NAMES = {"oee": "OEE", "otif_rate": "OTIF"}
"""Record field -> its name in an alert's text (else the field without `_rate`)."""


def standing_alerts(
    closed: list[dict[str, Any]],
    machines: list[dict[str, Any]],
    pcharts: list[dict[str, Any]],
    critical: float,
) -> list[dict[str, Any]]:
    """Alerts standing now: p-charts whose newest subgroup broke a rule, newest
    closed windows that missed a target, machines silent while running."""
    alerts = []
    for chart in pcharts:
        last = chart["points"][-1]
        if last["violations"]:
            rules = ",".join(last["violations"])
            alerts.append(
                {
                    "kind": "pchart_rule",
                    "severity": "critical" if "WE1" in last["violations"] else "warning",
                    "what": chart["chart"],
                    "text": f"{chart['chart']} out of control ({rules}), p {_pct(last['p'])}",
                    "start": last["start"],
                }
            )
    for r in closed:
        for field, ok in (r.get("attained") or {}).items():
            if ok is not False:
                continue
            target = r["targets"][field]
            what = r.get("machine") or r.get("line") or r.get("segment") or "?"
            value = r[field]
            if field == "mttr_s":
                shown = f"MTTR {value / 60:.0f} min > {target / 60:.0f} min"
            else:
                name = KPI_NAMES.get(field, field.removesuffix("_rate").replace("_", " "))
                shown = f"{name} {_pct(value)} < {_pct(target)}"
            short = shortfall(field, value, target)
            alerts.append(
                {
                    "kind": "target_miss",
                    "severity": "critical" if short >= critical else "warning",
                    "what": what,
                    "text": f"{what} {r['window']}: {shown}",
                    "start": r["start"],
                }
            )
    for m in machines:
        if m["silent"]:
            minutes = (m["silence_s"] or 0) / 60
            alerts.append(
                {
                    "kind": "silent",
                    "severity": "warning",
                    "what": m["machine"],
                    "text": f"{m['machine']} silent for {minutes:.0f} min while running",
                    "start": None,
                }
            )
    return alerts


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
