"""pyVoIP made to behave behind a record-routing proxy (RFC 3261 §12.1.1, §12.2.1.1).

pyVoIP 1.6.8 answers an INVITE without copying its Record-Route headers into the 180/200, so the
caller's route set is empty and its BYE, sent to the proxy, dies there with 404 (measured: see
shared/notes/pyvoip.md). Its own BYE reuses the caller's Via stack and CSeq space and carries no
Route, so the proxy cannot route it either. We subclass rather than fork: the SIP client below
overrides only the message builders, and `RouteAwarePhone` swaps it in.

This module is the thread side of telephony: pyVoIP calls it on its own threads. Nothing here
touches asyncio; telephony.agent bridges into the event loop.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any

from pyVoIP import SIP
from pyVoIP.VoIP import VoIPPhone

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


class RouteAwareSIPClient(SIP.SIPClient):
    """pyVoIP's SIP client with dialog routing done as RFC 3261 says."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._local_cseq = 100
        self._cseq_lock = threading.Lock()

    def _copy_record_route(self, request: SIP.SIPMessage, response: str) -> str:
        return _insert_after_vias(response, [f"Record-Route: {v}" for v in record_routes(request.raw)])

    def gen_ringing(self, request: SIP.SIPMessage) -> str:
        # pyVoIP's 180 echoes the caller's Contact; a response's Contact must be our own.
        ringing = re.sub(r"(?m)^Contact: .*$", f"Contact: <sip:{self.username}@{self.myIP}:{self.myPort}>",
                         super().gen_ringing(request), count=1)
        return self._copy_record_route(request, ringing)

    def gen_answer(self, request: SIP.SIPMessage, sess_id: str, ms: Any, sendtype: Any) -> str:
        return self._copy_record_route(request, super().gen_answer(request, sess_id, ms, sendtype))

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
        self._on_remote_bye = on_remote_bye
        old = self.sip
        self.sip = RouteAwareSIPClient(
            old.server, old.port, old.username, old.password, phone=self, myIP=old.myIP,
            myPort=old.myPort, callCallback=self.callback, fatalCallback=self.fatal,
        )

    def _callback_MSG_Bye(self, request: SIP.SIPMessage) -> None:
        super()._callback_MSG_Bye(request)
        if self._on_remote_bye is not None:
            self._on_remote_bye(request.headers["Call-ID"])
