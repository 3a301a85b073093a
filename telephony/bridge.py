"""Two call legs joined: each side hears the other, payloads relayed as they arrived.

When both legs speak the same codec the G.711 bytes pass through unchanged; otherwise they are
transcoded once (μ-law ⇄ A-law through 16-bit linear). The caller of `bridge` may watch the
audio of both directions (the recorder does), given in leg a's codec. The bridge ends when
either side hangs up, and then hangs up the other.
"""

from __future__ import annotations

import asyncio
import audioop  # in the standard library up to 3.12; pydub and pyVoIP rely on it too
from collections.abc import Callable
from typing import Protocol

import structlog

log = structlog.get_logger("telephony.bridge")

# How often the relay moves audio: one RTP frame's worth, so it adds at most ~20 ms of delay.
RELAY_TICK_S = 0.02

_TO_LINEAR = {"PCMU": audioop.ulaw2lin, "PCMA": audioop.alaw2lin}
_FROM_LINEAR = {"PCMU": audioop.lin2ulaw, "PCMA": audioop.lin2alaw}


class Leg(Protocol):
    call_id: str
    ended: asyncio.Event

    @property
    def codec(self) -> str: ...
    def received_audio(self) -> bytes: ...
    def send_audio(self, encoded: bytes) -> int: ...
    def set_relaying(self, relaying: bool) -> None: ...
    async def hangup(self) -> None: ...


def transcode(payload: bytes, source: str, target: str) -> bytes:
    if source == target or not payload:
        return payload
    return _FROM_LINEAR[target](_TO_LINEAR[source](payload, 2), 2)


async def bridge(a: Leg, b: Leg, *, on_audio: Callable[[bytes, bytes, str], None] | None = None) -> Leg:
    """Relay until one side hangs up; hang up the other; return the leg that ended first.

    `on_audio(from_a, from_b, codec)` sees each span of audio from both sides, in a's codec.
    """
    log.info("bridge.start", a=a.call_id, b=b.call_id, codecs=f"{a.codec}/{b.codec}")
    a.received_audio(), b.received_audio()  # what arrived before the bridge is not relayed
    a.set_relaying(True)
    b.set_relaying(True)
    while not (a.ended.is_set() or b.ended.is_set()):
        from_a = a.received_audio()
        from_b_for_a = transcode(b.received_audio(), b.codec, a.codec)
        if from_a:
            b.send_audio(transcode(from_a, a.codec, b.codec))
        if from_b_for_a:
            a.send_audio(from_b_for_a)
        if on_audio is not None and (from_a or from_b_for_a):
            on_audio(from_a, from_b_for_a, a.codec)
        await asyncio.sleep(RELAY_TICK_S)
    a.set_relaying(False)
    b.set_relaying(False)
    first, other = (a, b) if a.ended.is_set() else (b, a)
    log.info("bridge.end", hung_up=first.call_id)
    await other.hangup()
    return first
