"""The worked examples of kpi-definitions.md, through the real `kpimon replay`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agents.replay import replay
from streams.config import EngineConfig
from streams.engine import Engine
from tests.eventfactory import at, closed, count, order, shipment, state

CONFIG = """
[engine]
windows = ["1h", "1d"]
allowed_lateness = "0s"
"""


def run_replay(
    tmp_path: Path, events: list[Any], *extra: str, config: str | None = CONFIG
) -> tuple[list[dict[str, Any]], str]:
    """`kpimon replay` of the events; `config=None`: the default configuration."""
    data = tmp_path / "events.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in events))
    if config is not None:
        path = tmp_path / "kpimon.toml"
        path.write_text(config)
        extra = ("--config", str(path), *extra)
    done = subprocess.run(
        [sys.executable, "-m", "agents.cli", "replay", str(data), *extra],
        capture_output=True,
        text=True,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def textbook_machine() -> list[dict[str, Any]]:
    """One hour: 48 min running, 12 min down; 1,000 units at 2.304 s ideal, 950 good.

    availability 48/60 = 80%, performance 2304 s / 2880 s = 80%, quality 95%.

        06:00        06:48   07:00                      23:00
          |running....|down...|planned_stop ...............|
    """
    return [
        state(at(6), "running"),
        [count(at(6.5), 600, 570, 2.304), count(at(6.78), 400, 380, 2.304)],  # a batch
        state(at(6.8), "down", reason="jam"),
        state(at(7), "planned_stop", reason="break"),
        state(at(23), "planned_stop", reason="break"),
    ]


def select(records: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def test_oee_worked_example(tmp_path: Path) -> None:
    records, stderr = run_replay(tmp_path, textbook_machine())
    for scope in ("machine", "line", "site"):
        hour = select(records, kpi="oee", scope=scope, window="1h", start=at(6))
        assert len(hour) == 1
        r = hour[0]
        assert (r["availability"], r["performance"], r["quality"]) == pytest.approx(
            (0.8, 0.8, 0.95)
        )
        assert r["oee"] == pytest.approx(0.608)
        assert r["failures"] == 1 and r["mttr_s"] == 720.0 and r["mtbf_s"] == 2880.0
        assert r["downtime_by_reason_s"] == {"jam": 720.0}
    day = select(records, kpi="oee", scope="site", window="1d")
    assert day[0]["oee"] == pytest.approx(0.608)  # planned stops do not dilute OEE
    assert "60.8%" in stderr


@pytest.mark.parametrize("sent", ["as in the README", "on change"])
def test_oee_worked_example_with_the_default_configuration(tmp_path: Path, sent: str) -> None:
    """No config file at all: states hold until the next one, so 60.8% either way."""
    if sent == "on change":  # the MES sends one count, at the end of the run
        events = [
            state(at(0), "running"),
            count(at(47 / 60 + 59 / 3600), 1_000, 950, 2.304),
            state(at(0.8), "down"),
            state(at(1), "planned_stop"),
        ]
        hour = at(0)
    else:
        events, hour = textbook_machine(), at(6)
    records, _ = run_replay(tmp_path, events, config=None)
    (r,) = select(records, kpi="oee", scope="machine", window="1h", start=hour)
    assert r["oee"] == pytest.approx(0.608)
    assert (r["availability"], r["performance"]) == pytest.approx((0.8, 0.8))
    assert not r["performance_above_ideal"]


def perfect_order_example() -> list[dict[str, Any]]:
    """Ten orders: one late, two short (closed), three damaged -> 90% x 80% x 70%."""
    events: list[Any] = []
    for i in range(1, 11):
        events.append(order(f"SO-{i}", at(1), promised_at=at(12), qty=100))
    events.append(shipment("SO-1", at(13)))  # late, complete
    for i in (2, 3):
        events += [shipment(f"SO-{i}", at(10), qty=50), closed(f"SO-{i}", at(11))]
    for i in (4, 5, 6):
        events.append(shipment(f"SO-{i}", at(10), damaged=1))
    for i in (7, 8, 9, 10):
        events.append(shipment(f"SO-{i}", at(9)))
    return sorted(events, key=lambda e: e["ts"])


def test_perfect_order_worked_example(tmp_path: Path) -> None:
    records, _ = run_replay(tmp_path, perfect_order_example())
    [r] = select(records, kpi="perfect_order", window="1d")
    assert (r["decided"], r["on_time"], r["in_full"], r["damage_free"], r["documents_ok"]) == (
        10,
        9,
        8,
        7,
        10,
    )
    assert r["component_product"] == pytest.approx(0.504)
    # Failures hit different orders here, so the true rate is lower than the product.
    assert r["perfect"] == 4 and r["perfect_order_rate"] == pytest.approx(0.4)
    assert r["otif_rate"] == pytest.approx(0.7)
    assert r["unit_fill_rate"] == pytest.approx(900 / 1000)
    assert r["line_fill_rate"] == pytest.approx(0.8)


def chain_example() -> list[dict[str, Any]]:
    """Inbound: 10 POs, 5 late, 1 damaged. Outbound: 100 orders, 1 late, 1 bad documents."""
    events: list[Any] = list(textbook_machine())
    for i in range(10):
        oid = f"PO-{i}"
        events.append(
            order(
                oid,
                at(1),
                promised_at=at(12),
                direction="inbound",
                segment="supplier",
                partner="SUP-1",
            )
        )
        events.append(
            shipment(oid, at(14 if i < 5 else 10), damaged=1 if i == 9 else 0, direction="inbound")
        )
    for i in range(100):
        oid = f"SO-{i}"
        events.append(order(oid, at(2), promised_at=at(15)))
        events.append(shipment(oid, at(16 if i == 0 else 11), documents_ok=i != 1))
    return sorted(events, key=lambda e: e["ts"] if isinstance(e, dict) else e[0]["ts"])


def test_chain_worked_example(tmp_path: Path) -> None:
    records, _ = run_replay(tmp_path, chain_example())
    [r] = select(records, kpi="chain", window="1d")
    assert (r["inbound_quality"], r["inbound_delivery"]) == pytest.approx((0.9, 0.5))
    assert (r["outbound_quality"], r["outbound_delivery"]) == pytest.approx((0.99, 0.99))
    assert r["ope"] == pytest.approx(0.45)
    assert r["oee"] == pytest.approx(0.608)
    assert r["ole"] == pytest.approx(0.9801)
    # 45% x 60.8% x 98.01% = 26.82%; the textbook's 26.81% rounds OLE to 98% first.
    assert r["overall"] == pytest.approx(0.45 * 0.608 * 0.9801)
    assert round(r["ope"] * r["oee"] * round(r["ole"], 2), 4) == 0.2681


def test_replay_reports_rejected_lines(tmp_path: Path) -> None:
    bad = dict(state(at(6), "running"), state="flying")
    rejects = tmp_path / "rejects.jsonl"
    records, stderr = run_replay(tmp_path, [*textbook_machine(), bad], "--rejects", str(rejects))
    [line] = [json.loads(x) for x in rejects.read_text().splitlines()]
    assert line["reason"] == "schema" and "state" in line["error"] and line["line"] == 6
    assert "1 rejected" in stderr
    assert select(records, kpi="oee", scope="machine", window="1h", start=at(6))[0][
        "oee"
    ] == pytest.approx(0.608)


def test_replay_reports_events_the_engine_refuses() -> None:
    # Line 2 is a batch: press-2 is one machine too many, press-1's count still counts.
    lines = [
        json.dumps(state(at(6), "running")).encode(),
        json.dumps(
            [state(at(6.1), "idle", machine="press-2"), count(at(6.2), 10, 10, 1.0)]
        ).encode(),
    ]
    engine = Engine(EngineConfig(windows=["1h", "1d"], max_machines=1))
    rejects = io.BytesIO()
    result = replay(iter(lines), engine, rejects=rejects)
    assert result.rejected == {"too_many_machines": 1}
    [line] = [json.loads(x) for x in rejects.getvalue().splitlines()]
    assert (line["line"], line["index"], line["reason"]) == (2, None, "too_many_machines")
    assert line["error"].startswith("machine: 'press-2' would be machine 2 held")
    assert json.loads(line["value"])["machine"] == "press-2"
    [hour] = select(result.output.records, kpi="oee", scope="machine", window="1h")
    assert hour["machine"] == "press-1" and hour["total"] == 10
