"""kpimon against a real Prometheus: scrape, rules, alerts, dashboard queries.

One stack per module: the embedded broker, a worker (subprocess, as in
production), and Prometheus scraping it every second and evaluating the
recording rules and a copy of the alert rules with every `for:` at 0s.
The simulator feeds a plant day and a half (a scrap drift on line-1 from
noon of the first day, one machine falling silent, a few bad messages).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import pytest

from devtools.simulator import SAMPLE_START_US, SilentMachine, SimConfig, simulate
from tests.agents.harness import ROOT, Deployment, Worker, make_deployment, produce, wait_for
from tests.agents.prometheus_harness import (
    DEPLOY,
    PrometheusError,
    PrometheusServer,
    dashboards,
    metric_names,
    panel_exprs,
    promtool,
    rules_for_test,
    tool,
    variable_exprs,
)

ENGINE = """
[engine.pchart]
baseline_n = 5

[[engine.targets]]
site = "plant-1"
line = "line-2"
oee = 0.5
mttr = "20m"

[engine.policies.A]
perfect_order = 0.9
"""
HOURS = 31.5  # to 07:30 of the second day: day 1 closes, day 2 has started
SILENT = "pack-3-4"

# Alert conditions that legitimately have no data in this run; each is
# only checked to parse here, and checked firing and not firing by
# `promtool test rules` (deploy/prometheus/tests/alerts_test.yml).
PARSE_ONLY = {
    "KpimonWorkerDown": "the worker is up while data are checked "
    "(test_worker_down_alert_fires_when_the_worker_stops covers it)",
    "KpimonConsumerLagGrowing": "the worker keeps up: lag never grows in a healthy run",
    "KpimonOEEBelowTarget": "the seeded plant's last closed hour is above the 60% target",
    "KpimonPerfectOrderBelowTarget": "whether a segment's day misses its target is chance",
    "KpimonEngineStateNearLimit": "the plant holds far fewer machines and orders than the limits",
    "KpimonLateData": "the simulated gateways have no outages: no machine event arrives late",
    "KpimonDataTooLate": "no event arrives behind the frontier, let alone the revision horizon",
    "KpimonOutputsUndelivered": "the broker accepts every output in a healthy run "
    "(tests/agents/test_dead_letters.py covers the gauge)",
    "KpimonMessagesLost": "nothing is lost in a healthy run (tests/agents/test_agents.py "
    "test_run_engine_counts_what_it_cannot_refill covers the counter)",
}


@dataclass
class Stack:
    dep: Deployment
    worker: Worker
    prometheus: PrometheusServer

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.dep.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return resp.read().decode()


def silence_from(hours: float) -> float:
    """When SILENT falls silent: just after a count of it, 2 h or more before the
    end, while it is running, so a running machine goes quiet (a stopped one may)."""
    plain = simulate(SimConfig(id_prefix="prom-"), 21, SAMPLE_START_US, hours * 3600)
    for e in plain:
        at_s = (datetime.fromisoformat(e["ts"]).timestamp() * 1e6 - SAMPLE_START_US) / 1e6
        late_enough = at_s >= (hours - 2) * 3600
        if late_enough and e.get("machine") == SILENT and e["type"] == "count":
            return at_s + 1
    raise AssertionError(f"{SILENT} makes nothing in the last 2 h")


def plant(hours: float) -> list[dict[str, Any]]:
    silent = SilentMachine(SILENT, from_s=silence_from(hours))
    config = SimConfig(id_prefix="prom-", silent_machine=silent)
    return list(simulate(config, 21, SAMPLE_START_US, hours * 3600))


def bad_messages(events: list[dict[str, Any]]) -> list[tuple[str, bytes, bytes]]:
    state = next(e for e in events if e["type"] == "state")
    return [
        ("machine_state", state["machine"].encode(), b'{"type": "state", "event_id": '),
        ("machine_state", state["machine"].encode(), orjson.dumps(dict(state, state="flying"))),
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, shared_broker: Any) -> Iterator[Stack]:
    tool("prometheus")
    tool("promtool")
    tmp = tmp_path_factory.mktemp("prometheus")
    dep = make_deployment(tmp, shared_broker, engine=ENGINE)
    worker = Worker(dep)
    prometheus = PrometheusServer(
        tmp / "prom", [f"127.0.0.1:{dep.web_port}"], rules_for_test(tmp / "rules")
    )
    try:
        worker.wait_started()
        prometheus.start()
        # Scraped once before any data, so counters start at 0 in Prometheus
        # and increase() sees the dead letters.
        wait_for(
            lambda: prometheus.query('kpimon_dead_letters_total{reason="schema"}'),
            60,
            "a first scrape of the worker",
        )
        events = plant(HOURS)
        produce(dep, events, raw=bad_messages(events))
        # Steady state: every event applied, so the values no longer change
        # (the next window closes only half an hour of wall time later).
        end_s = max(datetime.fromisoformat(e["ts"]).timestamp() for e in events)
        wait_for(
            lambda: prometheus.query(f"kpimon_watermark_timestamp_seconds >= {end_s}"),
            180,
            "the worker to apply every event (as scraped by Prometheus)",
            every=1.0,
        )
        yield Stack(dep, worker, prometheus)
    finally:
        prometheus.stop()
        worker.stop()


def has_data(prometheus: PrometheusServer, expr: str) -> bool:
    return bool(prometheus.query(expr))


def wait_all_have_data(stack: Stack, exprs: dict[str, str], timeout: float = 180) -> None:
    """Wait until every expression returns data; fail naming those that never did."""
    missing = dict(exprs)

    def done() -> bool:
        for name, expr in list(missing.items()):
            if has_data(stack.prometheus, expr):
                del missing[name]
        return not missing

    try:
        wait_for(done, timeout, "every expression to return data", every=1.0)
    except AssertionError:
        listing = "\n".join(f"  {k}: {v}" for k, v in missing.items())
        raise AssertionError(
            f"no data after {timeout:.0f}s from:\n{listing}\n{diagnosis(stack)}"
        ) from None


def diagnosis(stack: Stack) -> str:
    """What the worker says about its input: enough to tell lost from late from slow."""
    wanted = (
        "kpimon_late_events_total",
        "kpimon_events_total",
        "kpimon_dead_letters_total",
        "kpimon_watermark_timestamp_seconds",
        "kpimon_pchart_",
        "kpimon_open_orders",
        "kpimon_ope_ratio",
    )
    try:
        text = stack.metrics_text()
    except OSError as exc:
        return f"worker /metrics unreachable: {exc}"
    lines = [line for line in text.splitlines() if line.startswith(wanted)]
    log = stack.worker.log_path.read_text(errors="replace")[-3000:]
    return "worker metrics:\n" + "\n".join(lines) + "\nworker output:\n" + log


@pytest.mark.integration
def test_metrics_page_passes_promtool_check_metrics(stack: Stack) -> None:
    wait_for(
        lambda: 'kpimon_oee_ratio{line="line-1"' in stack.metrics_text(), 120, "OEE on /metrics"
    )
    checked = promtool("check", "metrics", stdin=stack.metrics_text())
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


@pytest.mark.integration
def test_every_recording_and_alert_rule_is_healthy_and_has_data(stack: Stack) -> None:
    rules = stack.prometheus.rules()
    names = {r["name"] for r in rules}
    assert set(PARSE_ONLY) <= names, "PARSE_ONLY names an alert that does not exist"
    exprs = {
        f"{r['type']} {r['name']} {r.get('labels') or ''}": r["query"]
        for r in rules
        if r["name"] not in PARSE_ONLY
    }
    wait_all_have_data(stack, exprs)
    for r in stack.prometheus.rules():
        assert r["health"] == "ok", f"{r['name']}: {r.get('lastError')}"
        if r["name"] in PARSE_ONLY:
            stack.prometheus.query(r["query"])  # raises on a parse error


@pytest.mark.integration
def test_dashboards_and_rules_use_only_metrics_the_worker_exports(stack: Stack) -> None:
    text = stack.metrics_text()
    exported = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    exported |= {name.removesuffix("_total") for name in exported} | {
        f"{name}_total" for name in exported
    }
    used: dict[str, set[str]] = {}
    for file, board in dashboards().items():
        for _, expr in panel_exprs(board) + variable_exprs(board):
            for name in metric_names(expr):
                used.setdefault(name, set()).add(file)
    for rule in stack.prometheus.rules():
        for name in metric_names(rule["query"]):
            used.setdefault(name, set()).add(f"rule {rule['name']}")
    unknown = {name: where for name, where in used.items() if name not in exported}
    assert not unknown, f"not on the worker's /metrics: {unknown}"
    samples = {line.split("{")[0].split()[0] for line in text.splitlines() if line[:1].isalpha()}
    assert set(used) <= samples, f"exported without samples: {set(used) - samples}"


@pytest.mark.integration
def test_pchart_alert_fires_on_the_scrap_drift(stack: Stack) -> None:
    chart = "scrap/plant-1/line-1"
    firing = wait_for(
        lambda: stack.prometheus.firing("KpimonPChartAboveUCL", chart=chart, window="1h"),
        180,
        f"KpimonPChartAboveUCL to fire for {chart}",
        every=1.0,
    )
    alert = firing[0]
    assert alert["labels"]["severity"] == "critical"
    assert chart in alert["annotations"]["description"]
    assert "upper control limit" in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"] == "docs/runbook.md#kpimonpchartaboveucl"
    # The charts of the lines without a drift do not alarm.
    assert not stack.prometheus.firing("KpimonPChartAboveUCL", chart="scrap/plant-1/line-2")


@pytest.mark.integration
def test_silent_machine_and_dead_letter_alerts_fire(stack: Stack) -> None:
    silent = wait_for(
        lambda: stack.prometheus.firing("KpimonMachineSilent"), 180, "KpimonMachineSilent"
    )
    assert {a["labels"]["machine"] for a in silent} == {SILENT}
    letters = wait_for(
        lambda: stack.prometheus.firing("KpimonDeadLettersRising"), 180, "KpimonDeadLettersRising"
    )
    assert {a["labels"]["reason"] for a in letters} == {"undecodable", "schema"}
    assert not stack.prometheus.firing("KpimonWorkerDown")


@pytest.mark.integration
def test_parse_errors_are_reported(stack: Stack) -> None:
    with pytest.raises(PrometheusError, match="parse"):
        stack.prometheus.query("sum by (site (kpimon_oee_ratio)")


@pytest.mark.integration
def test_worker_down_alert_fires_when_the_worker_stops(stack: Stack) -> None:
    # Last in the module: it stops the worker.
    stack.worker.stop()
    down = wait_for(
        lambda: stack.prometheus.firing("KpimonWorkerDown"), 60, "KpimonWorkerDown to fire"
    )
    assert down[0]["labels"]["instance"] == f"127.0.0.1:{stack.dep.web_port}"


def test_promtool_check_and_test_rules() -> None:
    rules = [str(p) for p in sorted((DEPLOY / "rules").glob("*.yml"))]
    checked = promtool("check", "rules", *rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = [str(p) for p in sorted((DEPLOY / "tests").glob("*.yml"))]
    assert tests
    tested = promtool("test", "rules", *tests)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    config = promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def alert_blocks() -> dict[str, str]:
    """Alert name -> its text in alerts.yml (from its `- alert:` to the next)."""
    text = (DEPLOY / "rules" / "alerts.yml").read_text()
    parts = re.split(r"(?m)^\s+- alert: (\w+)\n", text)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_for_severity_annotations_and_a_runbook_section() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    sections = {anchor(h) for h in re.findall(r"(?m)^## (.+)$", runbook)}
    blocks = alert_blocks()
    assert len(blocks) >= 8
    for name, block in blocks.items():
        assert re.search(r"(?m)^\s+for: \d+[smh]$", block), f"{name}: no for:"
        assert re.search(r"(?m)^\s+severity: (critical|warning)$", block), f"{name}: severity"
        for key in ("summary", "description"):
            assert re.search(rf"(?m)^\s+{key}: ", block), f"{name}: no {key}"
        url = re.search(r'(?m)^\s+runbook_url: "docs/runbook.md#([\w-]+)"$', block)
        assert url and url[1] == anchor(name) and url[1] in sections, f"{name}: runbook_url"
    assert sections == {anchor(n) for n in blocks}, "one runbook section per alert, no more"


def test_promtool_unit_tests_cover_every_alert_firing_and_not() -> None:
    text = "".join(p.read_text() for p in sorted((DEPLOY / "tests").glob("*.yml")))
    cases = re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", text)
    firing = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}
    assert firing == quiet == set(alert_blocks())


def test_alertmanager_example_is_valid() -> None:
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool not found (Debian package prometheus-alertmanager)")
    config = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    checked = subprocess.run(
        [amtool, "check-config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
