"""The routing data every call needs, held in memory and reloaded when it changes.

Staff, teams, agents, the roster around now, leave and the calendar are the same for every call
at a given minute, and small (a 510 000-resident district has about a thousand staff); reading
them from PostgreSQL for each call would cost two thirds of a decision. They are loaded once
into a RoutingData and reloaded:

- at once when PostgreSQL says they changed (triggers NOTIFY 'hotline_routing' per statement,
  routing/migrations/0007; every node LISTENs on a connection of its own), so an import, a swap
  or a leave entered on one node is seen by every node within milliseconds;
- when a call's instant falls outside the roster window loaded (now − 1 day … now + 2 days);
- every RELOAD_EVERY as a safety net (a lost notification, a dropped listener connection).

The caller is not cached: one indexed query per call (routing.directory). While PostgreSQL is
away the data last loaded keeps routing calls (see RoutingCache.data); the callers cannot be
identified then and are routed as unknown callers (the duty desk). Holding the 510 k district's
phone index here instead would cost ~660 000 phone hashes with their residents' contracts.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from routing.chain import DutyShift, HotlineLine, Leave, RoutingData, ServiceCalendar
from routing.directory import staff_of
from routing.people import StaffMember
from store import db

log = structlog.get_logger("routing.snapshot")

CHANNEL = "hotline_routing"
WINDOW_BEFORE = timedelta(days=1)
WINDOW_AFTER = timedelta(days=2)
RELOAD_EVERY_S = 600.0
# PostgreSQL away: how long the data last loaded is used before a reload is tried again.
RETRY_AWAY_S = 5.0

_STAFF_SQL = """
SELECT id, name, role, sip_uri, center_id, team_id, left_on, district_id FROM staff ORDER BY id
"""
_SHIFTS_SQL = """
SELECT s.doctor_id, s.starts_at, s.ends_at, s.center_id, s.district_id, s.kind, s.ring_position,
       f.name AS swapped_from
FROM duty_shifts s LEFT JOIN staff f ON f.id = s.swapped_from
WHERE tstzrange(s.starts_at, s.ends_at) && tstzrange($1, $2)
ORDER BY s.starts_at, s.id
"""
_LEAVES_SQL = "SELECT staff_id, starts_on, ends_on, reason FROM staff_leaves WHERE ends_on >= $1"
_LINES_SQL = "SELECT number, district_id, center_id, label, greeting FROM hotline_lines"

CalendarLoader = Callable[[asyncpg.Connection], Awaitable[ServiceCalendar]]


async def load_routing_data(conn: asyncpg.Connection, around: datetime, calendar: CalendarLoader,
                            ring_timeouts: Mapping[str, float], tz: Any) -> RoutingData:
    staff = {r["id"]: staff_of(r) for r in await conn.fetch(_STAFF_SQL)}
    team_members: dict[int, list[StaffMember]] = defaultdict(list)
    for person in staff.values():
        if person.team_id is not None and person.role in ("family_doctor", "assistant", "nurse"):
            team_members[person.team_id].append(person)
    shifts = [
        DutyShift(staff[r["doctor_id"]], r["starts_at"], r["ends_at"], r["center_id"], r["district_id"],
                  r["kind"], r["ring_position"], r["swapped_from"])
        for r in await conn.fetch(_SHIFTS_SQL, around - WINDOW_BEFORE, around + WINDOW_AFTER)
    ]
    leaves: dict[int, list[Leave]] = defaultdict(list)
    for r in await conn.fetch(_LEAVES_SQL, (around - WINDOW_BEFORE).astimezone(tz).date()):
        leaves[r["staff_id"]].append(Leave(r["staff_id"], r["starts_on"], r["ends_on"], r["reason"]))
    lines = {r["number"]: HotlineLine(r["number"], r["district_id"], r["center_id"], r["label"], r["greeting"])
             for r in await conn.fetch(_LINES_SQL)}
    return RoutingData(
        calendar=await calendar(conn), shifts=tuple(shifts), lines=lines,
        agents=tuple(p for p in staff.values() if p.role == "agent"),
        team_members={k: tuple(v) for k, v in team_members.items()},
        leaves={k: tuple(v) for k, v in leaves.items()}, ring_timeouts=dict(ring_timeouts), tz=tz)


class RoutingCache:
    def __init__(self, pool: asyncpg.Pool, database_url: str, calendar: CalendarLoader,
                 ring_timeouts: Mapping[str, float], tz: Any):
        self._pool = pool
        self._url = database_url
        self._calendar = calendar
        self._ring_timeouts = ring_timeouts
        self._tz = tz
        self._data: RoutingData | None = None
        self._around: datetime | None = None
        self._loaded_at = 0.0
        self._dirty = True
        self._lock = asyncio.Lock()
        self._listener: asyncpg.Connection | None = None
        self._listen = False  # start() was called: keep a listener (again after an outage)
        self._away_until = 0.0  # PostgreSQL was away: no reload tried before this (monotonic)
        self.reloads = 0  # for tests and metrics

    async def start(self) -> None:
        """Listen for changes (best effort: without a listener the cache still reloads every
        RELOAD_EVERY_S)."""
        self._listen = True
        try:
            self._listener = await db.connect(self._url)
            await self._listener.add_listener(CHANNEL, self._on_notify)
        except Exception as exc:
            log.warning("routing.cache_not_listening", why=str(exc), reload_every_s=RELOAD_EVERY_S)
            self._listener = None

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, table: str) -> None:
        self._dirty = True
        log.debug("routing.changed", table=table)

    async def data(self, at: datetime) -> RoutingData:
        """The routing data for a call at `at` (reloaded first if stale).

        With PostgreSQL away the data last loaded is used as it is (the roster window covers a
        day either side): calls go on being routed, and the reload is tried again at most every
        RETRY_AWAY_S rather than by every call. Without any data loaded yet, this raises."""
        if not self._fresh(at) and not (self._data is not None and time.monotonic() < self._away_until):
            async with self._lock:
                if not self._fresh(at) and not (self._data is not None and time.monotonic() < self._away_until):
                    try:
                        await self._reload(at)
                    except Exception as exc:
                        if self._data is None or not db.is_unreachable(exc):
                            raise
                        self._dirty = True  # still to reload once PostgreSQL is back
                        self._away_until = time.monotonic() + RETRY_AWAY_S
                        log.warning("routing.stale_data_used", why=str(exc), loaded_around=str(self._around))
        assert self._data is not None
        return self._data

    def _fresh(self, at: datetime) -> bool:
        return (self._data is not None and not self._dirty and self._around is not None
                and self._around - WINDOW_BEFORE + timedelta(hours=1) <= at
                <= self._around + WINDOW_AFTER - timedelta(hours=1)
                and time.monotonic() - self._loaded_at < RELOAD_EVERY_S)

    async def _reload(self, at: datetime) -> None:
        self._dirty = False  # a change during the load marks it dirty again
        async with self._pool.acquire() as conn:
            self._data = await load_routing_data(conn, at, self._calendar, self._ring_timeouts, self._tz)
        self._around, self._loaded_at = at, time.monotonic()
        self.reloads += 1
        if self._listen and (self._listener is None or self._listener.is_closed()):
            # PostgreSQL went away and came back: listen again, or changes wait for the safety net
            self._listener = None
            await self.start()
        log.info("routing.loaded", shifts=len(self._data.shifts), agents=len(self._data.agents))

    async def stop(self) -> None:
        self._listen = False
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
