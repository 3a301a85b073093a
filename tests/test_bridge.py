"""Two calls bridged through the service: audio both ways unchanged, watched for the recorder,
and one side hanging up ends the other."""

from __future__ import annotations

import asyncio
import audioop
import socket
import struct
import time

import pytest

from telephony.agent import SipAgent
from telephony.bridge import bridge, transcode
from tests.sip_peers import Kamailio, rtp_packet, run_sipp, sipp_result

pytestmark = pytest.mark.sip


def frames(seed: int, count: int) -> list[bytes]:
    # never 0xFF (μ-law silence) so the relayed run is easy to find among idle frames
    return [bytes([(seed + i * 3 + j) % 250 for j in range(160)]) for i in range(count)]


def listen_for(sock: socket.socket, expected: bytes, seconds: float) -> bytes:
    """What a phone heard, in RTP order: until `expected` is in it, or `seconds` pass."""
    got, heard, deadline = [], b"", time.monotonic() + seconds
    while expected not in heard and time.monotonic() < deadline:
        try:
            packet = sock.recv(2048)
        except TimeoutError:
            continue
        got.append((struct.unpack("!H", packet[2:4])[0], packet[12:]))
        heard = b"".join(payload for _, payload in sorted(got))
    return heard


def test_transcoding_only_when_codecs_differ() -> None:
    ulaw = bytes(range(0, 256, 2))
    assert transcode(ulaw, "PCMU", "PCMU") is ulaw
    alaw = transcode(ulaw, "PCMU", "PCMA")
    assert alaw != ulaw and len(alaw) == len(ulaw)
    # the same sound in the other law: decoded, the difference is small next to the signal
    lin_u, lin_a = audioop.ulaw2lin(ulaw, 2), audioop.alaw2lin(alaw, 2)
    difference = audioop.add(lin_u, audioop.mul(lin_a, 2, -1), 2)
    assert audioop.rms(difference, 2) < audioop.rms(lin_u, 2) / 20


async def test_bridged_calls_hear_each_other_unchanged_until_one_hangs_up(
    agent: SipAgent, kamailio: Kamailio
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as audio_a, \
         socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as audio_b:
        for s in (audio_a, audio_b):
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.2)
        sipp_a = await run_sipp("resident_listens.xml", kamailio.port, service="hotline",
                                caller="13800000001", keys={"rtp_port": str(audio_a.getsockname()[1])})
        leg_a = await asyncio.wait_for(agent.next_call(), 10)
        await leg_a.answer()
        sipp_b = await run_sipp("resident_talks_then_hangs_up.xml", kamailio.port,
                                service="hotline", caller="13900000001",
                                keys={"rtp_port": str(audio_b.getsockname()[1])})
        leg_b = await asyncio.wait_for(agent.next_call(), 10)
        await leg_b.answer()

        watched: list[tuple[bytes, bytes]] = []
        bridged = asyncio.create_task(bridge(leg_a, leg_b, on_audio=lambda fa, fb, _: watched.append((fa, fb))))
        await asyncio.sleep(0.3)

        spoken_a, spoken_b = frames(1, 25), frames(101, 25)

        def talk(sock: socket.socket, to_port: int, spoken: list[bytes]) -> None:
            for seq, payload in enumerate(spoken, start=1):
                sock.sendto(rtp_packet(seq, payload), ("127.0.0.1", to_port))
                time.sleep(0.02)

        hear_b = asyncio.create_task(
            asyncio.to_thread(listen_for, audio_b, b"".join(spoken_a), 4))
        hear_a = asyncio.create_task(
            asyncio.to_thread(listen_for, audio_a, b"".join(spoken_b), 4))
        await asyncio.gather(
            asyncio.to_thread(talk, audio_a, leg_a._rtp().inPort, spoken_a),
            asyncio.to_thread(talk, audio_b, leg_b._rtp().inPort, spoken_b),
        )
        heard_by_b, heard_by_a = await hear_b, await hear_a
        assert b"".join(spoken_a) in heard_by_b  # bytes unchanged, in order
        assert b"".join(spoken_b) in heard_by_a
        assert b"".join(fa for fa, _ in watched) == b"".join(spoken_a)
        assert b"".join(fb for _, fb in watched) == b"".join(spoken_b)

        # B hangs up (sipp's BYE 6 s after answer): the bridge ends and hangs up A
        first = await asyncio.wait_for(bridged, 10)
        assert first is leg_b
        assert leg_a.ended.is_set()
        for sipp in (sipp_a, sipp_b):
            code, out = await sipp_result(sipp)
            assert code == 0, out
