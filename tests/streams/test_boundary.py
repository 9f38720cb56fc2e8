"""streams/ is the pure engine: no Faust, Kafka, Prometheus or HTTP, no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STREAMS = Path(__file__).resolve().parents[2] / "streams"
FORBIDDEN_MODULES = {
    "faust",
    "mode",
    "aiokafka",
    "kafka",
    "prometheus_client",
    "aiohttp",
    "http",
    "urllib",
    "requests",
    "socket",
    "agents",
    "time",
    "asyncio",
}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter"}


def modules() -> list[Path]:
    return sorted(STREAMS.glob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.name)
def test_streams_imports_nothing_impure(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.name)
def test_streams_never_reads_the_clock(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            assert node.func.attr not in CLOCK_CALLS, (
                f"{path.name}:{node.lineno} calls .{node.func.attr}()"
            )


def test_the_boundary_test_sees_every_module() -> None:
    assert {"engine.py", "events.py", "pchart.py", "oee.py"} <= {p.name for p in modules()}
