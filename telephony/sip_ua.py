"""pyVoIP made to behave behind a record-routing proxy (RFC 3261 §12.1.1, §12.2.1.1).

pyVoIP 1.6.8 answers an INVITE without copying its Record-Route headers into the 180/200, so the
caller's route set is empty and its BYE, sent to the proxy, dies there with 404 (measured: see
shared/notes/pyvoip.md). Its own BYE reuses the caller's Via stack and CSeq space and carries no
Route, so the proxy cannot route it either. We subclass rather than fork: the SIP client below
overrides only the message builders, and `RouteAwarePhone` swaps it in.

It also answers what pyVoIP drops or chokes on: an unparsable datagram is logged and, when it
is a request we can address, answered 400; an INVITE without an SDP offer, or offering no codec
we speak, is answered 488 instead of being half-set-up. Every error response goes to the top
Via (RFC 3261 §18.2.2), so it reaches the sender whether or not it came through the proxy.

This module is the thread side of telephony: pyVoIP calls it on its own threads. Nothing here
touches asyncio; telephony.agent bridges into the event loop.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import secrets
import socket
import threading
from collections.abc import Callable
from typing import Any

import pyVoIP
import structlog
from pyVoIP import SIP
from pyVoIP.VoIP import CallState, PhoneStatus, VoIPPhone

from telephony.rtp import adopt
from telephony.transactions import CALL_ID, NonInviteTransactions

log = structlog.get_logger("telephony.sip")

# Audio payloads pyVoIP can carry (telephone-event alone is not audio).
_AUDIO_CODECS = {str(c) for c in pyVoIP.RTPCompatibleCodecs} - {"telephone-event"}
_REQUEST_LINE = re.compile(rb"^([A-Z]+) \S+ SIP/2\.0\r?$", re.MULTILINE)
_DIALOG_HEADERS = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")
# Retries after a failed REGISTER wait 1, 2, 4 … s, at most this long.
REGISTER_RETRY_MAX_S = 60
_STATIC_PAYLOADS = {"0": "PCMU", "3": "GSM", "4": "G723", "8": "PCMA", "9": "G722", "18": "G729"}

# Header lines as received: "Record-Route: <sip:…;lr>" (several lines or comma-joined values).
_RECORD_ROUTE = re.compile(rb"^Record-Route[ \t]*:[ \t]*(.+?)[ \t]*$", re.IGNORECASE | re.MULTILINE)


def record_routes(raw: bytes) -> list[str]:
    """The Record-Route values of a message, in order, each a single '<uri>;params' entry."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    values: list[str] = []
    for match in _RECORD_ROUTE.finditer(head):
        values += [v.strip() for v in _split_header_values(match.group(1).decode("utf-8", "replace"))]
    return values


def _split_header_values(text: str) -> list[str]:
    """Split a comma-joined header value, ignoring commas inside <…> and quotes."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in (p.strip() for p in parts) if p]


def _insert_after_vias(message: str, lines: list[str]) -> str:
    """Put header lines right after the last Via of a message pyVoIP built."""
    if not lines:
        return message
    head, sep, body = message.partition("\r\n\r\n")
    rows = head.split("\r\n")
    last_via = max((i for i, r in enumerate(rows) if r.lower().startswith("via:")), default=0)
    rows[last_via + 1:last_via + 1] = lines
    return "\r\n".join(rows) + sep + body


def _top_via_address(via: str) -> tuple[str, int] | None:
    """Where a response goes: the top Via's sent-by, corrected by received= and rport=."""
    match = re.match(r"SIP/2\.0/UDP\s+([^;:\s]+)(?::(\d+))?(.*)$", via.strip(), re.IGNORECASE)
    if not match:
        return None
    host, port, params = match.group(1), int(match.group(2) or 5060), match.group(3)
    received = re.search(r";received=([^;\s]+)", params)
    rport = re.search(r";rport=(\d+)", params)
    return (received.group(1) if received else host), (int(rport.group(1)) if rport else port)


def stateless_response(raw: bytes, code: int, reason: str, warning: str = "") -> tuple[bytes, tuple[str, int]] | None:
    """A final response to the request in `raw`, built from its own header lines, and where to
    send it; None when `raw` is not a request we can answer (a response, an ACK, no Via …).
    Stateless: for refusals and OPTIONS, never for a request that creates a dialog."""
    head = raw.split(b"\r\n\r\n", 1)[0]
    first = _REQUEST_LINE.match(head)
    if not first or first.group(1) == b"ACK":
        return None
    named = [(ln.split(":", 1)[0].strip().lower(), ln)
             for ln in head.decode("utf-8", "replace").split("\r\n")[1:] if ":" in ln]
    kept = [(name, ln) for name, ln in named if name in _DIALOG_HEADERS]
    names = {name for name, _ in kept}
    vias = [ln.split(":", 1)[1] for name, ln in kept if name in ("via", "v")]
    if not vias or not {"call-id", "i"} & names or "cseq" not in names:
        return None
    target = _top_via_address(vias[0].split(",")[0])
    if target is None:
        return None
    out = [ln + f";tag={secrets.token_hex(4)}"
           if name in ("to", "t") and ";tag=" not in ln.lower() else ln
           for name, ln in kept]
    if code == 405 or first.group(1) == b"OPTIONS":
        out.append(f"Allow: {', '.join([*pyVoIP.SIPCompatibleMethods, 'OPTIONS'])}")
    if warning:
        out.append(f'Warning: 399 jiayi-hotline "{warning}"')
    text = f"SIP/2.0 {code} {reason}\r\n" + "\r\n".join(out) + "\r\nContent-Length: 0\r\n\r\n"
    return text.encode(), target


def offer_problem(message: SIP.SIPMessage) -> str | None:
    """Why an INVITE's SDP offer cannot be taken, or None when it can."""
    streams = message.body.get("m") if isinstance(message.body, dict) else None
    if not streams:
        return "no SDP offer (delayed offer is not supported)"
    audio = [m for m in streams if m.get("type") == "audio"]
    if not audio:
        return "no audio stream offered"
    offered = set()
    for stream in audio:
        for payload in stream.get("methods", []):
            rtpmap = stream.get("attributes", {}).get(payload, {}).get("rtpmap")
            # static payload types may come without an rtpmap (RFC 3551)
            offered.add(rtpmap["name"] if rtpmap else _STATIC_PAYLOADS.get(payload, payload))
    if not offered & _AUDIO_CODECS:
        return f"none of the offered codecs ({', '.join(sorted(offered))}) is PCMU or PCMA"
    return None


class RouteAwareSIPClient(SIP.SIPClient):
    """pyVoIP's SIP client with dialog routing done as RFC 3261 says."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._local_cseq = 100
        self._cseq_lock = threading.Lock()
        self.rejected = 0  # datagrams refused or dropped, for tests and metrics
        # Told the outcome of every REGISTER (on pyVoIP's threads).
        self.on_registration: Callable[[bool], None] | None = None
        # Told the Call-ID of every ACK (the caller confirmed our 200 OK).
        self.on_ack: Callable[[str], None] | None = None
        # Dialogs of calls we placed (telephony.dialer): every message with their Call-ID goes
        # to the handler as raw bytes, never to pyVoIP, which knows nothing of them.
        self.outbound: dict[str, Callable[[bytes], None]] = {}
        # Set by withdraw(): unregistered for good, new calls are not ours any more.
        self.withdrawn = False
        # BYEs and CANCELs we send, retransmitted until answered (UDP loses them).
        self.transactions = NonInviteTransactions(lambda message: self.out.sendto(message, (self.server, self.port)))

    def start(self) -> None:
        """pyVoIP's start, minus its one-second wait: it starts the receive loop on Timer(1, …),
        so for a second after start nothing was read (a first call, the 407 to a first INVITE)."""
        if self.NSD:
            raise RuntimeError("the SIP client is already started")
        self.NSD = True
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.bind((self.myIP, self.myPort))
        self.out = self.s
        self.register()
        self._receiver = threading.Thread(target=self.recv_loop, name="SIP receive", daemon=True)
        self._receiver.start()

    def stop(self) -> None:
        """pyVoIP's stop, but the socket is closed only once the receive loop has left it: closed
        under the loop, the loop's own clean-up failed (a thread exception at every stop)."""
        if not self.NSD:
            return
        self.NSD = False  # the receive loop ends within its 10 ms idle sleep
        if self.registerThread is not None:
            self.registerThread.cancel()
            self.deregister()
        receiver = getattr(self, "_receiver", None)
        if receiver is not None and receiver is not threading.current_thread():
            receiver.join(2)
        self._close_sockets()

    def register(self) -> bool:
        """One REGISTER (digest answered by pyVoIP), then the next one scheduled.

        pyVoIP stops the phone for good after three failures and re-registers only 5 s before
        expiry. The hotline must come back by itself when the registrar does: after a success
        the next REGISTER goes at half the expiry (a registrar that restarted and forgot us
        learns us again soon), after a failure with backoff up to REGISTER_RETRY_MAX_S, forever.
        """
        registrar = f"{self.server}:{self.port}"
        if self.withdrawn:  # a re-register timer that fired as we withdrew
            return False
        try:
            with self.recvLock:
                registered = self._SIPClient__register()  # pyVoIP's private single attempt
            why = "" if registered else "the registrar did not accept the registration"
        except Exception as exc:  # timeouts, refused credentials, socket errors
            registered, why = False, f"{type(exc).__name__}: {exc}"
        if registered:
            if self.registerFailures:
                log.info("sip.registered_again", registrar=registrar, after_failures=self.registerFailures)
            self.registerFailures = 0
            self.phone._status = PhoneStatus.REGISTERED
            delay = max(1, self.default_expires // 2)
        else:
            self.registerFailures += 1
            self.phone._status = PhoneStatus.FAILED
            delay = min(REGISTER_RETRY_MAX_S, 2 ** min(self.registerFailures - 1, 6))
            log.warning("sip.register_failed", registrar=registrar, user=self.username, why=why,
                        attempt=self.registerFailures, retry_in_s=delay)
        if self.on_registration is not None:
            self.on_registration(registered)
        if self.NSD and not self.withdrawn:
            self.registerThread = threading.Timer(delay, self.register)
            self.registerThread.daemon = True
            self.registerThread.name = "SIP re-register"
            self.registerThread.start()
        return registered

    def withdraw(self) -> bool:
        """Unregister for good (REGISTER with expiry 0) so the PBX sends new calls elsewhere;
        the dialogs in progress go on (their requests come to our Contact). True when the
        registrar confirmed."""
        self.withdrawn = True
        if self.registerThread is not None:
            self.registerThread.cancel()
            self.registerThread = None  # pyVoIP's stop() would unregister a second time
        try:
            with self.recvLock:
                done = bool(self._SIPClient__deregister())  # pyVoIP's private single attempt
        except Exception as exc:  # timeouts, socket errors: the binding expires by itself
            done = False
            log.warning("sip.unregister_failed", registrar=f"{self.server}:{self.port}",
                        why=f"{type(exc).__name__}: {exc}")
        if done:
            log.info("sip.unregistered", registrar=f"{self.server}:{self.port}", user=self.username)
        return done

    def reject(self, raw: bytes, code: int, reason: str, why: str) -> None:
        """Log a request we will not take and answer it with `code` when it can be answered."""
        self.rejected += 1
        first_line = raw.split(b"\r\n", 1)[0][:60].decode("utf-8", "replace")
        log.warning("sip.rejected", code=code, why=why, first_line=first_line, size=len(raw))
        response = stateless_response(raw, code, reason, why)
        if response is not None:
            self.out.sendto(*response)

    def parse_message(self, message: SIP.SIPMessage) -> None:
        if message.type == SIP.SIPMessageType.MESSAGE and message.method == "ACK":
            if self.on_ack is not None:
                self.on_ack(message.headers["Call-ID"])
            return
        if (message.type == SIP.SIPMessageType.MESSAGE and message.method in ("BYE", "CANCEL")
                and message.headers["Call-ID"] not in self.phone.calls):
            self.reject(message.raw, 481, "Call/Transaction Does Not Exist", "unknown dialog")
            return
        if message.type == SIP.SIPMessageType.MESSAGE and message.method == "CANCEL":
            self.out.sendto(self.gen_ok(message).encode("utf8"), (self.server, self.port))
            self.phone.cancelled(message)
            return
        super().parse_message(message)

    def recv(self) -> None:
        """pyVoIP's receive step, with refusals that are logged and answered, never swallowed."""
        # pyVoIP's recv_loop comes here every 10 ms when the socket is idle: the retransmission clock
        self.transactions.tick()
        raw = self.s.recv(8192)  # BlockingIOError goes back to pyVoIP's recv_loop, as it expects
        if not raw.strip(b"\x00\r\n \t"):
            return  # keep-alive
        if raw.startswith(b"SIP/2.0 "):
            self.transactions.on_response(raw)  # and on to whoever owns the dialog
        if self.outbound:
            call_id = CALL_ID.search(raw.split(b"\r\n\r\n", 1)[0])
            handler = self.outbound.get(call_id.group(1).decode("utf-8", "replace")) if call_id else None
            if handler is not None:
                handler(raw)
                return
        # pyVoIP's parser refuses methods it does not know, so decide those from the request line.
        request_line = _REQUEST_LINE.match(raw.split(b"\r\n\r\n", 1)[0])
        method = request_line.group(1).decode() if request_line else None
        if method == "OPTIONS":  # keep-alive / capability probe from the PBX
            response = stateless_response(raw, 200, "OK")
            if response is not None:
                self.out.sendto(*response)
            return
        if method is not None and method not in pyVoIP.SIPCompatibleMethods:
            self.reject(raw, 405, "Method Not Allowed", f"{method} is not handled here")
            return
        try:
            message = SIP.SIPMessage(raw)
        except Exception as exc:  # pyVoIP raises whatever its parser hits
            self.reject(raw, 400, "Bad Request", f"unparsable SIP ({type(exc).__name__})")
            return
        try:
            self.parse_message(message)
        except Exception as exc:
            log.exception("sip.handler_failed", method=getattr(message, "method", None))
            self.reject(raw, 500, "Server Internal Error", f"{type(exc).__name__}")

    def _copy_record_route(self, request: SIP.SIPMessage, response: str) -> str:
        return _insert_after_vias(response, [f"Record-Route: {v}" for v in record_routes(request.raw)])

    def gen_ringing(self, request: SIP.SIPMessage) -> str:
        # pyVoIP's 180 echoes the caller's Contact; a response's Contact must be our own.
        ringing = re.sub(r"(?m)^Contact: .*$", f"Contact: <sip:{self.username}@{self.myIP}:{self.myPort}>",
                         super().gen_ringing(request), count=1)
        return self._copy_record_route(request, ringing)

    def gen_answer(self, request: SIP.SIPMessage, sess_id: str, ms: Any, sendtype: Any) -> str:
        return self._copy_record_route(request, super().gen_answer(request, sess_id, ms, sendtype))

    def bye(self, request: SIP.SIPMessage) -> None:
        """Our BYE to the caller, retransmitted until answered (pyVoIP sends it once)."""
        self.transactions.start(self.gen_bye(request).encode("utf8"))

    def gen_bye(self, request: SIP.SIPMessage) -> str:
        """BYE for a dialog in which we are the UAS (the INVITE came from the other side).

        Request-URI: the caller's Contact. Route: the INVITE's Record-Route in order (the UAS
        route set). Our own Via, branch and CSeq; From/To swapped with both tags.
        """
        our_tag = self.tagLibrary[request.headers["Call-ID"]]
        remote_target = request.headers["Contact"].strip().strip("<>").split(">")[0]
        with self._cseq_lock:
            self._local_cseq += 1
            cseq = self._local_cseq
        lines = [
            f"BYE {remote_target} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.myIP}:{self.myPort};branch=z9hG4bK{self.gen_call_id()[:25]};rport",
            *(f"Route: {v}" for v in record_routes(request.raw)),
            "Max-Forwards: 70",
            f"From: {request.headers['To']['raw']};tag={our_tag}",
            f"To: {request.headers['From']['raw']};tag={request.headers['From']['tag']}",
            f"Call-ID: {request.headers['Call-ID']}",
            f"CSeq: {cseq} BYE",
            f"Contact: <sip:{self.username}@{self.myIP}:{self.myPort}>",
            "Content-Length: 0",
        ]
        return "\r\n".join(lines) + "\r\n\r\n"


class RouteAwarePhone(VoIPPhone):
    """VoIPPhone with the route-aware SIP client, and a hook when the far end hangs up."""

    def __init__(self, *args: Any, on_remote_bye: Callable[[str], None] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # pyVoIP's release_ports() holds portsLock while _cleanup_dead_calls() drops finished
        # calls; dropping the last reference runs VoIPCall.__del__, which calls release_ports()
        # again on the same thread. With a plain Lock that thread deadlocks and every later call
        # hangs in answer() (seen in our test suite); re-entrant, the nested release is harmless.
        self.portsLock = threading.RLock()
        self._on_remote_bye = on_remote_bye
        # RTP ports of the calls we placed, which pyVoIP's bookkeeping does not know about.
        self.dialed_ports: set[int] = set()
        # SDP session ids of live calls (pyVoIP's random draw from 1–100 000 never frees them).
        self._session_numbers = itertools.count(secrets.randbelow(1_000_000) + 1)
        old = self.sip
        self.sip = RouteAwareSIPClient(
            old.server, old.port, old.username, old.password, phone=self, myIP=old.myIP,
            myPort=old.myPort, callCallback=self.callback, fatalCallback=self.fatal,
        )

    def hold_port(self) -> int:
        """An RTP port for a call we place, kept until release_dialed_port."""
        with self.portsLock:
            port = self.request_port(blocking=False)
            self.dialed_ports.add(port)
            return port

    def release_dialed_port(self, port: int) -> None:
        with self.portsLock:
            self.dialed_ports.discard(port)
            if port in self.assignedPorts:
                self.assignedPorts.remove(port)

    def release_ports(self, call: Any = None) -> None:
        """pyVoIP's release, minus the ports still in use. With no call given it frees every
        port no pyVoIP call lists in assignedPorts — which pyVoIP fills only for calls it
        places: it would hand the RTP port of a live answered call, or of a call we dialled,
        to the next call. Ports of answered calls are freed by forget_call."""
        with self.portsLock:
            live = {c.inPort for x in self.calls.values() for c in x.RTPClients}
            held = [p for p in self.assignedPorts if p in self.dialed_ports or p in live]
            super().release_ports(call)
            self.assignedPorts.extend(p for p in held if p not in self.assignedPorts)

    def _callback_MSG_Invite(self, request: SIP.SIPMessage) -> None:
        call_id = request.headers["Call-ID"]
        if call_id in self.calls:  # a re-INVITE (or a retransmission) keeps its dialog
            super()._callback_MSG_Invite(request)
            return
        problem = offer_problem(request)
        if problem is not None:
            self.sip.reject(request.raw, 488, "Not Acceptable Here", problem)
            return
        if self.callCallback is None:
            self.sip.reject(request.raw, 486, "Busy Here", "no call handler")
            return
        # pyVoIP offers a new call through Timer(1, callback): every call waited a second before
        # the service saw it, and _cleanup_dead_calls() later dropped calls whose Timer thread
        # had ended — live calls, whose BYE then got 481 and never reached the service (found
        # under load by bench/calls). The call is offered at once here and kept in self.calls
        # until the service forgets it (forget_call), after its BYE retransmissions are over.
        with self.portsLock:
            sess_id = next(self._session_numbers)
            self.session_ids.append(sess_id)
        self.sip.out.sendto(self.sip.gen_ringing(request).encode("utf8"), (self.server, self.port))
        self._create_Call(request, sess_id)
        self.callCallback(self.calls[call_id])

    def forget_call(self, call: Any) -> None:
        """Drop an ended call: its ports and session id are free again (pyVoIP never frees
        session ids, and draws new ones from 1–100 000: after that many calls it would spin).
        pyVoIP itself drops the call from self.calls on BYE and hangup, but not the rest."""
        with self.portsLock:
            if self.calls.get(call.call_id) is call:
                del self.calls[call.call_id]
            for client in call.RTPClients:
                if client.NSD:
                    client.stop()
            # an answered call's ports are its RTP clients' (pyVoIP fills assignedPorts only
            # for calls it places)
            for port in {c.inPort for c in call.RTPClients} | set(call.assignedPorts):
                if port in self.assignedPorts:
                    self.assignedPorts.remove(port)
            with contextlib.suppress(ValueError):
                self.session_ids.remove(int(call.session_id))

    def _create_Call(self, request: SIP.SIPMessage, sess_id: int) -> None:
        super()._create_Call(request, sess_id)
        adopt(self.calls[request.headers["Call-ID"]])  # G.711 payloads in and out, unchanged

    def _callback_MSG_Bye(self, request: SIP.SIPMessage) -> None:
        super()._callback_MSG_Bye(request)
        if self._on_remote_bye is not None:
            self._on_remote_bye(request.headers["Call-ID"])

    def cancelled(self, request: SIP.SIPMessage) -> None:
        """The caller gave up before we answered (CANCEL, already answered 200 by the client).

        pyVoIP ignores a CANCEL: the INVITE never got its 487 (the proxy kept the transaction
        until its own timer) and the call stayed "ringing", to be answered later for a caller
        who was gone. Here the INVITE is ended with 487 and the service told, as for a BYE."""
        call_id = request.headers["Call-ID"]
        with self.portsLock:
            call = self.calls.get(call_id)
            if call is None or call.state != CallState.RINGING:
                return  # answered already: the caller's BYE follows the 200 (RFC 3261 §9.2)
            call.state = CallState.ENDED
            del self.calls[call_id]
        for client in call.RTPClients:
            client.stop()
        response = stateless_response(call.request.raw, 487, "Request Terminated")
        if response is not None:
            self.sip.out.sendto(*response)
        log.info("sip.cancelled", call_id=call_id)
        if self._on_remote_bye is not None:
            self._on_remote_bye(call_id)
