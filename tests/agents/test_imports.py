"""The worker reads alone: no module of agents/ imports the development tools
(devtools/) when it is imported; the CLI imports them inside the commands
that need them."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import agents


def test_no_agents_module_imports_devtools() -> None:
    modules = [f"agents.{info.name}" for info in pkgutil.iter_modules(agents.__path__)]
    assert "agents.cli" in modules and "agents.worker" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "from agents.cli import build_parser\n"
        "for command in ('worker', 'replay x', 'config', 'schema'):\n"
        "    build_parser().parse_args(command.split())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'devtools'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout
