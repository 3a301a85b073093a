"""Reading the live feed (recordings.live): a snapshot for a board that opens, and the events
after it, fanned out inside this process.

A board takes `snapshot()` (calls in progress, callers waiting, staff presence by center and
team, and the `seq` the snapshot reflects), then applies the events of `subscribe()` whose seq is
above it. Every process holds ONE Redis pub/sub connection, however many viewers subscribe: a
reader task puts each event on every subscriber's own bounded queue. A viewer too slow to keep
up never blocks the others: when its queue is full it is marked stale, its queue is emptied and
it gets a single {"type": "resync"} event — take a new snapshot. Everyone gets that too when the
Redis subscription was lost (events may have been missed meanwhile) or a gap in seq shows.

Scope: which calls a viewer may see is routing.scope's decision; `snapshot(scope=…)` keeps the
calls whose record passes `scope.calls` (one indexed query by record ids), and `visible()` does
the same for the record ids of events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog

from recordings.live import (
    ENTRY_TTL_S,
    EVENT_SEQ_KEY,
    EVENTS_CHANNEL,
    LIVE_BEATS_KEY,
    LIVE_CALLS_KEY,
    REDIS_DOWN,
    SNAPSHOT_SCRIPT,
)
from routing.presence import Presence
from routing.scope import ANSWERING_ROLES, Params, Scope

log = structlog.get_logger("recordings.live_feed")

SUBSCRIBER_QUEUE = 256      # events a viewer may lag behind before it must resync
RECONNECT_FIRST_S = 0.2
RECONNECT_MAX_S = 5.0
SEEN_MAX = 100_000          # visibility answers kept (sees) before they are forgotten
RESYNC: dict[str, Any] = {"type": "resync", "why": "events were missed: take a new snapshot"}


@dataclass(frozen=True)
class LiveCall:
    call_id: str
    record_id: int | None
    node: str
    line: str | None
    caller: str                  # masked
    state: str                   # ivr | ringing | queued | talking
    since: datetime
    offered_at: datetime
    seconds_in_state: float
    seconds_total: float
    resident_id: int | None
    district_id: int | None
    center_id: int | None
    team_id: int | None
    staff_id: int | None         # talking with
    staff_name: str | None
    ringing: tuple[int, ...]
    route_reason: str | None
    queue: str | None

    def as_json(self) -> dict[str, Any]:
        doc = dict(self.__dict__)
        doc["since"], doc["offered_at"] = self.since.isoformat(), self.offered_at.isoformat()
        doc["ringing"] = list(self.ringing)
        return doc


@dataclass(frozen=True)
class Waiting:
    call_id: str
    record_id: int | None
    line: str | None
    caller: str
    queue: str
    position: int                 # 0: next
    waiting_since: datetime
    seconds_waiting: float


@dataclass(frozen=True)
class StaffPresence:
    staff_id: int
    name: str
    role: str
    state: str                    # routing.presence.Kind value
    since: datetime | None
    call_id: str | None


@dataclass
class TeamPresence:
    team_id: int | None           # None: the center's staff outside teams (agents, night doctors)
    team: str | None
    staff: list[StaffPresence] = field(default_factory=list)


@dataclass
class CenterPresence:
    center_id: int | None         # None: the district's own staff (duty desk)
    center: str | None
    teams: list[TeamPresence] = field(default_factory=list)


@dataclass(frozen=True)
class LiveSnapshot:
    seq: int                      # the events up to this one are in the snapshot
    taken_at: datetime
    calls: list[LiveCall]
    waiting: list[Waiting]
    presence: list[CenterPresence]


def _at(text: str | None, default: datetime) -> datetime:
    if not text:
        return default
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return default


class LiveFeed:
    """`client`: a redis.asyncio client (the snapshot); `pool`: PostgreSQL (names, scope);
    `presence`: routing.presence.Presence for staff states; `url`: for the pub/sub connection
    (its own, without the short timeouts of a presence client)."""

    def __init__(self, client: aioredis.Redis, pool: asyncpg.Pool, *, presence: Presence | None = None,
                 url: str | None = None, now: Callable[[], datetime] | None = None,
                 channel: str = EVENTS_CHANNEL, ttl_s: float = ENTRY_TTL_S,
                 queue_size: int = SUBSCRIBER_QUEUE):
        self.client = client
        self.pool = pool
        self.presence = presence
        self.url = url
        self.now = now or (lambda: datetime.now(UTC))
        self.channel = channel
        # presence changes (routing.presence): the channel of the Presence given, if any
        self.presence_channel = presence.changes_channel if presence is not None else None
        self.ttl_s = ttl_s
        self.queue_size = queue_size
        self._snapshot = client.register_script(SNAPSHOT_SCRIPT)
        self._subscribers: set[Subscription] = set()
        self._reader: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()  # the pub/sub connection is subscribed
        self.subscriptions_opened = 0      # Redis SUBSCRIBEs made by this process (tests, metrics)
        self._last_seq: int | None = None
        self._seen: set[tuple[str, tuple[Any, ...], int]] = set()   # (filter, values, call): yes
        self._asking: dict[Any, asyncio.Future[set[int]]] = {}      # the queries under way
        self._unseen: dict[tuple[str, tuple[Any, ...], int], int | None] = {}  # no, as of event seq

    # --- the snapshot ---------------------------------------------------------------------------

    async def snapshot(self, *, scope: Scope | None = None, district_id: int | None = None) -> LiveSnapshot:
        """Calls in progress (within `scope` when given), callers waiting, and the presence of
        the answering staff (of `scope`'s staff, or of `district_id`)."""
        seq, flat, _server_ms = await self._snapshot(
            keys=[LIVE_CALLS_KEY, LIVE_BEATS_KEY, EVENT_SEQ_KEY],
            args=[self.channel, int(self.ttl_s * 1000)])
        now = self.now()
        entries: list[dict[str, Any]] = []
        for k in range(0, len(flat), 2):
            try:
                entries.append(json.loads(flat[k + 1]))
            except ValueError:
                log.warning("live_feed.bad_entry", call_id=flat[k].decode("utf-8", "replace"))
        if scope is not None:
            allowed = await self.visible(scope, [e.get("record_id") for e in entries])
            entries = [e for e in entries if e.get("record_id") in allowed]
        names = await self._staff_names({e["staff_id"] for e in entries if e.get("staff_id")})
        calls = []
        for e in entries:
            since, offered = _at(e.get("since"), now), _at(e.get("offered_at"), now)
            calls.append(LiveCall(
                call_id=e["call_id"], record_id=e.get("record_id"), node=e.get("node", ""),
                line=e.get("line"), caller=e.get("caller", ""), state=e.get("state", "ivr"),
                since=since, offered_at=offered,
                seconds_in_state=max(0.0, (now - since).total_seconds()),
                seconds_total=max(0.0, (now - offered).total_seconds()),
                resident_id=e.get("resident_id"), district_id=e.get("district_id"),
                center_id=e.get("center_id"), team_id=e.get("team_id"), staff_id=e.get("staff_id"),
                staff_name=names.get(e.get("staff_id") or 0), ringing=tuple(e.get("ringing") or ()),
                route_reason=e.get("route_reason"), queue=e.get("queue")))
        calls.sort(key=lambda c: (c.offered_at, c.call_id))
        waiting: list[Waiting] = []
        by_queue: dict[str, list[LiveCall]] = {}
        for c in calls:
            if c.state == "queued" and c.queue:
                by_queue.setdefault(c.queue, []).append(c)
        for key, members in sorted(by_queue.items()):
            members.sort(key=lambda c: (c.since, c.call_id))
            waiting += [Waiting(c.call_id, c.record_id, c.line, c.caller, key, i, c.since,
                                c.seconds_in_state) for i, c in enumerate(members)]
        waiting.sort(key=lambda w: w.waiting_since)
        presence = await self.staff_presence(scope=scope, district_id=district_id)
        return LiveSnapshot(int(seq), now, calls, waiting, presence)

    async def visible(self, scope: Scope, record_ids: list[int | None]) -> set[int]:
        """The record ids among these that the viewer may see (routing.scope's call filter)."""
        ids = sorted({i for i in record_ids if isinstance(i, int)})
        if not ids:
            return set()
        p = Params(ids)
        where = scope.calls(p, "c")
        # Only the scope's own predicate is interpolated; every value is a placeholder.
        rows = await self.pool.fetch(
            f"SELECT c.id FROM call_records c WHERE c.id = ANY($1::bigint[]) AND {where}",  # noqa: S608
            *p.values)
        return {r["id"] for r in rows}

    async def sees(self, scope: Scope, record_id: int, seq: int | None = None) -> bool:
        """Whether the viewer may see call `record_id`, asked on each event of the call.

        Many viewers share one answer: viewers whose scope is the same filter (every supervisor
        of a district, say) are one key, a yes is kept (a call in scope stays in scope), and
        the viewers asking about the same event at the same time wait on one query. A no is
        kept for that event only: routing or answering can bring the call into scope later."""
        p = Params([record_id])
        where = scope.calls(p, "c")
        key = (where, tuple(p.values[1:]), record_id)
        if key in self._seen:
            return True
        if seq is not None and self._unseen.get(key) == seq:
            return False
        asking = (key, seq)
        pending = self._asking.get(asking)
        if pending is None:
            pending = asyncio.ensure_future(self.visible(scope, [record_id]))
            self._asking[asking] = pending
            pending.add_done_callback(lambda _f: self._asking.pop(asking, None))
        found = record_id in await asyncio.shield(pending)
        if len(self._seen) >= SEEN_MAX or len(self._unseen) >= SEEN_MAX:
            self._seen.clear()  # calls end: a bounded memory of old answers
            self._unseen.clear()
        if found:
            self._seen.add(key)
            self._unseen.pop(key, None)
        elif seq is not None:
            self._unseen[key] = seq
        return found

    async def _staff_names(self, ids: set[int]) -> dict[int, str]:
        if not ids:
            return {}
        rows = await self.pool.fetch("SELECT id, name FROM staff WHERE id = ANY($1::int[])", sorted(ids))
        return {r["id"]: r["name"] for r in rows}

    async def staff_presence(self, *, scope: Scope | None = None,
                             district_id: int | None = None) -> list[CenterPresence]:
        """The answering staff (still working) by center and team, with their live state."""
        p = Params(sorted(ANSWERING_ROLES))
        where = ["s.role = ANY($1::text[])", "s.left_on IS NULL"]
        if scope is not None:
            where.append(scope.staff(p, "s"))
        if district_id is not None:
            where.append(f"s.district_id = {p.add(district_id)}")
        # Constant SQL and the scope's predicate; values are placeholders.
        sql = ("SELECT s.id, s.name, s.role, s.center_id, ce.name AS center, s.team_id, t.name AS team"  # noqa: S608
               " FROM staff s LEFT JOIN centers ce ON ce.id = s.center_id LEFT JOIN teams t ON t.id = s.team_id"
               " WHERE " + " AND ".join(where) +
               " ORDER BY ce.id NULLS FIRST, t.id NULLS LAST, s.role, s.id")
        rows = await self.pool.fetch(sql, *p.values)
        states = await self.presence.states([r["id"] for r in rows]) if self.presence else {}
        centers: dict[int | None, CenterPresence] = {}
        for r in rows:
            center = centers.setdefault(r["center_id"], CenterPresence(r["center_id"], r["center"]))
            if not center.teams or center.teams[-1].team_id != r["team_id"]:
                center.teams.append(TeamPresence(r["team_id"], r["team"]))
            st = states.get(r["id"])
            center.teams[-1].staff.append(StaffPresence(
                r["id"], r["name"], r["role"], st.kind.value if st else "unknown",
                st.since if st else None, st.call_id if st else None))
        return list(centers.values())

    # --- events ---------------------------------------------------------------------------------

    def subscribe(self) -> Subscription:
        """`async with feed.subscribe() as events: async for event in events: …` — each event a
        dict as published (recordings.live), or RESYNC."""
        return Subscription(self)

    async def wait_listening(self, timeout_s: float = 5.0) -> None:
        """Until the process's pub/sub connection is subscribed (events from now on arrive)."""
        async with asyncio.timeout(timeout_s):
            await self._listening.wait()

    def _join(self, sub: Subscription) -> None:
        self._subscribers.add(sub)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read_forever(), name="live feed")

    def _leave(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        for sub in list(self._subscribers):
            sub.closed = True
            sub.put(None)

    def _fan_out(self, event: dict[str, Any] | None) -> None:
        for sub in list(self._subscribers):
            sub.put(event)

    async def _read_forever(self) -> None:
        delay = RECONNECT_FIRST_S
        first = True
        while True:
            client = aioredis.Redis.from_url(self.url) if self.url else self.client
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(*filter(None, (self.channel, self.presence_channel)))
                self.subscriptions_opened += 1
                self._listening.set()
                if not first:  # whatever was published while we were away is lost
                    self._fan_out(RESYNC)
                first, delay = False, RECONNECT_FIRST_S
                log.info("live_feed.subscribed", channel=self.channel)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30.0)
                    if message is None or message.get("type") != "message":
                        continue
                    if self._channel_of(message) == self.presence_channel:
                        self._deliver_presence(message["data"])
                    else:
                        self._deliver(message["data"])
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as exc:
                self._listening.clear()
                log.warning("live_feed.subscription_lost", why=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(RECONNECT_MAX_S, delay * 2)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                if client is not self.client:
                    with contextlib.suppress(Exception):
                        await client.aclose()

    @staticmethod
    def _channel_of(message: dict[str, Any]) -> str:
        channel = message.get("channel")
        return channel.decode() if isinstance(channel, bytes) else str(channel)

    def _deliver_presence(self, data: bytes | str) -> None:
        """{"type": "presence", "staff_id": N}: who changed, not what to (readers ask presence,
        within their scope). Presence changes carry no seq: a lost one is fixed by the next
        snapshot, as before."""
        try:
            staff_id = int(data)
        except ValueError:
            log.warning("live_feed.bad_presence_change")
            return
        self._fan_out({"type": "presence", "staff_id": staff_id})

    async def presence_of(self, staff_id: int) -> str:
        """The state a board shows for `staff_id` (routing.presence.Kind value)."""
        if self.presence is None:
            return "unknown"
        return (await self.presence.state(staff_id)).kind.value

    def _deliver(self, data: bytes | str) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            log.warning("live_feed.bad_event")
            return
        seq = event.get("seq")
        if isinstance(seq, int):
            if self._last_seq is not None and seq > self._last_seq + 1:
                self._fan_out(RESYNC)  # a gap: something was not delivered
            self._last_seq = seq if self._last_seq is None else max(self._last_seq, seq)
        self._fan_out(event)


class Subscription:
    """One viewer's events: a bounded queue filled by the process's single pub/sub reader."""

    def __init__(self, feed: LiveFeed):
        self.feed = feed
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(feed.queue_size)
        self.stale = False       # fell behind: told to resync (reset once the RESYNC is read)
        self.resyncs = 0         # how often it fell behind
        self.closed = False

    async def __aenter__(self) -> Subscription:
        self.feed._join(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True
        self.feed._leave(self)

    def put(self, event: dict[str, Any] | None) -> None:
        if self.stale and event is not None:
            return  # it will resync from a snapshot: what happened meanwhile is in it
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # Too slow: drop what it has not read and tell it to start over from a snapshot.
            self.stale = True
            self.resyncs += 1
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self.closed and self.queue.empty():
            raise StopAsyncIteration
        event = await self.queue.get()
        if event is None:
            raise StopAsyncIteration
        if event is RESYNC:
            self.stale = False
        return event

    async def next(self, timeout_s: float) -> dict[str, Any]:
        """The next event within `timeout_s` (TimeoutError otherwise)."""
        async with asyncio.timeout(timeout_s):
            return await self.__anext__()
