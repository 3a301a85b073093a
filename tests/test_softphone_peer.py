"""The doctors' test phones work with real components, before any hotline test relies on them.

tests/tones.py must tell tones apart (and must be able to say no); baresip softphones at the
test Kamailio must hear each other's tone; the sipp doctors and the baresip modes must give
exactly 486 (busy), 487 (rings until cancelled) and a 1 kHz voice (answers).
"""

from __future__ import annotations

import asyncio
import audioop
import struct
import wave
from array import array
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.sip_peers import Kamailio, run_sipp, sipp_result
from tests.tones import (
    alaw_to_linear,
    describe,
    dominant_frequency,
    has_tone,
    read_wav,
    rms,
    sine,
    tone_power,
    tone_ratio,
    ulaw_to_linear,
    ulaw_tone,
)

if TYPE_CHECKING:
    from tests.softphone import SippDoctor, SippDoctorFactory, Softphone, SoftphoneFactory

# The `softphone` and `sipp_doctor` fixture factories (conftest does not load them for every
# test module: only the tests that play doctors need them).
sip = pytest.mark.sip

# --- tones.py --------------------------------------------------------------------------------


def test_a_tone_is_found_at_its_frequency_and_not_at_another() -> None:
    a440, a1000 = sine(440, 8000, 1.0), sine(1000, 8000, 1.0)
    assert has_tone(a440, 8000, 440)
    assert not has_tone(a440, 8000, 1000)
    assert has_tone(a1000, 8000, 1000)
    assert not has_tone(a1000, 8000, 440)
    assert dominant_frequency(a440, 8000) == pytest.approx(440, abs=1)
    assert dominant_frequency(a1000, 8000) == pytest.approx(1000, abs=1)
    # a sine of amplitude A: power at its frequency A²/2, the whole of its power
    assert tone_power(a440, 8000, 440) == pytest.approx((0.5 * 32767) ** 2 / 2, rel=0.02)
    assert tone_ratio(a440, 8000, 440) == pytest.approx(1.0, abs=0.02)
    assert tone_ratio(a440, 8000, 1000) < 0.001


def test_silence_and_noise_carry_no_tone() -> None:
    silence = array("h", bytes(16000))
    assert not has_tone(silence, 8000, 440)
    assert dominant_frequency(silence, 8000) == 0.0
    # white-ish noise (a fixed LCG, so the test is repeatable) is loud but no tone
    state, noise = 12345, array("h")
    for _ in range(8000):
        state = (1103515245 * state + 12345) % 2**31
        noise.append((state >> 15) % 20000 - 10000)
    assert rms(noise) > 3000
    assert not has_tone(noise, 8000, 440)
    assert not has_tone(noise, 8000, 1000)


def test_a_weak_tone_under_a_strong_one_is_not_what_the_audio_carries() -> None:
    mix = array("h", (a + b // 10 for a, b in zip(sine(440, 8000, 1.0),
                                                   sine(1000, 8000, 1.0), strict=True)))
    assert has_tone(mix, 8000, 440)
    assert not has_tone(mix, 8000, 1000)  # present, but 1 % of the power


def test_a_tone_with_phase_jumps_and_gaps_like_rtp_audio_is_still_found() -> None:
    # 20 ms frames whose phase restarts every frame and one frame in five lost (silence)
    frame = sine(1000, 8000, 0.0203)[:160]
    choppy = array("h")
    for i in range(100):
        choppy.extend(array("h", bytes(320)) if i % 5 == 4 else frame)
    assert has_tone(choppy, 8000, 1000)
    assert not has_tone(choppy, 8000, 440)


def test_g711_bytes_decode_to_the_tone() -> None:
    assert has_tone(ulaw_to_linear(ulaw_tone(1000, 0.5)), 8000, 1000)
    assert not has_tone(ulaw_to_linear(ulaw_tone(1000, 0.5)), 8000, 440)
    alaw = audioop.lin2alaw(sine(440, 8000, 0.5).tobytes(), 2)
    assert has_tone(alaw_to_linear(alaw), 8000, 440)


def _write_wav(path: Path, channels: list[array], rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(len(channels))
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(array("h", (s for frame in zip(*channels, strict=True)
                                   for s in frame)).tobytes())


def test_a_stereo_wav_is_read_per_channel(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    _write_wav(path, [sine(440, 16000, 0.5), sine(1000, 16000, 0.5)], 16000)
    audio = read_wav(path)
    assert (audio.rate, len(audio.channels), audio.seconds) == (16000, 2, 0.5)
    assert has_tone(audio.channels[0], 16000, 440) and not has_tone(audio.channels[0], 16000, 1000)
    assert has_tone(audio.channels[1], 16000, 1000) and not has_tone(audio.channels[1], 16000, 440)


def test_a_wav_still_being_written_is_read_to_its_end(tmp_path: Path) -> None:
    # baresip's sndfile fills in the data size only when the call ends
    path = tmp_path / "open.wav"
    _write_wav(path, [sine(1000, 8000, 0.5)], 8000)
    raw = bytearray(path.read_bytes())
    data = raw.index(b"data")
    raw[data + 4:data + 8] = struct.pack("<I", 0)
    path.write_bytes(bytes(raw))
    audio = read_wav(path)
    assert audio.seconds == 0.5 and has_tone(audio.mono, 8000, 1000)
    with pytest.raises(ValueError, match="not a RIFF/WAVE"):
        (tmp_path / "junk.wav").write_bytes(b"junk" * 10)
        read_wav(tmp_path / "junk.wav")


# --- baresip softphones ----------------------------------------------------------------------

def _heard(phone: Softphone) -> tuple[array, int, str]:
    audio = read_wav(phone.received_wav())
    return audio.mono, audio.rate, describe(audio.mono, audio.rate)


@sip
async def test_two_softphones_hear_each_others_tone_through_kamailio(
    softphone: SoftphoneFactory,
) -> None:
    caller = await softphone("7101", tone_hz=440)
    callee = await softphone("7102", tone_hz=1000, answer_after=0.5)
    await caller.dial(callee.ext)
    established = await callee.wait_event("CALL_ESTABLISHED", direction="incoming", timeout_s=5)
    rang = callee.events("CALL_INCOMING")[0]
    assert established["at"] - rang["at"] >= 0.45  # the callee let it ring before answering
    await caller.wait_event("CALL_ESTABLISHED", direction="outgoing", timeout_s=5)
    await asyncio.sleep(2)  # both talk
    await caller.hangup()
    await caller.wait_event("CALL_CLOSED", timeout_s=5)
    await callee.wait_event("CALL_CLOSED", timeout_s=5)
    assert (callee.incoming_calls, callee.answered_calls) == (1, 1)
    assert (caller.incoming_calls, caller.answered_calls) == (0, 0)
    assert caller.received_wav().name == "call-01-received.wav"  # kept apart from later calls

    samples, rate, summary = _heard(caller)
    assert len(samples) / rate > 1.5, summary
    assert has_tone(samples, rate, 1000), summary  # the callee's voice
    assert not has_tone(samples, rate, 440), summary  # not its own
    samples, rate, summary = _heard(callee)
    assert len(samples) / rate > 1.5, summary
    assert has_tone(samples, rate, 440), summary
    assert not has_tone(samples, rate, 1000), summary


@sip
async def test_busy_and_ringing_softphones_refuse_and_ring_until_cancelled(
    softphone: SoftphoneFactory, kamailio: Kamailio
) -> None:
    busy = await softphone("7103", mode="busy")
    ringing = await softphone("7104", mode="ring")
    probes = [await run_sipp("doctor_probe_expects_busy.xml", kamailio.port, service="7103",
                             caller="probe", timeout_s=10),
              await run_sipp("doctor_probe_cancels.xml", kamailio.port, service="7104",
                             caller="probe", timeout_s=10)]
    for probe in probes:
        code, out = await sipp_result(probe)
        assert code == 0, out + busy.log_text()[-1500:] + ringing.log_text()[-1500:]
    await busy.wait_event("CALL_CLOSED", timeout_s=5)
    await ringing.wait_event("CALL_CLOSED", timeout_s=5)
    assert (busy.incoming_calls, busy.answered_calls) == (1, 0)
    assert (ringing.incoming_calls, ringing.answered_calls) == (1, 0)
    assert busy.received_wavs() == ringing.received_wavs() == []  # no call ever had audio

    # a stopped phone leaves no binding behind: the next call to it is not forked to a corpse
    assert await ringing.known_to_proxy()
    await ringing.stop()
    assert not await ringing.known_to_proxy()


# --- sipp doctors ----------------------------------------------------------------------------

async def _probe(scenario: str, doctor: SippDoctor, kamailio: Kamailio) -> None:
    probe = await run_sipp(scenario, kamailio.port, service=doctor.ext, caller="probe",
                           timeout_s=10)
    code, out = await sipp_result(probe)
    doctor_code, doctor_out = await doctor.result(10)
    assert code == 0, out + kamailio.log_text()[-2000:]
    assert doctor_code == 0, doctor_out


@sip
async def test_a_busy_sipp_doctor_answers_486(
    sipp_doctor: SippDoctorFactory, kamailio: Kamailio
) -> None:
    doctor = await sipp_doctor("doctor_busy.xml", "7201")
    await _probe("doctor_probe_expects_busy.xml", doctor, kamailio)


@sip
async def test_a_ringing_sipp_doctor_is_cancelled_with_487(
    sipp_doctor: SippDoctorFactory, kamailio: Kamailio
) -> None:
    doctor = await sipp_doctor("doctor_rings_forever.xml", "7202")
    await _probe("doctor_probe_cancels.xml", doctor, kamailio)


@sip
async def test_an_answering_sipp_doctor_speaks_a_1khz_tone_until_the_bye(
    sipp_doctor: SippDoctorFactory, softphone: SoftphoneFactory
) -> None:
    doctor = await sipp_doctor("doctor_answers.xml", "7203")
    caller = await softphone("7105", tone_hz=440)
    await caller.dial(doctor.ext)
    await caller.wait_event("CALL_ESTABLISHED", direction="outgoing", timeout_s=5)
    await asyncio.sleep(1.5)
    await caller.hangup()
    await caller.wait_event("CALL_CLOSED", timeout_s=5)
    code, out = await doctor.result(10)
    assert code == 0, out
    samples, rate, summary = _heard(caller)
    assert len(samples) / rate > 1.0, summary
    assert has_tone(samples, rate, 1000), summary
    assert not has_tone(samples, rate, 440), summary
