"""Grafana dashboards and provisioning: valid, consistent, built on metrics the
worker exports, coloured by the targets the alerts use, and showing data in
every panel with the default variables, from a real Prometheus scraping a live
worker (the stack of tests/agents/test_prometheus.py, built again for this
module). Grafana itself is not packaged for Debian: its part, substituting
variables and repeating panels, is done here as Grafana does it."""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from itertools import combinations
from typing import Any

import pytest

from agents.app import Runtime
from agents.metrics import make_registry
from agents.pipeline import Shard
from agents.settings import Settings
from devtools.simulator import SAMPLE_START_US, SimConfig, simulate
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from tests.agents.harness import ROOT, wait_for
from tests.agents.prometheus_harness import (
    BUILTINS,
    DEPLOY,
    RANGE_S,
    STEP_S,
    PrometheusServer,
    dashboards,
    default_values,
    metric_names,
    panel_exprs,
    rule_names,
    substitute,
    variable_exprs,
)
from tests.agents.test_prometheus import Stack, stack  # noqa: F401 (this module's own stack)
from tests.streams.helpers import run_events

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
    found, todo = [], list(board["panels"])
    while todo:
        panel = todo.pop(0)
        todo += panel.get("panels", [])
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
def test_variables_are_defined_with_defaults_and_plant_ones_present(name: str) -> None:
    board = BOARDS[name]
    defined = set(variables(board)) | set(BUILTINS)
    texts = [e for _, e in panel_exprs(board)] + [e for _, e in variable_exprs(board)]
    texts += [p["title"] for p in panels(board)]
    used = {m[0] or m[1] for t in texts for m in re.findall(r"\$\{(\w+)\}|\$(\w+)", t)}
    assert used <= defined, f"undefined variables {used - defined}"
    assert used - {"datasource"} <= set(default_values(board)), "a variable has no default"
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


def cases(panel: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Series -> its targets: a refId `<series>__<case>` is one case of a series
    split by a condition (below or at its target, in or out of control); any
    other target is a series of its own."""
    found: dict[str, list[dict[str, Any]]] = {}
    for t in panel.get("targets", []):
        found.setdefault(t["refId"].split("__")[0], []).append(t)
    return found


def missed_target_exprs(board: str, title: str) -> list[str]:
    panel = next(p for p in panels(BOARDS[board]) if p["title"] == title)
    return [t["expr"] for t in panel["targets"] if t["refId"].endswith("__missed_target")]


@pytest.mark.parametrize("name", ["wall.json", "orders.json"])
def test_no_fixed_colour_bands_on_the_wall_and_orders(name: str) -> None:
    """Colours come from the targets (a case per colour), never from a fixed percentage."""
    for panel in panels(BOARDS[name]):
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert len(steps) == 1, f"{panel['title']}: fixed thresholds {steps}"


@pytest.mark.parametrize(
    ("board", "title", "alert", "rule"),
    [
        ("wall.json", "OEE per line - this hour", "KpimonOEEBelowTarget", "line:kpimon_oee_target:ratio"),
        ("wall.json", "OEE per line - last closed", "KpimonOEEBelowTarget", "line:kpimon_oee_target:ratio"),
        ("wall.json", "Perfect orders - today", "KpimonPerfectOrderBelowTarget", "segment:kpimon_perfect_order_target:ratio"),
        ("orders.json", "Perfect-order rate - current", "KpimonPerfectOrderBelowTarget", "segment:kpimon_perfect_order_target:ratio"),
        ("orders.json", "Perfect-order rate - last closed", "KpimonPerfectOrderBelowTarget", "segment:kpimon_perfect_order_target:ratio"),
    ],
)  # fmt: skip
def test_target_colours_use_the_alerts_target(
    board: str, title: str, alert: str, rule: str
) -> None:
    alerts = (DEPLOY / "rules" / "alerts.yml").read_text()
    block = alerts.split(f"- alert: {alert}\n")[1].split("- alert:")[0]
    assert (
        f"< on ({'site, line' if 'oee' in rule else 'direction, segment'}) group_left () {rule}"
        in block
    )
    (expr,) = missed_target_exprs(board, title)
    assert expr.endswith(
        f" < on ({'site, line' if 'oee' in rule else 'direction, segment'}) group_left () {rule}"
    )


@pytest.fixture(scope="module")
def exported_names() -> set[str]:
    """Metric names with samples from a collector over a simulated day (no broker)."""
    engine = Engine(EngineConfig(windows=["1h", "1d"], pchart={"baseline_n": 5}))
    events = simulate(SimConfig(id_prefix="d-"), 3, SAMPLE_START_US, 26 * 3600)
    run_events(engine, (parse_event(e) for e in events))
    targets = {"targets": [{"site": "plant-1", "line": "line-1", "oee": 0.6, "mttr": "20m"}]}
    runtime = Runtime(Settings(engine=EngineConfig(**targets)), embedded=True)
    shard = Shard(engine.config, 30_000_000)
    shard.engine = engine
    runtime.shards[0] = shard
    runtime.last_event_wall["machine-state"] = 1.0
    runtime.ingested[("machine-state", 0)] = 0  # read from offset 0: a lag is known
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


# -- every panel shows data, from a real Prometheus ---------------------------------
def regex_escape(value: str) -> str:
    """A single value in a regex matcher, as Grafana's Prometheus datasource escapes it."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\1", value)


def label_values(prometheus: PrometheusServer, expr: str) -> list[str]:
    """A variable's options: its `group by (label) (selector)` form, run."""
    label = re.match(r"group by \((\w+)\)", expr)[1]  # type: ignore[index]
    return sorted({r["metric"].get(label, "") for r in prometheus.query(expr)} - {""})


def has_data(
    prometheus: PrometheusServer, target: dict[str, Any], values: dict[str, str], now: float
) -> bool:
    expr = substitute(target["expr"], values)
    if target.get("instant"):
        return bool(prometheus.query(expr))
    return bool(prometheus.query_range(expr, now - RANGE_S, now, STEP_S))


def empty_panels(prometheus: PrometheusServer) -> list[str]:
    """What Grafana would show empty on opening each dashboard as saved: a
    variable without options, a saved value it does not offer, and a series
    (any case of it) of a panel, or of one repetition of a repeated panel,
    without data."""
    now = time.time()
    empty = []
    for file, board in BOARDS.items():
        values = default_values(board)
        options = {}
        for name, expr in variable_exprs(board):
            options[name] = label_values(prometheus, substitute(expr, values))
            var = variables(board)[name]
            if not options[name]:
                empty.append(f"{file}: variable ${name} has no values")
            elif not var["multi"] and values[name] not in options[name]:
                empty.append(f"{file}: ${name} = {values[name]!r} not among {options[name]}")
        for panel in panels(board):
            repeat = panel.get("repeat")
            instances = [("", values)]
            if repeat:
                instances = [
                    (f" [{repeat}={v}]", {**values, repeat: regex_escape(v)})
                    for v in options[repeat]
                ]
            for where, vals in instances:
                for series, targets in cases(panel).items():
                    if not any(has_data(prometheus, t, vals, now) for t in targets):
                        exprs = "; ".join(substitute(t["expr"], vals) for t in targets)
                        empty.append(f"{file} {panel['title']!r}{where} {series}: {exprs}")
    return empty


@pytest.mark.integration
def test_every_panel_shows_data_with_the_default_variables(stack: Stack) -> None:  # noqa: F811
    found: list[str] = []

    def none_empty() -> bool:
        found[:] = empty_panels(stack.prometheus)
        return not found

    try:
        wait_for(none_empty, 180, "every panel to show data", every=2.0)
    except AssertionError:
        raise AssertionError("empty with the default variables:\n" + "\n".join(found)) from None
    repeated = [p for b in BOARDS.values() for p in panels(b) if p.get("repeat")]
    assert len(repeated) == 2


@pytest.mark.integration
def test_target_colours_judge_as_the_alerts_do(stack: Stack) -> None:  # noqa: F811
    """The red case of the wall's closed OEE and the orders' closed perfect-order
    rate holds exactly the series the alert conditions hold."""
    alerts = {r["name"]: r["query"] for r in stack.prometheus.rules() if r["type"] == "alerting"}
    for board, title, alert, window in (
        ("wall.json", "OEE per line - last closed", "KpimonOEEBelowTarget", "1h"),
        ("orders.json", "Perfect-order rate - last closed", "KpimonPerfectOrderBelowTarget", "1d"),
    ):
        values = {**default_values(BOARDS[board]), "window": window, "order_window": window}
        (expr,) = missed_target_exprs(board, title)
        red = {
            tuple(sorted(r["metric"].items()))
            for r in stack.prometheus.query(substitute(expr, values))
        }
        firing = {tuple(sorted(r["metric"].items())) for r in stack.prometheus.query(alerts[alert])}
        assert red == firing, (title, red, firing)
