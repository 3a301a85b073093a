"""What every call leg can do with its media, whichever side started the call.

An inbound leg (a resident calling in, telephony.agent) and an outbound leg (the service dialing
a softphone, telephony.dialer) differ in how their dialog is set up and torn down; once
connected both carry G.711 payloads through a PayloadRTPClient, and the IVR and the bridge use
them the same way.
"""

from __future__ import annotations

import asyncio
import collections
import time
from abc import ABC, abstractmethod

from telephony.dtmf_inband import Detector
from telephony.dtmf_info import DIGITS
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
        # Keys from outside the media (SIP INFO), pushed from any thread; deque ops are atomic.
        self._pushed: collections.deque[str] = collections.deque()
        # Keys heard as tones in the caller's audio (in-band DTMF), from the RTP thread.
        self._tones: collections.deque[str] = collections.deque()
        self._tone_detector: Detector | None = None
        # A phone that has sent a key out of band (RFC 4733 or INFO) signals that way: its
        # tones, if it also plays them, are echoes of keys already counted. Off for good then.
        self._out_of_band_seen = False
        # The last key taken from the tones, until the first out-of-band key: a phone sending
        # both would otherwise count its first press twice.
        self._last_tone_key = ""

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
        if barge_in:
            self._listen_for_tones(True)
        try:
            return await self._play_queued(rtp, frames, barge_in)
        finally:
            if barge_in:
                self._listen_for_tones(False)

    async def _play_queued(self, rtp: PayloadRTPClient, frames: int, barge_in: bool) -> bool:
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
        digit = self._take_digit()
        if digit:
            self._pressed.append(digit)
        return bool(self._pressed)

    def push_digit(self, digit: str) -> None:
        """A key that arrived outside the media (SIP INFO; telephony.dtmf_info reads the body),
        from any thread: collect_digits and barge-in take it like an RFC 4733 key."""
        if not isinstance(digit, str) or len(digit) != 1 or digit.upper() not in DIGITS:
            raise ValueError(f"not a keypad digit: {digit!r}")
        self._pushed.append(digit.upper())

    def _tone_heard(self, digit: str) -> None:
        # on the RTP receive thread
        self._tones.append(digit)

    def _take_digit(self) -> str:
        """The next key from whichever way the phone sends them, or "" (never blocks)."""
        digit = self._pushed.popleft() if self._pushed else self._next_digit()
        if digit:
            first, self._out_of_band_seen = not self._out_of_band_seen, True
            self._listen_for_tones(False)
            self._tones.clear()
            if first and digit == self._last_tone_key:
                return ""  # the same press, already taken from its tones
            return digit
        if self._tones:
            digit = self._tones.popleft()
            if not self._out_of_band_seen:
                self._last_tone_key = digit
                return digit
        return ""

    def _listen_for_tones(self, on: bool) -> None:
        """Run the caller's audio through the in-band DTMF detector (only while a menu waits
        for keys: it costs CPU and speech could be taken for a key elsewhere)."""
        try:
            rtp = self._rtp()
        except Exception:  # no media yet (not answered) or already gone: nothing to listen to
            return
        if on and not self._out_of_band_seen:
            if self._tone_detector is None:
                # one detector for the leg's life: a key held across two menus is one key
                self._tone_detector = Detector(on_digit=self._tone_heard)
            rtp.inband_dtmf = self._tone_detector
        else:
            rtp.inband_dtmf = None

    def stop_playing(self) -> None:
        """Drop whatever prompt audio is still queued (a key was pressed, a human is ready)."""
        self._rtp().clear_outgoing()

    async def collect_digits(self, max_digits: int, timeout_s: float, terminator: str = "#") -> str:
        """Keypad digits (RFC 2833, SIP INFO pushed with push_digit, or in-band tones) until
        `max_digits`, the terminator (not included), `timeout_s` without a new digit, or the
        far end hanging up; "" when nothing was pressed."""
        self._listen_for_tones(True)
        try:
            return await self._collect(max_digits, timeout_s, terminator)
        finally:
            self._listen_for_tones(False)

    async def _collect(self, max_digits: int, timeout_s: float, terminator: str) -> str:
        loop = asyncio.get_running_loop()
        digits = ""
        deadline = loop.time() + timeout_s
        while len(digits) < max_digits and not self.ended.is_set():
            digit = self._pressed.pop(0) if self._pressed else self._take_digit()
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
