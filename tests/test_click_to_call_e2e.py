"""Click-to-call over real SIP (issue 11): `hotline tasks call` asks; the service rings the doctor's
own softphone (baresip, answering), then dials the resident out through Kamailio to the PSTN
trunk (a sipp UAS on 127.0.0.1 playing the resident, shown the hotline's number), bridges and
records them — or the resident is busy, or the call is cancelled while the resident's phone
rings, which hangs up both.

Each test has a Kamailio of its own whose TRUNK_GW is the sipp resident's port.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from handover.callbacks import Callbacks
from handover.tasks import Task, Tasks
from recordings.call_records import CallRecords
from recordings.call_requests import CallRequests
from routing.records import PHONE
from store.pii import PiiVault
from tests.conftest import ROOT
from tests.hotline_peer import Hotline, hotline_fixture
from tests.sip_peers import Kamailio, free_udp_port, start_kamailio
from tests.softphone import SippDoctor, Softphone, SoftphoneFactory, start_sipp_doctor
from tests.test_call_records_and_callbacks import missed_call
from tests.test_softphones_e2e import until_talking
from tests.tones import describe, has_tone, read_wav

pytestmark = pytest.mark.sip

SHANGHAI = ZoneInfo("Asia/Shanghai")
TUESDAY_10 = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)
ZHANG_GUILAN = "13800000001"  # the demo's 张桂兰; her family doctor BH0001 answers on 1001
DOCTOR_NO, DOCTOR_EXT = "BH0001", "1001"
HOTLINE_NUMBER = "02225300000"  # what the resident is shown (tests/sipp/resident_answers_trunk_call.xml)
RESIDENT_HZ, DOCTOR_HZ = 440, 1000
OUTBOUND_RECORDING = "SELECT recording_path FROM call_records WHERE direction = 'outbound'"

hotline = hotline_fixture(TUESDAY_10, env={
    "HOTLINE_CALLBACK_CALLER_ID": HOTLINE_NUMBER, "HOTLINE_CLICK_TO_CALL_STAFF_RING_S": "10",
    "HOTLINE_CLICK_TO_CALL_RING_S": "15", "HOTLINE_RTP_TIMEOUT_S": "4"}, check_promises=True)


@pytest.fixture
def trunk_port() -> int:
    return free_udp_port()


@pytest.fixture
def kamailio(tmp_path: Path, trunk_port: int) -> Iterator[Kamailio]:
    proxy = start_kamailio(tmp_path / "kamailio", defines={"TRUNK_GW": f"127.0.0.1:{trunk_port}"})
    yield proxy
    proxy.stop()


@pytest.fixture
async def trunk(kamailio: Kamailio, trunk_port: int, tmp_path: Path) -> AsyncIterator[Any]:
    """Factory: `await trunk("doctor_busy.xml")` — the resident behind the PSTN trunk, one call."""
    started: list[SippDoctor] = []

    async def start(scenario: str) -> SippDoctor:
        resident = await start_sipp_doctor(scenario, kamailio.port, ZHANG_GUILAN, workdir=tmp_path / "trunk",
                                           tone_hz=RESIDENT_HZ, port=trunk_port, register=False)
        started.append(resident)
        return resident

    yield start
    for resident in started:
        await resident.stop()


@pytest.fixture
async def doctor(softphone: SoftphoneFactory) -> Softphone:
    return await softphone(DOCTOR_EXT, mode="answer", tone_hz=DOCTOR_HZ)


@pytest.fixture
async def task_id(hotline: Hotline, pool: asyncpg.Pool, vault: PiiVault) -> int:
    """张桂兰's callback task: she called at 09:30 and nobody answered."""
    resident_id = await pool.fetchval("SELECT resident_id FROM resident_phones WHERE phone_hash = $1",
                                      vault.lookup_hash(PHONE, ZHANG_GUILAN))
    assert resident_id is not None
    _, owed = await missed_call(CallRecords(pool, vault), Callbacks(pool), vault, "missed-0930@test", ZHANG_GUILAN,
                                TUESDAY_10.replace(hour=9, minute=30), resident_id, None)
    return owed.task_id


async def hotline_cli(cli_env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """`hotline …` in a subprocess, without blocking the service running on this event loop."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotline", *args, env=cli_env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finished(process: asyncio.subprocess.Process, timeout_s: float = 60) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    return process.returncode or 0, out.decode(), err.decode()


async def outcome_of(pool: asyncpg.Pool, task_id: int) -> asyncpg.Record:
    """The task's click-to-call request once it has its outcome (bounded)."""
    request_id = await pool.fetchval("SELECT max(id) FROM click_to_call_requests WHERE task_id = $1", task_id)
    request = await CallRequests(pool).wait(request_id, 30)
    if request.state == "connected":  # answered: the outcome is written at hang-up
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (request := await CallRequests(pool).get(request_id)).outcome is None:  # type: ignore[union-attr]
            assert loop.time() < deadline, "the bridged call's request was never closed"
            await asyncio.sleep(0.05)
    return await pool.fetchrow("SELECT * FROM click_to_call_requests WHERE id = $1", request_id)


async def attempts(pool: asyncpg.Pool, record_id: int) -> list[tuple[str, str | None]]:
    rows = await pool.fetch("SELECT sip_uri, outcome FROM dial_attempts WHERE call_record_id = $1 ORDER BY seq",
                            record_id)
    return [(r["sip_uri"], r["outcome"]) for r in rows]


async def task_told(pool: asyncpg.Pool, task_id: int, event: str) -> Task:
    """The task once its history ends with `event` (the service tells it after the request's
    outcome is written; bounded)."""
    tasks, loop = Tasks(pool), asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (await tasks.history(task_id))[-1].event != event:
        assert loop.time() < deadline, f"the task was never told {event}"
        await asyncio.sleep(0.05)
    return await tasks.get(task_id)


async def test_the_doctor_calls_her_resident_back(hotline: Hotline, pool: asyncpg.Pool, cli_env: dict[str, str],
                                                 trunk: Any, doctor: Softphone, task_id: int) -> None:
    told: list[tuple[int, int, int | None, str]] = []

    assert hotline.service.click_to_call is not None
    to_the_task = hotline.service.click_to_call.on_outcome
    assert to_the_task is not None

    async def on_outcome(*args: Any) -> None:
        told.append(args)
        await to_the_task(*args)

    hotline.service.click_to_call.on_outcome = on_outcome
    resident = await trunk("resident_answers_trunk_call.xml")
    cli = await hotline_cli(cli_env, "tasks", "call", str(task_id), "--staff", DOCTOR_NO, "--wait", "40")
    await doctor.wait_event("CALL_ESTABLISHED", direction="incoming", timeout_s=15)
    code, out, err = await finished(cli)
    assert code == 0, out + err
    assert out.splitlines()[0].endswith(f"ringing {DOCTOR_NO}'s softphone")
    assert ": answered, call record " in out.splitlines()[1], out
    await until_talking(pool, query=OUTBOUND_RECORDING)
    await doctor.hangup()
    sipp_code, sipp_log = await resident.result()
    assert sipp_code == 0, sipp_log
    request = await outcome_of(pool, task_id)
    assert (request["state"], request["outcome"]) == ("done", "answered")
    record = await pool.fetchrow("SELECT * FROM call_records WHERE id = $1", request["call_record_id"])
    staff_id = await pool.fetchval("SELECT id FROM staff WHERE staff_no = $1", DOCTOR_NO)
    assert (record["direction"], record["task_id"], record["disposition"], record["answered_by"]) == \
        ("outbound", task_id, "connected", staff_id)
    assert record["caller_number_masked"].startswith("138") and record["connected_at"] is not None
    assert await attempts(pool, record["id"]) == [(f"sip:{DOCTOR_EXT}@127.0.0.1", "answered"),
                                                  (f"tel:{record['caller_number_masked']}", "answered")]
    assert told == [(task_id, staff_id, record["id"], "answered")]
    # the task's history says so, and the call is the evidence its close needs
    tasks = Tasks(pool)
    last = (await tasks.history(task_id))[-1]
    assert (last.event, last.detail["call_record_id"]) == ("call_answered", record["id"])
    closed = await tasks.close(task_id, version=(await tasks.get(task_id)).version, actor_staff_id=staff_id,
                               status="done", note="已回电，症状缓解", at=record["ended_at"])
    assert closed.evidence_call_id == record["id"]
    # recorded like an inbound call: the resident left, what she heard (the doctor) right
    recording = Path(record["recording_path"])
    content = await asyncio.to_thread(recording.read_bytes)
    assert hashlib.sha256(content).hexdigest() == record["recording_sha256"]
    wav = await asyncio.to_thread(read_wav, recording)
    talk = slice(-wav.rate * 2, -wav.rate // 2)
    left, right = wav.channels[0][talk], wav.channels[1][talk]
    assert has_tone(left, wav.rate, RESIDENT_HZ), "resident: " + describe(left, wav.rate)
    assert has_tone(right, wav.rate, DOCTOR_HZ), "doctor: " + describe(right, wav.rate)
    # and the doctor's own phone heard the resident
    await doctor.wait_event("CALL_CLOSED", timeout_s=10)
    heard = await asyncio.to_thread(read_wav, doctor.received_wav())
    assert has_tone(heard.channels[0][-heard.rate * 2:], heard.rate, RESIDENT_HZ), \
        describe(heard.channels[0], heard.rate)


async def test_a_busy_resident_is_an_attempt_of_the_task(hotline: Hotline, pool: asyncpg.Pool,
                                                         cli_env: dict[str, str], trunk: Any, doctor: Softphone,
                                                         task_id: int) -> None:
    resident = await trunk("doctor_busy.xml")  # 486 Busy Here
    cli = await hotline_cli(cli_env, "tasks", "call", str(task_id), "--staff", DOCTOR_NO, "--json")
    code, out, err = await finished(cli)
    assert code == 3, out + err
    assert '"outcome": "busy"' in out
    sipp_code, sipp_log = await resident.result()
    assert sipp_code == 0, sipp_log
    await doctor.wait_event("CALL_CLOSED", timeout_s=10)  # her phone was hung up
    request = await outcome_of(pool, task_id)
    assert (request["outcome"], request["reason"]) == ("busy", "the resident's phone: 486 Busy Here")
    record = await pool.fetchrow("SELECT * FROM call_records WHERE id = $1", request["call_record_id"])
    assert (record["direction"], record["task_id"], record["disposition"], record["connected_at"]) == \
        ("outbound", task_id, "missed", None)
    assert [o for _, o in await attempts(pool, record["id"])] == ["answered", "busy"]
    # an attempt of the task: counted, and the next one only after the kind's 30 minutes
    task = await task_told(pool, task_id, "attempt")
    assert task.attempts == 1 and task.last_attempt_at is not None
    five_minutes_on = {**cli_env, "HOTLINE_CLOCK_START": (task.last_attempt_at + timedelta(minutes=5)).isoformat()}
    again = await hotline_cli(five_minutes_on, "tasks", "call", str(task_id), "--staff", DOCTOR_NO)
    code, out, err = await finished(again)
    assert code == 2 and "next attempt is allowed from" in out + err, out + err


async def test_cancelling_while_the_resident_rings_hangs_up_both(
        hotline: Hotline, pool: asyncpg.Pool, cli_env: dict[str, str], trunk: Any, doctor: Softphone,
        task_id: int) -> None:
    resident = await trunk("doctor_rings_forever.xml")  # 180 until CANCEL, then 487
    cli = await hotline_cli(cli_env, "tasks", "call", str(task_id), "--staff", DOCTOR_NO)
    await doctor.wait_event("CALL_ESTABLISHED", direction="incoming", timeout_s=15)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (request_id := await pool.fetchval(
            "SELECT r.id FROM click_to_call_requests r JOIN dial_attempts a ON a.call_record_id = r.call_record_id"
            " WHERE r.task_id = $1 AND a.seq = 2", task_id)) is None:  # the resident's phone is being rung
        assert loop.time() < deadline, "the resident was never dialled"
        await asyncio.sleep(0.05)
    cancel = await hotline_cli(cli_env, "tasks", "cancel-call", str(request_id))
    code, out, err = await finished(cancel)
    assert code == 0 and "cancelled" in out, out + err
    sipp_code, sipp_log = await resident.result()  # got the CANCEL, answered 487
    assert sipp_code == 0, sipp_log
    await doctor.wait_event("CALL_CLOSED", timeout_s=10)  # and her phone was hung up
    code, out, err = await finished(cli)
    assert code == 3 and ": cancelled" in out, out + err
    request = await outcome_of(pool, task_id)
    assert (request["state"], request["outcome"]) == ("cancelled", "cancelled")
    record = await pool.fetchrow("SELECT * FROM call_records WHERE id = $1", request["call_record_id"])
    assert (record["disposition"], record["connected_at"], record["recording_path"]) == ("abandoned", None, None)
    assert [o for _, o in await attempts(pool, record["id"])] == ["answered", "cancelled"]


async def test_a_call_whose_resident_side_goes_silent_is_hung_up(
        hotline: Hotline, pool: asyncpg.Pool, cli_env: dict[str, str], trunk: Any, doctor: Softphone,
        task_id: int) -> None:
    resident = await trunk("resident_answers_then_silence.xml")  # answers, then sends no RTP
    cli = await hotline_cli(cli_env, "tasks", "call", str(task_id), "--staff", DOCTOR_NO)
    code, out, err = await finished(cli)
    assert code == 0, out + err
    sipp_code, sipp_log = await resident.result()  # the service's BYE came, after HOTLINE_RTP_TIMEOUT_S
    assert sipp_code == 0, sipp_log
    await doctor.wait_event("CALL_CLOSED", timeout_s=10)
    request = await outcome_of(pool, task_id)
    assert request["outcome"] == "answered"
    record = await pool.fetchrow("SELECT disposition, end_reason FROM call_records WHERE id = $1",
                                 request["call_record_id"])
    assert dict(record) == {"disposition": "connected", "end_reason": "media timeout"}
