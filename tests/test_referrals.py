"""Referrals (handover/referrals.py, migration 0027) and `hotline referrals|tasks` against a real
PostgreSQL: a referral opens its 72-hour follow-up owned through the ownership rule (the family
doctor by day, the duty doctor at night until the watcher's shift change at 08:00), the follow-up
closes with an answered call, a note and the outcome; bad input is refused whole; the CLI's exit
codes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from handover.ownership import routing_source
from handover.referrals import ReferralError, Referrals
from handover.tasks import TaskError, Tasks
from routing.calendar_store import load_calendar
from routing.numbers import parse_id_number
from routing.records import NewResident, NewStaff, write_residents, write_staff
from routing.scope import Scope, Viewer
from store.pii import PiiVault
from tests.conftest import run_cli
from tests.console_rows import insert_call
from tests.district import District, build_district, id_number
from tests.promises import assert_promises_kept

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime.now(SH).replace(microsecond=0)


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    today = datetime.now(SH).date()
    return await build_district(pool, vault, week_of=today - timedelta(days=today.weekday()))


async def working_morning(pool: asyncpg.Pool) -> datetime:
    """10:00 of the latest working day at least an hour before NOW (within the 7 days a referral
    may be dated back): the family doctor's day window, whatever day and hour the tests run."""
    async with pool.acquire() as conn:
        calendar = await load_calendar(conn, tz=SH)
    for back in range(7):
        at = datetime.combine(NOW.date() - timedelta(days=back), time(10), SH)
        if at <= NOW - timedelta(hours=1) and calendar.is_working_day(at.date(), None):
            return at
    raise AssertionError("no working day within the last week")


def doctor(d: District) -> Scope:
    return Scope(Viewer(d.doctor_id, "D001", "王医生", "family_doctor", d.district_id, d.center_id, d.team_id))


async def counts(pool: asyncpg.Pool) -> tuple[int, int, int]:
    return (await pool.fetchval("SELECT count(*) FROM referrals"), await pool.fetchval("SELECT count(*) FROM tasks"),
            await pool.fetchval("SELECT count(*) FROM task_events"))


async def test_a_referral_opens_its_follow_up_due_in_72_hours_for_the_family_doctor(
        pool: asyncpg.Pool, district: District) -> None:
    d = district
    referrals, tasks = Referrals(pool, SH), Tasks(pool)
    at = await working_morning(pool)
    added = await referrals.add(doctor(d), resident_id=d.resident_id, hospital="区人民医院",
                                department="心内科", reason="胸闷待查", referred_at=at, now=NOW)
    assert (added.resident_name, added.recorded_by_no, added.followup_status, added.followup_owner_name) == (
        "张桂兰", "D001", "open", "王医生")
    task = await tasks.get(added.followup_task_id)
    assert (task.kind, task.opened_at, task.due_at, task.owner_staff_id) == (
        "referral_followup", at, at + timedelta(hours=72), d.doctor_id)
    history = await tasks.history(task.id)
    assert [(e.event, e.actor_staff_id, e.owner_to, e.reason) for e in history] == [
        ("opened", d.doctor_id, d.doctor_id, "referral")]
    # lists: per doctor, per center, within scope
    assert [r.id for r in await referrals.list(doctor(d), doctor_id=d.doctor_id)] == [added.id]
    assert [r.id for r in await referrals.list(doctor(d), center_id=d.center_id)] == [added.id]
    assert await referrals.list(doctor(d), center_id=d.center_id + 999) == []
    agent = Scope(Viewer(d.agent_id, "G001", "孙客服", "agent", d.district_id))
    assert await referrals.list(agent) == []
    assert await referrals.get(agent, added.id) is None

    # the follow-up: an answered call since the referral, a note, an outcome of the kind's
    with pytest.raises(TaskError) as refused:
        await tasks.close(task.id, version=1, actor_staff_id=d.doctor_id, status="done",
                          note="已回访", outcome="seen", scope=doctor(d), at=NOW)
    assert refused.value.code == "no_evidence"
    await insert_call(pool, offered_at=NOW - timedelta(minutes=30), disposition="connected",
                      district_id=d.district_id, center_id=d.center_id, team_id=d.team_id,
                      answered_by=d.doctor_id, wait_s=4, resident_id=d.resident_id)
    with pytest.raises(TaskError) as no_outcome:
        await tasks.close(task.id, version=1, actor_staff_id=d.doctor_id, status="done",
                          note="已回访", scope=doctor(d), at=NOW)
    assert no_outcome.value.code == "bad_outcome"
    await tasks.close(task.id, version=1, actor_staff_id=d.doctor_id, status="done",
                      note="已回访，已住院治疗", outcome="admitted", scope=doctor(d), at=NOW)
    (listed,) = await referrals.list(doctor(d))
    assert (listed.followup_status, listed.followup_outcome) == ("done", "admitted")


async def test_a_resident_without_a_doctor_in_service_is_followed_up_by_the_duty_desk(
        pool: asyncpg.Pool, district: District) -> None:
    d = district
    # 刘建国's doctor (陈医生) has left: by the ownership rule the follow-up is the duty desk's
    # ("the duty desk when neither exists"), not the recorder's
    added = await Referrals(pool, SH).add(doctor(d), resident_id=d.orphan_id, hospital="区医院",
                                          department="骨科", reason="腰痛",
                                          referred_at=await working_morning(pool), now=NOW)
    task = await Tasks(pool).get(added.followup_task_id)
    assert task.owner_staff_id is None
    assert added.followup_owner_name is None


async def test_a_referral_at_night_is_the_duty_doctors_until_the_shift_change_at_eight(
        pool: asyncpg.Pool, vault: PiiVault, database_url: str) -> None:
    """"owned by the resident's family doctor (through the same ownership rule)": recorded at
    23:00 it is the night duty doctor's; the watcher's sweep after 08:00 passes it to the family
    doctor with an event saying why; the due time never moves."""
    from handover.watcher import Watcher
    week = date(2026, 11, 23)   # a Monday; night shifts every night
    d = await build_district(pool, vault, week_of=week)
    at = datetime(2026, 11, 24, 23, 0, tzinfo=SH)
    clock = at + timedelta(minutes=5)
    watcher = Watcher(pool, database_url, now=lambda: clock, routing=routing_source(pool, SH), tz=SH)
    await watcher.sweep()   # the night, as the watcher last applied it
    added = await Referrals(pool, SH).add(doctor(d), resident_id=d.resident_id, hospital="区人民医院",
                                          department="急诊科", reason="夜间胸痛", referred_at=at, now=clock)
    tasks = Tasks(pool)
    task = await tasks.get(added.followup_task_id)
    assert (task.owner_staff_id, task.due_at) == (d.night_id, at + timedelta(hours=72))
    clock = datetime(2026, 11, 25, 7, 59, 40, tzinfo=SH)
    await watcher.sweep()
    assert (await tasks.get(task.id)).owner_staff_id == d.night_id
    clock = datetime(2026, 11, 25, 8, 0, 20, tzinfo=SH)
    assert (await watcher.sweep()).shift.moved >= 1
    task = await tasks.get(task.id)
    assert (task.owner_staff_id, task.due_at) == (d.doctor_id, at + timedelta(hours=72))
    moved = (await tasks.history(task.id))[-1]
    assert (moved.event, moved.owner_from, moved.owner_to) == ("owner_changed", d.night_id, d.doctor_id)
    assert "night shift ended" in moved.reason
    await assert_promises_kept(pool, at - timedelta(hours=1), now=clock)   # the owner at every instant


@pytest.mark.parametrize(("fields", "code"), [
    ({"resident_id": 987654321}, "unknown_resident"),
    ({"reason": "长" * (1024 * 1024)}, "too_long"),
    ({"hospital": "医" * 201}, "too_long"),
    ({"reason": "nul\x00byte"}, "bad_text"),
    ({"department": "心内\x1b[31m科"}, "bad_text"),
    ({"hospital": "   "}, "required"),
    ({"referred_at": NOW + timedelta(hours=1)}, "bad_time"),
    ({"referred_at": NOW - timedelta(days=8)}, "bad_time"),
])
async def test_bad_input_is_refused_and_writes_nothing(pool: asyncpg.Pool, district: District,
                                                       fields: dict, code: str) -> None:
    before = await counts(pool)
    given = {"resident_id": district.resident_id, "hospital": "区人民医院", "department": "心内科",
             "reason": "胸闷", **fields}
    with pytest.raises(ReferralError) as refused:
        await Referrals(pool, SH).add(doctor(district), now=NOW, **given)
    assert refused.value.code == code
    assert await counts(pool) == before


async def test_a_resident_out_of_scope_is_unknown_and_hostile_text_is_kept_as_text(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    d = district
    async with pool.acquire() as conn, conn.transaction():
        other = await conn.fetchval("INSERT INTO districts (name) VALUES ('别区') RETURNING id")
        center = await conn.fetchval("INSERT INTO centers (district_id, name) VALUES ($1, '别中心') RETURNING id", other)
        (stranger_doctor,) = await write_staff(conn, vault, [NewStaff("X001", "别医生", "family_doctor", other, center)])
        today = date.today()
        (stranger,) = (await write_residents(conn, vault, [NewResident(
            "别居民", parse_id_number(id_number("19700101", "111")), center, ["13900009999"],
            stranger_doctor, None, (today - timedelta(days=5), today + timedelta(days=300)))])).ids
    before = await counts(pool)
    for resident in (stranger, 987654321):
        with pytest.raises(ReferralError) as refused:
            await Referrals(pool, SH).add(doctor(d), resident_id=resident, hospital="区医院",
                                          department="科", reason="因", now=NOW)
        assert (refused.value.code, refused.value.message) == ("unknown_resident", "没有这个居民")
    assert await counts(pool) == before
    hostile = "<script>alert('x')</script> ' OR 1=1; --"
    added = await Referrals(pool, SH).add(doctor(d), resident_id=d.resident_id, hospital=hostile,
                                          department="急诊", reason="多行\n原因\t制表", now=NOW)
    assert (added.hospital, added.reason) == (hostile, "多行\n原因\t制表")


# -- the CLI ---------------------------------------------------------------------------------------

async def test_cli_referrals_and_tasks(pool: asyncpg.Pool, district: District, cli_env: dict[str, str]) -> None:
    d = district
    added = run_cli(cli_env, "referrals", "add", "--resident", "13800000001", "--hospital", "区人民医院",
                    "--department", "心内科", "--reason", "胸闷待查", "--as", "D001", "--json",
                    "--at", (await working_morning(pool)).isoformat())
    assert added.returncode == 0, added.stderr
    referral = json.loads(added.stdout)
    task_id = referral["followup_task_id"]
    assert referral["followup_owner_name"] == "王医生"
    listed = run_cli(cli_env, "referrals", "list", "--doctor", "D001")
    assert listed.returncode == 0 and f"task #{task_id}" in listed.stdout and "区人民医院" in listed.stdout

    tasks = run_cli(cli_env, "tasks", "list", "--owner", "D001", "--kind", "referral_followup")
    assert tasks.returncode == 0 and str(task_id) in tasks.stdout and "转诊回访" in tasks.stdout
    noted = run_cli(cli_env, "tasks", "note", str(task_id), "--as", "D001", "--text", "已电话预约")
    assert noted.returncode == 0, noted.stderr
    refused = run_cli(cli_env, "tasks", "close", str(task_id), "--as", "D001", "--status", "done",
                      "--note", "已回访", "--outcome", "seen")
    assert refused.returncode == 1
    assert "没有任务开启后与居民接通的通话，不能标记为完成" in refused.stderr
    await insert_call(pool, offered_at=datetime.now(UTC), disposition="connected",
                      district_id=d.district_id, center_id=d.center_id, team_id=d.team_id,
                      answered_by=d.doctor_id, wait_s=3, resident_id=d.resident_id)
    closed = run_cli(cli_env, "tasks", "close", str(task_id), "--as", "D001", "--status", "done",
                     "--note", "已回访，已就诊", "--outcome", "seen")
    assert closed.returncode == 0, closed.stderr
    shown = run_cli(cli_env, "tasks", "show", str(task_id))
    assert shown.returncode == 0
    assert "已完成 · 已就诊" in shown.stdout and "已电话预约" in shown.stdout and "evidence" in shown.stdout
    assert "13800000001" not in shown.stdout + tasks.stdout + listed.stdout
    audited = {tuple(r) for r in await pool.fetch("SELECT action, subject FROM audit_log")}
    assert {("task.read", f"task:{task_id}"), ("tasks.listed", "task:*"),
            ("referrals.listed", "center:*")} <= audited

    for args, code, words in (
        (["referrals", "add", "--resident", "13911112222", "--hospital", "H", "--department", "D",
          "--reason", "R", "--as", "D001"], 1, "没有这个居民"),
        (["referrals", "add", "--resident", "13800000001", "--hospital", "H", "--department", "D",
          "--reason", "R", "--as", "G001"], 1, "不能登记转诊"),
        (["referrals", "add", "--resident", "13800000001", "--hospital", "H", "--department", "D",
          "--reason", "R", "--as", "D001", "--at", "yesterday"], 2, "--at"),
        (["tasks", "close", str(task_id), "--as", "D001", "--status", "done", "--note", "x"], 1, "任务已关闭"),
        (["tasks", "note", "999999", "--as", "D001", "--text", "x"], 1, "没有这个任务"),
        (["tasks", "note", str(task_id), "--as", "NOPE", "--text", "x"], 1, "没有这个工作人员"),
        (["tasks", "close", str(task_id), "--as", "D001", "--status", "finished", "--note", "x"], 2, "invalid choice"),
        (["tasks", "show"], 2, "task_id"),
    ):
        result = run_cli(cli_env, *args)
        assert result.returncode == code, (args, result.returncode, result.stderr)
        assert words in result.stderr, (args, result.stderr)


async def test_a_shared_number_names_the_one_holder_in_scope_or_asks_which(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    d = district
    referrals = Referrals(pool, SH)
    today = date.today()
    async with pool.acquire() as conn, conn.transaction():
        other = await conn.fetchval("INSERT INTO centers (district_id, name) VALUES ($1, '共用号码中心') RETURNING id",
                                    d.district_id)
        outside, spouse = (await write_residents(conn, vault, [
            NewResident("外中心居民", parse_id_number(id_number("19710101", "121")), other, ["13855556666"],
                        d.doctor_id, None, (today - timedelta(days=5), today + timedelta(days=300))),
            NewResident("张桂兰老伴", parse_id_number(id_number("19470101", "131")), d.center_id,
                        ["13877778888"], d.doctor_id, d.team_id, (today - timedelta(days=5), today + timedelta(days=300))),
        ])).ids
    assert await referrals.resident_in_scope(doctor(d), [d.resident_id, outside]) == d.resident_id
    with pytest.raises(ReferralError) as which:
        await referrals.resident_in_scope(doctor(d), [d.resident_id, spouse])
    assert which.value.code == "ambiguous_resident"
    with pytest.raises(ReferralError) as nobody:
        await referrals.resident_in_scope(doctor(d), [outside])
    assert nobody.value.code == "unknown_resident"
