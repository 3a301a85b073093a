"""The call journal: events spooled to disk while PostgreSQL is away, written back exactly once.

The journal's own tests are pure file work; the replay runs against a real PostgreSQL (the
session's for the exactly-once rules, a private one stopped and started again for the outage).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from handover.callbacks import Callbacks
from hotline.clock import Clock
from ivr.flow import CallFlow, FlowSettings
from recordings.call_log import CallLog, Replayer, apply_event
from recordings.call_records import CallerNumber, CallPlace, CallRecords
from recordings.journal import Journal, read_segment
from routing.directory import Directory
from store import db, embedded
from store.pii import PiiVault
from tests.district import District, build_district

SH = ZoneInfo("Asia/Shanghai")
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=SH)


def event(n: int) -> dict:
    return {"id": f"00000000-0000-4000-8000-{n:012d}", "kind": "answered", "call_id": f"c-{n}",
            "at": T0.isoformat(), "text": "换行\nin a value stays one line"}


# -- the journal file -----------------------------------------------------------------------------


async def test_append_is_one_fsynced_line_per_event_in_a_private_file(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    await journal.append(event(1))
    # concurrent appends share fsyncs (group commit) and keep every event
    await asyncio.gather(*(journal.append(event(n)) for n in range(2, 42)))
    assert journal.appended == 41 and 2 <= journal.fsyncs <= 41
    active = journal.active
    assert active is not None and journal.holds_events()
    assert stat.S_IMODE(active.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "journal").stat().st_mode) == 0o700
    lines = active.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 42  # every line complete
    assert {json.loads(line)["call_id"] for line in lines[:-1]} == {f"c-{n}" for n in range(1, 42)}
    # sealed: the next event starts a new segment, the old one is ready for replay
    sealed = await journal.seal()
    assert sealed == active and journal.sealed_segments() == [active]
    await journal.append(event(99))
    assert journal.active not in (None, active)
    assert journal.sealed_segments() == [active]  # the new active one is not offered for replay
    await journal.close()


async def test_a_segment_still_being_written_cannot_be_claimed(tmp_path: Path) -> None:
    writer = Journal(tmp_path / "j")
    await writer.append(event(1))
    other = Journal(tmp_path / "j")  # another process on the same data directory
    active = writer.active
    assert active is not None and other.sealed_segments() == [active]
    with other.claim(active) as mine:
        assert not mine  # its writer holds the lock
    await writer.seal()
    with other.claim(active) as mine:
        assert mine


def test_a_torn_last_line_is_ignored_and_reported_and_bad_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "0001.jsonl"
    good = [json.dumps(event(n), ensure_ascii=False) for n in (1, 2, 3)]
    path.write_bytes(("\n".join([good[0], "{not json", good[1], '{"id": "x"}', good[2]]) + "\n"
                      + '{"id": "00000000-0000-4000-8000-000000000004", "kind": "ans').encode())
    segment = read_segment(path)
    assert [e["call_id"] for e in segment.events] == ["c-1", "c-2", "c-3"]
    assert segment.torn_tail.startswith(b'{"id"') and segment.bad_lines == [2, 4]
    assert segment.damaged
    clean = tmp_path / "0002.jsonl"
    clean.write_bytes(("\n".join(good) + "\n").encode())
    assert not read_segment(clean).damaged and len(read_segment(clean).events) == 3


# -- replay into PostgreSQL -----------------------------------------------------------------------


@pytest.fixture
async def district(pool: asyncpg.Pool, vault: PiiVault) -> District:
    return await build_district(pool, vault, week_of=date(2026, 11, 22))


def degraded_log(pool: asyncpg.Pool, vault: PiiVault, journal_dir: Path, node: str = "node-a") -> CallLog:
    call_log = CallLog(CallRecords(pool, vault, node), Callbacks(pool), Journal(journal_dir))
    call_log.degraded = True  # as after a write that found PostgreSQL away
    return call_log


async def missed_call_story(call_log: CallLog, vault: PiiVault, district: District, call_id: str,
                            at: datetime = T0) -> None:
    """A missed call with a voicemail, step by step as ivr.flow writes it."""
    entry = call_log.open(call_id, CallerNumber.of(vault, "13800000001"), at)
    await entry.open()
    await entry.identified(district.resident_id)
    await entry.placed(CallPlace("hotline", district.district_id, district.center_id, district.team_id))
    await entry.answered(at + timedelta(seconds=1))
    await entry.recording_started(f"/rec/{call_id}.wav")
    await entry.key_pressed(at + timedelta(seconds=3), "1", "menu")
    await entry.routed("day", "within day service", [{"staff_id": district.doctor_id, "name": "王医生"}],
                       {"steps": [{"step": "own_doctor"}]})
    seq = await entry.dial_started(district.doctor_id, "sip:1001@127.0.0.1", at + timedelta(seconds=5))
    await entry.dial_ended(seq, "no_answer", at + timedelta(seconds=25))
    await entry.explained_more([{"staff_id": district.assistant_id, "reason": "busy"}])
    await entry.voicemail_started(30.5)
    owed = await entry.owe_callback(resident_id=district.resident_id, owner_staff_id=district.doctor_id,
                                    missed_at=at)
    assert owed is not None
    await entry.attach_voicemail(path=f"/rec/{call_id}-voicemail.wav", seconds=4.5, sha256="cd" * 32,
                                 recorded_at=at + timedelta(seconds=36))
    await entry.recorded(f"/rec/{call_id}.wav", 40.0, "ab" * 32)
    await entry.ended(at + timedelta(seconds=40), "missed")


async def assert_one_complete_missed_call(pool: asyncpg.Pool, district: District, call_id: str) -> None:
    record = await pool.fetchrow("SELECT * FROM call_records WHERE call_id = $1", call_id)
    assert record["node"] == "node-a" and record["caller_number_masked"] == "138****0001"
    assert record["resident_id"] == district.resident_id and record["disposition"] == "missed"
    assert record["answered_at"] == T0 + timedelta(seconds=1) and record["ended_at"] == T0 + timedelta(seconds=40)
    assert record["route_service"] == "day" and record["voicemail_offset_s"] == 30.5
    assert record["recording_sha256"] == "ab" * 32
    assert (record["line"], record["district_id"], record["center_id"], record["team_id"], record["answered_by"]) \
        == ("hotline", district.district_id, district.center_id, district.team_id, None)
    assert json.loads(record["keys"]) == [{"at": (T0 + timedelta(seconds=3)).isoformat(), "key": "1", "menu": "menu"}]
    explanation = json.loads(record["route_explanation"])
    assert explanation["skipped_live"] == [{"staff_id": district.assistant_id, "reason": "busy"}]
    attempts = await pool.fetch("SELECT seq, outcome FROM dial_attempts WHERE call_record_id = $1", record["id"])
    assert [tuple(a) for a in attempts] == [(1, "no_answer")]
    task = await pool.fetchrow("SELECT * FROM tasks")
    assert task["due_at"] == T0 + timedelta(hours=8) and task["owner_staff_id"] == district.doctor_id
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 1
    assert await pool.fetchval("SELECT count(*) FROM callback_calls") == 1
    voicemail = await pool.fetchrow("SELECT * FROM voicemails")
    assert voicemail["task_id"] == task["id"] and voicemail["call_record_id"] == record["id"]
    assert await pool.fetchval("SELECT count(*) FROM voicemails") == 1


async def test_a_journaled_call_is_written_once_with_everything_it_said(
        pool: asyncpg.Pool, vault: PiiVault, district: District, tmp_path: Path) -> None:
    call_log = degraded_log(pool, vault, tmp_path / "journal")
    await missed_call_story(call_log, vault, district, "j-1@x")
    assert await pool.fetchval("SELECT count(*) FROM call_records") == 0  # nothing written yet
    active = call_log.journal.active  # type: ignore[union-attr]
    assert active is not None
    text = active.read_text()
    assert "13800000001" not in text  # the number only as ciphertext, hash and mask
    replayer = Replayer(call_log, pool)
    result = await replayer.drain()
    assert (result.applied, result.skipped, result.rejected, result.segments) == (15, 0, 0, 1)
    await assert_one_complete_missed_call(pool, district, "j-1@x")
    assert not call_log.journal.holds_events()  # type: ignore[union-attr]
    assert not active.exists()
    assert await pool.fetchval("SELECT count(*) FROM call_journal_applied") == 0


async def test_who_answered_a_journaled_call_is_written_on_replay(
        pool: asyncpg.Pool, vault: PiiVault, district: District, tmp_path: Path) -> None:
    call_log = degraded_log(pool, vault, tmp_path / "journal")
    entry = call_log.open("answered@x", CallerNumber.of(vault, "13900000005"), T0)
    await entry.open()
    await entry.placed(CallPlace("8001", district.district_id, district.center_id))
    first = await entry.dial_started(district.doctor_id, "sip:1001@127.0.0.1", T0 + timedelta(seconds=4))
    await entry.dial_ended(first, "no_answer", T0 + timedelta(seconds=20))
    second = await entry.dial_started(district.agent_id, "sip:4001@127.0.0.1", T0 + timedelta(seconds=21))
    await entry.dial_ended(second, "answered", T0 + timedelta(seconds=25))
    await entry.ended(T0 + timedelta(seconds=90), "connected")
    assert await pool.fetchval("SELECT count(*) FROM call_records") == 0
    assert (await Replayer(call_log, pool).drain()).applied == 7
    record = await pool.fetchrow("SELECT * FROM call_records WHERE call_id = 'answered@x'")
    assert (record["line"], record["district_id"], record["center_id"], record["team_id"], record["answered_by"]) \
        == ("8001", district.district_id, district.center_id, None, district.agent_id)
    assert record["connected_at"] == T0 + timedelta(seconds=25)


async def test_a_replay_cut_short_by_a_crash_applies_the_rest_and_nothing_twice(
        pool: asyncpg.Pool, vault: PiiVault, district: District, tmp_path: Path) -> None:
    call_log = degraded_log(pool, vault, tmp_path / "journal")
    await missed_call_story(call_log, vault, district, "j-2@x")
    path = await call_log.journal.seal()  # type: ignore[union-attr]
    assert path is not None
    segment = read_segment(path)
    # the crashed replay: its first 9 events committed, each with its id, then the process died
    async with pool.acquire() as conn:
        for e in segment.events[:9]:
            async with conn.transaction():
                await conn.execute("INSERT INTO call_journal_applied (event_id, segment) VALUES ($1, $2)",
                                   uuid.UUID(e["id"]), segment.name)
                await apply_event(conn, e)
    # the restarted node: a new journal on the same directory
    restarted = degraded_log(pool, vault, tmp_path / "journal")
    result = await Replayer(restarted, pool).drain()
    assert (result.applied, result.skipped) == (6, 9)
    await assert_one_complete_missed_call(pool, district, "j-2@x")


async def test_a_torn_segment_is_replayed_and_kept_aside_and_a_refused_event_set_apart(
        pool: asyncpg.Pool, vault: PiiVault, district: District, tmp_path: Path) -> None:
    call_log = degraded_log(pool, vault, tmp_path / "journal")
    await missed_call_story(call_log, vault, district, "j-3@x")
    entry = call_log.open("j-4@x", CallerNumber.of(vault, "13900000009"), T0)
    await entry.open()
    await entry.identified(987654)  # no such resident: PostgreSQL refuses it for good
    await entry.ended(T0 + timedelta(seconds=3), "ivr_only")
    path = await call_log.journal.seal()  # type: ignore[union-attr]
    assert path is not None
    # the crash cut the next line short
    path.write_bytes(path.read_bytes() + b'{"id": "00000000-0000-4000-8000-0000000000ff", "kind": "ended", "call')
    result = await Replayer(call_log, pool).drain()
    assert (result.applied, result.rejected) == (17, 1)
    await assert_one_complete_missed_call(pool, district, "j-3@x")
    other = await pool.fetchrow("SELECT * FROM call_records WHERE call_id = 'j-4@x'")
    assert other["disposition"] == "ivr_only" and other["resident_id"] is None
    kept = tmp_path / "journal" / "kept"
    assert (kept / path.name).read_bytes().endswith(b'"call')  # the damaged segment, untouched
    rejected = [json.loads(line) for line in (kept / "rejected.jsonl").read_text().splitlines()]
    assert [(r["event"]["kind"], r["event"]["call_id"]) for r in rejected] == [("identified", "j-4@x")]
    assert "resident" in rejected[0]["why"]
    assert stat.S_IMODE((kept / "rejected.jsonl").stat().st_mode) == 0o600
    assert not path.exists() and not call_log.journal.holds_events()  # type: ignore[union-attr]


async def test_an_earlier_missed_call_replayed_later_keeps_the_first_deadline(
        pool: asyncpg.Pool, vault: PiiVault, district: District, tmp_path: Path) -> None:
    # 10:00 missed while PostgreSQL was away (journaled); 10:30 missed again, written at once
    call_log = degraded_log(pool, vault, tmp_path / "journal")
    await missed_call_story(call_log, vault, district, "early@x", T0)
    call_log.degraded = False
    later = call_log.open("later@x", CallerNumber.of(vault, "13800000001"), T0 + timedelta(minutes=30))
    await later.open()
    owed = await later.owe_callback(resident_id=district.resident_id, owner_staff_id=district.doctor_id,
                                    missed_at=T0 + timedelta(minutes=30))
    assert owed is not None and owed.task_id is not None
    await Replayer(call_log, pool).drain()
    task = await pool.fetchrow("SELECT * FROM tasks")
    assert task["opened_at"] == T0 and task["due_at"] == T0 + timedelta(hours=8)
    assert await pool.fetchval("SELECT count(*) FROM callback_calls WHERE task_id = $1", task["id"]) == 2


# -- a real outage: a private PostgreSQL stopped mid-call and started again ----------------------


async def test_a_call_outliving_postgresql_goes_on_in_the_journal_and_is_written_once_back(
        private_postgres: tuple[Path, str], vault: PiiVault, tmp_path: Path) -> None:
    data_dir, url = private_postgres
    pool = await db.create_pool(url, max_size=2)
    try:
        district = await build_district(pool, vault, week_of=date(2026, 11, 22))
        call_log = CallLog(CallRecords(pool, vault, "node-a"), Callbacks(pool), Journal(tmp_path / "journal"))
        entry = call_log.open("outage@x", CallerNumber.of(vault, "13800000001"), T0)
        await entry.open()
        await entry.identified(district.resident_id)
        assert entry.record_id is not None and not entry.journaled
        await asyncio.to_thread(embedded.stop_postgres, data_dir)

        await entry.answered(T0 + timedelta(seconds=1))  # finds PostgreSQL away
        assert entry.journaled and call_log.degraded
        seq = await entry.dial_started(district.doctor_id, "sip:1001@127.0.0.1", T0 + timedelta(seconds=5))
        await entry.dial_ended(seq, "busy", T0 + timedelta(seconds=6))
        await entry.owe_callback(resident_id=district.resident_id, owner_staff_id=district.doctor_id, missed_at=T0)
        await entry.ended(T0 + timedelta(seconds=20), "missed")
        # a new call meanwhile does not wait for the dead database: straight to the journal
        other = call_log.open("during@x", CallerNumber.of(vault, "13900000001"), T0 + timedelta(seconds=9))
        await other.open()
        await other.owe_callback(resident_id=None, owner_staff_id=None, missed_at=T0 + timedelta(seconds=9))
        await other.ended(T0 + timedelta(seconds=15), "abandoned")
        assert other.journaled and other.record_id is None

        replayer = Replayer(call_log, pool)
        with pytest.raises(Exception) as away:
            await replayer.drain()
        assert db.is_unreachable(away.value)
        await asyncio.to_thread(embedded.ensure_postgres, data_dir)
        replaying = asyncio.create_task(replayer.run())
        try:
            for _ in range(200):  # bounded: 20 s (the replayer's backoff is at most a few seconds here)
                if not call_log.degraded and not call_log.journal.holds_events():  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the journal was not drained")
        finally:
            replaying.cancel()
        rows = await pool.fetch("SELECT call_id, disposition, answered_at, resident_id FROM call_records"
                                " ORDER BY offered_at")
        assert [(r["call_id"], r["disposition"]) for r in rows] == [("outage@x", "missed"), ("during@x", "abandoned")]
        assert rows[0]["answered_at"] == T0 + timedelta(seconds=1) and rows[0]["resident_id"] == district.resident_id
        assert await pool.fetchval("SELECT count(*) FROM dial_attempts") == 1
        assert await pool.fetchval("SELECT count(*) FROM tasks") == 2
        assert await pool.fetchval("SELECT count(*) FROM callback_calls") == 2
        # back to PostgreSQL for the next call
        after = call_log.open("after@x", CallerNumber.of(vault, "13900000002"), T0 + timedelta(minutes=1))
        await after.open()
        assert not after.journaled and after.record_id is not None
    finally:
        await pool.close()
    assert not list((tmp_path / "journal").glob("*.jsonl"))
    assert os.listdir(tmp_path / "journal") == []


async def test_a_call_the_crash_cut_while_journaling_is_recovered_after_the_replay(
        pool: asyncpg.Pool, vault: PiiVault, district: District, tmp_path: Path) -> None:
    # The service was killed while PostgreSQL was away, a caller waiting for a doctor: the journal
    # holds the call up to its routing. At the next start (hotline.service) the journal is
    # replayed first, so recovery finds the call unfinished and keeps the callback promise.
    call_log = degraded_log(pool, vault, tmp_path / "journal")
    entry = call_log.open("cut@x", CallerNumber.of(vault, "13900000007"), T0)
    await entry.open()
    await entry.answered(T0 + timedelta(seconds=1))
    await entry.routed("day", "unknown caller", [{"staff_id": district.agent_id, "name": "坐席"}])
    await entry.dial_started(district.agent_id, "sip:4001@127.0.0.1", T0 + timedelta(seconds=4))
    # the process dies: nothing sealed; the kernel closes its files (and so drops its lock)
    os.close(call_log.journal._fd)  # type: ignore[union-attr,arg-type]

    restarted = degraded_log(pool, vault, tmp_path / "journal")
    assert (await Replayer(restarted, pool).drain()).applied == 4
    flow = CallFlow(records=restarted.records, callbacks=restarted.callbacks, directory=Directory(pool, vault),
                    routing=None, vault=vault, clock=Clock(T0 + timedelta(minutes=5)),  # type: ignore[arg-type]
                    dial=None, settings=FlowSettings(recordings_dir=tmp_path / "rec"))  # type: ignore[arg-type]
    assert await flow.recover() == 1
    record = await pool.fetchrow("SELECT * FROM call_records WHERE call_id = 'cut@x'")
    assert record["disposition"] == "failed" and record["node"] == "node-a"
    task = await pool.fetchrow("SELECT * FROM tasks")
    # an unknown caller's callback is the duty desk's (issue 11: "the duty desk when neither
    # exists"), whoever the lost call was ringing
    assert task["owner_staff_id"] is None and task["due_at"] == T0 + timedelta(hours=8)
    assert await pool.fetchval("SELECT call_record_id FROM callback_calls") == record["id"]
