"""The `kpimon` command as a user meets it: a mistake is one line on stderr
naming the problem, with the exit code the README documents, never a traceback.

Every test runs the installed console script (`.venv/bin/kpimon`) as a
subprocess in an empty directory, with no KPIMON_* variables.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agents.cli import (
    EXIT_FAILED,
    EXIT_FILE,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_USAGE,
    _Formatter,
    build_parser,
)
from tests.agents.harness import free_port, wait_for

KPIMON = str(Path(sys.executable).parent / "kpimon")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KPIMON_")}


def kpimon(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KPIMON, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=clean_env()
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single line a mistake prints on stderr (nothing on stdout)."""
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert done.stdout == ""
    return lines[0]


# ---------------------------------------------------------------- replay's input


def test_replay_of_a_missing_file(tmp_path: Path) -> None:
    done = kpimon(tmp_path, "replay", str(tmp_path / "nonexistent.jsonl"))
    assert done.returncode == EXIT_FILE == 3
    assert one_line(done) == f"kpimon replay: {tmp_path / 'nonexistent.jsonl'}: no such file"


def test_replay_of_a_directory(tmp_path: Path) -> None:
    done = kpimon(tmp_path, "replay", str(tmp_path))
    assert done.returncode == EXIT_FILE
    assert one_line(done) == f"kpimon replay: {tmp_path} is a directory, not a file of events"


def test_replay_of_a_file_that_is_not_gzip_creates_no_output_file(tmp_path: Path) -> None:
    bad = tmp_path / "events.jsonl.gz"
    bad.write_text('{"type": "state"}\n')
    rejects = tmp_path / "rejects.jsonl"
    done = kpimon(tmp_path, "replay", str(bad), "--rejects", str(rejects))
    assert done.returncode == EXIT_FILE
    line = one_line(done)
    assert line == f"kpimon replay: cannot read {bad}: not a gzip file (it ends in .gz)"
    assert not rejects.exists()


def test_replay_of_a_truncated_gzip(tmp_path: Path) -> None:
    whole = gzip.compress(b"".join(b'{"n": %d}\n' % i for i in range(1000)))
    bad = tmp_path / "cut.jsonl.gz"
    bad.write_bytes(whole[: len(whole) // 2])
    done = kpimon(tmp_path, "replay", "-q", str(bad))
    assert done.returncode == EXIT_FILE
    assert one_line(done).startswith(f"kpimon replay: cannot read {bad}: Compressed file ended")


def test_replay_to_a_rejects_file_that_cannot_be_written(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    done = kpimon(tmp_path, "replay", str(events), "--rejects", str(tmp_path / "no" / "r.jsonl"))
    assert done.returncode == EXIT_FILE
    assert "cannot write" in one_line(done) and "No such file or directory" in done.stderr


def test_a_config_file_with_a_toml_syntax_error(tmp_path: Path) -> None:
    config = tmp_path / "kpimon.toml"
    config.write_text('[engine]\nwindows = ["1h" "1d"]\n')
    events = tmp_path / "events.jsonl"
    events.write_text("")
    for command in (["replay", str(events)], ["config"], ["worker"]):
        done = kpimon(tmp_path, *command, "--config", str(config))
        assert done.returncode == EXIT_USAGE, command
        line = one_line(done)
        assert line.startswith(f"kpimon {command[0]}: {config} is not valid TOML:"), line
        assert "line 2" in line


def test_a_missing_config_file(tmp_path: Path) -> None:
    done = kpimon(tmp_path, "config", "--config", str(tmp_path / "nope.toml"))
    assert done.returncode == EXIT_USAGE
    assert one_line(done) == f"kpimon config: config file not found: {tmp_path / 'nope.toml'}"


# ------------------------------------------------------------- replay's rejects


def event_line(**changes: object) -> str:
    event = {
        "type": "state",
        "event_id": f"e{changes.get('n', 0)}",
        "ts": "2026-11-02T06:00:00Z",
        "site": "plant-1",
        "line": "line-1",
        "machine": "press-1",
        "state": "running",
    }
    event.update({k: v for k, v in changes.items() if k != "n"})
    return json.dumps(event)


def test_replay_exits_4_when_every_line_is_rejected(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("not json\n" + event_line(state="flying") + "\n{oops\n")
    done = kpimon(tmp_path, "replay", str(events))
    assert done.returncode == EXIT_REJECTED == 4, done.stderr
    assert "Traceback" not in done.stderr and "{'" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("kpimon replay: 3 lines, 0 events, 3 rejected,")
    assert lines[1].startswith("  rejected 2 undecodable; first: line 1: not valid JSON")
    assert lines[2].startswith("  rejected 1 schema; first: line 2: ") and "state" in lines[2]
    assert lines[-1] == (
        f"kpimon replay: every line of {events} was rejected (schema, undecodable); "
        "nothing replayed"
    )
    # -q keeps only the verdict
    done = kpimon(tmp_path, "replay", "-q", str(events))
    assert done.returncode == EXIT_REJECTED
    assert one_line(done).startswith(f"kpimon replay: every line of {events} was rejected")


def test_replay_counts_rejects_per_reason_and_still_exits_0_when_some_lines_count(
    tmp_path: Path,
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        event_line(n=1)
        + "\nnot json\n"
        + event_line(n=2, state="flying")
        + "\n[1, 2]\n"
        + event_line(n=3, state="idle", ts="2026-11-02T07:30:00Z")
        + "\n"
    )
    done = kpimon(tmp_path, "replay", str(events))
    assert done.returncode == EXIT_OK, done.stderr
    rejected = [line for line in done.stderr.splitlines() if line.startswith("  rejected")]
    assert len(rejected) == 3
    assert any(line.startswith("  rejected 1 undecodable; first: line 2: ") for line in rejected)
    assert any(line.startswith("  rejected 1 schema; first: line 3: ") for line in rejected)
    assert "2 events" in done.stderr.splitlines()[0]
    assert done.stdout  # the records of the accepted line


# ------------------------------------------------------------- bad option values


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [
        ("demo", "--speed", "0"),
        ("demo", "--speed", "-60"),
        ("demo", "--speed", "nan"),
        ("demo", "--duration", "-5"),
        ("demo", "--duration", "0"),
        ("demo", "--history-days", "-1"),
        ("demo", "--seed", "seven"),
        ("demo", "--outages-per-day", "-0.5"),
        ("demo", "--plc-lost-share", "1.5"),
        ("demo", "--port", "70000"),
        ("worker", "--duration", "-5"),
        ("worker", "--port", "0"),
        ("worker", "--connect-timeout", "0"),
        ("produce", "--max-batch", "0"),
        ("produce", "--max-batch", "-3"),
        ("simulate", "--days", "0"),
        ("simulate", "--days", "-1"),
        ("simulate", "--start", "2026-11-02"),
        ("simulate", "--start", "yesterday"),
        ("bench", "--events", "-1000"),
        ("bench", "--machines", "0"),
        ("bench", "--open-orders", "-1"),
        ("bench", "--latency-seconds", "0"),
    ],
)
def test_a_bad_option_value_is_one_line_naming_it(
    tmp_path: Path, command: str, option: str, value: str
) -> None:
    extra = ["events.jsonl"] if command == "produce" else []
    done = kpimon(tmp_path, command, *extra, f"{option}={value}", timeout=30)
    assert done.returncode == EXIT_USAGE == 2
    line = one_line(done)
    assert line.startswith(f"kpimon {command}: argument {option}: "), line
    assert value in line and line.endswith(f"(see kpimon {command} --help)")


def test_an_unknown_gateway_profile_is_one_line(tmp_path: Path) -> None:
    done = kpimon(tmp_path, "simulate", "--profiles", "smoke-signals", "--out", "x.jsonl")
    assert done.returncode == EXIT_USAGE
    assert one_line(done).startswith("kpimon simulate: ") and "smoke-signals" in done.stderr


# -------------------------------------------------------------------- help texts


def test_every_option_has_a_description_and_shows_its_default() -> None:
    parser = build_parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]  # argparse has no public walk
    missing = []
    for name, command in sub.choices.items():
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            shown = _Formatter(name)._get_help_string(action) or ""
            if not action.help:
                missing.append(f"{name} {action.option_strings[0]}: no description")
            elif action.default not in (None, False) and "default" not in shown:
                missing.append(f"{name} {action.option_strings[0]}: default not shown")
    assert missing == []
    assert len(sub.choices) == 8


def test_help_shows_the_defaults_users_asked_about(tmp_path: Path) -> None:
    demo = " ".join(kpimon(tmp_path, "demo", "--help").stdout.split())
    assert "--seed SEED seed of the simulated plant: the same seed gives the same events " in demo
    assert "(default: 7)" in demo and "(default: 60.0)" in demo and "(default: 3.0)" in demo
    simulate = " ".join(kpimon(tmp_path, "simulate", "--help").stdout.split())
    assert "--days DAYS simulated days of events to generate (default: 1.0)" in simulate
    schema = " ".join(kpimon(tmp_path, "schema", "--help").stdout.split())
    assert "print only this topic's schema (default: all three)" in schema
    top = " ".join(kpimon(tmp_path, "--help").stdout.split())
    assert "exit codes: 0 done, 1 failed while running, 2 usage or configuration, 3 a file" in top


# ----------------------------------------------------- brokers that do not answer


@contextmanager
def listener(answer: bytes | None) -> Iterator[int]:
    """A TCP port that is not Kafka: it accepts connections and then says
    nothing (`answer=None`) or sends `answer` and hangs up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            if answer is None:
                held.append(conn)
            else:
                conn.recv(65536)
                conn.sendall(answer)
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_worker_against_a_closed_port_says_why_and_exits_1(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    done = kpimon(tmp_path, "worker", "--broker", f"kafka://127.0.0.1:{port}", timeout=30)
    assert done.returncode == EXIT_FAILED == 1
    assert one_line(done) == (
        f"kpimon: cannot reach the broker kafka://127.0.0.1:{port}: "
        f"cannot connect (127.0.0.1:{port}: Connection refused)"
    )


def test_worker_against_port_1_gives_up(tmp_path: Path) -> None:
    done = kpimon(tmp_path, "worker", "--broker", "kafka://127.0.0.1:1", timeout=30)
    assert done.returncode == EXIT_FAILED
    assert "cannot reach the broker kafka://127.0.0.1:1" in one_line(done)


def test_worker_against_a_silent_port_gives_up_at_the_connect_timeout(tmp_path: Path) -> None:
    with listener(answer=None) as port:
        began = time.monotonic()
        done = kpimon(
            tmp_path,
            "worker",
            "--broker",
            f"kafka://127.0.0.1:{port}",
            "--connect-timeout",
            "2",
            timeout=60,
        )
        took = time.monotonic() - began
    assert done.returncode == EXIT_FAILED
    assert one_line(done) == (
        f"kpimon: cannot reach the broker kafka://127.0.0.1:{port}: no Kafka answer within 2 s "
        "(connect timeout; is it a Kafka broker?)"
    )
    assert 2 <= took < 30


def test_the_connect_timeout_is_a_setting(tmp_path: Path) -> None:
    config = tmp_path / "kpimon.toml"
    config.write_text("[kafka]\nconnect_timeout = 1.5\n")
    with listener(answer=None) as port:
        done = kpimon(
            tmp_path, "worker", "--config", str(config), "--broker", f"kafka://127.0.0.1:{port}"
        )
    assert done.returncode == EXIT_FAILED
    assert "no Kafka answer within 1.5 s" in one_line(done)


def test_worker_against_a_port_that_answers_something_else(tmp_path: Path) -> None:
    with listener(answer=b"HTTP/1.1 400 Bad Request\r\n\r\n") as port:
        done = kpimon(
            tmp_path,
            "worker",
            "--broker",
            f"kafka://127.0.0.1:{port}",
            "--connect-timeout",
            "5",
            timeout=60,
        )
    assert done.returncode == EXIT_FAILED
    line = one_line(done)
    assert line.startswith(f"kpimon: cannot reach the broker kafka://127.0.0.1:{port}: "), line
    assert "did not answer as a Kafka broker" in line or "no Kafka answer" in line


def test_produce_and_simulate_against_a_silent_port_give_up(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(event_line() + "\n")
    with listener(answer=None) as port:
        url = f"kafka://127.0.0.1:{port}"
        for command in (
            ["produce", str(events)],
            ["simulate", "--days", "0.01"],
        ):
            done = kpimon(tmp_path, *command, "--broker", url, "--connect-timeout", "1")
            assert done.returncode == EXIT_FAILED, done.stderr
            assert one_line(done) == (
                f"kpimon {command[0]}: cannot reach the broker {url}: no Kafka answer within "
                "1 s (connect timeout; is it a Kafka broker?)"
            )


# ------------------------------------- produce and simulate without --broker


def test_produce_without_a_broker_or_a_worker_here_says_what_to_do(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(event_line() + "\n")
    done = kpimon(tmp_path, "produce", str(events))
    assert done.returncode == EXIT_USAGE
    line = one_line(done)
    assert line.startswith("kpimon produce: no broker: give --broker kafka://host:port")
    assert "`kpimon worker` or `kpimon demo` in this directory" in line


def test_produce_checks_the_file_before_the_broker(tmp_path: Path) -> None:
    done = kpimon(tmp_path, "produce", str(tmp_path / "missing.jsonl"))
    assert done.returncode == EXIT_FILE
    assert one_line(done) == f"kpimon produce: {tmp_path / 'missing.jsonl'}: no such file"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(event_line() + "\n" + event_line(n=2, site=None) + "\n")
    done = kpimon(tmp_path, "produce", str(bad))
    assert done.returncode == EXIT_REJECTED
    assert one_line(done).startswith("kpimon produce: line 2: ")
    assert done.stderr.strip().endswith("nothing sent")


def kpi_events(port: int) -> int:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/kpi", timeout=5) as resp:
            return sum(json.loads(resp.read())["pipeline"]["events"].values())
    except OSError:
        return -1


@pytest.mark.integration
def test_simulate_and_produce_without_broker_send_to_the_worker_running_here(
    tmp_path: Path,
) -> None:
    port = free_port()
    worker = subprocess.Popen(
        [KPIMON, "worker", "-q", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pointer = tmp_path / ".kpimon-data" / "embedded-broker"
    try:
        wait_for(lambda: kpi_events(port) == 0, 90, "the worker's /kpi")
        assert pointer.read_text().startswith("kafka://127.0.0.1:")

        done = kpimon(tmp_path, "simulate", "--days", "0.05", "--id-prefix", "a-")
        assert done.returncode == EXIT_OK, done.stderr
        assert "to the embedded broker of the worker here" in done.stderr
        sent = int(done.stderr.split("sent ")[1].split(" events")[0])
        assert sent > 50

        events = tmp_path / "events.jsonl"
        events.write_text(event_line(n=1, ts="2026-11-02T06:00:00Z") + "\n")
        done = kpimon(tmp_path, "produce", str(events))
        assert done.returncode == EXIT_OK, done.stderr
        assert "sent 1 events in 1 messages" in done.stderr

        wait_for(lambda: kpi_events(port) >= sent + 1, 60, f"{sent + 1} events in the worker")
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            code = worker.wait(timeout=60)
        finally:
            if worker.poll() is None:
                worker.kill()
        stderr = worker.stderr.read().decode() if worker.stderr else ""
    assert code == 0, stderr
    assert not pointer.exists()  # a stopped worker's broker is not offered any more
    done = kpimon(tmp_path, "simulate", "--days", "0.01")
    assert done.returncode == EXIT_USAGE and "no broker" in one_line(done)
