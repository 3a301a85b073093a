"""The deadline watcher: warnings, breaches, escalation and the shift change, on one node at a time.

Every service node runs a Watcher. Exactly one acts: the one holding a PostgreSQL advisory lock
on a connection of its own. If that node dies, its connection drops, PostgreSQL releases the lock,
and another node's next try (every `poll_s`, a few seconds) takes it over — within 10 s. The
leader sweeps every `sweep_s` (≤ 30 s, so a breach is seen at most a minute after it happens):

- warning: an open task within its kind's `warn_before` of the deadline gets `warned_at` and a
  'warned' event;
- breach: an open task past its deadline gets `overdue_at` = the deadline (the instant of the
  breach, not when it was seen) and an 'overdue' event, then, in the same transaction,
  `escalated_at`, an 'escalated' event and a task_escalations row for the owner's team lead and the
  center's directors (their desks list them);
- the shift change (handover.ownership.follow_shifts);
- the night handover: the sheet of every duty shift that has ended (within BUILD_LOOKBACK) and is
  not built yet (handover_shift_builds), built by handover.night_handover — its items for the
  day doctors become handover tasks. A build is idempotent (items keyed by what they are about),
  so two watchers racing build a shift's sheet once; the row only spares later sweeps the work.

Each is a set-based statement whose WHERE is the condition itself (`warned_at IS NULL`,
`overdue_at IS NULL`, `escalated_at IS NULL`), evaluated again on the locked row by PostgreSQL:
even two watchers racing (a leader that lost its lock mid-sweep) warn, breach and escalate a task
once. The lock only saves the work of doing it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from handover.night_handover import NightHandover
from handover.ownership import ShiftChange, follow_shifts, responsibility
from routing.chain import RoutingData
from store import db

log = structlog.get_logger("handover.watcher")

# pg_advisory_lock key: "hotline watcher" (any constant the other users of advisory locks avoid)
LOCK_KEY = 0x686F746C_77617463
SWEEP_S = 20.0
POLL_S = 3.0
# How far back an ended shift still gets its sheet built by the watcher: a watcher down longer
# than this (or a first start over an old roster) does not hand over long-gone nights — an
# operator builds those with `hotline handover build`.
BUILD_LOOKBACK = timedelta(hours=36)

_SHIFTS_TO_BUILD_SQL = """
SELECT s.id FROM duty_shifts s
 WHERE s.ends_at <= $1 AND s.ends_at > $1 - $2::interval
   AND NOT EXISTS (SELECT 1 FROM handover_shift_builds b WHERE b.shift_id = s.id)
 ORDER BY s.ends_at, s.id
"""

_WARN_SQL = """
WITH warned AS (
    UPDATE tasks t SET warned_at = $1, version = t.version + 1
      FROM task_kinds k
     WHERE k.kind = t.kind AND t.status = 'open' AND t.warned_at IS NULL
       AND t.due_at > $1 AND t.due_at <= $1 + (SELECT max(warn_before) FROM task_kinds)
       AND t.due_at - k.warn_before <= $1
    RETURNING t.id, t.version, t.due_at, k.warn_before
)
INSERT INTO task_events (task_id, version, at, event, reason, detail)
SELECT id, version, $1, 'warned', 'due within ' || warn_before::text,
       jsonb_build_object('due_at', due_at)
  FROM warned
"""

_BREACH_SQL = """
WITH breached AS (
    UPDATE tasks t SET overdue_at = t.due_at, version = t.version + 1
     WHERE t.status = 'open' AND t.overdue_at IS NULL AND t.due_at < $1
    RETURNING t.id, t.version, t.due_at
), written AS (
    INSERT INTO task_events (task_id, version, at, event, reason, detail)
    SELECT id, version, due_at, 'overdue', 'deadline passed', jsonb_build_object('seen_at', $1::timestamptz)
      FROM breached
)
SELECT id FROM breached
"""

# The owner's team (the resident's contract team when the owner has none: the duty doctor, the
# desk), its lead (teams.lead_staff_id, else its first family doctor still working), the center
# (the owner's, else the resident's) and its directors.
_ESCALATE_SQL = """
WITH target AS (
    SELECT t.id,
           COALESCE(o.team_id, k.team_id) AS team_id,
           COALESCE(o.center_id, r.center_id) AS center_id
      FROM tasks t
      LEFT JOIN staff o ON o.id = t.owner_staff_id
      LEFT JOIN residents r ON r.id = t.resident_id
      LEFT JOIN contracts k ON k.resident_id = t.resident_id
                           AND $3::date BETWEEN k.starts_on AND k.ends_on
     WHERE t.id = ANY($1::bigint[])
), who AS (
    SELECT g.id AS task_id, lead.id AS staff_id, 'team_lead' AS role
      FROM target g JOIN teams tm ON tm.id = g.team_id
      CROSS JOIN LATERAL (
          SELECT COALESCE(tm.lead_staff_id, (
              SELECT s.id FROM staff s WHERE s.team_id = tm.id AND s.role = 'family_doctor'
                 AND (s.left_on IS NULL OR s.left_on > $3) ORDER BY s.id LIMIT 1)) AS id) lead
     WHERE lead.id IS NOT NULL
    UNION
    SELECT g.id, s.id, 'director'
      FROM target g JOIN staff s ON s.center_id = g.center_id AND s.role = 'director'
                                AND (s.left_on IS NULL OR s.left_on > $3)
), escalated AS (
    UPDATE tasks t SET escalated_at = $2, version = t.version + 1
     WHERE t.id = ANY($1::bigint[]) AND t.escalated_at IS NULL
    RETURNING t.id, t.version, t.due_at
), recipients AS (
    INSERT INTO task_escalations (task_id, staff_id, role, at)
    SELECT DISTINCT ON (w.task_id, w.staff_id) w.task_id, w.staff_id, w.role, $2
      FROM who w JOIN escalated e ON e.id = w.task_id
     ORDER BY w.task_id, w.staff_id, w.role DESC
    RETURNING task_id, staff_id, role
)
INSERT INTO task_events (task_id, version, at, event, reason, detail)
SELECT e.id, e.version, $2, 'escalated',
       CASE WHEN EXISTS (SELECT 1 FROM who w WHERE w.task_id = e.id)
            THEN 'overdue → team lead and center director'
            ELSE 'overdue → nobody to escalate to (no team lead or director)' END,
       jsonb_build_object(
           'team_lead', (SELECT min(w.staff_id) FROM who w WHERE w.task_id = e.id AND w.role = 'team_lead'),
           'directors', COALESCE((SELECT jsonb_agg(w.staff_id ORDER BY w.staff_id) FROM who w
                                   WHERE w.task_id = e.id AND w.role = 'director'), '[]'::jsonb))
  FROM escalated e
"""


def _count(status: str) -> int:
    return int(status.split()[-1])


async def warn_due(conn: asyncpg.Connection | asyncpg.Pool, at: datetime) -> int:
    """Warn the open tasks now within their kind's warning time of the deadline."""
    return _count(await conn.execute(_WARN_SQL, at))


async def breach_due(conn: asyncpg.Connection, at: datetime, tz: Any = None) -> tuple[int, int]:
    """Mark the open tasks past their deadline overdue and escalate them; (breached, escalated)."""
    on = (at.astimezone(tz) if tz else at).date()
    async with conn.transaction():
        ids = [r["id"] for r in await conn.fetch(_BREACH_SQL, at)]
        # also the breached tasks a previous sweep marked but could not escalate (none today:
        # both are one transaction; kept so a partial history heals itself)
        ids += [r["id"] for r in await conn.fetch(
            """SELECT id FROM tasks WHERE status = 'open' AND overdue_at IS NOT NULL
                 AND escalated_at IS NULL AND NOT (id = ANY($1::bigint[]))""", ids)]
        if not ids:
            return 0, 0
        escalated = _count(await conn.execute(_ESCALATE_SQL, ids, at, on))
    return len(ids), escalated


async def build_ended_shifts(pool: asyncpg.Pool, at: datetime, tz: Any) -> int:
    """Build the handover sheet of each duty shift ended by `at` and not built yet; how many were
    built. A shift whose build fails is logged and tried again at the next sweep."""
    handover = NightHandover(pool, tz=tz) if tz else NightHandover(pool)
    built = 0
    for row in await pool.fetch(_SHIFTS_TO_BUILD_SQL, at, BUILD_LOOKBACK):
        try:
            result = await handover.build_sheet(row["id"], at)
        except Exception as exc:
            log.error("watcher.handover_build_failed", shift_id=row["id"], why=str(exc) or type(exc).__name__)
            continue
        await pool.execute(
            """INSERT INTO handover_shift_builds (shift_id, built_at, items_added, tasks_opened)
               VALUES ($1, $2, $3, $4) ON CONFLICT (shift_id) DO NOTHING""",
            row["id"], at, result.items_added, result.tasks_opened)
        built += 1
        log.info("watcher.handover_built", shift_id=row["id"], sheets=len(result.sheet_ids),
                 items=result.items_added, tasks=result.tasks_opened)
    return built


@dataclass(frozen=True)
class Sweep:
    at: datetime
    warned: int
    breached: int
    escalated: int
    shift: ShiftChange
    handovers_built: int = 0   # ended shifts whose night handover sheet this sweep built


RoutingSource = Callable[[datetime], Awaitable[RoutingData]]


class Watcher:
    """One per service node; acts only while holding the advisory lock."""

    def __init__(self, pool: asyncpg.Pool, database_url: str, *, now: Callable[[], datetime],
                 routing: RoutingSource, tz: Any = None, sweep_s: float = SWEEP_S,
                 poll_s: float = POLL_S, node: str = ""):
        self._pool = pool
        self._url = database_url
        self._now = now
        self._routing = routing
        self._tz = tz
        self.sweep_s = sweep_s
        self.poll_s = poll_s
        self.node = node
        self._lock_conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self.sweeps = 0
        self.last: Sweep | None = None
        self.became_leader = asyncio.Event()

    @property
    def leading(self) -> bool:
        return self._lock_conn is not None and not self._lock_conn.is_closed()

    @property
    def lock_backend_pid(self) -> int | None:
        return self._lock_conn.get_server_pid() if self.leading and self._lock_conn else None

    async def sweep(self, at: datetime | None = None) -> Sweep:
        """One pass at `at` (default: the clock): warnings, breaches, the shift change, the
        night handover of the shifts that ended."""
        at = at or self._now()
        data = await self._routing(at)
        tz = self._tz or data.tz
        # first: the handover tasks it opens are warned (09:00 is within the hour of 08:00) in
        # this very sweep
        built = await build_ended_shifts(self._pool, at, tz)
        async with self._pool.acquire() as conn:
            warned = await warn_due(conn, at)
            breached, escalated = await breach_due(conn, at, tz)
            now = await responsibility(conn, at, data)
            shift = await follow_shifts(conn, now, tz)
        result = Sweep(at, warned, breached, escalated, shift, built)
        self.sweeps += 1
        self.last = result
        if warned or breached or shift.moved:
            log.info("watcher.swept", node=self.node, at=at.isoformat(), warned=warned,
                     breached=breached, escalated=escalated, moved=shift.moved,
                     centers=len(shift.centers), doctors=len(shift.doctors))
        return result

    async def _try_lead(self) -> bool:
        """Hold the lock (connect and try once); False when another node holds it."""
        if self.leading:
            try:  # the connection may be gone without is_closed() knowing yet
                await self._lock_conn.fetchval("SELECT 1", timeout=self.poll_s)  # type: ignore[union-attr]
                return True
            except Exception as exc:
                log.warning("watcher.lock_lost", node=self.node, why=str(exc) or type(exc).__name__)
                await self._drop_lock()
                return False
        conn = None
        try:
            conn = await db.connect(self._url)
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                self._lock_conn = conn
                log.info("watcher.leading", node=self.node)
                self.became_leader.set()
                return True
        except Exception as exc:
            log.warning("watcher.lock_unavailable", node=self.node, why=str(exc) or type(exc).__name__)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
        return False

    async def _drop_lock(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        self.became_leader.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)

    async def run(self) -> None:
        """Forever: try to lead every poll_s; while leading, sweep every sweep_s."""
        loop = asyncio.get_running_loop()
        next_sweep = 0.0
        try:
            while True:
                if await self._try_lead() and loop.time() >= next_sweep:
                    next_sweep = loop.time() + self.sweep_s
                    try:
                        await self.sweep()
                    except Exception as exc:  # PostgreSQL away, a bug: the next sweep tries again
                        log.error("watcher.sweep_failed", node=self.node, why=str(exc) or type(exc).__name__,
                                  exc_info=not db.is_unreachable(exc))
                await asyncio.sleep(min(self.poll_s, max(0.05, next_sweep - loop.time()))
                                    if self.leading else self.poll_s)
        finally:
            await self._drop_lock()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="deadline watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_lock()
