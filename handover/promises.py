"""The ledger check (`hotline promises check`): every promise the hotline made since a date, kept
on the books.

- every call since the date that no human answered and that owes a callback (an inbound call,
  disposition missed or abandoned, from a number we can call back: ivr/flow.py owes one exactly
  then; an outbound call the resident did not answer is an attempt of its task, not a call owed)
  is attached to exactly one callback task (callback_calls);
- every referral has its follow-up task (only once the referrals table exists);
- every task opened since the date has a consistent history: versions 1..n without a gap with
  n = tasks.version, 'opened' first, each change of owner starting from the owner the previous one
  left, the task's owner the one the last change gave, a closed task's last event 'closed' (an
  open task has none);
- the owner at every instant the ownership rule changes for the resident (plus `tolerance`, the
  time the watcher may take to see it) is the one the rule names (handover/ownership.py), except
  after a supervisor's reassignment by hand, which stands until the next owner change.

The rule is judged by the directory as it is now: a leave or a swap entered after the fact makes
the past look wrong. Each broken promise is one `Broken` (a line, or a JSON object).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import asyncpg

from handover.ownership import Responsible, responsible, subject
from routing.chain import RoutingData

TOLERANCE = timedelta(seconds=60)
BY_HAND = "reassigned"
OWNER_EVENTS = ("opened", "owner_changed", "reassigned")


@dataclass(frozen=True)
class Broken:
    kind: str            # 'callback_missing' | 'followup_missing' | 'history' | 'owner'
    message: str
    call_id: int | None = None
    task_id: int | None = None
    referral_id: int | None = None
    at: str | None = None

    def line(self) -> str:
        return self.message

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


_CALLS_SQL = """
SELECT c.id, c.offered_at, c.disposition, c.caller_number_masked
  FROM call_records c
 WHERE c.offered_at >= $1 AND c.disposition IN ('missed', 'abandoned')
   AND c.direction = 'inbound'  -- an unanswered call back is an attempt of its task, not a call owed one
   AND c.caller_number_hash IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM callback_calls cc JOIN tasks t ON t.id = cc.task_id
                    WHERE cc.call_record_id = c.id AND t.kind = 'callback')
 ORDER BY c.offered_at, c.id
"""

_HISTORY_SQL = """
SELECT t.id, t.version, t.status, t.owner_staff_id, t.resident_id, t.opened_at, t.closed_at,
       count(e.id) AS events, min(e.version) AS first_version, max(e.version) AS last_version,
       (array_agg(e.event ORDER BY e.version))[1] AS first_event,
       (array_agg(e.event ORDER BY e.version DESC))[1] AS last_event,
       count(*) FILTER (WHERE e.event = 'closed') AS closes,
       COALESCE(json_agg(json_build_object('v', e.version, 'at', e.at, 'event', e.event,
                                           'from', e.owner_from, 'to', e.owner_to, 'reason', e.reason)
                         ORDER BY e.version)
                FILTER (WHERE e.event = ANY($2::text[]) OR e.owner_from IS NOT NULL
                        OR e.owner_to IS NOT NULL), '[]') AS owners
  FROM tasks t LEFT JOIN task_events e ON e.task_id = t.id
 WHERE t.opened_at >= $1
 GROUP BY t.id ORDER BY t.id
"""


def _history(row: Any, owners: list[dict[str, Any]]) -> list[str]:
    """What is wrong with one task's history (nothing: [])."""
    problems = []
    if row["events"] != row["version"] or row["first_version"] != 1 or row["last_version"] != row["version"]:
        problems.append(f"{row['events']} events for version {row['version']}"
                        f" (versions {row['first_version']}..{row['last_version']}): a gap")
    if row["first_event"] != "opened":
        problems.append(f"first event is {row['first_event']!r}, not 'opened'")
    owner: Any = "unset"
    for e in owners:
        said_from = e["event"] in OWNER_EVENTS or e["from"] is not None
        if e["event"] != "opened" and owner != "unset" and said_from and e["from"] != owner:
            problems.append(f"version {e['v']} ({e['event']}) moves it from {e['from']}, but its owner was {owner}")
        owner = e["to"]
    if owners and owner != row["owner_staff_id"]:
        problems.append(f"owner is {row['owner_staff_id']}, but its last owner change gave it to {owner}")
    if row["status"] != "open" and row["last_event"] != "closed":
        problems.append(f"status {row['status']} but the last event is {row['last_event']!r}, not 'closed'")
    if row["status"] == "open" and row["closes"]:
        problems.append("open but has a 'closed' event")
    return problems


RoutingSource = Callable[[datetime], Awaitable[RoutingData]]


class _RuleAt:
    """The rule at any instant, with routing data loaded once per local day."""

    def __init__(self, routing: RoutingSource, tz: Any):
        self._routing = routing
        self._tz = tz
        self._days: dict[date, RoutingData] = {}

    async def data(self, at: datetime) -> RoutingData:
        day = at.astimezone(self._tz).date()
        if day not in self._days:
            self._days[day] = await self._routing(datetime.combine(day, time(12), self._tz))
        return self._days[day]

    async def transitions(self, center_id: int, start: datetime, end: datetime) -> list[datetime]:
        """Every instant in [start, end) the rule may change for a resident of the center:
        midnights (leave, contracts, holidays), the center's day window, shift starts and ends."""
        found: set[datetime] = set()
        day = start.astimezone(self._tz).date()
        while datetime.combine(day, time(0), self._tz) < end:
            data = await self.data(datetime.combine(day, time(12), self._tz))
            window = data.calendar.window(center_id)
            for t in (time(0), window.start, window.end):
                found.add(datetime.combine(day, t, self._tz))
            for s in data.shifts:
                found.update((s.starts_at, s.ends_at))
            day += timedelta(days=1)
        return sorted(x for x in found if start < x < end)


async def check(pool: asyncpg.Pool, since: datetime, *, routing: RoutingSource, tz: Any,
                now: datetime, tolerance: timedelta = TOLERANCE) -> list[Broken]:
    broken: list[Broken] = []
    for c in await pool.fetch(_CALLS_SQL, since):
        broken.append(Broken(
            "callback_missing", f"call {c['id']} ({c['offered_at'].astimezone(tz):%Y-%m-%d %H:%M},"
            f" {c['disposition']}, {c['caller_number_masked']}): nobody answered and no callback task",
            call_id=c["id"], at=c["offered_at"].isoformat()))
    if await pool.fetchval("SELECT to_regclass('referrals') IS NOT NULL"):
        # (the referrals table comes with its own migration: when it was made is read from
        # whichever of these columns it has; without one, every referral is checked)
        when = await pool.fetchval(
            """SELECT column_name FROM information_schema.columns
                WHERE table_name = 'referrals' AND column_name = ANY('{created_at,referred_at,at}')
                ORDER BY array_position('{created_at,referred_at,at}', column_name::text) LIMIT 1""")
        since_sql = f"f.{when} >= $1" if when else "$1::timestamptz IS NOT NULL"
        for r in await pool.fetch(
                f"""SELECT f.id FROM referrals f LEFT JOIN tasks t ON t.id = f.followup_task_id
                    WHERE {since_sql} AND (t.id IS NULL OR t.kind <> 'referral_followup')
                    ORDER BY f.id""", since):  # noqa: S608 - a column name of the catalogue
            broken.append(Broken("followup_missing", f"referral {r['id']}: no follow-up task",
                                 referral_id=r["id"]))
    rule = _RuleAt(routing, tz)
    for row in await pool.fetch(_HISTORY_SQL, since, list(OWNER_EVENTS)):
        owners = json.loads(row["owners"])
        for problem in _history(row, owners):
            broken.append(Broken("history", f"task {row['id']}: {problem}", task_id=row["id"]))
        broken.extend(await _owners(pool, rule, row, owners, now, tolerance, tz))
    return broken


async def _owners(pool: asyncpg.Pool, rule: _RuleAt, row: Any, owners: list[dict[str, Any]],
                  now: datetime, tolerance: timedelta, tz: Any) -> list[Broken]:
    """The owner at each instant the rule may change (plus the tolerance) against the rule."""
    if not owners:
        return []
    changes = [(datetime.fromisoformat(e["at"]), e["to"], e["event"]) for e in owners]
    starts = [c[0] for c in changes]
    end = row["closed_at"] or now
    caller = await subject(pool, row["resident_id"])
    center = caller.center_id if caller else None
    points = {row["opened_at"]} | {c[0] + tolerance for c in changes[1:]}
    if center is not None:
        points |= {x + tolerance for x in await rule.transitions(center, row["opened_at"], end)}
    broken = []
    for p in sorted(x for x in points if row["opened_at"] <= x < end):
        k = bisect.bisect_right(starts, p) - 1
        if k < 0:
            continue
        _, owner, event = changes[k]
        if event == BY_HAND:
            continue   # a reassignment by hand stands until the next change of owner
        want: Responsible = responsible(caller, p, await rule.data(p))
        if want.staff_id != owner:
            broken.append(Broken(
                "owner", f"task {row['id']} at {p.astimezone(tz):%Y-%m-%d %H:%M:%S}: owner {owner},"
                f" the rule says {want.staff_id} ({want.title}; {want.reason})",
                task_id=row["id"], at=p.isoformat()))
            break   # one line per task: the first instant it went wrong
    return broken
