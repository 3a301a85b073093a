"""What every call leg can do with its media, whichever side started the call.

An inbound leg (a resident calling in, telephony.agent) and an outbound leg (the service dialing
a softphone, telephony.dialer) differ in how their dialog is set up and torn down; once
connected both carry G.711 payloads through a PayloadRTPClient, and the IVR and the bridge use
them the same way.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod

from telephony.prompts import Prompt
from telephony.rtp import PayloadRTPClient

# How often a waiting collect_digits looks at the DTMF buffer: well under the 40 ms an
# RFC 2833 event lasts at the least, cheap enough for hundreds of calls.
DIGIT_POLL_S = 0.02


class MediaLeg(ABC):
    call_id: str
    ended: asyncio.Event
    # A leg on hold sends no RTP by design and is kept alive by SIP session refresh instead;
    # the call flow's dead-call watchdog passes it over. Holding is not implemented yet: nothing
    # sets this, the hook is here for it.
    on_hold: bool = False

    def __init__(self) -> None:
        # Keys taken from the buffer while a prompt played (barge-in), not yet collected.
        self._pressed: list[str] = []

    @abstractmethod
    def _rtp(self) -> PayloadRTPClient: ...

    @abstractmethod
    def _next_digit(self) -> str:
        """One buffered keypad digit, or "" (never blocks)."""

    @abstractmethod
    async def hangup(self) -> None: ...

    @property
    def codec(self) -> str:
        return self._rtp().codec

    @property
    def last_media_at(self) -> float:
        """time.monotonic() of the last RTP packet from the far end (or of the leg's start)."""
        return self._rtp().last_received_at

    def silent_for(self) -> float:
        """Seconds since the far end last sent RTP."""
        return time.monotonic() - self.last_media_at

    def set_relaying(self, relaying: bool) -> None:
        """While relaying another call, send only what arrives (no filler between frames)."""
        self._rtp().relaying = relaying

    def send_audio(self, encoded: bytes) -> int:
        """Queue G.711 bytes in this call's codec to be sent as they are; returns 20 ms frames queued."""
        return self._rtp().send_frames(encoded)

    def received_audio(self) -> bytes:
        """G.711 bytes received since the last call, as they arrived (for recording, bridging)."""
        return b"".join(self._rtp().take_received())

    def tap(self) -> None:
        """Start keeping what this leg sends, for `sent_audio` (the recorder's other channel)."""
        rtp = self._rtp()
        rtp.take_sent()
        rtp.tapping = True

    def sent_audio(self) -> bytes:
        """G.711 bytes sent since the last call (prompts, relayed audio, silence), once tapped."""
        return b"".join(self._rtp().take_sent())

    async def play(self, prompt: Prompt, *, barge_in: bool = False) -> bool:
        """Send a prompt in the call's codec, bytes unchanged; True when it played to the end
        (or, with `barge_in`, until a key was pressed: the prompt stops and the key is kept for
        collect_digits), False when the far end hung up first (the rest is dropped)."""
        rtp = self._rtp()
        frames = rtp.send_frames(prompt.payload(rtp.codec))
        # the transmitter sends one frame per 20 ms; wait that long (plus a little), or less
        # if the far end hangs up
        loop = asyncio.get_running_loop()
        done_at = loop.time() + frames * 0.02 + 0.2
        while not self.ended.is_set():
            if barge_in and self._keep_pressed_key():
                rtp.clear_outgoing()
                return True
            left = done_at - loop.time()
            if left <= 0:
                return True
            try:
                await asyncio.wait_for(self.ended.wait(), min(left, DIGIT_POLL_S) if barge_in else left)
            except TimeoutError:
                pass
        rtp.clear_outgoing()
        return False

    def _keep_pressed_key(self) -> bool:
        digit = self._next_digit()
        if digit:
            self._pressed.append(digit)
        return bool(self._pressed)


    def stop_playing(self) -> None:
        """Drop whatever prompt audio is still queued (a key was pressed, a human is ready)."""
        self._rtp().clear_outgoing()

    async def collect_digits(self, max_digits: int, timeout_s: float, terminator: str = "#") -> str:
        """Keypad digits (RFC 2833) until `max_digits`, the terminator (not included), `timeout_s`
        without a new digit, or the far end hanging up; "" when nothing was pressed."""
        loop = asyncio.get_running_loop()
        digits = ""
        deadline = loop.time() + timeout_s
        while len(digits) < max_digits and not self.ended.is_set():
            digit = self._pressed.pop(0) if self._pressed else self._next_digit()
            if digit:
                if digit == terminator:
                    break
                digits += digit
                deadline = loop.time() + timeout_s
                continue
            if loop.time() >= deadline:
                break
            await asyncio.sleep(DIGIT_POLL_S)
        return digits
