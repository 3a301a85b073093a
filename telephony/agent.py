"""The service's SIP user agent as asyncio: register, receive calls as legs, answer, hang up.

pyVoIP runs on its own threads; every call from those threads into our code goes through
`loop.call_soon_threadsafe`, and every blocking pyVoIP call we make runs in `asyncio.to_thread`,
so the event loop never blocks on SIP. telephony/ knows nothing about residents or doctors: a leg
has a Call-ID and a calling number, that is all.

Inbound calls arrive as InboundLeg (answer, play, collect_digits, hangup, ended); `dial` places
an outbound call (telephony.dialer) and gives an OutboundLeg with the same media interface.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from pyVoIP.VoIP import CallState, InvalidStateError, VoIPCall

from telephony.dialer import Dialed, Dialer
from telephony.dialog_state import DialogState
from telephony.leg import MediaLeg
from telephony.rtp import PayloadRTPClient
from telephony.sip_ua import RouteAwarePhone, record_routes, stateless_response
from telephony.transactions import TIMER_F_S

log = structlog.get_logger("telephony")

# RFC 3261 Timer H (64·T1): how long a 200 OK waits for the caller's ACK (SipAgent.ack_timeout_s).
ACK_TIMEOUT_S = 32.0
# How long an ended call is remembered, to answer the caller's retransmitted BYE with 200.
FORGET_AFTER_S = 32.0


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


class InboundLeg(MediaLeg):
    """One incoming call: answer it, hang it up, and learn when the far end hangs up."""

    def __init__(self, call: VoIPCall, ack_timeout_s: float = 32.0):
        super().__init__()
        self.ack_timeout_s = ack_timeout_s
        self._call = call
        self.call_id: str = call.request.headers["Call-ID"]
        from_header: dict[str, Any] = call.request.headers.get("From", {})
        self.calling_number: str = str(from_header.get("number") or "")
        # The number dialled (the To user part): a hotline may have several (专属分机号).
        to_header: dict[str, Any] = call.request.headers.get("To", {})
        self.dialled_number: str = str(to_header.get("number") or "")
        self.ended = asyncio.Event()
        self.acked = asyncio.Event()  # the caller's ACK to our 200 OK arrived

    async def answer(self) -> None:
        try:
            await asyncio.to_thread(self._call.answer)
        except InvalidStateError:
            raise TelephonyError(f"call {self.call_id} cannot be answered: it is no longer ringing") from None
        self._ack_watch = asyncio.create_task(self._expect_ack())

    async def _expect_ack(self) -> None:
        """A caller who never ACKs our 200 OK has gone (its INVITE transaction timed out, e.g.
        while the service was overloaded): end the call instead of playing prompts to nobody,
        routing it, and promising a callback to a caller who already hung up."""
        try:
            await asyncio.wait_for(self.acked.wait(), self.ack_timeout_s)
        except TimeoutError:
            if not self.ended.is_set():
                log.warning("call.no_ack", call_id=self.call_id, waited_s=self.ack_timeout_s)
                await self.hangup()

    async def refuse(self, code: int, reason: str, why: str) -> None:
        """Refuse a ringing call with a final error response (e.g. 503 when the service cannot
        take calls, so the PBX can try elsewhere); `why` goes into a Warning header and the log.
        As pyVoIP's deny(), which can only say 486."""
        call = self._call
        if call.state != CallState.RINGING:
            raise TelephonyError(f"call {self.call_id} cannot be refused: it is no longer ringing")
        call.phone.sip.reject(call.request.raw, code, reason, why)
        for client in call.RTPClients:
            client.stop()
        call.state = CallState.ENDED
        call.phone.calls.pop(self.call_id, None)
        self.ended.set()

    async def hangup(self) -> None:
        """Hang up from our side (BYE if answered, nothing to do if already ended)."""
        if self._call.state == CallState.ANSWERED:
            await asyncio.to_thread(self._call.hangup)
        self.ended.set()

    def dialog_state(self) -> DialogState:
        """The answered dialog (we are its UAS), for a BYE from a later process: as gen_bye
        builds ours — the caller's Contact, the INVITE's Record-Route in order, To/From swapped."""
        request, sip = self._call.request, self._call.phone.sip
        contact = str(request.headers.get("Contact") or "").strip().strip("<>").split(">")[0]
        return DialogState(
            call_id=self.call_id, local_tag=sip.tagLibrary[self.call_id],
            remote_tag=request.headers["From"]["tag"], local_uri=request.headers["To"]["raw"],
            remote_uri=request.headers["From"]["raw"], remote_target=contact,
            route_set=tuple(record_routes(request.raw)),
            # our in-dialog requests take CSeqs from the client's counter (gen_bye)
            local_cseq=sip._local_cseq, side="inbound")

    def _next_digit(self) -> str:
        # pyVoIP buffers received events; reading the buffer is quick and non-blocking.
        return self._call.get_dtmf(1)

    def _rtp(self) -> PayloadRTPClient:
        client = self._call.RTPClients[0]
        assert isinstance(client, PayloadRTPClient)
        return client


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
        self._phone.sip.on_ack = self._on_ack_thread
        self._registered = asyncio.Event()
        self._dialer: Dialer | None = None
        self._watchers: set[asyncio.Task[None]] = set()
        self.ack_timeout_s = ACK_TIMEOUT_S
        self.forget_after_s = FORGET_AFTER_S

    # --- pyVoIP's threads ----------------------------------------------------------------------

    def _to_loop(self, callback: Any, *args: Any) -> None:
        """Hand a pyVoIP thread's news to the event loop; dropped once the loop is gone (a
        re-register timer or a late datagram after stop)."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # "Event loop is closed"
            self._loop.call_soon_threadsafe(callback, *args)

    def _on_call_thread(self, call: VoIPCall) -> None:
        self._to_loop(self._offer, call)

    def _on_registration_thread(self, registered: bool) -> None:
        self._to_loop(self._registered.set if registered else self._registered.clear)

    def _on_ack_thread(self, call_id: str) -> None:
        self._to_loop(self._acked, call_id)

    def _acked(self, call_id: str) -> None:
        leg = self._legs.get(call_id)
        if leg is not None:
            leg.acked.set()

    def _on_bye_thread(self, call_id: str) -> None:
        self._to_loop(self._remote_hangup, call_id)

    # --- the event loop ------------------------------------------------------------------------

    def _offer(self, call: VoIPCall) -> None:
        leg = InboundLeg(call, self.ack_timeout_s)
        self._legs[leg.call_id] = leg
        log.info("call.offered", call_id=leg.call_id, caller=leg.calling_number)
        self._calls.put_nowait(leg)
        self._watchers.add(task := asyncio.create_task(self._forget_when_ended(leg)))
        task.add_done_callback(self._watchers.discard)

    async def _forget_when_ended(self, leg: InboundLeg) -> None:
        await leg.ended.wait()
        await asyncio.sleep(self.forget_after_s)
        self._legs.pop(leg.call_id, None)
        self._phone.forget_call(leg._call)

    def _remote_hangup(self, call_id: str) -> None:
        leg = self._legs.get(call_id)
        if leg is not None and not leg.ended.is_set():
            log.info("call.remote_bye", call_id=call_id)
            leg.ended.set()

    async def start(self) -> None:
        """Bind the SIP port and register once. A registrar that is away is not fatal: the
        failure is logged and registration retried with backoff until it answers (see
        RouteAwareSIPClient.register). TelephonyError only when the SIP port cannot be used."""
        self._loop = asyncio.get_running_loop()
        self._dialer = Dialer(self._phone, self._loop)
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

    async def dial(self, uri: str, ring_timeout_s: float, *, caller_display: str = "",
                   codecs: tuple[str, ...] = ("PCMA", "PCMU"),
                   on_ringing: Callable[[], None] | None = None) -> Dialed:
        """Ring a SIP URI through the registrar for at most `ring_timeout_s`: an answered leg, or
        the outcome (busy, no answer, rejected, unreachable) and why. Offer `codecs` in that order
        (the inbound leg's codec first spares the bridge a transcode). `on_ringing` is called on
        the event loop when the far end first says it rings (180/183)."""
        if self._dialer is None:
            raise TelephonyError("the SIP agent is not started")
        return await self._dialer.dial(uri, ring_timeout_s, caller_display=caller_display, codecs=codecs,
                                       on_ringing=on_ringing)

    def send_bye(self, state: DialogState) -> None:
        """End a dialog this process knows only from its stored state (a call a crashed run left
        up): BYE through its route set, retransmitted on Timer E until answered or Timer F runs
        out (telephony.transactions). Whatever comes back for that Call-ID meanwhile is ours, not
        pyVoIP's (it knows no such call): a BYE from the phone is answered 200, the rest dropped."""
        sip = self._phone.sip
        request = state.bye(sip.myIP, sip.myPort, f"<sip:{sip.username}@{sip.myIP}:{sip.myPort}>")

        def on_datagram(raw: bytes) -> None:
            if raw.startswith(b"BYE "):
                response = stateless_response(raw, 200, "OK")
                if response is not None:
                    sip.out.sendto(*response)

        sip.outbound[state.call_id] = on_datagram
        if self._loop is not None:
            self._loop.call_later(TIMER_F_S + 1, sip.outbound.pop, state.call_id, None)
        sip.transactions.start(request)
        log.info("sip.bye_from_stored_dialog", call_id=state.call_id, side=state.side)

    async def withdraw(self) -> bool:
        """Stop being reachable for new calls (unregister, no more re-registering); the calls in
        progress go on. True when the registrar confirmed."""
        done = await asyncio.to_thread(self._phone.sip.withdraw)
        self._registered.clear()
        return done

    async def next_call(self) -> InboundLeg:
        return await self._calls.get()

    async def stop(self) -> None:
        for task in self._watchers:
            task.cancel()
        await asyncio.to_thread(self._phone.stop)
