"""Calls in progress, as they happen: the feed behind the console's live board and screen-pop.

The call flow tells `LiveCalls` each step of a call (offered, routed, ringing, ring stopped,
queued, left the queue, answered, ended). Each step does two things in Redis, atomically (one
Lua script):

- publishes a JSON event on the pub/sub channel EVENTS_CHANNEL, numbered by `seq` (one INCR
  shared by every node, so events of all nodes have one strict order and a reader can tell a
  gap) and stamped `ts` (the Redis server's clock in ms: one clock for every node);
- keeps the call's current state in the hash LIVE_CALLS_KEY (call id → JSON), so a board opened
  late, or on another node, starts from a snapshot (recordings.live_feed) and applies the events
  whose seq is above the snapshot's.

Expiry of a dead node's calls: a hash field has no TTL of its own (Redis 7.0), so each entry
has a heartbeat in the sorted set LIVE_BEATS_KEY (call id → server time of its last write). The
node rewrites all its calls every REFRESH_S; whoever reads the hash (a snapshot) or refreshes
(every node) first removes the entries whose beat is older than ENTRY_TTL_S, publishing an
`expired` event for each. Why this way: the beat is the Redis server's clock, so nodes whose
clocks disagree cannot expire each other's calls early; it does not depend on node names being
unique or a dead node ever coming back; the board reads one hash; and there is no sweeper to
run or elect — every live node sweeps as it refreshes. A dead node's calls vanish within
ENTRY_TTL_S + REFRESH_S.

A call never waits for Redis and never fails because of it: the step methods are plain
(synchronous) methods that update this node's own view and queue the write; one sender task per
process writes the queue in order (pipelined) with a bounded timeout. When Redis is away it logs
one `live.degraded` warning, drops events for BACKOFF_S, then probes again; once back it
rewrites every call it holds and publishes a `resync` event so boards take a new snapshot.

Personal data: the caller is only ever the masked number (CallerNumber.masked); names are not
stored here (the reader joins staff names from PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from store.errors import reason_of

log = structlog.get_logger("recordings.live")

EVENTS_CHANNEL = "hotline:events"
LIVE_CALLS_KEY = "hotline:live:calls"
LIVE_BEATS_KEY = "hotline:live:beats"
EVENT_SEQ_KEY = "hotline:events:seq"
# The callers waiting in ivr/queue.py's queues (sorted sets; `<key>:beat` hashes beside them).
# Here so readers (recordings.live_feed) need not import the call flow.
QUEUE_PREFIX = "hotline:queue:"

REFRESH_S = 10.0        # each node rewrites its calls this often
ENTRY_TTL_S = 30.0      # an entry not rewritten for this long belongs to a dead node
SEND_TIMEOUT_S = 1.0    # one batch of writes; the call does not wait for it anyway
BACKOFF_S = 1.0         # after a failure, Redis is not tried again for this long
MAX_PENDING = 5000      # events queued for the sender at most; beyond, dropped (then resync)

STATES = ("ivr", "ringing", "queued", "talking")
EVENT_TYPES = ("offered", "placed", "routed", "ringing", "ring_stopped", "queued", "left_queue", "answered",
               "ended", "expired", "resync")

REDIS_DOWN: tuple[type[BaseException], ...] = (RedisError, OSError)

# Lua helpers: the server's time in ms; sweep the entries whose beat is older than ARGV ttl.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
_SWEEP = """
local function publish(seq_key, channel, now, body)
  local seq = redis.call('INCR', seq_key)
  redis.call('PUBLISH', channel, '{"seq":' .. seq .. ',"ts":' .. string.format('%d', now) .. ',' .. body)
  return seq
end
local function sweep(calls, beats, seq_key, channel, now, ttl)
  local dead = redis.call('ZRANGEBYSCORE', beats, '-inf', '(' .. string.format('%d', now - ttl))
  for _, call_id in ipairs(dead) do
    redis.call('HDEL', calls, call_id)
    redis.call('ZREM', beats, call_id)
    publish(seq_key, channel, now, '"type":"expired","call_id":' .. cjson.encode(call_id) .. '}')
  end
  return #dead
end
"""

# KEYS: calls, beats, seq. ARGV: call id, entry JSON ('' = the call ended: remove it),
# event JSON (an object without seq/ts), channel. Returns the event's seq.
_STEP = _NOW + _SWEEP + """
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[2], now, ARGV[1])
end
return publish(KEYS[3], ARGV[4], now, string.sub(ARGV[3], 2))
"""

# KEYS: calls, beats, seq. ARGV: channel, ttl ms, then call id / entry JSON pairs.
# Rewrites this node's calls (their beats now) and sweeps the dead ones.
_REFRESH = _NOW + _SWEEP + """
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], now, ARGV[i])
end
return sweep(KEYS[1], KEYS[2], KEYS[3], ARGV[1], now, tonumber(ARGV[2]))
"""

# KEYS: seq. ARGV: channel, event JSON (without seq/ts).
_ANNOUNCE = _NOW + _SWEEP + """
return publish(KEYS[1], ARGV[1], now, string.sub(ARGV[2], 2))
"""

# KEYS: calls, beats, seq. ARGV: channel, ttl ms. {seq, {field, value, ...}} after a sweep:
# the hash and the seq it reflects, read in one atomic step.
SNAPSHOT_SCRIPT = _NOW + _SWEEP + """
sweep(KEYS[1], KEYS[2], KEYS[3], ARGV[1], now, tonumber(ARGV[2]))
local seq = tonumber(redis.call('GET', KEYS[3]) or '0')
return {seq, redis.call('HGETALL', KEYS[1]), now}
"""


def _dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)


class LiveCalls:
    """This node's calls in progress, written to Redis as they change (see the module's doc).

    `client`: a redis.asyncio client, or None (nothing is published: a node without Redis);
    `node`: this service node's name; `now`: the service clock (aware), for `since` and `at`.
    """

    def __init__(self, client: aioredis.Redis | None, *, node: str = "",
                 now: Callable[[], datetime] | None = None, channel: str = EVENTS_CHANNEL,
                 refresh_s: float = REFRESH_S, ttl_s: float = ENTRY_TTL_S,
                 timeout_s: float = SEND_TIMEOUT_S, backoff_s: float = BACKOFF_S,
                 max_pending: int = MAX_PENDING, monotonic: Callable[[], float] = time.monotonic):
        self.client = client
        self.node = node
        self.now = now or (lambda: datetime.now(UTC))
        self.channel = channel
        self.refresh_s = refresh_s
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self.max_pending = max_pending
        self.monotonic = monotonic
        self.calls: dict[str, dict[str, Any]] = {}  # call id → entry, this node's
        self.dropped = 0  # events not published (Redis away, queue full), since start
        self._pending: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._degraded_at: float | None = None
        self._retry_at = 0.0
        self._resync_owed = False
        self._scripts = {} if client is None else {
            name: client.register_script(src) for name, src in (
                ("step", _STEP), ("refresh", _REFRESH), ("announce", _ANNOUNCE))}

    @property
    def degraded(self) -> bool:
        return self._degraded_at is not None

    # --- the call's steps: never raise, never wait ------------------------------------------------

    def offered(self, call_id: str, *, record_id: int | None, line: str | None, caller_masked: str,
                resident_id: int | None = None, district_id: int | None = None,
                center_id: int | None = None, team_id: int | None = None) -> None:
        """A call arrived (before the greeting)."""
        def step() -> dict[str, Any]:
            at = self._stamp()
            entry = {"call_id": call_id, "record_id": record_id, "node": self.node, "line": line,
                     "caller": caller_masked, "resident_id": resident_id,
                     "district_id": district_id, "center_id": center_id, "team_id": team_id,
                     "state": "ivr", "since": at, "offered_at": at, "ringing": [],
                     "staff_id": None, "route_reason": None, "queue": None}
            self.calls[call_id] = entry
            return entry
        self._step("offered", call_id, step)

    def routed(self, call_id: str, *, route_reason: str, resident_id: int | None = None,
               district_id: int | None = None, center_id: int | None = None,
               team_id: int | None = None, record_id: int | None = None) -> None:
        """Who calls and where the call belongs are known (the route decision)."""
        def step() -> dict[str, Any] | None:
            entry = self.calls.get(call_id)
            if entry is None:
                return None
            entry.update(route_reason=route_reason, resident_id=resident_id, district_id=district_id,
                         center_id=center_id, team_id=team_id)
            if record_id is not None:
                entry["record_id"] = record_id
            return entry
        self._step("routed", call_id, step)

    def placed(self, call_id: str, *, resident_id: int | None, district_id: int | None,
               center_id: int | None, team_id: int | None) -> None:
        """Where the call belongs is written (the caller identified, the line known): a board
        whose scope is a center or a team can show it from now on, not only once it is routed."""
        def step() -> dict[str, Any] | None:
            entry = self.calls.get(call_id)
            if entry is None:
                return None
            entry.update(resident_id=resident_id, district_id=district_id, center_id=center_id,
                         team_id=team_id)
            return entry
        self._step("placed", call_id, step)

    def ringing(self, call_id: str, staff_ids: Iterable[int], reasons: dict[int, str] | None = None) -> None:
        """These people's phones are being rung for the call (one ring group); `reasons`: why
        each was rung (the chain's reason for the target), for the screen-pop."""
        def step() -> dict[str, Any] | None:
            entry = self._moved(call_id, "ringing")
            if entry is not None:
                entry["ringing"] = list(dict.fromkeys(staff_ids))
                entry["ring_reasons"] = {str(k): v for k, v in (reasons or {}).items()}
            return entry
        self._step("ringing", call_id, step)

    def ring_stopped(self, call_id: str) -> None:
        """The ring group gave up (nobody answered, or the caller left): back in the IVR, or on
        hold in the queue it was rung from."""
        def step() -> dict[str, Any] | None:
            entry = self.calls.get(call_id)
            if entry is None or entry["state"] != "ringing":
                return None
            # rung from the queue (someone seemed free): the caller is back on hold in it
            self._moved(call_id, "queued" if entry.get("queue") else "ivr")
            entry["ringing"] = []
            entry.pop("ring_reasons", None)
            return entry
        self._step("ring_stopped", call_id, step)

    def queued(self, call_id: str, queue: str) -> None:
        """The caller waits in the queue `queue` (ivr.queue's key)."""
        def step() -> dict[str, Any] | None:
            entry = self._moved(call_id, "queued")
            if entry is not None:
                entry["queue"] = queue
            return entry
        self._step("queued", call_id, step)

    def left_queue(self, call_id: str) -> None:
        def step() -> dict[str, Any] | None:
            entry = self.calls.get(call_id)
            if entry is None or entry.get("queue") is None:
                return None
            if entry["state"] == "queued":
                self._moved(call_id, "ivr")
            entry["queue"] = None
            return entry
        self._step("left_queue", call_id, step)

    def answered(self, call_id: str, staff_id: int) -> None:
        """A human answered: the caller talks with `staff_id`."""
        def step() -> dict[str, Any] | None:
            entry = self._moved(call_id, "talking")
            if entry is not None:
                entry.update(staff_id=staff_id, ringing=[], queue=None)
            return entry
        self._step("answered", call_id, step)

    def ended(self, call_id: str, disposition: str) -> None:
        def step() -> dict[str, Any] | None:
            entry = self.calls.pop(call_id, None)
            if entry is None:
                return None
            return {**entry, "disposition": disposition, "ended_at": self._stamp()}
        self._step("ended", call_id, step)

    # --- plumbing ----------------------------------------------------------------------------------

    def _stamp(self) -> str:
        return self.now().isoformat(timespec="milliseconds")

    def _moved(self, call_id: str, state: str) -> dict[str, Any] | None:
        entry = self.calls.get(call_id)
        if entry is not None and entry["state"] != state:
            entry["state"] = state
            entry["since"] = self._stamp()
        return entry

    def _step(self, kind: str, call_id: str, step: Callable[[], dict[str, Any] | None]) -> None:
        try:
            entry = step()
            if entry is None or self.client is None:
                return
            event = {"type": kind, "call_id": call_id, "node": self.node, "at": self._stamp(),
                     "call": entry}
            stored = "" if kind == "ended" else _dumps(entry)
            self._enqueue(("step", (call_id, stored, _dumps(event))))
        except Exception:  # a live board is not worth a call
            log.exception("live.step_failed", step=kind, call_id=call_id)

    def _enqueue(self, op: tuple[str, Any]) -> None:
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            self._resync_owed = True
            return
        self._pending.append(op)
        self._idle.clear()
        self._wake.set()
        if self._sender is None or self._sender.done():
            loop = asyncio.get_running_loop()
            self._sender = loop.create_task(self._send_forever(), name="live calls: send")
            self._refresher = loop.create_task(self._refresh_forever(), name="live calls: refresh")

    async def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued so far was sent (or dropped); False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def refresh(self) -> None:
        """Rewrite every call of this node (their beats now) and sweep dead nodes' calls."""
        if self.client is None:
            return
        self._enqueue(("refresh", None))
        await self.flush()

    async def aclose(self) -> None:
        for task in (self._refresher, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sender = self._refresher = None

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            self._enqueue(("refresh", None))

    async def _send_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = list(self._pending)
                self._pending.clear()
                await self._send(batch)
            self._idle.set()

    async def _send(self, batch: list[tuple[str, Any]]) -> None:
        if self._degraded_at is not None and self.monotonic() < self._retry_at:
            self._drop(batch)
            return
        assert self.client is not None
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._resync_owed:
                    await self._resync()
                pipe = self.client.pipeline(transaction=False)
                for kind, args in batch:
                    if kind == "step":
                        call_id, stored, event = args
                        await self._scripts["step"](
                            keys=[LIVE_CALLS_KEY, LIVE_BEATS_KEY, EVENT_SEQ_KEY],
                            args=[call_id, stored, event, self.channel], client=pipe)
                    else:
                        await self._refresh_call(pipe)
                await pipe.execute()
        except asyncio.CancelledError:
            raise
        except (*REDIS_DOWN, TimeoutError) as exc:
            self._failed(exc)
            self._drop(batch)
            return
        if self._degraded_at is not None:
            log.info("live.restored", degraded_for_s=round(self.monotonic() - self._degraded_at, 3),
                     dropped=self.dropped)
            self._degraded_at = None

    async def _refresh_call(self, client: Any) -> None:
        args: list[Any] = [self.channel, int(self.ttl_s * 1000)]
        for call_id, entry in self.calls.items():
            args += [call_id, _dumps(entry)]
        await self._scripts["refresh"](keys=[LIVE_CALLS_KEY, LIVE_BEATS_KEY, EVENT_SEQ_KEY],
                                       args=args, client=client)

    async def _resync(self) -> None:
        """Events were lost: the hash gets this node's calls as they are now, and boards are told
        to take a new snapshot."""
        await self._refresh_call(self.client)
        await self._scripts["announce"](keys=[EVENT_SEQ_KEY], args=[self.channel, _dumps(
            {"type": "resync", "node": self.node, "at": self._stamp()})], client=self.client)
        self._resync_owed = False

    def _drop(self, batch: list[tuple[str, Any]]) -> None:
        self.dropped += sum(1 for kind, _ in batch if kind == "step")
        self._resync_owed = True

    def _failed(self, exc: BaseException) -> None:
        now = self.monotonic()
        self._retry_at = now + self.backoff_s
        if self._degraded_at is None:
            self._degraded_at = now
            error = "timed out" if isinstance(exc, TimeoutError) else reason_of(exc)
            log.warning("live.degraded", error=error, backoff_s=self.backoff_s,
                        effect="calls go on; the live board misses events until Redis is back")
