"""The Prometheus collector: every sample is a record's value, at scrape time.

No broker here: engines run in-process, a `Runtime` holds them as a worker
would, and each test builds a fresh `CollectorRegistry` and reads values
with `get_sample_value`.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from datetime import datetime
from typing import Any

import prometheus_client
import pytest
from faust.exceptions import ConsumerNotStarted
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from agents.app import Runtime
from agents.metrics import (
    CHAIN_VALUES,
    OEE_VALUES,
    ORDER_VALUES,
    PCHART_VALUES,
    RECORD_FAMILIES,
    SAFETY_STOCK_DAYS,
    SAFETY_STOCK_VALUES,
    Families,
    KpimonCollector,
    input_highwater,
    make_registry,
)
from agents.pipeline import Shard
from agents.settings import Settings
from devtools.simulator import SAMPLE_START_US, SimConfig, simulate
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.live import current_windows
from streams.metrics_view import (
    consumer_lag,
    engine_counters,
    machine_status,
    window_close_delay_us,
)
from tests.agents.prometheus_harness import promtool
from tests.eventfactory import at, count, order, shipment, state
from tests.streams.helpers import run_events

SETTINGS = Settings()


def runtime_with(*engines: Engine) -> Runtime:
    runtime = Runtime(SETTINGS, embedded=True)
    for partition, engine in enumerate(engines):
        shard = Shard(engine.config, 30_000_000)
        shard.engine = engine
        runtime.shards[partition] = shard
    return runtime


def registry_of(runtime: Runtime, highwater: dict[Any, Any] | None = None) -> CollectorRegistry:
    return make_registry(runtime, lambda: highwater or {})


def run(events: list[dict[str, Any]], **config: Any) -> Engine:
    engine = Engine(EngineConfig(**{"windows": ["1h", "1d"], **config}))
    run_events(engine, (parse_event(e) for e in events))
    return engine


@pytest.fixture(scope="module")
def plant_engine() -> Engine:
    """A simulated plant a day and a bit: closed hours and a closed day, all KPIs."""
    events = simulate(SimConfig(id_prefix="m-"), 5, SAMPLE_START_US, 26 * 3600)
    return run(list(events), allowed_lateness="5m", pchart={"baseline_n": 5})


# -- values ------------------------------------------------------------------------
def test_worked_example_oee_closed_and_current() -> None:
    #   06:00            06:48      07:00            07:30
    #     |running 48m....|down 12m..|running.........| watermark
    #   closed 1h [06,07): A 80%, P 80% (1000 x 2.304 s / 2880 s), Q 95%: OEE 60.8%
    engine = run(
        [
            state(at(6), "running"),
            count(at(6.8), total=1000, good=950, ideal_cycle_s=2.304),
            state(at(6.8), "down", reason="jam"),
            state(at(7), "running"),
            state(at(7.5), "running"),
        ],
        allowed_lateness="0s",
        heartbeat_timeout="2h",
    )
    registry = registry_of(runtime_with(engine))
    closed = {
        "scope": "machine",
        "site": "plant-1",
        "line": "line-1",
        "machine": "press-1",
        "window": "1h",
        "state": "closed",
    }
    value = registry.get_sample_value
    assert value("kpimon_oee_ratio", closed) == pytest.approx(0.608)
    assert value("kpimon_availability_ratio", closed) == pytest.approx(0.8)
    assert value("kpimon_performance_ratio", closed) == pytest.approx(0.8)
    assert value("kpimon_quality_ratio", closed) == pytest.approx(0.95)
    assert value("kpimon_planned_seconds", closed) == 3600
    assert value("kpimon_running_seconds", closed) == 2880
    assert value("kpimon_ideal_seconds", closed) == pytest.approx(2304)
    assert value("kpimon_units", {**closed, "kind": "good"}) == 950
    assert value("kpimon_units", {**closed, "kind": "total"}) == 1000
    assert value("kpimon_time_seconds", {**closed, "bucket": "down"}) == 720
    assert value("kpimon_downtime_seconds", {**closed, "reason": "jam"}) == 720
    assert value("kpimon_failures", closed) == 1
    # Roll-ups carry empty machine (line) or empty line and machine (site).
    line = {**closed, "scope": "line", "machine": ""}
    site = {**line, "scope": "site", "line": ""}
    assert (
        value("kpimon_oee_ratio", line) == value("kpimon_oee_ratio", site) == pytest.approx(0.608)
    )
    # The open hour [07:00, 07:30): running, no units yet, so no quality and no OEE.
    current = {**closed, "state": "current"}
    assert value("kpimon_availability_ratio", current) == 1.0
    assert value("kpimon_running_seconds", current) == 1800
    assert value("kpimon_quality_ratio", current) is None
    assert value("kpimon_oee_ratio", current) is None


def samples(registry: CollectorRegistry) -> list[Any]:
    return [s for family in registry.collect() for s in family.samples]


def series_of(record: dict[str, Any], state_: str) -> tuple[dict[str, str], dict[str, Any]]:
    """The labels of a record's series and its field -> (metric, help) table."""
    kind = record["kpi"]
    if kind == "oee":
        keys = {k: record.get(k, "") for k in ("scope", "site", "line", "machine")}
        return {**keys, "window": record["window"], "state": state_}, OEE_VALUES
    if kind == "perfect_order":
        keys = {k: record[k] for k in ("direction", "segment", "window")}
        return {**keys, "state": state_}, ORDER_VALUES
    if kind == "pchart":
        return {"chart": record["chart"], "window": record["window"]}, PCHART_VALUES
    if kind == "chain":
        return {"window": record["window"]}, CHAIN_VALUES
    assert kind == "safety_stock", kind
    return {"sku": record["sku"], "window": record["window"]}, SAFETY_STOCK_VALUES


def test_every_record_value_is_exported_as_is(plant_engine: Engine) -> None:
    registry = registry_of(runtime_with(plant_engine))
    value = registry.get_sample_value
    records = [(r, "closed") for r in plant_engine.last_closed.values()]
    records += [(r, "current") for r in current_windows(plant_engine)]
    kinds = Counter(r["kpi"] for r, _ in records)
    assert (
        set(kinds)
        == set(RECORD_FAMILIES)
        == {
            "oee",
            "perfect_order",
            "pchart",
            "chain",
            "safety_stock",
        }
    )
    for record, state_ in records:
        labels, table = series_of(record, state_)
        for field, (name, _) in table.items():
            assert value(name, labels) == record[field], (name, labels)
        if record["kpi"] == "pchart":
            for rule in ("WE1", "WE2", "WE3", "WE4"):
                expected = 1.0 if rule in record["violations"] else 0.0
                assert value("kpimon_pchart_out_of_control", {**labels, "rule": rule}) == expected


def test_safety_stock_records_are_exported_without_a_worker() -> None:
    #   day        0          1          2          3    | 4: the tick closes day 3
    #   demand    10 (SO-1)  14 (SO-2)   0          0         SKU-1, outbound
    #   PO-1       |-------- 2 d ------->|                    lead times 2 and 3 days
    #   PO-2       |----------- 3 d ------------>|
    events = [
        order("SO-1", at(9), at(12, day=1), qty=10),
        order("SO-2", at(9, day=1), at(12, day=2), qty=14),
        order("PO-1", at(6), at(6, day=5), qty=50, direction="inbound"),
        order("PO-2", at(12), at(12, day=5), qty=50, direction="inbound"),
        shipment("PO-1", at(6, day=2), qty=50, direction="inbound"),
        shipment("PO-2", at(12, day=3), qty=50, direction="inbound"),
        state(at(0, day=4), "idle", machine="clock"),
    ]
    stock = {"horizon": "7d", "min_demand_days": 2, "min_lead_time_samples": 2}
    engine = run(sorted(events, key=lambda e: e["ts"]), allowed_lateness="0s", safety_stock=stock)
    record = next(r for r in engine.last_closed.values() if r["kpi"] == "safety_stock")
    assert (record["sku"], record["window"], record["start"]) == ("SKU-1", "1d", at(0, day=3))
    assert record["status"] == "ok" and record["lead_time_samples"] == 2

    value = registry_of(runtime_with(engine)).get_sample_value
    labels = {"sku": "SKU-1", "window": "1d"}
    for field, (name, _) in SAFETY_STOCK_VALUES.items():
        assert value(name, labels) == pytest.approx(record[field]), name
    assert value("kpimon_safety_stock_units", labels) > 0
    # Lead times are kept in days in the record, exported in seconds: 2.5 d, sd 0.5^0.5 d.
    assert set(SAFETY_STOCK_DAYS) == {"mean_lead_time_days", "sd_lead_time_days"}
    assert value("kpimon_safety_stock_lead_time_mean_seconds", labels) == 2.5 * 86_400
    assert value("kpimon_safety_stock_lead_time_sd_seconds", labels) == pytest.approx(
        0.5**0.5 * 86_400
    )
    assert value("kpimon_safety_stock_samples", {**labels, "kind": "demand_days"}) == 4
    assert value("kpimon_safety_stock_samples", {**labels, "kind": "lead_times"}) == 2
    assert value("kpimon_safety_stock_insufficient_data", labels) == 0
    end = datetime.fromisoformat(at(0, day=4)).timestamp()
    assert value("kpimon_safety_stock_window_end_timestamp_seconds", labels) == end


def test_insufficient_data_has_no_safety_stock_sample(plant_engine: Engine) -> None:
    # The simulator's customers buy SKU-..., its purchase orders are for RM-...
    value = registry_of(runtime_with(plant_engine)).get_sample_value
    records = [r for r in plant_engine.last_closed.values() if r["kpi"] == "safety_stock"]
    assert records and {r["status"] for r in records} == {"insufficient_data"}
    for r in records:
        labels = {"sku": r["sku"], "window": r["window"]}
        assert value("kpimon_safety_stock_units", labels) is None
        assert value("kpimon_reorder_point_units", labels) is None
        assert value("kpimon_safety_stock_insufficient_data", labels) == 1


def test_a_record_kind_without_metrics_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    engine = run([state(at(6), "running")])
    engine.last_closed["future|x"] = {"kpi": "future_kind", "window": "1h", "start": at(6)}
    registry = registry_of(runtime_with(engine))
    with caplog.at_level(logging.WARNING, logger="kpimon"):
        samples(registry)
        samples(registry)
    said = [r.getMessage() for r in caplog.records if "future_kind" in r.getMessage()]
    assert said == ["metrics: records of kind 'future_kind' are not handled here (left out)"]
    assert registry.get_sample_value("kpimon_worker_up") == 1


def test_series_are_unique_and_label_values_bounded(plant_engine: Engine) -> None:
    registry = registry_of(runtime_with(plant_engine))
    seen = Counter((s.name, tuple(sorted(s.labels.items()))) for s in samples(registry))
    assert [k for k, n in seen.items() if n > 1] == []
    machines = {(m.site, m.line, m.machine) for m in machine_status(plant_engine)}
    lines = {(site, line) for site, line, _ in machines}
    sites = {site for site, _ in lines}
    windows = 2  # 1h, 1d
    oee_series = [s for s in samples(registry) if s.name == "kpimon_oee_ratio"]
    assert 0 < len(oee_series) <= (len(machines) + len(lines) + len(sites)) * windows * 2
    order_ids = re.compile(r"^(SO|PO)-|^demo|^m-")
    for s in samples(registry):
        for label, text in s.labels.items():
            assert not order_ids.search(text), f"{s.name}: {label}={text!r} looks like an id"


def test_exposition_passes_promtool_check_metrics(plant_engine: Engine) -> None:
    runtime = runtime_with(plant_engine)
    runtime.dead_letters["machine-state", "schema"] += 1
    text = generate_latest(registry_of(runtime, {("machine-state", 0): 5})).decode()
    checked = promtool("check", "metrics", stdin=text)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


def test_the_streamed_exposition_is_what_generate_latest_writes(plant_engine: Engine) -> None:
    runtime = runtime_with(plant_engine, plant_engine)
    runtime.dead_letters["machine-state", "schema"] += 1
    # One walk of the state for both (a machine's silence is as of the wall clock).
    families = KpimonCollector(runtime, lambda: {("machine-state", 0): 5}).families()
    chunks = list(families.exposition(chunk_lines=97))
    assert len(chunks) > 20  # written a chunk at a time, not whole
    assert b"".join(chunks) == generate_latest(registry_holding(families))


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["gauge", "counter"]),
            st.sampled_from(["kpimon_a", "kpimon_b_total", "kpimon_c"]),
            st.lists(st.sampled_from(["zeta", "alpha", "mid"]), unique=True, max_size=3),
            st.text(alphabet='ab"\\\n\u00e9 ', max_size=6),
            st.one_of(st.none(), st.floats(allow_nan=True), st.integers(-(10**12), 10**18)),
        ),
        max_size=30,
    ),
    st.integers(1, 5),
)
def test_any_families_are_written_as_generate_latest_writes_them(
    adds: list[tuple[str, str, list[str], str, Any]], chunk_lines: int
) -> None:
    out = Families()
    for kind, name, labels, value_text, value in adds:
        name = f"{name}_{kind}_{'_'.join(labels)}"  # one kind and label set a name
        help_text = f'help of {name} with \\ and \n and "'
        labelled = {label: f"{value_text}{i}" for i, label in enumerate(labels)}
        if kind == "counter":
            out.counter(name, help_text, labelled, 0.0 if value is None else abs(value))
        else:
            out.gauge(name, help_text, labelled, value)

    written = b"".join(out.exposition(chunk_lines=chunk_lines))
    assert written == generate_latest(registry_holding(out))


def registry_holding(families: Families) -> CollectorRegistry:
    class Fixed:
        def collect(self) -> Any:
            return iter(families)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    return registry


# -- scrape-time state -------------------------------------------------------------
def test_series_of_a_revoked_partition_disappear(plant_engine: Engine) -> None:
    runtime = runtime_with(plant_engine)
    registry = registry_of(runtime)
    assert any(s.name == "kpimon_oee_ratio" for s in samples(registry))
    runtime.shards.clear()  # what the worker does when the partition is revoked
    left = {s.name for s in samples(registry)}
    kpi = {"kpimon_oee_ratio", "kpimon_perfect_order_ratio", "kpimon_pchart_proportion"}
    assert not left & kpi
    assert (
        registry.get_sample_value("kpimon_watermark_timestamp_seconds", {"partition": "0"}) is None
    )
    assert registry.get_sample_value("kpimon_worker_up") == 1


def test_each_app_has_its_own_registry_not_the_global_one(plant_engine: Engine) -> None:
    one = registry_of(runtime_with(plant_engine))
    two = registry_of(runtime_with())
    assert one.get_sample_value("kpimon_engine_partitions_assigned") == 1
    assert two.get_sample_value("kpimon_engine_partitions_assigned") == 0
    assert prometheus_client.REGISTRY.get_sample_value("kpimon_worker_up") is None


def test_pipeline_counters_lag_and_config() -> None:
    engine = run([state(at(6), "running"), state(at(7), "running")], allowed_lateness="5m")
    engine.ingest(parse_event(state(at(5), "idle")))  # older than the frontier: late
    runtime = runtime_with(engine)
    runtime.consumed["machine-state"] += 4
    runtime.events_in["machine-state"] += 3
    runtime.dead_letters["machine-state", "undecodable"] += 1
    runtime.published["records"] += 7
    runtime.skipped["engine", "refilled"] += 2
    runtime.ingested["orders", 1] = 41
    runtime.input_ends.starts["orders", 2] = 0  # nothing read yet: resumes at the log start
    runtime.last_event_wall["orders"] = 1_700_000_000.5
    registry = registry_of(runtime, {("orders", 1): 50, ("orders", 2): 3, ("orders", 3): None})
    value = registry.get_sample_value
    topic = {"topic": "machine-state"}
    assert value("kpimon_messages_consumed_total", topic) == 4
    assert value("kpimon_events_received_total", topic) == 3
    assert value("kpimon_dead_letters_total", {**topic, "reason": "undecodable"}) == 1
    # Every topic and reason is there from the start, so increase() sees the first.
    assert value("kpimon_dead_letters_total", {"topic": "orders", "reason": "schema"}) == 0
    assert value("kpimon_published_messages_total", {"output": "records"}) == 7
    assert value("kpimon_published_messages_total", {"output": "alerts"}) == 0
    skipped = "kpimon_skipped_messages_total"
    assert value(skipped, {"stage": "engine", "outcome": "refilled"}) == 2
    assert value(skipped, {"stage": "ingest", "outcome": "lost"}) == 0
    late = {"partition": "0", "source": "machine-state"}
    assert value("kpimon_late_events_total", late) == 1
    assert value("kpimon_duplicate_events_total", {**late, "source": "orders"}) == 0
    assert value("kpimon_consumer_lag_messages", {"topic": "orders", "partition": "1"}) == 8
    assert value("kpimon_consumer_lag_messages", {"topic": "orders", "partition": "2"}) == 3
    assert value("kpimon_consumer_lag_messages", {"topic": "orders", "partition": "3"}) is None
    assert value("kpimon_last_event_received_timestamp_seconds", {"source": "orders"}) == (
        1_700_000_000.5
    )
    assert value("kpimon_watermark_timestamp_seconds", {"partition": "0"}) == (
        engine.watermark_us / 1e6
    )
    assert value("kpimon_window_close_delay_seconds", {"partition": "0"}) >= 300
    assert value("kpimon_silence_alert_seconds") == 1800
    assert value("kpimon_heartbeat_timeout_seconds") is None  # opt-in, off
    assert value("kpimon_allowed_lateness_seconds") == 300


def test_machines_and_open_orders_held_per_partition_beside_their_limits() -> None:
    limits = EngineConfig(windows=["1h", "1d"], max_machines=2, max_open_orders=1)
    plant = Engine(limits)  # partition 0: press-3 is one machine too many
    run_events(
        plant, (parse_event(state(at(6), "running", machine=m)) for m in ("p-1", "p-2", "p-3"))
    )
    orders = Engine(limits)  # partition 1: O-2 is one open order too many
    run_events(orders, (parse_event(order(o, at(6), at(30))) for o in ("O-1", "O-2")))
    runtime = Runtime(Settings(engine=limits), embedded=True)
    for partition, engine in enumerate((plant, orders)):
        runtime.shards[partition] = Shard(limits, 30_000_000)
        runtime.shards[partition].engine = engine
    value = registry_of(runtime).get_sample_value
    assert value("kpimon_machines_tracked", {"partition": "0"}) == 2
    assert value("kpimon_machines_tracked", {"partition": "1"}) == 0
    assert value("kpimon_open_orders", {"partition": "0"}) == 0
    assert value("kpimon_open_orders", {"partition": "1"}) == 1
    assert value("kpimon_machines_limit") == 2
    assert value("kpimon_open_orders_limit") == 1
    # Their dead letters are there from the start, for the topics they can come from.
    letters = "kpimon_dead_letters_total"
    assert value(letters, {"topic": "machine-state", "reason": "too_many_machines"}) == 0
    for topic in ("orders", "shipments"):
        assert value(letters, {"topic": topic, "reason": "too_many_open_orders"}) == 0
    assert value(letters, {"topic": "orders", "reason": "too_many_machines"}) is None
    assert value(letters, {"topic": "machine-state", "reason": "too_many_open_orders"}) is None


# -- streams.metrics_view ----------------------------------------------------------
def status(engine: Engine) -> dict[str, tuple[str, float | None]]:
    return {
        m.machine: (m.bucket, None if m.silence_us is None else m.silence_us / 1e6)
        for m in machine_status(engine)
    }


def test_machine_status_is_the_newest_state_as_of_the_watermark() -> None:
    #   06:00 press-1 running   06:30 press-1 down (pending: inside the lateness)
    #   06:36 p2 running: the watermark
    engine = run(
        [state(at(6), "running"), state(at(6.5), "down"), state(at(6.6), "running", "p2")],
        allowed_lateness="1h",
    )
    assert status(engine) == {"press-1": ("down", 360.0), "p2": ("running", 0.0)}


def test_machine_silent_past_the_heartbeat_is_no_data() -> None:
    #   06:00 press-1 running ... silent ...   07:00 p2 running: watermark
    engine = run(
        [state(at(6), "running"), count(at(6.1), 10, 10, 1.0), state(at(7), "running", "p2")],
        heartbeat_timeout="10m",
    )
    assert status(engine)["press-1"] == ("no_data", 3240.0)
    # A machine that only sent counts has no state: no data.
    engine = run([count(at(6), 10, 10, 1.0)])
    assert status(engine) == {"press-1": ("no_data", 0.0)}


@pytest.mark.parametrize(
    ("machine_state", "bucket"),
    [("idle", "planned_stop"), ("down", "planned_stop"), ("running", "running")],
)
def test_machine_status_outside_shifts(machine_state: str, bucket: str) -> None:
    calendar = {"timezone": "UTC", "shifts": [{"name": "early", "start": "06:00", "end": "14:00"}]}
    engine = run([state(at(15), machine_state)], shift_calendar=calendar)
    assert status(engine)["press-1"] == (bucket, 0.0)


def test_engine_counters_and_close_delay() -> None:
    fresh = Engine(EngineConfig())
    assert window_close_delay_us(fresh) is None
    assert set(engine_counters(fresh).values()) == {0}
    assert len(engine_counters(fresh)) == 6
    engine = run([state(at(6), "running"), state(at(8), "down")], allowed_lateness="5m")
    engine.ingest(parse_event(state(at(6), "idle")))
    assert engine_counters(engine)["late", "machine-state"] == 1
    assert window_close_delay_us(engine) == 300_000_000


def test_consumer_lag() -> None:
    lag = consumer_lag(
        {("t", 0): 10, ("t", 1): 0, ("t", 2): None, ("t", 3): 5},
        {("t", 0): 6, ("t", 3): 9},  # read past a highwater not refreshed yet
    )
    assert lag == {("t", 0): 3, ("t", 1): 0, ("t", 3): 0}


class FakeConsumer:
    def __init__(self, started: bool = True) -> None:
        self.started = started

    def assignment(self) -> set[TP]:
        if not self.started:
            raise ConsumerNotStarted("Consumer thread not yet started")
        return {TP("orders", 0), TP("orders", 1), TP("kpimon-engine", 0)}

    def highwater(self, tp: TP) -> int:
        assert tp.partition == 0, "Partition is not assigned"  # revoked meanwhile
        return 12


def test_input_highwater_never_fails_a_scrape() -> None:
    class App:
        consumer = FakeConsumer()

    read = input_highwater(App(), {"orders": "orders"})
    assert read() == {("orders", 0): 12}
    App.consumer = FakeConsumer(started=False)
    assert read() == {}


def test_configured_targets_are_exported_without_any_data() -> None:
    config = EngineConfig(
        targets=[
            {"site": "plant-1", "line": "line-1", "oee": 0.65, "mttr": "10m"},
            {"site": "plant-1", "line": "line-1", "machine": "press-1-1", "availability": 0.9},
        ],
        policies={"A": {"perfect_order": 0.92, "otif": 0.95, "min_order_qty": 10}},
    )
    registry = registry_of(Runtime(Settings(engine=config), embedded=True))
    value = registry.get_sample_value
    line = {"site": "plant-1", "line": "line-1", "machine": "", "direction": "", "segment": ""}
    assert value("kpimon_target_ratio", {"kpi": "oee", **line}) == 0.65
    machine = {**line, "machine": "press-1-1"}
    assert value("kpimon_target_ratio", {"kpi": "availability", **machine}) == 0.9
    assert value("kpimon_target_ratio", {"kpi": "oee", **machine}) is None  # no inheritance
    mttr = {"kpi": "mttr", "site": "plant-1", "line": "line-1", "machine": ""}
    assert value("kpimon_target_seconds", mttr) == 600
    segment = {"site": "", "line": "", "machine": "", "direction": "outbound", "segment": "A"}
    assert value("kpimon_target_ratio", {"kpi": "perfect_order", **segment}) == 0.92
    assert value("kpimon_target_ratio", {"kpi": "otif", **segment}) == 0.95
