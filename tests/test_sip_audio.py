"""Audio on a call as G.711 bytes: a prompt arrives at the resident unchanged, and what the
resident sends is kept as it arrived — no 8-bit round trip on the way."""

from __future__ import annotations

import asyncio
import audioop
import math
import socket
import struct
import time
import wave
from pathlib import Path

import pytest

from telephony.agent import SipAgent
from telephony.prompts import Prompt
from tests.sip_peers import Kamailio, rtp_packet, run_sipp, sipp_result

pytestmark = pytest.mark.sip


def tone_wav(path: Path, hz: float, seconds: float, rate: int = 16000) -> Path:
    """A sine tone as a 16 kHz WAV: the prompt must be resampled and encoded to be played."""
    samples = [int(12000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(int(rate * seconds))]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return path


def test_a_prompt_is_converted_once_per_codec(tmp_path: Path) -> None:
    prompt = Prompt.load(tone_wav(tmp_path / "tone.wav", 440, 0.5))
    assert prompt.seconds == pytest.approx(0.5)
    assert len(prompt.payload("PCMU")) == len(prompt.payload("PCMA")) == 4000  # 8 kHz, 1 byte
    linear = audioop.ulaw2lin(prompt.payload("PCMU"), 2)
    assert audioop.rms(linear, 2) > 5000  # the tone, not silence
    with pytest.raises(ValueError, match="no encoding for codec G729"):
        prompt.payload("G729")


async def test_prompt_bytes_reach_the_resident_unchanged_and_theirs_reach_us(
    agent: SipAgent, kamailio: Kamailio, tmp_path: Path
) -> None:
    prompt = Prompt.load(tone_wav(tmp_path / "tone.wav", 440, 0.6))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone_audio:
        phone_audio.bind(("127.0.0.1", 0))
        phone_audio.settimeout(0.5)
        sipp = await run_sipp("resident_listens.xml", kamailio.port, service="hotline",
                              caller="13800000001",
                              keys={"rtp_port": str(phone_audio.getsockname()[1])})
        leg = await asyncio.wait_for(agent.next_call(), 10)
        await leg.answer()
        assert leg.codec == "PCMU"

        received: list[tuple[int, bytes]] = []

        def listen(seconds: float) -> None:
            # RTP flows all the time (silence between prompts), so listen for a fixed span
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    packet = phone_audio.recv(2048)
                except TimeoutError:
                    continue
                received.append((struct.unpack("!H", packet[2:4])[0], packet[12:]))

        listening = asyncio.create_task(asyncio.to_thread(listen, prompt.seconds + 1.0))
        assert await leg.play(prompt)
        await listening
        # what the resident heard contains the prompt's μ-law bytes exactly, in order
        heard = b"".join(payload for _, payload in sorted(received))
        assert prompt.payload("PCMU") in heard
        assert all(len(p) == 160 for _, p in received)

        # the resident speaks: our side keeps the payloads byte for byte
        service_rtp = ("127.0.0.1", leg._rtp().inPort)
        spoken = [bytes([(i * 7 + j) % 251 for j in range(160)]) for i in range(25)]
        leg.received_audio()  # forget anything before
        for seq, payload in enumerate(spoken, start=1):
            phone_audio.sendto(rtp_packet(seq, payload), service_rtp)
        await asyncio.sleep(0.5)
        assert leg.received_audio() == b"".join(spoken)

        await leg.hangup()
        code, out = await sipp_result(sipp)
        assert code == 0, out
