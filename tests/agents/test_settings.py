"""Configuration from a TOML file and the environment, validated up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.cli import main
from agents.settings import SettingsError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "kpimon.toml"
    path.write_text(text)
    return path


def test_defaults_are_documented_values() -> None:
    engine = load_settings().engine
    assert engine.window_labels() == ["1m", "1h", "1d"]
    assert (engine.allowed_lateness, engine.heartbeat_timeout, engine.decision_grace) == (
        "5m",
        None,  # opt-in: states hold until the next state event
        "7d",
    )
    assert (engine.revision_horizon, engine.silence_alert) == ("24h", "30m")


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[engine]\nallowed_lateness = "2m"\nheartbeat_timeout = "20m"\n')
    monkeypatch.setenv("KPIMON_ENGINE__HEARTBEAT_TIMEOUT", "3m")
    engine = load_settings(path).engine
    assert (engine.allowed_lateness, engine.heartbeat_timeout) == ("2m", "3m")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[engine]\nwindows = ["1x"]\n', "engine.windows"),
        ('[engine]\nheartbeat_timeout = "0s"\n', "engine.heartbeat_timeout"),
        ("[engine]\nbogus = 1\n", "engine.bogus"),
        ('[engine.pchart]\nmode = "magic"\n', "engine.pchart.mode"),
        ('[engine.pchart]\nscrap_window = "2h"\n', "pchart.scrap_window"),
        (
            '[engine.shift_calendar]\ntimezone = "Mars/Olympus"\nshifts = [{name = "a", start = "06:00", end = "14:00"}]\n',
            "Mars/Olympus",
        ),
        (
            '[engine.shift_calendar]\nshifts = [{name = "a", start = "06:00", end = "14:00"},'
            ' {name = "b", start = "13:00", end = "20:00"}]\n',
            "overlap",
        ),
        (
            '[engine.shift_calendar]\nshifts = [{name = "a", start = "25:00", end = "14:00"}]\n',
            "start",
        ),
        (
            "[worker]\ntick_interval = 5.0\nidle_advance_after = 10.0\n",
            "worker.idle_advance_after (10 s) must be at least 3 times worker.tick_interval",
        ),
    ],
)
def test_bad_settings_name_the_setting(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(write(tmp_path, text))
    assert names in str(err.value)


def test_cli_reports_bad_config_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[engine]\nwindows = ["1x"]\n')
    assert main(["config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "engine.windows" in err and "Traceback" not in err


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml")


def test_config_command_masks_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KPIMON_KAFKA__BROKER", "kafka://bob:hunter2@broker-1:9092")
    monkeypatch.setenv("KPIMON_KAFKA__SASL_USERNAME", "bob")
    monkeypatch.setenv("KPIMON_KAFKA__SASL_PASSWORD", "hunter2")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    # The URL's user info became the SASL credentials and left the URL.
    assert '"broker": "kafka://broker-1:9092"' in out and '"sasl_username": "bob"' in out


def test_settings_errors_do_not_echo_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPIMON_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("KPIMON_KAFKA__SASL_MECHANISM", "NOPE")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "kafka.sasl_mechanism" in str(err.value) and "hunter2" not in str(err.value)


def test_the_worker_log_level_is_a_setting_with_an_environment_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().worker.log_level == "WARNING"
    path = write(tmp_path, '[worker]\nlog_level = "error"\n')
    assert load_settings(path).worker.log_level == "ERROR"
    monkeypatch.setenv("KPIMON_WORKER__LOG_LEVEL", "info")
    assert load_settings(path).worker.log_level == "INFO"
    monkeypatch.setenv("KPIMON_WORKER__LOG_LEVEL", "chatty")
    with pytest.raises(SettingsError, match="worker.log_level"):
        load_settings(path)


def test_the_worker_role_comes_from_the_file_the_environment_or_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents.cli import build_parser
    from agents.cli_common import settings_with_broker

    assert load_settings().worker.role == "all"
    path = write(tmp_path, '[worker]\nrole = "engine"\n')
    assert load_settings(path).worker.role == "engine"
    monkeypatch.setenv("KPIMON_WORKER__ROLE", "ingest")
    assert load_settings(path).worker.role == "ingest"
    args = build_parser().parse_args(["worker", "--config", str(path), "--role", "all"])
    assert settings_with_broker(args).worker.role == "all"
    monkeypatch.setenv("KPIMON_WORKER__ROLE", "both")
    with pytest.raises(SettingsError, match="worker.role"):
        load_settings(path)


def test_a_wrong_role_on_the_command_line_is_one_clear_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["worker", "--role", "both"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--role" in err and "'both'" in err and "Traceback" not in err
