"""Ownership follows the shift (handover/ownership.py): the rule on its own (pure, made-up roster),
then the shift change moving real tasks in PostgreSQL — a 02:00 missed call owned by the duty
doctor until 08:00 and by the family doctor from then on, leave, a roster swap — with an event
saying why and the due time untouched."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from handover.ownership import (
    center_rule,
    follow_shifts,
    responsibility,
    responsible,
    routing_source,
    subject,
)
from routing.calendar import WorkingCalendar
from routing.calendar_store import load_calendar
from routing.chain import DutyShift, Leave, RoutingData
from routing.people import Caller, Contract, StaffMember
from store.pii import PiiVault
from tests.district import District, build_district
from tests.test_tasks import missed

SH = ZoneInfo("Asia/Shanghai")
WEEK = date(2026, 11, 22)                       # a Sunday; 11-24 is a Tuesday
T0 = datetime(2026, 11, 24, 2, 0, tzinfo=SH)   # a missed call at 02:00 (due 10:00)

# -- the rule, pure --------------------------------------------------------------------------

DOCTOR = StaffMember(1, "王医生", "family_doctor", "sip:1001@x", 10, 100, None, 1)
NIGHT = StaffMember(2, "赵医生", "night_doctor", "sip:3001@x", 10, None, None, 1)
NIGHT2 = StaffMember(3, "钱医生", "night_doctor", "sip:3002@x", 10, None, None, 1)
BACKUP = StaffMember(4, "孙医生", "night_doctor", "sip:3003@x", None, None, None, 1)
RESIDENT = Caller(7, "张桂兰", 10, 1, (Contract(DOCTOR, date(2026, 1, 1), date(2026, 12, 31)),))


def shift(who: StaffMember, day: int, *, kind: str = "duty", center: int | None = 10,
          swapped_from: str | None = None) -> DutyShift:
    start = datetime(2026, 11, day, 17, tzinfo=SH)
    return DutyShift(who, start, start + timedelta(hours=15), center, 1, kind, 1, swapped_from)


def data(*shifts: DutyShift, leaves: tuple[Leave, ...] = ()) -> RoutingData:
    by: dict[int, tuple[Leave, ...]] = {}
    for lv in leaves:
        by[lv.staff_id] = (*by.get(lv.staff_id, ()), lv)
    return RoutingData(calendar=WorkingCalendar(years=[2026]), shifts=shifts, leaves=by, tz=SH)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=SH)


def test_the_family_doctor_by_day_the_duty_doctor_by_night() -> None:
    d = data(shift(NIGHT, 23), shift(NIGHT, 24))
    night = responsible(RESIDENT, at(24, 2), d)
    assert night.staff_id == NIGHT.id and night.title.startswith("night duty doctor 赵医生")
    assert responsible(RESIDENT, at(24, 7, 59), d).staff_id == NIGHT.id
    day = responsible(RESIDENT, at(24, 8), d)
    assert (day.staff_id, day.title) == (DOCTOR.id, "family doctor 王医生")
    assert responsible(RESIDENT, at(24, 16, 59), d).staff_id == DOCTOR.id
    assert responsible(RESIDENT, at(24, 17), d).staff_id == NIGHT.id
    # a Saturday afternoon is night service: the duty doctor, were there one; a roster gap: desk
    gap = responsible(RESIDENT, at(28, 14), d)
    assert gap.staff_id is None and gap.title.startswith("duty desk")


def test_leave_and_swaps_count_and_the_desk_when_nobody_is_there() -> None:
    leave = Leave(DOCTOR.id, date(2026, 11, 24), date(2026, 11, 25), "病假")
    d = data(shift(NIGHT, 23), shift(NIGHT, 24), leaves=(leave,))
    on_leave = responsible(RESIDENT, at(24, 10), d)
    assert on_leave.staff_id is None and "王医生 on leave until 11-25 (病假)" in on_leave.reason
    assert responsible(RESIDENT, at(26, 10), d).staff_id == DOCTOR.id
    # the duty doctor on leave: the backup takes the night
    d = data(shift(NIGHT, 24), shift(BACKUP, 24, kind="backup", center=None),
             leaves=(Leave(NIGHT.id, date(2026, 11, 24), date(2026, 11, 24)),))
    backup = responsible(RESIDENT, at(24, 20), d)
    assert backup.staff_id == BACKUP.id and "赵医生 on leave" in backup.title
    # a swap is in the roster: the doctor swapped in holds the night
    swapped = responsible(RESIDENT, at(24, 20), data(shift(NIGHT2, 24, swapped_from="赵医生")))
    assert swapped.staff_id == NIGHT2.id and "swapped from 赵医生" in swapped.title
    # no contract in force, or an unknown number: the desk by day
    stranger = Caller(8, "刘建国", 10, 1, ())
    assert responsible(stranger, at(24, 10), d).staff_id is None
    assert responsible(None, at(24, 10), d).staff_id is None
    gone = Caller(9, "李", 10, 1, (Contract(StaffMember(5, "陈医生", "family_doctor", None, 10, 100,
                                                        date(2026, 10, 1), 1),
                                            date(2026, 1, 1), date(2026, 12, 31)),))
    assert responsible(gone, at(24, 10), d).staff_id is None


def test_the_rule_needs_an_aware_instant() -> None:
    with pytest.raises(ValueError):
        center_rule(10, 1, datetime(2026, 11, 24, 2), data())


# -- the shift change in PostgreSQL -----------------------------------------------------------

@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    return await build_district(pool, vault, week_of=WEEK)


async def shift_change(pool: asyncpg.Pool, when: datetime):
    source = routing_source(pool, SH)
    async with pool.acquire() as conn:
        now = await responsibility(conn, when, await source(when))
        return await follow_shifts(conn, now, SH)


async def owner_events(pool: asyncpg.Pool, task_id: int) -> list[tuple]:
    return [tuple(r) for r in await pool.fetch(
        """SELECT event, owner_from, owner_to, reason, at FROM task_events
            WHERE task_id = $1 AND event = 'owner_changed' ORDER BY version""", task_id)]


async def test_a_missed_call_at_two_is_the_duty_doctors_until_eight_then_the_family_doctors(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    d = district
    source = routing_source(pool, SH)
    caller = await subject(pool, d.resident_id)
    # the flow gives a new task this owner (ivr.flow.callback_owner)
    assert responsible(caller, T0, await source(T0)).staff_id == d.night_id
    task_id = await missed(pool, vault, d, "t-1", T0, owner=d.night_id)
    first = await shift_change(pool, T0 + timedelta(seconds=20))   # the first state: nothing to move
    assert first.moved == 0
    assert (await shift_change(pool, T0 + timedelta(hours=5, minutes=59))).moved == 0
    assert await pool.fetchval("SELECT owner_staff_id FROM tasks WHERE id = $1", task_id) == d.night_id

    eight = datetime(2026, 11, 24, 8, 0, 15, tzinfo=SH)
    change = await shift_change(pool, eight)
    assert change.moved == 1 and change.centers == (d.center_id,)
    task = await pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
    assert task["owner_staff_id"] == d.doctor_id and task["due_at"] == T0 + timedelta(hours=8)
    assert await owner_events(pool, task_id) == [
        ("owner_changed", d.night_id, d.doctor_id, "night shift ended 08:00 → family doctor 王医生", eight)]
    # nothing more to move until the day window ends; at 17:00 the night doctor again
    assert (await shift_change(pool, eight + timedelta(minutes=30))).moved == 0
    evening = datetime(2026, 11, 24, 17, 0, 10, tzinfo=SH)
    assert (await shift_change(pool, evening)).moved == 1
    events = await owner_events(pool, task_id)
    assert events[-1][:3] == ("owner_changed", d.doctor_id, d.night_id)
    assert events[-1][3].startswith("day window ended 17:00 → night duty doctor 赵医生")
    # the version counts every event and the database checked each had one
    assert await pool.fetchval("SELECT version FROM tasks WHERE id = $1", task_id) == 3


async def test_leave_moves_the_doctors_tasks_to_the_desk_and_back(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    d = district
    ten = datetime(2026, 11, 24, 10, 0, tzinfo=SH)
    task_id = await missed(pool, vault, d, "t-1", ten - timedelta(minutes=30), owner=d.doctor_id)
    await shift_change(pool, ten)
    await pool.execute("INSERT INTO staff_leaves (staff_id, starts_on, ends_on, reason)"
                       " VALUES ($1, '2026-11-24', '2026-11-24', '病假')", d.doctor_id)
    assert (await shift_change(pool, ten + timedelta(minutes=1))).moved == 1
    assert await pool.fetchval("SELECT owner_staff_id FROM tasks WHERE id = $1", task_id) is None
    assert (await owner_events(pool, task_id))[-1][3] == "王医生 on leave until 11-24 (病假) → duty desk"
    # the next working morning she is back
    back = datetime(2026, 11, 25, 8, 0, 5, tzinfo=SH)
    await shift_change(pool, datetime(2026, 11, 24, 20, tzinfo=SH))   # the night: the duty doctor
    assert await pool.fetchval("SELECT owner_staff_id FROM tasks WHERE id = $1", task_id) == d.night_id
    await shift_change(pool, back)
    assert await pool.fetchval("SELECT owner_staff_id FROM tasks WHERE id = $1", task_id) == d.doctor_id


async def test_a_roster_swap_moves_the_nights_tasks_to_the_doctor_swapped_in(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    d = district
    task_id = await missed(pool, vault, d, "t-1", T0, owner=d.night_id)
    await shift_change(pool, T0 + timedelta(seconds=5))
    other = await pool.fetchval(
        """INSERT INTO staff (staff_no, name, role, district_id, center_id, sip_uri)
           VALUES ('N002', '钱医生', 'night_doctor', $1, $2, 'sip:3002@127.0.0.1') RETURNING id""",
        d.district_id, d.center_id)
    await pool.execute(
        """UPDATE duty_shifts SET doctor_id = $1, swapped_from = doctor_id
            WHERE doctor_id = $2 AND tstzrange(starts_at, ends_at) @> $3::timestamptz""",
        other, d.night_id, T0)
    when = T0 + timedelta(minutes=10)
    assert (await shift_change(pool, when)).moved == 1
    task = await pool.fetchrow("SELECT owner_staff_id, due_at FROM tasks WHERE id = $1", task_id)
    assert (task["owner_staff_id"], task["due_at"]) == (other, T0 + timedelta(hours=8))
    reason = (await owner_events(pool, task_id))[-1][3]
    assert reason.startswith("night duty changed → night duty doctor 钱医生") and "swapped from 赵医生" in reason


async def test_a_reassignment_by_hand_stands_until_the_next_shift_change(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    from handover.tasks import Tasks
    d = district
    task_id = await missed(pool, vault, d, "t-1", T0, owner=d.night_id)
    await shift_change(pool, T0)
    await Tasks(pool).reassign(task_id, version=1, actor_staff_id=d.agent_id, to_staff_id=d.assistant_id,
                               reason="李助理先联系", at=T0 + timedelta(minutes=5))
    assert (await shift_change(pool, T0 + timedelta(minutes=10))).moved == 0
    assert await pool.fetchval("SELECT owner_staff_id FROM tasks WHERE id = $1", task_id) == d.assistant_id
    await shift_change(pool, datetime(2026, 11, 24, 8, 0, 10, tzinfo=SH))
    assert await pool.fetchval("SELECT owner_staff_id FROM tasks WHERE id = $1", task_id) == d.doctor_id


async def test_the_calendar_of_the_database_is_the_one_the_rule_reads(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    # 2026-10-01 (国庆节) at 10:00 is night service: the duty doctor's, were there a shift
    async with pool.acquire() as conn:
        calendar = await load_calendar(conn, tz=SH)
    rule = center_rule(district.center_id, district.district_id, datetime(2026, 10, 1, 10, tzinfo=SH),
                       RoutingData(calendar=calendar, tz=SH))
    assert not rule.day and "国庆节" in rule.why and rule.night is not None and rule.night.staff_id is None


def test_a_new_callback_gets_the_rules_owner_and_without_routing_data_the_first_rung() -> None:
    from ivr.flow import callback_owner
    from routing.chain import route_chain

    d = data(shift(NIGHT, 23), shift(NIGHT, 24))
    assert callback_owner(RESIDENT, d, at(24, 2)) == NIGHT.id      # not the family doctor at 02:00
    assert callback_owner(RESIDENT, d, at(24, 10)) == DOCTOR.id
    assert callback_owner(None, d, at(24, 10)) is None             # an unknown caller: the desk
    decision = route_chain(RESIDENT, at(24, 2), d)
    assert callback_owner(RESIDENT, None, at(24, 2), decision) == NIGHT.id
    assert callback_owner(RESIDENT, None, at(24, 2)) is None


async def test_a_task_being_written_at_the_shift_change_still_moves_after_the_write(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    import asyncio

    from handover.tasks import Task, change
    d = district
    task_id = await missed(pool, vault, d, "t-1", T0, owner=d.night_id)
    await shift_change(pool, T0 + timedelta(seconds=5))
    eight = datetime(2026, 11, 24, 8, 0, 20, tzinfo=SH)
    async with pool.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        row = await conn.fetchrow("SELECT * FROM tasks WHERE id = $1 FOR UPDATE", task_id)
        task = Task.from_row(row)
        await change(conn, task, event="note", at=eight, actor_staff_id=d.night_id, detail={"text": "交班前已联系"})
        moving = asyncio.create_task(shift_change(pool, eight))
        await asyncio.sleep(0.3)
        assert not moving.done()    # waits for the note's transaction
        await tr.commit()
    assert (await moving).moved == 1
    events = [r["event"] for r in await pool.fetch(
        "SELECT event FROM task_events WHERE task_id = $1 ORDER BY version", task_id)]
    assert events == ["opened", "note", "owner_changed"]
    assert await pool.fetchval("SELECT owner_staff_id FROM tasks WHERE id = $1", task_id) == d.doctor_id
