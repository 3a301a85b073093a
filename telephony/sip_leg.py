"""A call leg with a SIP dialog: what both kinds of leg do once the call is up.

Whether the resident called in (telephony.agent.InboundLeg) or the service dialed a softphone
(telephony.dialer.OutboundLeg), the far end may, during the call:
- hang up (BYE): answered 200, the leg ends;
- put us on hold and take us off it (re-INVITE or UPDATE with a=sendonly / inactive, or the old
  c=0.0.0.0): answered with the matching direction on the same port and codec, never ended —
  Linphone's "pause" ended the call when pyVoIP answered 481;
- move its media (a re-INVITE with a new address): we send there from then on;
- press keys as SIP INFO (application/dtmf-relay, application/dtmf): read like RFC 2833 keys;
- ask OPTIONS: 200.
Our hang-up is a BYE through the dialog's route set, retransmitted until answered; whatever
the answer (200, 404 from a proxy that forgot a GRUU, 481, a timeout), our side has ended.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
from collections.abc import Callable

import structlog

from telephony import sdp
from telephony.dialog import Dialog, contact_uri
from telephony.dialog_state import DialogState
from telephony.dtmf_info import digit_from_info
from telephony.leg import MediaLeg
from telephony.rtp import PayloadRTPClient
from telephony.sip_message import SipMessage, build_response, response_address
from telephony.sip_ua import ALLOW, UserAgent
from telephony.transactions import TIMER_F_S

log = structlog.get_logger("telephony")

# How long an ended dialog still answers the far end's retransmitted BYE with 200 (64·T1).
LINGER_S = 32.0


def media_address_problem(choice: sdp.AudioChoice) -> str | None:
    """Why we cannot send RTP where the SDP says (we speak IPv4 and resolve no names), or None."""
    if choice.remote_address_type != "IP4":
        return "media over IPv6 is not supported; offer IPv4"
    try:
        ipaddress.IPv4Address(choice.remote_ip)
    except ValueError:
        return "the media address is not an IPv4 address"
    return None



class MediaState:
    """Our side of the SDP exchange: the port, the codec chosen, the o= line's id and version."""

    def __init__(self, local_ip: str, local_port: int, session_id: int, choice: sdp.AudioChoice):
        self.local_ip = local_ip
        self.local_port = local_port
        self.session_id = session_id
        self.version = 1
        self.choice = choice

    def answer(self, offer: sdp.Session) -> tuple[str, sdp.AudioChoice]:
        """Our answer to a new offer in the dialog: same port and codec, the next version."""
        text, choice = sdp.answer(offer, local_ip=self.local_ip, local_port=self.local_port,
                                  session_id=self.session_id, session_version=self.version + 1,
                                  codecs=(self.choice.codec,))
        self.version += 1
        return text, choice

    def offer(self) -> str:
        self.version += 1
        return sdp.build_offer(local_ip=self.local_ip, local_port=self.local_port, session_id=self.session_id,
                               session_version=self.version, codecs=(self.choice.codec,),
                               dtmf_payload_type=self.choice.dtmf_payload_type or 101)


class SipLeg(MediaLeg):
    call_id: str
    dialog: Dialog
    media: MediaState

    def __init__(self, ua: UserAgent) -> None:
        super().__init__()
        self.ua = ua
        self.ended = asyncio.Event()
        self.on_hold = False  # the far end has put us on hold (it sends no audio meanwhile)
        self.on_hold_changed: Callable[[bool], None] | None = None
        self.hangup_cause = ""  # why the leg ended, for the record ("remote BYE", "media timeout" …)
        self._digits: collections.deque[str] = collections.deque()
        self._rtp_client: PayloadRTPClient | None = None
        self._reinvite_cseq: int | None = None  # a re-INVITE of theirs whose 200 awaits its ACK
        self.linger_s = LINGER_S

    # --- media ---------------------------------------------------------------------------------

    def _rtp(self) -> PayloadRTPClient:
        assert self._rtp_client is not None, "the leg has no media yet"
        return self._rtp_client

    def _next_digit(self) -> str:
        return self._digits.popleft() if self._digits else ""

    def rfc2833_digit(self, digit: str) -> None:
        """A keypad event from the RTP receive thread (RFC 2833/4733)."""
        self._digits.append(digit)  # deque.append is atomic; read on the loop

    side = "inbound"  # DialogState.side: we answered the INVITE (inbound) or sent it (outbound)

    def dialog_state(self) -> DialogState:
        """The dialog as plain, validated data, stored with the call so a node restarted after a
        crash can hang up this phone (SipAgent.send_bye)."""
        d = self.dialog
        return DialogState(call_id=d.call_id, local_tag=d.local_tag, remote_tag=d.remote_tag,
                           local_uri=d.local_uri, remote_uri=d.remote_uri, remote_target=d.remote_target,
                           route_set=tuple(d.route_set), local_cseq=d.local_cseq, side=self.side)

    # --- requests of the far end inside the dialog --------------------------------------------

    def on_request(self, request: SipMessage, source: tuple[str, int]) -> None:
        method = request.method
        if method == "ACK":
            self._on_ack(request)
            return
        if not self.dialog.matches(request):
            self.ua.respond(request, source, 481, why="no such dialog")
            return
        number = request.cseq[0]
        if number <= self.dialog.remote_cseq and method != "CANCEL":
            self.ua.respond(request, source, 500, why="CSeq out of order", extra=[("Retry-After", "1")])
            return
        self.dialog.remote_cseq = number
        if method == "BYE":
            self.ua.respond(request, source, 200)
            log.info("call.remote_bye", call_id=self.call_id)
            self.hangup_cause = self.hangup_cause or "remote BYE"
            self._end()
        elif method in ("INVITE", "UPDATE"):
            self._on_offer(request, source)
        elif method == "INFO":
            self._on_info(request, source)
        elif method == "OPTIONS":
            self.ua.respond(request, source, 200, extra=[("Accept", "application/sdp")])
        else:
            self.ua.respond(request, source, 405, why=f"{method} is not handled in a call")

    def _on_ack(self, request: SipMessage) -> None:
        key = ("2xx", self.call_id, request.cseq[0])
        self.ua.server_transactions.retransmissions.stop(key)
        if request.cseq[0] == self._reinvite_cseq:
            self._reinvite_cseq = None
            if request.body:  # the answer to the offer we put in our 200 (a re-INVITE without SDP)
                try:
                    self._apply(sdp.answer(sdp.parse(request.body), local_ip=self.media.local_ip,
                                           local_port=self.media.local_port, session_id=self.media.session_id,
                                           session_version=self.media.version,
                                           codecs=(self.media.choice.codec,))[1])
                except (sdp.SdpError, sdp.OfferRejected):
                    log.warning("call.bad_ack_sdp", call_id=self.call_id)
        self._acked(request)

    def _acked(self, request: SipMessage) -> None:
        """Told of every ACK of the dialog (the inbound leg waits for the first)."""

    def _on_offer(self, request: SipMessage, source: tuple[str, int]) -> None:
        """A re-INVITE or UPDATE: hold, resume, or media moved."""
        if self.ended.is_set() or self._rtp_client is None:
            self.ua.respond(request, source, 481, why="the call has ended")
            return
        contacts = request.headers_all("Contact")
        if contacts:  # a target refresh (§12.2.2)
            self.dialog.remote_target = contact_uri(contacts[0], self.dialog.remote_target)
        extra = [("Contact", self.ua.contact), ("Allow", ALLOW)]
        if not request.body:
            if request.method == "UPDATE":
                self.ua.respond(request, source, 200, extra=extra, to_tag=self.dialog.local_tag)
                return
            body = self.media.offer().encode()  # they want our offer; the answer comes in the ACK
            self._reinvite_cseq = request.cseq[0]
            self._send_2xx(request, source, body, extra)
            return
        try:
            offer = sdp.parse(sdp.sdp_from_body(request.content_type or "application/sdp", request.body))
            text, choice = self.media.answer(offer)
        except sdp.UnsupportedBody:
            self.ua.respond(request, source, 415, extra=[("Accept", "application/sdp")], to_tag=self.dialog.local_tag)
            return
        except (sdp.SdpError, sdp.OfferRejected) as exc:
            # the call goes on as it was (RFC 3261 §14.2)
            self.ua.respond(request, source, 488, why=str(exc), to_tag=self.dialog.local_tag)
            return
        self._apply(choice)
        if request.method == "UPDATE":
            self.ua.respond(request, source, 200, extra=[*extra, ("Content-Type", "application/sdp")],
                            body=text.encode(), to_tag=self.dialog.local_tag)
        else:
            self._reinvite_cseq = request.cseq[0]
            self._send_2xx(request, source, text.encode(), extra)

    def _send_2xx(self, request: SipMessage, source: tuple[str, int], body: bytes,
                  extra: list[tuple[str, str]], *, record_route: bool = False,
                  on_timeout: Callable[[], None] | None = None, give_up_after_s: float = TIMER_F_S) -> None:
        """A 200 with SDP to an INVITE: kept for the INVITE's retransmissions, and sent again
        until its ACK (§13.3.1.4); none within `give_up_after_s`: `on_timeout`."""
        if body:
            extra = [*extra, ("Content-Type", "application/sdp")]
        response = build_response(request, 200, to_tag=self.dialog.local_tag, extra=extra, body=body,
                                  record_route=record_route)
        address = response_address(request, source)
        self.ua.server_transactions.respond(request, response, 200, address, send=False)
        self.ua.server_transactions.retransmissions.start(("2xx", self.call_id, request.cseq[0]), response, address,
                                                          on_timeout=on_timeout, give_up_after_s=give_up_after_s)

    def _apply(self, choice: sdp.AudioChoice) -> None:
        rtp = self._rtp()
        if (choice.remote_ip, choice.remote_port) != (rtp.outIP, rtp.outPort) and choice.remote_port:
            rtp.redirect(choice.remote_ip, choice.remote_port)
        self.media.choice = choice
        if choice.on_hold != self.on_hold:
            self.on_hold = choice.on_hold
            log.info("call.hold" if choice.on_hold else "call.resume", call_id=self.call_id)
            if self.on_hold_changed is not None:
                self.on_hold_changed(choice.on_hold)

    def _on_info(self, request: SipMessage, source: tuple[str, int]) -> None:
        digit = digit_from_info(request.content_type, request.body)
        if digit is None:
            if request.body:
                self.ua.respond(request, source, 415, why="only DTMF is taken in INFO",
                                extra=[("Accept", "application/dtmf-relay, application/dtmf")])
            else:
                self.ua.respond(request, source, 200)  # an empty INFO is a keep-alive
            return
        self.push_digit(digit)
        log.info("call.info_digit", call_id=self.call_id)
        self.ua.respond(request, source, 200)

    # --- ending --------------------------------------------------------------------------------

    async def hangup(self) -> None:
        """BYE through the route set (retransmitted until answered); our side ends at once."""
        if not self.ended.is_set():
            self._send_bye()
            self.hangup_cause = self.hangup_cause or "hung up by the service"
        self._end()

    def _send_bye(self) -> None:
        self.ua.send_reliably(self.dialog.request("BYE", self.ua.via, contact=self.ua.contact),
                              self.dialog.next_hop())
        log.info("call.bye_sent", call_id=self.call_id)

    def _end(self) -> None:
        if self.ended.is_set():
            return
        self.ended.set()
        if self._rtp_client is not None:
            self._rtp_client.stop()
        self._released()
        loop = asyncio.get_running_loop()
        loop.call_later(self.linger_s, self._forget)

    def _released(self) -> None:
        """Give back the leg's RTP port (each kind of leg knows its own)."""

    def _forget(self) -> None:
        if self.ua.dialogs.get(self.call_id) is self:
            del self.ua.dialogs[self.call_id]
