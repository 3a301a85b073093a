"""handover/desk.py: the desk's open callback tasks, their countdown, calls, voicemails and scope."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from handover.desk import desk_query, open_tasks, seconds_left, urgency
from store.pii import PiiVault
from tests.console_rows import Places, build_places, insert_call, insert_task, insert_voicemail

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=SH)
H = timedelta(hours=1)


@pytest.fixture
async def places(pool: asyncpg.Pool, vault: PiiVault) -> Places:
    return await build_places(pool, vault, week_of=date(2026, 11, 22))


def due(offset: timedelta) -> dict[str, datetime]:
    """opened 8 h before the deadline `offset` from NOW."""
    return {"opened_at": NOW + offset - 8 * H, "due_at": NOW + offset}


async def test_my_tasks_due_soonest_first_with_calls_voicemails_and_countdown(
        pool: asyncpg.Pool, places: Places) -> None:
    d = places.d
    first = await insert_call(pool, offered_at=NOW - 7 * H, disposition="missed",
                              district_id=d.district_id, center_id=d.center_id,
                              team_id=d.team_id, resident_id=d.resident_id, line="022-1")
    again = await insert_call(pool, offered_at=NOW - 6 * H, disposition="abandoned",
                              district_id=d.district_id, center_id=d.center_id,
                              team_id=d.team_id, resident_id=d.resident_id, line="022-2")
    soon = await insert_task(pool, owner=d.doctor_id, resident_id=d.resident_id,
                             calls=(first, again), masked="138****0001", **due(H))
    vm = await insert_voicemail(pool, task_id=soon, call_id=again, seconds=12.5,
                                recorded_at=NOW - 6 * H + timedelta(seconds=30))
    late = await insert_task(pool, owner=d.doctor_id, masked="139****0009",
                             **due(-timedelta(minutes=30)))
    later = await insert_task(pool, owner=d.doctor_id, **due(5 * H))
    await insert_task(pool, owner=d.doctor_id, status="done", closed_at=NOW - H, **due(2 * H))
    await insert_task(pool, owner=d.assistant_id, **due(3 * H))           # the team's, not mine
    await insert_task(pool, owner=places.other_doctor_id, **due(H / 2))  # another center's
    await insert_task(pool, owner=None, district_id=d.district_id, **due(H / 4))                     # the desk's

    tasks = await open_tasks(pool, places.scope("family_doctor"), now=NOW)

    assert [t.id for t in tasks] == [late, soon, later]
    assert [t.seconds_left for t in tasks] == [-1800, 3600, 5 * 3600]
    assert [t.urgency for t in tasks] == ["overdue", "amber", "ok"]
    t = tasks[1]
    assert (t.caller_masked, t.resident_id, t.resident_name) == ("138****0001", d.resident_id, "张桂兰")
    assert (t.opened_at, t.due_at, t.owner_staff_id) == (NOW - 7 * H, NOW + H, d.doctor_id)
    assert [(c.call_id, c.offered_at, c.line, c.disposition) for c in t.calls] == [
        (first, NOW - 7 * H, "022-1", "missed"), (again, NOW - 6 * H, "022-2", "abandoned")]
    assert [(v.id, v.seconds, v.recorded_at) for v in t.voicemails] == [
        (vm, 12.5, NOW - 6 * H + timedelta(seconds=30))]
    assert tasks[0].resident_name is None and tasks[0].caller_masked == "139****0009"
    assert tasks[0].calls == () and tasks[0].voicemails == ()


async def test_urgency_boundaries(pool: asyncpg.Pool, places: Places) -> None:
    assert [urgency(s) for s in (7201, 7200, 7199, 3600, 3599, 1, 0, -1)] == [
        "ok", "ok", "amber", "amber", "red", "red", "red", "overdue"]
    half = timedelta(milliseconds=500)
    assert seconds_left(NOW - half, NOW) == -1 and seconds_left(NOW + half, NOW) == 0
    offsets = [2 * H, 2 * H - timedelta(seconds=1), H, H - timedelta(seconds=1),
               timedelta(0), -half, -timedelta(seconds=1)]
    ids = [await insert_task(pool, owner=places.d.doctor_id, **due(o)) for o in offsets]
    tasks = await open_tasks(pool, places.scope("family_doctor"), now=NOW)
    by_id = {t.id: (t.seconds_left, t.urgency) for t in tasks}
    assert [by_id[i] for i in ids] == [
        (7200, "ok"), (7199, "amber"), (3600, "amber"), (3599, "red"), (0, "red"),
        (-1, "overdue"), (-1, "overdue")]


async def test_the_agent_desk_holds_her_tasks_and_the_unowned_open_ones(
        pool: asyncpg.Pool, places: Places) -> None:
    d = places.d
    desk = await insert_task(pool, owner=None, district_id=d.district_id, **due(4 * H))
    mine = await insert_task(pool, owner=d.agent_id, **due(6 * H))
    await insert_task(pool, owner=None, district_id=d.district_id, status="done", closed_at=NOW - H, **due(H))
    await insert_task(pool, owner=None, district_id=d.district_id, status="cancelled", closed_at=NOW - H, **due(H))
    await insert_task(pool, owner=d.doctor_id, **due(H))
    await insert_task(pool, owner=places.other_doctor_id, **due(H))

    tasks = await open_tasks(pool, places.scope("agent"), now=NOW)
    assert [t.id for t in tasks] == [desk, mine]
    assert [t.id for t in await open_tasks(pool, places.scope("agent"), owner_only=False,
                                           now=NOW)] == [desk, mine]
    assert await open_tasks(pool, places.scope("family_doctor"), now=NOW) != []
    assert [t.id for t in await open_tasks(pool, places.scope("agent"), limit=1, now=NOW)] == [desk]


async def test_every_role_sees_only_the_open_tasks_of_its_scope(
        pool: asyncpg.Pool, places: Places) -> None:
    d = places.d
    tasks = {
        "doctor": await insert_task(pool, owner=d.doctor_id, **due(1 * H)),
        "assistant": await insert_task(pool, owner=d.assistant_id, **due(2 * H)),
        "second_team": await insert_task(pool, owner=places.second_team_doctor_id, **due(3 * H)),
        "other_center": await insert_task(pool, owner=places.other_doctor_id, **due(4 * H)),
        "night": await insert_task(pool, owner=d.night_id, **due(5 * H)),
        "desk": await insert_task(pool, owner=None, district_id=d.district_id, **due(6 * H)),
        "desk_resident": await insert_task(pool, owner=None, district_id=d.district_id, resident_id=d.resident_id,
                                           **due(7 * H)),
    }
    expected = {
        "family_doctor": ["doctor", "assistant"],
        "assistant": ["doctor", "assistant"],
        "night_doctor": ["night"],
        "agent": ["desk", "desk_resident"],
        "director": ["doctor", "assistant", "second_team", "night", "desk_resident"],
        "supervisor": list(tasks),
        "district_admin": list(tasks),
    }
    for role, names in expected.items():
        seen = [t.id for t in await open_tasks(pool, places.scope(role), owner_only=False, now=NOW)]
        assert seen == [tasks[n] for n in names], role
        if role not in ("supervisor", "district_admin"):
            assert tasks["other_center"] not in seen, role


class CountingPool:
    """Counts the queries a function sends, so an N+1 shows as a number."""

    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool
        self.queries = 0

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        self.queries += 1
        return await self.pool.fetch(sql, *args)


async def test_two_queries_whatever_the_number_of_tasks(pool: asyncpg.Pool, places: Places) -> None:
    d = places.d
    for i in range(30):
        call = await insert_call(pool, offered_at=NOW - 7 * H, disposition="missed",
                                 district_id=d.district_id, team_id=d.team_id)
        task = await insert_task(pool, owner=d.doctor_id, calls=(call,),
                                 **due(H + timedelta(minutes=i)))
        await insert_voicemail(pool, task_id=task, call_id=call, seconds=3, recorded_at=NOW - 7 * H)
    counting = CountingPool(pool)
    tasks = await open_tasks(counting, places.scope("family_doctor"), now=NOW)  # type: ignore[arg-type]
    assert len(tasks) == 30 and all(len(t.calls) == 1 and len(t.voicemails) == 1 for t in tasks)
    assert counting.queries == 2
    counting = CountingPool(pool)
    assert await open_tasks(counting, places.scope("night_doctor"), now=NOW) == []  # type: ignore[arg-type]
    assert counting.queries == 1


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    nodes = [plan]
    for child in plan.get("Plans", []):
        nodes.extend(plan_nodes(child))
    return nodes


async def test_the_desk_reads_the_owner_index_among_200000_tasks(
        pool: asyncpg.Pool, places: Places) -> None:
    d = places.d
    # 200 000 open tasks: most are other doctors', 1 in 50 the desk's, 1 in 1000 the doctor's,
    # 1 in 999 the agent's own.
    others = [places.other_doctor_id, places.second_team_doctor_id, d.assistant_id]
    await pool.execute(
        """WITH t AS (INSERT INTO tasks (kind, caller_key, caller_number_hash, caller_number_enc,
                caller_number_masked, owner_staff_id, opened_at, due_at)
           SELECT 'callback', 'bulk:' || i, '\\x00', '\\x00', '138****0000',
                  CASE WHEN i % 1000 = 0 THEN $1::int WHEN i % 999 = 0 THEN $2::int
                       WHEN i % 50 = 0 THEN NULL ELSE ($3::int[])[1 + i % 3] END,
                  $4::timestamptz - interval '8 hours' + i * interval '1 second',
                  $4::timestamptz + i * interval '1 second'
             FROM generate_series(1, 200000) i
           RETURNING id, opened_at, owner_staff_id)
           INSERT INTO task_events (task_id, version, at, event, owner_to) SELECT id, 1, opened_at, 'opened', owner_staff_id FROM t""",
        d.doctor_id, d.agent_id, others, NOW)
    # the desk's tasks come from missed calls in this district (which desk they are for)
    await pool.execute(
        """WITH desk AS (SELECT id, opened_at FROM tasks WHERE owner_staff_id IS NULL),
                calls AS (INSERT INTO call_records (call_id, offered_at, disposition, district_id)
                          SELECT 'bulk-desk-' || id, opened_at, 'missed', $1 FROM desk
                          RETURNING id, call_id)
           INSERT INTO callback_calls (task_id, call_record_id)
           SELECT substr(call_id, 11)::bigint, id FROM calls""", d.district_id)
    await pool.execute("ANALYZE tasks")
    await pool.execute("ANALYZE callback_calls")
    await pool.execute("ANALYZE call_records")
    for role, owners in (("family_doctor", {d.doctor_id}), ("agent", {d.agent_id, None})):
        sql, values = desk_query(places.scope(role), owner_only=True, limit=200)
        plan = json.loads(await pool.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *values))[0]["Plan"]
        nodes = plan_nodes(plan)
        # tasks is reached through the owner index only (an index scan in due order, or
        # a bitmap of the owner's few tasks), never read whole, and nothing big is sorted
        assert not [n for n in nodes if n["Node Type"] == "Seq Scan"
                    and n.get("Relation Name") == "tasks"], plan
        indexes = {n["Index Name"] for n in nodes
                   if n.get("Index Name", "").startswith("tasks")}
        assert indexes == {"tasks_owner"}, plan
        assert not any(n["Node Type"] == "Sort" and n.get("Plan Rows", 0) > 1000 for n in nodes)
        tasks = await open_tasks(pool, places.scope(role), now=NOW)
        assert len(tasks) == 200
        assert [t.due_at for t in tasks] == sorted(t.due_at for t in tasks)
        assert {t.owner_staff_id for t in tasks} == owners
