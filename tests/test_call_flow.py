"""A resident's call end to end: sipp as the resident through Kamailio (record_route on), the
hotline service (its clock set by configuration, not faked), a doctor's softphone (baresip) or a
scripted sipp doctor answering, refusing or never answering — and what the service wrote down:
call record, dial attempts, recording, callback task.

The resident's phone is sipp: its voice is a 440 Hz capture it plays, its DTMF are sipp's
RFC 2833 captures, and its earpiece is a UDP socket of this test (the SDP's audio port).
The doctor's phone sends 1 kHz and records what it hears.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from ivr.prompts import prompt
from store.pii import PiiVault
from tests.hotline_peer import (  # noqa: F401  (fresh_kamailio: this module's `kamailio` fixture)
    Earpiece,
    Hotline,
    calls_done,
    fresh_kamailio,
    hotline_fixture,
)
from tests.rtp_pcap import ulaw_sine, write_rtp_pcap
from tests.sip_peers import Kamailio, run_sipp, sipp_result
from tests.softphone import SippDoctor, Softphone, start_sipp_doctor
from tests.tones import describe, has_tone, read_wav, ulaw_to_linear

pytestmark = pytest.mark.sip

SHANGHAI = ZoneInfo("Asia/Shanghai")
TUESDAY_10 = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)
TUESDAY_21 = datetime(2026, 11, 24, 21, 0, tzinfo=SHANGHAI)
ZHANG_GUILAN = "13800000001"  # 北塘街; own doctor 1001, assistant 2001 (routing/seed.py)
RING_TIMEOUT_S = 3.0


day_hotline = hotline_fixture(TUESDAY_10, ring_timeout_s=RING_TIMEOUT_S, check_promises=True)
night_hotline = hotline_fixture(TUESDAY_21, ring_timeout_s=RING_TIMEOUT_S, check_promises=True)


@pytest.fixture(scope="module")
def voice_440(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The resident's voice: 12 s of 440 Hz, as a capture sipp plays."""
    return write_rtp_pcap(tmp_path_factory.mktemp("voice") / "440.pcap", ulaw_sine(440, 12))


async def doctor_phone(ext: str, kamailio: Kamailio, tmp_path: Path, **options) -> Softphone:
    return await Softphone(ext, kamailio.port, tmp_path / f"phone-{ext}", **options).start()


async def resident_talks(kamailio: Kamailio, voice: Path) -> tuple[bytes, str]:
    """The resident calls, presses 1 in the greeting, talks (440 Hz) for 6 s and hangs up;
    returns what their earpiece heard (μ-law, in RTP order) and sipp's output."""
    ear = Earpiece()
    try:
        sipp = await run_sipp("resident_talks_to_doctor.xml", kamailio.port, service="hotline",
                              caller=ZHANG_GUILAN, timeout_s=30,
                              keys={"rtp_port": str(ear.port), "voice_pcap": str(voice)})
        code, out = await sipp_result(sipp)
        assert code == 0, out + kamailio.log_text()[-2000:]
        return ear.heard(), out
    finally:
        ear.close()


async def home_of(pool: asyncpg.Pool, resident_id: int) -> tuple[int, int, int]:
    """(district, center, team) of a resident, the team by the contract in force on TUESDAY."""
    row = await pool.fetchrow(
        """SELECT ce.district_id, r.center_id, k.team_id FROM residents r
           JOIN centers ce ON ce.id = r.center_id
           JOIN contracts k ON k.resident_id = r.id AND $2::date BETWEEN k.starts_on AND k.ends_on
           WHERE r.id = $1""", resident_id, TUESDAY_10.date())
    return row["district_id"], row["center_id"], row["team_id"]


async def scope_of(pool: asyncpg.Pool, record: asyncpg.Record) -> tuple:
    return (record["line"], record["district_id"], record["center_id"], record["team_id"],
            record["answered_by"])


async def assert_connected_call(pool: asyncpg.Pool, heard_by_resident: bytes, doctor: Softphone) -> asyncpg.Record:
    # the doctor's 1 kHz reached the resident's earpiece (the last seconds: the conversation)
    conversation = ulaw_to_linear(heard_by_resident[-8000 * 3:])
    assert has_tone(conversation, 8000, 1000), describe(conversation, 8000)
    # the resident's 440 Hz reached the doctor's softphone
    heard_by_doctor = read_wav(doctor.received_wav())
    assert has_tone(heard_by_doctor.mono[-heard_by_doctor.rate * 3:], heard_by_doctor.rate, 440), \
        describe(heard_by_doctor.mono, heard_by_doctor.rate)
    # the resident's BYE, through the record-routing proxy, ended the doctor's leg too
    assert doctor.closed_calls == 1

    record = await pool.fetchrow("SELECT * FROM call_records")
    assert record["disposition"] == "connected"
    assert record["resident_id"] is not None and record["connected_at"] is not None
    recording = Path(record["recording_path"])
    content = await asyncio.to_thread(recording.read_bytes)
    assert hashlib.sha256(content).hexdigest() == record["recording_sha256"]
    wav = await asyncio.to_thread(read_wav, recording)
    assert len(wav.channels) == 2 and wav.rate == 8000
    assert abs(wav.seconds - float(record["recording_seconds"])) < 0.01
    talk = slice(-wav.rate * 3, None)
    left, right = wav.channels[0][talk], wav.channels[1][talk]
    assert has_tone(left, wav.rate, 440), "left (resident): " + describe(left, wav.rate)
    assert has_tone(right, wav.rate, 1000), "right (staff): " + describe(right, wav.rate)
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0
    return record


async def test_weekday_10_00_rings_own_doctor_and_the_call_is_heard_recorded_and_written(
    day_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, voice_440: Path, tmp_path: Path
) -> None:
    own_doctor = await doctor_phone("1001", kamailio, tmp_path, tone_hz=1000)
    night_doctor = await doctor_phone("3001", kamailio, tmp_path, mode="ring")
    try:
        heard, _ = await resident_talks(kamailio, voice_440)
        await calls_done(day_hotline)
        record = await assert_connected_call(pool, heard, own_doctor)
        assert night_doctor.incoming_calls == 0
    finally:
        await own_doctor.stop()
        await night_doctor.stop()
    assert record["route_service"] == "day"
    assert "within the day window 08:00–17:00 → day service" in record["route_reason"]
    attempts = await pool.fetch("SELECT seq, sip_uri, outcome FROM dial_attempts ORDER BY seq")
    assert [(a["sip_uri"], a["outcome"]) for a in attempts] == [("sip:1001@127.0.0.1", "answered")]
    # where the call belongs (the console's scope): the number dialled, her center, district and
    # contracted team, and who answered; the key she pressed
    doctor = await pool.fetchval("SELECT id FROM staff WHERE sip_uri = 'sip:1001@127.0.0.1'")
    assert await scope_of(pool, record) == ("hotline", *await home_of(pool, record["resident_id"]), doctor)
    assert [(k["key"], k["menu"]) for k in json.loads(record["keys"])] == [("1", "menu")]


async def test_weekday_21_00_rings_the_duty_doctor(
    night_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, vault: PiiVault, voice_440: Path,
    tmp_path: Path
) -> None:
    # tonight's duty doctor of 北塘街, from the roster itself
    duty_ext = await pool.fetchval(
        """SELECT split_part(split_part(st.sip_uri, ':', 2), '@', 1)
           FROM duty_shifts s JOIN staff st ON st.id = s.doctor_id JOIN centers c ON c.id = s.center_id
           WHERE c.name = '北塘街' AND s.kind = 'duty' AND tstzrange(s.starts_at, s.ends_at) @> $1::timestamptz""",
        TUESDAY_21)
    assert duty_ext.startswith("3")
    duty_doctor = await doctor_phone(duty_ext, kamailio, tmp_path, tone_hz=1000)
    own_doctor = await doctor_phone("1001", kamailio, tmp_path, mode="ring")
    try:
        heard, _ = await resident_talks(kamailio, voice_440)
        await calls_done(night_hotline)
        record = await assert_connected_call(pool, heard, duty_doctor)
        assert own_doctor.incoming_calls == 0
    finally:
        await duty_doctor.stop()
        await own_doctor.stop()
    assert record["route_service"] == "night"
    # the duty doctor took it; the call is still her own team's (the contract's), for the console
    duty_id = await pool.fetchval("SELECT id FROM staff WHERE sip_uri = $1", f"sip:{duty_ext}@127.0.0.1")
    assert await scope_of(pool, record) == ("hotline", *await home_of(pool, record["resident_id"]), duty_id)


async def resident_waits(kamailio: Kamailio, voice: Path) -> bytes:
    """The resident presses 1 and waits until the service hangs up; what they heard."""
    ear = Earpiece()
    try:
        sipp = await run_sipp("resident_waits_for_doctor.xml", kamailio.port, service="hotline",
                              caller=ZHANG_GUILAN, timeout_s=80,
                              keys={"rtp_port": str(ear.port), "voice_pcap": str(voice)})
        code, out = await sipp_result(sipp, timeout_s=90)
        assert code == 0, out
        return ear.heard()
    finally:
        ear.close()


async def assert_missed_with_one_callback(pool: asyncpg.Pool, heard: bytes, first_outcome: str,
                                          ringback_heard: int) -> None:
    # the busy prompt after the doctor's phone rang or refused (the phones not registered are
    # passed over at once), and the callback promise at the end
    busy, callback = prompt("busy").payload("PCMU"), prompt("callback").payload("PCMU")
    assert heard.count(busy[800:8800]) == 1
    assert callback[800:8800] in heard
    # ringback only while a phone said it rang (the first 0.9 s of the 450 Hz burst)
    assert heard.count(prompt("ringback").payload("PCMU")[400:7600]) == ringback_heard
    record = await pool.fetchrow("SELECT * FROM call_records")
    assert record["disposition"] == "missed" and record["connected_at"] is None
    # the caller said nothing after the beep: no message, and no start of one left for recovery
    assert record["voicemail_offset_s"] is None
    assert await pool.fetchval("SELECT count(*) FROM voicemails") == 0
    attempts = await pool.fetch("SELECT sip_uri, outcome FROM dial_attempts ORDER BY seq")
    # the chain: own doctor, assistant, the center's agent, the district desk (nobody but the
    # doctor has a softphone registered: unreachable at once)
    assert [(a["sip_uri"], a["outcome"]) for a in attempts[:3]] == [
        ("sip:1001@127.0.0.1", first_outcome), ("sip:2001@127.0.0.1", "unreachable"),
        ("sip:4001@127.0.0.1", "unreachable")]
    assert {a["outcome"] for a in attempts[3:]} == {"unreachable"} and len(attempts) >= 4
    steps = [s["step"] for s in json.loads(record["route_explanation"])["steps"]]
    assert steps == ["own_doctor", "assistant", "center_agents", "desk", "voicemail"]
    tasks = await pool.fetch("SELECT * FROM tasks")
    assert len(tasks) == 1
    task = tasks[0]
    assert task["status"] == "open" and task["resident_id"] == record["resident_id"]
    assert task["due_at"] == record["offered_at"] + timedelta(hours=8)
    doctor_id = await pool.fetchval("SELECT id FROM staff WHERE sip_uri = 'sip:1001@127.0.0.1'")
    assert task["owner_staff_id"] == doctor_id
    assert await pool.fetchval("SELECT call_record_id FROM callback_calls") == record["id"]


async def test_doctor_busy_486_then_busy_prompt_next_target_and_a_callback_owed(
    day_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, voice_440: Path, tmp_path: Path
) -> None:
    doctor: SippDoctor = await start_sipp_doctor("doctor_busy.xml", kamailio.port, "1001",
                                                 workdir=tmp_path / "busy")
    try:
        heard = await resident_waits(kamailio, voice_440)
        code, out = await doctor.result()
        assert code == 0, out  # the doctor's phone saw INVITE, answered 486, got the ACK
        await calls_done(day_hotline)
    finally:
        await doctor.stop()
    await assert_missed_with_one_callback(pool, heard, "busy", ringback_heard=0)


async def test_doctor_never_answering_is_cancelled_at_the_ring_timeout_and_a_callback_owed(
    day_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, voice_440: Path, tmp_path: Path
) -> None:
    doctor = await doctor_phone("1001", kamailio, tmp_path, mode="ring")
    try:
        heard = await resident_waits(kamailio, voice_440)
        await calls_done(day_hotline)
        assert doctor.incoming_calls == 1 and doctor.answered_calls == 0
        await doctor.wait_event("CALL_CLOSED", timeout_s=5)  # our CANCEL stopped the ringing
    finally:
        await doctor.stop()
    # rang for RING_TIMEOUT_S (< the 5 s ringback cadence): one burst of ringback
    await assert_missed_with_one_callback(pool, heard, "no_answer", ringback_heard=1)
    ring = await pool.fetchrow("SELECT started_at, ended_at FROM dial_attempts WHERE seq = 1")
    assert RING_TIMEOUT_S <= (ring["ended_at"] - ring["started_at"]).total_seconds() < RING_TIMEOUT_S + 1


# 8613800000001: how some trunks send 张桂兰's mobile (country code, no + or 00); the SIP edge
# normalizes it as the directory stores it (routing/numbers.py), so she is still identified.
@pytest.mark.parametrize("caller", [ZHANG_GUILAN, "8613800000001"])
async def test_caller_hanging_up_mid_greeting_leaves_a_complete_record_and_no_callback(
    day_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, caller: str
) -> None:
    sipp = await run_sipp("resident_hangs_up.xml", kamailio.port, service="hotline", caller=caller)
    code, out = await sipp_result(sipp)
    assert code == 0, out
    await calls_done(day_hotline)
    record = await pool.fetchrow("SELECT * FROM call_records")
    assert record["disposition"] == "ivr_only"
    assert record["resident_id"] is not None
    assert record["answered_at"] is not None and record["ended_at"] is not None
    assert record["connected_at"] is None and record["route_service"] is None
    # placed before the greeting: a call given up early is still seen by its center
    assert await scope_of(pool, record) == ("hotline", *await home_of(pool, record["resident_id"]), None)
    assert json.loads(record["keys"]) == []
    assert 0.5 < float(record["recording_seconds"]) < 3
    assert record["recording_sha256"] is not None
    assert await pool.fetchval("SELECT count(*) FROM dial_attempts") == 0
    assert await pool.fetchval("SELECT count(*) FROM tasks") == 0


async def test_keys_outside_the_menu_replay_it_at_most_three_times_then_the_caller_is_put_through(
    day_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    doctor = await doctor_phone("1001", kamailio, tmp_path, tone_hz=1000)
    ear = Earpiece()
    try:
        sipp = await run_sipp("resident_presses_wrong_keys.xml", kamailio.port, service="hotline",
                              caller=ZHANG_GUILAN, timeout_s=40, keys={"rtp_port": str(ear.port)})
        code, out = await sipp_result(sipp, timeout_s=45)
        assert code == 0, out
        await calls_done(day_hotline)
        heard = ear.heard()
    finally:
        ear.close()
        await doctor.stop()
    menu, invalid = prompt("menu").payload("PCMU"), prompt("invalid").payload("PCMU")
    # 2 in the greeting: "invalid", menu; 2 again: "invalid", menu; 2 a third time: no more
    # menus — a resident who cannot work the keypad still reaches a doctor
    assert heard.count(invalid[800:4800]) == 2
    assert heard.count(menu[800:4800]) == 2
    assert doctor.answered_calls == 1
    record = await pool.fetchrow("SELECT disposition, route_service, keys FROM call_records")
    assert (record["disposition"], record["route_service"]) == ("connected", "day")
    assert [(k["key"], k["menu"]) for k in json.loads(record["keys"])] == [("2", "menu")] * 3


async def test_stopping_lets_a_call_in_progress_finish_and_turns_new_calls_away(
    day_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, voice_440: Path, tmp_path: Path
) -> None:
    """A deploy (SIGTERM) during a conversation: the node unregisters, new calls find it gone
    (the proxy says 404; an INVITE that still reaches it gets 503), and the resident talking to
    the doctor is not cut off: the call ends when they hang up, as 'connected'."""
    doctor = await doctor_phone("1001", kamailio, tmp_path, tone_hz=1000)
    ear = Earpiece()
    try:
        talking = await run_sipp("resident_talks_to_doctor.xml", kamailio.port, service="hotline",
                                 caller=ZHANG_GUILAN, timeout_s=30,
                                 keys={"rtp_port": str(ear.port), "voice_pcap": str(voice_440)})
        for _ in range(300):  # bounded: 15 s for the greeting, the key and the doctor's answer
            if await pool.fetchval("SELECT connected_at FROM call_records") is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the call was never connected")
        service = day_hotline.service
        winding = asyncio.create_task(service.wind_down(30.0, cut=asyncio.Event()))
        for _ in range(100):  # bounded: 5 s for the registrar to confirm
            if not service.agent.registered and service.winding_down:
                break
            await asyncio.sleep(0.05)
        assert not service.agent.registered
        # a new resident through the proxy: nobody registered as the hotline any more
        code, out = await sipp_result(await run_sipp("resident_finds_no_hotline.xml", kamailio.port,
                                                     service="hotline", caller="13800000002"))
        assert code == 0, out
        # an INVITE that still reaches the node itself (sent before the PBX learnt it) gets 503
        code, out = await sipp_result(await run_sipp("resident_is_turned_away.xml", day_hotline.sip_port,
                                                     service="hotline", caller="13800000003"))
        assert code == 0, out
        code, out = await sipp_result(talking, timeout_s=40)
        assert code == 0, out  # the conversation went on to its end
        assert await asyncio.wait_for(winding, 10) == 0  # nothing left to hang up
        heard = ear.heard()
    finally:
        ear.close()
        await doctor.stop()
    records = await pool.fetch("SELECT * FROM call_records ORDER BY id")
    assert [r["disposition"] for r in records] == ["connected", "failed"]
    assert records[1]["route_reason"] == "turned away: this hotline node is shutting down"
    assert records[1]["caller_number_masked"] == "138****0003"
    conversation = ulaw_to_linear(heard[-8000 * 3:])
    assert has_tone(conversation, 8000, 1000), describe(conversation, 8000)
