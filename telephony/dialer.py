"""Placing a call: our own INVITE client transaction, because pyVoIP's cannot tell outcomes.

pyVoIP's `call()` reads the SIP socket itself until a 100/180/401 arrives and hands anything
else (486, 404 …) to its parser, so a busy or unregistered softphone leaves the call "dialing"
and the phone's receive path blocked (shared/notes/pyvoip.md). Here the receive thread hands
every datagram with one of our Call-IDs to the dialog (RouteAwareSIPClient.outbound) and the
transaction runs on the event loop:

- INVITE with an SDP offer (PCMA/PCMU + telephone-event), retransmitted on Timer A until the
  first response (RFC 3261 §17.1.1.2);
- 1xx: ringing; 2xx: ACK to the Contact through the route set (§13.2.2.4), media starts;
  3xx–6xx: ACK hop by hop (§17.1.1.3) and an outcome: busy, rejected, unreachable;
- ring timeout: CANCEL (§9.1), then the 487 is ACKed; a 200 that crosses the CANCEL is ACKed
  and hung up at once, so a doctor who picks up in the last instant is never left on a dead line;
- CANCEL and BYE are retransmitted until answered (telephony.transactions);
- a 401/407 challenge is answered once with the hotline's SIP credentials (telephony.digest).

Requests go to the registrar, which is also our outbound proxy; the Route set it records keeps
it in the path of the dialog. The dialog's handler stays registered a while after a failure, to
ACK retransmitted finals and hang up late answers.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from telephony import sdp
from telephony.dialog import Dialog
from telephony.digest import Challenge, DigestError, authorization
from telephony.rtp import PayloadRTPClient, RtpPorts
from telephony.sip_leg import LINGER_S, MediaState, SipLeg, media_address_problem
from telephony.sip_message import NameAddr, SipMessage, SipParseError
from telephony.sip_ua import UserAgent
from telephony.transactions import transaction_key

log = structlog.get_logger("telephony.dial")

# RFC 3261 T1: the first INVITE retransmission; doubled each time (Timer A).
T1_S = 0.5
# With no response at all in this long the proxy is not there: the target is unreachable.
NO_RESPONSE_S = 4.0


class DialOutcome(enum.StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"  # 486 / 600: on another call, or said busy
    NO_ANSWER = "no_answer"  # rang until the ring timeout (we cancelled)
    REJECTED = "rejected"  # declined, or refused for another reason (603, 4xx, no common codec)
    UNREACHABLE = "unreachable"  # not registered, offline, or nothing answers the INVITE


@dataclass
class Dialed:
    """What came of a dial: the connected leg, or why not."""

    uri: str
    outcome: DialOutcome
    reason: str
    status: int | None = None  # the final SIP status, when there was one
    rang: bool = False  # a 180/183 arrived
    seconds: float = 0.0  # INVITE to outcome
    leg: OutboundLeg | None = None


def outcome_of_status(status: int) -> DialOutcome:
    if status in (486, 600):
        return DialOutcome.BUSY
    if status == 487:
        return DialOutcome.NO_ANSWER
    # 404/410/480/484: not registered or unknown; 408 and 5xx: nothing answered behind the proxy
    if status in (404, 408, 410, 480, 484) or 500 <= status < 600:
        return DialOutcome.UNREACHABLE
    return DialOutcome.REJECTED


class OutboundLeg(SipLeg):
    """A call the service placed and the far end answered."""

    side = "outbound"

    def __init__(self, placed: _Dialog, dialog: Dialog, media: MediaState, rtp: PayloadRTPClient):
        super().__init__(placed.dialer.ua)
        self._placed = placed
        self.dialog = dialog
        self.media = media
        self._rtp_client = rtp
        self.call_id = placed.call_id
        self.uri = placed.uri

    def _digit_from_rtp_thread(self, digit: str) -> None:
        self.rfc2833_digit(digit)

    def _released(self) -> None:
        self._placed.finished()


class _Dialog:
    """One INVITE client transaction and, once answered, the dialog it made."""

    def __init__(self, dialer: Dialer, uri: str, caller_display: str, codecs: tuple[str, ...],
                 asserted_identity: str = ""):
        self.dialer = dialer
        ua = dialer.ua
        self.uri = uri
        self.call_id = f"{secrets.token_hex(12)}@{ua.local_ip}"
        self.local_tag = secrets.token_hex(6)
        self.branch = "z9hG4bK" + secrets.token_hex(10)
        self.invite_cseq = 1  # 2 once the INVITE is sent again with credentials
        self.cseq = 1  # the last CSeq we used in the dialog (BYE takes the next)
        # ("Proxy-Authorization" or "Authorization", value) once the PBX has challenged us
        self.credentials: tuple[str, str] | None = None
        self.rtp_port = dialer.ports.acquire()
        self.local = f"<sip:{ua.username}@{ua.registrar[0]}>"
        display = caller_display.replace('"', "").replace("\\", "")
        self.from_value = (f'"{display}" ' if display else "") + self.local
        self.contact = ua.contact
        # The number a PSTN trunk shows the called party (RFC 3325): the PBX lets it through
        # for the hotline's own account only.
        self.asserted = (f"<sip:{asserted_identity}@{ua.registrar[0]}>"
                         if asserted_identity.isdigit() else "")
        self.codecs = codecs
        self.session_id = secrets.randbelow(2**31)
        self.responses: asyncio.Queue[SipMessage] = asyncio.Queue()
        self.remote_tag: str | None = None
        self.remote_target: str | None = None
        self.route_set: list[str] = []
        self.settled = False  # the dial has returned; late answers are hung up
        self.leg: OutboundLeg | None = None
        self._released = False

    # --- messages -------------------------------------------------------------------------------

    def _sdp(self) -> str:
        assert self.rtp_port is not None
        return sdp.build_offer(local_ip=self.dialer.ua.local_ip, local_port=self.rtp_port,
                               session_id=self.session_id, session_version=1, codecs=self.codecs)

    def _request(self, method: str, request_uri: str, branch: str, cseq: int, to_tag: str | None,
                 routes: list[str], body: str = "", content_type: str = "") -> bytes:
        to = f"<{self.uri}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [
            f"{method} {request_uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.dialer.ua.via};branch={branch};rport",
            *(f"Route: {r}" for r in routes),
            "Max-Forwards: 70",
            f"From: {self.from_value};tag={self.local_tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
        ]
        if self.credentials is not None and method in ("INVITE", "ACK"):
            # the INVITE's credentials, and the same on its ACK (RFC 3261 §13.2.2.4, §22.2)
            lines.append(f"{self.credentials[0]}: {self.credentials[1]}")
        if method in ("INVITE", "BYE"):
            lines.append(f"Contact: {self.contact}")
        if method == "INVITE" and self.asserted:
            lines.append(f"P-Asserted-Identity: {self.asserted}")
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body.encode())}")
        return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

    def invite(self) -> bytes:
        return self._request("INVITE", self.uri, self.branch, self.invite_cseq, None, [], self._sdp(),
                             "application/sdp")

    def answer_challenge(self, response: SipMessage, code: int) -> bytes:
        """The INVITE again, with credentials for the 401/407 in `response` (RFC 3261 §22.2):
        a new transaction (branch, CSeq + 1) in the same call (Call-ID, From tag).
        DigestError when we cannot answer it."""
        name = "Proxy-Authenticate" if code == 407 else "WWW-Authenticate"
        challenge_text = response.header(name)
        if not challenge_text:
            raise DigestError(f"{code} without a {name} header")
        ua = self.dialer.ua
        if not ua.password:
            raise DigestError(f"the PBX asks for credentials ({code}) and the hotline has no SIP password")
        challenge = Challenge.parse(challenge_text)
        value = authorization(challenge, method="INVITE", uri=self.uri, username=ua.username,
                              password=ua.password)
        self.credentials = ("Proxy-Authorization" if code == 407 else "Authorization", value)
        self.branch = "z9hG4bK" + secrets.token_hex(10)
        self.invite_cseq += 1
        self.cseq = self.invite_cseq
        return self.invite()

    def cancel(self) -> bytes:
        # Same Request-URI, Via branch and CSeq number as the INVITE (RFC 3261 §9.1).
        return self._request("CANCEL", self.uri, self.branch, self.invite_cseq, None, [])

    def ack_failure(self, to_tag: str | None, branch: str | None = None, cseq: int | None = None) -> bytes:
        # ACK for a non-2xx final: part of the INVITE transaction, same branch (§17.1.1.3).
        return self._request("ACK", self.uri, branch or self.branch, cseq or self.invite_cseq, to_tag, [])

    def ack_answer(self) -> bytes:
        # ACK for a 2xx: a new transaction to the remote target through the route set (§13.2.2.4).
        assert self.remote_target is not None
        return self._request("ACK", self.remote_target, "z9hG4bK" + secrets.token_hex(10), self.invite_cseq,
                             self.remote_tag, self.route_set)

    def bye(self) -> bytes:
        assert self.remote_target is not None
        self.cseq += 1
        return self._request("BYE", self.remote_target, "z9hG4bK" + secrets.token_hex(10), self.cseq,
                             self.remote_tag, self.route_set)

    def send(self, message: bytes) -> None:
        self.dialer.send(message)

    def send_bye(self) -> None:
        self.dialer.send_reliably(self.bye())
        log.info("dial.bye_sent", call_id=self.call_id, uri=self.uri)

    def stale(self, response: SipMessage) -> bool:
        """A response of the INVITE we sent before answering a challenge (a retransmitted 407):
        its final is ACKed for its own transaction, and it is not news."""
        key = transaction_key(response.raw)
        if key is None or key[0] == self.branch:
            return False
        if (response.status or 0) >= 300:
            self.send(self.ack_failure(response.to_tag, key[0], response.cseq[0] or 1))
        return True

    def learn_dialog(self, response: SipMessage) -> None:
        """From a 2xx: the far end's tag, its Contact, and the route set (Record-Route reversed)."""
        self.remote_tag = response.to_tag
        self.remote_target = f"{self.uri}"
        contacts = response.headers_all("Contact")
        if contacts:
            try:
                self.remote_target = NameAddr.parse(contacts[0]).uri
            except SipParseError:
                pass  # an unreadable Contact: in-dialog requests go to the URI we dialled
        self.route_set = list(reversed(response.headers_all("Record-Route")))

    # --- the receive thread hands us everything with our Call-ID --------------------------------

    def on_response(self, response: SipMessage) -> None:
        """Every response with our Call-ID (the user agent parsed it; requests in the dialog go
        to its leg)."""
        code = response.status or 0
        if response.cseq[1] != "INVITE":
            return  # 200 to our CANCEL or BYE: nothing more to do
        if self.stale(response):
            return
        if not self.settled:
            self.responses.put_nowait(response)
            return
        # Late finals after the dial returned: retransmissions, or an answer crossing our CANCEL.
        if code >= 300:
            self.send(self.ack_failure(response.to_tag))
        elif 200 <= code < 300:
            if self.leg is None or self.remote_tag != response.to_tag:
                self.learn_dialog(response)
                self.send(self.ack_answer())
                self.send_bye()
                log.info("dial.late_answer_hung_up", call_id=self.call_id, uri=self.uri)
            else:
                self.send(self.ack_answer())  # our ACK was lost; the 200 is retransmitted

    def finished(self) -> None:
        """Media over: free the port; keep answering strays for LINGER_S, then forget the dialog."""
        if not self._released:
            self._released = True
            if self.rtp_port is not None:
                self.dialer.ports.release(self.rtp_port)
            self.dialer.loop.call_later(LINGER_S, self.dialer.forget, self.call_id)


class Dialer:
    """Places calls through the registrar (our outbound proxy) on the event loop."""

    def __init__(self, ua: UserAgent, ports: RtpPorts, loop: asyncio.AbstractEventLoop):
        self.ua = ua
        self.ports = ports
        self.loop = loop

    def send(self, message: bytes) -> None:
        self.ua.send(message, self.ua.registrar)

    def send_reliably(self, request: bytes) -> None:
        """A BYE or CANCEL: retransmitted until answered (telephony.transactions)."""
        self.ua.send_reliably(request)

    def forget(self, call_id: str) -> None:
        self.ua.outbound.pop(call_id, None)

    async def dial(self, uri: str, ring_timeout_s: float, *, caller_display: str = "",
                   codecs: tuple[str, ...] = ("PCMA", "PCMU"),
                   on_ringing: Callable[[], None] | None = None, asserted_identity: str = "") -> Dialed:
        """Ring `uri` for at most `ring_timeout_s`; the answered leg, or why not."""
        started = time.monotonic()
        dialog = _Dialog(self, uri, caller_display, codecs, asserted_identity)
        if dialog.rtp_port is None:
            return Dialed(uri, DialOutcome.REJECTED, "no RTP port free on this node")
        self.ua.outbound[dialog.call_id] = dialog.on_response
        log.info("dial.start", call_id=dialog.call_id, uri=uri, ring_timeout_s=ring_timeout_s)
        try:
            dialed = await self._run(dialog, ring_timeout_s, on_ringing)
        except BaseException:
            dialog.settled = True  # cancelled by our caller (the resident hung up): stop ringing
            self.send_reliably(dialog.cancel())
            dialog.finished()
            raise
        dialed.seconds = round(time.monotonic() - started, 3)
        dialog.settled = True
        if dialed.leg is None:
            dialog.finished()
        log.info("dial.outcome", call_id=dialog.call_id, uri=uri, outcome=dialed.outcome.value,
                 status=dialed.status, reason=dialed.reason, seconds=dialed.seconds)
        return dialed

    async def _run(self, dialog: _Dialog, ring_timeout_s: float,
                   on_ringing: Callable[[], None] | None) -> Dialed:
        invite = dialog.invite()
        self.send(invite)
        now = self.loop.time
        ring_deadline = now() + ring_timeout_s
        retransmit_at, interval = now() + T1_S, T1_S
        no_response_deadline = now() + NO_RESPONSE_S
        heard, rang = False, False
        while True:
            wake = ring_deadline if heard else min(retransmit_at, no_response_deadline, ring_deadline)
            try:
                response = await asyncio.wait_for(dialog.responses.get(), max(0.0, wake - now()))
            except TimeoutError:
                response = None
            if response is None:
                if not heard and now() >= min(no_response_deadline, ring_deadline):
                    return Dialed(dialog.uri, DialOutcome.UNREACHABLE,
                                  f"no response to the INVITE within {min(NO_RESPONSE_S, ring_timeout_s):g} s")
                if not heard and now() >= retransmit_at:
                    self.send(invite)
                    interval = min(interval * 2, 4.0)
                    retransmit_at = now() + interval
                    continue
                if heard and now() >= ring_deadline:
                    # The caller need not wait for the 487: the lingering dialog ACKs it, and
                    # hangs up a 200 that crosses the CANCEL.
                    self.send_reliably(dialog.cancel())
                    return Dialed(dialog.uri, DialOutcome.NO_ANSWER, f"no answer within {ring_timeout_s:g} s",
                                  rang=rang)
                continue
            code, reason_phrase = response.status or 0, response.reason
            if dialog.stale(response):  # queued before we answered the challenge
                continue
            heard = True
            if code < 200:
                if code in (180, 183) and not rang and on_ringing is not None:
                    on_ringing()
                rang = rang or code in (180, 183)
                continue
            if code in (401, 407) and dialog.credentials is None:
                dialog.send(dialog.ack_failure(response.to_tag))
                try:
                    invite = dialog.answer_challenge(response, code)
                except DigestError as exc:
                    return Dialed(dialog.uri, DialOutcome.REJECTED, f"{code}: {exc}", status=code, rang=rang)
                self.send(invite)
                heard, interval = False, T1_S
                retransmit_at, no_response_deadline = now() + T1_S, now() + NO_RESPONSE_S
                continue
            if code >= 300:
                dialog.send(dialog.ack_failure(response.to_tag))
                if code in (401, 407):
                    return Dialed(dialog.uri, DialOutcome.REJECTED,
                                  f"{code}: the PBX refused the hotline's SIP credentials", status=code, rang=rang)
                return Dialed(dialog.uri, outcome_of_status(code), f"{code} {reason_phrase}".strip(),
                              status=code, rang=rang)
            # 2xx: the far end answered
            dialog.learn_dialog(response)
            dialog.send(dialog.ack_answer())
            try:
                choice = sdp.read_answer(sdp.parse(response.body), codecs=dialog.codecs)
                problem = media_address_problem(choice)
                if problem is not None:
                    raise sdp.OfferRejected(problem)
            except (sdp.SdpError, sdp.OfferRejected) as exc:
                dialog.send_bye()
                return Dialed(dialog.uri, DialOutcome.REJECTED, f"the answer has no usable PCMA/PCMU audio: {exc}",
                              status=code, rang=rang)
            assert dialog.rtp_port is not None
            ua = self.ua
            rtp = PayloadRTPClient.for_answer(choice.payload_type, choice.codec, ua.local_ip, dialog.rtp_port,
                                              choice.remote_ip, choice.remote_port, on_digit=None,
                                              dtmf_payload_type=choice.dtmf_payload_type)
            assert dialog.remote_target is not None
            state = Dialog(call_id=dialog.call_id, local_tag=dialog.local_tag, remote_tag=dialog.remote_tag or "",
                           local_uri=dialog.from_value, remote_uri=f"<{dialog.uri}>",
                           remote_target=dialog.remote_target, route_set=dialog.route_set,
                           local_cseq=dialog.cseq, role="uac")
            media = MediaState(ua.local_ip, dialog.rtp_port, dialog.session_id, choice)
            leg = OutboundLeg(dialog, state, media, rtp)
            rtp.dtmf = leg._digit_from_rtp_thread
            try:
                await asyncio.to_thread(rtp.start)
            except OSError as exc:
                rtp.stop()
                dialog.send_bye()
                return Dialed(dialog.uri, DialOutcome.REJECTED, f"cannot open RTP port {dialog.rtp_port}: {exc}",
                              status=code, rang=rang)
            dialog.leg = leg
            ua.dialogs[dialog.call_id] = leg
            return Dialed(dialog.uri, DialOutcome.ANSWERED, f"{code} {reason_phrase}".strip(), status=code,
                          rang=rang, leg=leg)
