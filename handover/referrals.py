"""Referrals (转诊) and their 72-hour follow-up (家庭医生72小时内回访转诊居民).

A doctor records that a resident was referred (hospital, department, reason, when). The referral
and its referral_followup task are written in one transaction: a referral without its follow-up
cannot exist, and a refused referral writes nothing. The task is due `due_after` of its kind
(task_kinds: 72 h) after the referral, owned through the same ownership rule as every task
(handover/ownership.py `responsible`): the resident's family doctor in the day window of a working
day, the night duty doctor outside it, the duty desk when neither exists. A referral recorded at
night is the duty doctor's until the day window opens; the watcher's shift change then passes it
to the family doctor, like a missed call's callback.

The follow-up is closed like every task (handover/tasks.py): an answered call with the resident
since the referral, a note, and the outcome (seen / admitted / not_gone / other).

Who may refer whom: the resident must be in the recorder's scope (routing.scope.Scope.residents);
one out of it is `unknown_resident`, exactly like one that does not exist. Lists are filtered by
Scope.referrals.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import asyncpg

from handover.ownership import responsible, routing_source, subject
from handover.tasks import Refusal, Tasks
from routing.chain import RoutingData
from routing.scope import Params, Scope

KIND = "referral_followup"
HOSPITAL_MAX, DEPARTMENT_MAX, REASON_MAX = 200, 100, 2000
# A referral is recorded when it is made or soon after; one dated further back would open a
# follow-up already late, one in the future a promise about something that has not happened.
MAX_AGE = timedelta(days=7)
CLOCK_SKEW = timedelta(minutes=5)
MAX_LIST = 500

OwnerRule = Callable[[asyncpg.Connection, int, datetime, int], Awaitable[int | None]]
RoutingSource = Callable[[datetime], Awaitable[RoutingData]]


class ReferralError(Refusal):
    MESSAGES = {
        "unknown_resident": "没有这个居民",
        "ambiguous_resident": "这个号码对应多位居民，请输入居民编号（id:N）",
        "required": "请填写完整：医院、科室、转诊原因",
        "too_long": "内容过长",
        "bad_text": "内容含有不允许的字符",
        "bad_time": "转诊时间不能晚于现在，也不能早于7天前",
    }


@dataclass(frozen=True)
class Referral:
    id: int
    resident_id: int
    resident_name: str
    hospital: str
    department: str
    reason: str
    referred_at: datetime
    recorded_by: int
    recorded_by_no: str
    recorded_by_name: str
    recorded_at: datetime
    followup_task_id: int
    followup_status: str
    followup_due_at: datetime
    followup_owner_name: str | None
    followup_outcome: str | None

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_SELECT = """SELECT rf.id, rf.resident_id, r.name AS resident_name, rf.hospital, rf.department,
                    rf.reason, rf.referred_at, rf.recorded_by, rs.staff_no AS recorded_by_no,
                    rs.name AS recorded_by_name, rf.recorded_at, rf.followup_task_id,
                    t.status AS followup_status, t.due_at AS followup_due_at,
                    os.name AS followup_owner_name, t.close_outcome AS followup_outcome
               FROM referrals rf
               JOIN residents r ON r.id = rf.resident_id
               JOIN staff rs ON rs.id = rf.recorded_by
               JOIN tasks t ON t.id = rf.followup_task_id
               LEFT JOIN staff os ON os.id = t.owner_staff_id"""


def clean(value: str | None, *, limit: int) -> str:
    """A short text a person typed: trimmed; refused when empty, too long, or holding control
    characters (NUL cannot be stored; the others are never typed and only hide text)."""
    text = (value or "").strip()
    if not text:
        raise ReferralError("required")
    if len(text) > limit:
        raise ReferralError("too_long", f"{len(text)} characters, at most {limit}")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in text):
        raise ReferralError("bad_text")
    return text


def shift_owner(routing: RoutingSource) -> OwnerRule:
    """The ownership rule as an OwnerRule: whoever is responsible for the resident at `at`."""

    async def owner(conn: asyncpg.Connection, resident_id: int, at: datetime, recorded_by: int) -> int | None:
        return responsible(await subject(conn, resident_id), at, await routing(at)).staff_id

    return owner


class Referrals:
    def __init__(self, pool: asyncpg.Pool, tz: tzinfo, *, routing: RoutingSource | None = None,
                 owner_of: OwnerRule | None = None, tasks: Tasks | None = None):
        """`routing`: the routing data around an instant (default: read afresh with the default
        day window; the CLI passes its configured one)."""
        self._pool = pool
        self._tz = tz
        self._owner_of = owner_of or shift_owner(routing or routing_source(pool, tz))
        self._tasks = tasks or Tasks(pool)

    async def add(self, scope: Scope, *, resident_id: int, hospital: str, department: str,
                  reason: str, referred_at: datetime | None = None,
                  now: datetime | None = None) -> Referral:
        """Record a referral and open its follow-up; ReferralError (nothing written) when refused."""
        now = now or datetime.now(UTC)
        hospital = clean(hospital, limit=HOSPITAL_MAX)
        department = clean(department, limit=DEPARTMENT_MAX)
        reason = clean(reason, limit=REASON_MAX)
        at = referred_at or now
        if at.tzinfo is None:
            at = at.replace(tzinfo=self._tz)
        if at > now + CLOCK_SKEW or at < now - MAX_AGE:
            raise ReferralError("bad_time", at.isoformat())
        kind = await self._tasks.kind(KIND)
        assert kind.due_after is not None, "referral follow-ups are due a time after the referral"
        recorder = scope.viewer.staff_id
        async with self._pool.acquire() as conn, conn.transaction():
            p = Params(resident_id)
            found = await conn.fetchval(
                f"SELECT r.id FROM residents r WHERE r.id = $1 AND {scope.residents(p, 'r')}",  # noqa: S608
                *p.values)
            if found is None:
                raise ReferralError("unknown_resident")
            owner = await self._owner_of(conn, resident_id, at.astimezone(self._tz), recorder)
            task = await self._tasks.open(
                kind=KIND, owner_staff_id=owner, opened_at=at, due_at=at + kind.due_after,
                resident_id=resident_id, summary=f"转诊 {hospital} {department}"[:200],
                actor_staff_id=recorder, reason="referral", conn=conn)
            referral_id = await conn.fetchval(
                """INSERT INTO referrals (resident_id, hospital, department, reason, referred_at,
                                          recorded_by, recorded_at, followup_task_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
                resident_id, hospital, department, reason, at, recorder, now, task.id)
            row = await conn.fetchrow(f"{_SELECT} WHERE rf.id = $1", referral_id)  # noqa: S608
        return Referral(**dict(row))

    async def resident_in_scope(self, scope: Scope, candidates: list[int]) -> int:
        """The one resident among `candidates` (the holders of a phone number, say) the recorder
        may refer; those out of her scope are not counted, as if they did not exist."""
        p = Params(candidates)
        rows = await self._pool.fetch(
            f"SELECT r.id FROM residents r WHERE r.id = ANY($1::bigint[]) AND {scope.residents(p, 'r')}"  # noqa: S608
            " ORDER BY r.id", *p.values)
        if not rows:
            raise ReferralError("unknown_resident")
        if len(rows) > 1:
            raise ReferralError("ambiguous_resident")
        return int(rows[0]["id"])

    async def get(self, scope: Scope, referral_id: int) -> Referral | None:
        p = Params(referral_id)
        row = await self._pool.fetchrow(
            f"{_SELECT} WHERE rf.id = $1 AND {scope.referrals(p, 'rf')}", *p.values)  # noqa: S608
        return Referral(**dict(row)) if row else None

    async def list(self, scope: Scope, *, doctor_id: int | None = None, center_id: int | None = None,
                   status: str | None = None, limit: int = 100) -> list[Referral]:
        """Referrals in scope, newest first: of one doctor (recorded by her, or whose follow-up
        she owns), of one center (the resident's), or with the follow-up in one status."""
        p = Params()
        where = [scope.referrals(p, "rf")]
        if doctor_id is not None:
            d = p.add(doctor_id)
            where.append(f"(rf.recorded_by = {d} OR t.owner_staff_id = {d})")
        if center_id is not None:
            where.append(f"r.center_id = {p.add(center_id)}")
        if status is not None:
            where.append(f"t.status = {p.add(status)}")
        limit = max(1, min(int(limit), MAX_LIST))
        rows = await self._pool.fetch(
            f"{_SELECT} WHERE {' AND '.join(where)}"  # noqa: S608 - scope predicates and $n only
            f" ORDER BY rf.referred_at DESC, rf.id DESC LIMIT {p.add(limit)}", *p.values)
        return [Referral(**dict(r)) for r in rows]
