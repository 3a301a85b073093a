"""Keys reach a menu however the phone sends them: RFC 4733 events, SIP INFO (push_digit) and
in-band tones, through a real PayloadRTPClient on loopback. The leg around it is the smallest
MediaLeg (no SIP dialog: what is tested is the media and the digit buffers)."""

from __future__ import annotations

import asyncio
import audioop
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator

import pytest

from telephony.leg import MediaLeg
from telephony.rtp import PayloadRTPClient
from tests.sip_peers import free_udp_port
from tests.test_dtmf_inband import key_tone, silence, tone


class Leg(MediaLeg):
    def __init__(self, rtp: PayloadRTPClient) -> None:
        super().__init__()
        self.call_id = "test"
        self.ended = asyncio.Event()
        self.rtp = rtp
        self.events: deque[str] = deque()
        rtp.dtmf = self.events.append  # RFC 4733 events, on the receive thread

    def _rtp(self) -> PayloadRTPClient:
        return self.rtp

    def _next_digit(self) -> str:
        return self.events.popleft() if self.events else ""

    async def hangup(self) -> None:
        self.ended.set()


class Phone:
    """The far end: sends RTP to the leg's port from its own socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = port
        self.seq = 0

    def send(self, payload: bytes, payload_type: int = 0, marker: bool = False) -> None:
        self.seq += 1
        header = struct.pack("!BBHII", 0x80, payload_type | (0x80 if marker else 0),
                             self.seq, self.seq * 160, 0x1234)
        self.sock.sendto(header + payload, ("127.0.0.1", self.port))

    def say(self, samples: object, codec: str = "PCMU") -> None:
        """Linear samples as 20 ms μ-law frames, paced a little faster than real time."""
        encoded = audioop.lin2ulaw(samples.tobytes(), 2)  # type: ignore[attr-defined]
        for i in range(0, len(encoded), 160):
            self.send(encoded[i:i + 160])
            time.sleep(0.005)

    def event(self, key: int) -> None:
        """An RFC 4733 event's first packet (marker set: pyVoIP reports the key on it)."""
        self.send(bytes([key, 10]) + struct.pack("!H", 400), payload_type=101, marker=True)


@pytest.fixture
async def leg() -> AsyncIterator[Leg]:
    port = free_udp_port()
    rtp = PayloadRTPClient.for_answer(0, "PCMU", "127.0.0.1", port, "127.0.0.1", free_udp_port(),
                                      on_digit=None)
    rtp.start()
    leg = Leg(rtp)
    yield leg
    rtp.stop()


async def test_an_in_band_1_is_collected_while_the_menu_waits(leg: Leg) -> None:
    phone = Phone(leg.rtp.inPort)
    collecting = asyncio.create_task(leg.collect_digits(1, 5.0))
    await asyncio.sleep(0.1)
    await asyncio.to_thread(phone.say, silence(60) + key_tone("1", 100) + silence(60))
    assert await collecting == "1"
    assert leg.rtp.inband_dtmf is None  # not listening once the menu is done


async def test_tones_outside_a_menu_are_not_keys(leg: Leg) -> None:
    phone = Phone(leg.rtp.inPort)
    await asyncio.to_thread(phone.say, key_tone("5", 100) + silence(60))
    await asyncio.sleep(0.1)
    assert await leg.collect_digits(1, 0.2) == ""


async def test_an_in_band_key_barges_into_a_prompt(leg: Leg) -> None:
    from telephony.prompts import Prompt

    long_prompt = Prompt("long", 10.0, {"PCMU": b"\x7f" * 80000})
    phone = Phone(leg.rtp.inPort)
    playing = asyncio.create_task(leg.play(long_prompt, barge_in=True))
    await asyncio.sleep(0.1)
    await asyncio.to_thread(phone.say, key_tone("9", 100) + silence(60))
    assert await asyncio.wait_for(playing, 3) is True
    assert await leg.collect_digits(1, 0.5) == "9"


async def test_pushed_info_digits_are_collected_in_order(leg: Leg) -> None:
    leg.push_digit("4")
    leg.push_digit("b")
    assert await leg.collect_digits(3, 0.3) == "4B"
    for junk in ("", "12", "E", " ", None):
        with pytest.raises(ValueError, match="not a keypad digit"):
            leg.push_digit(junk)  # type: ignore[arg-type]


async def test_a_phone_sending_a_key_both_ways_counts_it_once(leg: Leg) -> None:
    phone = Phone(leg.rtp.inPort)
    collecting = asyncio.create_task(leg.collect_digits(2, 1.0))
    await asyncio.sleep(0.1)
    # the tone first, its RFC 4733 event after (the worst order for counting it twice)
    await asyncio.to_thread(phone.say, silence(40) + key_tone("1", 100))
    await asyncio.sleep(0.1)
    phone.event(1)
    await asyncio.to_thread(phone.say, silence(100))
    assert await collecting == "1"
    # from now on the phone's keys are its events: tones are not listened to
    collecting = asyncio.create_task(leg.collect_digits(2, 0.5))
    await asyncio.sleep(0.05)
    phone.event(2)
    await asyncio.to_thread(phone.say, key_tone("2", 100) + silence(60))
    assert await collecting == "2"
    assert leg.rtp.inband_dtmf is None


async def test_speech_while_the_menu_waits_is_no_key(leg: Leg) -> None:
    phone = Phone(leg.rtp.inPort)
    collecting = asyncio.create_task(leg.collect_digits(1, 0.6))
    await asyncio.sleep(0.05)
    voice = tone(tuple(139 * k for k in range(1, 24)), 400,
                 tuple(7000 / k for k in range(1, 24)))
    await asyncio.to_thread(phone.say, voice)
    assert await collecting == ""


def test_an_rtp_port_taken_meanwhile_leaves_no_socket_open() -> None:
    # pyVoIP picks RTP ports at random: one can be taken by the time the call starts its media
    import gc
    import warnings

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        rtp = PayloadRTPClient.for_answer(0, "PCMU", "127.0.0.1", port, "127.0.0.1",
                                          free_udp_port(), on_digit=None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            with pytest.raises(OSError):
                rtp.start()
            del rtp
            gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
