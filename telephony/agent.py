"""The service's SIP user agent as the call flow sees it: register, receive calls as legs, answer,
refuse, hang up, dial out.

SIP runs on the event loop (telephony.sip_ua); RTP runs on pyVoIP's RTP threads, whose news (a
keypad event) reaches the loop through a deque. telephony/ knows nothing about residents or
doctors: a leg has a Call-ID and a calling number, that is all.

Inbound calls arrive as InboundLeg (answer, refuse, play, collect_digits, hangup, ended); `dial`
places an outbound call (telephony.dialer) and gives an OutboundLeg with the same interface.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from telephony import sdp
from telephony.dialer import Dialed, Dialer
from telephony.dialog import Dialog, new_tag
from telephony.dialog_state import DialogState
from telephony.rtp import PayloadRTPClient, RtpPorts
from telephony.sip_leg import MediaState, SipLeg, media_address_problem
from telephony.sip_message import (
    NameAddr,
    SipMessage,
    SipParseError,
)
from telephony.sip_ua import ALLOW, UserAgent
from telephony.transactions import ServerTransactions

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
    # How long one REGISTER waits for an answer.
    register_timeout_s: int = 10
    # The expiry we ask for; we re-register at half of what the registrar grants.
    register_expires_s: int = 120
    # Addresses requests are taken from (the PBX); empty: the registrar's address only.
    trusted: tuple[str, ...] = ()
    # What a request from elsewhere gets: "reject" (403) or "drop" (no answer at all).
    untrusted_action: str = "reject"
    # Calls in progress at most (inbound); the next gets 503 with Retry-After before any ringing.
    max_calls: int = 40


def _user_of(value: str | None) -> str:
    try:
        return NameAddr.parse(value or "").user()
    except SipParseError:
        return ""


class InboundLeg(SipLeg):
    """One incoming call: answer it, refuse it, hang it up, and learn when the far end hangs up."""

    def __init__(self, agent: SipAgent, invite: SipMessage, source: tuple[str, int], choice: sdp.AudioChoice,
                 answer_sdp: str, media: MediaState):
        super().__init__(agent.ua)
        self._agent = agent
        self.invite = invite
        self.source = source
        self.call_id = invite.call_id
        self.calling_number: str = _user_of(invite.header("From"))
        # The number dialled (the To user part): a hotline may have several (专属分机号).
        self.dialled_number: str = _user_of(invite.header("To"))
        self.dialog = Dialog.as_uas(invite, new_tag())
        self.media = media
        self._answer_sdp = answer_sdp
        self.linger_s = agent.forget_after_s
        self.state = "ringing"
        self.acked = asyncio.Event()  # the caller's ACK to our 200 OK arrived
        self.ack_timeout_s = agent.ack_timeout_s
        self._port_held = True
        self.invite_key = ServerTransactions.key(invite)

    def ring(self) -> None:
        """180 Ringing: the caller hears ringback until we answer."""
        self.ua.respond(self.invite, self.source, 180, to_tag=self.dialog.local_tag,
                        extra=[("Contact", self.ua.contact), ("Allow", ALLOW)], record_route=True)

    async def answer(self) -> None:
        if self.state != "ringing":
            raise TelephonyError(f"call {self.call_id} cannot be answered: it is no longer ringing")
        choice = self.media.choice
        rtp = PayloadRTPClient.for_answer(choice.payload_type, choice.codec, self.media.local_ip,
                                          self.media.local_port, choice.remote_ip, choice.remote_port,
                                          on_digit=self.rfc2833_digit, dtmf_payload_type=choice.dtmf_payload_type)
        try:
            await asyncio.to_thread(rtp.start)
        except OSError as exc:
            rtp.stop()
            await self.refuse(503, "Service Unavailable", f"RTP port {self.media.local_port}: {exc.strerror or exc}")
            raise TelephonyError(f"call {self.call_id} cannot be answered: {exc}") from None
        if self.state != "ringing":  # cancelled while the port opened
            rtp.stop()
            raise TelephonyError(f"call {self.call_id} cannot be answered: it is no longer ringing")
        self._rtp_client = rtp
        self.state = "answered"
        self.ua.invites.pop(self.invite_key, None)
        # sent again until the ACK; none within Timer H: the caller has gone
        self._send_2xx(self.invite, self.source, self._answer_sdp.encode(),
                       [("Contact", self.ua.contact), ("Allow", ALLOW), ("Supported", "")], record_route=True,
                       on_timeout=self._no_ack, give_up_after_s=self.ack_timeout_s)
        if choice.on_hold:
            self.on_hold = True

    def _acked(self, request: SipMessage) -> None:
        if request.cseq[0] == self.invite.cseq[0]:
            self.acked.set()

    def _no_ack(self) -> None:
        """A caller who never ACKs our 200 OK has gone (its INVITE transaction timed out, e.g.
        while the service was overloaded): end the call instead of playing prompts to nobody,
        routing it, and promising a callback to a caller who already hung up."""
        if not self.ended.is_set():
            log.warning("call.no_ack", call_id=self.call_id, waited_s=self.ack_timeout_s)
            self.hangup_cause = "no ACK"
            self._send_bye()
            self._end()

    async def refuse(self, code: int, reason: str, why: str) -> None:
        """Refuse a ringing call with a final error response (e.g. 503 when the service cannot
        take calls, so the PBX can try elsewhere); `why` goes into a Warning header and the log."""
        if self.state != "ringing":
            raise TelephonyError(f"call {self.call_id} cannot be refused: it is no longer ringing")
        self.state = "ended"
        self.ua.invites.pop(self.invite_key, None)
        self.ua.respond(self.invite, self.source, code, why=why, to_tag=self.dialog.local_tag)
        log.info("call.refused", call_id=self.call_id, status=code, why=why)
        self.hangup_cause = f"refused {code}"
        self._end()

    async def hangup(self) -> None:
        if self.state == "ringing":  # never answered: the INVITE gets its final response
            await self.refuse(480, "Temporarily Unavailable", "hung up before answering")
            return
        self.state = "ended"
        await super().hangup()

    def on_cancel(self) -> bool:
        """The caller gave up before we answered: the INVITE ends with 487 (RFC 3261 §9.2)."""
        if self.state != "ringing":
            return False  # answered already: the caller's BYE follows the 200
        self.state = "ended"
        self.ua.invites.pop(self.invite_key, None)
        self.ua.respond(self.invite, self.source, 487, to_tag=self.dialog.local_tag)
        log.info("sip.cancelled", call_id=self.call_id)
        self.hangup_cause = "caller cancelled"
        self._end()
        return True

    def _end(self) -> None:
        self.state = "ended"
        super()._end()

    def _released(self) -> None:
        if self._port_held:
            self._port_held = False
            self._agent.ports.release(self.media.local_port)
        self._agent._active.discard(self.call_id)


def new_session_id() -> int:
    return secrets.randbelow(2**31)


class _Orphan:
    """A dialog of a call a crashed run lost: we hang it up; its own BYE gets 200, the rest 481."""

    def __init__(self, ua: UserAgent, dialog: Dialog):
        self.ua = ua
        self.dialog = dialog

    def on_request(self, request: SipMessage, source: tuple[str, int]) -> None:
        if request.method == "ACK":
            return
        self.ua.respond(request, source, 200 if request.method == "BYE" else 481)


class SipAgent:
    def __init__(self, account: SipAccount):
        self.account = account
        self._calls: asyncio.Queue[InboundLeg] = asyncio.Queue()
        self.ports = RtpPorts(account.rtp_port_low, account.rtp_port_high, account.local_ip)
        self._registered = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ua = UserAgent(
            local_ip=account.local_ip, local_port=account.sip_port,
            registrar=(account.registrar_host, account.registrar_port), user=account.user,
            password=account.password, trusted=set(account.trusted) or None,
            untrusted_action=account.untrusted_action, register_expires_s=account.register_expires_s,
            register_timeout_s=account.register_timeout_s, on_registration=self._on_registration)
        self.ua.on_invite = self._on_invite
        self.ua.admission = self._admission
        self._active: set[str] = set()  # Call-IDs of inbound calls not yet ended
        self._dialer: Dialer | None = None
        self.ack_timeout_s = ACK_TIMEOUT_S
        self.forget_after_s = FORGET_AFTER_S
        self.on_offered: Callable[[InboundLeg], None] | None = None

    # --- admission and new calls ---------------------------------------------------------------

    def _admission(self) -> str | None:
        if len(self._active) >= self.account.max_calls:
            return f"{len(self._active)} calls in progress, the most this node takes"
        return None

    def _on_registration(self, registered: bool) -> None:
        (self._registered.set if registered else self._registered.clear)()
        if registered:
            log.info("sip.registered", user=self.account.user,
                     registrar=f"{self.account.registrar_host}:{self.account.registrar_port}")

    def _on_invite(self, invite: SipMessage, source: tuple[str, int]) -> None:
        ua = self.ua
        encoding = (invite.header("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("", "identity"):
            ua.respond(invite, source, 415, why=f"content encoding {encoding[:20]} is not supported",
                       extra=[("Accept-Encoding", "identity"), ("Accept", "application/sdp")])
            return
        if not invite.body:
            ua.respond(invite, source, 488, why="no SDP offer (delayed offer is not supported)")
            return
        try:
            offer = sdp.parse(sdp.sdp_from_body(invite.content_type or "application/sdp", invite.body))
        except sdp.UnsupportedBody as exc:
            ua.respond(invite, source, 415, why=str(exc), extra=[("Accept", "application/sdp")])
            return
        except sdp.SdpError as exc:
            ua.respond(invite, source, 488, why=f"unreadable SDP: {exc}")
            return
        port = self.ports.acquire()
        if port is None:
            ua.counters.overloaded += 1
            ua.respond(invite, source, 503, why="no RTP port free", extra=[("Retry-After", "30")])
            return
        session_id = new_session_id()
        try:
            answer_sdp, choice = sdp.answer(offer, local_ip=self.account.local_ip, local_port=port,
                                            session_id=session_id, session_version=1)
        except sdp.OfferRejected as exc:
            self.ports.release(port)
            ua.respond(invite, source, exc.code, why=exc.reason)
            return
        problem = media_address_problem(choice)
        if problem is not None:
            self.ports.release(port)
            ua.respond(invite, source, 488, why=problem)
            return
        leg = InboundLeg(self, invite, source, choice, answer_sdp, MediaState(self.account.local_ip, port,
                                                                             session_id, choice))
        self._active.add(leg.call_id)
        ua.dialogs[leg.call_id] = leg
        ua.invites[leg.invite_key] = leg
        leg.ring()
        log.info("call.offered", call_id=leg.call_id, caller=_masked(leg.calling_number))
        self._calls.put_nowait(leg)

    # --- the service's side --------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the SIP port and register once. A registrar that is away is not fatal: the
        failure is logged and registration retried with backoff until it answers.
        TelephonyError only when the SIP port cannot be used."""
        self._loop = asyncio.get_running_loop()
        self._dialer = Dialer(self.ua, self.ports, self._loop)
        try:
            await self.ua.start()
        except OSError as exc:
            raise TelephonyError(
                f"cannot use SIP port {self.account.local_ip}:{self.account.sip_port}: {exc.strerror or exc}"
            ) from None

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
                   on_ringing: Callable[[], None] | None = None, asserted_identity: str = "") -> Dialed:
        """Ring a SIP URI through the registrar for at most `ring_timeout_s`: an answered leg, or
        the outcome (busy, no answer, rejected, unreachable) and why. Offer `codecs` in that order
        (the inbound leg's codec first spares the bridge a transcode). `on_ringing` is called on
        the event loop when the far end first says it rings (180/183). `asserted_identity`: the
        number the called party is shown (P-Asserted-Identity; a call out to the PSTN trunk)."""
        if self._dialer is None:
            raise TelephonyError("the SIP agent is not started")
        return await self._dialer.dial(uri, ring_timeout_s, caller_display=caller_display, codecs=codecs,
                                       on_ringing=on_ringing, asserted_identity=asserted_identity)

    def send_bye(self, state: DialogState) -> None:
        """End a dialog this process knows only from its stored state (a call a crashed run left
        up): BYE through its route set, retransmitted on Timer E until answered or Timer F runs
        out. A BYE the phone sends meanwhile for that Call-ID is answered 200."""
        dialog = Dialog(call_id=state.call_id, local_tag=state.local_tag, remote_tag=state.remote_tag,
                        local_uri=state.local_uri, remote_uri=state.remote_uri, remote_target=state.remote_target,
                        route_set=list(state.route_set), local_cseq=state.local_cseq,
                        role="uas" if state.side == "inbound" else "uac")
        self.ua.dialogs.setdefault(state.call_id, _Orphan(self.ua, dialog))
        self.ua.send_reliably(dialog.request("BYE", self.ua.via, contact=self.ua.contact), dialog.next_hop())
        if self._loop is not None:
            self._loop.call_later(ACK_TIMEOUT_S + 1, self.ua.dialogs.pop, state.call_id, None)
        log.info("sip.bye_from_stored_dialog", call_id=state.call_id, side=state.side)

    async def withdraw(self) -> bool:
        """Stop being reachable for new calls (unregister, no more re-registering); the calls in
        progress go on. True when the registrar confirmed."""
        done = await self.ua.registration.withdraw()
        self._registered.clear()
        return done

    async def next_call(self) -> InboundLeg:
        return await self._calls.get()

    @property
    def calls_in_progress(self) -> int:
        return len(self._active)

    async def stop(self) -> None:
        for owner in list(self.ua.dialogs.values()):
            if isinstance(owner, SipLeg) and not owner.ended.is_set():
                await owner.hangup()
        await self.ua.stop(unregister=self.registered)


def _masked(number: str) -> str:
    return number[:3] + "****" + number[-4:] if len(number) >= 8 else "*" * len(number)
