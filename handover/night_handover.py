"""The night handover (夜间交班): the duty doctor's notes, the sheet per team, the day's 签收.

- **Notes.** Every call the duty doctor answered during one of her shifts asks for a note:
  a summary (≤ 2000 characters), whether the day team must follow up, and how urgent
  (普通 / 紧急). One note per call, by the doctor who answered it; a call that is not hers is
  `not_found`, exactly like one that does not exist. Notes are never changed afterwards.
- **The sheet.** When a night shift ends, `build_sheet(shift, now)` (called by the deadline
  watcher, and by `hotline handover build`) puts what the night leaves for the day on one sheet
  per team (district, night, team), each item for the resident's family doctor:
  the notes asking for a follow-up; one item per callback task a missed call of the night opened
  or joined (its missed calls and voicemails counted on it: three items for one unanswered
  caller would be three tasks for one thing); and the missed calls that owe no callback. An item
  the day must act on becomes a task of kind 'handover' owned by the family doctor, due at the
  kind's time (09:00) of the next working day of the resident's center. A callback the night
  already completed is on the sheet for information, without a task. Items are keyed by what
  they are about (`source_key`), so building again — another shift of the same night ending,
  the watcher and an operator both — adds only what is new.
- **签收.** The day doctor acknowledges an item of her team's sheet (or one she owns): its task is
  closed as done with the note '已签收' — the close event says who and when, the sheet shows it.
  The writer says which task version she saw; an item acknowledged meanwhile is `stale`.

Escalating an item not acknowledged by its due time is the watcher's (handover/tasks.py due_at).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from handover.tasks import TaskError, Tasks
from routing.calendar import DEFAULT_TZ, WorkingCalendar
from routing.calendar_store import load_calendar
from routing.scope import TEAM_ROLES, Params, Scope
from store.audit import record_read

SUMMARY_MAX = 2000
URGENCIES = {"normal": "普通", "urgent": "紧急"}
ACK_NOTE = "已签收"
# The calls a duty doctor is asked to note: those of her shifts that ended at most this long ago
# (a note can still be written after the sheet is built: the next build adds it).
PENDING_WINDOW = timedelta(hours=36)
# How far to look for the next working day (the longest holiday block is 8–9 days).
_MAX_DAYS_AHEAD = 31


class HandoverError(TaskError):
    """A refused note, build or acknowledgement; codes beside the task model's own."""

    MESSAGES = {
        **TaskError.MESSAGES,
        "not_found": "未找到",
        "note_exists": "这通电话已有交班记录",
        "summary_required": "请填写交班摘要",
        "too_long": f"交班摘要不能超过 {SUMMARY_MAX} 字",
        "bad_urgency": "紧急程度只能是 普通 或 紧急",
        "bad_follow_up": "请说明是否需要白天跟进",
        "no_shift": "没有这个班次",
        "no_task": "此事项仅供知悉，无需签收",
        "no_working_day": "找不到下一个工作日",
        "bad_text": "内容含有无法保存的字符",
        "version_required": "请提供页面上看到的任务版本",
    }


@dataclass(frozen=True)
class PendingCall:
    """An answered night call of the duty doctor without a note yet."""

    call_id: int
    offered_at: datetime
    connected_at: datetime
    caller_masked: str
    resident_id: int | None
    resident_masked: str | None


@dataclass(frozen=True)
class Note:
    id: int
    call_id: int
    resident_id: int | None
    author_staff_id: int
    written_at: datetime
    summary: str
    follow_up: bool
    urgency: str


@dataclass(frozen=True)
class SheetItem:
    id: int
    sheet_id: int
    source: str
    resident_id: int | None
    resident_masked: str | None
    caller_masked: str
    call_id: int | None
    summary: str
    urgency: str
    voicemails: int
    task_id: int | None
    task_version: int | None
    task_status: str | None
    owner: str | None
    due_at: datetime | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    can_acknowledge: bool = False


@dataclass(frozen=True)
class Sheet:
    id: int
    district_id: int
    night: date
    team_id: int | None
    team: str | None
    center: str | None
    built_at: datetime
    items: tuple[SheetItem, ...] = field(default_factory=tuple)

    @property
    def open_items(self) -> int:
        return sum(1 for i in self.items if i.task_status == "open")


@dataclass(frozen=True)
class Built:
    """What one build added: the sheets it touched and the items and tasks that are new."""

    sheet_ids: tuple[int, ...]
    items_added: int
    tasks_opened: int


def masked_name(name: str | None) -> str | None:
    """张桂兰 -> 张*兰, 李明 -> 李*: enough to tell residents apart on paper, not to name them."""
    if not name:
        return None
    if len(name) <= 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def _storable(text: str) -> None:
    """PostgreSQL text holds neither NUL nor a lone surrogate (JSON may carry both)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise HandoverError("bad_text", "not UTF-8") from None
    if "\x00" in text:
        raise HandoverError("bad_text", "NUL in text")


def _summary(text: Any) -> str:
    if not isinstance(text, str):
        raise HandoverError("summary_required")
    text = text.strip()
    _storable(text)
    if len(text) > SUMMARY_MAX:
        raise HandoverError("too_long", f"{len(text)} characters, at most {SUMMARY_MAX}")
    if not text:
        raise HandoverError("summary_required")
    return text


def next_working_day_at(calendar: WorkingCalendar, night: date, at: time, *, after: datetime,
                        center_id: int | None, district_id: int | None) -> datetime:
    """`at` (09:00) on the first working day of the center after the night began, and after
    `after` (a sheet built late is not due in the past)."""
    day = night + timedelta(days=1)
    for _ in range(_MAX_DAYS_AHEAD):
        due = datetime.combine(day, at, calendar.tz)
        if due > after and calendar.is_working_day(day, center_id, district_id=district_id):
            return due
        day += timedelta(days=1)
    raise HandoverError("no_working_day", f"none within {_MAX_DAYS_AHEAD} days after {night}")


# -- SQL ---------------------------------------------------------------------------------------

# The calls she answered during one of her own shifts (the duty doctor's night calls).
_HER_NIGHT_CALL = """c.answered_by = $1 AND c.connected_at IS NOT NULL
   AND EXISTS (SELECT 1 FROM duty_shifts sh WHERE sh.doctor_id = $1
               AND c.offered_at >= sh.starts_at AND c.offered_at < sh.ends_at)"""

_PENDING = f"""
SELECT c.id, c.offered_at, c.connected_at, c.caller_number_masked, c.resident_id, r.name
  FROM call_records c LEFT JOIN residents r ON r.id = c.resident_id
 WHERE {_HER_NIGHT_CALL} AND c.offered_at >= $2
   AND NOT EXISTS (SELECT 1 FROM night_handover_notes n WHERE n.call_record_id = c.id)
 ORDER BY c.offered_at, c.id LIMIT 200
"""  # noqa: S608 - constant pieces

# The shift's area and window, over call alias c and shift alias sh.
_IN_SHIFT = """c.district_id = sh.district_id
   AND (sh.center_id IS NULL OR c.center_id = sh.center_id)
   AND c.offered_at >= sh.starts_at AND c.offered_at < sh.ends_at"""

_NOTES_OF_SHIFT = f"""
SELECT n.id, n.call_record_id AS call_id, n.resident_id, n.summary, n.urgency,
       c.caller_number_hash, c.caller_number_enc, c.caller_number_masked
  FROM duty_shifts sh
  JOIN call_records c ON {_IN_SHIFT}
  JOIN night_handover_notes n ON n.call_record_id = c.id
 WHERE sh.id = $1 AND n.follow_up
 ORDER BY c.offered_at, n.id
"""  # noqa: S608 - constant pieces

_CALLBACKS_OF_SHIFT = f"""
SELECT t.id AS callback_id, t.status, t.resident_id, t.caller_number_hash, t.caller_number_enc,
       t.caller_number_masked, min(c.id) AS call_id, count(*) AS missed,
       (SELECT count(*) FROM voicemails v JOIN call_records vc ON vc.id = v.call_record_id
         WHERE v.task_id = t.id AND vc.offered_at >= sh.starts_at AND vc.offered_at < sh.ends_at
       ) AS voicemails
  FROM duty_shifts sh
  JOIN call_records c ON {_IN_SHIFT}
  JOIN callback_calls cc ON cc.call_record_id = c.id
  JOIN tasks t ON t.id = cc.task_id
 WHERE sh.id = $1
 GROUP BY t.id, sh.starts_at, sh.ends_at
 ORDER BY min(c.offered_at), t.id
"""  # noqa: S608 - constant pieces

_MISSED_OF_SHIFT = f"""
SELECT c.id AS call_id, c.disposition, c.resident_id, c.caller_number_hash, c.caller_number_enc,
       c.caller_number_masked
  FROM duty_shifts sh
  JOIN call_records c ON {_IN_SHIFT}
 WHERE sh.id = $1 AND c.disposition IN ('missed', 'abandoned')
   AND NOT EXISTS (SELECT 1 FROM callback_calls cc WHERE cc.call_record_id = c.id)
 ORDER BY c.offered_at, c.id
"""  # noqa: S608 - constant pieces

# The resident's family doctor and team on the day the sheet is built (a doctor who has left
# owns nothing: the duty desk's, until the ownership rule gives it to someone).
_FAMILY_DOCTOR = """
SELECT r.center_id, k.team_id, CASE WHEN d.left_on IS NULL OR d.left_on > $2 THEN k.doctor_id END AS doctor_id
  FROM residents r
  LEFT JOIN contracts k ON k.resident_id = r.id AND $2 BETWEEN k.starts_on AND k.ends_on
  LEFT JOIN staff d ON d.id = k.doctor_id
 WHERE r.id = $1
"""

_ITEM_COLUMNS = """
SELECT i.id, i.sheet_id, i.source, i.resident_id, r.name AS resident_name, i.caller_masked,
       i.call_record_id, i.summary, i.urgency, i.voicemails, i.task_id, t.version, t.status,
       t.due_at, t.owner_staff_id, o.name AS owner, t.closed_at, a.name AS acknowledged_by,
       hs.team_id
  FROM handover_items i
  JOIN handover_sheets hs ON hs.id = i.sheet_id
  LEFT JOIN residents r ON r.id = i.resident_id
  LEFT JOIN tasks t ON t.id = i.task_id
  LEFT JOIN staff o ON o.id = t.owner_staff_id
  LEFT JOIN staff a ON a.id = t.closed_by AND t.status = 'done'
"""

_SHEET_COLUMNS = """
SELECT hs.id, hs.district_id, hs.night, hs.team_id, tm.name AS team, ce.name AS center, hs.built_at
  FROM handover_sheets hs
  LEFT JOIN teams tm ON tm.id = hs.team_id
  LEFT JOIN centers ce ON ce.id = hs.center_id
"""


def _when(value: datetime | None) -> datetime:
    return value or datetime.now(UTC)


class NightHandover:
    """Notes, sheets and acknowledgements over one pool (the console's, the CLI's, the watcher's)."""

    def __init__(self, pool: asyncpg.Pool, tasks: Tasks | None = None, *, tz: ZoneInfo = DEFAULT_TZ):
        self._pool = pool
        self._tasks = tasks or Tasks(pool)
        self._tz = tz  # the zone the calendar judges days in, and the night's date

    # -- notes -------------------------------------------------------------------------------------

    async def pending(self, staff_id: int, *, now: datetime | None = None) -> list[PendingCall]:
        """Her answered night calls of the last shifts that have no note yet, oldest first."""
        rows = await self._pool.fetch(_PENDING, staff_id, _when(now) - PENDING_WINDOW)
        return [PendingCall(r["id"], r["offered_at"], r["connected_at"], r["caller_number_masked"],
                            r["resident_id"], masked_name(r["name"])) for r in rows]

    async def write_note(self, call_id: int, *, author_staff_id: int, summary: Any,
                         follow_up: Any, urgency: Any, now: datetime | None = None) -> Note:
        """The note of a call she answered during her shift; refused whole (nothing written)
        when anything is wrong, `not_found` when the call is not hers."""
        summary = _summary(summary)
        if not isinstance(follow_up, bool):
            raise HandoverError("bad_follow_up")
        if urgency not in URGENCIES:
            raise HandoverError("bad_urgency")
        async with self._pool.acquire() as conn, conn.transaction():
            call = await conn.fetchrow(
                f"SELECT c.id, c.resident_id FROM call_records c WHERE c.id = $2 AND {_HER_NIGHT_CALL}",  # noqa: S608 - constant
                author_staff_id, call_id)
            if call is None:
                raise HandoverError("not_found")
            row = await conn.fetchrow(
                """INSERT INTO night_handover_notes (call_record_id, resident_id, author_staff_id,
                        written_at, summary, follow_up, urgency)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (call_record_id) DO NOTHING RETURNING *""",
                call_id, call["resident_id"], author_staff_id, _when(now), summary, follow_up, urgency)
            if row is None:
                raise HandoverError("note_exists")
        return _note(row)

    async def note_of_call(self, call_id: int) -> Note | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM night_handover_notes WHERE call_record_id = $1", call_id)
        return _note(row) if row else None

    # -- building the sheet ------------------------------------------------------------------------

    async def build_sheet(self, shift: int | Mapping[str, Any], now: datetime | None = None) -> Built:
        """The sheets of the night of `shift` (an id, or its duty_shifts row), per team, with
        what is new since the last build. One transaction: a build is whole or not at all."""
        now = _when(now)
        shift_id = shift if isinstance(shift, int) else int(shift["id"])
        kind = await self._tasks.kind("handover")
        async with self._pool.acquire() as conn, conn.transaction():
            sh = await conn.fetchrow("SELECT * FROM duty_shifts WHERE id = $1", shift_id)
            if sh is None:
                raise HandoverError("no_shift", str(shift_id))
            calendar = await load_calendar(conn, tz=self._tz)
            night = sh["starts_at"].astimezone(calendar.tz).date()
            today = now.astimezone(calendar.tz).date()
            candidates: list[dict[str, Any]] = []
            for n in await conn.fetch(_NOTES_OF_SHIFT, shift_id):
                candidates.append({
                    "source": "note", "key": f"note:{n['id']}", "note_id": n["id"],
                    "call_id": n["call_id"], "resident_id": n["resident_id"],
                    "hash": n["caller_number_hash"], "enc": n["caller_number_enc"],
                    "masked": n["caller_number_masked"], "summary": n["summary"],
                    "urgency": n["urgency"], "voicemails": 0, "needs_day": True})
            for cb in await conn.fetch(_CALLBACKS_OF_SHIFT, shift_id):
                open_ = cb["status"] == "open"
                state = "待回拨" if open_ else "夜间已处理"
                candidates.append({
                    "source": "callback", "key": f"callback:{cb['callback_id']}:{night.isoformat()}",
                    "callback_id": cb["callback_id"], "call_id": cb["call_id"],
                    "resident_id": cb["resident_id"], "hash": cb["caller_number_hash"],
                    "enc": cb["caller_number_enc"], "masked": cb["caller_number_masked"],
                    "summary": f"夜间未接来电 {cb['missed']} 次，留言 {cb['voicemails']} 条；"
                               f"回拨任务 #{cb['callback_id']}（{state}）",
                    "urgency": "normal", "voicemails": cb["voicemails"], "needs_day": open_})
            for m in await conn.fetch(_MISSED_OF_SHIFT, shift_id):
                what = "未接来电" if m["disposition"] == "missed" else "来电者挂断（放弃）"
                candidates.append({
                    "source": "missed_call", "key": f"missed:{m['call_id']}", "call_id": m["call_id"],
                    "resident_id": m["resident_id"], "hash": m["caller_number_hash"],
                    "enc": m["caller_number_enc"], "masked": m["caller_number_masked"],
                    "summary": f"夜间{what}，未生成回拨任务", "urgency": "normal", "voicemails": 0,
                    "needs_day": True})
            sheets: set[int] = set()
            added = opened = 0
            for item in candidates:
                center_id, team_id, doctor_id = sh["center_id"], None, None
                if item["resident_id"] is not None:
                    fd = await conn.fetchrow(_FAMILY_DOCTOR, item["resident_id"], today)
                    if fd is not None:
                        center_id, team_id, doctor_id = fd["center_id"], fd["team_id"], fd["doctor_id"]
                sheet_id = await self._sheet(conn, sh["district_id"], night, team_id, now)
                sheets.add(sheet_id)
                item_id = await conn.fetchval(
                    """INSERT INTO handover_items (sheet_id, source, source_key, shift_id, resident_id,
                            caller_masked, call_record_id, note_id, callback_task_id, voicemails,
                            summary, urgency, created_at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                       ON CONFLICT (source_key) DO NOTHING RETURNING id""",
                    sheet_id, item["source"], item["key"], shift_id, item["resident_id"],
                    item["masked"] or "", item["call_id"], item.get("note_id"),
                    item.get("callback_id"), item["voicemails"], item["summary"], item["urgency"],
                    now)
                if item_id is None:  # built before
                    continue
                added += 1
                if not item["needs_day"] or (item["resident_id"] is None and item["hash"] is None):
                    continue
                due = next_working_day_at(calendar, night, kind.due_next_working_day, after=now,
                                          center_id=center_id, district_id=sh["district_id"])
                task = await self._tasks.open(
                    kind="handover", owner_staff_id=doctor_id, opened_at=now, due_at=due,
                    resident_id=item["resident_id"], caller_key=f"handover:{item['key']}",
                    number_hash=item["hash"], number_encrypted=item["enc"],
                    number_masked=item["masked"] or "", summary=item["summary"],
                    reason="night handover",
                    detail={"handover_item_id": item_id, "shift_id": shift_id,
                            "night": night.isoformat(), "urgency": item["urgency"]},
                    conn=conn)
                await conn.execute("UPDATE handover_items SET task_id = $2 WHERE id = $1",
                                   item_id, task.id)
                opened += 1
        return Built(tuple(sorted(sheets)), added, opened)

    @staticmethod
    async def _sheet(conn: asyncpg.Connection, district_id: int, night: date, team_id: int | None,
                     now: datetime) -> int:
        await conn.execute(
            """INSERT INTO handover_sheets (district_id, night, team_id, center_id, built_at)
               VALUES ($1, $2, $3, (SELECT center_id FROM teams WHERE id = $3), $4)
               ON CONFLICT (district_id, night, coalesce(team_id, 0)) DO NOTHING""",
            district_id, night, team_id, now)
        return await conn.fetchval(
            """SELECT id FROM handover_sheets WHERE district_id = $1 AND night = $2
                  AND coalesce(team_id, 0) = coalesce($3::int, 0)""", district_id, night, team_id)

    async def shifts_of_night(self, night: date) -> list[int]:
        """The shifts that began on the local date `night` (what `--night DATE` builds)."""
        start = datetime.combine(night, time(0), self._tz)
        rows = await self._pool.fetch(
            "SELECT id FROM duty_shifts WHERE starts_at >= $1 AND starts_at < $2 ORDER BY starts_at, id",
            start, start + timedelta(days=1))
        return [r["id"] for r in rows]

    # -- reading sheets ----------------------------------------------------------------------------

    async def sheets(self, scope: Scope, *, limit: int = 60) -> list[Sheet]:
        """The sheets in her scope, newest night first, with their items (to count them)."""
        p = Params()
        rows = await self._pool.fetch(
            f"{_SHEET_COLUMNS} WHERE {scope.handover_sheets(p, 'hs')}"  # noqa: S608 - scope predicate
            f" ORDER BY hs.night DESC, hs.team_id NULLS LAST, hs.id LIMIT {p.add(limit)}", *p.values)
        items = await self._items(scope, [r["id"] for r in rows])
        return [_sheet(r, items.get(r["id"], [])) for r in rows]

    async def sheet(self, scope: Scope, sheet_id: int) -> Sheet:
        """One sheet in her scope (audited: it names residents and what they called about)."""
        p = Params(sheet_id)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"{_SHEET_COLUMNS} WHERE hs.id = $1 AND {scope.handover_sheets(p, 'hs')}",  # noqa: S608
                *p.values)
            if row is None:
                raise HandoverError("not_found")
            await record_read(conn, actor=scope.viewer.actor, action="handover.sheet",
                              subject=f"handover_sheet:{sheet_id}")
            items = await self._items(scope, [sheet_id], conn)
        return _sheet(row, items.get(sheet_id, []))

    async def _items(self, scope: Scope, sheet_ids: list[int],
                     conn: asyncpg.Connection | None = None) -> dict[int, list[SheetItem]]:
        if not sheet_ids:
            return {}
        rows = await (conn or self._pool).fetch(
            f"{_ITEM_COLUMNS} WHERE i.sheet_id = ANY($1::bigint[])"  # noqa: S608 - constant
            " ORDER BY i.sheet_id, i.urgency = 'urgent' DESC, i.id", sheet_ids)
        found: dict[int, list[SheetItem]] = {}
        for r in rows:
            found.setdefault(r["sheet_id"], []).append(_item(r, scope))
        return found

    # -- 签收 ------------------------------------------------------------------------------------

    async def acknowledge(self, item_id: int, *, scope: Scope, version: Any,
                          late_reason: str | None = None, now: datetime | None = None) -> SheetItem:
        """The day doctor's 签收 of an item: its task closed as done with '已签收'. Only an item of
        her team's sheet (or one she owns) may be; any other is `not_found`."""
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise HandoverError("version_required")
        if late_reason is not None:
            _storable(late_reason)
        p = Params(item_id)
        row = await self._pool.fetchrow(
            f"{_ITEM_COLUMNS} WHERE i.id = $1 AND {scope.handover_sheets(p, 'hs')}"  # noqa: S608
            f" AND {_may_acknowledge(scope, p)}", *p.values)
        if row is None:
            raise HandoverError("not_found")
        if row["task_id"] is None:
            raise HandoverError("no_task")
        await self._tasks.close(row["task_id"], version=version,
                                actor_staff_id=scope.viewer.staff_id, status="done",
                                note=ACK_NOTE, late_reason=late_reason, scope=scope, at=_when(now))
        done = await self._pool.fetchrow(f"{_ITEM_COLUMNS} WHERE i.id = $1", item_id)  # noqa: S608
        return _item(done, scope)


def _may_acknowledge(scope: Scope, p: Params) -> str:
    """Who may sign for an item: the owner of its task, or a member of the sheet's team."""
    v = scope.viewer
    mine = f"t.owner_staff_id = {p.add(v.staff_id)}"
    if v.role in TEAM_ROLES and v.team_id:
        return f"({mine} OR hs.team_id = {p.add(v.team_id)})"
    return mine


def _note(row: Mapping[str, Any]) -> Note:
    return Note(row["id"], row["call_record_id"], row["resident_id"], row["author_staff_id"],
                row["written_at"], row["summary"], row["follow_up"], row["urgency"])


def _item(r: Mapping[str, Any], scope: Scope) -> SheetItem:
    v = scope.viewer
    may = r["status"] == "open" and (
        r["owner_staff_id"] == v.staff_id
        or (v.role in TEAM_ROLES and v.team_id is not None and r["team_id"] == v.team_id))
    return SheetItem(
        id=r["id"], sheet_id=r["sheet_id"], source=r["source"], resident_id=r["resident_id"],
        resident_masked=masked_name(r["resident_name"]), caller_masked=r["caller_masked"],
        call_id=r["call_record_id"], summary=r["summary"], urgency=r["urgency"],
        voicemails=r["voicemails"], task_id=r["task_id"], task_version=r["version"],
        task_status=r["status"], owner=r["owner"], due_at=r["due_at"],
        acknowledged_by=r["acknowledged_by"],
        acknowledged_at=r["closed_at"] if r["acknowledged_by"] else None,
        can_acknowledge=bool(may) and not scope.read_only)


def _sheet(r: Mapping[str, Any], items: list[SheetItem]) -> Sheet:
    return Sheet(r["id"], r["district_id"], r["night"], r["team_id"], r["team"], r["center"],
                 r["built_at"], tuple(items))
