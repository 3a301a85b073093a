"""Staff presence in Redis: who may be rung now, and a claim so nobody is rung by two calls.

Several service nodes share one Redis. Every routing decision reads the states of the people in
its chain (one MGET, `Presence.states`); before ringing someone a call claims them
(`Presence.claim`, atomic, with an expiry so a node that dies mid-ring frees them by itself);
when they answer the claim turns into `on_call` (`call_started`) and when the call ends they are
available again (`call_ended`, only by the call that owns the state).

Key layout (all strings; the database of HOTLINE_REDIS_URL):

    hotline:presence:<staff_id>  JSON {"state": "on_call" | "dnd" | "offline",
                                       "since": ISO 8601 with offset,
                                       "call_id": "…"  (on_call only)}
                                 absent = available (unknown people are ringable).
                                 on_call: expires after ON_CALL_TTL_S unless refreshed (`extend`),
                                   so a node that dies mid-call cannot keep a doctor busy forever;
                                 dnd: set by the console, no expiry;
                                 offline: by the console (no expiry), or by the service when a
                                   dial came back unreachable (`mark_offline`, OFFLINE_TTL_S), so a
                                   phone that registers again is ringable without anyone clearing it;
                                   cleared at once when the PBX says the phone registered
                                   (`registered`, routing/registrations.py).
    hotline:claim:<staff_id>     "<since ISO 8601> <call_id>": the call ringing this person now;
                                 created only if absent (and the person is not on another call,
                                 dnd or offline), expires after the claim's ttl, deleted only by
                                 its owner (Lua compare-and-delete).

A person with a claim and no presence key reads as `ringing` (busy for every other call).

Degraded mode: when Redis is unreachable, times out or errs (ConnectionError, TimeoutError,
OSError, any RedisError: READONLY after a failover, OOM, MISCONF…), routing rings without
presence — reads give `unknown` (ringable), claims are granted without a lock, writes are
skipped — and calls still connect. The first failure logs one `presence.degraded` warning and
starts a back-off (BACKOFF_S) during which Redis is not tried at all; then one operation probes
it, and when that works `presence.restored` is logged. Every operation answered without Redis is
counted in `Presence.degraded_operations`. Each operation is bounded by `timeout_s` whatever the
client's own socket timeouts and retries; `presence_client` makes a client that fails fast.

This module knows nothing of SIP or the web: staff are ids, calls are call-id strings.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from store.errors import reason_of

log = structlog.get_logger("routing.presence")

PRESENCE_PREFIX = "hotline:presence:"
CLAIM_PREFIX = "hotline:claim:"
# A person's state changed by the console or the PBX (not by a call: a call's steps are on the live
# feed already): the staff id is published here, so boards update within a second instead of at
# their next snapshot. Readers fetch the state itself through `state` (scope-checked by them).
CHANGES_CHANNEL = "hotline:presence-changes"
SHANGHAI = ZoneInfo("Asia/Shanghai")

OP_TIMEOUT_S = 0.05       # one Redis operation, whatever the client's own timeouts
BACKOFF_S = 1.0           # after a failure, Redis is not tried again for this long
OFFLINE_TTL_S = 120.0     # an unreachable phone is skipped for this long
ON_CALL_TTL_S = 3600.0    # an on_call state outlives a dead node by at most this

# Redis is down, slow or refusing writes: ring without presence rather than fail the call.
# (Builtin TimeoutError and ConnectionError are OSErrors; redis-py's own are RedisErrors.)
REDIS_DOWN: tuple[type[BaseException], ...] = (RedisError, OSError)

T = TypeVar("T")


class Kind(StrEnum):
    AVAILABLE = "available"  # no key: nobody said otherwise
    RINGING = "ringing"      # claimed by a call that is ringing them
    ON_CALL = "on_call"
    DND = "dnd"              # do not disturb (console)
    OFFLINE = "offline"      # not registered (console, or an unreachable dial)
    UNKNOWN = "unknown"      # Redis unreachable: rung anyway


RINGABLE = frozenset({Kind.AVAILABLE, Kind.UNKNOWN})
CONSOLE_KINDS = frozenset({Kind.AVAILABLE, Kind.DND, Kind.OFFLINE})


@dataclass(frozen=True)
class StaffState:
    """One person's live state as read from Redis (routing.chain's PresenceView)."""

    staff_id: int
    kind: Kind
    since: datetime | None = None     # aware; None for available and unknown
    call_id: str | None = None        # on_call and ringing: the call that holds them
    tz: tzinfo = field(default=SHANGHAI, compare=False, repr=False)  # for describe()
    as_of: datetime | None = field(default=None, compare=False, repr=False)  # when it was read

    @property
    def ringable(self) -> bool:
        return self.kind in RINGABLE

    @property
    def busy(self) -> bool:
        """Ringing for, or talking on, a call."""
        return self.kind in (Kind.RINGING, Kind.ON_CALL)

    def describe(self, tz: tzinfo | None = None) -> str:
        return describe(self, tz or self.tz)


def describe(state: StaffState, tz: tzinfo = SHANGHAI) -> str:
    """For explanations: "busy (on call since 10:02)", "do not disturb since 09:30"…

    Times are local to `tz`; the date is added ("since 11-23 18:30") when `since` lies on
    another day than the moment the state was read.
    """
    at = ""
    if state.since is not None:
        local = state.since.astimezone(tz)
        read = state.as_of.astimezone(tz).date() if state.as_of is not None else local.date()
        at = f"{local:%m-%d %H:%M}" if read != local.date() else f"{local:%H:%M}"
    since = f" since {at}" if at else ""
    match state.kind:
        case Kind.AVAILABLE:
            return "available"
        case Kind.UNKNOWN:
            return "presence unknown (Redis unreachable)"
        case Kind.RINGING:
            return f"busy (ringing for another call{since})"
        case Kind.ON_CALL:
            return f"busy (on call{since})"
        case Kind.DND:
            return f"do not disturb{since}"
        case Kind.OFFLINE:
            return f"offline (not registered){since}"
    raise ValueError(f"unknown presence state {state.kind!r}")


def presence_key(staff_id: int) -> str:
    return f"{PRESENCE_PREFIX}{staff_id}"


def claim_key(staff_id: int) -> str:
    return f"{CLAIM_PREFIX}{staff_id}"


def presence_client(url: str, timeout_s: float = OP_TIMEOUT_S) -> aioredis.Redis:
    """A client for presence that fails fast: short socket timeouts, no retries, no ping.

    It connects lazily, so it can be made while Redis is down (presence then starts degraded).
    """
    return aioredis.Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


# --- Lua: every check-and-write is one script, atomic on the server -------------------------------

# Shared helpers: the owner (call id) of a claim value "<since> <call_id>"; a presence JSON.
_HELPERS = """
local function owner(v)
  if not v then return nil end
  local sp = string.find(v, ' ', 1, true)
  if not sp then return nil end
  return string.sub(v, sp + 1)
end
local function state_of(v)
  if not v then return nil end
  local ok, s = pcall(cjson.decode, v)
  if ok and type(s) == 'table' then return s end
  return nil
end
"""

# KEYS: claim, presence. ARGV: call_id, claim value, ttl ms. 1 = this call holds the claim.
_CLAIM = _HELPERS + """
local held = redis.call('GET', KEYS[1])
if held then
  if owner(held) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
  end
  return 0
end
local s = state_of(redis.call('GET', KEYS[2]))
if s then
  if s.state == 'on_call' and s.call_id ~= ARGV[1] then return 0 end
  if s.state == 'dnd' or s.state == 'offline' then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# KEYS: claim. ARGV: call_id.
_RELEASE = _HELPERS + """
if owner(redis.call('GET', KEYS[1])) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""

# KEYS: claim, presence. ARGV: call_id, ttl ms. Refreshes what this call holds.
_EXTEND = _HELPERS + """
local n = 0
if owner(redis.call('GET', KEYS[1])) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  n = n + 1
end
local s = state_of(redis.call('GET', KEYS[2]))
if s and s.state == 'on_call' and s.call_id == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  n = n + 1
end
return n
"""

# KEYS: claim, presence. ARGV: call_id, presence JSON, ttl ms. The claim becomes on_call.
_CALL_STARTED = _HELPERS + """
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if owner(redis.call('GET', KEYS[1])) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"""

# KEYS: claim, presence. ARGV: call_id. Only the call that owns the state clears it.
_CALL_ENDED = _HELPERS + """
if owner(redis.call('GET', KEYS[1])) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
local s = state_of(redis.call('GET', KEYS[2]))
if s and s.state == 'on_call' and s.call_id == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""

# KEYS: presence. ARGV: offline JSON, ttl ms. Never overrides dnd, on_call or a console's
# offline without expiry; refreshing an unreachable-offline keeps its `since`.
_MARK_OFFLINE = _HELPERS + """
local cur = redis.call('GET', KEYS[1])
if cur then
  local s = state_of(cur)
  if s and s.state ~= 'offline' then return 0 end
  if s and redis.call('PTTL', KEYS[1]) < 0 then return 0 end
  if s then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: presence. The phone registered: an offline mark with an expiry (the service's guess
# after an unreachable dial) goes; a console's offline (no expiry), dnd and on_call stay.
_REGISTERED = _HELPERS + """
local s = state_of(redis.call('GET', KEYS[1]))
if s and s.state == 'offline' and redis.call('PTTL', KEYS[1]) >= 0 then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: presence. Back to available, unless on a call (the call's end clears that).
_SET_AVAILABLE = _HELPERS + """
local s = state_of(redis.call('GET', KEYS[1]))
if s and s.state == 'on_call' then return 0 end
return redis.call('DEL', KEYS[1])
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class Presence:
    """Staff states and claims in Redis, shared by every node; degrades to "everyone ringable".

    `client` is a redis.asyncio client (preferably `presence_client(url)`); `now` gives the
    aware instants stored as `since` (the service's clock); `tz` is the zone of descriptions.
    """

    def __init__(self, client: aioredis.Redis, *, tz: tzinfo = SHANGHAI,
                 now: Callable[[], datetime] | None = None, timeout_s: float = OP_TIMEOUT_S,
                 backoff_s: float = BACKOFF_S, offline_ttl_s: float = OFFLINE_TTL_S,
                 monotonic: Callable[[], float] = time.monotonic,
                 changes_channel: str = CHANGES_CHANNEL):
        self.client = client
        self.changes_channel = changes_channel
        self.tz = tz
        self.now = now or (lambda: datetime.now(UTC))
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.offline_ttl_s = offline_ttl_s
        self.monotonic = monotonic
        self.degraded_operations = 0  # operations answered without Redis, since start
        self._degraded_at: float | None = None  # monotonic time of the first failure
        self._degraded_ops_at_start = 0
        self._retry_at = 0.0
        self._scripts = {name: client.register_script(src) for name, src in (
            ("claim", _CLAIM), ("release", _RELEASE), ("extend", _EXTEND),
            ("call_started", _CALL_STARTED), ("call_ended", _CALL_ENDED),
            ("mark_offline", _MARK_OFFLINE), ("set_available", _SET_AVAILABLE),
            ("registered", _REGISTERED))}

    @property
    def degraded(self) -> bool:
        return self._degraded_at is not None

    # --- reading ---------------------------------------------------------------------------------

    async def states(self, staff_ids: Iterable[int]) -> dict[int, StaffState]:
        """Everyone's state in one round trip (MGET of presence and claim keys)."""
        ids = list(dict.fromkeys(staff_ids))
        if not ids:
            return {}
        keys = [presence_key(i) for i in ids] + [claim_key(i) for i in ids]

        async def read() -> list[Any]:
            return await self.client.mget(keys)

        values = await self._run("states", read, None)
        as_of = self.now()
        if values is None:
            return {i: StaffState(i, Kind.UNKNOWN, tz=self.tz, as_of=as_of) for i in ids}
        n = len(ids)
        return {i: self._parse(i, values[k], values[n + k], as_of) for k, i in enumerate(ids)}

    async def state(self, staff_id: int) -> StaffState:
        return (await self.states([staff_id]))[staff_id]

    def _parse(self, staff_id: int, raw: bytes | None, claim: bytes | None,
               as_of: datetime) -> StaffState:
        if raw is not None:
            try:
                doc = json.loads(raw)
                kind = Kind(doc["state"])
                since = datetime.fromisoformat(doc["since"]) if doc.get("since") else None
                call_id = doc.get("call_id")
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("presence.bad_value", staff_id=staff_id, error=str(exc))
                return StaffState(staff_id, Kind.UNKNOWN, tz=self.tz, as_of=as_of)
            if kind in (Kind.ON_CALL, Kind.DND, Kind.OFFLINE):
                return StaffState(staff_id, kind, since, call_id, tz=self.tz, as_of=as_of)
        if claim is not None:
            text = claim.decode("utf-8", "replace")
            stamp, _, call_id = text.partition(" ")
            try:
                since = datetime.fromisoformat(stamp)
            except ValueError:
                since = None
            return StaffState(staff_id, Kind.RINGING, since, call_id or None, tz=self.tz, as_of=as_of)
        return StaffState(staff_id, Kind.AVAILABLE, tz=self.tz, as_of=as_of)

    # --- claims ----------------------------------------------------------------------------------

    async def claim(self, staff_id: int, call_id: str, ttl_s: float) -> bool:
        """True if `call_id` may ring this person now: only one call at a time gets True.

        Refused while another call holds the claim or has them on_call, and while they are dnd
        or offline. The claim expires after `ttl_s` by itself; claiming again by the same call
        refreshes it. Degraded: True (granted without a lock).
        """
        value = f"{self._stamp()} {call_id}"
        return bool(await self._script("claim", [claim_key(staff_id), presence_key(staff_id)],
                                       [call_id, value, _ms(ttl_s)], fallback=1))

    async def extend(self, staff_id: int, call_id: str, ttl_s: float) -> bool:
        """Refresh what `call_id` holds (its claim, its on_call state) to expire in `ttl_s`;
        False if it holds nothing. Degraded: True."""
        return bool(await self._script("extend", [claim_key(staff_id), presence_key(staff_id)],
                                       [call_id, _ms(ttl_s)], fallback=1))

    async def release(self, staff_id: int, call_id: str) -> bool:
        """Drop the claim if `call_id` still holds it (True); another call's claim is left alone."""
        return bool(await self._script("release", [claim_key(staff_id)], [call_id], fallback=0))

    # --- the service's own calls -----------------------------------------------------------------

    async def call_started(self, staff_id: int, call_id: str, ttl_s: float = ON_CALL_TTL_S) -> bool:
        """They answered `call_id`: on_call since now (expiring after `ttl_s` unless extended),
        and the call's claim is dropped in the same step."""
        doc = json.dumps({"state": Kind.ON_CALL.value, "since": self._stamp(), "call_id": call_id})
        return bool(await self._script("call_started", [claim_key(staff_id), presence_key(staff_id)],
                                       [call_id, doc, _ms(ttl_s)], fallback=0))

    async def call_ended(self, staff_id: int, call_id: str) -> bool:
        """`call_id` ended: available again, if that call still owns their state (True)."""
        return bool(await self._script("call_ended", [claim_key(staff_id), presence_key(staff_id)],
                                       [call_id], fallback=0))

    async def mark_offline(self, staff_id: int, ttl_s: float | None = None) -> bool:
        """A dial to them came back unreachable: offline for `ttl_s` (default OFFLINE_TTL_S).

        Leaves dnd, on_call and a console's offline as they are; refreshing keeps `since`.
        """
        doc = json.dumps({"state": Kind.OFFLINE.value, "since": self._stamp()})
        ttl = self.offline_ttl_s if ttl_s is None else ttl_s
        return await self._announced(staff_id, bool(await self._script(
            "mark_offline", [presence_key(staff_id)], [doc, _ms(ttl)], fallback=0)))

    async def registered(self, staff_id: int) -> bool:
        """Their phone just registered with the PBX: the offline mark a failed dial left
        (`mark_offline`) is cleared at once (True), so the next call rings them. A console's
        offline, dnd and on_call are people's or calls' states and stay."""
        return await self._announced(staff_id, bool(await self._script(
            "registered", [presence_key(staff_id)], [], fallback=0)))

    # --- the console -----------------------------------------------------------------------------

    async def set_state(self, staff_id: int, kind: Kind | str, *, ttl_s: float | None = None) -> bool:
        """Set by a person (console): available, dnd or offline; `ttl_s` None = until changed.

        `available` does not end an on_call state (the call's end does; `clear` forces it);
        dnd and offline replace whatever was there.
        """
        kind = Kind(kind)
        if kind not in CONSOLE_KINDS:
            raise ValueError(f"the console sets available, dnd or offline, not {kind.value}")
        key = presence_key(staff_id)
        if kind is Kind.AVAILABLE:
            return await self._announced(staff_id, bool(await self._script(
                "set_available", [key], [], fallback=0)))
        doc = json.dumps({"state": kind.value, "since": self._stamp()})

        async def write() -> bool:
            return bool(await self.client.set(key, doc, px=_ms(ttl_s) if ttl_s is not None else None))

        return await self._announced(staff_id, await self._run("set_state", write, False))

    async def clear(self, staff_id: int) -> bool:
        """Forget everything about them (state and claim): an administrator's reset."""
        async def delete() -> bool:
            return bool(await self.client.delete(presence_key(staff_id), claim_key(staff_id)))

        return await self._announced(staff_id, await self._run("clear", delete, False))

    async def _announced(self, staff_id: int, changed: bool) -> bool:
        """Tell the boards that `staff_id`'s state changed (when it did); returns `changed`."""
        if changed:
            async def publish() -> int:
                return int(await self.client.publish(self.changes_channel, str(int(staff_id))))

            await self._run("announce", publish, 0)
        return changed

    # --- Redis, or not ---------------------------------------------------------------------------

    def _stamp(self) -> str:
        now = self.now()
        if now.tzinfo is None:
            raise ValueError("presence needs an aware clock")
        return now.isoformat(timespec="seconds")

    async def _script(self, name: str, keys: list[str], args: list[Any], *, fallback: int) -> int:
        script = self._scripts[name]

        async def call() -> int:
            return int(await script(keys=keys, args=args, client=self.client))

        return await self._run(name, call, fallback)

    async def _run(self, op: str, action: Callable[[], Awaitable[T]], fallback: T) -> T:
        """`action` against Redis within `timeout_s`; `fallback` when degraded or failing."""
        if self._degraded_at is not None:
            now = self.monotonic()
            if now < self._retry_at:
                self.degraded_operations += 1
                return fallback
            self._retry_at = now + self.backoff_s  # this operation probes; the others wait
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await action()
        except REDIS_DOWN as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # The caller was cancelled mid-command and the client turned that into a
                # connection error (it drops the connection it was reading): not an outage,
                # and the cancellation must go on (else a cancelled refresher lives on).
                raise asyncio.CancelledError(f"cancelled during {op}") from exc
            self._failed(op, exc)
            return fallback
        if self._degraded_at is not None:
            self._restored(op)
        return result

    def _failed(self, op: str, exc: BaseException) -> None:
        self.degraded_operations += 1
        now = self.monotonic()
        self._retry_at = now + self.backoff_s
        if self._degraded_at is None:
            self._degraded_at = now
            self._degraded_ops_at_start = self.degraded_operations - 1
            error = "timed out" if isinstance(exc, TimeoutError) else reason_of(exc)
            log.warning("presence.degraded", op=op, error=error, backoff_s=self.backoff_s,
                        effect="ringing without presence: everyone ringable, claims granted")

    def _restored(self, op: str) -> None:
        assert self._degraded_at is not None
        log.info("presence.restored", op=op,
                 degraded_for_s=round(self.monotonic() - self._degraded_at, 3),
                 operations_without_redis=self.degraded_operations - self._degraded_ops_at_start)
        self._degraded_at = None
