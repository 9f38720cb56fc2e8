"""A real Prometheus server and promtool for tests (Debian's `prometheus` package).

`scripts/env.sh` installs the package when it runs as root; without it,
tests that need it skip with the reason. The server runs as a subprocess
on a free loopback port with a generated configuration, keeps its data in
the test's temporary directory, and is queried over its HTTP API.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.agents.harness import ROOT, free_port, wait_for

DEPLOY = ROOT / "deploy" / "prometheus"
RULE_FILES = (DEPLOY / "rules" / "recording.yml", DEPLOY / "rules" / "alerts.yml")
DASHBOARDS = ROOT / "grafana" / "dashboards"

METRIC_NAME = re.compile(r"(?<![\w:])(kpimon_[a-z0-9_]+)(?![\w:(])")
RULE_NAME = re.compile(r"(?<![\w:])([a-z_]+:[a-z0-9_:]*[a-z0-9_])(?![\w:(])")


def tool(name: str) -> str:
    """The path of a Prometheus binary, or skip the test saying why."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(
            f"{name} not found: install Debian's prometheus package "
            "(scripts/env.sh does when run as root)"
        )
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def rules_for_test(directory: Path) -> list[Path]:
    """Copies of the rule files with every `for:` set to 0s, so alerts fire
    on the first evaluation where their condition holds."""
    directory.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in RULE_FILES:
        text = re.sub(r"(?m)^(\s+)for: \S+", r"\1for: 0s", path.read_text())
        copy = directory / path.name
        copy.write_text(text)
        copies.append(copy)
    return copies


def metric_names(expr: str) -> set[str]:
    """kpimon metric names an expression reads (not recording-rule names)."""
    return set(METRIC_NAME.findall(expr))


def rule_names(expr: str) -> set[str]:
    """Recording-rule names (level:metric:operation) an expression reads."""
    return set(RULE_NAME.findall(expr))


class PrometheusError(RuntimeError):
    pass


class PrometheusServer:
    """`prometheus` scraping `targets` every `interval`, evaluating `rule_files`."""

    def __init__(
        self,
        workdir: Path,
        targets: Iterable[str],
        rule_files: Iterable[Path] = (),
        *,
        job: str = "kpimon",
        interval: str = "1s",
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        config = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "scrape_timeout": interval,
                    "static_configs": [{"targets": list(targets)}],
                }
            ],
        }
        # JSON is YAML: no YAML library needed.
        self.config.write_text(json.dumps(config, indent=2))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> PrometheusServer:
        checked = promtool("check", "config", str(self.config))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_for(ready, timeout, "prometheus to be ready")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self._log.close()

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a success, else PrometheusError."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result (a vector, or a scalar as one element)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """A range query's series."""
        data = self.api("query_range", query=expr, start=str(start), end=str(end), step=str(step))
        return data["result"]

    def rules(self) -> list[dict[str, Any]]:
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def firing(self, alertname: str, **labels: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.alerts()
            if a["state"] == "firing"
            and a["labels"].get("alertname") == alertname
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]


# -- Grafana dashboards ------------------------------------------------------------
def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> parsed dashboard JSON."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel, rows included."""
    found = []
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack += panel.get("panels", [])
        for t in panel.get("targets", []):
            found.append((panel["title"], t["expr"]))
    return found


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def variable_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(variable name, an equivalent PromQL) of every query variable:
    label_values(sel, label) is `group by (label) (sel)`."""
    found = []
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = LABEL_VALUES.match(query.strip())
        assert m and m["selector"], f"variable {var['name']}: unsupported query {query!r}"
        found.append((var["name"], f"group by ({m['label']}) ({m['selector']})"))
    return found


# Grafana's built-in variables as the dashboard test sets them: queries run
# over the last RANGE_S seconds at a step of STEP_S (the stack holds a few
# minutes of data), and $__interval is that step, as in Grafana.
RANGE_S, STEP_S = 3600, 5
BUILTINS = {"__rate_interval": "1m", "__interval": f"{STEP_S}s", "__range": f"{RANGE_S}s"}


def default_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """What Grafana substitutes when the dashboard opens as saved: a
    multi-value variable at "All" is its allValue, a single one its value."""
    values = dict(BUILTINS)
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        current = var.get("current") or {}
        if var.get("includeAll") and current.get("value") == ["$__all"]:
            values[var["name"]] = var["allValue"]
        else:
            assert isinstance(current.get("value"), str), f"${var['name']} has no default"
            values[var["name"]] = current["value"]
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace $var and ${var} as Grafana would; an unknown variable fails."""

    def value(m: re.Match[str]) -> str:
        name = m["braced"] or m["plain"]
        if name not in values:
            raise KeyError(f"no test value for dashboard variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$(?:\{(?P<braced>\w+)\}|(?P<plain>\w+))", value, expr)
