"""The service's SIP user agent on the event loop: one UDP socket, every datagram accounted for.

pyVoIP's SIP side (its parser, its INVITE handling, its registration) is gone from the service:
it broke on legal SIP that real phones send, answered retransmitted INVITEs as new calls, read
the socket itself while registering, and raised in its threads on odd input. pyVoIP is kept for
RTP only (telephony.rtp). What arrives here goes, in order, through:

1. the source check: requests only from the PBX (`trusted`); others get 403 or are dropped,
   and are counted, with one log line per source per interval (never one per datagram);
2. the parser (telephony.sip_message): what cannot be read is answered 400/505 when it can be
   addressed, else dropped — logged the same rate-limited way;
3. transactions: a response goes to whoever sent the request (registration, a call we placed,
   a BYE/CANCEL retransmitted until answered); a retransmitted request gets the last response
   again and nothing else (telephony.transactions.ServerTransactions);
4. requests by method: a new INVITE is checked (Require, body, SDP, overload) and offered to
   `on_invite`; requests inside a dialog go to its owner (`dialogs`); CANCEL ends a ringing
   INVITE with 487; OPTIONS is answered; other methods get 405/501 with Allow.

Every response goes where RFC 3261 §18.2.2 and RFC 3581 say: the top Via, corrected by the
source address (received) and port (rport).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from telephony.registration import Registration
from telephony.sip_message import (
    SipMessage,
    SipParseError,
    build_response,
    parse,
    response_address,
    validate_request,
)
from telephony.transactions import NonInviteTransactions, ServerTransactions

log = structlog.get_logger("telephony.sip")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE"
# Methods we know and do not take (405); any other method is unknown to us (501).
_KNOWN_METHODS = {"REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH", "PRACK"}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset()  # option tags we implement (none yet)
TICK_S = 0.02  # how often retransmission timers are looked at
LOG_EVERY_S = 10.0  # at most one line per source and kind of bad input in this long

# The start of a request line, however broken the rest of it is (two spaces, a trailing one, a
# version we do not speak): enough to know a request came and can be answered.
_REQUEST_LINE = re.compile(rb"^([A-Za-z0-9\-.!%*_+`'~]+) +\S")
_DIALOG_HEADERS = ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")


def stateless_response(raw: bytes, code: int, reason: str, warning: str = "") -> tuple[bytes, tuple[str, int]] | None:
    """A final response built from the header lines of a request we could not parse, and where
    its Via says to send it; None when `raw` is not a request we can answer (a response, an ACK,
    no Via, Call-ID or CSeq)."""
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
    match = re.match(r"\s*SIP\s*/\s*\d+\.\d+\s*/\s*UDP\s+([^;:\s]+)(?::(\d+))?(.*)$", vias[0].split(",")[0], re.IGNORECASE)
    if not match:
        return None
    port = match.group(2)
    if port is not None and not 0 < int(port) < 65536:
        return None
    rport = re.search(r";rport=(\d+)", match.group(3))
    target = (match.group(1), int(rport.group(1)) if rport else int(port or 5060))
    out = [ln + f";tag={secrets.token_hex(4)}" if name in ("to", "t") and ";tag=" not in ln.lower() else ln
           for name, ln in kept]
    if warning:
        out.append(f'Warning: 399 jiayi-hotline "{_quote_safe(warning)}"')
    text = f"SIP/2.0 {code} {reason}\r\n" + "\r\n".join(out) + "\r\nContent-Length: 0\r\n\r\n"
    return text.encode(), target


def _quote_safe(text: str) -> str:
    return text.replace("\\", "").replace('"', "'").replace("\r", " ").replace("\n", " ")[:200]


def warning_header(why: str) -> tuple[str, str]:
    return ("Warning", f'399 jiayi-hotline "{_quote_safe(why)}"')


class RateLimitedLog:
    """One log line per (source, kind) per interval, with the count of what it stood for: junk
    at full rate must not become megabytes of log a second."""

    def __init__(self, interval_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self._clock = clock
        self._seen: dict[tuple[str, str], list[float | int]] = {}  # key: [last logged at, suppressed]

    def warning(self, source: str, kind: str, **fields: object) -> None:
        key = (source, kind)
        now = self._clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval_s:
            entry[1] += 1
            return
        suppressed = int(entry[1]) if entry is not None else 0
        self._seen[key] = [now, 0]
        if len(self._seen) > 10_000:  # a flood from many sources: forget the oldest
            for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:5_000]:
                del self._seen[old]
        log.warning(kind, source=source, **({"suppressed_since_last": suppressed} if suppressed else {}), **fields)


class DialogOwner(Protocol):
    def on_request(self, request: SipMessage, source: tuple[str, int]) -> None: ...


class InviteOwner(Protocol):
    def on_cancel(self) -> bool: ...


@dataclass
class EdgeCounters:
    """What the edge turned away, for tests, benchmarks and metrics."""

    untrusted: int = 0
    unparsable: int = 0
    refused: int = 0  # answered with an error before reaching a call
    overloaded: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


class UserAgent(asyncio.DatagramProtocol):
    def __init__(self, *, local_ip: str, local_port: int, registrar: tuple[str, int], user: str, password: str,
                 trusted: set[str] | None = None, untrusted_action: str = "reject",
                 register_expires_s: int = 120, register_timeout_s: float = 10.0,
                 on_registration: Callable[[bool], None] | None = None):
        self.local_ip = local_ip
        self.local_port = local_port
        self.registrar = registrar
        self.username = user
        self.password = password
        # Requests are taken from these addresses only (the PBX); responses come from there too.
        self.trusted = set(trusted) if trusted else {registrar[0]}
        self.untrusted_action = untrusted_action  # "reject" (403) or "drop"
        self.counters = EdgeCounters()
        self.badlog = RateLimitedLog()
        self.transport: asyncio.DatagramTransport | None = None
        self.registration = Registration(
            registrar=registrar, user=user, password=password, local=(local_ip, local_port), send=self.send,
            expires_s=register_expires_s, timeout_s=register_timeout_s, on_change=on_registration)
        self.server_transactions = ServerTransactions(self.send)
        self.client_transactions = NonInviteTransactions(self.send)
        # Where requests and responses go once parsed and checked:
        self.on_invite: Callable[[SipMessage, tuple[str, int]], None] | None = None
        self.dialogs: dict[str, DialogOwner] = {}  # by Call-ID: calls in progress, either way
        self.invites: dict[tuple[str, ...], InviteOwner] = {}  # ringing INVITEs, by transaction key
        self.outbound: dict[str, Callable[[SipMessage], None]] = {}  # calls we place, by Call-ID
        # Set by the owner: may a new call be offered now? (why not, or None)
        self.admission: Callable[[], str | None] = lambda: None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def via(self) -> str:
        return f"{self.local_ip}:{self.local_port}"

    @property
    def contact(self) -> str:
        return f"<sip:{self.username}@{self.local_ip}:{self.local_port}>"

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.local_ip, self.local_port))
        self._ticker = asyncio.create_task(self._tick(), name="SIP timers")
        self.registration.start()
        await self.registration.first_attempt()

    async def stop(self, *, unregister: bool = True) -> None:
        if unregister and self.registration.registered:
            await self.registration.withdraw()
        await self.registration.stop()
        # a last chance for BYEs in flight to be answered (bounded: their Timer F is 32 s)
        for _ in range(50):
            if not self.client_transactions.waiting():
                break
            await asyncio.sleep(0.02)
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for something we sent: the far end is gone; timers handle it
        log.debug("sip.socket_error", error=str(exc))

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.client_transactions.tick()
                self.server_transactions.tick()
            except Exception:  # a timer callback's bug must not stop every other timer
                log.exception("sip.timer_failed")

    def send(self, data: bytes, address: tuple[str, int] | None = None) -> None:
        if self.transport is not None:
            self.transport.sendto(data, address or self.registrar)

    def send_reliably(self, request: bytes, address: tuple[str, int] | None = None) -> None:
        """A BYE or CANCEL, sent (to `address`, else the outbound proxy) again until answered
        (Timer E/F)."""
        self.client_transactions.start(request, address)

    # --- receiving -----------------------------------------------------------------------------

    def datagram_received(self, data: bytes, source: tuple[str, int]) -> None:  # type: ignore[override]
        try:
            self._receive(data, source)
        except Exception as exc:  # a bug of ours must cost one message, never the socket
            log.exception("sip.receive_failed", source=source[0])
            response = stateless_response(data, 500, "Server Internal Error", type(exc).__name__)
            if response is not None:
                self.send(*response)

    def _receive(self, data: bytes, source: tuple[str, int]) -> None:
        if not data.strip(b"\x00\r\n \t"):
            return  # keep-alive (RFC 5626 CRLF ping)
        is_response = data[:8].upper() == b"SIP/2.0 "
        if source[0] not in self.trusted:
            self.counters.untrusted += 1
            self.badlog.warning(source[0], "sip.untrusted_source", action=self.untrusted_action)
            if not is_response and self.untrusted_action == "reject":
                self._stateless(data, 403, "Forbidden", "requests are taken from the PBX only")
            return
        try:
            message = parse(data)
        except SipParseError as exc:
            self.counters.unparsable += 1
            self.badlog.warning(source[0], "sip.unparsable", why=exc.reason, size=len(data),
                                first_line=data.split(b"\n", 1)[0][:60].decode("utf-8", "replace"))
            if not is_response:
                self._stateless(data, exc.status, "Bad Request" if exc.status == 400 else "Version Not Supported",
                                exc.reason, count=False)
            return
        if message.is_request:
            self._on_request(message, source)
        else:
            self._on_response(message)

    def _stateless(self, data: bytes, status: int, reason: str, why: str, *, count: bool = True) -> None:
        if count:
            self.counters.refused += 1
        response = stateless_response(data, status, reason, why)
        if response is not None:
            self.counters.by_status[status] = self.counters.by_status.get(status, 0) + 1
            self.send(*response)

    def _on_response(self, response: SipMessage) -> None:
        if self.registration.on_response(response):
            return
        self.client_transactions.on_response(response.raw)  # BYE/CANCEL retransmissions end
        handler = self.outbound.get(response.call_id)
        if handler is not None:
            handler(response)

    def respond(self, request: SipMessage, source: tuple[str, int], status: int, *, why: str = "",
                to_tag: str | None = None, extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                record_route: bool = False, reliable: bool = True) -> bytes:
        """Answer `request` (kept for its retransmissions; an INVITE's error final is sent again
        until its ACK). Returns the response as sent."""
        headers = list(extra or [])
        if why:
            headers.append(warning_header(why))
        if status in (405, 501) or request.method == "OPTIONS":
            headers.append(("Allow", ALLOW))
        response = build_response(request, status, to_tag=to_tag or secrets.token_hex(6), extra=headers,
                                  body=body, record_route=record_route)
        address = response_address(request, source)
        if status >= 300:
            self.counters.by_status[status] = self.counters.by_status.get(status, 0) + 1
        if reliable and request.method != "ACK":
            self.server_transactions.respond(request, response, status, address)
        else:
            self.send(response, address)
        return response

    def _on_request(self, request: SipMessage, source: tuple[str, int]) -> None:
        if self.server_transactions.seen(request):
            return  # a retransmission, answered again; or the ACK of our error final
        problem = validate_request(request)
        if problem is not None:
            status, why = problem
            self.counters.refused += 1
            self.badlog.warning(source[0], "sip.bad_request", status=status, why=why, method=request.method)
            # stateless: a request this broken may not be ACKable; without a Via, a response
            # could not be formed at all (§8.2.6.2): dropped, counted
            if request.method != "ACK" and request.count("Via"):
                self.respond(request, source, status, why=why, reliable=False)
            return
        method = request.method
        assert method is not None
        if method != "ACK":
            self.server_transactions.begin(request, response_address(request, source))
        if method not in ("ACK", "CANCEL"):
            unsupported = [t for t in request.headers_all("Require") if t.lower() not in SUPPORTED_EXTENSIONS]
            if unsupported:  # RFC 3261 §8.2.2.3
                self.respond(request, source, 420, why="extension not supported",
                             extra=[("Unsupported", ", ".join(unsupported))])
                return
        if method == "INVITE" and request.to_tag is None:
            self._on_new_invite(request, source)
            return
        if method == "CANCEL":
            self._on_cancel(request, source)
            return
        owner = self.dialogs.get(request.call_id)
        if method == "ACK":
            if owner is not None:
                owner.on_request(request, source)
            return  # an ACK nobody expects is dropped (§17.2.3)
        if owner is not None and request.to_tag is not None:
            owner.on_request(request, source)
            return
        if method == "OPTIONS":
            self.respond(request, source, 200, extra=[("Accept", "application/sdp"), ("Supported", "")])
            return
        if method in ("BYE", "INVITE", "UPDATE", "INFO"):
            self.respond(request, source, 481, why="no such dialog")
            return
        if method in _KNOWN_METHODS:
            self.respond(request, source, 405, why=f"{method} is not handled here")
            return
        self.respond(request, source, 501, why=f"{method[:30]} is not a method we know")

    def _on_new_invite(self, request: SipMessage, source: tuple[str, int]) -> None:
        accept = [a.split(";", 1)[0].strip().lower() for a in request.headers_all("Accept")]
        if request.count("Accept") and not {"application/sdp", "application/*", "*/*"} & set(accept):
            # our answer is SDP, which the caller says it cannot take (RFC 3261 §21.4.7)
            self.respond(request, source, 406, why="the answer would be application/sdp",
                         extra=[("Accept", "application/sdp")])
            return
        if request.call_id in self.dialogs or request.call_id in self.outbound:
            # same Call-ID, no To tag, not a retransmission: a merged or looped request (§8.2.2.2)
            self.respond(request, source, 482, why="merged request")
            return
        refusal = self.admission()
        if refusal is not None:
            self.counters.overloaded += 1
            self.badlog.warning(source[0], "sip.overloaded", why=refusal)
            self.respond(request, source, 503, why=refusal, extra=[("Retry-After", "30")])
            return
        if self.on_invite is None:
            self.respond(request, source, 486, why="no call handler")
            return
        self.on_invite(request, source)

    def _on_cancel(self, request: SipMessage, source: tuple[str, int]) -> None:
        key = ServerTransactions.key(request)
        invite_key = (*key[:2], "INVITE") if len(key) == 3 else (*key[:2], "INVITE", *key[3:])
        owner = self.invites.get(invite_key)
        if owner is None:
            self.respond(request, source, 481, why="no such transaction")
            return
        self.respond(request, source, 200)
        owner.on_cancel()
