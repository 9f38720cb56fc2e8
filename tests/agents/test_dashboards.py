"""Grafana dashboards and provisioning: valid, consistent, and built on metrics
the worker exports. (That every query returns data from a live worker is
tests/agents/test_prometheus.py's job.)"""

from __future__ import annotations

import importlib.util
import re
import sys
from itertools import combinations
from typing import Any

import pytest

from agents.app import Runtime
from agents.metrics import make_registry
from agents.pipeline import Shard
from agents.settings import Settings
from agents.simulator import SAMPLE_START_US, SimConfig, simulate
from streams.config import EngineConfig
from streams.engine import Engine
from streams.events import parse_event
from tests.agents.harness import ROOT
from tests.agents.prometheus_harness import (
    DEPLOY,
    VARIABLE_VALUES,
    dashboards,
    metric_names,
    panel_exprs,
    rule_names,
    variable_exprs,
)

GRAFANA = ROOT / "grafana"
UIDS = {
    "wall.json": "kpimon-wall",
    "pchart.json": "kpimon-pchart",
    "orders.json": "kpimon-orders",
    "pipeline.json": "kpimon-pipeline",
}
BOARDS = dashboards()


def generator() -> Any:
    sys.path.insert(0, str(GRAFANA))
    try:
        spec = importlib.util.spec_from_file_location("kpimon_grafana", GRAFANA / "generate.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(GRAFANA))


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    found, stack = [], list(board["panels"])
    while stack:
        panel = stack.pop(0)
        stack += panel.get("panels", [])
        found.append(panel)
    return found


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}


def test_dashboards_are_the_generators_output_with_stable_unique_uids() -> None:
    assert {name: b["uid"] for name, b in BOARDS.items()} == UIDS
    assert len({b["title"] for b in BOARDS.values()}) == len(BOARDS)
    rendered = generator().render()
    stale = [
        name
        for name, text in rendered.items()
        if (GRAFANA / "dashboards" / name).read_text() != text
    ]
    assert not stale, f"run `python grafana/generate.py`: {stale} differ from the generator"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_queries_the_datasource_variable(name: str) -> None:
    board = BOARDS[name]
    ds = variables(board)["datasource"]
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    for panel in panels(board):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
    for var in variables(board).values():
        if var["type"] == "query":
            assert var["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_variables_are_defined_and_plant_ones_present(name: str) -> None:
    board = BOARDS[name]
    defined = set(variables(board)) | {"__rate_interval", "__interval", "__range"}
    texts = [e for _, e in panel_exprs(board)] + [e for _, e in variable_exprs(board)]
    texts += [p["title"] for p in panels(board)]
    used = {m[0] or m[1] for t in texts for m in re.findall(r"\$\{(\w+)\}|\$(\w+)", t)}
    assert used <= defined, f"undefined variables {used - defined}"
    assert used - {"datasource"} <= set(VARIABLE_VALUES), "test_prometheus needs a value"
    plant = {"wall.json": {"site", "line", "machine"}, "pipeline.json": {"site", "line", "machine"},
             "pchart.json": {"site", "line", "chart"}, "orders.json": {"direction", "segment"}}  # fmt: skip
    assert plant[name] <= set(variables(board))


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panels_do_not_overlap(name: str) -> None:
    def cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
        g = panel["gridPos"]
        return {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }

    for a, b in combinations(panels(BOARDS[name]), 2):
        assert not cells(a) & cells(b), f"{a['title']!r} overlaps {b['title']!r}"
    for panel in panels(BOARDS[name]):
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_wall_oee_bands_match_the_recorded_target() -> None:
    target = float(
        re.search(
            r"record: kpimon:oee_target_default:ratio\s+expr: vector\(([\d.]+)\)",
            (DEPLOY / "rules" / "recording.yml").read_text(),
        )[1]
    )
    oee_panels = [p for p in panels(BOARDS["wall.json"]) if p["title"].startswith("OEE")]
    assert oee_panels
    for panel in oee_panels:
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[0]["color"] == "red" and steps[1] == {"value": target, "color": "yellow"}


@pytest.fixture(scope="module")
def exported_names() -> set[str]:
    """Metric names with samples from a collector over a simulated day (no broker)."""
    engine = Engine(EngineConfig(windows=["1h", "1d"], pchart={"baseline_n": 5}))
    events = simulate(SimConfig(id_prefix="d-"), 3, SAMPLE_START_US, 26 * 3600)
    engine.run(parse_event(e) for e in events)
    targets = {"targets": [{"site": "plant-1", "line": "line-1", "oee": 0.6}]}
    runtime = Runtime(Settings(engine=EngineConfig(**targets)), embedded=True)
    shard = Shard(engine.config, 30_000_000)
    shard.engine = engine
    runtime.shards[0] = shard
    runtime.last_event_wall["machine-state"] = 1.0
    registry = make_registry(runtime, lambda: {("machine-state", 0): 0})
    return {s.name for family in registry.collect() for s in family.samples}


def test_dashboards_and_rules_read_only_exported_metrics_and_recorded_rules(
    exported_names: set[str],
) -> None:
    recording = (DEPLOY / "rules" / "recording.yml").read_text()
    recorded = set(re.findall(r"record: (\S+)", recording))
    exprs = [(f, e) for f, b in BOARDS.items() for _, e in panel_exprs(b) + variable_exprs(b)]
    exprs += [("rules", e) for e in re.findall(r"expr: >-\n((?:\s{10}.*\n)+)", _rule_texts())]
    exprs += [("rules", e) for e in re.findall(r"expr: (\S.*)", _rule_texts())]
    unknown_metrics = {(f, n) for f, e in exprs for n in metric_names(e) if n not in exported_names}
    unknown_rules = {(f, n) for f, e in exprs for n in rule_names(e) if n not in recorded}
    assert not unknown_metrics, unknown_metrics
    assert not unknown_rules, unknown_rules


def _rule_texts() -> str:
    return "".join(p.read_text() for p in sorted((DEPLOY / "rules").glob("*.yml")))


def test_provisioning_names_the_datasource_and_dashboard_directory() -> None:
    datasource = (GRAFANA / "provisioning" / "datasources" / "kpimon.yml").read_text()
    assert re.search(r"^\s+type: prometheus$", datasource, re.M)
    assert re.search(r"^\s+uid: kpimon-prometheus$", datasource, re.M)
    assert "url: ${KPIMON_PROMETHEUS_URL}" in datasource
    provider = (GRAFANA / "provisioning" / "dashboards" / "kpimon.yml").read_text()
    assert re.search(r"^\s+type: file$", provider, re.M)
    assert "path: ${KPIMON_GRAFANA_DASHBOARDS}" in provider
    assert "\t" not in datasource + provider
