"""Credentials are never printed, and a broker URL's user info is used as SASL
credentials: canary secrets go into the settings and the URL, and every
output stream, log file and HTTP response is searched for them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agents.kafka_client import client_options
from agents.settings import load_settings, with_kafka
from tests.agents.harness import free_port, wait_for

KPIMON = str(Path(sys.executable).parent / "kpimon")
CANARY_PW = "Canary-Pw-7f3e9"  # in a URL as Canary-Pw-7f3e9 and percent-encoded below
CANARY_FILE_PW = "Canary-File-Pw-41c2"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KPIMON_")}
    return {**env, **extra}


def kpimon(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60):  # type: ignore[no-untyped-def]
    return subprocess.run(
        [KPIMON, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(),
    )


def files_text(root: Path) -> str:
    """Every file under `root` (logs, pointers, data), as text."""
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace") for p in sorted(root.rglob("*")) if p.is_file()
    )


def assert_nowhere(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text
        assert secret.replace("-", "%2D") not in text


# -------------------------------------------------------- user info as SASL PLAIN


def test_url_user_info_becomes_the_sasl_credentials_and_leaves_the_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KPIMON_KAFKA__BROKER", "kafka://ops%40plant:p%3Aw%40rd@b1:9092;b2:9092")
    kafka = load_settings().kafka
    assert kafka.broker == "kafka://b1:9092;b2:9092"
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_PLAINTEXT", "PLAIN")
    assert kafka.sasl_username == "ops@plant"
    assert kafka.sasl_password is not None and kafka.sasl_password.get_secret_value() == "p:w@rd"
    options = client_options(kafka)
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "ops@plant",
        "p:w@rd",
    )

    monkeypatch.setenv("KPIMON_KAFKA__SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("KPIMON_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    kafka = load_settings().kafka
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")


def test_a_broker_flag_with_user_info_replaces_the_configured_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KPIMON_KAFKA__BROKER", "kafka://old:old-pw@b1:9092")
    settings = with_kafka(load_settings(), broker="kafka://new:new-pw@b2:9092")
    assert settings.kafka.broker == "kafka://b2:9092" and settings.kafka.sasl_username == "new"
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "new-pw"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KPIMON_KAFKA__BROKER": f"kafka://bob@{CANARY_PW}@h:9092"}, "more than one '@'"),
        (
            {"KPIMON_KAFKA__BROKER": f"kafka://h1:9092;bob:{CANARY_PW}@h2:9092"},
            "user info goes once, before the first host",
        ),
        ({"KPIMON_KAFKA__BROKER": f"kafka://:{CANARY_PW}@h:9092"}, "needs a user and a password"),
        ({"KPIMON_KAFKA__BROKER": "kafka://bob@h:9092"}, "needs a user and a password"),
        (
            {
                "KPIMON_KAFKA__BROKER": f"kafka://bob:{CANARY_PW}@h:9092",
                "KPIMON_KAFKA__SASL_PASSWORD": CANARY_FILE_PW,
            },
            "the user info of kafka.broker and kafka.sasl_password differ",
        ),
        (
            {
                "KPIMON_KAFKA__BROKER": f"kafka://bob:{CANARY_PW}@h:9092",
                "KPIMON_KAFKA__SASL_MECHANISM": "NOPE",
            },
            "kafka.sasl_mechanism",
        ),
    ],
)
def test_unusable_user_info_is_a_one_line_error_without_the_secret(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    done = kpimon(tmp_path, "config", env=clean_env(**env))
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("kpimon config: invalid configuration: ") and message in line, line
    assert_nowhere(CANARY_PW, done.stdout, done.stderr)
    assert_nowhere(CANARY_FILE_PW, done.stdout, done.stderr)


def test_unusable_user_info_in_the_broker_flag(tmp_path: Path) -> None:
    done = kpimon(tmp_path, "worker", "--broker", f"kafka://h1:9092;bob:{CANARY_PW}@h2:9092")
    assert done.returncode == 2
    assert "user info goes once" in done.stderr
    assert_nowhere(CANARY_PW, done.stdout, done.stderr)


@contextmanager
def fake_sasl_broker() -> Iterator[tuple[int, bytearray]]:
    """A port that answers a Kafka client's ApiVersions and SaslHandshake (v0,
    PLAIN), records everything it receives, and answers nothing else."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    received = bytearray()
    stop = threading.Event()

    def answer(conn: socket.socket, correlation: int, body: bytes) -> None:
        payload = struct.pack(">i", correlation) + body
        conn.sendall(struct.pack(">i", len(payload)) + payload)

    def talk(conn: socket.socket) -> None:
        conn.settimeout(0.2)
        buffer = b""
        while not stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            received.extend(chunk)
            buffer += chunk
            while len(buffer) >= 12:
                (size,) = struct.unpack(">i", buffer[:4])
                if len(buffer) < 4 + size:
                    break
                api_key, _, correlation = struct.unpack(">hhi", buffer[4:12])
                buffer = buffer[4 + size :]
                if api_key == 18:  # ApiVersions v0: ApiVersions, SaslHandshake v0, Metadata
                    apis = [(18, 0, 0), (17, 0, 0), (3, 0, 1)]
                    body = struct.pack(">hi", 0, len(apis))
                    body += b"".join(struct.pack(">hhh", *api) for api in apis)
                    answer(conn, correlation, body)
                elif api_key == 17:  # SaslHandshake v0: PLAIN it is
                    answer(conn, correlation, struct.pack(">hih", 0, 1, 5) + b"PLAIN")
        conn.close()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=talk, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], received
    finally:
        stop.set()
        thread.join()
        server.close()


def test_url_user_info_is_sent_as_sasl_plain_and_printed_nowhere(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"type": "state", "event_id": "e1", "ts": "2026-11-02T06:00:00Z", "site": "s",'
        ' "line": "l", "machine": "m", "state": "running"}\n'
    )
    for command in (
        ["worker"],
        ["demo", "--duration", "5"],
        ["produce", str(events)],
        ["simulate", "--days", "0.01"],
    ):
        with fake_sasl_broker() as (port, received):
            url = f"kafka://canary-user:{CANARY_PW.replace('-', '%2D')}@127.0.0.1:{port}"
            done = kpimon(tmp_path, *command, "--broker", url, "--connect-timeout", "2")
        # The client took the host from after the '@', and logged in with the user info.
        assert b"\x00canary-user\x00" + CANARY_PW.encode() in received, command
        assert done.returncode == 1, (command, done.stderr)
        assert f"cannot reach the broker kafka://127.0.0.1:{port}: " in done.stderr
        assert_nowhere(CANARY_PW, done.stdout, done.stderr, files_text(tmp_path))


# ---------------------------------------------------------- a live run, searched


def http_bodies(port: int, paths: list[str]) -> list[str]:
    bodies = []
    for path in paths:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
                bodies.append(resp.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as err:  # 404, 503: their bodies count too
            bodies.append(err.read().decode("utf-8", "replace"))
    return bodies


def closed_windows(port: int) -> bool:
    try:
        view = json.loads(http_bodies(port, ["/kpi"])[0])
    except (OSError, ValueError):
        return False
    return any(shard["last_closed"] for shard in view["shards"])


@pytest.mark.integration
def test_a_live_demo_with_canary_secrets_shows_them_nowhere(tmp_path: Path) -> None:
    config = tmp_path / "kpimon.toml"
    config.write_text(
        f'[kafka]\nsasl_username = "canary-user"\nsasl_password = "{CANARY_FILE_PW}"\n'
        '[worker]\nlog_level = "DEBUG"\n'
    )
    port = free_port()
    proc = subprocess.Popen(
        [KPIMON, "demo", "--config", str(config), "--port", str(port), "--duration", "40"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: closed_windows(port), 90, "closed windows on /kpi", every=1.0)
        bodies = http_bodies(port, ["/", "/kpi", "/metrics", "/healthz", "/readyz", "/nope"])
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    logs = files_text(tmp_path / ".kpimon-data")
    assert "kpimon" in logs  # the worker's DEBUG log is there to search
    shown = kpimon(tmp_path, "config", "--config", str(config))
    assert shown.returncode == 0 and '"sasl_username": "canary-user"' in shown.stdout
    assert_nowhere(
        CANARY_FILE_PW, stdout.decode(), stderr.decode(), logs, shown.stdout, shown.stderr, *bodies
    )
