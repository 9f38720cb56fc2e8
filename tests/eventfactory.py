"""Small builders of contract events for tests (plain dicts, RFC 3339 text)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

DAY = datetime(2026, 11, 22, tzinfo=UTC)
_ids = itertools.count(1)


def at(hours: float = 0.0, day: int = 0) -> str:
    """RFC 3339 text for DAY + day days + hours."""
    return (DAY + timedelta(days=day, hours=hours)).isoformat().replace("+00:00", "Z")


def _id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def state(
    ts: str,
    state: str,
    machine: str = "press-1",
    line: str = "line-1",
    reason: str | None = None,
    site: str = "plant-1",
) -> dict[str, Any]:
    return {
        "type": "state",
        "event_id": _id("s"),
        "ts": ts,
        "site": site,
        "line": line,
        "machine": machine,
        "state": state,
        "reason": reason,
    }


def count(
    ts: str,
    total: int,
    good: int,
    ideal_cycle_s: float,
    machine: str = "press-1",
    line: str = "line-1",
    product: str = "SKU-7",
    site: str = "plant-1",
) -> dict[str, Any]:
    return {
        "type": "count",
        "event_id": _id("c"),
        "ts": ts,
        "site": site,
        "line": line,
        "machine": machine,
        "product": product,
        "ideal_cycle_s": ideal_cycle_s,
        "total": total,
        "good": good,
    }


def counter(
    ts: str,
    total: int,
    good: int | None = None,
    ideal_cycle_s: float = 2.0,
    machine: str = "press-1",
    line: str = "line-1",
    product: str = "SKU-7",
    site: str = "plant-1",
) -> dict[str, Any]:
    """A reading of cumulative PLC counters."""
    event = {
        "type": "counter",
        "event_id": _id("k"),
        "ts": ts,
        "site": site,
        "line": line,
        "machine": machine,
        "product": product,
        "ideal_cycle_s": ideal_cycle_s,
        "total": total,
    }
    if good is not None:
        event["good"] = good
    return event


def order(
    order_id: str,
    ts: str,
    promised_at: str,
    qty: float = 100,
    direction: str = "outbound",
    segment: str = "A",
    partner: str = "C-1",
    lines: int = 1,
) -> dict[str, Any]:
    return {
        "type": "order",
        "event_id": _id("o"),
        "ts": ts,
        "order_id": order_id,
        "direction": direction,
        "partner": partner,
        "segment": segment,
        "promised_at": promised_at,
        "lines": [{"line_no": n, "sku": f"SKU-{n}", "qty": qty} for n in range(1, lines + 1)],
    }


def shipment(
    order_id: str,
    delivered_at: str,
    qty: float = 100,
    damaged: float = 0,
    documents_ok: bool = True,
    direction: str = "outbound",
    lines: int = 1,
) -> dict[str, Any]:
    return {
        "type": "shipment",
        "event_id": _id("sh"),
        "ts": delivered_at,
        "shipment_id": _id("SH"),
        "order_id": order_id,
        "direction": direction,
        "delivered_at": delivered_at,
        "documents_ok": documents_ok,
        "lines": [
            {"line_no": n, "qty": qty, "damaged_qty": damaged if n == 1 else 0}
            for n in range(1, lines + 1)
        ],
    }


def closed(order_id: str, ts: str) -> dict[str, Any]:
    return {"type": "order_closed", "event_id": _id("x"), "ts": ts, "order_id": order_id}


def cancelled(order_id: str, ts: str) -> dict[str, Any]:
    return {"type": "order_cancelled", "event_id": _id("k"), "ts": ts, "order_id": order_id}
