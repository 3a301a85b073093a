"""A task as the console and the CLI show it: the task, its kind's title, who owns it, its clock,
the calls that are its story and its evidence, its attempts, and its history with names.

Read-only and scope-filtered (routing.scope.Scope.tasks): a task out of scope is `not_found`, as
one that does not exist. Numbers are only ever the masked ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from handover.desk import seconds_left, urgency
from handover.tasks import STATUSES, Task, TaskError, TaskEvent, TaskKind, Tasks
from routing.scope import Params, Scope

STATUS_NAMES = {"open": "待处理", "done": "已完成", "unreachable": "无法联系", "cancelled": "已取消"}
OUTCOME_NAMES = {"seen": "已就诊", "admitted": "已住院", "not_gone": "未去就诊", "other": "其他",
                 "approved": "通过", "rejected": "驳回"}
EVENT_NAMES = {"opened": "创建", "note": "记录", "attempt": "未接通的尝试", "closed": "关闭",
               "reassigned": "人工改派", "call_attached": "再次来电", "owner_moved": "交接",
               "warned": "即将超时", "overdue": "已超时", "escalated": "升级"}
# the reasons the hotline itself writes into events, as the console says them
REASON_NAMES = {"missed call": "未接来电", "referral": "转诊", "before the task model": "任务模型启用前"}
ATTEMPT_NAMES = {"no_answer": "无人接听", "busy": "占线", "unreachable": "无法接通", "rejected": "拒接"}
CALLS_SHOWN = 50
MAX_LIST = 500


@dataclass(frozen=True)
class TaskCall:
    call_id: int
    offered_at: datetime
    disposition: str
    connected_at: datetime | None
    answered_by_name: str | None
    attached: bool          # one of the calls that opened or joined the task
    evidence: bool          # the call a close would (or did) take as evidence


@dataclass(frozen=True)
class HistoryLine:
    version: int
    at: datetime
    actor_name: str | None    # None: the hotline itself
    event: str
    event_name: str
    owner_from_name: str | None
    owner_to_name: str | None
    reason: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class TaskView:
    task: Task
    kind: TaskKind
    resident_name: str | None
    owner_name: str | None
    owner_no: str | None
    seconds_left: float
    urgency: str
    next_attempt_at: datetime | None
    calls: tuple[TaskCall, ...]
    history: tuple[HistoryLine, ...]
    attempts: tuple[HistoryLine, ...] = field(default=())

    @property
    def late(self) -> bool:
        return self.seconds_left < 0

    def as_json(self) -> dict[str, Any]:
        t = self.task
        return {
            **summary_json(t, self.kind.title, self.resident_name, self.owner_name, self.owner_no,
                           self.seconds_left),
            "summary": t.summary, "attempts": t.attempts, "last_attempt_at": t.last_attempt_at,
            "next_attempt_at": self.next_attempt_at,
            "attempts_to_unreachable": self.kind.attempts_to_unreachable,
            "outcomes": list(self.kind.outcomes), "needs_call": self.kind.needs_call,
            "closed_at": t.closed_at, "close_note": t.close_note, "close_outcome": t.close_outcome,
            "late_reason": t.late_reason, "evidence_call_id": t.evidence_call_id,
            "overdue_at": t.overdue_at,
            "calls": [{"call_id": c.call_id, "offered_at": c.offered_at,
                       "disposition": c.disposition, "connected_at": c.connected_at,
                       "answered_by_name": c.answered_by_name, "attached": c.attached,
                       "evidence": c.evidence} for c in self.calls],
            "history": [history_json(h) for h in self.history],
        }


def summary_json(t: Task, title: str, resident_name: str | None, owner_name: str | None,
                 owner_no: str | None, left: float) -> dict[str, Any]:
    return {"id": t.id, "kind": t.kind, "kind_title": title, "version": t.version,
            "status": t.status, "caller_masked": t.caller_number_masked,
            "resident_id": t.resident_id, "resident_name": resident_name,
            "owner_staff_id": t.owner_staff_id, "owner_name": owner_name, "owner_no": owner_no,
            "opened_at": t.opened_at, "due_at": t.due_at, "seconds_left": left,
            "urgency": urgency(left) if t.is_open else "closed"}


def history_json(h: HistoryLine) -> dict[str, Any]:
    return {"version": h.version, "at": h.at, "actor_name": h.actor_name, "event": h.event,
            "owner_from_name": h.owner_from_name, "owner_to_name": h.owner_to_name,
            "reason": h.reason, "detail": h.detail}


async def _names(conn: asyncpg.Pool | asyncpg.Connection, ids: set[int]) -> dict[int, tuple[str, str]]:
    rows = await conn.fetch("SELECT id, name, staff_no FROM staff WHERE id = ANY($1::int[])",
                            sorted(ids))
    return {r["id"]: (r["name"], r["staff_no"]) for r in rows}


def history_lines(events: list[TaskEvent], names: dict[int, tuple[str, str]]) -> list[HistoryLine]:
    def name(i: int | None) -> str | None:
        return names.get(i, (f"#{i}", ""))[0] if i is not None else None
    return [HistoryLine(e.version, e.at, name(e.actor_staff_id), e.event,
                        EVENT_NAMES.get(e.event, e.event), name(e.owner_from), name(e.owner_to),
                        e.reason, e.detail) for e in events]


async def task_view(pool: asyncpg.Pool, tasks: Tasks, scope: Scope, task_id: int, *,
                    now: datetime) -> TaskView:
    """One task for its page; TaskError not_found when it is not in `scope`."""
    task = await tasks.get(task_id, scope)
    kind = await tasks.kind(task.kind)
    events = await tasks.history(task_id, scope)
    evidence = task.evidence_call_id if not task.is_open else await tasks.evidence_call(task)
    calls = await pool.fetch(
        """SELECT c.id, c.offered_at, c.disposition, c.connected_at, s.name AS answered_by_name,
                  EXISTS (SELECT 1 FROM callback_calls cc WHERE cc.task_id = $1
                          AND cc.call_record_id = c.id) AS attached
             FROM call_records c LEFT JOIN staff s ON s.id = c.answered_by
            -- one indexed branch each (an OR of them reads every call since the task opened)
            WHERE c.id IN (SELECT call_record_id FROM callback_calls WHERE task_id = $1
                           UNION SELECT id FROM call_records WHERE resident_id = $3 AND offered_at >= $2
                           UNION SELECT id FROM call_records WHERE caller_number_hash = $4
                                                              AND offered_at >= $2)
            ORDER BY c.offered_at DESC, c.id DESC LIMIT $5""",
        task.id, task.opened_at, task.resident_id, task.caller_number_hash, CALLS_SHOWN)
    people = {i for e in events for i in (e.actor_staff_id, e.owner_from, e.owner_to) if i}
    if task.owner_staff_id:
        people.add(task.owner_staff_id)
    names = await _names(pool, people)
    resident = (await pool.fetchval("SELECT name FROM residents WHERE id = $1", task.resident_id)
                if task.resident_id else None)
    history = history_lines(events, names)
    left = seconds_left(task.due_at, now)
    owner = names.get(task.owner_staff_id) if task.owner_staff_id else None
    return TaskView(
        task=task, kind=kind, resident_name=resident,
        owner_name=owner[0] if owner else None, owner_no=owner[1] if owner else None,
        seconds_left=left, urgency=urgency(left), next_attempt_at=await tasks.next_attempt_at(task),
        calls=tuple(TaskCall(c["id"], c["offered_at"], c["disposition"], c["connected_at"],
                             c["answered_by_name"], c["attached"], c["id"] == evidence)
                    for c in calls),
        history=tuple(history), attempts=tuple(h for h in history if h.event == "attempt"))


@dataclass(frozen=True)
class TaskFilter:
    kind: str | None = None
    status: str | None = "open"
    owner_staff_id: int | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise TaskError("bad_status", self.status)


async def list_tasks(pool: asyncpg.Pool, tasks: Tasks, scope: Scope, filt: TaskFilter, *,
                     now: datetime, limit: int = 100) -> list[dict[str, Any]]:
    """Tasks in scope matching the filter, soonest due first (as the API and the CLI list them)."""
    kinds = await tasks.kinds()
    if filt.kind is not None and filt.kind not in kinds:
        raise TaskError("unknown_kind", filt.kind)
    p = Params()
    where = [scope.tasks(p, "t")]
    if filt.kind is not None:
        where.append(f"t.kind = {p.add(filt.kind)}")
    if filt.status is not None:
        where.append(f"t.status = {p.add(filt.status)}")
    if filt.owner_staff_id is not None:
        where.append(f"t.owner_staff_id = {p.add(filt.owner_staff_id)}")
    limit = max(1, min(int(limit), MAX_LIST))
    rows = await pool.fetch(
        f"""SELECT t.*, r.name AS resident_name, s.name AS owner_name, s.staff_no AS owner_no
              FROM tasks t LEFT JOIN residents r ON r.id = t.resident_id
              LEFT JOIN staff s ON s.id = t.owner_staff_id
             WHERE {' AND '.join(where)}
             ORDER BY t.due_at, t.id LIMIT {p.add(limit)}""", *p.values)  # noqa: S608 - scope and $n
    result = []
    for r in rows:
        task = Task.from_row(r)
        result.append(summary_json(task, kinds[task.kind].title, r["resident_name"], r["owner_name"],
                                   r["owner_no"], seconds_left(task.due_at, now)))
    return result
