"""The service's SIP user agent as asyncio: register, receive calls as legs, answer, hang up.

pyVoIP runs on its own threads; every call from those threads into our code goes through
`loop.call_soon_threadsafe`, and every blocking pyVoIP call we make runs in `asyncio.to_thread`,
so the event loop never blocks on SIP. telephony/ knows nothing about residents or doctors: a leg
has a Call-ID and a calling number, that is all.

Issue 3 in progress: this is the inbound half (register, answer, prompts and received audio as
G.711 bytes, keypad digits, hang up, BYE either way through a record-routing proxy). Dialing,
bridging and recording come next.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog
from pyVoIP.VoIP import CallState, InvalidStateError, VoIPCall

from telephony.prompts import Prompt
from telephony.rtp import PayloadRTPClient
from telephony.sip_ua import RouteAwarePhone

log = structlog.get_logger("telephony")

# How often a waiting collect_digits looks at pyVoIP's DTMF buffer: well under the 40 ms an
# RFC 2833 event lasts at the least, cheap enough for hundreds of calls.
DIGIT_POLL_S = 0.02


class TelephonyError(Exception):
    """The SIP edge cannot do what was asked; the message is for an operator."""


@dataclass(frozen=True)
class SipAccount:
    registrar_host: str
    registrar_port: int
    user: str
    password: str
    local_ip: str = "127.0.0.1"
    sip_port: int = 5070
    rtp_port_low: int = 20000
    rtp_port_high: int = 20999
    # How long one REGISTER waits for an answer (pyVoIP's own default is 30 s).
    register_timeout_s: int = 10
    # The expiry we ask for; we re-register at half of it.
    register_expires_s: int = 120


class InboundLeg:
    """One incoming call: answer it, hang it up, and learn when the far end hangs up."""

    def __init__(self, call: VoIPCall):
        self._call = call
        self.call_id: str = call.request.headers["Call-ID"]
        from_header: dict[str, Any] = call.request.headers.get("From", {})
        self.calling_number: str = str(from_header.get("number") or "")
        self.ended = asyncio.Event()

    async def answer(self) -> None:
        try:
            await asyncio.to_thread(self._call.answer)
        except InvalidStateError:
            raise TelephonyError(f"call {self.call_id} cannot be answered: it is no longer ringing") from None

    async def hangup(self) -> None:
        """Hang up from our side (BYE if answered, nothing to do if already ended)."""
        if self._call.state == CallState.ANSWERED:
            await asyncio.to_thread(self._call.hangup)
        self.ended.set()

    async def collect_digits(self, max_digits: int, timeout_s: float, terminator: str = "#") -> str:
        """Keypad digits (RFC 2833) until `max_digits`, the terminator (not included), `timeout_s`
        without a new digit, or the far end hanging up; "" when nothing was pressed."""
        digits = ""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(digits) < max_digits and not self.ended.is_set():
            # pyVoIP buffers received events; reading the buffer is quick and non-blocking.
            digit = self._call.get_dtmf(1)
            if digit:
                if digit == terminator:
                    break
                digits += digit
                deadline = asyncio.get_running_loop().time() + timeout_s
                continue
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(DIGIT_POLL_S)
        return digits

    def _rtp(self) -> PayloadRTPClient:
        client = self._call.RTPClients[0]
        assert isinstance(client, PayloadRTPClient)
        return client

    @property
    def codec(self) -> str:
        return self._rtp().codec

    def set_relaying(self, relaying: bool) -> None:
        """While relaying another call, send only what arrives (no filler between frames)."""
        self._rtp().relaying = relaying

    def send_audio(self, encoded: bytes) -> int:
        """Queue G.711 bytes in this call's codec to be sent as they are; returns 20 ms frames queued."""
        return self._rtp().send_frames(encoded)

    async def play(self, prompt: Prompt) -> bool:
        """Send a prompt in the call's codec, bytes unchanged; True when it played to the end,
        False when the far end hung up first (the rest is dropped)."""
        rtp = self._rtp()
        frames = rtp.send_frames(prompt.payload(rtp.codec))
        # the transmitter sends one frame per 20 ms; wait that long (plus a little), or less
        # if the caller hangs up
        try:
            await asyncio.wait_for(self.ended.wait(), frames * 0.02 + 0.2)
        except TimeoutError:
            return True
        rtp.clear_outgoing()
        return False

    def received_audio(self) -> bytes:
        """G.711 bytes received since the last call, as they arrived (for recording, bridging)."""
        return b"".join(self._rtp().take_received())

    @property
    def state(self) -> str:
        return self._call.state.value


class SipAgent:
    def __init__(self, account: SipAccount):
        self.account = account
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: asyncio.Queue[InboundLeg] = asyncio.Queue()
        self._legs: dict[str, InboundLeg] = {}
        self._phone = RouteAwarePhone(
            account.registrar_host, account.registrar_port, account.user, account.password,
            myIP=account.local_ip, callCallback=self._on_call_thread, sipPort=account.sip_port,
            rtpPortLow=account.rtp_port_low, rtpPortHigh=account.rtp_port_high,
            on_remote_bye=self._on_bye_thread,
        )
        self._phone.sip.register_timeout = account.register_timeout_s
        self._phone.sip.default_expires = account.register_expires_s
        self._phone.sip.on_registration = self._on_registration_thread
        self._registered = asyncio.Event()

    # --- pyVoIP's threads ----------------------------------------------------------------------

    def _on_call_thread(self, call: VoIPCall) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._offer, call)

    def _on_registration_thread(self, registered: bool) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._registered.set if registered else self._registered.clear)

    def _on_bye_thread(self, call_id: str) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._remote_hangup, call_id)

    # --- the event loop ------------------------------------------------------------------------

    def _offer(self, call: VoIPCall) -> None:
        leg = InboundLeg(call)
        self._legs[leg.call_id] = leg
        log.info("call.offered", call_id=leg.call_id, caller=leg.calling_number)
        self._calls.put_nowait(leg)

    def _remote_hangup(self, call_id: str) -> None:
        leg = self._legs.pop(call_id, None)
        if leg is not None:
            log.info("call.remote_bye", call_id=call_id)
            leg.ended.set()

    async def start(self) -> None:
        """Bind the SIP port and register once. A registrar that is away is not fatal: the
        failure is logged and registration retried with backoff until it answers (see
        RouteAwareSIPClient.register). TelephonyError only when the SIP port cannot be used."""
        self._loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._phone.start)
        except OSError as exc:
            raise TelephonyError(
                f"cannot use SIP port {self.account.local_ip}:{self.account.sip_port}: {exc.strerror or exc}"
            ) from None
        if self.registered:
            log.info("sip.registered", user=self.account.user,
                     registrar=f"{self.account.registrar_host}:{self.account.registrar_port}")

    @property
    def registered(self) -> bool:
        return self._registered.is_set()

    async def wait_registered(self, timeout_s: float) -> bool:
        """True once registered (bounded wait, for start-up checks and tests)."""
        try:
            await asyncio.wait_for(self._registered.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def next_call(self) -> InboundLeg:
        return await self._calls.get()

    async def stop(self) -> None:
        await asyncio.to_thread(self._phone.stop)
