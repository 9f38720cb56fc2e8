"""/kpi's body (`agents.web.kpi_json`): the views of every shard, written in chunks."""

from __future__ import annotations

from typing import Any

import orjson

from agents.pipeline import Shard
from agents.runtime import Runtime, pipeline_stats
from agents.settings import Settings
from agents.web import kpi_json
from devtools.simulator import SAMPLE_START_US, SimConfig, simulate
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from tests.streams.helpers import run_events


def plant(seed: int, hours: float) -> Engine:
    engine = Engine(EngineConfig(windows=["1m", "1h", "1d"]))
    events = simulate(SimConfig(id_prefix=f"s{seed}-"), seed, SAMPLE_START_US, int(hours * 3600))
    run_events(engine, (parse_event(e) for e in events))
    return engine


def without_uptime(body: dict[str, Any]) -> dict[str, Any]:
    body["pipeline"].pop("uptime_s")
    return body


def test_the_chunked_body_is_the_views_and_the_pipeline_as_json() -> None:
    runtime = Runtime(Settings(), embedded=True)
    for partition, engine in ((3, plant(5, 2.5)), (0, plant(6, 1.2))):
        shard = Shard(engine.config, 30_000_000)
        shard.engine = engine
        runtime.shards[partition] = shard
    runtime.consumed["machine-state"] += 7
    chunks = list(kpi_json(runtime, chunk_bytes=4096))
    assert len(chunks) > 5
    body = orjson.loads(b"".join(chunks))
    expected = {"shards": runtime.views(), "pipeline": pipeline_stats(runtime)}
    assert [s["partition"] for s in body["shards"]] == [0, 3]
    assert all(s["current"] for s in body["shards"])
    assert without_uptime(body) == without_uptime(orjson.loads(orjson.dumps(expected)))


def test_no_shard_is_an_empty_list_of_shards() -> None:
    runtime = Runtime(Settings(), embedded=True)
    body = orjson.loads(b"".join(kpi_json(runtime)))
    assert body["shards"] == [] and body["pipeline"]["consumed"] == {}
