"""Effective configuration: defaults < TOML file < HOTLINE_* environment variables.

Every setting is one field of `Config`; its environment variable is HOTLINE_<NAME IN CAPS> and
its TOML key is the field name. `hotline config` prints the result with secrets masked.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the setting and its source."""


SECRET_FIELDS = frozenset({"pii_key", "sip_password"})
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
    # A name the CLI's user claims (HOTLINE_ACTOR). The audit log's actor is always who the
    # system knows (the OS user, cli:<user>); a claim is kept beside it, never instead.
    actor: str = ""
    # The district's telephone area code, with its 0: completes local landlines written (or
    # sent by a trunk) without one, 25320001 → 02225320001 (routing/numbers.py).
    area_code: str = "022"

    # --- the SIP edge (`hotline serve`) ---
    # The PBX the service registers with, host:port; it is also the outbound proxy for dialing.
    sip_registrar: str = "127.0.0.1:5060"
    sip_user: str = "hotline"  # the hotline's own extension: residents dial this
    sip_password: str = ""  # digest password, when the registrar challenges
    # the digest realm of the production PBX (its SIP_REALM): part of every stored password hash
    sip_realm: str = "jiayi-hotline"
    sip_local_ip: str = "127.0.0.1"
    sip_port: int = 5070
    rtp_port_low: int = 20000
    rtp_port_high: int = 20999
    # Addresses SIP requests are taken from, comma-separated (the PBX and its peers). Unset: the
    # registrar's host. A request from anywhere else gets 403, or nothing with sip_untrusted=drop.
    sip_trusted: str = ""
    sip_untrusted: str = "reject"
    # Calls in progress on this node at most; the next caller gets 503 with Retry-After before
    # any ringing (the PBX may try another node). bench/calls: relayed audio stays clean (no gap
    # over 60 ms) up to 40 bridged, recorded calls on 2 cores; at 60 gaps reach 270 ms.
    max_calls: int = 40
    # How long a phone rings before the next in the chain is tried: one value for every step,
    # and per step overrides, e.g. "own_doctor=25,assistant=15,duty=30,desk=40" (steps:
    # own_doctor, assistant, team, center_agents, duty, backup, desk).
    ring_timeout_s: float = 20.0
    ring_timeouts: str = ""
    # Seconds the caller has to press a key after the menu.
    menu_timeout_s: float = 5.0
    # When everyone is busy: the longest wait in the queue before voicemail, how often the
    # position is announced, and the longest message.
    queue_wait_s: float = 120.0
    queue_announce_every_s: float = 20.0
    voicemail_max_s: float = 60.0
    # On SIGTERM/SIGINT the node stops taking calls (unregisters; an INVITE still arriving gets
    # 503) and lets the calls in progress end by themselves for at most this long; a second
    # signal, or the time running out, hangs them up. 0: hang up at once.
    drain_s: float = 120.0
    # A call leg that sends no RTP for this long is taken for dead (both phones gone without a
    # BYE): both legs are hung up, the record says 'media timeout'. And no call lasts longer
    # than max_call_s ('max call length').
    rtp_timeout_s: float = 60.0
    max_call_s: float = 4 * 3600.0
    # The deadline watcher (handover/watcher.py): the acting node sweeps this often (at most 30 s,
    # so a breach is seen within a minute), the others try for its lock this often (a node that
    # dies is replaced within about this, and at most 10 s).
    watch_sweep_s: float = 20.0
    watch_poll_s: float = 3.0
    # This service node's name in call records (several nodes may share one database).
    # Unset: <host name>:<sip_port>.
    node_name: str = ""
    # Unset: data_dir/recordings.
    recordings_dir: str = ""
    # ISO 8601 instant the service's clock starts at, then runs at real speed (tests, demos
    # outside office hours). Unset: the wall clock.
    clock_start: str = ""

    # --- click-to-call: a staff member calls a task's resident back through the hotline ---
    # The number residents are shown (P-Asserted-Identity and display name towards the PSTN
    # trunk): the hotline's public number, digits only. Unset: whatever the trunk presents.
    callback_caller_id: str = ""
    # How long her own softphone rings, then the resident's phone.
    click_to_call_staff_ring_s: float = 30.0
    click_to_call_ring_s: float = 45.0
    # A request no service node takes within this long is dropped, never placed late.
    click_to_call_pickup_s: float = 30.0

    # --- the console (`hotline serve` beside SIP, or `hotline web` alone) ---
    # Loopback unless configured: the console shows medical data, so it is exposed on purpose
    # (behind the district's TLS proxy), never by default.
    web_host: str = "127.0.0.1"
    web_port: int = 8080  # 0: any free port (printed at start; tests)
    # true behind TLS: the session cookie gets the Secure flag.
    web_secure_cookie: bool = False
    # A session unused this long is ended (the 30 minutes).
    web_idle_timeout_s: float = 1800.0

    @property
    def registrar(self) -> tuple[str, int]:
        host, _, port = self.sip_registrar.rpartition(":")
        return host, int(port)

    @property
    def trusted_addresses(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.sip_trusted.split(",") if a.strip())

    @property
    def step_ring_timeouts(self) -> dict[str, float]:
        return _step_ring_timeouts(self.ring_timeout_s, self.ring_timeouts)

    @property
    def node(self) -> str:
        return self.node_name or f"{socket.gethostname()}:{self.sip_port}"

    @property
    def recordings_path(self) -> Path:
        return Path(self.recordings_dir) if self.recordings_dir else self.data_dir / "recordings"

    @property
    def clock_start_at(self) -> datetime | None:
        return datetime.fromisoformat(self.clock_start) if self.clock_start else None

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


def _step_ring_timeouts(default_s: float, overrides: str) -> dict[str, float]:
    """Ring timeout per chain step: `default_s` for all, then "step=seconds,…" overrides."""
    from routing.chain import DEFAULT_RING_TIMEOUTS

    timeouts = dict.fromkeys(DEFAULT_RING_TIMEOUTS, default_s)
    for item in filter(None, (p.strip() for p in overrides.split(","))):
        step, _, seconds = item.partition("=")
        if step.strip() not in DEFAULT_RING_TIMEOUTS:
            raise ConfigError(f"ring_timeouts: unknown step {step.strip()!r}; steps are "
                              f"{', '.join(DEFAULT_RING_TIMEOUTS)}")
        try:
            value = float(seconds)
        except ValueError:
            value = 0.0
        if value <= 0:
            raise ConfigError(f"ring_timeouts: {item!r} needs a positive number of seconds")
        timeouts[step.strip()] = value
    return timeouts


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
        if kind in (bool, "bool"):
            if isinstance(raw, bool):
                return raw
            words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
            if str(raw).strip().lower() not in words:
                raise ValueError("expected true or false")
            return words[str(raw).strip().lower()]
        if kind in (int, "int"):
            return int(raw)
        if kind in (float, "float"):
            return float(raw)
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
    from routing.numbers import InvalidNumber, check_area_code

    try:
        check_area_code(config.area_code)
    except InvalidNumber as exc:
        raise ConfigError(f"area_code: {exc}") from None
    if config.day_start >= config.day_end:
        raise ConfigError("day_start must be earlier than day_end")
    host, _, port = config.sip_registrar.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"sip_registrar: expected host:port, got {config.sip_registrar!r}")
    if not 0 <= config.web_port < 65536:
        raise ConfigError(f"web_port: not a port number: {config.web_port} (0: any free port)")
    for name in ("sip_port", "rtp_port_low", "rtp_port_high"):
        if not 0 < getattr(config, name) < 65536:
            raise ConfigError(f"{name}: not a port number: {getattr(config, name)}")
    if config.rtp_port_low >= config.rtp_port_high:
        raise ConfigError("rtp_port_low must be below rtp_port_high")
    if config.sip_untrusted not in ("reject", "drop"):
        raise ConfigError("sip_untrusted must be reject (answer 403) or drop (answer nothing)")
    if config.max_calls < 1:
        raise ConfigError("max_calls must be at least 1")
    for address in config.trusted_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(f"sip_trusted: not an IP address: {address!r}") from None
    for name in ("ring_timeout_s", "menu_timeout_s", "queue_announce_every_s", "voicemail_max_s",
                 "rtp_timeout_s", "max_call_s", "web_idle_timeout_s", "click_to_call_staff_ring_s",
                 "click_to_call_ring_s", "click_to_call_pickup_s"):
        if not 0 < getattr(config, name) < math.inf:  # nan and inf are no durations either
            raise ConfigError(f"{name} must be positive")
    if config.callback_caller_id and not (config.callback_caller_id.isascii()
                                          and config.callback_caller_id.isdigit()
                                          and len(config.callback_caller_id) <= 20):
        raise ConfigError("callback_caller_id: the hotline's number, digits only (e.g. 02225300000)")
    if config.click_to_call_pickup_s > 3600:
        raise ConfigError("click_to_call_pickup_s: at most 3600 seconds")
    if not 0 < config.watch_sweep_s <= 30:
        raise ConfigError("watch_sweep_s must be more than 0 and at most 30 (a breach seen within a minute)")
    if not 0 < config.watch_poll_s <= 9:
        raise ConfigError("watch_poll_s must be more than 0 and at most 9 (a dead node replaced within 10 s)")
    if config.queue_wait_s < 0:
        raise ConfigError("queue_wait_s cannot be negative (0: no queue, straight to voicemail)")
    if config.drain_s < 0:
        raise ConfigError("drain_s cannot be negative (0: hang up the calls at once on stop)")
    _step_ring_timeouts(config.ring_timeout_s, config.ring_timeouts)  # raises on a bad entry
    if config.clock_start:
        try:
            start = datetime.fromisoformat(config.clock_start)
        except ValueError:
            raise ConfigError(f"clock_start: not an ISO 8601 instant: {config.clock_start!r}") from None
        if start.tzinfo is None:
            raise ConfigError("clock_start needs a UTC offset, e.g. 2026-11-24T10:00:00+08:00")
    if config.log_format not in {"auto", "json", "console"}:
        raise ConfigError("log_format must be one of auto, json, console")
    for name in URL_FIELDS:
        url = getattr(config, name)
        scheme = urlsplit(url).scheme if url else ""
        allowed = {"database_url": {"postgres", "postgresql"},
                   "redis_url": {"redis", "rediss", "unix"}}[name]
        if url and scheme not in allowed:
            raise ConfigError(f"{name}: expected a {'/'.join(sorted(allowed))} URL, got {scheme or url!r}")

