"""Settings from a TOML file and the environment, validated at start-up.

Precedence: environment variables (`KPIMON_` prefix, `__` between nested
names, e.g. `KPIMON_ENGINE__ALLOWED_LATENESS=10m`) over the file given with
`--config` or `KPIMON_CONFIG`, over the defaults. A bad value is a clear
error naming the setting, before anything starts.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from streams.config import EngineConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicSettings(_Section):
    machine_state: str = "machine-state"
    orders: str = "orders"
    shipments: str = "shipments"
    windows: str = "kpi-windows"
    alerts: str = "kpi-alerts"
    dead_letter: str = "kpi-dead-letter"
    engine: str = "kpimon-engine"
    input_partitions: int = Field(4, ge=1, description="partitions of input topics kpimon creates")
    engine_partitions: int = Field(
        1, ge=1, description="partitions of the engine topic; 1 keeps every roll-up exact"
    )

    def sources(self) -> dict[str, str]:
        """Input topic name -> the contract's topic kind."""
        return {
            self.machine_state: "machine-state",
            self.orders: "orders",
            self.shipments: "shipments",
        }


class KafkaSettings(_Section):
    broker: str | None = Field(
        None,
        description="kafka://[user:password@]host:port[;host:port]; none starts the embedded "
        "broker; user info is used as SASL credentials (PLAIN unless sasl_mechanism says else)",
    )
    security_protocol: str = Field("PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$")
    sasl_mechanism: str | None = Field(None, pattern="^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    session_timeout: float = Field(
        10.0, gt=0, description="seconds; short so restarts rebalance fast"
    )
    heartbeat_interval: float = Field(1.0, gt=0)
    rebalance_timeout: float = Field(10.0, gt=0)
    fetch_max_wait: float = Field(
        0.1, gt=0, description="seconds a fetch may wait for data (Faust's own: 1.5)"
    )
    connect_timeout: float = Field(
        15.0,
        gt=0,
        description="seconds the worker, produce and simulate wait at start for the broker "
        "to answer as a Kafka broker before they give up",
    )

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_url(cls, data: Any) -> Any:
        """`kafka://user:password@host:port`: the user info becomes the SASL
        credentials and leaves the URL, so no client, log line or message sees it."""
        if not isinstance(data, dict) or not isinstance(data.get("broker"), str):
            return data
        scheme, hosts, user, password = split_user_info(data["broker"])
        if user is None:
            return data
        data = dict(data)
        data["broker"] = scheme + hosts
        for key, value in (("sasl_username", user), ("sasl_password", password)):
            given = data.get(key)
            if isinstance(given, SecretStr):
                given = given.get_secret_value()
            if given is not None and given != value:
                raise ValueError(
                    f"the user info of kafka.broker and kafka.{key} differ; give the "
                    "credentials once"
                )
            data[key] = value
        data["sasl_mechanism"] = data.get("sasl_mechanism") or "PLAIN"
        protocol = data.get("security_protocol") or "PLAINTEXT"
        data["security_protocol"] = {"PLAINTEXT": "SASL_PLAINTEXT", "SSL": "SASL_SSL"}.get(
            protocol, protocol
        )
        return data


class WorkerSettings(_Section):
    app_id: str = "kpimon"
    role: Literal["all", "ingest", "engine"] = Field(
        "all",
        description="the agents this worker runs: all, ingest (input topics to the engine "
        "topic) or engine (the engine topic to the KPIs); one group may mix them",
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=0, le=65535)
    store: str = Field("memory://", description="memory:// or rocksdb:// for the table store")
    data_dir: str = Field(".kpimon-data", description="Faust data directory (RocksDB files)")
    snapshot_interval: float = Field(
        2.0,
        gt=0,
        description="seconds between state snapshots, at least 10 times the last one's duration",
    )
    tick_interval: float = Field(1.0, gt=0, description="seconds between clock ticks")
    idle_advance_after: float = Field(
        30.0,
        gt=0,
        description="seconds without events after which event time follows the clock (while "
        "ticks report every input read to its end); at least 3 tick intervals",
    )
    max_future_skew: float = Field(
        900.0, gt=0, description="seconds an event may be ahead of the worker's clock"
    )
    ingest_batch: int = Field(
        1000, ge=1, description="input messages the ingest agent forwards together, at most"
    )
    ingest_within: float = Field(
        0.05, gt=0, description="seconds ingest waits to fill a batch before forwarding it"
    )
    max_message_bytes: int = Field(1_048_576, ge=1024)
    max_batch: int = Field(10_000, ge=1)
    log_level: str = Field(
        "WARNING",
        pattern="^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
        description="level of the worker's log (worker.log in data_dir); INFO shows "
        "rebalances, assignments, table recovery and snapshot restores",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _ticks_renew_idle_reports(self) -> WorkerSettings:
        # A tick's "read to its end" holds for idle_advance_after (`streams.clock`):
        # with fewer ticks in that time it would lapse between two of them, and
        # event time would stop and go with every tick.
        if self.idle_advance_after < 3 * self.tick_interval:
            raise ValueError(
                f"worker.idle_advance_after ({self.idle_advance_after:g} s) must be at least "
                f"3 times worker.tick_interval ({self.tick_interval:g} s)"
            )
        return self


_USER_INFO = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?(?P<info>[^@]*)@(?P<hosts>[^@]*)$"
)


def split_user_info(url: str) -> tuple[str, str, str | None, str | None]:
    """`kafka://user:pw@host:port` -> ("kafka://", "host:port", "user", "pw");
    (scheme, hosts, None, None) without user info. User and password are
    percent-decoded (`%40` for an `@` in a password). Raises ValueError, without
    echoing the URL, when the user info cannot be used."""
    match = _USER_INFO.match(url.strip())
    if match is None:
        if "@" in url:
            raise ValueError(
                "kafka.broker: more than one '@'; percent-encode an '@' in the password as %40"
            )
        scheme, _, hosts = url.strip().rpartition("://")
        return (scheme + "://" if scheme else ""), hosts, None, None
    info = match["info"]
    if ";" in info or "," in info:
        raise ValueError(
            "kafka.broker: user info goes once, before the first host "
            "(kafka://user:password@host1:9092;host2:9092)"
        )
    user, colon, password = info.partition(":")
    if not user or not colon or not password:
        raise ValueError(
            "kafka.broker: user info needs a user and a password (kafka://user:password@host:port)"
        )
    return match["scheme"] or "", match["hosts"], unquote(user), unquote(password)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """A message fit to print: the password of any URL's user info masked
    (`kafka://user:*****@host`), and every given secret value too."""
    text = re.sub(r"(://[^/:@\s]*):[^@/\s]*@", r"\1:*****@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "*****")
    return text


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """The secret values of the settings, for :func:`redact`."""
    password = settings.kafka.sasl_password
    return (password.get_secret_value(),) if password is not None else ()


class SettingsError(ValueError):
    """The configuration is invalid; the message names each bad setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KPIMON_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    engine: EngineConfig = EngineConfig()
    topics: TopicSettings = TopicSettings()
    kafka: KafkaSettings = KafkaSettings()
    worker: WorkerSettings = WorkerSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file named in model_config (see load_settings), if any.
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


def _describe(exc: ValidationError, prefix: str = "") -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in (prefix, *err["loc"]) if p) or "(settings)"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(message if message.startswith(f"{where}.") else f"{where}: {message}")
    return "; ".join(parts)


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Settings from defaults, the TOML file, the environment and overrides."""
    path = path or os.environ.get("KPIMON_CONFIG")
    if path and not Path(path).is_file():
        raise SettingsError(f"config file not found: {path}")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=str(path) if path else None)

    try:
        return FileSettings(**overrides)
    except ValidationError as exc:
        raise SettingsError(f"invalid configuration: {_describe(exc)}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read the config file {path}: {exc}") from None


def with_kafka(settings: Settings, **updates: Any) -> Settings:
    """The settings with some `kafka` values replaced, validated again (so a
    `--broker` with user info gets the same treatment as the setting)."""
    current = settings.kafka.model_dump()
    broker = updates.get("broker")
    if isinstance(broker, str):
        try:
            user = split_user_info(broker)[2]
        except ValueError as exc:
            raise SettingsError(f"invalid configuration: {exc}") from None
        if user is not None:  # the URL's credentials replace the configured ones
            current.pop("sasl_username")
            current.pop("sasl_password")
    try:
        kafka = KafkaSettings.model_validate({**current, **updates})
    except ValidationError as exc:
        raise SettingsError(f"invalid configuration: {_describe(exc, 'kafka')}") from None
    return settings.model_copy(update={"kafka": kafka})
