"""`hotline tasks call|cancel-call` without a service node: bad input and unknown names exit as
every command does (1, 2) with one line and nothing written; a request no node answers within
--wait is cancelled (exit 4); a finished request cannot be cancelled (exit 2). The call itself is
tests/test_click_to_call_e2e.py."""

from __future__ import annotations

import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from handover.callbacks import Callbacks
from recordings.call_records import CallRecords
from recordings.call_requests import CallRequests
from store.pii import PiiVault
from tests.conftest import run_cli
from tests.district import District, build_district
from tests.test_call_records_and_callbacks import missed_call

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


@pytest.fixture
async def task_id(pool: asyncpg.Pool, vault: PiiVault) -> int:
    district: District = await build_district(pool, vault, week_of=date(2026, 11, 22))
    _, owed = await missed_call(CallRecords(pool, vault), Callbacks(pool), vault, "missed@cli", "13800000001", T0,
                                district.resident_id, district.doctor_id)
    return owed.task_id


async def test_bad_calls_are_refused_and_write_nothing(cli_env: dict[str, str], pool: asyncpg.Pool,
                                                       task_id: int) -> None:
    for args, code, message in [
        (["tasks", "call", "999999", "--staff", "D001"], 1, "task 999999 does not exist"),
        (["tasks", "call", str(task_id), "--staff", "BH9999"], 1, "staff member BH9999 does not exist"),
        (["tasks", "call", str(task_id), "--staff", "D002"], 2, "has left"),
        (["tasks", "call", str(task_id), "--staff", "D001", "--wait", "0"], 2, "--wait must be between"),
        (["tasks", "call", str(task_id), "--staff", "D001", "--wait", "9999"], 2, "--wait must be between"),
        (["tasks", "cancel-call", "999999"], 1, "call request 999999 does not exist"),
    ]:
        done = run_cli(cli_env, *args)
        assert done.returncode == code and message in done.stderr, (args, done.returncode, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert await pool.fetchval("SELECT count(*) FROM click_to_call_requests") == 0


async def test_a_request_no_node_takes_is_cancelled_when_the_wait_runs_out(
        cli_env: dict[str, str], pool: asyncpg.Pool, task_id: int) -> None:
    done = run_cli(cli_env, "tasks", "call", str(task_id), "--staff", "D001", "--wait", "0.5", "--json")
    assert done.returncode == 4, done.stdout + done.stderr
    shown = json.loads(done.stdout)
    assert (shown["state"], shown["outcome"]) == ("cancelled", "cancelled")
    # cancelling it again is harmless; a new request may be made
    again = run_cli(cli_env, "tasks", "cancel-call", str(shown["id"]))
    assert again.returncode == 0 and f"request {shown['id']}: cancelled" in again.stdout
    # one that has finished cannot be cancelled any more
    requests = CallRequests(pool)
    made = await requests.request(task_id=task_id, staff_id=shown["staff_id"], requested_by="test", at=T0,
                                  pickup_s=30)
    await requests.claim("node", T0)
    await requests.finish(made.id, "node", outcome="no_answer", reason="", at=T0, call_record_id=None)
    late = run_cli(cli_env, "tasks", "cancel-call", str(made.id))
    assert late.returncode == 2 and "has finished (no_answer)" in late.stderr, late.stderr
