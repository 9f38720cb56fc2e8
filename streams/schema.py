"""JSON Schema of each input topic's message value, generated from streams.events.

A message value is one event or a JSON array of events (a batch) of the
topic's types. Producers validate against `schemas/<topic>.schema.json`; a
test keeps those files equal to what the models generate, so regenerate them
(`kpimon schema --write schemas/`) whenever a model changes.
"""

from __future__ import annotations

import json
import sys
from functools import reduce
from operator import or_
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from streams.events import TOPIC_MODELS, event_type

DRAFT = "https://json-schema.org/draft/2020-12/schema"

_TOPIC_DESCRIPTIONS = {
    "machine-state": "Machine state changes and production counts; key: machine id, or "
    "<site>/<line> for a gateway batch of that line's machines.",
    "orders": "Customer and purchase orders, their amendments, cancellations and closings; "
    "key: order id.",
    "shipments": "Deliveries against orders; key: order id.",
}


def topic_schema(topic: str) -> dict[str, Any]:
    """The JSON Schema of one input topic's message value (an event or a batch of them)."""
    models = TOPIC_MODELS[topic]
    one: Any = models[0]
    if len(models) > 1:
        one = Annotated[reduce(or_, models), Field(discriminator="type")]
    body = TypeAdapter(Union[one, list[one]]).json_schema()  # noqa: UP007 (Annotated has no `|`)
    single, batch = body["anyOf"]
    types = ", ".join(event_type(m) for m in models)
    single.update(title="Event", description=f"One event: {types}.")
    batch.update(
        title="Batch", description="Events of the message key, in order (per machine, if several)."
    )
    return {
        "$schema": DRAFT,
        "title": f"kpimon {topic} message",
        "description": (
            f"{_TOPIC_DESCRIPTIONS[topic]} Timestamps are RFC 3339 with an explicit offset. "
            "Not expressible here, also checked by kpimon: good <= total, damaged_qty <= qty, "
            "unique line_no within an event."
        ),
        **body,
    }


def json_schemas() -> dict[str, dict[str, Any]]:
    """Input topic kind ("machine-state", "orders", "shipments") -> its JSON Schema."""
    return {topic: topic_schema(topic) for topic in TOPIC_MODELS}


def schema_text(schema: dict[str, Any]) -> str:
    """The committed file form: pretty-printed, sorted keys, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def schema_files() -> dict[str, str]:
    """File name (`<topic>.schema.json`) -> file text, for every input topic."""
    return {f"{topic}.schema.json": schema_text(s) for topic, s in json_schemas().items()}


def write_schemas(directory: str | Path) -> list[Path]:
    """Write every topic's schema file into `directory`; returns the paths written."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in schema_files().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":  # python -m streams.schema schemas/
    for written in write_schemas(sys.argv[1] if len(sys.argv) > 1 else "schemas"):
        print(written)
