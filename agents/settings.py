"""Settings from a TOML file and the environment, validated at start-up.

Precedence: environment variables (`KPIMON_` prefix, `__` between nested
names, e.g. `KPIMON_ENGINE__ALLOWED_LATENESS=10m`) over the file given with
`--config` or `KPIMON_CONFIG`, over the defaults. A bad value is a clear
error naming the setting, before anything starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
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
        None, description="kafka://host:port[;host:port]; none starts the embedded broker"
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


class WorkerSettings(_Section):
    app_id: str = "kpimon"
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
        30.0, gt=0, description="seconds without events after which event time follows the clock"
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


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(settings)"
        parts.append(f"{where}: {err['msg']}")
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
