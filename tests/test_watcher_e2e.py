"""Two service nodes' watchers in processes of their own on one database: one acts; killed with
SIGKILL in the middle of its sweeps, the other takes over within 10 s, and no task is escalated
twice or left unescalated."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from store.pii import PiiVault
from tests.conftest import ROOT
from tests.district import District, build_district
from tests.test_ownership import WEEK

SH = ZoneInfo("Asia/Shanghai")
TASKS = 600


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    return await build_district(pool, vault, week_of=WEEK)


class Node:
    def __init__(self, proc: asyncio.subprocess.Process, name: str):
        self.proc, self.name = proc, name
        self.leading = asyncio.Event()
        self.sweeps = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode().split()
            if line[:1] == ["leading"]:
                self.leading.set()
            elif line[:1] == ["swept"]:
                self.sweeps = int(line[2])

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        self.reader.cancel()


async def start_node(url: str, start: datetime, name: str) -> Node:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.watcher_node", url, start.isoformat(), name, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "HOTLINE_LOG_LEVEL": "warning"})
    return Node(proc, name)


async def test_the_leader_killed_mid_sweep_is_replaced_and_nothing_is_escalated_twice(
        pool: asyncpg.Pool, database_url: str, district: District) -> None:
    d = district
    start = datetime(2026, 11, 24, 10, 0, tzinfo=SH)
    # TASKS follow-ups coming due one every 20 ms from 2 s after the clock starts: each sweep
    # breaches and escalates a batch, so the kill lands in the middle of the work
    await pool.execute(
        """WITH t AS (
               INSERT INTO tasks (kind, caller_key, resident_id, owner_staff_id, opened_at, due_at)
               SELECT 'referral_followup', 'r:' || n, $1, $2, $3::timestamptz - interval '72 hours',
                      $3::timestamptz + n * interval '20 milliseconds'
                 FROM generate_series(1, $4) n RETURNING id, opened_at, owner_staff_id)
           INSERT INTO task_events (task_id, version, at, event, owner_to)
           SELECT id, 1, opened_at, 'opened', owner_staff_id FROM t""",
        d.resident_id, d.doctor_id, start + timedelta(seconds=2), TASKS)
    a = await start_node(database_url, start, "a")
    b = await start_node(database_url, start, "b")
    try:
        first = await asyncio.wait_for(
            asyncio.wait([asyncio.create_task(a.leading.wait()), asyncio.create_task(b.leading.wait())],
                         return_when=asyncio.FIRST_COMPLETED), 30)
        assert first
        leader, other = (a, b) if a.leading.is_set() else (b, a)
        # let it work through part of the breaches, then kill it without warning
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while loop.time() < deadline:
            done = await pool.fetchval("SELECT count(*) FROM tasks WHERE escalated_at IS NOT NULL")
            if done >= TASKS // 4:
                break
            await asyncio.sleep(0.05)
        assert not other.leading.is_set()
        leader.proc.send_signal(signal.SIGKILL)
        killed_at = loop.time()
        await asyncio.wait_for(other.leading.wait(), 10)
        assert loop.time() - killed_at < 10
        # every task comes due within 2 s + TASKS × 20 ms of the start; the survivor finishes
        while loop.time() < deadline + 30:
            if await pool.fetchval("SELECT count(*) FROM tasks WHERE escalated_at IS NULL") == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        await a.stop()
        await b.stop()
    per_task = await pool.fetch(
        """SELECT t.id, count(e.id) FILTER (WHERE e.event = 'escalated') AS escalated,
                  count(e.id) FILTER (WHERE e.event = 'overdue') AS overdue,
                  count(DISTINCT e.version) = count(e.id) AS unique_versions
             FROM tasks t JOIN task_events e ON e.task_id = t.id GROUP BY t.id""")
    assert len(per_task) == TASKS
    assert {(r["escalated"], r["overdue"], r["unique_versions"]) for r in per_task} == {(1, 1, True)}
    assert await pool.fetchval("SELECT count(*) FROM task_escalations") == TASKS  # the team lead each
