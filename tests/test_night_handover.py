"""The night handover (handover/night_handover.py) on a real PostgreSQL: the duty doctor's notes,
the sheet built per team at the end of the night, its tasks due 09:00 of the next working day,
an idempotent build, and the day doctor's 签收."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from playwright.async_api import Page, expect

from handover.callbacks import Callbacks
from handover.night_handover import ACK_NOTE, HandoverError, NightHandover, masked_name
from handover.tasks import TaskError, Tasks
from recordings.call_records import CallerNumber
from recordings.caller_card import caller_card
from routing.numbers import parse_id_number
from routing.records import (
    NewResident,
    NewShift,
    NewStaff,
    write_residents,
    write_shifts,
    write_staff,
)
from routing.scope import Scope, Viewer
from store.pii import PiiVault
from tests.browser import screenshot, sign_in
from tests.conftest import run_cli
from tests.console import Harness, Login, assert_conforms, inline_scripts
from tests.console_rows import insert_call
from tests.district import District, build_district, id_number
from tests.promises import assert_promises_kept

SH = ZoneInfo("Asia/Shanghai")
WEEK = date(2026, 11, 22)                                  # a Sunday; night shifts every night
TUESDAY_NIGHT = datetime(2026, 11, 24, 17, 0, tzinfo=SH)   # until Wednesday 08:00
WEDNESDAY_8 = datetime(2026, 11, 25, 8, 0, tzinfo=SH)


@dataclass(frozen=True)
class Night:
    d: District
    team2_id: int
    doctor2_id: int
    resident2_id: int      # 钱秀英, of team 2


@pytest.fixture
async def night(pool: asyncpg.Pool, vault: PiiVault) -> Night:
    d = await build_district(pool, vault, week_of=WEEK)
    async with pool.acquire() as conn, conn.transaction():
        team2 = await conn.fetchval(
            "INSERT INTO teams (center_id, name) VALUES ($1, '测试二团队') RETURNING id", d.center_id)
        (doctor2,) = await write_staff(conn, vault, [
            NewStaff("D003", "周医生", "family_doctor", d.district_id, d.center_id, team2, "sip:1003@127.0.0.1")])
        contract = (WEEK - timedelta(days=100), WEEK + timedelta(days=265))
        written = await write_residents(conn, vault, [
            NewResident("钱秀英", parse_id_number(id_number("19600505", "046")), d.center_id,
                        ["13800000003"], doctor2, team2, contract)])
    return Night(d, team2, doctor2, written.ids[0])


def scope_of(d: District, staff_id: int, role: str, team_id: int | None) -> Scope:
    return Scope(Viewer(staff_id, f"S{staff_id}", "某人", role, d.district_id, d.center_id, team_id))


async def shift_at(pool: asyncpg.Pool, d: District, starts: datetime) -> int:
    shift = await pool.fetchval(
        "SELECT id FROM duty_shifts WHERE doctor_id = $1 AND starts_at = $2", d.night_id, starts)
    if shift is None:
        async with pool.acquire() as conn:
            await write_shifts(conn, [NewShift(d.night_id, d.district_id, d.center_id, starts,
                                               starts + timedelta(hours=15))])
        shift = await pool.fetchval(
            "SELECT id FROM duty_shifts WHERE doctor_id = $1 AND starts_at = $2", d.night_id, starts)
    return shift


async def night_call(pool: asyncpg.Pool, d: District, at: datetime, *, resident: int | None,
                     team: int | None, answered_by: int | None = None,
                     disposition: str = "connected") -> int:
    return await insert_call(pool, offered_at=at, disposition=disposition, district_id=d.district_id,
                             center_id=d.center_id, team_id=team, answered_by=answered_by,
                             wait_s=8 if answered_by else None, resident_id=resident)


async def counts(pool: asyncpg.Pool) -> tuple[int, ...]:
    return tuple([await pool.fetchval(f"SELECT count(*) FROM {t}") for t in (  # noqa: S608
        "night_handover_notes", "handover_sheets", "handover_items", "tasks", "task_events")])


async def test_the_duty_doctor_notes_her_answered_night_calls_and_only_hers(
        pool: asyncpg.Pool, night: Night) -> None:
    d, handover = night.d, NightHandover(pool)
    mine = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=5), resident=d.resident_id,
                            team=d.team_id, answered_by=d.night_id)
    by_day = await night_call(pool, d, TUESDAY_NIGHT - timedelta(hours=3), resident=d.resident_id,
                              team=d.team_id, answered_by=d.doctor_id)      # the family doctor's
    missed = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=6), resident=d.resident_id,
                              team=d.team_id, disposition="missed")
    pending = await handover.pending(d.night_id, now=WEDNESDAY_8)
    assert [p.call_id for p in pending] == [mine]
    assert pending[0].resident_masked == "张*兰"
    before = await counts(pool)
    for call in (by_day, missed, 1_999_999_999):   # someone else's, nobody's, no call at all
        with pytest.raises(HandoverError) as refused:
            await handover.write_note(call, author_staff_id=d.night_id, summary="血压 180/100，已嘱服药",
                                      follow_up=True, urgency="urgent", now=WEDNESDAY_8)
        assert refused.value.code == "not_found"
    with pytest.raises(HandoverError) as refused:   # her call, but the family doctor writing
        await handover.write_note(mine, author_staff_id=d.doctor_id, summary="x", follow_up=True,
                                  urgency="normal", now=WEDNESDAY_8)
    assert refused.value.code == "not_found"
    bad = [({"summary": "x" * (1024 * 1024)}, "too_long"), ({"summary": "  "}, "summary_required"),
           ({"summary": "a\x00b"}, "bad_text"), ({"summary": "a\ud800b"}, "bad_text"), ({"urgency": "高"}, "bad_urgency"),
           ({"follow_up": "yes"}, "bad_follow_up")]
    for change, code in bad:
        fields = {"summary": "ok", "follow_up": True, "urgency": "normal", **change}
        with pytest.raises(HandoverError) as refused:
            await handover.write_note(mine, author_staff_id=d.night_id, now=WEDNESDAY_8, **fields)
        assert refused.value.code == code, change
    assert await counts(pool) == before                # refused whole: nothing written

    note = await handover.write_note(mine, author_staff_id=d.night_id, summary=" 血压 180/100，已嘱服药 ",
                                     follow_up=True, urgency="urgent", now=WEDNESDAY_8)
    assert (note.summary, note.resident_id, note.urgency) == ("血压 180/100，已嘱服药", d.resident_id, "urgent")
    assert await handover.pending(d.night_id, now=WEDNESDAY_8) == []
    with pytest.raises(HandoverError) as twice:
        await handover.write_note(mine, author_staff_id=d.night_id, summary="again", follow_up=False,
                                  urgency="normal", now=WEDNESDAY_8)
    assert twice.value.code == "note_exists"
    with pytest.raises(asyncpg.RestrictViolationError):   # kept as written
        await pool.execute("UPDATE night_handover_notes SET summary = 'x' WHERE id = $1", note.id)


async def test_the_sheet_is_built_per_team_with_tasks_due_at_nine_and_a_rebuild_adds_nothing(
        pool: asyncpg.Pool, vault: PiiVault, night: Night) -> None:
    d, handover, tasks = night.d, NightHandover(pool), Tasks(pool)
    shift = await shift_at(pool, d, TUESDAY_NIGHT)
    # team 1: a noted call asking for a follow-up, and one noted without
    a = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=4), resident=d.resident_id,
                         team=d.team_id, answered_by=d.night_id)
    await handover.write_note(a, author_staff_id=d.night_id, summary="胸闷，建议白天复诊",
                              follow_up=True, urgency="urgent", now=WEDNESDAY_8)
    b = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=5), resident=d.resident_id,
                         team=d.team_id, answered_by=d.night_id)
    await handover.write_note(b, author_staff_id=d.night_id, summary="咨询用药，已解答",
                              follow_up=False, urgency="normal", now=WEDNESDAY_8)
    # team 2: a missed call with a voicemail (a callback task)
    caller = CallerNumber.of(vault, "13800000003")
    missed = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=9), resident=night.resident2_id,
                              team=night.team2_id, disposition="missed")
    owed = await Callbacks(pool).owe_for_missed_call(
        call_record_id=missed, resident_id=night.resident2_id, number_hash=caller.hash,
        number_encrypted=caller.encrypted, number_masked=caller.masked, owner_staff_id=d.night_id,
        missed_at=TUESDAY_NIGHT + timedelta(hours=9))
    await Callbacks(pool).attach_voicemail(task_id=owed.task_id, call_record_id=missed, path="/x.wav",
                                           seconds=3.0, sha256="0" * 64,
                                           recorded_at=TUESDAY_NIGHT + timedelta(hours=9))
    # nobody's: an unknown number that hung up
    unknown = CallerNumber.of(vault, "13900009999")
    gone = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=10), resident=None, team=None,
                            disposition="abandoned")
    await pool.execute("UPDATE call_records SET caller_number_hash = $2, caller_number_enc = $3,"
                       " caller_number_masked = $4 WHERE id = $1", gone, unknown.hash,
                       unknown.encrypted, unknown.masked)
    # a call of the day before the night is not the night's
    await night_call(pool, d, TUESDAY_NIGHT - timedelta(hours=1), resident=d.resident_id,
                     team=d.team_id, disposition="missed")

    built = await handover.build_sheet(shift, WEDNESDAY_8)
    assert (len(built.sheet_ids), built.items_added, built.tasks_opened) == (3, 3, 3)
    nine = datetime(2026, 11, 25, 9, 0, tzinfo=SH)
    rows = await pool.fetch(
        """SELECT hs.team_id, i.source, i.urgency, i.voicemails, t.kind, t.owner_staff_id, t.due_at,
                  t.resident_id FROM handover_items i JOIN handover_sheets hs ON hs.id = i.sheet_id
             JOIN tasks t ON t.id = i.task_id WHERE i.shift_id = $1 ORDER BY i.id""", shift)
    got = {(r["team_id"], r["source"], r["urgency"], r["voicemails"], r["kind"], r["owner_staff_id"],
            r["due_at"]) for r in rows}
    assert got == {
        (d.team_id, "note", "urgent", 0, "handover", d.doctor_id, nine),
        (night.team2_id, "callback", "normal", 1, "handover", night.doctor2_id, nine),
        (None, "missed_call", "normal", 0, "handover", None, nine),    # the desk's: no doctor
    }
    for task_id in await pool.fetch("SELECT task_id FROM handover_items WHERE shift_id = $1", shift):
        opened = (await tasks.history(task_id["task_id"]))[0]
        assert (opened.event, opened.reason) == ("opened", "night handover")

    before = await counts(pool)
    again = await handover.build_sheet(shift, WEDNESDAY_8 + timedelta(minutes=3))
    assert (again.items_added, again.tasks_opened) == (0, 0)
    assert sorted(again.sheet_ids) == sorted(built.sheet_ids)
    assert await counts(pool) == before
    # the watcher and an operator at once: one of them adds what is new, the other nothing
    late = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=11), resident=d.resident_id,
                            team=d.team_id, answered_by=d.night_id)
    await handover.write_note(late, author_staff_id=d.night_id, summary="补记：夜间头晕",
                              follow_up=True, urgency="normal", now=WEDNESDAY_8 + timedelta(minutes=5))
    both = await asyncio.gather(*(NightHandover(pool).build_sheet(shift, WEDNESDAY_8 + timedelta(minutes=6))
                                  for _ in range(2)))
    assert sorted((b.items_added, b.tasks_opened) for b in both) == [(0, 0), (1, 1)]
    assert await counts(pool) != before

    # the team's view: the family doctor sees her team's sheet only
    doctor = scope_of(d, d.doctor_id, "family_doctor", d.team_id)
    sheets = await handover.sheets(doctor)
    assert [(s.team_id, len(s.items)) for s in sheets] == [(d.team_id, 2)]   # urgent first
    item = sheets[0].items[0]
    assert (item.resident_masked, item.summary, item.urgency, item.can_acknowledge) == (
        "张*兰", "胸闷，建议白天复诊", "urgent", True)
    other = scope_of(d, night.doctor2_id, "family_doctor", night.team2_id)
    with pytest.raises(HandoverError) as hidden:
        await handover.sheet(other, sheets[0].id)
    assert hidden.value.code == "not_found"
    night_doctor = scope_of(d, d.night_id, "night_doctor", None)
    assert {s.id for s in await handover.sheets(night_doctor)} == set(built.sheet_ids)
    assert await handover.sheets(scope_of(d, d.agent_id, "agent", None)) == []


@pytest.mark.parametrize(("starts", "due"), [
    # Friday night → Monday 09:00
    (datetime(2026, 11, 27, 17, 0, tzinfo=SH), datetime(2026, 11, 30, 9, 0, tzinfo=SH)),
    # the night before 国庆节 (Oct 1–7 holidays) → Thursday Oct 8, 09:00
    (datetime(2026, 9, 30, 17, 0, tzinfo=SH), datetime(2026, 10, 8, 9, 0, tzinfo=SH)),
    # built after 09:00 of the next working day (late): the working day after, never the past
])
async def test_an_item_is_due_at_nine_of_the_next_working_day(
        pool: asyncpg.Pool, night: Night, starts: datetime, due: datetime) -> None:
    d, handover = night.d, NightHandover(pool)
    shift = await shift_at(pool, d, starts)
    call = await night_call(pool, d, starts + timedelta(hours=2), resident=d.resident_id,
                            team=d.team_id, answered_by=d.night_id)
    end = starts + timedelta(hours=15)
    await handover.write_note(call, author_staff_id=d.night_id, summary="夜间发热", follow_up=True,
                              urgency="normal", now=end)
    built = await handover.build_sheet(shift, end)
    assert built.tasks_opened == 1
    task_due = await pool.fetchval(
        "SELECT t.due_at FROM handover_items i JOIN tasks t ON t.id = i.task_id WHERE i.shift_id = $1", shift)
    assert task_due == due


async def test_a_sheet_built_late_is_due_on_the_working_day_after(pool: asyncpg.Pool, night: Night) -> None:
    d, handover = night.d, NightHandover(pool)
    shift = await shift_at(pool, d, TUESDAY_NIGHT)
    call = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=2), resident=d.resident_id,
                            team=d.team_id, answered_by=d.night_id)
    await handover.write_note(call, author_staff_id=d.night_id, summary="夜间发热", follow_up=True,
                              urgency="normal", now=WEDNESDAY_8)
    await handover.build_sheet(shift, datetime(2026, 11, 25, 10, 30, tzinfo=SH))
    assert await pool.fetchval(
        "SELECT t.due_at FROM handover_items i JOIN tasks t ON t.id = i.task_id WHERE i.shift_id = $1",
        shift) == datetime(2026, 11, 26, 9, 0, tzinfo=SH)


async def test_the_day_doctor_acknowledges_an_item_once_with_the_version_she_saw(
        pool: asyncpg.Pool, night: Night) -> None:
    d, handover, tasks = night.d, NightHandover(pool), Tasks(pool)
    shift = await shift_at(pool, d, TUESDAY_NIGHT)
    call = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=2), resident=d.resident_id,
                            team=d.team_id, answered_by=d.night_id)
    await handover.write_note(call, author_staff_id=d.night_id, summary="夜间发热", follow_up=True,
                              urgency="normal", now=WEDNESDAY_8)
    await handover.build_sheet(shift, WEDNESDAY_8)
    doctor = scope_of(d, d.doctor_id, "family_doctor", d.team_id)
    (sheet,) = await handover.sheets(doctor)
    (item,) = sheet.items
    at = WEDNESDAY_8 + timedelta(minutes=40)
    before = await counts(pool)
    for who, version, code in [
            (scope_of(d, night.doctor2_id, "family_doctor", night.team2_id), item.task_version, "not_found"),
            (scope_of(d, d.night_id, "night_doctor", None), item.task_version, "not_found"),
            (doctor, item.task_version + 1, "stale"), (doctor, None, "version_required"),
            (doctor, True, "version_required"), (doctor, 2.0, "version_required")]:
        with pytest.raises(TaskError) as refused:
            await handover.acknowledge(item.id, scope=who, version=version, now=at)
        assert refused.value.code == code
    assert await counts(pool) == before

    signed = await handover.acknowledge(item.id, scope=doctor, version=item.task_version, now=at)
    assert (signed.task_status, signed.acknowledged_by, signed.acknowledged_at, signed.can_acknowledge) == (
        "done", "王医生", at, False)
    task = await tasks.get(item.task_id)
    assert (task.close_note, task.closed_by, task.evidence_call_id) == (ACK_NOTE, d.doctor_id, None)
    last = (await tasks.history(item.task_id))[-1]
    assert (last.event, last.actor_staff_id, last.at) == ("closed", d.doctor_id, at)
    with pytest.raises(TaskError) as twice:   # the same click again: her own close moved it on
        await handover.acknowledge(item.id, scope=doctor, version=item.task_version, now=at)
    assert twice.value.code == "closed"


async def test_an_item_signed_after_its_due_time_says_why(pool: asyncpg.Pool, night: Night) -> None:
    d, handover = night.d, NightHandover(pool)
    shift = await shift_at(pool, d, TUESDAY_NIGHT)
    call = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=2), resident=d.resident_id,
                            team=d.team_id, answered_by=d.night_id)
    await handover.write_note(call, author_staff_id=d.night_id, summary="夜间发热", follow_up=True,
                              urgency="normal", now=WEDNESDAY_8)
    await handover.build_sheet(shift, WEDNESDAY_8)
    doctor = scope_of(d, d.doctor_id, "family_doctor", d.team_id)
    (item,) = (await handover.sheets(doctor))[0].items
    late = item.due_at + timedelta(minutes=1)
    with pytest.raises(TaskError) as refused:
        await handover.acknowledge(item.id, scope=doctor, version=item.task_version, now=late)
    assert refused.value.code == "late_reason_required"
    signed = await handover.acknowledge(item.id, scope=doctor, version=item.task_version,
                                        late_reason="上午门诊", now=late)
    assert signed.acknowledged_at == late
    assert await pool.fetchval("SELECT late_reason FROM tasks WHERE id = $1", item.task_id) == "上午门诊"


async def test_the_caller_card_shows_the_nights_notes_about_the_resident(
        pool: asyncpg.Pool, vault: PiiVault, night: Night) -> None:
    d, handover = night.d, NightHandover(pool)
    call = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=2), resident=d.resident_id,
                            team=d.team_id, answered_by=d.night_id)
    await handover.write_note(call, author_staff_id=d.night_id, summary="夜间发热 38.5℃",
                              follow_up=True, urgency="urgent", now=TUESDAY_NIGHT + timedelta(hours=3))
    morning = await night_call(pool, d, WEDNESDAY_8 + timedelta(hours=1), resident=d.resident_id,
                               team=d.team_id, answered_by=d.doctor_id)
    doctor = scope_of(d, d.doctor_id, "family_doctor", d.team_id)
    card = await caller_card(pool, vault, doctor, morning, now=WEDNESDAY_8 + timedelta(hours=1))
    assert card is not None
    assert [(n["summary"], n["urgency"], n["author"], n["written_at"]) for n in card.handover_notes] == [
        ("夜间发热 38.5℃", "urgent", "赵医生", "2026-11-24T20:00:00+08:00")]
    a_week_later = await night_call(pool, d, WEDNESDAY_8 + timedelta(days=7), resident=d.resident_id,
                                    team=d.team_id, answered_by=d.doctor_id)
    card = await caller_card(pool, vault, doctor, a_week_later, now=WEDNESDAY_8 + timedelta(days=7))
    assert card is not None and card.handover_notes == []


def test_names_are_masked_for_the_sheet() -> None:
    assert [masked_name(n) for n in ("张桂兰", "李明", "欧阳春晓", "王", None)] == [
        "张*兰", "李*", "欧**晓", "王*", None]


async def test_building_an_unknown_shift_is_refused(pool: asyncpg.Pool) -> None:
    with pytest.raises(HandoverError) as refused:
        await NightHandover(pool).build_sheet(1_999_999_999, datetime.combine(WEEK, time(8), SH))
    assert refused.value.code == "no_shift"


async def test_hotline_handover_build_by_night_and_by_shift(
        pool: asyncpg.Pool, night: Night, cli_env: dict[str, str]) -> None:
    d = night.d
    shift = await shift_at(pool, d, TUESDAY_NIGHT)
    call = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=2), resident=d.resident_id,
                            team=d.team_id, answered_by=d.night_id)
    await NightHandover(pool).write_note(call, author_staff_id=d.night_id, summary="夜间发热",
                                         follow_up=True, urgency="normal", now=WEDNESDAY_8)
    env = {**cli_env, "HOTLINE_CLOCK_START": WEDNESDAY_8.isoformat()}
    first = run_cli(env, "handover", "build", "--night", "2026-11-24")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"shift {shift}: 1 sheet(s), 1 new item(s), 1 handover task(s) opened"
    again = run_cli(env, "handover", "build", "--shift", str(shift))
    assert again.stdout.strip() == f"shift {shift}: 1 sheet(s), 0 new item(s), 0 handover task(s) opened"
    assert await pool.fetchval(
        "SELECT t.due_at FROM handover_items i JOIN tasks t ON t.id = i.task_id WHERE i.shift_id = $1",
        shift) == datetime(2026, 11, 25, 9, 0, tzinfo=SH)
    assert run_cli(env, "handover", "build", "--shift", "1999999999").returncode == 1
    assert run_cli(env, "handover", "build", "--night", "2031-01-01").returncode == 1
    assert run_cli(env, "handover", "build", "--night", "yesterday").returncode == 2


async def test_the_watcher_builds_the_sheet_when_the_night_shift_ends_once(
        pool: asyncpg.Pool, database_url: str, vault: PiiVault, night: Night) -> None:
    """"At the end of the night shift the handover sheet is built per team": by the deadline
    watcher's sweep, with no operator; the next sweeps build nothing again."""
    from handover.ownership import routing_source
    from handover.watcher import Watcher
    d = night.d
    shift = await shift_at(pool, d, TUESDAY_NIGHT)
    call = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=3), resident=d.resident_id,
                            team=d.team_id, answered_by=d.night_id)
    await NightHandover(pool).write_note(call, author_staff_id=d.night_id, summary="夜间血压高",
                                         follow_up=True, urgency="urgent",
                                         now=TUESDAY_NIGHT + timedelta(hours=4))
    missed = await night_call(pool, d, TUESDAY_NIGHT + timedelta(hours=6), resident=night.resident2_id,
                              team=night.team2_id, disposition="missed")
    caller = CallerNumber.of(vault, "13800000003")
    await Callbacks(pool).owe_for_missed_call(
        call_record_id=missed, resident_id=night.resident2_id, number_hash=caller.hash,
        number_encrypted=caller.encrypted, number_masked=caller.masked, owner_staff_id=d.night_id,
        missed_at=TUESDAY_NIGHT + timedelta(hours=6))
    at = WEDNESDAY_8 - timedelta(seconds=20)
    watcher = Watcher(pool, database_url, now=lambda: at, routing=routing_source(pool, SH), tz=SH)

    await watcher.sweep()   # the night is not over: nothing of it on a sheet
    assert await pool.fetchval("SELECT count(*) FROM handover_items WHERE shift_id = $1", shift) == 0
    at = WEDNESDAY_8 + timedelta(seconds=20)   # the next sweep after 08:00
    assert (await watcher.sweep()).handovers_built >= 1
    rows = await pool.fetch(
        """SELECT hs.team_id, i.source, t.kind, t.owner_staff_id, t.due_at
             FROM handover_items i JOIN handover_sheets hs ON hs.id = i.sheet_id
             JOIN tasks t ON t.id = i.task_id WHERE i.shift_id = $1 ORDER BY i.id""", shift)
    nine = datetime(2026, 11, 25, 9, 0, tzinfo=SH)
    assert {tuple(r) for r in rows} == {
        (d.team_id, "note", "handover", d.doctor_id, nine),
        (night.team2_id, "callback", "handover", night.doctor2_id, nine)}
    assert await pool.fetchval(
        "SELECT tasks_opened FROM handover_shift_builds WHERE shift_id = $1", shift) == 2

    before = await counts(pool)
    at = WEDNESDAY_8 + timedelta(seconds=40)
    assert (await watcher.sweep()).handovers_built == 0   # built once
    assert await counts(pool) == before
    await assert_promises_kept(pool, TUESDAY_NIGHT, now=at)


# -- the console ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class WebNight:
    night_doctor: Login
    shift_id: int
    call_id: int          # answered by her during the shift, noted by the test that wants it
    foreign_call: int     # answered by the family doctor: not hers to note


async def web_night(console: Harness) -> WebNight:
    """A duty doctor of the console's district of this test's own, with a shift that ended an
    hour ago and a call of 张桂兰 she answered in it (the family doctor's is the shared login)."""
    d, now = console.district, console.clock()
    who = await console.new_staff("night_doctor", name="夜班测试")
    starts = now - timedelta(hours=10)
    async with console.pool.acquire() as conn:
        await write_shifts(conn, [NewShift(who.staff_id, d.district_id, d.center_id, starts, now - timedelta(hours=1))])
    shift = await console.pool.fetchval("SELECT id FROM duty_shifts WHERE doctor_id = $1", who.staff_id)
    call = await night_call(console.pool, d, now - timedelta(hours=5), resident=d.resident_id, team=d.team_id,
                            answered_by=who.staff_id)
    foreign = await night_call(console.pool, d, now - timedelta(hours=4), resident=d.resident_id,
                               team=d.team_id, answered_by=d.doctor_id)
    return WebNight(who, shift, call, foreign)


async def built_item(console: Harness, night: WebNight) -> tuple[int, int, int]:
    """The sheet, item and task version the shift's build made of the noted call."""
    await NightHandover(console.pool).build_sheet(night.shift_id, console.clock())
    row = await console.pool.fetchrow(
        """SELECT i.sheet_id, i.id, t.version FROM handover_items i JOIN tasks t ON t.id = i.task_id
            WHERE i.call_record_id = $1 AND i.source = 'note'""", night.call_id)
    return row["sheet_id"], row["id"], row["version"]


async def test_the_console_notes_sheets_and_acknowledgements(console: Harness) -> None:
    night = await web_night(console)
    document = await console.openapi()
    duty = await console.signed_in(night.night_doctor)
    pending = await duty.get_json("/api/v1/handover/notes/pending")
    assert_conforms(document, "GET", "/api/v1/handover/notes/pending", 200, pending)
    assert [c["call_id"] for c in pending["calls"]] == [night.call_id]
    desk = await duty.get("/desk")
    assert "交班记录待填" in desk.text and f'action="/handover/notes/{night.call_id}"' in desk.text

    path = f"/api/v1/handover/notes/{night.call_id}"
    before = await counts(console.pool)
    huge = await duty.request("PUT", path, json={"summary": "x" * (1024 * 1024), "follow_up": True,
                                                 "urgency": "urgent"})
    assert huge.status == 413
    assert (await duty.request("PUT", path, json={"summary": "x", "follow_up": True,
                                                  "urgency": "critical"})).status == 422
    assert (await duty.request("PUT", f"/api/v1/handover/notes/{night.foreign_call}",
                               json={"summary": "x", "follow_up": True, "urgency": "normal"})).status == 404
    assert await counts(console.pool) == before
    written = await duty.request("PUT", path, json={"summary": "血压高，已嘱服药，请白天随访",
                                                    "follow_up": True, "urgency": "urgent"})
    assert written.status == 200, written.text
    assert_conforms(document, "PUT", "/api/v1/handover/notes/{call_id}", 200, written.json())
    again = await duty.request("PUT", path, json={"summary": "x", "follow_up": False, "urgency": "normal"})
    assert (again.status, again.json()["error"]) == (409, "note_exists")
    # the resident calls again in the morning: the family doctor's card shows the night's note
    d = console.district
    morning = await night_call(console.pool, d, console.clock() + timedelta(seconds=1), resident=d.resident_id,
                               team=d.team_id, answered_by=d.doctor_id)
    doctor = await console.signed_in("family_doctor")
    card = await doctor.get(f"/calls/{morning}/card")
    assert card.status == 200 and "血压高，已嘱服药，请白天随访" in card.text and "需白天跟进" in card.text
    card_json = await doctor.get_json(f"/api/v1/calls/{morning}/card")
    assert_conforms(document, "GET", "/api/v1/calls/{call_id}/card", 200, card_json)

    sheet_id, item_id, version = await built_item(console, night)
    listed = await doctor.get_json("/api/v1/handover/sheets")
    assert_conforms(document, "GET", "/api/v1/handover/sheets", 200, listed)
    assert sheet_id in {s["id"] for s in listed["sheets"]}
    sheet = await doctor.get_json(f"/api/v1/handover/sheets/{sheet_id}")
    assert_conforms(document, "GET", "/api/v1/handover/sheets/{sheet_id}", 200, sheet)
    (item,) = [i for i in sheet["items"] if i["id"] == item_id]
    assert (item["resident_masked"], item["urgency"], item["can_acknowledge"], item["task_version"]) == (
        "张*兰", "urgent", True, version)
    assert "张桂兰" not in str(sheet)
    ack = f"/api/v1/handover/items/{item_id}/acknowledge"
    stale = await doctor.request("POST", ack, json={"version": version + 1})
    assert (stale.status, stale.json()["error"]) == (409, "stale")
    # the duty doctor reads the sheet of her night, but does not sign for the day team
    assert (await duty.get(f"/api/v1/handover/sheets/{sheet_id}")).status == 200
    assert (await duty.request("POST", ack, json={"version": version})).status == 404
    signed = await doctor.request("POST", ack, json={"version": version})
    assert signed.status == 200, signed.text
    assert_conforms(document, "POST", "/api/v1/handover/items/{item_id}/acknowledge", 200, signed.json())
    assert (signed.json()["task_status"], signed.json()["acknowledged_by"]) == ("done", "王医生")
    page = await doctor.get(f"/handover/sheets/{sheet_id}")
    assert page.status == 200 and "王医生 已签收" in page.text
    assert 'href="/static/print.css" media="print"' in page.text
    assert not inline_scripts(page.text)
    audited = await console.pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'handover.sheet' AND subject = $1",
        f"handover_sheet:{sheet_id}")
    assert audited >= 3


async def test_the_day_doctor_opens_the_sheet_and_acknowledges_an_item_in_chromium(
        console: Harness, page: Page) -> None:
    night = await web_night(console)
    await NightHandover(console.pool).write_note(
        night.call_id, author_staff_id=night.night_doctor.staff_id, summary="夜间胸闷，请白天随访",
        follow_up=True, urgency="urgent", now=console.clock())
    sheet_id, item_id, _version = await built_item(console, night)
    await sign_in(page, console.logins["family_doctor"])
    await page.goto("/handover")
    async with page.expect_navigation():
        await page.locator(f'tr[data-sheet="{sheet_id}"] a').click()
    row = page.locator(f"#item-{item_id}")
    await expect(row.locator("td.summary")).to_have_text("夜间胸闷，请白天随访")
    await expect(row).to_contain_text("紧急")
    await screenshot(page, "handover-sheet")
    async with page.expect_navigation():
        await row.get_by_role("button", name="签收").click()
    await expect(page.locator(f"#item-{item_id} .acknowledged")).to_contain_text("王医生 已签收")
    await expect(page.locator(f"#item-{item_id} button")).to_have_count(0)
    # printed: the sheet and who signed, without the navigation and the buttons
    await page.emulate_media(media="print")
    await expect(page.locator("header.top")).to_be_hidden()
    await expect(page.locator("[data-print]")).to_be_hidden()
    await expect(page.locator(".print-only")).to_be_visible()
    await expect(page.locator(f"#item-{item_id} .acknowledged")).to_be_visible()
    status = await console.pool.fetchval(
        "SELECT t.status FROM handover_items i JOIN tasks t ON t.id = i.task_id WHERE i.id = $1", item_id)
    assert status == "done"
