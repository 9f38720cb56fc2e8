"""The events `kpimon bench` sends: a synthetic plant's mix, the memory test's load.

`Mix` is the plant of measurements (a)-(d) (machines' counts and states,
orders and shipments, in rounds of 60 s of event time; the proportions are
in `devtools.bench`'s docstring), `restamp` makes its events live for the
latency test, `state_load` is the standing state of the memory test (e),
`singles` turns batched messages into one event per message and `gateway`
into a line gateway's batches of 100 events of several machines. Seeded:
a `Mix` built with the same arguments yields the same messages. Sending
them is `devtools.bench_produce`.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterable, Iterator
from typing import Any

from streams.timeutil import US, iso

ROUND_US = 60 * US

_STATES = ("running", "idle", "down", "setup", "planned_stop")
_STATE_WEIGHTS = (60, 10, 15, 10, 5)
_REASONS = {"idle": "no_material", "down": "jam", "setup": "changeover", "planned_stop": "break"}
Message = tuple[str, str, list[dict[str, Any]]]  # (topic kind, key, events)


def machine_names(i: int) -> tuple[str, str, str]:
    """(site, line, machine) of machine i: 10 machines per line, 100 per site."""
    return f"site-{i // 100}", f"line-{i // 10}", f"m-{i}"


class Mix:
    """The synthetic plant: `messages(n)` yields batched messages of n events in all."""

    def __init__(self, machines: int, seed: int, start_us: int, prefix: str) -> None:
        self.machines = machines
        self.rng = random.Random(seed)
        self.start_us = start_us
        self.prefix = prefix
        self.ids = itertools.count(1)
        self.orders = itertools.count(1)
        self.state = ["running"] * machines
        self.pending: list[tuple[int, int, str, str, str, list[dict[str, Any]]]] = []

    @staticmethod
    def rounds_for(n: int, machines: int) -> int:
        return max(1, math.ceil(n / (10 * machines)))

    def _id(self) -> str:
        return f"{self.prefix}{next(self.ids)}"

    def messages(self, n: int) -> Iterator[Message]:
        left = n
        for round_no in itertools.count():
            t0 = self.start_us + round_no * ROUND_US
            for m in range(self.machines):
                group = [self._machine_batch(m, t0)]
                extra = self.rng.choice((0, 1, 1, 2))
                group += [self._order_side(round_no, t0) for _ in range(extra)]
                for kind, key, events in group:
                    events = events[:left]
                    left -= len(events)
                    yield kind, key, events
                    if left <= 0:
                        return

    def _machine_batch(self, m: int, t0: int) -> Message:
        rng = self.rng
        site, line, machine = machine_names(m)
        n_counts, n_states = rng.randint(5, 9), rng.randint(1, 3)
        step = ROUND_US // (n_counts + 1)
        marks = [(t0 + (j + 1) * step + rng.randrange(1000) * 1000, 1) for j in range(n_counts)]
        marks += [(t0 + rng.randrange(ROUND_US // 1000) * 1000, 0) for _ in range(n_states)]
        events = []
        for ts, is_count in sorted(marks):
            base = {"event_id": self._id(), "ts": iso(ts), "site": site, "line": line}
            if is_count:
                running = self.state[m] == "running"
                total = rng.randint(3, 6) if running else 0
                good = total - (1 if total and rng.random() < 0.1 else 0)
                events.append(
                    {
                        "type": "count",
                        **base,
                        "machine": machine,
                        "product": f"SKU-{m % 50}",
                        "ideal_cycle_s": 1.0 + (m % 7) * 0.5,
                        "total": total,
                        "good": good,
                    }
                )
            else:
                state = rng.choices(_STATES, _STATE_WEIGHTS)[0]
                self.state[m] = state
                events.append(
                    {
                        "type": "state",
                        **base,
                        "machine": machine,
                        "state": state,
                        "reason": _REASONS.get(state),
                    }
                )
        return "machine-state", machine, events

    def _order_side(self, round_no: int, t0: int) -> Message:
        rng = self.rng
        ts = t0 + rng.randrange(ROUND_US // 1000) * 1000
        if self.pending and self.pending[0][0] <= round_no:
            _, _, follow, order_id, direction, lines = heapq.heappop(self.pending)
            return self._follow_up(round_no, ts, follow, order_id, direction, lines)
        number = next(self.orders)
        order_id = f"{self.prefix}O{number}"
        direction = "outbound" if rng.random() < 0.7 else "inbound"
        lines = [
            {"line_no": i, "sku": f"SKU-{rng.randrange(500)}", "qty": float(rng.randint(1, 50))}
            for i in range(1, rng.randint(1, 3) + 1)
        ]
        draw = rng.random()
        follow = "cancel" if draw < 0.04 else "short" if draw < 0.12 else "ship"
        due = round_no + rng.randint(1, 8)
        heapq.heappush(self.pending, (due, number, follow, order_id, direction, lines))
        partner = f"C-{rng.randrange(50)}" if direction == "outbound" else f"S-{rng.randrange(20)}"
        event = {
            "type": "order",
            "event_id": self._id(),
            "ts": iso(ts),
            "order_id": order_id,
            "direction": direction,
            "partner": partner,
            "segment": rng.choice("ABC"),
            "promised_at": iso(ts + rng.randint(2, 8) * ROUND_US),
            "lines": lines,
        }
        return "orders", order_id, [event]

    def _follow_up(
        self,
        round_no: int,
        ts: int,
        follow: str,
        order_id: str,
        direction: str,
        lines: list[dict[str, Any]],
    ) -> Message:
        rng = self.rng
        base = {"event_id": self._id(), "ts": iso(ts), "order_id": order_id}
        if follow == "cancel":
            return "orders", order_id, [{"type": "order_cancelled", **base}]
        if follow == "close":
            return "orders", order_id, [{"type": "order_closed", **base}]
        shipped = []
        for line in lines:
            qty = line["qty"] - (1.0 if follow == "short" and line["line_no"] == 1 else 0.0)
            damaged = 1.0 if qty >= 1 and rng.random() < 0.03 else 0.0
            shipped.append({"line_no": line["line_no"], "qty": qty, "damaged_qty": damaged})
        if follow == "short":
            due = round_no + rng.randint(1, 3)
            heapq.heappush(self.pending, (due, 0, "close", order_id, direction, lines))
        event = {
            "type": "shipment",
            **base,
            "shipment_id": f"SH-{base['event_id']}",
            "direction": direction,
            "delivered_at": base["ts"],
            "documents_ok": rng.random() >= 0.03,
            "lines": shipped,
        }
        return "shipments", order_id, [event]


def restamp(events: list[dict[str, Any]], now_us: int) -> None:
    """Live events for the latency test: everything happens now."""
    text = iso(now_us)
    for event in events:
        event["ts"] = text
        if "promised_at" in event:
            event["promised_at"] = iso(now_us + 5 * ROUND_US)
        if "delivered_at" in event:
            event["delivered_at"] = text


def state_load(machines: int, orders: int, now_us: int, prefix: str) -> Iterator[Message]:
    """(e): a state and a count per machine, then open orders promised 30 days ahead."""
    rng = random.Random(11)
    ts = iso(now_us - 2 * ROUND_US)
    for m in range(machines):
        site, line, machine = machine_names(m)
        where = {"ts": ts, "site": site, "line": line, "machine": machine}
        yield (
            "machine-state",
            machine,
            [
                {"type": "state", "event_id": f"{prefix}s{m}", **where, "state": "running"},
                {
                    "type": "count",
                    "event_id": f"{prefix}c{m}",
                    **where,
                    "product": f"SKU-{m % 50}",
                    "ideal_cycle_s": 2.0,
                    "total": 10,
                    "good": 9,
                },
            ],
        )
    promised = iso(now_us + 30 * 86_400 * US)
    for n in range(orders):
        order_id = f"{prefix}O{n}"
        lines = [
            {"line_no": i, "sku": f"SKU-{rng.randrange(500)}", "qty": float(rng.randint(1, 50))}
            for i in range(1, rng.randint(1, 3) + 1)
        ]
        event = {
            "type": "order",
            "event_id": f"{prefix}o{n}",
            "ts": iso(now_us - ROUND_US),
            "order_id": order_id,
            "direction": "outbound" if n % 10 < 7 else "inbound",
            "partner": f"C-{n % 50}",
            "segment": "ABC"[n % 3],
            "promised_at": promised,
            "lines": lines,
        }
        yield "orders", order_id, [event]


def singles(messages: Iterable[Message]) -> Iterator[Message]:
    for kind, key, events in messages:
        for event in events:
            yield kind, key, [event]


def gateway(messages: Iterable[Message], size: int = 100) -> Iterator[Message]:
    """A line gateway's batches: the machine events of one line, `size` to a message
    (events of several machines, each machine's in order), keyed `<site>/<line>`
    as the contract asks of a gateway batch (`streams.events` `line_key`).

    Order-side messages (an ERP's, not a gateway's) pass through as they are.
    A line's last batch may be shorter.
    """
    held: dict[str, list[dict[str, Any]]] = {}
    for kind, key, events in messages:
        if kind != "machine-state":
            yield kind, key, events
            continue
        for event in events:
            line_key = f"{event['site']}/{event['line']}"
            batch = held.setdefault(line_key, [])
            batch.append(event)
            if len(batch) >= size:
                yield kind, line_key, batch
                held[line_key] = []
    for line, batch in held.items():
        if batch:
            yield "machine-state", line, batch
