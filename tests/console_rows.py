"""Known rows for the console's data tests: two centers, a viewer per role, calls and tasks.

tests/district.py builds one center and team; scope tests need another center (with its own
team and doctor) whose calls and tasks must never show, and a signed-in Viewer for every role.
Calls and tasks are inserted as rows (not through the call flow) so each test states exactly the
times and outcomes its hand-computed figures rest on.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import asyncpg

from routing.records import NewStaff, write_staff
from routing.scope import Scope, Viewer
from store.pii import PiiVault
from tests.district import District, build_district

_serial = itertools.count(1)


@dataclass(frozen=True)
class Places:
    d: District
    other_center_id: int
    other_team_id: int
    other_doctor_id: int       # family doctor of the other center's team
    second_team_id: int        # a second team of the first center
    second_team_doctor_id: int
    director_id: int           # director of the first center
    supervisor_id: int
    admin_id: int
    viewers: dict[str, Viewer]  # role -> a viewer of the first center's first team (or district)

    def scope(self, role: str) -> Scope:
        return Scope(self.viewers[role])


async def build_places(pool: asyncpg.Pool, vault: PiiVault, *, week_of: date) -> Places:
    d = await build_district(pool, vault, week_of=week_of)
    async with pool.acquire() as conn, conn.transaction():
        other_center = await conn.fetchval(
            "INSERT INTO centers (district_id, name) VALUES ($1, '另一街') RETURNING id", d.district_id)
        other_team = await conn.fetchval(
            "INSERT INTO teams (center_id, name) VALUES ($1, '另一团队') RETURNING id", other_center)
        second_team = await conn.fetchval(
            "INSERT INTO teams (center_id, name) VALUES ($1, '测试二团队') RETURNING id", d.center_id)
        other_doctor, second_doctor, director, supervisor, admin = await write_staff(conn, vault, [
            NewStaff("D901", "外中心医生", "family_doctor", d.district_id, other_center, other_team),
            NewStaff("D902", "二团队医生", "family_doctor", d.district_id, d.center_id, second_team),
            NewStaff("C001", "周主任", "director", d.district_id, d.center_id),
            NewStaff("Q001", "吴质控", "supervisor", d.district_id),
            NewStaff("M001", "郑管理员", "district_admin", d.district_id),
        ])
    rows = {r["id"]: r for r in await pool.fetch(
        "SELECT id, staff_no, name, role, district_id, center_id, team_id FROM staff")}

    def viewer(staff_id: int) -> Viewer:
        r = rows[staff_id]
        return Viewer(r["id"], r["staff_no"], r["name"], r["role"], r["district_id"],
                      r["center_id"], r["team_id"])

    viewers = {v.role: v for v in map(viewer, (
        d.doctor_id, d.assistant_id, d.night_id, d.agent_id, director, supervisor, admin))}
    return Places(d, other_center, other_team, other_doctor, second_team, second_doctor,
                  director, supervisor, admin, viewers)


async def insert_call(conn: asyncpg.Pool | asyncpg.Connection, *, offered_at: datetime,
                      disposition: str, district_id: int, center_id: int | None = None,
                      team_id: int | None = None, answered_by: int | None = None,
                      wait_s: float | None = None, rung: tuple[int, ...] = (),
                      resident_id: int | None = None, line: str | None = "022-12345",
                      masked: str = "138****0001") -> int:
    """A finished call; `wait_s` is the time to answer (connected_at - offered_at); `rung` the
    staff dialled in order (the one who answered, if among them, with outcome 'answered')."""
    connected = offered_at + timedelta(seconds=wait_s) if wait_s is not None else None
    call_id = await conn.fetchval(
        """INSERT INTO call_records (call_id, caller_number_masked, resident_id, offered_at,
                answered_at, connected_at, ended_at, disposition, line, district_id, center_id,
                team_id, answered_by)
           VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id""",
        f"call-{next(_serial)}@test", masked, resident_id, offered_at, connected,
        offered_at + timedelta(minutes=5), disposition, line, district_id, center_id, team_id,
        answered_by)
    for seq, staff_id in enumerate(rung, 1):
        await conn.execute(
            """INSERT INTO dial_attempts (call_record_id, seq, staff_id, sip_uri, started_at,
                    ended_at, outcome) VALUES ($1, $2, $3, 'sip:x@127.0.0.1', $4, $5, $6)""",
            call_id, seq, staff_id, offered_at, offered_at + timedelta(seconds=20),
            "answered" if staff_id == answered_by else "no_answer")
    return call_id


async def insert_task(conn: asyncpg.Pool | asyncpg.Connection, *, opened_at: datetime,
                      owner: int | None, resident_id: int | None = None,
                      due_at: datetime | None = None, status: str = "open",
                      closed_at: datetime | None = None, calls: tuple[int, ...] = (),
                      masked: str = "138****0001", district_id: int | None = None) -> int:
    """A callback task (due 8 h after `opened_at` unless given) with the missed calls behind it.
    A task nobody owns (the duty desk's) needs a missed call to say which district's desk it is
    for: given `district_id` and no `calls`, one is made, as the flow would have."""
    if not calls and district_id is not None:
        calls = (await insert_call(conn, offered_at=opened_at, disposition="missed",
                                   district_id=district_id, masked=masked),)
    key = f"number:{next(_serial)}"
    task_id = await conn.fetchval(
        """WITH t AS (INSERT INTO tasks (kind, caller_key, resident_id, caller_number_hash,
                caller_number_enc, caller_number_masked, owner_staff_id, opened_at, due_at, status,
                closed_at, close_note)
           VALUES ('callback', $1, $2, $3, '\\x00', $4, $5, $6, $7, $8, $9,
                   CASE WHEN $8 = 'open' THEN NULL ELSE '' END)
           RETURNING id, opened_at, owner_staff_id),
           e AS (INSERT INTO task_events (task_id, version, at, event, owner_to) SELECT id, 1, opened_at, 'opened', owner_staff_id FROM t)
           SELECT id FROM t""",
        key, resident_id, hashlib.sha256(key.encode()).digest(), masked, owner, opened_at,
        due_at or opened_at + timedelta(hours=8), status, closed_at)
    for call_id in calls:
        await conn.execute("INSERT INTO callback_calls (task_id, call_record_id) VALUES ($1, $2)",
                           task_id, call_id)
    return task_id


async def insert_voicemail(conn: asyncpg.Pool | asyncpg.Connection, *, task_id: int, call_id: int,
                           seconds: float, recorded_at: datetime) -> int:
    return await conn.fetchval(
        """INSERT INTO voicemails (task_id, call_record_id, path, seconds, sha256, recorded_at)
           VALUES ($1, $2, '/data/vm.wav', $3, $4, $5) RETURNING id""",
        task_id, call_id, seconds, "ab" * 32, recorded_at)
