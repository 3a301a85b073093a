"""The fallback chain, presence, queue and voicemail over real SIP: sipp residents through a fresh
Kamailio, the service on the test PostgreSQL and Redis, baresip doctors."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import structlog.testing

from ivr.prompts import PROMPT_DIR, prompt
from routing.presence import Presence, presence_client
from store.pii import PiiVault
from tests.conftest import TEST_PII_KEY
from tests.hotline_peer import (  # noqa: F401  (fresh_kamailio: this module's `kamailio` fixture)
    Earpiece,
    Hotline,
    calls_done,
    fresh_kamailio,
    hotline_at,
    hotline_fixture,
)
from tests.rtp_pcap import ulaw_sine, write_rtp_pcap
from tests.sip_peers import Kamailio, run_sipp, sipp_result
from tests.softphone import Softphone, start_sipp_doctor
from tests.tones import describe, has_tone, read_wav

pytestmark = pytest.mark.sip

SH = ZoneInfo("Asia/Shanghai")
TUESDAY_10 = datetime(2026, 11, 24, 10, 0, tzinfo=SH)
ZHANG_GUILAN = "13800000001"  # 北塘街; own doctor 1001, assistant 2001 (routing/seed.py)

day_hotline = hotline_fixture(TUESDAY_10, ring_timeout_s=4.0, check_promises=True)
queueing_hotline = hotline_fixture(TUESDAY_10, ring_timeout_s=4.0, queue_wait_s=14.0, voicemail_max_s=3.0,
                                   check_promises=True)


@pytest.fixture(scope="module")
def voice_440(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The resident's voice for a long wait: 60 s of 440 Hz."""
    return write_rtp_pcap(tmp_path_factory.mktemp("voice") / "440.pcap", ulaw_sine(440, 60))


@pytest.fixture
async def presence(redis_url: str):
    client = presence_client(redis_url)
    yield Presence(client, tz=SH)
    await client.aclose()


async def staff_id(pool: asyncpg.Pool, ext: str) -> int:
    return await pool.fetchval("SELECT id FROM staff WHERE sip_uri = $1", f"sip:{ext}@127.0.0.1")


async def phone(ext: str, kamailio: Kamailio, tmp_path: Path, **options) -> Softphone:
    return await Softphone(ext, kamailio.port, tmp_path / f"phone-{ext}", **options).start()


async def talk(kamailio: Kamailio, voice: Path) -> asyncio.subprocess.Process:
    ear = Earpiece()
    try:
        return await run_sipp("resident_talks_to_doctor.xml", kamailio.port, service="hotline",
                              caller=ZHANG_GUILAN, timeout_s=40,
                              keys={"rtp_port": str(ear.port), "voice_pcap": str(voice)})
    finally:
        ear.close()


async def test_own_doctor_on_a_call_is_skipped_at_once_and_the_assistant_rings(
    day_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, presence: Presence,
    voice_440: Path, tmp_path: Path
) -> None:
    doctor_id = await staff_id(pool, "1001")
    await presence.call_started(doctor_id, "a-call-on-another-node")
    doctor = await phone("1001", kamailio, tmp_path)
    assistant = await phone("2001", kamailio, tmp_path)
    try:
        code, out = await sipp_result(await talk(kamailio, voice_440), timeout_s=40)
        assert code == 0, out
        await calls_done(day_hotline)
        assert doctor.incoming_calls == 0  # never rung: presence said she is on a call
        assert assistant.answered_calls == 1
    finally:
        await doctor.stop()
        await assistant.stop()
    record = await pool.fetchrow("SELECT * FROM call_records")
    assert record["disposition"] == "connected"
    own = json.loads(record["route_explanation"])["steps"][0]
    assert own["step"] == "own_doctor" and own["targets"] == []
    name = await pool.fetchval("SELECT name FROM staff WHERE id = $1", doctor_id)
    assert own["skipped"][0]["reason"].startswith(f"{name} busy (on call since ")
    attempts = await pool.fetch("SELECT sip_uri, outcome FROM dial_attempts ORDER BY seq")
    assert [(a["sip_uri"], a["outcome"]) for a in attempts] == [("sip:2001@127.0.0.1", "answered")]
    # the assistant is free again once the call ended
    assert (await presence.state(await staff_id(pool, "2001"))).ringable


async def test_two_calls_at_once_never_ring_the_same_doctor_twice(
    day_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, voice_440: Path, tmp_path: Path
) -> None:
    doctor = await phone("1001", kamailio, tmp_path, answer_after=1.5)
    assistant = await phone("2001", kamailio, tmp_path)
    try:
        first = await talk(kamailio, voice_440)
        await asyncio.sleep(0.3)
        second = await talk(kamailio, voice_440)
        for sipp in (first, second):
            code, out = await sipp_result(sipp, timeout_s=40)
            assert code == 0, out
        await calls_done(day_hotline)
        assert doctor.incoming_calls == 1
        assert assistant.incoming_calls == 1
    finally:
        await doctor.stop()
        await assistant.stop()
    records = await pool.fetch("SELECT route_explanation, disposition FROM call_records ORDER BY id")
    assert [r["disposition"] for r in records] == ["connected", "connected"]
    # One of the two calls found her taken by the other and says so in its explanation: either
    # presence already showed her ringing when the chain was drawn up (a skip in the steps), or
    # the claim was lost while hunting (skipped_live). Which one depends on the scheduler.
    name = await pool.fetchval("SELECT name FROM staff WHERE sip_uri = 'sip:1001@127.0.0.1'")
    skips = []
    for r in records:
        explanation = json.loads(r["route_explanation"])
        reasons = [s["reason"] for step in explanation["steps"] for s in step.get("skipped", [])]
        reasons += [s["reason"] for s in explanation.get("skipped_live", [])]
        skips.append([reason for reason in reasons if reason.startswith(f"{name} busy (")])
    assert sorted(len(x) for x in skips) == [0, 1], skips
    assert any("ringing" in reason for x in skips for reason in x), skips


async def test_everyone_busy_queue_with_position_then_voicemail_on_the_callback_task(
    queueing_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, presence: Presence,
    voice_440: Path
) -> None:
    for row in await pool.fetch("SELECT id FROM staff WHERE sip_uri IS NOT NULL"):
        await presence.call_started(row["id"], "other-call")
    ear = Earpiece()
    try:
        sipp = await run_sipp("resident_waits_for_doctor.xml", kamailio.port, service="hotline",
                              caller=ZHANG_GUILAN, timeout_s=80,
                              keys={"rtp_port": str(ear.port), "voice_pcap": str(voice_440)})
        code, out = await sipp_result(sipp, timeout_s=90)
        assert code == 0, out
        await calls_done(queueing_hotline)
        heard = ear.heard()
    finally:
        ear.close()
    for name in ("busy", "queue_next", "queue_options", "voicemail", "callback"):
        assert prompt(name).payload("PCMU")[400:2400] in heard, f"the {name} prompt was not heard"
    assert prompt("hold").payload("PCMU")[800:2400] in heard
    assert await pool.fetchval("SELECT count(*) FROM dial_attempts") == 0  # nobody was rung

    record = await pool.fetchrow("SELECT * FROM call_records")
    assert record["disposition"] == "missed"
    task = await pool.fetchrow("SELECT * FROM tasks")
    assert task["due_at"] == record["offered_at"] + timedelta(hours=8)
    voicemail = await pool.fetchrow("SELECT * FROM voicemails")
    assert voicemail["task_id"] == task["id"] and voicemail["call_record_id"] == record["id"]
    assert 2.5 <= float(voicemail["seconds"]) <= 3.5
    message = await asyncio.to_thread(read_wav, voicemail["path"])
    assert has_tone(message.mono, message.rate, 440), describe(message.mono, message.rate)
    assert Path(voicemail["path"]).parent == Path(record["recording_path"]).parent  # the same store
    # where the message starts in the recording, for recovery after a crash: past the greeting,
    # the queue and the beep, and the message fits between it and the end of the recording
    offset_s = record["voicemail_offset_s"]
    assert 10 < offset_s <= float(record["recording_seconds"]) - float(voicemail["seconds"])
    # the message is the recording's caller channel from there, to within one 20 ms packet (the
    # offset is read from the recorder's clock as the beep ends; on a loaded machine the packet
    # that carries that instant may be the next one — recovery then cuts 20 ms differently)
    recording = await asyncio.to_thread(read_wav, record["recording_path"])
    first, n, caller = round(offset_s * recording.rate), len(message.mono), recording.channels[0]
    packet = recording.rate // 50
    shifts = [k for k in range(-packet, packet + 1)
              if first + k >= 0 and caller[first + k:first + k + n] == message.mono]
    # (compared as a bool: pytest's diff of two 24 000-sample lists takes minutes)
    assert shifts, f"the message is not the caller channel within a packet of {offset_s} s"


async def test_a_message_cut_by_a_service_shutdown_is_kept_on_the_callback_task(
    kamailio: Kamailio, database_url: str, pool: asyncpg.Pool, vault: PiiVault, redis_url: str,
    presence: Presence, voice_440: Path, tmp_path: Path
) -> None:
    """SIGTERM (a deploy) while a caller is leaving a message: the service hangs up its calls and
    gives their flows DRAIN_S to write their endings; what the caller said so far is kept with
    the callback."""
    for row in await pool.fetch("SELECT id FROM staff WHERE sip_uri IS NOT NULL"):
        await presence.call_started(row["id"], "other-call")
    ear = Earpiece()
    try:
        async with hotline_at(TUESDAY_10, kamailio=kamailio, database_url=database_url, pool=pool,
                              vault=vault, pii_key=TEST_PII_KEY, data_dir=tmp_path / "data",
                              redis_url=redis_url, voicemail_max_s=60.0):
            sipp = await run_sipp("resident_waits_for_doctor.xml", kamailio.port, service="hotline",
                                  caller=ZHANG_GUILAN, timeout_s=80,
                                  keys={"rtp_port": str(ear.port), "voice_pcap": str(voice_440)})
            for _ in range(600):  # bounded: 30 s for the greeting, the busy prompt and the beep
                if await pool.fetchval("SELECT voicemail_offset_s FROM call_records") is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the caller never reached the voicemail")
            await asyncio.sleep(2.0)  # the caller talks; then the service is told to stop
        code, out = await sipp_result(sipp, timeout_s=20)
        assert code == 0, out  # the service hung up on them (BYE) as it stopped
    finally:
        ear.close()
    record = await pool.fetchrow("SELECT * FROM call_records")
    assert record["disposition"] == "failed" and record["ended_at"] is not None
    task = await pool.fetchrow("SELECT * FROM tasks")
    assert task["status"] == "open" and task["due_at"] == record["offered_at"] + timedelta(hours=8)
    voicemail = await pool.fetchrow("SELECT * FROM voicemails")
    assert voicemail is not None and voicemail["task_id"] == task["id"]
    # two seconds of talk (the recorder takes audio every 0.1 s)
    assert 1.7 <= float(voicemail["seconds"]) <= 2.5
    message = await asyncio.to_thread(read_wav, voicemail["path"])
    assert has_tone(message.mono, message.rate, 440), describe(message.mono, message.rate)
    content = await asyncio.to_thread(Path(voicemail["path"]).read_bytes)
    assert hashlib.sha256(content).hexdigest() == voicemail["sha256"]


async def test_a_centers_own_number_reaches_its_own_chain_and_greeting(
    day_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, voice_440: Path, tmp_path: Path
) -> None:
    # 古林街's own extension (seeded as 8003) with a greeting of its own; a caller the directory
    # does not know reaches 古林街's agent first, not the district desk
    greeting = prompt("desk")  # any prompt file will do as "the center's own greeting"
    await pool.execute("UPDATE hotline_lines SET greeting = $1 WHERE number = '8003'", str(PROMPT_DIR / "desk.wav"))
    agent_ext = await pool.fetchval(
        "SELECT split_part(split_part(s.sip_uri, ':', 2), '@', 1) FROM staff s JOIN centers c ON c.id = s.center_id"
        " WHERE s.role = 'agent' AND c.name = '古林街'")
    center_agent = await phone(agent_ext, kamailio, tmp_path)
    desk = await phone("4004", kamailio, tmp_path, mode="ring")
    ear = Earpiece()
    try:
        sipp = await run_sipp("resident_talks_to_doctor.xml", kamailio.port, service="8003",
                              caller="13912345678", timeout_s=40,
                              keys={"rtp_port": str(ear.port), "voice_pcap": str(voice_440)})
        code, out = await sipp_result(sipp, timeout_s=40)
        assert code == 0, out
        await calls_done(day_hotline)
        assert center_agent.answered_calls == 1 and desk.incoming_calls == 0
        heard = ear.heard()
    finally:
        ear.close()
        await center_agent.stop()
        await desk.stop()
    assert greeting.payload("PCMU")[400:2400] in heard  # the line's own greeting
    assert prompt("greeting").payload("PCMU")[400:2400] not in heard
    record = await pool.fetchrow("SELECT * FROM call_records")
    assert record["disposition"] == "connected" and record["resident_id"] is None
    assert "on 古林街专线" in record["route_reason"]
    # an unknown caller belongs to the line's center and district; the agent took the call
    line = await pool.fetchrow("SELECT district_id, center_id FROM hotline_lines WHERE number = '8003'")
    agent = await pool.fetchval("SELECT id FROM staff WHERE sip_uri = $1", f"sip:{agent_ext}@127.0.0.1")
    assert (record["line"], record["district_id"], record["center_id"], record["team_id"],
            record["answered_by"]) == ("8003", line["district_id"], line["center_id"], None, agent)


no_redis_hotline = hotline_fixture(TUESDAY_10, ring_timeout_s=4.0, redis_url="redis://127.0.0.1:1/0")


async def test_without_redis_calls_still_connect_and_the_outage_is_logged_once(
    no_redis_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, voice_440: Path, tmp_path: Path
) -> None:
    doctor = await phone("1001", kamailio, tmp_path)
    try:
        with structlog.testing.capture_logs() as logs:
            code, out = await sipp_result(await talk(kamailio, voice_440), timeout_s=40)
            assert code == 0, out
            await calls_done(no_redis_hotline)
        assert doctor.answered_calls == 1
    finally:
        await doctor.stop()
    assert await pool.fetchval("SELECT disposition FROM call_records") == "connected"
    assert [e["event"] for e in logs].count("presence.degraded") == 1
    presence = no_redis_hotline.service.flow.presence
    assert presence.degraded and presence.degraded_operations >= 3  # states, claim, call_started …


async def resident_waits_while_1001_declines(hotline: Hotline, kamailio: Kamailio, voice_440: Path,
                                             tmp_path: Path, doctor_timeout_s: float | None = None) -> bytes:
    """张桂兰 calls and waits on the line while her doctor 1001 (a sipp UAS) answers 486 to every
    INVITE; what she heard, once the call is over."""
    options = {} if doctor_timeout_s is None else {"timeout_s": doctor_timeout_s}
    doctor = await start_sipp_doctor("doctor_busy.xml", kamailio.port, "1001", workdir=tmp_path / "busy", **options)
    ear = Earpiece()
    try:
        sipp = await run_sipp("resident_waits_for_doctor.xml", kamailio.port, service="hotline",
                              caller=ZHANG_GUILAN, timeout_s=80,
                              keys={"rtp_port": str(ear.port), "voice_pcap": str(voice_440)})
        code, out = await sipp_result(sipp, timeout_s=90)
        assert code == 0, out
        await calls_done(hotline)
        return ear.heard()
    finally:
        ear.close()
        await doctor.stop()


async def test_a_doctor_who_declines_hears_busy_once_and_is_not_rung_again_from_the_queue(
    queueing_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, presence: Presence,
    voice_440: Path, tmp_path: Path
) -> None:
    """Issue 8: the doctor rejects (486); the assistant is on another call, so the caller queues
    for her. 「坐席忙」 plays once (after the doctor's step; the queue does not open with it again),
    and the queue's re-ringing every cycle passes over the doctor who declined."""
    await presence.call_started(await staff_id(pool, "2001"), "another-call")
    heard = await resident_waits_while_1001_declines(queueing_hotline, kamailio, voice_440, tmp_path,
                                                     doctor_timeout_s=80)
    busy = prompt("busy").payload("PCMU")
    assert heard.count(busy[800:8800]) == 1
    for name in ("queue_next", "queue_options", "voicemail", "callback"):  # the queue, then voicemail
        assert prompt(name).payload("PCMU")[400:2400] in heard, f"the {name} prompt was not heard"
    attempts = await pool.fetch("SELECT sip_uri, outcome FROM dial_attempts ORDER BY seq")
    assert [a["sip_uri"] for a in attempts].count("sip:1001@127.0.0.1") == 1, attempts
    assert attempts[0]["outcome"] == "busy"
    assert "sip:2001@127.0.0.1" not in [a["sip_uri"] for a in attempts]  # on the other call
    assert await pool.fetchval("SELECT disposition FROM call_records") == "missed"


async def test_a_doctor_who_declines_with_nobody_else_busy_leads_straight_to_voicemail(
    queueing_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, voice_440: Path, tmp_path: Path
) -> None:
    """Nobody is left to wait for once the only busy person declined: no queue (it would ring
    nobody), the busy prompt once, then the message and the callback promise."""
    heard = await resident_waits_while_1001_declines(queueing_hotline, kamailio, voice_440, tmp_path)
    assert heard.count(prompt("busy").payload("PCMU")[800:8800]) == 1
    assert prompt("queue_options").payload("PCMU")[400:2400] not in heard
    assert prompt("hold").payload("PCMU")[800:2400] not in heard
    for name in ("voicemail", "callback"):
        assert prompt(name).payload("PCMU")[400:2400] in heard, f"the {name} prompt was not heard"
    attempts = await pool.fetch("SELECT sip_uri FROM dial_attempts ORDER BY seq")
    assert [a["sip_uri"] for a in attempts].count("sip:1001@127.0.0.1") == 1
