"""Non-INVITE client transactions over UDP: a BYE or CANCEL is sent again until it is answered.

On UDP a lost BYE leaves the doctor's softphone in a call nobody is on, and a lost CANCEL leaves
it ringing for a caller who has gone. RFC 3261 §17.1.2.2: the request is retransmitted on
Timer E (T1, doubling, capped at T2) until a final response arrives, and given up after
Timer F (64·T1). A provisional response does not stop the retransmissions on UDP, it only
stretches them to T2.

A transaction is matched by its top Via branch and CSeq method (§17.1.3). A CANCEL shares its
INVITE's branch; the INVITE's final response also ends the CANCEL (the INVITE is over either
way, and its 487 may overtake the CANCEL's 200).

The table is driven from the SIP receive thread (RouteAwareSIPClient.recv calls `tick` every
few milliseconds and `on_response` for every response); `start` may be called from any thread.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("telephony.transactions")

T1_S = 0.5  # RTT estimate (RFC 3261 §17.1.1.1)
T2_S = 4.0  # the longest interval between retransmissions of a non-INVITE request
TIMER_F_S = 64 * T1_S  # give up: the far end is gone (32 s)

_BRANCH = re.compile(rb"(?im)^(?:Via|v)\s*:[^\r\n]*?;\s*branch=([^;,\s\r\n]+)")
_CSEQ = re.compile(rb"(?im)^CSeq\s*:\s*(\d+)\s+([A-Za-z]+)")
# The Call-ID header (or its compact form) of a message; shared with telephony.sip_ua.
CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3})")


def transaction_key(message: bytes) -> tuple[str, str] | None:
    """(top Via branch, CSeq method) of a request or response; None if either is missing."""
    head = message.split(b"\r\n\r\n", 1)[0]
    branch, cseq = _BRANCH.search(head), _CSEQ.search(head)
    if branch is None or cseq is None:
        return None
    return branch.group(1).decode("ascii", "replace"), cseq.group(2).decode("ascii", "replace").upper()


@dataclass
class _Pending:
    request: bytes
    method: str
    call_id: str
    started: float
    next_at: float
    interval: float
    sends: int = 1


class NonInviteTransactions:
    def __init__(self, send: Callable[[bytes], None], clock: Callable[[], float] = time.monotonic):
        self._send = send
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], _Pending] = {}
        self.timed_out = 0  # requests never answered within Timer F, for tests and metrics

    def start(self, request: bytes) -> None:
        """Send `request` now and again on Timer E until it is answered or Timer F runs out."""
        key = transaction_key(request)
        self._send(request)
        if key is None:  # not a request we built; nothing to match answers against
            return
        call_id = CALL_ID.search(request.split(b"\r\n\r\n", 1)[0])
        now = self._clock()
        with self._lock:
            self._pending[key] = _Pending(
                request, key[1], call_id.group(1).decode("utf-8", "replace").strip() if call_id else "",
                now, now + T1_S, T1_S)

    def on_response(self, response: bytes) -> bool:
        """A response arrived: a final one ends its transaction. True if it was one of ours."""
        if not self._pending:  # the common case, without taking the lock
            return False
        status = _STATUS.match(response)
        key = transaction_key(response)
        if status is None or key is None:
            return False
        code = int(status.group(1))
        branch, method = key
        with self._lock:
            pending = self._pending.get(key)
            if pending is None:
                if method == "INVITE" and code >= 200:  # the INVITE is over: so is its CANCEL
                    self._pending.pop((branch, "CANCEL"), None)
                return False
            if code >= 200:
                del self._pending[key]
            else:  # provisional: keep going, but at T2 (§17.1.2.2)
                pending.interval = T2_S
                pending.next_at = self._clock() + T2_S
        return True

    def tick(self) -> None:
        """Retransmit what is due and give up on what has waited Timer F."""
        if not self._pending:
            return
        now = self._clock()
        due, expired = [], []
        with self._lock:
            for key, pending in list(self._pending.items()):
                if now - pending.started >= TIMER_F_S:
                    expired.append(self._pending.pop(key))
                elif now >= pending.next_at:
                    pending.interval = min(pending.interval * 2, T2_S)
                    pending.next_at = now + pending.interval
                    pending.sends += 1
                    due.append(pending.request)
        for request in due:
            self._send(request)
        for pending in expired:
            self.timed_out += 1
            log.warning("sip.request_unanswered", method=pending.method, call_id=pending.call_id,
                        sends=pending.sends, seconds=round(now - pending.started, 1))

    def waiting(self) -> int:
        with self._lock:
            return len(self._pending)
