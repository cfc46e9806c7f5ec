"""The console's settings: the bus's (``REDIS_URL``, ``REDIS_KEY_PREFIX``, TLS files, ...).

``--redis-url`` and ``--env-file`` override the environment. A bad setting is one line
naming it (never its value) and exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from bus.settings import BusSettings, describe_settings_error

__all__ = ["ConfigError", "OpsSettings", "load_settings", "load_with"]

M = TypeVar("M", bound=BaseModel)


class ConfigError(Exception):
    """A setting is missing or invalid; the message names it and never holds its value."""


class OpsSettings(BusSettings):
    """What the console reads from the environment: the bus settings, nothing more."""


def load_with(factory: type[M], env_file: Path | None, **overrides: Any) -> M:
    """``factory`` from the environment (and ``env_file``), with ``overrides`` applied.

    Raises :class:`ConfigError` naming the bad settings.
    """
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"--env-file {env_file} is not a readable file")
    values = {name: value for name, value in overrides.items() if value is not None}
    try:
        return factory(_env_file=env_file, **values)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {describe_settings_error(exc)}") from None


def load_settings(redis_url: str | None = None, env_file: Path | None = None) -> OpsSettings:
    """The console's settings; ``redis_url`` (from ``--redis-url``) wins over ``REDIS_URL``."""
    return load_with(OpsSettings, env_file, redis_url=redis_url)
