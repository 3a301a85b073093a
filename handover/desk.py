"""工作台 (my desk): the open tasks a staff member owes (every kind), due-soonest first.

Each task comes with what the desk page shows beside it: the time left to its 8-hour deadline and
how urgent that is, the missed calls behind it and the voicemails left. Two queries whatever the
number of tasks: the tasks (an index scan of `tasks_owner` from the soonest deadline),
then the calls and voicemails of all of them at once.

The missed calls are shown as part of the task (when, which line, what happened), not as calls in
the viewer's call list: a desk agent sees the calls behind the desk's tasks though she answered
none of them. Opening such a call's detail still goes through the call scope.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from routing.scope import Params, Scope

AMBER_UNDER = timedelta(hours=2)
RED_UNDER = timedelta(hours=1)
MAX_TASKS = 500


@dataclass(frozen=True)
class MissedCall:
    call_id: int          # call_records.id
    offered_at: datetime
    line: str | None
    disposition: str


@dataclass(frozen=True)
class TaskVoicemail:
    id: int               # voicemails.id: the console plays it by this id, never by path
    seconds: float
    recorded_at: datetime


@dataclass(frozen=True)
class DeskTask:
    id: int
    kind: str                    # task_kinds.kind: callback, referral_followup, handover …
    kind_title: str              # as the console names it (未接来电回拨, 转诊回访 …)
    caller_masked: str
    resident_id: int | None
    resident_name: str | None
    owner_staff_id: int | None   # None: the duty desk's
    opened_at: datetime
    due_at: datetime
    seconds_left: int            # whole seconds to the deadline; negative once overdue
    urgency: str                 # 'ok' | 'amber' (< 2 h) | 'red' (< 1 h) | 'overdue'
    calls: tuple[MissedCall, ...]
    voicemails: tuple[TaskVoicemail, ...]


def seconds_left(due_at: datetime, now: datetime) -> int:
    """Whole seconds to the deadline, rounded down: 0.4 s past due is -1, i.e. overdue."""
    return math.floor((due_at - now).total_seconds())


def urgency(left: int) -> str:
    """How urgent a task is with `left` seconds to go.

    At the deadline itself (0) the promise is still kept — a task closed at due_at is on time —
    so it is 'red'; 'overdue' starts past it. Exactly 2 h left is still 'ok', exactly 1 h 'amber'.
    """
    if left < 0:
        return "overdue"
    if left < RED_UNDER.total_seconds():
        return "red"
    if left < AMBER_UNDER.total_seconds():
        return "amber"
    return "ok"


_TASK_COLUMNS = """t.id, t.kind, k.title AS kind_title, t.caller_number_masked, t.resident_id,
       r.name AS resident_name, t.owner_staff_id, t.opened_at, t.due_at"""


def desk_query(scope: Scope, *, owner_only: bool, limit: int) -> tuple[str, list[object]]:
    """The SQL and parameters of the task list (apart, so a test can EXPLAIN it)."""
    v = scope.viewer
    p = Params()
    base = (f"SELECT {_TASK_COLUMNS} FROM tasks t JOIN task_kinds k ON k.kind = t.kind"  # noqa: S608 - constant columns
            " LEFT JOIN residents r ON r.id = t.resident_id WHERE t.status = 'open'")
    if not owner_only:
        return f"{base} AND {scope.tasks(p, 't')} ORDER BY t.due_at, t.id LIMIT {p.add(limit)}", p.values
    owners = [f"t.owner_staff_id = {p.add(v.staff_id)}"]
    if v.role == "agent":
        owners.append("t.owner_staff_id IS NULL")
    # One index-ordered branch per owner (tasks_owner is (owner_staff_id, due_at) over
    # open tasks), each cut at the limit, then merged: an OR of both would read every unowned
    # task of the desk and sort them all.
    lim = p.add(limit)
    branches = [f"({base} AND {owner} AND {scope.tasks(p, 't')}"
                f" ORDER BY t.due_at, t.id LIMIT {lim})" for owner in owners]
    sql = (f"SELECT * FROM ({' UNION ALL '.join(branches)}) d"  # noqa: S608 - our branches
           f" ORDER BY d.due_at, d.id LIMIT {lim}")
    return sql, p.values


async def open_tasks(pool: asyncpg.Pool | asyncpg.Connection, scope: Scope, *,
                     owner_only: bool = True, limit: int = 200,
                     now: datetime | None = None) -> list[DeskTask]:
    """The open callback tasks of the desk page, due-soonest first, within `scope`.

    `owner_only`: the viewer's own tasks (an agent's desk also holds the tasks nobody owns, the
    duty desk's); otherwise every open task the scope shows (a director's center, a team's).
    `now` (default: the wall clock) is what the countdown is computed from.
    """
    now = now or datetime.now(UTC)
    limit = max(1, min(int(limit), MAX_TASKS))
    sql, values = desk_query(scope, owner_only=owner_only, limit=limit)
    # constant SQL and the scope's own predicate; every value is a $n parameter
    tasks = await pool.fetch(sql, *values)
    ids = [t["id"] for t in tasks]
    calls: dict[int, list[MissedCall]] = {i: [] for i in ids}
    voicemails: dict[int, list[TaskVoicemail]] = {i: [] for i in ids}
    if ids:
        attached = await pool.fetch(
            """SELECT 'call' AS kind, cc.task_id, c.id, c.offered_at AS at, c.line, c.disposition,
                      NULL::numeric AS seconds
                 FROM callback_calls cc JOIN call_records c ON c.id = cc.call_record_id
                WHERE cc.task_id = ANY($1::bigint[])
               UNION ALL
               SELECT 'voicemail', v.task_id, v.id, v.recorded_at, NULL, NULL, v.seconds
                 FROM voicemails v
                WHERE v.task_id = ANY($1::bigint[])
               ORDER BY task_id, at, id""", ids)
        for a in attached:
            if a["kind"] == "call":
                calls[a["task_id"]].append(
                    MissedCall(a["id"], a["at"], a["line"], a["disposition"]))
            else:
                voicemails[a["task_id"]].append(TaskVoicemail(a["id"], float(a["seconds"]), a["at"]))
    result = []
    for t in tasks:
        left = seconds_left(t["due_at"], now)
        result.append(DeskTask(
            id=t["id"], kind=t["kind"], kind_title=t["kind_title"],
            caller_masked=t["caller_number_masked"], resident_id=t["resident_id"],
            resident_name=t["resident_name"], owner_staff_id=t["owner_staff_id"],
            opened_at=t["opened_at"], due_at=t["due_at"], seconds_left=left,
            urgency=urgency(left), calls=tuple(calls[t["id"]]),
            voicemails=tuple(voicemails[t["id"]])))
    return result


@dataclass(frozen=True)
class EscalatedTask:
    """An overdue task escalated to the viewer (her team's, or her center's as director)."""

    id: int
    kind_title: str
    caller_masked: str
    resident_name: str | None
    owner_name: str | None       # None: the duty desk's
    due_at: datetime
    overdue_at: datetime
    escalated_at: datetime
    role: str                    # 'team_lead' | 'director': why it is on this desk


async def escalated_tasks(pool: asyncpg.Pool | asyncpg.Connection, scope: Scope, *,
                          limit: int = 200) -> list[EscalatedTask]:
    """The open tasks escalated to the viewer (task_escalations), longest overdue first, within
    her scope (an escalation makes the task part of it: routing.scope.Scope.tasks)."""
    p = Params(scope.viewer.staff_id)
    rows = await pool.fetch(
        f"""SELECT t.id, k.title, t.caller_number_masked, r.name AS resident_name,
                   o.name AS owner_name, t.due_at, t.overdue_at, e.at, e.role
              FROM task_escalations e
              JOIN tasks t ON t.id = e.task_id
              JOIN task_kinds k ON k.kind = t.kind
              LEFT JOIN residents r ON r.id = t.resident_id
              LEFT JOIN staff o ON o.id = t.owner_staff_id
             WHERE e.staff_id = $1 AND t.status = 'open' AND {scope.tasks(p, 't')}
             ORDER BY t.due_at, t.id LIMIT {p.add(max(1, min(int(limit), MAX_TASKS)))}""",  # noqa: S608
        *p.values)
    return [EscalatedTask(r["id"], r["title"], r["caller_number_masked"], r["resident_name"],
                          r["owner_name"], r["due_at"], r["overdue_at"], r["at"], r["role"])
            for r in rows]
