"""Reference test: the incremental engine against a batch computation in numpy.

A seeded, simulated plant (three lines, eleven machines, all five states,
counts, one machine that falls silent) and its order desk (amendments,
cancellations, split and short shipments, short closes, expiries) run through
`Engine.run` + `flush`. The same events are then computed here a second time,
in one pass over whole arrays, straight from the definitions (OEE on the
ISO 22400-2 time model, perfect order per SCOR RL.1.1), without calling any
engine code. Every record must agree field by field.

Batch model of one machine, from its events e0..en (any kind) and the flush
point F (the last timestamp of the whole stream):

    events      e0        e1          e2 ....................... F
    state       S0 ------>|S0 ------->|S1 ----------|no_data-----|
                                      |<-heartbeat->|

Between two consecutive events the current state (the last state event so
far) holds for at most the heartbeat timeout, the rest is no_data; before the
machine's first state event all its time is no_data. Window pieces are the
intervals clipped against the window edges.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from devtools.simulator import SilentMachine, SimConfig, simulate
from devtools.simulator_orders import FulfilmentProfile, OrderConfig
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from tests.streams.helpers import run_events

US = 1_000_000
HOUR_US = 3_600 * US
DAY_US = 24 * HOUR_US
WINDOWS = {"1h": HOUR_US, "1d": DAY_US}

SEED = 20261122
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
START_US = (datetime(2026, 11, 2, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
DURATION_S = 4 * 86_400.0
GRACE_US = DAY_US
TOLERANCE_US = 2 * HOUR_US

STATES = ("running", "idle", "down", "setup", "planned_stop")
NO_DATA = len(STATES)
BUCKETS = (*STATES, "no_data")
LOSS_STATES = {"down", "setup", "idle"}

_ROUGH = FulfilmentProfile(late=0.2, short=0.2, damaged=0.1, documents_bad=0.1)
SIM = SimConfig(
    silent_machine=SilentMachine("cnc-2-2", from_s=30 * 3_600.0),
    orders=OrderConfig(
        outbound_per_day=80.0,
        inbound_per_day=20.0,
        segments={"A": _ROUGH, "B": _ROUGH, "C": _ROUGH},
        suppliers={"SUP-1": ("A", _ROUGH), "SUP-2": ("B", _ROUGH)},
        amend_rate=0.2,
        cancel_rate=0.05,
    ),
    id_prefix="ref-",
)


def us(text: str) -> int:
    """RFC 3339 text -> integer microseconds since the epoch."""
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(microseconds=1)


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    evs = list(simulate(SIM, SEED, START_US, DURATION_S))
    ts = np.array([us(e["ts"]) for e in evs])
    # allowed_lateness 0 below: the stream must come in event-time order.
    assert np.all(np.diff(ts) >= 0)
    return evs


def engine_records(
    events: list[dict[str, Any]], heartbeat: str | None
) -> tuple[list[dict], Engine]:
    config = EngineConfig(
        windows=["1h", "1d"],
        allowed_lateness="0s",
        heartbeat_timeout=heartbeat,
        decision_grace="1d",
        on_time_tolerance="2h",
    )
    engine = Engine(config)
    out = run_events(engine, (parse_event(e) for e in events))
    out.extend(engine.flush())
    assert not any(k.startswith(("late.", "duplicates.")) for k in engine.stats)
    return out.records, engine


# --- batch OEE ------------------------------------------------------------------


def window_starts(first_us: int, last_us: int, size_us: int) -> np.ndarray:
    """Starts of the windows of one size that intersect [first, last]."""
    return np.arange(first_us // size_us, last_us // size_us + 1, dtype=np.int64) * size_us


def clipped(starts: np.ndarray, ends: np.ndarray, edges: np.ndarray, size_us: int) -> np.ndarray:
    """Length of each interval inside each window: shape (intervals, windows)."""
    lo, hi = edges[None, :], edges[None, :] + size_us
    return np.clip(ends[:, None], lo, hi) - np.clip(starts[:, None], lo, hi)


def machine_batch(
    evs: list[dict[str, Any]], flush_us: int, heartbeat_us: int | None
) -> dict[tuple[str, int], dict[str, Any]]:
    """One machine's summable OEE components per (window label, window start)."""
    ts = np.array([us(e["ts"]) for e in evs], dtype=np.int64)
    is_state = np.array([e["type"] == "state" for e in evs])
    code = np.array([STATES.index(e["state"]) if e["type"] == "state" else -1 for e in evs])
    reasons = [e.get("reason") if e["type"] == "state" else None for e in evs]

    # Current state after each event: forward-fill of the last state event.
    last_state = np.maximum.accumulate(np.where(is_state, np.arange(len(evs)), -1))
    current = np.where(last_state >= 0, code[np.maximum(last_state, 0)], NO_DATA)
    current_reason = [reasons[i] if i >= 0 else None for i in last_state]

    starts = ts
    ends = np.append(ts[1:], flush_us)
    alive = ends if heartbeat_us is None else np.minimum(ends, starts + heartbeat_us)
    # Live pieces carry the current state; the rest of each gap is no_data.
    piece_start = np.concatenate([starts, alive])
    piece_end = np.concatenate([alive, ends])
    piece_bucket = np.concatenate([current, np.full(len(ts), NO_DATA)])
    piece_reason = current_reason + [None] * len(ts)

    # A failure is a transition into down; at the end of input the events at
    # the flush point itself are applied too.
    state_idx = np.flatnonzero(is_state)
    state_codes = code[state_idx]
    previous = np.concatenate([[-1], state_codes[:-1]])
    down = STATES.index("down")
    failure_ts = ts[state_idx][(state_codes == down) & (previous != down)]
    failure_ts = failure_ts[failure_ts <= flush_us]

    is_count = np.array([e["type"] == "count" for e in evs])
    counts = [e for e in evs if e["type"] == "count"]
    # A count made while the held state is not running still counts, flagged.
    outside = current[is_count] != STATES.index("running")
    count_ts = np.array([us(e["ts"]) for e in counts], dtype=np.int64)
    total = np.array([e["total"] for e in counts], dtype=np.int64)
    good = np.array([e["good"] for e in counts], dtype=np.int64)
    ideal_us = np.round(np.array([e["ideal_cycle_s"] for e in counts]) * total * 1_000_000).astype(
        np.int64
    )

    out: dict[tuple[str, int], dict[str, Any]] = {}
    for label, size in WINDOWS.items():
        edges = window_starts(int(ts[0]), flush_us, size)
        inside = clipped(piece_start, piece_end, edges, size)
        count_win = np.searchsorted(edges, count_ts, side="right") - 1
        failure_win = np.searchsorted(edges, failure_ts, side="right") - 1
        for k, start in enumerate(edges):
            col = inside[:, k]
            in_window = count_win == k
            comp: dict[str, Any] = {
                f"{bucket}_us": int(col[piece_bucket == b].sum())
                for b, bucket in enumerate(BUCKETS)
            }
            comp["ideal_us"] = int(ideal_us[in_window].sum())
            comp["total"] = int(total[in_window].sum())
            comp["good"] = int(good[in_window].sum())
            comp["outside_running"] = int(total[in_window & outside].sum())
            comp["failures"] = int(np.count_nonzero(failure_win == k))
            by_reason: dict[str, int] = defaultdict(int)
            for i in np.flatnonzero(col > 0):
                bucket = BUCKETS[piece_bucket[i]]
                if bucket in LOSS_STATES:
                    by_reason[piece_reason[i] or bucket] += int(col[i])
            comp["downtime_by_reason_us"] = dict(by_reason)
            # A window has a record when anything of the machine landed in it.
            if col.any() or in_window.any() or comp["failures"]:
                out[label, int(start)] = comp
    return out


def summed(parts: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"downtime_by_reason_us": defaultdict(int)}
    for part in parts:
        for key, value in part.items():
            if key == "downtime_by_reason_us":
                for reason, v in value.items():
                    total[key][reason] += v
            else:
                total[key] = total.get(key, 0) + value
    return total


def share(num: float, den: float) -> float | None:
    return num / den if den else None


def oee_fields(c: dict[str, Any]) -> dict[str, Any]:
    """The record's fields, from summed components: ratios divide once."""
    planned = c["running_us"] + c["idle_us"] + c["down_us"] + c["setup_us"]
    availability = share(c["running_us"], planned)
    performance = share(c["ideal_us"], c["running_us"])
    quality = share(c["good"], c["total"])
    parts = (availability, performance, quality)
    return {
        "planned_s": planned / US,
        **{f"{b}_s": c[f"{b}_us"] / US for b in BUCKETS},
        "ideal_s": c["ideal_us"] / US,
        "total": c["total"],
        "good": c["good"],
        "failures": c["failures"],
        "units_outside_running": c["outside_running"],
        "availability": availability,
        "performance": performance,
        "quality": quality,
        "oee": None if None in parts else float(np.prod(parts)),
        "mtbf_s": share(c["running_us"] / US, c["failures"]),
        "mttr_s": share(c["down_us"] / US, c["failures"]),
        "downtime_by_reason_s": {k: v / US for k, v in c["downtime_by_reason_us"].items()},
        "performance_above_ideal": performance is not None and performance > 1.0,
    }


def iso(t_us: int) -> str:
    return (EPOCH + timedelta(microseconds=t_us)).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_keys(label: str, start: int) -> dict[str, Any]:
    """A record's window fields; every record here is the first (and only) revision."""
    return {
        "window": label,
        "start": iso(start),
        "end": iso(start + WINDOWS[label]),
        "revision": 0,
    }


# --- batch perfect order --------------------------------------------------------


def order_verdicts(events: list[dict[str, Any]], flush_us: int) -> list[dict[str, Any]]:
    """Each order's verdict per SCOR RL.1.1, decided strictly before the flush point."""
    by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if "order_id" in e:
            by_order[e["order_id"]].append(e)
    verdicts = []
    for oid, evs in by_order.items():
        versions = [e for e in evs if e["type"] == "order"]
        if any(e["type"] == "order_cancelled" for e in evs):
            continue  # cancelled orders are not counted
        order = versions[-1]  # amendments replace the order
        created = min(us(e["ts"]) for e in versions)
        promised = us(order["promised_at"])
        line_nos = [line["line_no"] for line in order["lines"]]
        ordered = np.array([line["qty"] for line in order["lines"]], dtype=float)

        ships = sorted((e for e in evs if e["type"] == "shipment"), key=lambda e: e["delivered_at"])
        delivered_at = np.array([us(s["delivered_at"]) for s in ships], dtype=np.int64)
        qty = np.zeros((len(ships), len(line_nos)))
        damaged = np.zeros(len(ships))
        for i, s in enumerate(ships):
            for line in s["lines"]:
                damaged[i] += line["damaged_qty"]
                if line["line_no"] in line_nos:
                    qty[i, line_nos.index(line["line_no"])] += line["qty"]
        docs_ok = np.array([s["documents_ok"] for s in ships], dtype=bool)

        candidates = [(promised + GRACE_US, "expired")]
        complete = np.flatnonzero(np.all(np.cumsum(qty, axis=0) >= ordered, axis=1))
        if complete.size:
            candidates.append((int(delivered_at[complete[0]]), "complete"))
        closes = [us(e["ts"]) for e in evs if e["type"] == "order_closed"]
        if closes:
            candidates.append((min(closes), "closed"))
        decided, how = min(candidates)
        if decided >= flush_us:
            continue  # not decided yet when the input ends
        assert all(us(e["ts"]) <= decided for e in versions), oid  # no amendment after it

        counted = delivered_at <= decided
        delivered = qty[counted].sum(axis=0)
        in_full_lines = delivered >= ordered
        verdicts.append(
            {
                "direction": order["direction"],
                "segment": order["segment"],
                "decided_us": decided,
                "how": how,
                "on_time": bool(counted.any())
                and bool(np.all(delivered_at[counted] <= promised + TOLERANCE_US)),
                "in_full": bool(in_full_lines.all()),
                "damage_free": float(damaged[counted].sum()) == 0.0,
                "documents_ok": bool(docs_ok[counted].all()),
                "lines_ordered": len(line_nos),
                "lines_in_full": int(in_full_lines.sum()),
                "units_ordered": float(ordered.sum()),
                "units_delivered": float(np.minimum(delivered, ordered).sum()),
                "cycle_us": decided - created if how == "complete" else None,
            }
        )
    return verdicts


def perfect_order_fields(vs: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(vs)
    flags = {
        k: sum(v[k] for v in vs) for k in ("on_time", "in_full", "damage_free", "documents_ok")
    }
    perfect = sum(
        v["on_time"] and v["in_full"] and v["damage_free"] and v["documents_ok"] for v in vs
    )
    otif = sum(v["on_time"] and v["in_full"] for v in vs)
    lines_ordered = sum(v["lines_ordered"] for v in vs)
    lines_in_full = sum(v["lines_in_full"] for v in vs)
    units_ordered = sum(v["units_ordered"] for v in vs)
    units_delivered = sum(v["units_delivered"] for v in vs)
    cycles = [v["cycle_us"] for v in vs if v["cycle_us"] is not None]
    return {
        "decided": n,
        "perfect": perfect,
        **flags,
        "otif": otif,
        "lines_ordered": lines_ordered,
        "lines_in_full": lines_in_full,
        "units_ordered": units_ordered,
        "units_delivered": units_delivered,
        "perfect_order_rate": share(perfect, n),
        "component_product": float(np.prod([flags[k] / n for k in flags])) if n else None,
        "otif_rate": share(otif, n),
        "line_fill_rate": share(lines_in_full, lines_ordered),
        "unit_fill_rate": share(units_delivered, units_ordered),
        "order_fill_rate": share(flags["in_full"], n),
        "mean_cycle_time_s": sum(cycles) / len(cycles) / US if cycles else None,
    }


def chain_fields(
    machines: list[dict[str, Any]], inbound: list[dict[str, Any]], outbound: list[dict[str, Any]]
) -> dict[str, Any]:
    def quality_delivery(vs: list[dict[str, Any]]) -> tuple[float | None, float | None]:
        n = len(vs)
        quality = sum(v["damage_free"] and v["documents_ok"] for v in vs)
        delivery = sum(v["on_time"] and v["in_full"] for v in vs)
        return share(quality, n), share(delivery, n)

    iq, idl = quality_delivery(inbound)
    oq, odl = quality_delivery(outbound)
    ope = None if iq is None or idl is None else iq * idl
    ole = None if oq is None or odl is None else oq * odl
    oee = oee_fields(summed(machines))["oee"]
    return {
        "ope": ope,
        "oee": oee,
        "ole": ole,
        "overall": None if None in (ope, oee, ole) else ope * oee * ole,
        "inbound_quality": iq,
        "inbound_delivery": idl,
        "outbound_quality": oq,
        "outbound_delivery": odl,
        "inbound_decided": len(inbound),
        "outbound_decided": len(outbound),
    }


# --- the batch side as records --------------------------------------------------


def batch_records(events: list[dict[str, Any]], heartbeat_us: int | None) -> list[dict[str, Any]]:
    flush_us = max(us(e["ts"]) for e in events)
    per_machine: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["type"] in ("state", "count"):
            per_machine[e["site"], e["line"], e["machine"]].append(e)

    records: list[dict[str, Any]] = []
    machine_parts: dict[tuple[str, int], dict[tuple[str, str, str], dict]] = defaultdict(dict)
    for mkey, evs in per_machine.items():
        for wkey, comp in machine_batch(evs, flush_us, heartbeat_us).items():
            machine_parts[wkey][mkey] = comp
    for (label, start), parts in machine_parts.items():
        where = window_keys(label, start)
        lines: dict[tuple[str, str], list[dict]] = defaultdict(list)
        sites: dict[str, list[dict]] = defaultdict(list)
        for (site, line, machine), comp in parts.items():
            keys = {"site": site, "line": line, "machine": machine}
            records.append({"kpi": "oee", "scope": "machine", **keys, **where, **oee_fields(comp)})
            lines[site, line].append(comp)
            sites[site].append(comp)
        for (site, line), comps in lines.items():
            keys = {"site": site, "line": line}
            records.append(
                {"kpi": "oee", "scope": "line", **keys, **where, **oee_fields(summed(comps))}
            )
        for site, comps in sites.items():
            records.append(
                {"kpi": "oee", "scope": "site", "site": site, **where, **oee_fields(summed(comps))}
            )

    verdicts = order_verdicts(events, flush_us)
    by_window: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for label, size in WINDOWS.items():
        decided = np.array([v["decided_us"] for v in verdicts], dtype=np.int64)
        for v, start in zip(verdicts, decided - decided % size, strict=True):
            by_window[label, int(start)].append(v)
    for (label, start), vs in by_window.items():
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for v in vs:
            groups[v["direction"], v["segment"]].append(v)
        for (direction, segment), group in groups.items():
            records.append(
                {
                    "kpi": "perfect_order",
                    "direction": direction,
                    "segment": segment,
                    **window_keys(label, start),
                    **perfect_order_fields(group),
                }
            )

    # The chain is computed per day, over every machine and order of that day.
    for start in {s for label, s in (*machine_parts, *by_window) if label == "1d"}:
        vs = by_window.get(("1d", start), [])
        fields = chain_fields(
            list(machine_parts.get(("1d", start), {}).values()),
            [v for v in vs if v["direction"] == "inbound"],
            [v for v in vs if v["direction"] == "outbound"],
        )
        records.append({"kpi": "chain", **window_keys("1d", start), **fields})
    return records


# --- comparison -----------------------------------------------------------------


def record_key(r: dict[str, Any]) -> tuple:
    if r["kpi"] == "oee":
        return (
            "oee",
            r["scope"],
            r["site"],
            r.get("line"),
            r.get("machine"),
            r["window"],
            r["start"],
        )
    if r["kpi"] == "perfect_order":
        return ("perfect_order", r["direction"], r["segment"], r["window"], r["start"])
    return (r["kpi"], r["window"], r["start"])


def assert_same(key: tuple, got: dict[str, Any], want: dict[str, Any]) -> None:
    assert set(got) == set(want), key
    for name, expected in want.items():
        value = got[name]
        where = f"{key} {name}: engine {value!r}, batch {expected!r}"
        if expected is None or isinstance(expected, (bool, str)):
            assert value == expected, where
        elif isinstance(expected, dict):
            assert value.keys() == expected.keys(), where
            for reason, secs in expected.items():
                assert value[reason] == pytest.approx(secs, abs=1e-6), where
        elif isinstance(expected, (int, np.integer)):
            assert value == expected, where
        elif name.endswith("_s") or name.startswith("units_"):
            assert value == pytest.approx(expected, abs=1e-6), where
        else:
            assert value == pytest.approx(expected, rel=1e-9, abs=1e-12), where


@pytest.mark.parametrize("heartbeat", [None, "10m", "4m"])
def test_engine_equals_numpy_batch(events: list[dict[str, Any]], heartbeat: str | None) -> None:
    got_records, engine = engine_records(events, heartbeat)
    heartbeat_us = {None: None, "10m": 600 * US, "4m": 240 * US}[heartbeat]
    want_records = batch_records(events, heartbeat_us)

    kinds = ("oee", "perfect_order", "chain")
    got = {record_key(r): r for r in got_records if r["kpi"] in kinds}
    want = {record_key(r): r for r in want_records}
    assert len(got) == len([r for r in got_records if r["kpi"] in kinds])  # no key twice
    assert sorted(got) == sorted(want)
    for key in sorted(want):
        assert_same(key, got[key], want[key])

    # The day must exercise what it claims to: every state, failures, no_data,
    # every way of deciding an order, both directions.
    machine_days = [r for k, r in want.items() if k[:2] == ("oee", "machine") and k[5] == "1d"]
    for bucket in (*BUCKETS, "failures", "total"):
        name = bucket if bucket in ("failures", "total") else f"{bucket}_s"
        if heartbeat is None and bucket == "no_data":
            # States hold through silence: only time before a first state is unknown.
            continue
        assert sum(r[name] for r in machine_days) > 0, bucket
    assert {"complete", "closed", "expired"} <= {
        k.split(".")[1] for k in engine.stats if k.startswith("orders_decided.")
    }
    orders = [r for k, r in want.items() if k[0] == "perfect_order" and k[3] == "1d"]
    assert {r["direction"] for r in orders} == {"inbound", "outbound"}
    assert 0 < sum(r["perfect"] for r in orders) < sum(r["decided"] for r in orders)
    assert len(machine_days) == 11 * 4
