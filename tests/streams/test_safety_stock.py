"""Safety stock and reorder point per SKU; snapshot round trip with policies and targets."""

from __future__ import annotations

import doctest
import itertools
import math
import random
from statistics import NormalDist
from typing import Any

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

import streams.safety_stock
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.safety_stock import DAY_US, reorder_point, safety_stock
from streams.snapshot import restore, snapshot
from tests.eventfactory import at, cancelled, closed, count, state
from tests.streams.helpers import run_events

_ids = itertools.count(1)


def po(
    order_id: str,
    ts: str,
    lines: dict[str, float],
    direction: str = "outbound",
    segment: str = "A",
    promised_at: str | None = None,
) -> dict[str, Any]:
    """An order with one line per SKU (line numbers in the order given)."""
    return {
        "type": "order",
        "event_id": f"o-{next(_ids)}",
        "ts": ts,
        "order_id": order_id,
        "direction": direction,
        "partner": "P-1",
        "segment": segment,
        "promised_at": promised_at or at(0, day=30),
        "lines": [
            {"line_no": n, "sku": sku, "qty": qty} for n, (sku, qty) in enumerate(lines.items(), 1)
        ],
    }


def delivery(order_id: str, ts: str, qtys: list[float], direction: str = "inbound") -> dict:
    return {
        "type": "shipment",
        "event_id": f"s-{next(_ids)}",
        "ts": ts,
        "shipment_id": f"SH-{next(_ids)}",
        "order_id": order_id,
        "direction": direction,
        "delivered_at": ts,
        "documents_ok": True,
        "lines": [{"line_no": n, "qty": q, "damaged_qty": 0} for n, q in enumerate(qtys, 1)],
    }


def tick(day: int) -> dict[str, Any]:
    """Moves the watermark to the start of `day`, so the day before closes."""
    return state(at(0, day=day), "idle", machine="clock")


def run(events: list[dict[str, Any]], **config: Any) -> tuple[Engine, list[dict[str, Any]]]:
    base = {"windows": ["1h", "1d"], "allowed_lateness": "0s"}
    engine = Engine(EngineConfig(**{**base, **config}))
    out = run_events(engine, (parse_event(e) for e in sorted(events, key=lambda e: e["ts"])))
    out.extend(engine.flush())
    return engine, out.records


def stock(records: list[dict[str, Any]], sku: str = "SKU-X") -> dict[str, dict[str, Any]]:
    """Safety-stock records of one SKU by window start."""
    return {r["start"]: r for r in records if r["kpi"] == "safety_stock" and r["sku"] == sku}


# --- the formula on a small series ------------------------------------------------

DEMAND = {0: [10], 1: [5, 7], 2: [8], 4: [10]}  # day -> order quantities of SKU-X (none on day 3)
LEAD_TIMES = [(0, 6, 2), (0, 12, 3), (0, 0, 4)]  # (created day, hour, days to the delivery)
SETTINGS = {
    "policies": {"A": {"service_level": 0.9}},
    "safety_stock": {"horizon": "7d", "min_demand_days": 5, "min_lead_time_samples": 3},
}


def small_series() -> list[dict[str, Any]]:
    """Five days of SKU-X: customer demand of segment A and three purchase orders.

    day        0    1      2    3    4
    demand    10   5+7=12  8    0   10        (day 3: no order, counts as 0)
    PO-1       |--2 d-->|                      created d0 06:00, complete d2 06:00
    PO-2       |----3 d--->|                   created d0 12:00, complete d3 12:00
    PO-3       |------4 d----->|               created d0 00:00, complete d4 00:00
    """
    events = [tick(5)]
    for day, qtys in DEMAND.items():
        for i, qty in enumerate(qtys):
            events.append(po(f"SO-{day}-{i}", at(9 + i, day=day), {"SKU-X": qty}))
    for i, (day, hour, lead) in enumerate(LEAD_TIMES):
        oid = f"PO-{i}"
        events.append(po(oid, at(hour, day=day), {"SKU-X": 50}, direction="inbound"))
        events.append(delivery(oid, at(hour, day=day + lead), [50]))
    return events


def test_hand_computed_safety_stock_and_reorder_point() -> None:
    _, records = run(small_series(), **SETTINGS)
    r = stock(records)[at(0, day=4)]
    # Daily demand, days 0..4:  10, 12, 8, 0, 10
    #   d̄ = 40 / 5 = 8
    #   deviations 2, 4, 0, -8, 2; squares 4 + 16 + 0 + 64 + 4 = 88
    #   σ_d² = 88 / (5 - 1) = 22 (sample variance), σ_d = √22 ≈ 4.690
    # Lead times: 2, 3, 4 days
    #   L̄ = 3; σ_L² = (1 + 0 + 1) / (3 - 1) = 1, σ_L = 1
    # Service level 0.9 (segment A's policy): z = Φ⁻¹(0.9) ≈ 1.281552
    #   SS  = z · √(L̄·σ_d² + d̄²·σ_L²) = 1.281552 · √(3·22 + 64·1) = 1.281552 · √130
    #       = 1.281552 · 11.401754 ≈ 14.6119 units
    #   ROP = d̄·L̄ + SS = 8·3 + 14.6119 ≈ 38.6119 units
    assert r["demand_days"] == 5 and r["lead_time_samples"] == 3
    assert r["mean_daily_demand"] == 8.0
    assert r["sd_daily_demand"] == pytest.approx(math.sqrt(22))
    assert (r["mean_lead_time_days"], r["sd_lead_time_days"]) == (3.0, 1.0)
    assert (r["service_level"], r["segments"]) == (0.9, ["A"])
    assert r["z"] == pytest.approx(1.281552, abs=1e-6)
    assert r["safety_stock"] == pytest.approx(14.6119, abs=1e-4)
    assert r["reorder_point"] == pytest.approx(38.6119, abs=1e-4)
    assert (r["status"], r["reason"]) == ("ok", None)

    # The same from numpy's batch statistics.
    demand = np.array([10, 12, 8, 0, 10], dtype=float)
    lead = np.array([2, 3, 4], dtype=float)
    z = NormalDist().inv_cdf(0.9)
    ss = z * np.sqrt(lead.mean() * demand.var(ddof=1) + demand.mean() ** 2 * lead.var(ddof=1))
    assert r["sd_daily_demand"] == pytest.approx(demand.std(ddof=1), rel=1e-12)
    assert r["sd_lead_time_days"] == pytest.approx(lead.std(ddof=1), rel=1e-12)
    assert r["safety_stock"] == pytest.approx(ss, rel=1e-12)
    assert r["reorder_point"] == pytest.approx(demand.mean() * lead.mean() + ss, rel=1e-12)


def test_formula_functions() -> None:
    z = NormalDist().inv_cdf(0.95)
    # No lead-time variability: SS = z·σ_d·√L̄ = 1.645 · 3 · 2 = 9.87
    assert safety_stock(z, 10.0, 3.0, 4.0, 0.0) == pytest.approx(z * 6)
    # No demand variability: SS = z·d̄·σ_L = 1.645 · 10 · 1 = 16.45
    assert safety_stock(z, 10.0, 0.0, 4.0, 1.0) == pytest.approx(z * 10)
    assert reorder_point(10.0, 4.0, 5.0) == 45.0


def test_insufficient_data_gives_nulls_and_a_reason() -> None:
    _, records = run(small_series(), **SETTINGS)
    r = stock(records)[at(0, day=3)]  # days 0..3: four demand days; two lead times (d2, d3)
    assert (r["demand_days"], r["lead_time_samples"]) == (4, 2)
    assert r["status"] == "insufficient_data"
    assert r["safety_stock"] is None and r["reorder_point"] is None
    assert r["reason"] == (
        "4 demand days, at least 5 needed; 2 lead-time samples, at least 3 needed"
    )
    assert r["mean_daily_demand"] == 7.5  # the statistics there are, still shown
    first = stock(records)[at(0, day=0)]
    assert first["sd_daily_demand"] is None and first["lead_time_samples"] == 0
    assert first["mean_lead_time_days"] is None and first["sd_lead_time_days"] is None


def test_service_level_is_the_highest_of_the_segments_that_made_demand() -> None:
    events = [
        tick(2),
        po("SO-1", at(9), {"SKU-X": 5, "SKU-Y": 5}, segment="A"),
        po("SO-2", at(10), {"SKU-X": 5}, segment="B"),
        po("SO-3", at(11), {"SKU-Z": 5}, segment="C"),
    ]
    policies = {"A": {"service_level": 0.9}, "B": {"otif": 0.9}, "D": {"service_level": 0.999}}
    _, records = run(events, policies=policies, safety_stock={"service_level": 0.97})
    day = at(0, day=0)
    # X: A (0.9) and B (no level: the default 0.97) -> 0.97; Y: A only -> 0.9;
    # Z: C has no policy -> 0.97. D's 0.999 made no demand here and does not count.
    assert stock(records, "SKU-X")[day]["service_level"] == 0.97
    assert stock(records, "SKU-X")[day]["segments"] == ["A", "B"]
    assert stock(records, "SKU-Y")[day]["service_level"] == 0.9
    assert stock(records, "SKU-Z")[day]["service_level"] == 0.97
    assert stock(records, "SKU-Z")[day]["z"] == pytest.approx(NormalDist().inv_cdf(0.97))


# --- what counts as demand and as a lead time -------------------------------------


def test_demand_is_the_original_version_on_its_creation_day() -> None:
    """Amendments never rewrite demand; a same-day cancellation removes it, a later one not.

    SO-1  d0 09:00 10 units, amended d0 10:00 to 50 and d1 08:00 to 100    -> 10 on d0
    SO-2  d0 09:00 7 units of SKU-C, cancelled d0 18:00                  -> nothing
    SO-3  d0 09:00 4 units of SKU-L, cancelled d1 08:00                  -> 4 on d0
    """
    events = [
        tick(2),
        po("SO-1", at(9), {"SKU-X": 10}),
        po("SO-1", at(10), {"SKU-X": 50}),
        po("SO-1", at(8, day=1), {"SKU-X": 100}),
        po("SO-2", at(9), {"SKU-C": 7}),
        cancelled("SO-2", at(18)),
        po("SO-3", at(9), {"SKU-L": 4}),
        cancelled("SO-3", at(8, day=1)),
    ]
    engine, records = run(events)
    assert [r["mean_daily_demand"] for r in stock(records).values()] == [10.0, 5.0]  # d0, d1
    assert stock(records, "SKU-C") == {}
    assert [r["mean_daily_demand"] for r in stock(records, "SKU-L").values()] == [4.0, 2.0]
    assert set(engine.stock.originals) == {"SO-1"}  # cancelled orders are not kept


def test_original_arriving_after_its_amendment_is_the_demand() -> None:
    """Within a 1 h lateness the amendment (08:30, 50 units) overtakes the original (08:00, 10)."""
    amendment, original = po("SO-1", at(8.5), {"SKU-X": 50}), po("SO-1", at(8), {"SKU-X": 10})
    engine = Engine(EngineConfig(windows=["1h", "1d"], allowed_lateness="1h"))
    out = run_events(engine, (parse_event(e) for e in [amendment, original, tick(1), tick(2)]))
    out.extend(engine.flush())
    assert stock(out.records)[at(0)]["mean_daily_demand"] == 10.0


def test_only_complete_purchase_orders_give_lead_times() -> None:
    """PO-1 completes (2 d, one sample for each of its two SKUs); PO-2 is closed short."""
    events = [
        tick(4),
        po("PO-1", at(0), {"SKU-X": 10, "SKU-Y": 5}, direction="inbound"),
        delivery("PO-1", at(0, day=2), [10, 5]),
        po("PO-2", at(0), {"SKU-X": 10}, direction="inbound"),
        delivery("PO-2", at(0, day=1), [4]),
        closed("PO-2", at(1, day=1)),
    ]
    _, records = run(events)
    for sku in ("SKU-X", "SKU-Y"):
        r = stock(records, sku)[at(0, day=2)]
        assert (r["lead_time_samples"], r["mean_lead_time_days"]) == (1, 2.0)
        assert r["demand_days"] == 0 and r["segments"] == [] and r["service_level"] == 0.95
        assert r["reason"] == (
            "0 demand days, at least 7 needed; 1 lead-time sample, at least 3 needed"
        )
    assert at(0, day=1) not in stock(records)  # the short close gave no sample


def test_horizon_bounds_demand_days_and_memory() -> None:
    """Demand every day for 10 days, horizon 7 days; then silence until day 20.

    day      0 1 2 3 4 5 6 7 8 9 | 10 ... 16 | 17 ... 19
    records  demand_days 1..7    | 7, fading  | none: SKU forgotten
    """
    events = [po(f"SO-{d}", at(9, day=d), {"SKU-X": 1 + d % 3}) for d in range(10)]
    events.append(tick(20))
    engine, records = run(events, safety_stock={"horizon": "7d", "min_demand_days": 5})
    series = stock(records)
    assert [r["demand_days"] for r in series.values()] == [1, 2, 3, 4, 5, 6, *[7] * 10]
    assert max(series) == at(0, day=15)  # day 9's demand leaves the horizon after day 15
    # Day 15's horizon is days 9..15: day 9's 1 unit (1 + 9 % 3) and six zeros.
    assert series[at(0, day=15)]["mean_daily_demand"] == pytest.approx(1 / 7)
    assert engine.stock.skus == {}


def test_demand_before_the_horizon_counts_every_day_of_it() -> None:
    events = [po("SO-0", at(9), {"SKU-X": 7}), po("SO-9", at(9, day=9), {"SKU-X": 14}), tick(10)]
    _, records = run(events, safety_stock={"horizon": "7d", "min_demand_days": 5})
    r = stock(records)[at(0, day=9)]
    assert r["demand_days"] == 7 and r["mean_daily_demand"] == 2.0  # 14 / 7: zeros since day 3


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"safety_stock": {"window": "1h"}}, "safety_stock.window"),
        ({"safety_stock": {"horizon": "36h"}}, "safety_stock.horizon"),
        ({"safety_stock": {"service_level": 1.0}}, "safety_stock.service_level"),
        ({"safety_stock": {"min_demand_days": 30}}, "exceeds the horizon"),
        ({"safety_stock": {"min_lead_time_samples": 1}}, "safety_stock.min_lead_time_samples"),
        ({"windows": ["1h", "1d"], "safety_stock": {"window": "7d"}}, "safety_stock.window"),
    ],
)
def test_bad_safety_stock_settings(settings: dict[str, Any], names: str) -> None:
    with pytest.raises(ValidationError, match=names.replace(".", r"\.")):
        EngineConfig(**settings)


def test_disabled_gives_no_records() -> None:
    _, records = run(small_series(), safety_stock={"enabled": False, "window": "7d"})
    assert not [r for r in records if r["kpi"] == "safety_stock"]


# --- snapshot round trip with everything configured -------------------------------


def supply_chain(days: int, seed: int) -> list[dict[str, Any]]:
    """A machine with daily failures, customer demand for two SKUs, purchase orders.

    Random but fixed by the seed; about 60 events a day.
    """
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for d in range(days):
        events.append(state(at(0, day=d), "running"))
        down = rng.uniform(1, 20)
        events.append(state(at(down, day=d), "down", reason="jam"))
        events.append(state(at(down + rng.uniform(0.05, 0.3), day=d), "running"))
        for h in range(24):
            total = rng.randint(1500, 1800)
            events.append(count(at(h + 0.5, day=d), total, total - rng.randint(0, 40), 2.0))
        for i in range(rng.randint(0, 3)):
            oid, created = f"SO-{d}-{i}", rng.uniform(0, 23)
            skus = {sku: rng.randint(1, 20) for sku in rng.sample(["SKU-X", "SKU-Y"], 2)}
            segment = rng.choice("AB")
            events.append(
                po(
                    oid,
                    at(created, day=d),
                    skus,
                    segment=segment,
                    promised_at=at(created + 48, day=d),
                )
            )
            delivered = created + rng.uniform(2, 60)
            events.append(delivery(oid, at(delivered, day=d), list(skus.values()), "outbound"))
        oid, lead = f"PO-{d}", rng.uniform(1, 4)
        events.append(
            po(
                oid,
                at(8, day=d),
                {"SKU-X": 100, "SKU-Y": 50},
                direction="inbound",
                promised_at=at(8, day=d + 3),
            )
        )
        if rng.random() < 0.1:
            events.append(delivery(oid, at(8 + 24 * lead, day=d), [60, 50]))
            events.append(closed(oid, at(9 + 24 * lead, day=d)))
        else:
            events.append(delivery(oid, at(8 + 24 * lead, day=d), [100, 50]))
    return sorted(events, key=lambda e: e["ts"])


FULL = EngineConfig(
    windows=["1h", "1d"],
    allowed_lateness="30m",
    heartbeat_timeout="2h",
    policies={
        "A": {"service_level": 0.98, "otif": 0.9, "min_order_qty": 15, "response_time": "36h"},
        "B": {"service_level": 0.9, "perfect_order": 0.8},
    },
    targets=[
        {"site": "plant-1", "line": "line-1", "oee": 0.8, "mttr": "6m"},
        {"site": "plant-1", "line": "line-1", "machine": "press-1", "availability": 0.99},
    ],
    target_windows=["1h", "1d"],
    safety_stock={"horizon": "10d", "min_demand_days": 5, "min_lead_time_samples": 3},
)


def test_snapshot_round_trip_mid_stream_with_policies_and_safety_stock() -> None:
    events = [parse_event(e) for e in supply_chain(24, seed=11)]
    whole = Engine(FULL)
    expected = run_events(whole, events)
    expected.extend(whole.flush())
    ok = [r for r in expected.records if r["kpi"] == "safety_stock" and r["status"] == "ok"]
    assert len(ok) > 20 and all(r["safety_stock"] > 0 for r in ok)
    assert any(a["kind"] == "target_miss" for a in expected.alerts)
    assert any(r.get("below_moq") for r in expected.records)
    assert any(r.get("response_time_missed") for r in expected.records)

    for cut in (1, len(events) // 4, len(events) // 2, 3 * len(events) // 4):
        first = Engine(FULL)
        out = run_events(first, events[:cut])
        data = orjson.loads(orjson.dumps(snapshot(first)))  # through JSON, as a table stores it
        assert orjson.loads(orjson.dumps(snapshot(restore(FULL, data)))) == data
        second = restore(FULL, data)
        out.extend(run_events(second, events[cut:]))
        out.extend(second.flush())
        assert out.records == expected.records, f"cut at {cut}"
        assert out.alerts == expected.alerts, f"cut at {cut}"


def test_state_holds_only_the_horizon() -> None:
    engine = Engine(FULL)
    run_events(engine, (parse_event(e) for e in supply_chain(24, seed=3)))
    last_closed_day = (engine.stock.emitted_until_us or 0) // DAY_US - 1
    for history in engine.stock.skus.values():
        days = [*history.demand, *(day for day, _ in history.lead_times)]
        # The next record's horizon starts at last_closed_day + 1 - 10 + 1; nothing older.
        assert min(days) >= last_closed_day - 8


def test_snapshot_without_safety_stock_state_still_restores() -> None:
    engine = Engine(FULL)
    run_events(engine, (parse_event(e) for e in supply_chain(3, seed=5)))
    data = orjson.loads(orjson.dumps(snapshot(engine)))
    del data["stock"]  # taken by a version before safety stock
    for order in data["book"]["open"]:
        del order["skus"]
    restored = restore(FULL, data)
    assert restored.stock.skus == {} and restored.watermark_us == engine.watermark_us


def test_doctest() -> None:
    result = doctest.testmod(streams.safety_stock)
    assert result.attempted and not result.failed
