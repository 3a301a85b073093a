"""The task model (handover/tasks.py) against a real PostgreSQL: events for every change, the
database refusing changes without one, closing only with evidence, attempts, concurrency, scope."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from handover.callbacks import Callbacks
from handover.tasks import NOTE_MAX, Task, TaskError, Tasks, change
from hotline.runtime import all_migrations
from recordings.call_records import CallerNumber, CallRecords
from routing.scope import Scope, Viewer
from store import db
from store.migrate import migrate
from store.pii import PiiVault
from tests.console_rows import insert_call
from tests.district import District, build_district

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=SH)   # a missed call at 02:00 (due 10:00)


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    return await build_district(pool, vault, week_of=date(2026, 11, 22))


async def missed(pool: asyncpg.Pool, vault: PiiVault, d: District, call_id: str, at: datetime,
                 owner: int | None = None) -> int:
    records, caller = CallRecords(pool, vault), CallerNumber.of(vault, "13800000001")
    record = await records.open(call_id, caller, at)
    await records.identified(record, d.resident_id)
    await records.ended(record, at + timedelta(seconds=40), "missed")
    assert caller.hash is not None and caller.encrypted is not None
    owed = await Callbacks(pool).owe_for_missed_call(
        call_record_id=record, resident_id=d.resident_id, number_hash=caller.hash,
        number_encrypted=caller.encrypted, number_masked=caller.masked,
        owner_staff_id=owner if owner is not None else d.night_id, missed_at=at)
    return owed.task_id


async def answered_call(pool: asyncpg.Pool, d: District, at: datetime) -> int:
    return await insert_call(pool, offered_at=at, disposition="connected", district_id=d.district_id,
                             center_id=d.center_id, team_id=d.team_id, answered_by=d.doctor_id,
                             wait_s=5, resident_id=d.resident_id)


def doctor(d: District) -> Scope:
    return Scope(Viewer(d.doctor_id, "D001", "王医生", "family_doctor", d.district_id, d.center_id,
                        d.team_id))


async def snapshot(pool: asyncpg.Pool, task_id: int) -> tuple:
    row = await pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
    events = await pool.fetchval("SELECT count(*) FROM task_events WHERE task_id = $1", task_id)
    return tuple(row.values()), events


async def test_a_missed_call_opens_a_task_with_its_event_and_a_repeat_is_an_event_too(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    tasks = Tasks(pool)
    task_id = await missed(pool, vault, district, "t-1", T0)
    again = await missed(pool, vault, district, "t-2", T0 + timedelta(minutes=20))
    assert again == task_id
    assert await missed(pool, vault, district, "t-2", T0 + timedelta(minutes=20)) == task_id  # replay
    task = await tasks.get(task_id)
    assert (task.kind, task.version, task.status) == ("callback", 2, "open")
    assert task.due_at == T0 + timedelta(hours=8)
    history = await tasks.history(task_id)
    assert [(e.version, e.event, e.owner_to) for e in history] == [
        (1, "opened", district.night_id), (2, "call_attached", None)]


async def test_the_database_refuses_a_change_without_an_event_and_any_delete(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    task_id = await missed(pool, vault, district, "t-1", T0)
    before = await snapshot(pool, task_id)
    with pytest.raises(asyncpg.CheckViolationError, match="without an event"):
        await pool.execute("UPDATE tasks SET summary = 'x' WHERE id = $1", task_id)
    with pytest.raises(asyncpg.CheckViolationError, match="has no event"):
        await pool.execute("UPDATE tasks SET summary = 'x', version = version + 1 WHERE id = $1", task_id)
    with pytest.raises(asyncpg.RestrictViolationError, match="never deleted"):
        await pool.execute("DELETE FROM tasks WHERE id = $1", task_id)
    with pytest.raises(asyncpg.RestrictViolationError, match="never deleted"):
        await pool.execute("DELETE FROM task_events WHERE task_id = $1", task_id)
    with pytest.raises(asyncpg.RestrictViolationError, match="never deleted"):
        await pool.execute("UPDATE task_events SET reason = 'rewritten' WHERE task_id = $1", task_id)
    assert await snapshot(pool, task_id) == before


async def test_done_needs_an_answered_call_since_the_task_opened_and_a_note(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    tasks, d = Tasks(pool), district
    task_id = await missed(pool, vault, d, "t-1", T0)
    await answered_call(pool, d, T0 - timedelta(hours=1))   # before the task: no evidence
    before = await snapshot(pool, task_id)
    with pytest.raises(TaskError) as refused:
        await tasks.close(task_id, version=1, actor_staff_id=d.doctor_id, status="done",
                          note="已回电", at=T0 + timedelta(hours=1))
    assert refused.value.code == "no_evidence"
    with pytest.raises(TaskError) as refused:
        await tasks.close(task_id, version=1, actor_staff_id=d.doctor_id, status="done",
                          note="   ", at=T0 + timedelta(hours=1))
    assert refused.value.code == "note_required"
    assert await snapshot(pool, task_id) == before

    call = await answered_call(pool, d, T0 + timedelta(hours=6, minutes=30))
    closed = await tasks.close(task_id, version=1, actor_staff_id=d.doctor_id, status="done",
                               note="已回电，血压正常", at=T0 + timedelta(hours=7))
    assert (closed.status, closed.evidence_call_id, closed.closed_by, closed.version) == (
        "done", call, d.doctor_id, 2)
    last = (await tasks.history(task_id))[-1]
    assert (last.event, last.detail["evidence_call_id"], last.detail["late"]) == ("closed", call, False)

    with pytest.raises(TaskError) as twice:
        await tasks.close(task_id, version=2, actor_staff_id=d.doctor_id, status="done",
                          note="again", at=T0 + timedelta(hours=7))
    assert twice.value.code == "closed"


async def test_a_late_close_states_why(pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    tasks, d = Tasks(pool), district
    task_id = await missed(pool, vault, d, "t-1", T0)
    await answered_call(pool, d, T0 + timedelta(hours=9))
    late = T0 + timedelta(hours=9, minutes=5)
    with pytest.raises(TaskError) as refused:
        await tasks.close(task_id, version=1, actor_staff_id=d.doctor_id, status="done",
                          note="已回电", at=late)
    assert refused.value.code == "late_reason_required"
    closed = await tasks.close(task_id, version=1, actor_staff_id=d.doctor_id, status="done",
                               note="已回电", late_reason="门诊太忙", at=late)
    assert closed.late_reason == "门诊太忙" and closed.late_at(closed.closed_at)


async def test_attempts_allow_unreachable_after_the_kinds_number_and_space_retries(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    tasks, d = Tasks(pool), district
    task_id = await missed(pool, vault, d, "t-1", T0)
    at = T0 + timedelta(hours=1)
    for k in range(3):
        task = await tasks.get(task_id)
        await tasks.check_attempt_allowed(task, at)
        if k < 2:
            with pytest.raises(TaskError) as early:
                await tasks.close(task_id, version=task.version, actor_staff_id=d.doctor_id,
                                  status="unreachable", note="无人接听", at=at)
            assert early.value.code == "attempts_left"
        await tasks.record_attempt(task_id, outcome="no_answer", actor_staff_id=d.doctor_id, at=at)
        with pytest.raises(TaskError) as soon:
            await tasks.check_attempt_allowed(await tasks.get(task_id), at + timedelta(minutes=29))
        assert soon.value.code == "too_soon"
        at += timedelta(minutes=30)
    task = await tasks.get(task_id)
    assert task.attempts == 3
    closed = await tasks.close(task_id, version=task.version, actor_staff_id=d.doctor_id,
                               status="unreachable", note="三次无人接听", at=at)
    assert closed.status == "unreachable" and closed.evidence_call_id is None
    events = [e.event for e in await tasks.history(task_id)]
    assert events == ["opened", "attempt", "attempt", "attempt", "closed"]


async def test_two_staff_closing_at_once_exactly_one_wins(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    tasks, d = Tasks(pool), district
    task_id = await missed(pool, vault, d, "t-1", T0)
    await answered_call(pool, d, T0 + timedelta(hours=1))
    results = await asyncio.gather(*(
        tasks.close(task_id, version=1, actor_staff_id=who, status="done", note=f"by {who}",
                    at=T0 + timedelta(hours=2))
        for who in (d.doctor_id, d.assistant_id)), return_exceptions=True)
    won = [r for r in results if isinstance(r, Task)]
    lost = [r for r in results if isinstance(r, TaskError)]
    assert len(won) == 1 and [e.code for e in lost] == ["stale"]
    assert await pool.fetchval("SELECT count(*) FROM task_events WHERE task_id = $1 AND event = 'closed'",
                               task_id) == 1


async def test_out_of_scope_is_not_found_and_changes_nothing(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    tasks, d = Tasks(pool), district
    task_id = await missed(pool, vault, d, "t-1", T0, owner=d.night_id)
    await answered_call(pool, d, T0 + timedelta(hours=1))
    stranger = Scope(Viewer(d.agent_id, "G001", "坐席", "agent", d.district_id))
    before = await snapshot(pool, task_id)
    for attempt in (
        tasks.close(task_id, version=1, actor_staff_id=d.agent_id, status="done", note="x",
                    scope=stranger),
        tasks.note(task_id, version=1, actor_staff_id=d.agent_id, text="x", scope=stranger),
        tasks.history(task_id, stranger),
        tasks.get(999999, doctor(d)),
    ):
        with pytest.raises(TaskError) as refused:
            await attempt
        assert refused.value.code == "not_found"
    assert await snapshot(pool, task_id) == before


async def test_a_huge_note_or_a_stale_version_is_refused_whole(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    tasks, d = Tasks(pool), district
    task_id = await missed(pool, vault, d, "t-1", T0)
    await answered_call(pool, d, T0 + timedelta(hours=1))
    before = await snapshot(pool, task_id)
    for text in ("长" * (1024 * 1024), "a" * (NOTE_MAX + 1), "nul\x00byte"):
        with pytest.raises(TaskError) as refused:
            await tasks.close(task_id, version=1, actor_staff_id=d.doctor_id, status="done", note=text)
        assert refused.value.code == "too_long"
    with pytest.raises(TaskError) as stale:
        await tasks.note(task_id, version=7, actor_staff_id=d.doctor_id, text="hello")
    assert stale.value.code == "stale"
    assert await snapshot(pool, task_id) == before
    noted = await tasks.note(task_id, version=1, actor_staff_id=d.doctor_id, text="下午再打")
    assert noted.version == 2


async def test_a_supervisor_reassigns_with_a_reason(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    tasks, d = Tasks(pool), district
    task_id = await missed(pool, vault, d, "t-1", T0, owner=d.night_id)
    for reason, to, code in (("", d.doctor_id, "reason_required"),
                             ("请王医生处理", d.night_id, "same_owner"),
                             ("请处理", 999999, "unknown_staff")):
        with pytest.raises(TaskError) as refused:
            await tasks.reassign(task_id, version=1, actor_staff_id=d.agent_id, to_staff_id=to,
                                 reason=reason)
        assert refused.value.code == code
    moved = await tasks.reassign(task_id, version=1, actor_staff_id=d.agent_id,
                                 to_staff_id=d.doctor_id, reason="请王医生处理")
    assert moved.owner_staff_id == d.doctor_id and moved.due_at == T0 + timedelta(hours=8)
    last = (await tasks.history(task_id))[-1]
    assert (last.event, last.owner_from, last.owner_to, last.reason) == (
        "reassigned", d.night_id, d.doctor_id, "请王医生处理")


async def test_a_kind_with_outcomes_needs_one_and_unknown_kinds_or_residents_are_refused(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    tasks, d = Tasks(pool), district
    with pytest.raises(TaskError) as unknown:
        await tasks.open(kind="gossip", owner_staff_id=d.doctor_id, opened_at=T0,
                         due_at=T0 + timedelta(hours=1), resident_id=d.resident_id)
    assert unknown.value.code == "unknown_kind"
    with pytest.raises(TaskError) as nobody:
        await tasks.open(kind="referral_followup", owner_staff_id=d.doctor_id, opened_at=T0,
                         due_at=T0 + timedelta(hours=72), resident_id=987654321)
    assert nobody.value.code == "unknown_resident"
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0

    task = await tasks.open(kind="referral_followup", owner_staff_id=d.doctor_id, opened_at=T0,
                            due_at=T0 + timedelta(hours=72), resident_id=d.resident_id,
                            summary="转诊 区人民医院 心内科")
    await answered_call(pool, d, T0 + timedelta(hours=30))
    for outcome in (None, "cured"):
        with pytest.raises(TaskError) as bad:
            await tasks.close(task.id, version=1, actor_staff_id=d.doctor_id, status="done",
                              note="已回访", outcome=outcome, at=T0 + timedelta(hours=31))
        assert bad.value.code == "bad_outcome"
    closed = await tasks.close(task.id, version=1, actor_staff_id=d.doctor_id, status="done",
                               note="已回访，已就诊", outcome="seen", at=T0 + timedelta(hours=31))
    assert closed.close_outcome == "seen"


async def test_the_task_model_migrates_a_database_that_holds_callbacks(empty_database_url: str) -> None:
    """Migration 0024 on a hotline that has been taking calls: open and done callbacks become
    tasks with their history (opened; closed), and the rules hold for them from then on."""
    before = [m for m in all_migrations() if m.version < 24]
    async with db.connection(empty_database_url) as conn:
        await migrate(conn, before)
        await conn.execute(
            """INSERT INTO callback_tasks (caller_key, caller_number_hash, caller_number_enc,
                    caller_number_masked, opened_at, due_at, status, closed_at)
               VALUES ('number:aa', '\\xaa', '\\x00', '138****0001', $1, $1::timestamptz + interval '8 hours', 'open', NULL),
                      ('number:bb', '\\xbb', '\\x00', '138****0002', $1::timestamptz, $1::timestamptz + interval '8 hours', 'done',
                       $1::timestamptz + interval '1 hour')""", T0)
        await migrate(conn, all_migrations())
        rows = await conn.fetch("SELECT caller_key, kind, status, version, close_note FROM tasks ORDER BY caller_key")
        assert [tuple(r.values()) for r in rows] == [("number:aa", "callback", "open", 1, None),
                                                     ("number:bb", "callback", "done", 2, "")]
        events = await conn.fetch("SELECT t.caller_key, e.version, e.event FROM task_events e"
                                  " JOIN tasks t ON t.id = e.task_id ORDER BY t.caller_key, e.version")
        assert [tuple(r.values()) for r in events] == [("number:aa", 1, "opened"), ("number:bb", 1, "opened"),
                                                       ("number:bb", 2, "closed")]
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE tasks SET summary = 'x' WHERE caller_key = 'number:aa'")


async def test_what_the_hotline_did_meanwhile_does_not_make_her_view_stale(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    """She opened the task at version 1; the 1-hour warning (the hotline's own event) moves it to
    2: her close still stands. A colleague's note moves it on: then she is told to refresh."""
    tasks, d = Tasks(pool), district
    task_id = await missed(pool, vault, d, "t-1", T0)
    await answered_call(pool, d, T0 + timedelta(hours=1))
    async with pool.acquire() as conn, conn.transaction():
        task = Task.from_row(await conn.fetchrow("SELECT * FROM tasks WHERE id = $1 FOR UPDATE", task_id))
        await change(conn, task, event="warned", at=T0 + timedelta(hours=7), warned_at=T0 + timedelta(hours=7))
    noted = await tasks.note(task_id, version=1, actor_staff_id=d.doctor_id, text="下午再打")
    assert noted.version == 3
    await tasks.note(task_id, version=3, actor_staff_id=d.assistant_id, text="已约明早")
    with pytest.raises(TaskError) as stale:
        await tasks.close(task_id, version=3, actor_staff_id=d.doctor_id, status="done", note="已回电")
    assert stale.value.code == "stale"
    with pytest.raises(TaskError) as ahead:
        await tasks.close(task_id, version=9, actor_staff_id=d.doctor_id, status="done", note="已回电")
    assert ahead.value.code == "stale"
    closed = await tasks.close(task_id, version=4, actor_staff_id=d.doctor_id, status="done", note="已回电",
                               at=T0 + timedelta(hours=7, minutes=30))
    assert closed.status == "done"
