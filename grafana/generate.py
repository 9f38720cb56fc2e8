"""Build kpimon's Grafana dashboards (grafana/dashboards/*.json).

    python grafana/generate.py        # rewrite the JSON files

The JSON files are committed (Grafana provisions them as they are); this
script is their source, so every panel uses the same datasource variable,
colours and thresholds. tests/agents/test_dashboards.py checks that the
committed files are what this script writes.

One module per dashboard (board_wall.py, board_pchart.py, board_orders.py,
board_pipeline.py); the builders, shared selectors and colours are in
panels.py.

Conventions: every panel queries `${datasource}`; multi-value variables
(site, line, machine, segment, direction, chart, order_chart, job,
instance) are used with `=~`; single-value ones (window, day_window,
order_window, chain_window) with `=`. No fixed colour bands for a KPI
with a target: a value is queried once per case against the target in
force, the one the alerts use (panels.against_target), each case a refId
`<series>__<case>` coloured by an override: red below the target (above,
for MTTR), green at or above it, blue where none is configured. KPIs
without targets are drawn in one colour.
"""

from __future__ import annotations

import json
from pathlib import Path

from board_orders import orders
from board_pchart import pchart
from board_pipeline import pipeline
from board_wall import wall

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

DASHBOARDS = {"wall": wall, "pchart": pchart, "orders": orders, "pipeline": pipeline}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        f"{name}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
