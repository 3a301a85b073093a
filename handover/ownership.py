"""Who is responsible for a resident at an instant, and tasks following that person (issue 11).

The rule (pure, `responsible`): in the day window of a working day of the resident's center
(routing.calendar, the same judgement routing makes for a call) the resident's family doctor
under the contract in force that day; outside it the night duty doctor — whoever the hotline
would ring first for the center at that instant (routing.chain.route_chain over the roster:
the center's duty doctors in ring order, then backup, a swap already in the roster, people on
leave or gone skipped); the duty desk (owner NULL) when neither exists: a family doctor on leave
or gone, no contract in force, a roster gap, an unknown caller.

The shift change (`follow_shifts`): the rule evaluated once per center and once per staff member
(not per task), compared with what was last applied (table task_watch_state); the open tasks of
the centers and doctors whose answer changed pass, in one statement (a data-modifying CTE that
updates the tasks and writes their 'owner_changed' events), to the person now responsible. The
due time is never touched. Acting on changes only — not on every task whose owner differs — keeps
a supervisor's reassignment by hand until the next change of shift for that resident.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from routing.calendar import DEFAULT_DAY_END, DEFAULT_DAY_START, DEFAULT_TZ
from routing.calendar_store import calendar_loader
from routing.chain import DEFAULT_RING_TIMEOUTS, RoutingData, route_chain
from routing.directory import staff_of
from routing.people import Caller, Contract, StaffMember
from routing.snapshot import load_routing_data

DESK = "duty desk"


@dataclass(frozen=True)
class Responsible:
    staff_id: int | None   # None: the duty desk
    title: str             # "family doctor 王医生", "night duty doctor 赵医生 (on duty …)", "duty desk"
    reason: str            # why (the calendar's and the roster's explanation)


@dataclass(frozen=True)
class CenterRule:
    """What the rule says for every resident of one center at one instant, but the family
    doctor: day or night, and who holds the night."""

    center_id: int
    district_id: int
    day: bool
    why: str                         # the calendar's explanation
    night: Responsible | None        # None by day
    window_start: str = ""           # the center's window, HH:MM, for the reasons of a change
    window_end: str = ""

    @property
    def key(self) -> list[Any]:
        """What a change of shift compares (the reasons may change wording, not owners)."""
        return [self.day, None if self.night is None else self.night.staff_id]


def away(person: StaffMember, on: date, data: RoutingData) -> str | None:
    """Why `person` cannot hold tasks on `on` (gone, on leave), or None."""
    if person.has_left(on):
        return f"{person.name} left on {person.left_on}"
    leave = data.on_leave(person.id, on)
    if leave is not None:
        what = f" ({leave.reason})" if leave.reason else ""
        return f"{person.name} on leave until {leave.ends_on:%m-%d}{what}"
    return None


def _local(at: datetime, data: RoutingData) -> datetime:
    return at.astimezone(data.tz) if data.tz else at


def center_rule(center_id: int, district_id: int, at: datetime, data: RoutingData) -> CenterRule:
    if at.tzinfo is None:
        raise ValueError("center_rule() needs an aware datetime")
    service = data.calendar.day_service(at, center_id, district_id=district_id)
    window = service.window
    start, end = f"{window.start:%H:%M}", f"{window.end:%H:%M}"
    if service.day:
        return CenterRule(center_id, district_id, True, service.reason, None, start, end)
    # The night's owner is whom the hotline rings first for the center now: a resident without a
    # contract walks exactly the night chain of the center.
    decision = route_chain(Caller(0, "-", center_id, district_id), at, data)
    night = Responsible(None, f"{DESK} (nobody on the roster)", decision.reason)
    skipped = "; ".join(k.reason for s in decision.steps for k in s.skipped
                        if s.name in ("duty", "backup"))
    for step in decision.steps:
        if step.name in ("duty", "backup") and step.targets:
            t = step.targets[0]
            role = "night duty doctor" if step.name == "duty" else "backup duty doctor"
            extra = f"; {skipped}" if skipped else ""
            night = Responsible(t.staff.id, f"{role} {t.staff.name} ({t.reason}{extra})", decision.reason)
            break
    return CenterRule(center_id, district_id, False, service.reason, night, start, end)


def family_doctor(caller: Caller, on: date) -> StaffMember | None:
    contract: Contract | None = next((c for c in caller.contracts if c.in_force(on)), None)
    return contract.doctor if contract is not None else None


def responsible(caller: Caller | None, at: datetime, data: RoutingData) -> Responsible:
    """Who is responsible for `caller` (None: an unknown number) at `at`."""
    if caller is None:
        return Responsible(None, DESK, "unknown caller (not a registered resident)")
    rule = center_rule(caller.center_id, caller.district_id, at, data)
    if not rule.day:
        assert rule.night is not None
        return rule.night
    on = _local(at, data).date()
    doctor = family_doctor(caller, on)
    if doctor is None:
        return Responsible(None, DESK, f"{rule.why}; {caller.name} has no contract in force")
    gone = away(doctor, on, data)
    if gone is not None:
        return Responsible(None, DESK, f"{rule.why}; {gone}")
    return Responsible(doctor.id, f"family doctor {doctor.name}", rule.why)


# -- reading the subject ------------------------------------------------------------------------

_SUBJECT_SQL = """
SELECT r.id, r.name, r.center_id, ce.district_id,
       COALESCE(json_agg(json_build_object(
           'starts_on', c.starts_on, 'ends_on', c.ends_on,
           'doctor', json_build_object('id', d.id, 'name', d.name, 'role', d.role,
                                       'sip_uri', d.sip_uri, 'center_id', d.center_id,
                                       'team_id', d.team_id, 'left_on', d.left_on,
                                       'district_id', d.district_id)) ORDER BY c.starts_on)
           FILTER (WHERE c.id IS NOT NULL), '[]') AS contracts
FROM residents r JOIN centers ce ON ce.id = r.center_id
LEFT JOIN contracts c ON c.resident_id = r.id LEFT JOIN staff d ON d.id = c.doctor_id
WHERE r.id = $1
GROUP BY r.id, ce.district_id
"""


async def subject(conn: asyncpg.Pool | asyncpg.Connection, resident_id: int | None) -> Caller | None:
    """The resident as the rule needs her (center, district, contracts); None: not found."""
    if resident_id is None:
        return None
    row = await conn.fetchrow(_SUBJECT_SQL, resident_id)
    if row is None:
        return None
    contracts = tuple(Contract(staff_of(c["doctor"]), date.fromisoformat(c["starts_on"]),
                               date.fromisoformat(c["ends_on"]))
                      for c in json.loads(row["contracts"]))
    return Caller(row["id"], row["name"], row["center_id"], row["district_id"], contracts)


# -- the shift change ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Responsibility:
    """The rule for every center and staff member at one instant."""

    at: datetime
    centers: dict[int, CenterRule]
    away: dict[int, str]          # staff id → why away

    def state(self) -> dict[str, Any]:
        return {"centers": {str(c): r.key for c, r in self.centers.items()},
                "away": sorted(self.away)}


async def load_staff(conn: asyncpg.Connection | asyncpg.Pool) -> list[StaffMember]:
    rows = await conn.fetch(
        "SELECT id, name, role, sip_uri, center_id, team_id, left_on, district_id FROM staff")
    return [staff_of(r) for r in rows]


async def responsibility(conn: asyncpg.Connection | asyncpg.Pool, at: datetime,
                         data: RoutingData) -> Responsibility:
    centers = await conn.fetch("SELECT id, district_id FROM centers ORDER BY id")
    on = _local(at, data).date()
    staff = await load_staff(conn)
    return Responsibility(
        at, {c["id"]: center_rule(c["id"], c["district_id"], at, data) for c in centers},
        {p.id: why for p in staff if (why := away(p, on, data)) is not None})


def change_reason(now: CenterRule, before: Sequence[Any] | None) -> str:
    """What ended, for the events of the tasks a center's change moves."""
    if before is None:
        return now.why
    was_day, was_owner = before[0], before[1]
    if now.day and not was_day:
        return f"night shift ended {now.window_start}"
    if not now.day and was_day:
        return f"day window ended {now.window_end}" if "outside" in now.why else now.why
    if not now.day and was_owner != (now.night.staff_id if now.night else None):
        return "night duty changed"
    return now.why


# Candidates: the open tasks of residents of the centers whose rule changed, and of residents
# whose family doctor's availability changed — found resident by resident through the open-task
# index (OFFSET 0 keeps each lateral subquery apart, so PostgreSQL cannot turn it into a scan of
# every task: the table keeps every task ever opened). Then, in one statement, each candidate
# gets the owner the rule gives now; only those whose owner differs are written, each with its
# event.
_CANDIDATES_SQL = """
SELECT o.id FROM residents r
 CROSS JOIN LATERAL (SELECT t.id FROM tasks t
                      WHERE t.resident_id = r.id AND t.status = 'open' OFFSET 0) o
 WHERE r.center_id = ANY($1::int[])
UNION
SELECT o.id FROM contracts k
 CROSS JOIN LATERAL (SELECT t.id FROM tasks t
                      WHERE t.resident_id = k.resident_id AND t.status = 'open' OFFSET 0) o
 WHERE k.doctor_id = ANY($2::int[]) AND $3::date BETWEEN k.starts_on AND k.ends_on
"""

_FOLLOW_SQL = """
WITH rule(center_id, day, night_owner, why, night_title) AS (
    SELECT * FROM unnest($1::int[], $2::bool[], $3::int[], $4::text[], $5::text[])
), doc(staff_id, is_away, why) AS (
    SELECT * FROM unnest($6::int[], $7::bool[], $8::text[])
), candidate AS (
    SELECT unnest($9::bigint[]) AS id
), wanted AS (
    SELECT t.id, t.version, t.owner_staff_id AS owner_from,
           CASE WHEN NOT rule.day THEN rule.night_owner
                WHEN doc.is_away THEN NULL
                ELSE k.doctor_id END AS owner_to,
           CASE WHEN NOT rule.day THEN rule.why || ' → ' || rule.night_title
                WHEN k.doctor_id IS NULL THEN rule.why || ' → duty desk (no contract in force)'
                WHEN doc.is_away THEN doc.why || ' → duty desk'
                ELSE COALESCE(doc.why, rule.why) || ' → family doctor ' || fd.name END AS reason
      FROM candidate c
      JOIN tasks t ON t.id = c.id
      JOIN residents r ON r.id = t.resident_id
      JOIN rule ON rule.center_id = r.center_id
      LEFT JOIN contracts k ON k.resident_id = t.resident_id
                           AND $10::date BETWEEN k.starts_on AND k.ends_on
      LEFT JOIN staff fd ON fd.id = k.doctor_id
      LEFT JOIN doc ON doc.staff_id = k.doctor_id
), moved AS (
    UPDATE tasks t SET owner_staff_id = w.owner_to, version = t.version + 1
      FROM wanted w
     WHERE t.id = w.id AND t.version = w.version AND t.status = 'open'
       AND t.owner_staff_id IS DISTINCT FROM w.owner_to
    RETURNING t.id, t.version, w.owner_from, w.owner_to, w.reason
)
INSERT INTO task_events (task_id, version, at, event, owner_from, owner_to, reason)
SELECT id, version, $11, 'owner_changed', owner_from, owner_to, left(reason, 2000) FROM moved
"""


@dataclass(frozen=True)
class ShiftChange:
    centers: tuple[int, ...]     # the centers whose rule changed
    doctors: tuple[int, ...]     # the staff whose availability changed
    moved: int                   # tasks that passed to another owner


async def follow_shifts(conn: asyncpg.Connection, now: Responsibility, tz: Any = None,
                        *, full: bool = False) -> ShiftChange:
    """Move the open tasks whose responsible person changed since the state last applied, in one
    transaction with the new state (the state row is locked first: two watchers racing apply a
    change once). `full`: treat every center as changed (a repair; undoes reassignments)."""
    async with conn.transaction():
        row = await conn.fetchrow("SELECT state FROM task_watch_state WHERE id = 1 FOR UPDATE")
        before: Mapping[str, Any] = json.loads(row["state"]) if row else {}
        before_centers: Mapping[str, Any] = before.get("centers", {})
        before_away = set(before.get("away", []))
        centers = [c for c, r in now.centers.items()
                   if full or before_centers.get(str(c)) != r.key]
        doctors = sorted((set(now.away) ^ before_away) if row is not None or full else set(now.away))
        state = now.state()
        if not centers and not doctors:
            return ShiftChange((), (), 0)
        rules = [now.centers[c] for c in now.centers]
        whys = [change_reason(r, None if full else before_centers.get(str(r.center_id))) for r in rules]
        doc_ids = sorted(set(now.away) | set(doctors))
        on = (now.at.astimezone(tz) if tz else now.at).date()
        candidates = [r["id"] for r in await conn.fetch(_CANDIDATES_SQL, centers, doctors, on)]
        # Locked first (in id order), so the move below reads each at its latest version and none
        # is skipped for a note written meanwhile: the state saved with it says they all moved.
        await conn.execute("SELECT 1 FROM tasks WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
                           candidates)
        status = await conn.execute(
            _FOLLOW_SQL,
            [r.center_id for r in rules], [r.day for r in rules],
            [r.night.staff_id if r.night else None for r in rules], whys,
            [r.night.title if r.night else "" for r in rules],
            doc_ids, [d in now.away for d in doc_ids],
            [now.away.get(d, _back(d, before_away)) for d in doc_ids],
            candidates, on, now.at) if candidates else "INSERT 0 0"
        await conn.execute(
            """INSERT INTO task_watch_state (id, state, applied_at) VALUES (1, $1::jsonb, $2)
               ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, applied_at = EXCLUDED.applied_at""",
            json.dumps(state), now.at)
        return ShiftChange(tuple(centers), tuple(doctors), int(status.split()[-1]))


def _back(staff_id: int, before_away: set[int]) -> str | None:
    return "back from leave" if staff_id in before_away else None


def routing_source(pool: asyncpg.Pool, tz: Any = DEFAULT_TZ, day_start: Any = DEFAULT_DAY_START,
                   day_end: Any = DEFAULT_DAY_END) -> Callable[[datetime], Awaitable[RoutingData]]:
    """The routing data around an instant, read afresh (the CLI, tests; the service passes its
    routing cache instead)."""
    calendar = calendar_loader(tz, day_start, day_end)

    async def data(at: datetime) -> RoutingData:
        async with pool.acquire() as conn:
            return await load_routing_data(conn, at, calendar, DEFAULT_RING_TIMEOUTS, tz)

    return data
