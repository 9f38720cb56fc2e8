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

from pydantic import ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from streams.config import EngineConfig


class SettingsError(ValueError):
    """The configuration is invalid; the message names each bad setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KPIMON_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    engine: EngineConfig = EngineConfig()

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
