"""The deadline watcher (handover/watcher.py) on a real PostgreSQL: the warning an hour before,
the breach at the deadline seen in one sweep and escalated once to the team lead and the
director, two watchers on one database with exactly one acting, and the other taking over within
10 s when the leader's connection is killed."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from handover.ownership import routing_source
from handover.watcher import Watcher, breach_due, warn_due
from store.pii import PiiVault
from tests.district import District
from tests.test_ownership import WEEK
from tests.test_tasks import missed

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 24, 9, 0, tzinfo=SH)   # a missed call at 09:00, due 17:00
DUE = T0 + timedelta(hours=8)


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    from tests.district import build_district
    d = await build_district(pool, vault, week_of=WEEK)
    await pool.execute("""INSERT INTO staff (staff_no, name, role, district_id, center_id)
                          VALUES ('M001', '周主任', 'director', $1, $2)""", d.district_id, d.center_id)
    return d


async def director(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT id FROM staff WHERE staff_no = 'M001'")


async def events(pool: asyncpg.Pool, task_id: int) -> list[tuple]:
    return [tuple(r) for r in await pool.fetch(
        "SELECT event, at FROM task_events WHERE task_id = $1 ORDER BY version", task_id)]


class Clock:
    def __init__(self, at: datetime):
        self.at = at

    def now(self) -> datetime:
        return self.at


def watcher(pool: asyncpg.Pool, url: str, clock: Clock, node: str, **kw) -> Watcher:
    return Watcher(pool, url, now=clock.now, routing=routing_source(pool, SH), tz=SH, node=node, **kw)


async def test_a_warning_an_hour_before_and_the_breach_seen_in_one_sweep_escalated_once(
        pool: asyncpg.Pool, database_url: str, vault: PiiVault, district: District) -> None:
    d = district
    task_id = await missed(pool, vault, d, "t-1", T0, owner=d.doctor_id)
    clock = Clock(DUE - timedelta(hours=1, seconds=1))
    w = watcher(pool, database_url, clock, "a")
    assert (await w.sweep()).warned == 0
    clock.at = DUE - timedelta(minutes=59, seconds=40)
    assert (await w.sweep()).warned == 1
    assert (await w.sweep()).warned == 0   # once
    task = await pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
    assert task["warned_at"] == clock.at and task["overdue_at"] is None

    clock.at = DUE   # a task closed at its deadline is on time: not yet a breach
    assert (await w.sweep()).breached == 0
    clock.at = DUE + timedelta(seconds=20)   # the next sweep, ≤ 30 s later
    swept = await w.sweep()
    assert (swept.breached, swept.escalated) == (1, 1)
    task = await pool.fetchrow("SELECT * FROM tasks WHERE id = $1", task_id)
    assert task["overdue_at"] == DUE and task["escalated_at"] == clock.at and task["due_at"] == DUE
    # 17:00 is also the end of the day window: the task passed to the night duty doctor then
    assert [e for e, _ in await events(pool, task_id)] == [
        "opened", "warned", "owner_changed", "overdue", "escalated"]
    assert dict(await events(pool, task_id))["overdue"] == DUE
    recipients = {(r["staff_id"], r["role"]) for r in await pool.fetch(
        "SELECT staff_id, role FROM task_escalations WHERE task_id = $1", task_id)}
    assert recipients == {(d.doctor_id, "team_lead"), (await director(pool), "director")}
    detail = await pool.fetchval(
        "SELECT detail FROM task_events WHERE task_id = $1 AND event = 'escalated'", task_id)
    assert json.loads(detail)["team_lead"] == d.doctor_id

    for _ in range(3):
        again = await w.sweep()
        assert (again.warned, again.breached, again.escalated) == (0, 0, 0)


async def test_two_watchers_racing_on_the_same_breaches_escalate_each_task_once(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    d = district
    for k in range(30):
        await missed(pool, vault, d, f"t-{k}", T0 + timedelta(minutes=k), owner=d.doctor_id)
    # (one caller: the 30 missed calls are one callback task) and 30 follow-ups due at 10:00
    from handover.tasks import Tasks
    for k in range(30):
        await Tasks(pool).open(kind="referral_followup", owner_staff_id=d.doctor_id, opened_at=T0,
                               due_at=T0 + timedelta(hours=1, seconds=k), resident_id=d.resident_id)
    later = T0 + timedelta(hours=9)

    async def one() -> tuple[int, int]:
        async with pool.acquire() as conn:
            await warn_due(conn, later - timedelta(hours=8, minutes=30))
            return await breach_due(conn, later, SH)

    results = await asyncio.gather(*(one() for _ in range(4)))
    assert sum(r[1] for r in results) == 31
    counts = await pool.fetch(
        "SELECT event, count(*) AS n, count(DISTINCT task_id) AS tasks FROM task_events"
        " WHERE event IN ('overdue', 'escalated', 'warned') GROUP BY event ORDER BY event")
    assert [(r["event"], r["n"], r["tasks"]) for r in counts] == [
        ("escalated", 31, 31), ("overdue", 31, 31), ("warned", 30, 30)]
    assert await pool.fetchval("SELECT count(*) FROM task_escalations") == 62


async def wait_for(predicate, within: float) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not predicate():
        if loop.time() - started > within:
            raise AssertionError(f"not within {within} s")
        await asyncio.sleep(0.05)
    return loop.time() - started


async def test_one_of_two_watchers_acts_and_the_other_takes_over_when_its_connection_dies(
        pool: asyncpg.Pool, database_url: str, vault: PiiVault, district: District) -> None:
    d = district
    task_id = await missed(pool, vault, d, "t-1", T0, owner=d.doctor_id)
    clock = Clock(DUE - timedelta(minutes=5))
    a = watcher(pool, database_url, clock, "a", sweep_s=0.2, poll_s=0.5)
    b = watcher(pool, database_url, clock, "b", sweep_s=0.2, poll_s=0.5)
    a.start()
    b.start()
    try:
        await wait_for(lambda: a.leading or b.leading, 5)
        await asyncio.sleep(1.5)   # several polls: still exactly one
        assert [a.leading, b.leading].count(True) == 1
        leader, other = (a, b) if a.leading else (b, a)
        await wait_for(lambda: leader.sweeps >= 2, 5)
        assert other.sweeps == 0

        # the leader's lock connection is cut (PostgreSQL restarted it, a network blip): the lock
        # goes with it; within 10 s one of the two leads again, never both
        await pool.execute("SELECT pg_terminate_backend($1)", leader.lock_backend_pid)
        await wait_for(lambda: a.leading or b.leading, 10)
        await asyncio.sleep(1.0)
        assert [a.leading, b.leading].count(True) == 1

        # the leader's node dies: its connection goes and it never comes back
        leader, other = (a, b) if a.leading else (b, a)
        await pool.execute("SELECT pg_terminate_backend($1)", leader.lock_backend_pid)
        await leader.stop()
        clock.at = DUE + timedelta(seconds=1)   # and the deadline passes meanwhile
        swept_before = other.sweeps
        took = await wait_for(lambda: other.leading, 10)
        assert took < 10
        await wait_for(lambda: other.sweeps > swept_before and other.last is not None
                       and other.last.at >= DUE + timedelta(seconds=1), 5)
        assert await pool.fetchval("SELECT overdue_at FROM tasks WHERE id = $1", task_id) == DUE
    finally:
        await a.stop()
        await b.stop()
    assert await pool.fetchval(
        "SELECT count(*) FROM task_events WHERE task_id = $1 AND event = 'escalated'", task_id) == 1


async def test_the_escalated_tasks_are_on_the_team_leads_and_the_directors_desk(
        pool: asyncpg.Pool, redis, vault: PiiVault, district: District) -> None:
    from handover.desk import escalated_tasks
    from routing.scope import Scope, Viewer
    from tests.console import open_console

    d = district
    night_call = datetime(2026, 11, 23, 20, 0, tzinfo=SH)   # the duty doctor's, due 04:00
    task_id = await missed(pool, vault, d, "t-1", night_call, owner=d.night_id)
    masked = await pool.fetchval("SELECT caller_number_masked FROM tasks WHERE id = $1", task_id)
    async with open_console(pool, redis, vault, d) as console:
        lead = await console.new_staff("family_doctor", name="团队长")
        other = await console.new_staff("family_doctor", name="别的医生")
        boss = await console.new_staff("director", name="主任")
        await pool.execute("UPDATE teams SET lead_staff_id = $1 WHERE id = $2", lead.staff_id, d.team_id)
        async with pool.acquire() as conn:
            assert await breach_due(conn, night_call + timedelta(hours=8, seconds=30), SH) == (1, 1)

        # the lead sees the duty doctor's task of her team's resident (in her scope now)
        viewer = Scope(Viewer(lead.staff_id, lead.staff_no, "团队长", "family_doctor", d.district_id,
                              d.center_id, d.team_id))
        [seen] = await escalated_tasks(pool, viewer)
        assert (seen.id, seen.role, seen.owner_name, seen.kind_title) == (task_id, "team_lead", "赵医生", "未接来电回拨")
        for login, shown in ((lead, True), (boss, True), (other, False)):
            client = await console.signed_in(login)
            page = (await client.get("/desk")).text
            assert ("已超时升级" in page and masked in page) == shown, login.role


async def test_the_boards_figures_agree_with_the_watcher_at_the_deadline(
        pool: asyncpg.Pool, vault: PiiVault, district: District) -> None:
    from recordings.figures import day_figures
    from routing.scope import Scope, Viewer

    d = district
    await missed(pool, vault, d, "t-1", T0, owner=d.doctor_id)
    admin = Scope(Viewer(1, "X1", "x", "district_admin", d.district_id))

    async def figures(at: datetime) -> tuple[int, int, int]:
        f = (await day_figures(pool, admin, at.date(), now=at)).district
        return f.callbacks_open, f.callbacks_due_1h, f.callbacks_overdue

    assert await figures(DUE - timedelta(hours=1, seconds=1)) == (1, 0, 0)
    assert await figures(DUE - timedelta(hours=1)) == (1, 1, 0)   # the warning's instant
    assert await figures(DUE) == (1, 1, 0)                        # at the deadline: not late yet
    async with pool.acquire() as conn:
        assert await breach_due(conn, DUE, SH) == (0, 0)
        assert await breach_due(conn, DUE + timedelta(seconds=1), SH) == (1, 1)
    assert await figures(DUE + timedelta(seconds=1)) == (1, 0, 1)
