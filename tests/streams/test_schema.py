"""The committed JSON Schemas match the models, and accept the contract's examples."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from streams.events import TOPIC_MODELS, event_type
from streams.schema import json_schemas, schema_files, write_schemas
from tests.streams.test_events import CONTRACT_EXAMPLES, SOURCES

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
REGENERATE = (
    "regenerate them with `kpimon schema --write schemas/` (or `python -m streams.schema schemas/`)"
)


def test_one_schema_per_input_topic() -> None:
    assert sorted(json_schemas()) == ["machine-state", "orders", "shipments"]


@pytest.mark.parametrize("name", sorted(schema_files()))
def test_committed_schema_is_current(name: str) -> None:
    path = SCHEMA_DIR / name
    assert path.exists(), f"{path} is missing; {REGENERATE}"
    assert path.read_text(encoding="utf-8") == schema_files()[name], (
        f"{path} is out of date with streams/events.py; {REGENERATE}"
    )


def test_no_stale_schema_files() -> None:
    committed = {p.name for p in SCHEMA_DIR.glob("*.schema.json")}
    assert committed == set(schema_files()), f"stale or missing schema files; {REGENERATE}"


def test_write_schemas_writes_what_json_schemas_gives(tmp_path: Path) -> None:
    paths = write_schemas(tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(schema_files())
    for path in paths:
        assert path.read_text(encoding="utf-8") == schema_files()[path.name]
        assert path.read_text(encoding="utf-8").endswith("}\n")


@pytest.mark.parametrize("topic", sorted(TOPIC_MODELS))
def test_schema_takes_an_event_or_a_batch_of_the_topic_types(topic: str) -> None:
    schema = json_schemas()[topic]
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == f"kpimon {topic} message"
    assert [branch["title"] for branch in schema["anyOf"]] == ["Event", "Batch"]
    for model in TOPIC_MODELS[topic]:
        definition = schema["$defs"][model.__name__]
        assert definition["properties"]["type"]["const"] == event_type(model)
        assert definition["required"][0] == "type"  # required on the wire despite its default
        assert definition["additionalProperties"] is False
        assert definition["description"]


# ---------------------------------------------------------------- with jsonschema, if installed


@pytest.fixture(scope="module")
def validators() -> dict[str, Any]:
    jsonschema = pytest.importorskip("jsonschema")
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    return {
        topic: jsonschema.Draft202012Validator(schema, format_checker=checker)
        for topic, schema in json_schemas().items()
    }


@pytest.mark.parametrize("name", CONTRACT_EXAMPLES)
def test_contract_example_validates(validators: dict[str, Any], name: str) -> None:
    validator = validators[SOURCES[name]]
    validator.validate(CONTRACT_EXAMPLES[name])
    validator.validate([CONTRACT_EXAMPLES[name], CONTRACT_EXAMPLES[name]])


def _broken(name: str, **changes: Any) -> dict[str, Any]:
    event = {**copy.deepcopy(CONTRACT_EXAMPLES[name]), **changes}
    return {k: v for k, v in event.items() if v is not ...}


@pytest.mark.parametrize(
    ("name", "event"),
    [
        ("naive ts", _broken("state", ts="2026-11-22T06:00:00")),
        ("unknown field", _broken("count", colour="red")),
        ("missing type", _broken("order_closed", type=...)),
        ("empty lines", _broken("order", lines=[])),
        ("bool for int", _broken("count", total=True)),
    ],
)
def test_schema_rejects_what_the_decoder_rejects(
    validators: dict[str, Any], name: str, event: dict[str, Any]
) -> None:
    source = SOURCES[event.get("type", "order_closed")]
    assert not validators[source].is_valid(event), name
