"""Tasks: one model for every promise the hotline makes (callback, referral follow-up, handover …).

A task has a kind (a row of `task_kinds`: its window, whether "done" needs a call, its retry rule
and the outcomes a close may state), a subject (the resident, or the number of an unknown caller),
an owner, a due time that never moves, a status, attempts, notes, the call that is the evidence of
its close, and a history: every change is an event row of the same transaction, numbered by the
task's `version` (the database refuses an update that skips it, a delete, or a version without
its event — migration 0024).

Writers say which version they saw (optimistic concurrency): two staff closing the same task at
once both read version 3, one writes version 4 and the other gets `stale`. The scope filter of
the console (routing.scope.Scope.tasks) is applied when a task is read for a change, so a task out
of the viewer's scope is `not_found`, exactly as one that does not exist.

Kinds have their own small modules (handover/callbacks.py, referrals, the night handover) that
open tasks through `Tasks.open` and add what is theirs; the rules common to all are here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from routing.scope import Params, Scope

STATUSES = ("open", "done", "unreachable", "cancelled")
CLOSED_STATUSES = ("done", "unreachable", "cancelled")
# What an unanswered attempt to reach the resident was (a staff phone that did not answer is no
# attempt on the resident: nobody dialled her).
ATTEMPT_OUTCOMES = ("no_answer", "busy", "unreachable", "rejected")
NOTE_MAX = 4000
REASON_MAX = 2000


class Refusal(Exception):
    """A change refused, with a code the console and the CLI map to their answers and the
    Chinese words of its class's MESSAGES (TaskError here, ReferralError in referrals.py)."""

    MESSAGES: dict[str, str] = {}

    def __init__(self, code: str, detail: str = ""):
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}" if detail else code)

    @property
    def message(self) -> str:
        return self.MESSAGES.get(self.code, self.code)


class TaskError(Refusal):
    """A change refused, with a code the console and the CLI map to their answers."""

    MESSAGES = {
        "not_found": "没有这个任务",
        "stale": "任务已被他人修改，请刷新后重试",
        "closed": "任务已关闭",
        "no_evidence": "没有任务开启后与居民接通的通话，不能标记为完成",
        "attempts_left": "未达到无法联系所需的尝试次数",
        "too_soon": "距上次尝试不足规定间隔",
        "note_required": "请填写处理记录",
        "too_long": "内容过长",
        "late_reason_required": "任务已超时，请填写超时原因",
        "bad_outcome": "结果不在此类任务的选项中",
        "bad_status": "不支持的关闭状态",
        "reason_required": "请填写原因",
        "unknown_kind": "未知的任务类型",
        "unknown_staff": "没有这个工作人员",
        "unknown_resident": "没有这个居民",
        "same_owner": "任务已属于此人",
    }


@dataclass(frozen=True)
class TaskKind:
    kind: str
    title: str
    due_after: timedelta | None
    due_next_working_day: Any   # datetime.time | None
    needs_call: bool
    retry_after: timedelta
    attempts_to_unreachable: int
    warn_before: timedelta
    outcomes: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    id: int
    kind: str
    version: int
    status: str
    resident_id: int | None
    caller_key: str
    caller_number_hash: bytes | None
    caller_number_masked: str
    owner_staff_id: int | None
    summary: str
    opened_at: datetime
    due_at: datetime
    attempts: int
    last_attempt_at: datetime | None
    warned_at: datetime | None
    overdue_at: datetime | None
    escalated_at: datetime | None
    closed_at: datetime | None
    closed_by: int | None
    close_note: str | None
    close_outcome: str | None
    late_reason: str | None
    evidence_call_id: int | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Task:
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    def late_at(self, at: datetime) -> bool:
        """Closing at `at` breaks the promise: a task closed at due_at itself is on time."""
        return at > self.due_at


@dataclass(frozen=True)
class TaskEvent:
    version: int
    at: datetime
    actor_staff_id: int | None
    event: str
    owner_from: int | None
    owner_to: int | None
    reason: str
    detail: dict[str, Any]


_TASK_COLUMNS = ", ".join(f"t.{f.name}" for f in fields(Task))
# What a change may set (the rest is written once, when the task is opened).
_MUTABLE = frozenset({
    "status", "owner_staff_id", "summary", "opened_at", "due_at", "attempts", "last_attempt_at",
    "warned_at", "overdue_at", "escalated_at", "closed_at", "closed_by", "close_note",
    "close_outcome", "late_reason", "evidence_call_id",
})


def _now() -> datetime:
    return datetime.now(UTC)


def _text(value: str | None, *, limit: int, required: str | None = None) -> str:
    text = (value or "").strip()
    if "\x00" in text:
        raise TaskError("too_long", "NUL in text")
    if len(text) > limit:
        raise TaskError("too_long", f"{len(text)} characters, at most {limit}")
    if required and not text:
        raise TaskError(required)
    return text


async def load_kinds(conn: asyncpg.Pool | asyncpg.Connection) -> dict[str, TaskKind]:
    rows = await conn.fetch("SELECT * FROM task_kinds ORDER BY kind")
    return {r["kind"]: TaskKind(
        kind=r["kind"], title=r["title"], due_after=r["due_after"],
        due_next_working_day=r["due_next_working_day"], needs_call=r["needs_call"],
        retry_after=r["retry_after"], attempts_to_unreachable=r["attempts_to_unreachable"],
        warn_before=r["warn_before"], outcomes=tuple(r["outcomes"])) for r in rows}


async def write_event(conn: asyncpg.Connection, task_id: int, version: int, *, at: datetime,
                      event: str, actor_staff_id: int | None = None,
                      owner_from: int | None = None, owner_to: int | None = None,
                      reason: str = "", detail: Mapping[str, Any] | None = None) -> None:
    """The event that made `version` of the task (in the transaction that wrote that version)."""
    await conn.execute(
        """INSERT INTO task_events (task_id, version, at, actor_staff_id, event, owner_from,
                                    owner_to, reason, detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)""",
        task_id, version, at, actor_staff_id, event, owner_from, owner_to, reason,
        json.dumps(dict(detail or {}), ensure_ascii=False, default=str))


async def change(conn: asyncpg.Connection, task: Task, *, event: str, at: datetime,
                 actor_staff_id: int | None = None, reason: str = "",
                 detail: Mapping[str, Any] | None = None, **changes: Any) -> Task:
    """Write `changes` to a task read FOR UPDATE in this transaction, and the event saying so."""
    unknown = set(changes) - _MUTABLE
    if unknown:
        raise ValueError(f"not changeable: {sorted(unknown)}")
    p = Params(task.id, task.version)
    sets = [f"{column} = {p.add(value)}" for column, value in changes.items()]
    sets.append("version = version + 1")
    row = await conn.fetchrow(
        f"UPDATE tasks t SET {', '.join(sets)} WHERE t.id = $1 AND t.version = $2"  # noqa: S608 - whitelisted columns
        f" RETURNING {_TASK_COLUMNS}", *p.values)
    if row is None:  # the row lock makes this unreachable unless the caller did not take it
        raise TaskError("stale")
    owner_moved = "owner_staff_id" in changes and changes["owner_staff_id"] != task.owner_staff_id
    await write_event(
        conn, task.id, row["version"], at=at, event=event, actor_staff_id=actor_staff_id,
        owner_from=task.owner_staff_id if owner_moved else None,
        owner_to=changes["owner_staff_id"] if owner_moved else None, reason=reason, detail=detail)
    return Task.from_row(row)


class Tasks:
    """Reading and changing tasks; every change checked against its kind's rules."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool
        self._kinds: dict[str, TaskKind] | None = None

    async def kinds(self) -> dict[str, TaskKind]:
        if self._kinds is None:
            self._kinds = await load_kinds(self._pool)
        return self._kinds

    async def kind(self, name: str) -> TaskKind:
        kinds = await self.kinds()
        if name not in kinds:
            raise TaskError("unknown_kind", name)
        return kinds[name]

    # -- reading --------------------------------------------------------------------------------

    async def get(self, task_id: int, scope: Scope | None = None) -> Task:
        p = Params(task_id)
        where = f" AND {scope.tasks(p, 't')}" if scope else ""
        row = await self._pool.fetchrow(
            f"SELECT {_TASK_COLUMNS} FROM tasks t WHERE t.id = $1{where}", *p.values)  # noqa: S608
        if row is None:
            raise TaskError("not_found")
        return Task.from_row(row)

    async def history(self, task_id: int, scope: Scope | None = None) -> list[TaskEvent]:
        await self.get(task_id, scope)  # out of scope: not_found, like a task that is not there
        rows = await self._pool.fetch(
            """SELECT version, at, actor_staff_id, event, owner_from, owner_to, reason, detail
                 FROM task_events WHERE task_id = $1 ORDER BY version""", task_id)
        return [TaskEvent(r["version"], r["at"], r["actor_staff_id"], r["event"], r["owner_from"],
                          r["owner_to"], r["reason"], json.loads(r["detail"])) for r in rows]

    async def evidence_call(self, task: Task, conn: asyncpg.Connection | None = None) -> int | None:
        """The latest call since the task opened in which a staff member talked with its subject
        (the resident, or the unknown caller's number), inbound or outbound: the evidence a
        close needs. None when there is none."""
        return await (conn or self._pool).fetchval(
            """SELECT c.id FROM call_records c
                WHERE c.connected_at IS NOT NULL AND c.answered_by IS NOT NULL
                  AND c.connected_at >= $1
                  AND (c.resident_id = $2 OR c.caller_number_hash = $3)
                ORDER BY c.connected_at DESC, c.id DESC LIMIT 1""",
            task.opened_at, task.resident_id, task.caller_number_hash)

    async def staff_id(self, staff_no: str) -> int:
        """The id of the staff member with this number (工号): unknown_staff when none."""
        found = await self._pool.fetchval("SELECT id FROM staff WHERE staff_no = $1",
                                          (staff_no or "").strip()[:32])
        if found is None:
            raise TaskError("unknown_staff")
        return int(found)

    # -- changing -------------------------------------------------------------------------------

    @asynccontextmanager
    async def _locked(self, task_id: int, *, version: int | None, scope: Scope | None,
                      actor_staff_id: int | None = None
                      ) -> AsyncIterator[tuple[asyncpg.Connection, Task]]:
        """The task read FOR UPDATE in a transaction, checked against the version the writer saw.

        Stale means another person changed the task since (a close, a note, a reassignment):
        what the hotline itself did meanwhile (the 1-hour warning, the breach, the shift's owner
        change, the outcome of her own call-back) does not make her view wrong, and refusing her
        for it would refuse the day doctor's 签收 every morning the warning lands first."""
        async with self._pool.acquire() as conn, conn.transaction():
            p = Params(task_id)
            where = f" AND {scope.tasks(p, 't')}" if scope else ""
            row = await conn.fetchrow(
                f"SELECT {_TASK_COLUMNS} FROM tasks t WHERE t.id = $1{where}"  # noqa: S608
                " FOR UPDATE OF t", *p.values)
            if row is None:
                raise TaskError("not_found")
            task = Task.from_row(row)
            if version is not None and task.version != version:
                others = version > task.version or await conn.fetchval(
                    """SELECT count(*) FROM task_events
                        WHERE task_id = $1 AND version > $2 AND actor_staff_id IS NOT NULL
                          AND actor_staff_id IS DISTINCT FROM $3""",
                    task_id, version, actor_staff_id)
                if others:
                    raise TaskError("stale", f"version {task.version}, not {version}")
            yield conn, task

    async def open(self, *, kind: str, owner_staff_id: int | None, opened_at: datetime,
                   due_at: datetime, resident_id: int | None = None,
                   caller_key: str | None = None, number_hash: bytes | None = None,
                   number_encrypted: bytes | None = None, number_masked: str = "",
                   summary: str = "", actor_staff_id: int | None = None, reason: str = "",
                   detail: Mapping[str, Any] | None = None,
                   conn: asyncpg.Connection | None = None) -> Task:
        """A new task and its 'opened' event. The kind's module computes `due_at` (it knows
        its rule: +72 h, 09:00 of the next working day …)."""
        await self.kind(kind)
        summary = _text(summary, limit=REASON_MAX)
        key = caller_key or (f"resident:{resident_id}" if resident_id is not None
                             else f"number:{(number_hash or b'').hex()}")
        sql = f"""INSERT INTO tasks AS t (kind, caller_key, resident_id, caller_number_hash,
                        caller_number_enc, caller_number_masked, owner_staff_id, opened_at, due_at,
                        summary)
                  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {_TASK_COLUMNS}"""  # noqa: S608

        async def insert(c: asyncpg.Connection) -> Task:
            try:
                row = await c.fetchrow(sql, kind, key, resident_id, number_hash, number_encrypted,
                                       number_masked, owner_staff_id, opened_at, due_at, summary)
            except asyncpg.ForeignKeyViolationError as exc:
                raise TaskError("unknown_resident" if "resident" in str(exc) else "unknown_staff") from exc
            await write_event(c, row["id"], 1, at=opened_at, event="opened",
                              actor_staff_id=actor_staff_id, owner_to=owner_staff_id,
                              reason=reason, detail=detail)
            return Task.from_row(row)

        if conn is not None:
            return await insert(conn)
        async with self._pool.acquire() as c, c.transaction():
            return await insert(c)

    async def note(self, task_id: int, *, version: int, actor_staff_id: int, text: str,
                   scope: Scope | None = None, at: datetime | None = None) -> Task:
        text = _text(text, limit=NOTE_MAX, required="note_required")
        async with self._locked(task_id, version=version, scope=scope,
                                actor_staff_id=actor_staff_id) as (conn, task):
            return await change(conn, task, event="note", at=at or _now(),
                                actor_staff_id=actor_staff_id, detail={"text": text})

    async def record_attempt(self, task_id: int, *, outcome: str, actor_staff_id: int | None,
                             call_record_id: int | None = None, at: datetime | None = None
                             ) -> Task:
        """An attempt to reach the resident that did not reach her. Recorded whatever the
        version (it is what happened, not a decision on a version the staff saw)."""
        if outcome not in ATTEMPT_OUTCOMES:
            raise ValueError(f"not an unanswered attempt: {outcome!r}")
        at = at or _now()
        async with self._locked(task_id, version=None, scope=None) as (conn, task):
            if not task.is_open:
                raise TaskError("closed")
            return await change(conn, task, event="attempt", at=at, actor_staff_id=actor_staff_id,
                                detail={"outcome": outcome, "call_record_id": call_record_id},
                                attempts=task.attempts + 1, last_attempt_at=at)

    async def record_call(self, task_id: int, *, outcome: str, staff_id: int | None,
                          call_record_id: int | None, at: datetime | None = None) -> Task | None:
        """What a call placed for the task (click-to-call) came to, in the task's history:
        the resident not reached is an attempt (counted); answered is the evidence a close will
        find; a call that never reached the resident (her own phone did not answer, cancelled,
        failed) is told but not counted. None when the task is closed meanwhile (nothing to add)."""
        at = at or _now()
        if outcome in ATTEMPT_OUTCOMES:
            try:
                return await self.record_attempt(task_id, outcome=outcome, actor_staff_id=staff_id,
                                                 call_record_id=call_record_id, at=at)
            except TaskError as exc:
                if exc.code == "closed":
                    return None
                raise
        async with self._locked(task_id, version=None, scope=None) as (conn, task):
            if not task.is_open:
                return None
            return await change(conn, task, event="call_answered" if outcome == "answered"
                                else "call_not_connected", at=at, actor_staff_id=staff_id,
                                detail={"outcome": outcome, "call_record_id": call_record_id})

    async def next_attempt_at(self, task: Task) -> datetime | None:
        """When the next attempt is allowed (None: now)."""
        if task.last_attempt_at is None:
            return None
        kind = await self.kind(task.kind)
        return task.last_attempt_at + kind.retry_after

    async def check_attempt_allowed(self, task: Task, at: datetime | None = None) -> None:
        if not task.is_open:
            raise TaskError("closed")
        allowed = await self.next_attempt_at(task)
        if allowed is not None and (at or _now()) < allowed:
            raise TaskError("too_soon", allowed.isoformat())

    async def close(self, task_id: int, *, version: int, actor_staff_id: int, status: str,
                    note: str, outcome: str | None = None, late_reason: str | None = None,
                    scope: Scope | None = None, at: datetime | None = None) -> Task:
        """Close a task as done (with the evidence its kind needs) or unreachable (after the
        kind's number of attempts). Late closes state why. Refusals change nothing."""
        if status not in ("done", "unreachable"):
            raise TaskError("bad_status", status)
        note = _text(note, limit=NOTE_MAX, required="note_required")
        late_reason = _text(late_reason, limit=REASON_MAX) or None
        at = at or _now()
        async with self._locked(task_id, version=version, scope=scope,
                                actor_staff_id=actor_staff_id) as (conn, task):
            if not task.is_open:
                raise TaskError("closed")
            kind = await self.kind(task.kind)
            if outcome and outcome not in kind.outcomes:
                raise TaskError("bad_outcome", outcome)
            if status == "done" and kind.outcomes and not outcome:
                raise TaskError("bad_outcome", "an outcome is required")
            evidence = None
            if status == "done" and kind.needs_call:
                evidence = await self.evidence_call(task, conn)
                if evidence is None:
                    raise TaskError("no_evidence")
            if status == "unreachable" and task.attempts < kind.attempts_to_unreachable:
                raise TaskError("attempts_left",
                                f"{task.attempts} of {kind.attempts_to_unreachable}")
            if task.late_at(at) and not late_reason:
                raise TaskError("late_reason_required")
            return await change(
                conn, task, event="closed", at=at, actor_staff_id=actor_staff_id,
                detail={"status": status, "outcome": outcome, "evidence_call_id": evidence,
                        "late": task.late_at(at)},
                status=status, closed_at=at, closed_by=actor_staff_id, close_note=note,
                close_outcome=outcome, late_reason=late_reason, evidence_call_id=evidence)

    async def reassign(self, task_id: int, *, version: int, actor_staff_id: int,
                       to_staff_id: int, reason: str, scope: Scope | None = None,
                       at: datetime | None = None) -> Task:
        """A supervisor's reassignment by hand: the reason is required and kept in the event."""
        reason = _text(reason, limit=REASON_MAX, required="reason_required")
        async with self._locked(task_id, version=version, scope=scope,
                                actor_staff_id=actor_staff_id) as (conn, task):
            if not task.is_open:
                raise TaskError("closed")
            if task.owner_staff_id == to_staff_id:
                raise TaskError("same_owner")
            # the new owner must be someone the reassigner may see (a director reassigns within
            # her center), and still in service; anyone else is as unknown as a wrong number
            p = Params(to_staff_id, (at or _now()).date())
            where = f" AND {scope.staff(p, 's')}" if scope else ""
            if not await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM staff s WHERE s.id = $1"  # noqa: S608 - scope predicate
                    f" AND (s.left_on IS NULL OR s.left_on > $2){where})", *p.values):
                raise TaskError("unknown_staff")
            return await change(conn, task, event="reassigned", at=at or _now(),
                                actor_staff_id=actor_staff_id, reason=reason,
                                owner_staff_id=to_staff_id)
