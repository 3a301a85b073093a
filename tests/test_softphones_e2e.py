"""Residents on real softphones: a stock phone calls the hotline, presses 1 (RFC 2833), talks
with the doctor on another stock phone, and one of them hangs up — checked by tone both ways
(the resident says 440 Hz, the doctor 1000 Hz), in the service's recording, and in the call
record. The phones are the ones residents and doctors install, as they come:

- baresip with Debian's default module set (uuid: +sip.instance, a Supported header with tags);
- baresip without the `uuid` module (tests/softphone.py's set: an empty `Supported:` header);
- Linphone 5.1 (linphonec): GRUU, opus/speex offered before G.711, telephone-event at 48/16/8 kHz.

Each is caller once and callee once. Two calls last longer than 32 s (RFC 3261 Timer H/B: a
lost ACK shows then) and are hung up, one by the resident, one by the doctor, with Linphone on
the far side of the hang-up each time. Keys sent other ways reach the doctor too: Linphone
set to SIP INFO (application/dtmf-relay) or to in-band tones (mixed into its voice), and a
PSTN gateway's in-band 1 (697+1209 Hz in the audio, no telephone-event offered; sipp).

The module shares one Kamailio (each test clears the bindings the previous one could leave).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import structlog.testing

from tests.hotline_peer import Earpiece, Hotline, calls_done, hotline_fixture
from tests.linphone import Linphone
from tests.rtp_pcap import ulaw_sine, write_rtp_pcap
from tests.sip_peers import Kamailio, run_sipp, sipp_result, start_kamailio
from tests.softphone import Softphone
from tests.tones import describe, has_tone, read_wav, ulaw_to_linear

pytestmark = pytest.mark.sip

SHANGHAI = ZoneInfo("Asia/Shanghai")
TUESDAY_10 = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)
ZHANG_GUILAN = "13800000001"  # 北塘街; own doctor 1001 (routing/seed.py)
DOCTOR = "1001"
RESIDENT_HZ, DOCTOR_HZ = 440, 1000
# Longer than 64·T1 = 32 s: a 200 OK whose ACK never arrived is given up by then (Linphone
# BYEs), and a BYE the proxy cannot route would have been seen.
LONG_CALL_S = 34.0
Phone = Softphone | Linphone

day_hotline = hotline_fixture(TUESDAY_10, ring_timeout_s=15.0, menu_timeout_s=5.0)


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    proxy = start_kamailio(tmp_path_factory.mktemp("kamailio-e2e"))
    yield proxy
    proxy.stop()


def _unregister_all(proxy_port: int, aor: str) -> None:
    """REGISTER Contact: * Expires: 0 — the proxy forgets every binding of this AOR."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        me = s.getsockname()[1]
        s.sendto((f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                  f"From: <sip:{aor}@127.0.0.1>;tag={uuid.uuid4().hex[:8]}\r\n"
                  f"To: <sip:{aor}@127.0.0.1>\r\nCall-ID: {uuid.uuid4().hex}\r\n"
                  f"CSeq: 1 REGISTER\r\nContact: *\r\nExpires: 0\r\nMax-Forwards: 70\r\n"
                  f"Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", proxy_port))
        reply = s.recv(4096)
        assert reply.startswith(b"SIP/2.0 200"), reply[:200]


@pytest.fixture(autouse=True)
def _no_bindings_left(kamailio: Kamailio) -> None:
    # autouse: set up before the hotline and the phones of the test register
    for aor in ("hotline", DOCTOR, ZHANG_GUILAN):
        _unregister_all(kamailio.port, aor)


@pytest.fixture
async def phones(kamailio: Kamailio, tmp_path: Path) -> AsyncIterator[Any]:
    """Factory: `await phones("linphone" | "baresip" | "baresip-uuid", ext, **options)`."""
    started: list[Phone] = []

    async def start(kind: str, ext: str, **options: Any) -> Phone:
        workdir = tmp_path / f"{kind}-{ext}"
        phone: Phone
        if kind == "linphone":
            phone = Linphone(ext, kamailio.port, workdir, **options)
        elif kind == "baresip":  # tests/softphone.py's modules: no uuid
            phone = Softphone(ext, kamailio.port, workdir, **options)
        elif kind == "baresip-default":
            phone = Softphone(ext, kamailio.port, workdir, modules="default", codecs=None,
                              **options)
        else:
            raise ValueError(kind)
        started.append(phone)
        return await phone.start()

    yield start
    for phone in started:
        await phone.stop()


# --- what a call must show ---------------------------------------------------------------------

async def until_talking(pool: asyncpg.Pool, timeout_s: float = 10.0,
                        query: str = "SELECT recording_path FROM call_records") -> None:
    """Until the service's recording of the call (written as the call goes) has, in its last
    1.5 s, the resident's 440 Hz on the left and the doctor's 1000 Hz on the right: the bridge
    carries both voices. (Whether each phone heard the other is checked on the phones' own
    recordings after the hang-up: Linphone writes its WAV header only then.)"""
    deadline = time.monotonic() + timeout_s
    summary = "no recording yet"
    while time.monotonic() < deadline:
        path = await pool.fetchval(query)
        try:
            wav = await asyncio.to_thread(read_wav, path) if path else None
        except (FileNotFoundError, ValueError):  # not created or no header yet
            wav = None
        if wav is not None:
            span = slice(-int(wav.rate * 1.5), None)
            left, right = wav.channels[0][span], wav.channels[1][span]
            if wav.seconds > 1.5 and has_tone(left, wav.rate, RESIDENT_HZ) \
                    and has_tone(right, wav.rate, DOCTOR_HZ):
                return
            summary = f"left {describe(left, wav.rate)}; right {describe(right, wav.rate)}"
        await asyncio.sleep(0.2)
    raise AssertionError(f"no conversation in the service's recording in {timeout_s} s: {summary}")


async def until_established(caller: Phone, timeout_s: float = 10.0) -> None:
    """Until the caller's phone says the call is up; fails at once, with the phone's reason
    (e.g. "400 Bad Request"), when the call ended instead."""
    deadline = time.monotonic() + timeout_s
    while not caller.events("CALL_ESTABLISHED", "outgoing"):
        if closed := caller.events("CALL_CLOSED"):
            raise AssertionError(f"{caller.ext}'s call to the hotline ended before it was "
                                 f"answered: {closed[-1]}")
        assert time.monotonic() < deadline, f"{caller.ext}: no answer in {timeout_s} s"
        await asyncio.sleep(0.05)


async def until_answered(pool: asyncpg.Pool, timeout_s: float = 10.0) -> None:
    """Until the service has answered the call (its record says so)."""
    deadline = time.monotonic() + timeout_s
    while await pool.fetchval("SELECT answered_at FROM call_records") is None:
        assert time.monotonic() < deadline, "the hotline did not answer the call"
        await asyncio.sleep(0.05)


def assert_keypress_worked(logs: list[dict[str, Any]]) -> None:
    """The 1 was read: no menu complaint, no "put through after three tries"."""
    events = [e["event"] for e in logs]
    assert "call.routed" in events, events
    assert "ivr.menu_invalid" not in events and "ivr.menu_gave_up" not in events, events


async def assert_recorded_conversation(pool: asyncpg.Pool) -> None:
    record = await pool.fetchrow("SELECT * FROM call_records")
    assert record["disposition"] == "connected", dict(record)
    assert record["connected_at"] is not None and record["route_service"] == "day"
    recording = Path(record["recording_path"])
    content = await asyncio.to_thread(recording.read_bytes)
    assert hashlib.sha256(content).hexdigest() == record["recording_sha256"]
    wav = await asyncio.to_thread(read_wav, recording)
    talk = slice(-wav.rate * 2 - wav.rate // 2, -wav.rate // 2)  # before the last half second
    left, right = wav.channels[0][talk], wav.channels[1][talk]
    assert has_tone(left, wav.rate, RESIDENT_HZ), "resident: " + describe(left, wav.rate)
    assert has_tone(right, wav.rate, DOCTOR_HZ), "doctor: " + describe(right, wav.rate)
    attempts = await pool.fetch("SELECT sip_uri, outcome FROM dial_attempts ORDER BY seq")
    assert [(a["sip_uri"], a["outcome"]) for a in attempts] == [(f"sip:{DOCTOR}@127.0.0.1",
                                                                 "answered")]


async def resident_calls_doctor(hotline: Hotline, pool: asyncpg.Pool, resident: Phone,
                                doctor: Phone, *, hang_up: str = "resident",
                                talk_s: float = 0.0, doctor_holds: bool = False) -> None:
    """The whole call: dial the hotline, press 1 once answered, talk until each side hears
    the other (and `talk_s` more; `doctor_holds`: the doctor's Linphone pauses the call and
    resumes it meanwhile, which must not end it and is noted in the record), then `hang_up`
    ("resident" or "doctor") ends it, and both phones must see the end."""
    with structlog.testing.capture_logs() as logs:
        await resident.dial("hotline")
        await until_established(resident)
        await until_answered(pool)
        await resident.send_digits("1")  # during the greeting: barge-in
        await doctor.wait_event("CALL_ESTABLISHED", direction="incoming", timeout_s=15)
        connected = time.monotonic()
        await until_talking(pool)
        held = not doctor_holds
        while time.monotonic() - connected < talk_s:  # a long call: nobody may drop out
            assert resident.closed_calls == 0 and doctor.closed_calls == 0, \
                f"call ended after {time.monotonic() - connected:.1f} s"
            if not held:
                held = True
                await doctor.command("pause")  # a re-INVITE with a=sendonly
                await until_holds(pool, 1)
                await doctor.command("resume")
                await until_holds(pool, 2)
            await asyncio.sleep(0.5)
        await (resident if hang_up == "resident" else doctor).hangup()
        await resident.wait_event("CALL_CLOSED", timeout_s=10)
        await doctor.wait_event("CALL_CLOSED", timeout_s=10)
        await calls_done(hotline)
    assert_keypress_worked(logs)
    # each heard the other right up to the hang-up, and not themselves
    for phone, theirs, mine in ((resident, DOCTOR_HZ, RESIDENT_HZ),
                                (doctor, RESIDENT_HZ, DOCTOR_HZ)):
        audio = read_wav(phone.received_wav())
        tail = audio.mono[-audio.rate * 2 - audio.rate // 2:-audio.rate // 2]
        assert has_tone(tail, audio.rate, theirs) and not has_tone(tail, audio.rate, mine), \
            f"{phone.ext}: " + describe(tail, audio.rate)
    assert (doctor.incoming_calls, doctor.answered_calls) == (1, 1)
    await assert_recorded_conversation(pool)


async def until_holds(pool: asyncpg.Pool, count: int, timeout_s: float = 10.0) -> None:
    """Until the call record notes `count` hold changes (bounded)."""
    for _ in range(int(timeout_s / 0.1)):
        holds = await pool.fetchval("SELECT holds FROM call_records ORDER BY id DESC LIMIT 1")
        if holds is not None and len(json.loads(holds)) >= count:
            notes = json.loads(holds)
            assert [(n["side"], n["on"]) for n in notes[:2]] == [("staff", True), ("staff", False)][:count]
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the record notes no {count} hold changes")


# --- the tests ---------------------------------------------------------------------------------

@pytest.mark.timeout(150)
async def test_default_baresip_resident_and_linphone_doctor_talk_past_32_s_resident_hangs_up(
    day_hotline: Hotline, pool: asyncpg.Pool, phones: Any
) -> None:
    doctor = await phones("linphone", DOCTOR, tone_hz=DOCTOR_HZ)
    resident = await phones("baresip-default", ZHANG_GUILAN, tone_hz=RESIDENT_HZ)
    await resident_calls_doctor(day_hotline, pool, resident, doctor, hang_up="resident",
                                talk_s=LONG_CALL_S)


async def test_linphone_resident_and_baresip_doctor_without_uuid(
    day_hotline: Hotline, pool: asyncpg.Pool, phones: Any
) -> None:
    doctor = await phones("baresip", DOCTOR, tone_hz=DOCTOR_HZ)
    resident = await phones("linphone", ZHANG_GUILAN, tone_hz=RESIDENT_HZ)
    await resident_calls_doctor(day_hotline, pool, resident, doctor, hang_up="resident")


async def test_baresip_resident_without_uuid_and_default_baresip_doctor(
    day_hotline: Hotline, pool: asyncpg.Pool, phones: Any
) -> None:
    doctor = await phones("baresip-default", DOCTOR, tone_hz=DOCTOR_HZ)
    resident = await phones("baresip", ZHANG_GUILAN, tone_hz=RESIDENT_HZ)
    await resident_calls_doctor(day_hotline, pool, resident, doctor, hang_up="doctor")


@pytest.mark.timeout(150)
async def test_linphone_resident_and_linphone_doctor_talk_past_32_s_with_hold_doctor_hangs_up(
    day_hotline: Hotline, pool: asyncpg.Pool, phones: Any
) -> None:
    """The doctor also puts the resident on hold and takes her off it (Linphone's pause and
    resume): the call goes on, the record notes both."""
    doctor = await phones("linphone", DOCTOR, tone_hz=DOCTOR_HZ)
    resident = await phones("linphone", ZHANG_GUILAN, tone_hz=RESIDENT_HZ)
    await resident_calls_doctor(day_hotline, pool, resident, doctor, hang_up="doctor",
                                talk_s=LONG_CALL_S, doctor_holds=True)


# --- keys other than RFC 4733 ------------------------------------------------------------------

async def test_linphone_resident_pressing_1_by_sip_info_reaches_the_doctor(
    day_hotline: Hotline, pool: asyncpg.Pool, phones: Any
) -> None:
    """Linphone set to send keys as SIP INFO (application/dtmf-relay)."""
    doctor = await phones("baresip", DOCTOR, tone_hz=DOCTOR_HZ)
    resident = await phones("linphone", ZHANG_GUILAN, tone_hz=RESIDENT_HZ, dtmf="info")
    await resident_calls_doctor(day_hotline, pool, resident, doctor, hang_up="resident")


async def test_linphone_resident_pressing_1_in_band_reaches_the_doctor(
    day_hotline: Hotline, pool: asyncpg.Pool, phones: Any
) -> None:
    """Linphone set to send keys as tones in its audio (neither RFC 4733 nor INFO)."""
    doctor = await phones("baresip", DOCTOR, tone_hz=DOCTOR_HZ)
    resident = await phones("linphone", ZHANG_GUILAN, tone_hz=RESIDENT_HZ, dtmf="inband")
    await resident_calls_doctor(day_hotline, pool, resident, doctor, hang_up="resident")


# --- in-band DTMF --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inband_1_then_voice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PSTN gateway's caller: 0.3 s of line noise floor, the 1 key as tones (697+1209 Hz,
    120 ms, -10 dBm0 each), then 12 s of talking (440 Hz)."""
    import audioop

    from tests.test_dtmf_inband import key_tone, silence

    key = audioop.lin2ulaw((silence(300) + key_tone("1", 120) + silence(200)).tobytes(), 2)
    return write_rtp_pcap(tmp_path_factory.mktemp("inband") / "inband_1.pcap",
                          key + ulaw_sine(RESIDENT_HZ, 12))


async def test_an_in_band_1_from_a_gateway_reaches_the_doctor(
    day_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, phones: Any,
    inband_1_then_voice: Path
) -> None:
    doctor = await phones("baresip", DOCTOR, tone_hz=DOCTOR_HZ)
    ear = Earpiece()
    try:
        with structlog.testing.capture_logs() as logs:
            sipp = await run_sipp("resident_presses_1_inband.xml", kamailio.port,
                                  service="hotline", caller=ZHANG_GUILAN, timeout_s=30,
                                  keys={"rtp_port": str(ear.port),
                                        "voice_pcap": str(inband_1_then_voice)})
            code, out = await sipp_result(sipp)
            assert code == 0, out + kamailio.log_text()[-2000:]
            await calls_done(day_hotline)
        heard = ear.heard()
    finally:
        ear.close()
    assert_keypress_worked(logs)
    assert doctor.answered_calls == 1
    conversation = ulaw_to_linear(heard[-8000 * 3:])
    assert has_tone(conversation, 8000, DOCTOR_HZ), describe(conversation, 8000)
    await assert_recorded_conversation(pool)
    # nothing else was taken for a key: the greeting was cut by the 1, not replayed
    assert not [e for e in logs if re.match(r"ivr\.menu", e["event"])]
