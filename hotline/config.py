"""Effective configuration: defaults < TOML file < HOTLINE_* environment variables.

Every setting is one field of `Config`; its environment variable is HOTLINE_<NAME IN CAPS> and
its TOML key is the field name. `hotline config` prints the result with secrets masked.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the setting and its source."""


SECRET_FIELDS = frozenset({"pii_key"})
URL_FIELDS = frozenset({"database_url", "redis_url"})


@dataclass(frozen=True)
class Config:
    # Where the embedded servers, the PII key and (later) recordings live.
    data_dir: Path = field(default_factory=lambda: Path.cwd() / ".hotline")
    # Unset means: start a private PostgreSQL / Redis in data_dir.
    database_url: str = ""
    redis_url: str = ""
    # Base64 of 32 random bytes. Unset: generated once into data_dir/pii.key (demo, tests).
    pii_key: str = ""
    timezone: str = "Asia/Shanghai"
    day_start: time = time(8, 0)
    day_end: time = time(17, 0)
    # auto: readable in a terminal, JSON lines otherwise.
    log_format: str = "auto"
    log_level: str = "info"
    # Who the CLI acts as in the audit log (defaults to the OS user).
    actor: str = ""

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def masked(self) -> dict[str, str]:
        """The effective settings as strings, secrets replaced so the output can be pasted."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            text = value.strftime("%H:%M") if isinstance(value, time) else str(value)
            if f.name in SECRET_FIELDS and text:
                text = "********"
            elif f.name in URL_FIELDS and text:
                text = mask_url_password(text)
            out[f.name] = text
        return out


def mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":********@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _env_name(name: str) -> str:
    return "HOTLINE_" + name.upper()


def _coerce(name: str, kind: Any, raw: Any, source: str) -> Any:
    try:
        if kind in (Path, "Path"):
            return Path(str(raw)).expanduser()
        if kind in (time, "time"):
            if isinstance(raw, time):
                return raw
            hours, minutes = str(raw).split(":")
            return time(int(hours), int(minutes))
        return str(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name} from {source}: cannot read {raw!r} ({exc})") from None


def load_config(
    env: Mapping[str, str] | None = None, config_file: str | os.PathLike[str] | None = None
) -> Config:
    """Build the effective configuration. `config_file` overrides HOTLINE_CONFIG."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    known = {f.name: f for f in fields(Config)}

    path = config_file or env.get("HOTLINE_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, raw in data.items():
            if key not in known:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, known[key].type, raw, str(path))

    for name, f in known.items():
        raw = env.get(_env_name(name))
        if raw is not None and raw != "":
            values[name] = _coerce(name, f.type, raw, _env_name(name))

    config = Config(**values)
    _validate(config)
    return config


def _validate(config: Config) -> None:
    try:
        config.tz  # noqa: B018 - raises on an unknown zone
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"timezone: unknown time zone {config.timezone!r}") from None
    if config.day_start >= config.day_end:
        raise ConfigError("day_start must be earlier than day_end")
    if config.log_format not in {"auto", "json", "console"}:
        raise ConfigError("log_format must be one of auto, json, console")
    for name in URL_FIELDS:
        url = getattr(config, name)
        scheme = urlsplit(url).scheme if url else ""
        allowed = {"database_url": {"postgres", "postgresql"},
                   "redis_url": {"redis", "rediss", "unix"}}[name]
        if url and scheme not in allowed:
            raise ConfigError(f"{name}: expected a {'/'.join(sorted(allowed))} URL, got {scheme or url!r}")

