"""The built-in wall: one page for a TV across the shop floor, served at `/`.

`wall_view` builds a compact JSON view (`/wall.json`, `WALL_VERSION`) from
the same data `/kpi` serves (`streams.live.live_view` of each engine shard)
plus what the engine keeps beside it: the machines' current states, the
p-charts' recent subgroups and the configured targets. The page
(`agents/wall/`: index.html, wall.css, wall.js, plain files shipped in the
package, nothing fetched from the internet) renders it and polls
`/wall.json` every `POLL_S` seconds.

No Faust here: the view is a function of `streams.engine.Engine` objects,
testable without a worker.

The view, version 1 (ratios 0..1; times RFC 3339 UTC; `null` where undefined):

    {"version": 1, "watermark": "...", "day": {"start", "end"},
     "lines": [{"site", "line", "target": {"oee", "availability", ...},
                "current": {"start", "end", "oee", "availability", "performance",
                            "quality", "status"},
                "closed": {... the last closed hour ...}}],
     "machines": [{"site", "line", "machine", "state", "reason", "since",
                   "in_state_s", "silent"}],
     "downtime": [{"reason", "seconds"}],              today's top loss reasons
     "pcharts": [{"chart", "window", "points": [{"start", "end", "d", "n", "p",
                  "center", "ucl", "lcl", "violations"}]}],
     "orders": [{"direction", "segment", "target", "today": {"decided", "perfect",
                 "perfect_order_rate", "on_time", "in_full", "damage_free",
                 "documents_ok", "status"}, "yesterday": {...}}],
     "alerts": [{"kind", "severity", "what", "text", "start"}]}

`status` is `good` (at or above target), `warn` (short by less than
`engine.target_critical_shortfall`), `bad` (short by more), or `none` (no
target, or no value): `streams.policies.attained` and `shortfall`, as the
engine judges targets. Order component shares are `streams.oee.ratio` of
the record's counts (the record carries counts, not shares).

The alerts standing now are built in `agents.wall_alerts`. Which record
kind feeds which part of the view is one table, `WALL_KINDS`;
a kind not in it is logged once (`agents.record_kinds`), not dropped in
silence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agents.record_kinds import UnknownKinds
from agents.wall_alerts import standing_alerts
from streams.engine import Engine
from streams.live import live_view
from streams.machine import HEARTBEAT
from streams.metrics_view import machine_status
from streams.oee import ratio
from streams.policies import attained, shortfall
from streams.revisions import ChartHistory
from streams.timeutil import US, iso

WALL_VERSION = 1
POLL_S = 2.0
ASSETS = Path(__file__).with_name("wall")
POINTS = 24
"""Subgroups per p-chart on the wall."""
TOP_REASONS = 6
OEE_PARTS = ("oee", "availability", "performance", "quality")
COMPONENTS = ("on_time", "in_full", "damage_free", "documents_ok")
CONTENT_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
WALL_KINDS: dict[str, str | None] = {
    "oee": "lines (line 1h windows), day and downtime (site 1d window)",
    "perfect_order": "orders (outbound 1d windows)",
    "pchart": "pcharts",
    "chain": None,  # on /kpi and /metrics, not on the wall
    "safety_stock": None,
}
"""Record kind -> the part of the view it feeds (None: known, not shown)."""
UNKNOWN = UnknownKinds("wall")


def status(value: float | None, target: float | None, critical: float, field: str = "oee") -> str:
    """`good`, `warn`, `bad` or `none` for a record field against its target.

    Attained (`good`) and the relative shortfall as `streams.policies` judges
    them: higher is better, but for MTTR (`field="mttr_s"`).

    >>> status(0.70, 0.65, 0.1), status(0.60, 0.65, 0.1), status(0.50, 0.65, 0.1)
    ('good', 'warn', 'bad')
    >>> status(None, 0.65, 0.1), status(0.5, None, 0.1)
    ('none', 'none')
    >>> status(600.0, 600.0, 0.1, "mttr_s"), status(700.0, 600.0, 0.1, "mttr_s")
    ('good', 'bad')
    """
    if value is None or target is None:
        return "none"
    if attained(field, value, target):
        return "good"
    return "warn" if shortfall(field, value, target) < critical else "bad"


def _by_kind(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by kind (`WALL_KINDS`); an unknown kind is logged once."""
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        kind = record["kpi"]
        if kind not in WALL_KINDS:
            UNKNOWN.note(kind)
        found[kind].append(record)
    return found


def wall_view(engines: Iterable[Engine]) -> dict[str, Any]:
    """The wall's compact view of every engine shard of a worker."""
    engines = list(engines)
    views = [live_view(e) for e in engines]
    marks = [v["watermark"] for v in views if v["watermark"]]
    critical = engines[0].targets.critical_shortfall if engines else 0.1
    out: dict[str, Any] = {
        "version": WALL_VERSION,
        "watermark": max(marks) if marks else None,
        "day": None,
        "lines": [],
        "machines": [],
        "downtime": [],
        "pcharts": [],
        "orders": [],
        "alerts": [],
    }
    reasons: dict[str, float] = defaultdict(float)
    for engine, view in zip(engines, views, strict=True):
        current, closed = _by_kind(view["current"]), _by_kind(view["last_closed"])
        out["lines"] += _lines(engine, current["oee"], closed["oee"], critical)
        out["orders"] += _orders(
            engine, current["perfect_order"], closed["perfect_order"], critical
        )
        out["day"] = _today(current["oee"], reasons) or out["day"]
        machines, pcharts = _machines(engine), _pcharts(engine, closed["pchart"])
        out["machines"] += machines
        out["pcharts"] += pcharts
        out["alerts"] += standing_alerts(view["last_closed"], machines, pcharts, critical)
    top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
    out["downtime"] = [{"reason": k, "seconds": round(v, 1)} for k, v in top if v > 0]
    order = {"critical": 0, "warning": 1}
    out["alerts"].sort(key=lambda a: (order.get(a["severity"], 2), a["start"] or ""))
    return out


def _today(oee: list[dict[str, Any]], reasons: dict[str, float]) -> dict[str, str] | None:
    """The current day of the site 1d windows; their loss time added to `reasons`."""
    day = None
    for r in oee:
        if r["scope"] == "site" and r["window"] == "1d":
            day = {"start": r["start"], "end": r["end"]}
            for reason, seconds in (r.get("downtime_by_reason_s") or {}).items():
                reasons[reason] += seconds
    return day


def _part(record: dict[str, Any] | None, target: dict[str, float], critical: float) -> Any:
    if record is None:
        return None
    part = {"start": record["start"], "end": record["end"]}
    part |= {k: record.get(k) for k in OEE_PARTS}
    part["status"] = status(record.get("oee"), target.get("oee"), critical, "oee")
    return part


def _lines(
    engine: Engine, current: list[dict[str, Any]], closed: list[dict[str, Any]], critical: float
) -> list[dict[str, Any]]:
    """Each line's current and last closed hour from its `oee` records."""

    def hour_lines(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        return {
            (r["site"], r["line"]): r
            for r in records
            if r["scope"] == "line" and r["window"] == "1h"
        }

    now, last = hour_lines(current), hour_lines(closed)
    found = []
    for key in sorted({*now, *last}):
        target = {k: v for k, v in engine.targets.lines.get(key, {}).items() if k in OEE_PARTS}
        found.append(
            {
                "site": key[0],
                "line": key[1],
                "target": target,
                "current": _part(now.get(key), target, critical),
                "closed": _part(last.get(key), target, critical),
            }
        )
    return found


def _order_part(record: dict[str, Any] | None, target: float | None, critical: float) -> Any:
    if record is None:
        return None
    decided = record["decided"]
    part = {
        "start": record["start"],
        "end": record["end"],
        "decided": decided,
        "perfect": record["perfect"],
        "perfect_order_rate": record["perfect_order_rate"],
    }
    for c in COMPONENTS:
        part[c] = ratio(record[c], decided)
    part["status"] = status(record["perfect_order_rate"], target, critical, "perfect_order_rate")
    return part


def _orders(
    engine: Engine, current: list[dict[str, Any]], closed: list[dict[str, Any]], critical: float
) -> list[dict[str, Any]]:
    """Each outbound segment's today and yesterday from its `perfect_order` records."""

    def daily(records: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["direction"], r["segment"]): r for r in records if r["window"] == "1d"}

    today, yesterday = daily(current), daily(closed)
    found = []
    for direction, segment in sorted({*today, *yesterday}):
        if direction != "outbound":  # the customer's view; purchase orders stay on /kpi
            continue
        target = engine.targets.segments.get(segment, {}).get("perfect_order_rate")
        found.append(
            {
                "direction": direction,
                "segment": segment,
                "target": target,
                "today": _order_part(today.get((direction, segment)), target, critical),
                "yesterday": _order_part(yesterday.get((direction, segment)), target, critical),
            }
        )
    return found


def state_since(engine: Engine, machine: str) -> tuple[str | None, int | None]:
    """The reason of the machine's newest state event and when its current
    state began, as far as the engine still holds its events (the revision
    horizon); None when it does not know."""
    timeline = engine.machines[machine]
    points: list[tuple[Any, ...]] = list(timeline.pending)
    history = engine.history.get(machine)
    states = [p for p in points if p[2] != HEARTBEAT]
    current = timeline.held_state()
    reason = states[-1][3] if states else timeline.reason
    since = None
    for p in reversed(states):
        if p[2] != current:
            return reason, since
        since = p[0]
    if history is not None:
        older = [p for p in history.points.points() if p[2] != HEARTBEAT]
        if not states and older:
            reason = older[-1][3]
        for p in reversed(older):
            if p[2] != current:
                return reason, since
            since = p[0]
    return reason, since


def _machines(engine: Engine) -> list[dict[str, Any]]:
    # The plant's clock: machines' events run ahead of the watermark while a
    # sparse input (shipments) holds it back.
    newest = [t.newest_us for t in engine.machines.values() if t.newest_us is not None]
    now = max([*newest, engine.watermark_us or 0]) if newest else engine.watermark_us
    found = []
    for m in machine_status(engine):
        reason, since = state_since(engine, m.machine)
        found.append(
            {
                "site": m.site,
                "line": m.line,
                "machine": m.machine,
                "state": m.bucket,
                "reason": reason,
                "since": None if since is None else iso(since),
                "in_state_s": None if since is None or now is None else (now - since) / US,
                "silent": m.silent,
                "silence_s": None if m.silence_us is None else m.silence_us / US,
            }
        )
    return found


def _point(window: Any, p: Any) -> dict[str, Any]:
    return {
        "start": iso(window.start_us),
        "end": iso(window.end_us),
        "d": p.d,
        "n": p.n,
        "p": p.p,
        "center": p.center,
        "ucl": p.ucl,
        "lcl": p.lcl,
        "violations": list(p.violations),
    }


def _pcharts(engine: Engine, closed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each chart's last `POINTS` subgroups: the kept history (the revision
    horizon) where there is one, else the latest closed point alone.
    `closed`: the latest closed `pchart` records."""
    latest = {r["chart"]: r for r in closed}
    config = engine.config.pchart.build()
    charts = []
    for name in sorted(latest):
        record = latest[name]
        points: list[dict[str, Any]] = []
        history: ChartHistory | None = engine.chart_history.get(name)
        if history is not None and history.points:
            _, charted = history.replay(config)
            for (window, _, _), p in zip(history.points, charted, strict=True):
                if p is not None:
                    points.append(_point(window, p))
        if not points or points[-1]["start"] != record["start"]:
            keys = ("start", "end", "d", "n", "p", "center", "ucl", "lcl", "violations")
            points.append({k: record[k] for k in keys})
        charts.append({"chart": name, "window": record["window"], "points": points[-POINTS:]})
    return charts


def asset(name: str) -> tuple[bytes, str] | None:
    """A file of the page (`index.html`, `wall.css`, `wall.js`) and its content type."""
    path = ASSETS / name
    if name not in {p.name for p in ASSETS.iterdir()} or path.suffix not in CONTENT_TYPES:
        return None
    return path.read_bytes(), CONTENT_TYPES[path.suffix]  # UTF-8, as the page says


def page(view: dict[str, Any]) -> bytes:
    """index.html with the current view inlined: the first paint needs no request."""
    import json

    html = (ASSETS / "index.html").read_text(encoding="utf-8")
    data = json.dumps(view, separators=(",", ":")).replace("</", "<\\/")
    return html.replace("/*WALL_DATA*/null", data).encode()


def wall_of(runtime: Any) -> dict[str, Any]:
    """The view of a worker's `agents.runtime.Runtime`: every engine shard it holds."""
    return wall_view(shard.engine for _, shard in sorted(runtime.shards.items()))


def install_wall(app: Any, runtime: Any) -> None:
    """Serve the wall on a Faust app: `/` (the page), `/wall.json`, and the
    page's files. Only `app.page` and the web driver's responses are used."""
    no_store = {"Cache-Control": "no-store"}

    @app.page("/")
    async def wall_page(web: Any, request: Any) -> Any:
        html = page(wall_of(runtime))
        return web.bytes(html, content_type="text/html", headers=no_store)

    @app.page("/wall.json")
    async def wall_json(web: Any, request: Any) -> Any:
        return web.json(wall_of(runtime), headers=no_store)

    for name in ("wall.css", "wall.js"):
        body, content_type = asset(name) or (b"", "text/plain")

        async def serve(web: Any, request: Any, body: bytes = body, ct: str = content_type) -> Any:
            return web.bytes(body, content_type=ct)

        serve.__name__ = serve.__qualname__ = "wall_" + name.replace(".", "_")
        app.page(f"/{name}")(serve)
