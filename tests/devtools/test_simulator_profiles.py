"""What the simulated gateways send: producer profiles, PLC counters, outages.

One plant, rendered by each profile: every rendering is contract-valid, keeps
the profile's promises (on change only, counts only while running, counters
monotone but for resets and wraps, bursts late in send order and in order per
machine), and carries the same truth, which the engine's KPIs must equal.
"""

from __future__ import annotations

import doctest
import hashlib
from collections import Counter, defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

import devtools.simulator_gateway
from devtools.simulator import (
    SAMPLE_START_US,
    LineSpec,
    Product,
    SilentMachine,
    SimConfig,
    gateway_outages,
    plant_truth,
    simulate,
)
from devtools.simulator_gateway import Outage, Outages, machine_profiles
from streams.config import EngineConfig
from streams.decode import parse_event
from streams.engine import Engine
from streams.timeutil import US, to_us
from tests.streams.helpers import run_events

START = SAMPLE_START_US  # 2026-11-02T00:00:00Z, a Monday
DAYS = 3
END = START + DAYS * 86_400 * US  # midnight: every machine in planned_stop since 22:00
MODULUS = 65_536
SEED = 7
STATES = {"running", "idle", "down", "setup", "planned_stop", "unknown"}
MACHINE_FIELDS = {"type", "event_id", "ts", "site", "line", "machine"}
FIELDS = {
    "state": MACHINE_FIELDS | {"state", "reason"},
    "count": MACHINE_FIELDS | {"product", "ideal_cycle_s", "total", "good"},
    "counter": MACHINE_FIELDS | {"product", "ideal_cycle_s", "total", "good"},
}

CONFIGS = {
    "periodic": SimConfig(),
    "on-change": SimConfig(profiles="on-change"),
    "plc-counter": SimConfig(profiles="plc-counter"),
    "mix": SimConfig(profiles="mix"),
    "mix+forward": SimConfig(profiles="mix", outages=Outages()),
    "mix+plc-lost": SimConfig(profiles="mix", outages=Outages(plc_lost_share=1.0)),
    "mix+both": SimConfig(profiles="mix", outages=Outages(mean_gap_s=43_200, plc_lost_share=0.4)),
}


@pytest.fixture(scope="module")
def runs() -> dict[str, list[dict]]:
    return {
        name: list(simulate(config, SEED, START, DAYS * 86_400)) for name, config in CONFIGS.items()
    }


def us(text: str) -> int:
    return to_us(datetime.fromisoformat(text))


def by_machine(events: list[dict]) -> dict[str, list[dict]]:
    machines: defaultdict[str, list[dict]] = defaultdict(list)
    for e in events:
        if "machine" in e:
            machines[e["machine"]].append(e)
    return machines


def outages_of(name: str) -> list[Outage]:
    return gateway_outages(CONFIGS[name], SEED, START, DAYS * 86_400)


# --- profiles and specs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("periodic", {"periodic": 11}),
        ("plc-counter", {"plc-counter": 11}),
        ("mix", {"periodic": 4, "on-change": 4, "plc-counter": 3}),
        ("periodic=4,on-change=4,plc-counter=3", {"periodic": 4, "on-change": 4, "plc-counter": 3}),
        ("on-change=10, plc-counter=1", {"on-change": 10, "plc-counter": 1}),
    ],
)
def test_profile_specs(spec: str, expected: dict[str, int]) -> None:
    profiles = SimConfig(profiles=spec).machine_profiles()
    assert Counter(profiles.values()) == expected
    assert len(profiles) == 11


def test_a_mix_deals_profiles_in_turn_so_every_line_has_several() -> None:
    profiles = SimConfig(profiles="mix").machine_profiles()
    per_line = defaultdict(set)
    for machine, profile in profiles.items():
        per_line[machine.split("-")[1]].add(profile)
    assert all(len(kinds) >= 2 for kinds in per_line.values()), per_line


@pytest.mark.parametrize(
    "spec", ["sometimes", "periodic=4,on-change=4", "periodic=x", "", "mix=11"]
)
def test_bad_profile_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="profiles"):
        SimConfig(profiles=spec)


def test_gateway_doctests() -> None:
    assert doctest.testmod(devtools.simulator_gateway).failed == 0
    assert machine_profiles("mix", []) == {}


# --- every rendering is valid -------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_rendering_validates_against_the_contract(
    runs: dict[str, list[dict]], name: str
) -> None:
    events = runs[name]
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    for e in events:
        parse_event(e)  # raises on any contract violation
        assert START <= us(e["ts"]) < END
        if e["type"] in FIELDS:
            assert set(e) == FIELDS[e["type"]], e
            if e["type"] == "state":
                assert e["state"] in STATES
                assert (e["state"] == "running") == (e["reason"] is None), e
    kinds = Counter(e["type"] for e in events)
    profiles = set(CONFIGS[name].machine_profiles().values())
    assert ("count" in kinds) == bool(profiles & {"periodic", "on-change"})
    assert ("counter" in kinds) == ("plc-counter" in profiles)


@pytest.mark.parametrize("name", ["on-change", "plc-counter", "mix", "mix+forward", "mix+plc-lost"])
def test_on_change_never_repeats_a_state(runs: dict[str, list[dict]], name: str) -> None:
    profiles = CONFIGS[name].machine_profiles()
    for machine, events in by_machine(runs[name]).items():
        if profiles[machine] == "periodic":
            continue
        states = [(e["state"], e["reason"]) for e in events if e["type"] == "state"]
        assert all(a != b for a, b in zip(states, states[1:], strict=False)), machine


@pytest.mark.parametrize("name", ["on-change", "plc-counter", "mix+forward"])
def test_units_only_while_running_and_silence_while_stopped(
    runs: dict[str, list[dict]], name: str
) -> None:
    profiles = CONFIGS[name].machine_profiles()
    for machine, events in by_machine(runs[name]).items():
        if profiles[machine] == "periodic":
            continue
        state = None
        for e in events:
            if e["type"] == "state":
                state = e["state"]
            else:
                assert state == "running", f"{machine}: units while {state}: {e}"


def test_periodic_repeats_states_on_change_does_not(runs: dict[str, list[dict]]) -> None:
    states = {n: sum(e["type"] == "state" for e in runs[n]) for n in ("periodic", "on-change")}
    assert states["on-change"] < states["periodic"] / 2
    # The same production, the same counts.
    counts = {n: [e for e in runs[n] if e["type"] == "count"] for n in ("periodic", "on-change")}
    strip = [{k: v for k, v in e.items() if k != "event_id"} for e in counts["periodic"]]
    assert strip == [{k: v for k, v in e.items() if k != "event_id"} for e in counts["on-change"]]


# --- PLC counters --------------------------------------------------------------------


def read_units(now: int, before: int) -> int:
    """Units between two readings of one counter: a fall from near the top is a
    wrap (within one reading interval); any other fall is a restart."""
    if now >= before:
        return now - before
    if before + 200 > MODULUS and now < 200:
        return now + MODULUS - before
    return now


def counter_falls(events: list[dict]) -> list[tuple[dict, int, str]]:
    """Every fall of a (machine, product) total counter, as a wrap or a reset."""
    last: dict[tuple[str, str], int] = {}
    falls = []
    for e in events:
        if e["type"] != "counter":
            continue
        key = (e["machine"], e["product"])
        if key in last and e["total"] < last[key]:
            wrap = read_units(e["total"], last[key]) != e["total"]
            falls.append((e, last[key], "wrap" if wrap else "reset"))
        last[key] = e["total"]
    return falls


def test_plc_counters_rise_but_for_restarts_and_wraps(runs: dict[str, list[dict]]) -> None:
    falls = counter_falls(runs["plc-counter"])
    kinds = Counter(kind for _, _, kind in falls)
    assert kinds["wrap"] >= 1 and kinds["reset"] >= 1, kinds
    for e, before, kind in falls:
        if kind == "reset":
            assert (e["total"], e["good"]) == (0, 0), (e, before)  # read as the run starts
    # The first plc-counter machine starts near the top: it wraps on its first day.
    wraps = [e for e, _, kind in falls if kind == "wrap"]
    assert min(us(e["ts"]) for e in wraps) < START + 86_400 * US
    assert "press-1-1" in {e["machine"] for e in wraps}


@pytest.mark.parametrize("name", ["plc-counter", "mix"])
def test_counter_readings_add_up_to_the_true_units(runs: dict[str, list[dict]], name: str) -> None:
    """First reading: the base; then a rise, a wrap or a restart, each machine's
    units and good units add up to its truth."""
    truth = plant_truth(CONFIGS[name], SEED, START, DAYS * 86_400)
    last: dict[tuple[str, str], dict] = {}
    made: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for e in runs[name]:
        if e["type"] != "counter":
            continue
        key = (e["machine"], e["product"])
        if key in last:
            for field in ("total", "good"):
                made[e["machine"]][field] += read_units(e[field], last[key][field])
        last[key] = e
    for machine, t in truth.items():
        if t.profile == "plc-counter":
            assert (made[machine]["total"], made[machine]["good"]) == (t.total, t.good), machine


# --- gateway outages -------------------------------------------------------------------


def outages_end_in_time(name: str) -> bool:
    return all(o.end_us < END for o in outages_of(name))


def test_store_and_forward_bursts_come_late_in_send_order_and_in_order_per_machine(
    runs: dict[str, list[dict]],
) -> None:
    events = runs["mix+forward"]
    held = [o for o in outages_of("mix+forward") if not o.plc_lost]
    assert len(held) >= 5 and all(3600 * US <= o.end_us - o.start_us <= 3 * 3600 * US for o in held)

    def sent_at(e: dict) -> int:
        ts = us(e["ts"])
        for o in held:
            if o.machine == e.get("machine") and o.start_us <= ts < o.end_us:
                return o.end_us
        return ts

    # Send order: by send time; each machine's events in ts order.
    assert [sent_at(e) for e in events] == sorted(sent_at(e) for e in events)
    for machine, mine in by_machine(events).items():
        assert [us(e["ts"]) for e in mine] == sorted(us(e["ts"]) for e in mine), machine
    position = {id(e): i for i, e in enumerate(events)}
    bursts = 0
    for o in held:
        burst = [e for e in events if e.get("machine") == o.machine and sent_at(e) == o.end_us
                 and us(e["ts"]) < o.end_us]  # fmt: skip
        if not burst:  # a machine sending on change may have had nothing to say
            continue
        bursts += 1
        first = position[id(burst[0])]
        # All of it at once: nothing of the machine's own in between ...
        assert [position[id(e)] for e in burst] == sorted(position[id(e)] for e in burst)
        # ... after the other machines' later events, with its own timestamps.
        others_later = [
            e for e in events[:first]
            if e.get("machine") not in (None, o.machine) and us(e["ts"]) > us(burst[0]["ts"])
        ]  # fmt: skip
        assert others_later, o
        assert us(burst[0]["ts"]) >= o.start_us
    assert bursts >= 5


def test_a_lost_plc_is_unknown_until_it_is_back(runs: dict[str, list[dict]]) -> None:
    events = runs["mix+plc-lost"]
    lost = outages_of("mix+plc-lost")
    assert lost and all(o.plc_lost for o in lost)
    mine = by_machine(events)
    for o in lost:
        during = [e for e in mine[o.machine] if o.start_us <= us(e["ts"]) < o.end_us]
        assert during[0]["state"] == "unknown" and during[0]["reason"] == "plc_lost"
        assert us(during[0]["ts"]) == o.start_us
        assert all(e["type"] == "state" and e["state"] == "unknown" for e in during)
        after = [e for e in mine[o.machine] if us(e["ts"]) >= o.end_us]
        if o.end_us < END:
            back = next(e for e in after if e["type"] == "state")
            assert back["state"] != "unknown" and us(back["ts"]) == o.end_us


# --- determinism ---------------------------------------------------------------------


def test_same_seed_same_events_other_seed_other_events(runs: dict[str, list[dict]]) -> None:
    config = CONFIGS["mix+both"]
    assert list(simulate(config, SEED, START, DAYS * 86_400)) == runs["mix+both"]
    assert list(simulate(config, SEED + 1, START, DAYS * 86_400)) != runs["mix+both"]


@pytest.mark.parametrize("hours", [7.5, 30.0, 50.25])
def test_a_shorter_run_is_a_prefix_in_send_order(runs: dict[str, list[dict]], hours: float) -> None:
    short = list(simulate(CONFIGS["mix+both"], SEED, START, hours * 3600))
    assert short == runs["mix+both"][: len(short)]


# Hashes of the output before profiles existed: periodic must stay byte-identical.
PERIODIC = [
    (SimConfig(), 7, START, 86_400, 10_265, "635b8d53359851f0"),
    (SimConfig(id_prefix="x-"), 3, START + 12_345 * US, 2.3 * 86_400, 23_825, "4097e3b81d6222f4"),
    (SimConfig(shifts=(), count_interval_s=15.0), 99,
     to_us(datetime(2026, 3, 1, 5, 17, tzinfo=UTC)), 30 * 3600, 65_573, "13048e81834b7913"),
    (SimConfig(lines=(LineSpec("line-1", ("press-1", "press-2"),
                               (Product("SKU-1", 1.5), Product("SKU-2", 2.0)), 0.02),),
               count_interval_s=300.0, heartbeat_s=900.0,
               silent_machine=SilentMachine("press-2", from_s=20 * 3600.0)),
     11, START, 40 * 3600, 1028, "0e3f537881bf062c"),
]  # fmt: skip


@pytest.mark.parametrize(("config", "seed", "start", "duration_s", "n", "digest"), PERIODIC)
def test_periodic_output_is_unchanged(
    config: SimConfig, seed: int, start: int, duration_s: float, n: int, digest: str
) -> None:
    sha = hashlib.sha256()
    events = list(simulate(config, seed, start, duration_s))
    for e in events:
        sha.update(orjson.dumps(e) + b"\n")
    assert (len(events), sha.hexdigest()[:16]) == (n, digest)


# --- the engine's KPIs equal the truth -------------------------------------------------


def engine_totals(events: list[dict], **settings: Any) -> dict[str, Counter[str]]:
    """Per machine, the sums over its 1d records (the newest revision of each)."""
    config = EngineConfig(windows=["1h", "1d"], counter_modulus=MODULUS, **settings)
    engine = Engine(config)
    out = run_events(engine, (parse_event(e) for e in events))
    out.extend(engine.flush())
    newest: dict[tuple[str, str], dict] = {}
    for r in out.records:
        if r["kpi"] == "oee" and r["scope"] == "machine" and r["window"] == "1d":
            newest[r["machine"], r["start"]] = r
    totals: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for (machine, _), r in newest.items():
        for key in ("total", "good", "running_s", "ideal_s", "no_data_s", "failures"):
            totals[machine][key] += r[key]
    return totals


def assert_kpis_equal_truth(name: str, events: list[dict], **settings: Any) -> None:
    assert outages_end_in_time(name), "an outage still open at the end holds events back"
    truth = plant_truth(CONFIGS[name], SEED, START, DAYS * 86_400)
    got = engine_totals(events, **settings)
    for machine, t in truth.items():
        g = got[machine]
        assert (g["total"], g["good"]) == (t.total, t.good), machine
        assert g["ideal_s"] == pytest.approx(t.ideal_s, abs=1e-3), machine
        assert g["running_s"] == pytest.approx(t.visible_running_s, abs=1e-6), machine
        assert g["no_data_s"] == pytest.approx(sum(t.hidden_by_state.values()), abs=1e-6), machine
        if not t.hidden_by_state:  # a lost PLC splits a stop in two: not a new failure
            assert g["failures"] == t.failures, machine


@pytest.mark.parametrize(
    "name",
    ["periodic", "on-change", "plc-counter", "mix"],
)
def test_every_profile_gives_the_true_kpis(runs: dict[str, list[dict]], name: str) -> None:
    assert_kpis_equal_truth(name, runs[name])


def test_late_bursts_give_the_true_kpis_within_the_allowed_lateness(
    runs: dict[str, list[dict]],
) -> None:
    longest = max(o.end_us - o.start_us for o in outages_of("mix+forward")) // US
    assert_kpis_equal_truth("mix+forward", runs["mix+forward"], allowed_lateness=longest)


def test_a_lost_plc_is_no_data_and_its_units_still_count(runs: dict[str, list[dict]]) -> None:
    assert_kpis_equal_truth("mix+plc-lost", runs["mix+plc-lost"])
    truth = plant_truth(CONFIGS["mix+plc-lost"], SEED, START, DAYS * 86_400)
    assert sum(t.hidden_by_state.get("running", 0) for t in truth.values()) > 3600


def test_late_bursts_give_the_true_kpis_as_revisions(runs: dict[str, list[dict]]) -> None:
    """Bursts hours behind the frontier (allowed_lateness 5m) revise closed windows."""
    assert_kpis_equal_truth("mix+forward", runs["mix+forward"])


# --- the command line -------------------------------------------------------------------


def test_kpimon_simulate_writes_the_profiles_asked_for(tmp_path: Any) -> None:
    from agents.cli import main

    out = tmp_path / "events.jsonl"
    argv = ["simulate", "--days", "0.5", "--seed", "5", "--profiles", "on-change=6,plc-counter=5",
            "--outages-per-day", "3", "--plc-lost-share", "0.5", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    written = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    config = SimConfig(
        profiles="on-change=6,plc-counter=5",
        outages=Outages(mean_gap_s=86_400 / 3, plc_lost_share=0.5),
    )
    assert written == list(simulate(config, 5, us("2026-11-02T00:00:00Z"), 0.5 * 86_400))
    assert {"counter", "count"} <= {e["type"] for e in written}


@pytest.mark.parametrize(
    "flags", [["--profiles", "often"], ["--outages-per-day", "1", "--plc-lost-share", "2"]]
)
def test_kpimon_simulate_refuses_a_bad_gateway_setting(
    tmp_path: Any, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from agents.cli import main

    try:  # a bad flag value is argparse's to report: it exits 2
        code = main(["simulate", "--days", "0.1", "--out", str(tmp_path / "x"), *flags])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert "kpimon simulate:" in capsys.readouterr().err


def test_simulate_keeps_periodic_and_the_demo_mixes_by_default() -> None:
    from agents.cli import build_parser
    from agents.settings import load_settings
    from devtools.demo import demo_engine, sim_config

    parser = build_parser()
    simulate_args = parser.parse_args(["simulate"])
    assert (simulate_args.profiles, simulate_args.outages_per_day) == ("periodic", 0.0)
    assert sim_config(simulate_args, "") == SimConfig()
    demo = sim_config(parser.parse_args(["demo"]), "demo7-")
    assert demo.profiles == "mix" and demo.outages is not None
    # No lost PLCs by default: the units they report when back would show as an
    # hour above the ideal rate on the shop-floor TV (--plc-lost-share adds them).
    assert demo.outages.plc_lost_share == 0
    engine = demo_engine(load_settings(None), demo)
    assert engine.counter_modulus == MODULUS
    assert engine.us("revision_horizon") >= demo.outages.duration_s[1] * US
