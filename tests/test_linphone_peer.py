"""The new test phones work with real components before a hotline test relies on them: Linphone
(tests/linphone.py) and baresip with Debian's default modules, calling each other through the
test Kamailio, each as caller and as callee, hearing each other's tone, pressing keys, hanging
up from either side, and leaving no binding behind."""

from __future__ import annotations

import asyncio

import pytest

from tests.linphone import LinphoneFactory, linphone  # noqa: F401  (fixture)
from tests.softphone import SoftphoneFactory
from tests.tones import describe, has_tone, read_wav

pytestmark = pytest.mark.sip


def heard(path) -> tuple[object, int, str]:
    audio = read_wav(path)
    return audio.mono, audio.rate, describe(audio.mono, audio.rate)


async def test_linphone_and_default_baresip_call_each_other_both_ways(
    linphone: LinphoneFactory, softphone: SoftphoneFactory  # noqa: F811
) -> None:
    lin = await linphone("7311", tone_hz=440, answer_after=0.3)
    bare = await softphone("7312", tone_hz=1000, modules="default", codecs=None)

    # Linphone calls, presses 1 and 5, baresip hangs up
    await lin.dial(bare.ext)
    await bare.wait_event("CALL_ESTABLISHED", direction="incoming", timeout_s=5)
    await lin.wait_event("CALL_ESTABLISHED", direction="outgoing", timeout_s=5)
    await lin.send_digits("15")
    await bare.wait_event("CALL_DTMF_START", count=2, timeout_s=5)
    assert [e.get("param") for e in bare.events("CALL_DTMF_START")] == ["1", "5"], bare.events("CALL_DTMF_START")
    await asyncio.sleep(1.5)  # both talk
    await bare.hangup()
    await lin.wait_event("CALL_CLOSED", timeout_s=5)
    await bare.wait_event("CALL_CLOSED", timeout_s=5)
    samples, rate, summary = heard(lin.received_wav())
    assert has_tone(samples, rate, 1000) and not has_tone(samples, rate, 440), summary
    samples, rate, summary = heard(bare.received_wav())
    assert has_tone(samples, rate, 440) and not has_tone(samples, rate, 1000), summary

    # baresip calls, presses 2, Linphone answers and hangs up
    await bare.dial(lin.ext)
    await lin.wait_event("CALL_ESTABLISHED", direction="incoming", timeout_s=5)
    await bare.wait_event("CALL_ESTABLISHED", direction="outgoing", count=1, timeout_s=5)
    await bare.send_digits("2")
    assert (await lin.wait_event("DTMF", timeout_s=5))["key"] == "2"
    await asyncio.sleep(1.5)
    await lin.hangup()
    await bare.wait_event("CALL_CLOSED", count=2, timeout_s=5)
    await lin.wait_event("CALL_CLOSED", count=2, timeout_s=5)
    assert (lin.incoming_calls, lin.answered_calls) == (1, 1)
    assert len(lin.received_wavs()) == 2
    samples, rate, summary = heard(lin.received_wav())
    assert has_tone(samples, rate, 1000) and not has_tone(samples, rate, 440), summary

    # a stopped Linphone leaves no binding behind
    assert await bare_known(bare, lin.ext)
    await lin.stop()
    assert not await bare_known(bare, lin.ext)


async def bare_known(bare, ext: str) -> bool:
    from tests.softphone import options_status

    return await asyncio.to_thread(options_status, bare.proxy_port, ext) != 404


async def test_a_busy_linphone_declines_and_a_ringing_one_rings(
    linphone: LinphoneFactory, softphone: SoftphoneFactory  # noqa: F811
) -> None:
    busy = await linphone("7313", mode="busy")
    ringing = await linphone("7314", mode="ring")
    caller = await softphone("7315")
    await caller.dial(busy.ext)
    await caller.wait_event("CALL_CLOSED", timeout_s=5)
    assert busy.incoming_calls == 1 and busy.answered_calls == 0
    await caller.dial(ringing.ext)
    await ringing.wait_event("CALL_INCOMING", timeout_s=5)
    await caller.hangup()  # CANCEL
    await ringing.wait_event("CALL_CLOSED", timeout_s=5)
    await caller.wait_event("CALL_CLOSED", count=2, timeout_s=5)
    assert ringing.answered_calls == 0
