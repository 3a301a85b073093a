"""Call records and the 8-hour callback promise, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from handover.callbacks import CALLBACK_WINDOW, Callbacks
from recordings.call_records import CallerNumber, CallPlace, CallRecords
from store.pii import PiiVault
from tests.district import District, build_district

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=SH)


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    return await build_district(pool, vault, week_of=date(2026, 11, 22))


async def missed_call(records: CallRecords, callbacks: Callbacks, vault: PiiVault, call_id: str,
                      number: str, at: datetime, resident_id: int | None, owner: int | None):
    caller = CallerNumber.of(vault, number)
    record = await records.open(call_id, caller, at)
    if resident_id is not None:
        await records.identified(record, resident_id)
    await records.ended(record, at + timedelta(seconds=40), "missed")
    assert caller.hash is not None and caller.encrypted is not None
    return record, await callbacks.owe_for_missed_call(
        call_record_id=record, resident_id=resident_id, number_hash=caller.hash,
        number_encrypted=caller.encrypted, number_masked=caller.masked, owner_staff_id=owner,
        missed_at=at)


async def test_a_call_record_follows_the_call(pool: asyncpg.Pool, vault: PiiVault,
                                              district: District) -> None:
    records = CallRecords(pool, vault)
    caller = CallerNumber.of(vault, "+86 138 0000 0001")
    record = await records.open("c-1@127.0.0.1", caller, T0)
    assert await records.open("c-1@127.0.0.1", caller, T0) == record  # a retransmitted INVITE
    await records.identified(record, district.resident_id)
    await records.placed(record, CallPlace("hotline", district.district_id, district.center_id, district.team_id))
    await records.answered(record, T0 + timedelta(seconds=1))
    await records.key_pressed(record, {"at": T0.isoformat(), "key": "1", "menu": "menu"})
    await records.routed(record, "day", "within day service",
                         [{"staff_id": district.doctor_id, "name": "王医生"}])
    first = await records.dial_started(record, district.doctor_id, "sip:1001@127.0.0.1", T0)
    await records.dial_ended(record, first, "busy", T0 + timedelta(seconds=2))
    second = await records.dial_started(record, district.assistant_id, "sip:2001@127.0.0.1", T0)
    await records.dial_ended(record, second, "answered", T0 + timedelta(seconds=9))
    await records.ended(record, T0 + timedelta(minutes=3), "connected")
    await records.recorded(record, "/rec/c-1.wav", 171.5, "ab" * 32)

    row = await pool.fetchrow("SELECT * FROM call_records WHERE id = $1", record)
    assert row["caller_number_masked"] == "138****0001"
    assert vault.decrypt("phone", row["caller_number_enc"]) == "13800000001"
    assert row["resident_id"] == district.resident_id
    assert row["connected_at"] == T0 + timedelta(seconds=9)
    # the console's scope columns: where the call belongs, and the assistant who took it
    assert (row["line"], row["district_id"], row["center_id"], row["team_id"], row["answered_by"]) == (
        "hotline", district.district_id, district.center_id, district.team_id, district.assistant_id)
    assert [k["key"] for k in json.loads(row["keys"])] == ["1"]
    assert row["disposition"] == "connected" and row["recording_seconds"] == pytest.approx(171.5)
    attempts = await pool.fetch(
        "SELECT seq, staff_id, outcome FROM dial_attempts WHERE call_record_id = $1 ORDER BY seq", record)
    assert [tuple(a) for a in attempts] == [(1, district.doctor_id, "busy"),
                                            (2, district.assistant_id, "answered")]
    with pytest.raises(ValueError, match="unknown disposition"):
        await records.ended(record, T0, "lost")


async def test_a_withheld_number_still_leaves_a_record(pool: asyncpg.Pool, vault: PiiVault) -> None:
    records = CallRecords(pool, vault)
    caller = CallerNumber.of(vault, "anonymous")
    assert caller.hash is None
    record = await records.open("c-anon", caller, T0)
    await records.ended(record, T0 + timedelta(seconds=5), "abandoned")
    assert await pool.fetchval("SELECT disposition FROM call_records WHERE id = $1", record) == "abandoned"


async def test_a_missed_call_owes_one_callback_due_in_8_hours_and_repeats_attach(
    pool: asyncpg.Pool, vault: PiiVault, district: District
) -> None:
    records, callbacks = CallRecords(pool, vault), Callbacks(pool)
    _, first = await missed_call(records, callbacks, vault, "m-1", "13800000001", T0,
                                 district.resident_id, district.doctor_id)
    assert first.created and first.due_at == T0 + CALLBACK_WINDOW
    # she tries again an hour later from her landline: same resident, same task, same deadline
    _, again = await missed_call(records, callbacks, vault, "m-2", "02225320001",
                                 T0 + timedelta(hours=1), district.resident_id, district.doctor_id)
    assert (again.task_id, again.created, again.due_at) == (first.task_id, False, first.due_at)
    calls = await pool.fetchval("SELECT count(*) FROM callback_calls WHERE task_id = $1", first.task_id)
    assert calls == 2
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1

    # once done, the next missed call is a new promise
    await pool.execute(
        """WITH t AS (UPDATE tasks SET status = 'done', closed_at = now(), close_note = 'called back',
                                      version = version + 1 RETURNING id, version, closed_at)
           INSERT INTO task_events (task_id, version, at, event) SELECT id, version, closed_at, 'closed' FROM t""")
    _, later = await missed_call(records, callbacks, vault, "m-3", "13800000001",
                                 T0 + timedelta(days=1), district.resident_id, district.doctor_id)
    assert later.created and later.task_id != first.task_id


async def test_concurrent_missed_calls_open_exactly_one_task(
    pool: asyncpg.Pool, vault: PiiVault, district: District
) -> None:
    records, callbacks = CallRecords(pool, vault), Callbacks(pool)
    results = await asyncio.gather(*(
        missed_call(records, callbacks, vault, f"burst-{i}", "13800000001",
                    T0 + timedelta(seconds=i), district.resident_id, district.doctor_id)
        for i in range(12)
    ))
    assert sum(owed.created for _, owed in results) == 1
    assert len({owed.task_id for _, owed in results}) == 1
    assert await pool.fetchval("SELECT count(*) FROM callback_calls") == 12


async def test_unknown_callers_are_keyed_by_number_and_recovery_is_idempotent(
    pool: asyncpg.Pool, vault: PiiVault, district: District
) -> None:
    records, callbacks = CallRecords(pool, vault), Callbacks(pool)
    record, owed = await missed_call(records, callbacks, vault, "u-1", "13912345678", T0, None, None)
    caller = CallerNumber.of(vault, "13912345678")
    assert caller.hash is not None and caller.encrypted is not None
    replay = await callbacks.owe_for_missed_call(
        call_record_id=record, resident_id=None, number_hash=caller.hash,
        number_encrypted=caller.encrypted, number_masked=caller.masked, owner_staff_id=None,
        missed_at=T0)
    assert replay.task_id == owed.task_id and not replay.created
    row = await pool.fetchrow("SELECT caller_key, owner_staff_id, caller_number_masked FROM tasks")
    assert row["caller_key"] == "number:" + caller.hash.hex()
    assert row["owner_staff_id"] is None and row["caller_number_masked"] == "139****5678"
    assert await pool.fetchval("SELECT count(*) FROM callback_calls") == 1
