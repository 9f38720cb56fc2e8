"""The built-in wall: its view (`agents.wall`, no worker needed), the
terminal summary's width, and the page in a real browser (headless
Chromium) on a live demo worker, its values equal to `/kpi`."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import agents.wall
from agents.record_kinds import UnknownKinds
from agents.wall import WALL_KINDS, WALL_VERSION, page, status, wall_view
from agents.worker import SUMMARY_WIDTH, summary_line
from devtools.demo_feed import live_start_us
from devtools.simulator import SimConfig, simulate
from streams.config import EngineConfig, ServicePolicy, TargetSettings
from streams.decode import parse_event
from streams.engine import Engine
from streams.live import live_view
from tests.agents.harness import ROOT
from tests.streams.helpers import run_events

ARTIFACTS = ROOT / "tests" / "artifacts"
DAY_US = 86_400_000_000


@pytest.fixture(scope="module")
def engine() -> Engine:
    """A day and ten hours of the simulated plant, up to 10:00 of a shift day."""
    config = SimConfig(profiles="mix")
    end = live_start_us(config, 1_796_000_000_000_000) + 2 * 3_600_000_000
    targets = [TargetSettings(site="plant-1", line=f"line-{i}", oee=0.65) for i in (1, 2, 3)]
    engine = Engine(
        EngineConfig(targets=targets, policies={"A": ServicePolicy(perfect_order=0.95)})
    )
    start = end - DAY_US - 10 * 3_600_000_000
    run_events(engine, (parse_event(e) for e in simulate(config, 7, start, (end - start) / 1e6)))
    return engine


def test_wall_view_is_the_kpi_data(engine: Engine) -> None:
    view = wall_view([engine])
    live = live_view(engine)
    assert view["version"] == WALL_VERSION
    assert view["watermark"] == live["watermark"]
    closed = {
        r["line"]: r
        for r in live["last_closed"]
        if r["kpi"] == "oee" and r["scope"] == "line" and r["window"] == "1h"
    }
    assert {line["line"] for line in view["lines"]} == set(closed) == {"line-1", "line-2", "line-3"}
    for line in view["lines"]:
        record = closed[line["line"]]
        for part in ("oee", "availability", "performance", "quality"):
            assert line["closed"][part] == record[part]
        assert line["target"] == {"oee": 0.65}
        assert line["closed"]["status"] == status(record["oee"], 0.65, 0.1)
        assert line["current"]["oee"] is not None
    assert len(view["machines"]) == live["machines"] == 11
    states = {"running", "idle", "down", "setup", "planned_stop", "no_data"}
    assert all(m["state"] in states for m in view["machines"])
    assert all(m["in_state_s"] is not None and m["in_state_s"] >= 0 for m in view["machines"])
    scrap = [c for c in view["pcharts"] if c["chart"].startswith("scrap/")]
    assert len(scrap) == 3
    for chart in scrap:
        last = next(r for r in live["last_closed"] if r.get("chart") == chart["chart"])
        assert chart["points"][-1]["p"] == last["p"]
        assert chart["points"][-1]["ucl"] == last["ucl"]
        assert 2 < len(chart["points"]) <= 24
        # Limits step with n: a different n, a different UCL (phase II, same centre).
        ucls = {(p["n"], p["ucl"]) for p in chart["points"] if p["n"]}
        assert len({u for _, u in ucls}) > 1
    assert [o["segment"] for o in view["orders"]] == ["A", "B", "C"]
    a = view["orders"][0]
    assert a["target"] == 0.95
    today = next(
        r
        for r in live["current"]
        if r["kpi"] == "perfect_order"
        and r["window"] == "1d"
        and r["direction"] == "outbound"
        and r["segment"] == "A"
    )
    assert a["today"]["perfect_order_rate"] == today["perfect_order_rate"]
    assert a["today"]["on_time"] == today["on_time"] / today["decided"]
    assert view["downtime"] and view["downtime"] == sorted(
        view["downtime"], key=lambda d: -d["seconds"]
    )
    json.dumps(view)  # plain JSON
    html = page(view).decode()
    assert "/*WALL_DATA*/" not in html and '"version":1' in html


def test_status_against_targets() -> None:
    assert status(0.65, 0.65, 0.1) == "good"
    assert status(0.6, 0.65, 0.1) == "warn"
    assert status(0.5, 0.65, 0.1) == "bad"
    assert status(None, 0.65, 0.1) == status(0.9, None, 0.1) == "none"
    # MTTR: at or below its target is attained, as the engine judges it.
    assert status(600.0, 600.0, 0.1, "mttr_s") == "good"
    assert status(650.0, 600.0, 0.1, "mttr_s") == "warn"
    assert status(700.0, 600.0, 0.1, "mttr_s") == "bad"


def test_every_record_kind_is_in_the_wall_table(engine: Engine) -> None:
    live = live_view(engine)
    kinds = {r["kpi"] for r in live["current"] + live["last_closed"]}
    assert kinds == {"oee", "perfect_order", "pchart", "chain", "safety_stock"}
    assert kinds <= set(WALL_KINDS)


def test_an_unknown_record_kind_is_logged_once_and_left_out(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(agents.wall, "UNKNOWN", UnknownKinds("wall"))
    before = wall_view([engine])
    unknown = {"kpi": "future_kind", "window": "1h", "start": "", "end": ""}
    monkeypatch.setitem(engine.last_closed, "x", unknown)
    with caplog.at_level(logging.WARNING, logger="kpimon"):
        assert wall_view([engine]) == wall_view([engine]) == before
    said = [r.getMessage() for r in caplog.records if "future_kind" in r.getMessage()]
    assert said == ["wall: records of kind 'future_kind' are not handled here (left out)"]


def test_the_page_fetches_nothing_from_the_internet() -> None:
    for name in ("index.html", "wall.js", "wall.css"):
        text = (ROOT / "agents" / "wall" / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name


class _Runtime:
    def __init__(self, views: list[dict[str, Any]], dead: int = 0) -> None:
        self._views = views
        self.dead_letters = {("machine-state", "invalid"): dead} if dead else {}

    def views(self) -> list[dict[str, Any]]:
        return self._views


def test_summary_fits_100_columns_with_one_timestamp_format(engine: Engine) -> None:
    view = live_view(engine)
    line = summary_line(_Runtime([view]), 6478.4)  # type: ignore[arg-type]
    assert len(line) <= SUMMARY_WIDTH
    assert line.startswith("kpimon   6478 ev/s " + view["watermark"][:16] + "Z | OEE line-1 ")
    many = dict(view)
    many["watermark"] = "2026-12-03T07:34:56.029101Z"
    many["last_closed"] = view["last_closed"] + [
        dict(r, line=f"line-{i}")
        for i in range(4, 30)
        for r in view["last_closed"]
        if r["kpi"] == "oee" and r["scope"] == "line" and r["window"] == "1h"
    ]
    line = summary_line(_Runtime([many], dead=3), 12.0)  # type: ignore[arg-type]
    assert len(line) <= SUMMARY_WIDTH and "2026-12-03T07:34Z" in line and ".029101" not in line


# -- in a real browser ---------------------------------------------------------


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class _Elements(HTMLParser):
    """Attributes of every element with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.text: dict[str, str] = {}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.by_id[found["id"]] = found  # type: ignore[index]
            self._open = found["id"]

    def handle_data(self, data: str) -> None:
        if self._open is not None and data.strip():
            self.text.setdefault(self._open, data.strip())

    def handle_endtag(self, tag: str) -> None:
        self._open = None


def _browser(url: str, *flags: str) -> str:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1920,1080",
        "--virtual-time-budget=4000",
        *flags,
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def _closed_line_oee(view: dict[str, Any]) -> dict[str, float | None]:
    return {
        r["line"]: r["oee"]
        for s in view["shards"]
        for r in s["last_closed"]
        if r["kpi"] == "oee" and r["scope"] == "line" and r["window"] == "1h"
    }


def _last_p(view: dict[str, Any]) -> dict[str, float]:
    return {
        r["chart"]: r["p"]
        for s in view["shards"]
        for r in s["last_closed"]
        if r["kpi"] == "pchart" and r["chart"].startswith("scrap/")
    }


@pytest.mark.integration
@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (scripts/test installs it)")
def test_wall_in_headless_chromium_shows_the_kpi_values(tmp_path: Path) -> None:
    from tests.agents.test_demo import Demo, kpi

    demo = Demo(tmp_path, "--history-days", "1", "--duration", "400")
    try:
        demo.live()
        base = f"http://127.0.0.1:{demo.port}"
        assert json.loads(_get(f"{base}/wall.json"))["version"] == WALL_VERSION
        assert b"wall.js" in _get(f"{base}/")
        for _ in range(10):  # a closed hour may close between /kpi and the page
            before = kpi(demo.port)
            dom = _browser(f"{base}/", "--dump-dom")
            after = kpi(demo.port)
            assert before and after
            if _closed_line_oee(before) == _closed_line_oee(after) and _last_p(before) == _last_p(
                after
            ):
                break
        elements = _Elements()
        elements.feed(dom)
        oee = _closed_line_oee(after)
        assert oee and all(v is not None for v in oee.values()), oee
        for line, value in oee.items():
            el = elements.by_id[f"oee-closed-plant-1-{line}"]
            assert float(el["data-value"] or "nan") == value  # type: ignore[arg-type]
            shown = elements.text[f"oee-closed-plant-1-{line}"]
            assert shown.endswith("%") and abs(float(shown[:-1]) - 100 * value) <= 0.05 + 1e-9
        for chart, p in _last_p(after).items():
            el = elements.by_id["pchart-" + chart.replace("/", "-")]
            assert float(el["data-last-p"] or "nan") == p  # type: ignore[arg-type]
        tiles = {k: v for k, v in elements.by_id.items() if k.startswith("machine-")}
        machines = sum(s["machines"] for s in after["shards"])
        assert len(tiles) == machines == 11
        states = {"running", "idle", "down", "setup", "planned_stop", "no_data"}
        assert all(t["data-state"] in states for t in tiles.values())
        assert elements.by_id["live"]["data-state"] == "live"
        shot = tmp_path / "wall.png"
        _browser(f"{base}/", f"--screenshot={shot}")
        assert shot.stat().st_size > 10_000
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "wall.png")
        assert demo.stop() == 0
    finally:
        demo.kill()
    assert demo.lines[0] == f"kpimon: wall http://127.0.0.1:{demo.port}/"


def test_each_partitions_alerts_are_listed_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker with several engine partitions lists each one's alerts once
    (each partition's silent machines and charts, not every partition's so far)."""
    machines = iter(["m-1", "m-2", "m-3"])

    def one_silent_machine(_: Engine) -> list[dict[str, Any]]:
        return [{"machine": next(machines), "silent": True, "silence_s": 600.0}]

    monkeypatch.setattr(agents.wall, "_machines", one_silent_machine)
    one = wall_view([engine])["alerts"]
    two = wall_view([engine, engine])["alerts"]
    silent = sorted(a["what"] for a in two if a["kind"] == "silent")
    assert silent == ["m-2", "m-3"]
    assert len(two) == 2 * len(one)
