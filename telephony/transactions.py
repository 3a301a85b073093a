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
    address: tuple[str, int] | None = None
    sends: int = 1


class NonInviteTransactions:
    def __init__(self, send: Callable[[bytes, tuple[str, int] | None], None],
                 clock: Callable[[], float] = time.monotonic):
        self._send = send
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], _Pending] = {}
        self.timed_out = 0  # requests never answered within Timer F, for tests and metrics

    def start(self, request: bytes, address: tuple[str, int] | None = None) -> None:
        """Send `request` (to `address`, else the outbound proxy) now and again on Timer E until
        it is answered or Timer F runs out."""
        key = transaction_key(request)
        self._send(request, address)
        if key is None:  # not a request we built; nothing to match answers against
            return
        call_id = CALL_ID.search(request.split(b"\r\n\r\n", 1)[0])
        now = self._clock()
        with self._lock:
            self._pending[key] = _Pending(
                request, key[1], call_id.group(1).decode("utf-8", "replace").strip() if call_id else "",
                now, now + T1_S, T1_S, address)

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
                    due.append((pending.request, pending.address))
        for request, address in due:
            self._send(request, address)
        for pending in expired:
            self.timed_out += 1
            log.warning("sip.request_unanswered", method=pending.method, call_id=pending.call_id,
                        sends=pending.sends, seconds=round(now - pending.started, 1))

    def waiting(self) -> int:
        with self._lock:
            return len(self._pending)


# --- the server side (RFC 3261 §17.2) ----------------------------------------------------------

class Retransmissions:
    """Responses sent again until the other side shows it has them: a 2xx to an INVITE until its
    ACK (§13.3.1.4), a non-2xx final to an INVITE until its ACK (Timer G), each doubling from T1
    to T2 and given up after 64·T1, when `on_timeout` is told (no ACK: the caller has gone)."""

    def __init__(self, send: Callable[[bytes, tuple[str, int]], None], clock: Callable[[], float] = time.monotonic):
        self._send = send
        self._clock = clock
        self._items: dict[object, list] = {}  # key: [data, address, started, next_at, interval, on_timeout]

    def start(self, key: object, data: bytes, address: tuple[str, int],
              on_timeout: Callable[[], None] | None = None, give_up_after_s: float = TIMER_F_S) -> None:
        now = self._clock()
        self._send(data, address)
        self._items[key] = [data, address, now, now + T1_S, T1_S, on_timeout, give_up_after_s]

    def stop(self, key: object) -> bool:
        """The ACK came: stop. True if it was being retransmitted."""
        return self._items.pop(key, None) is not None

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def tick(self) -> None:
        if not self._items:
            return
        now = self._clock()
        for key, item in list(self._items.items()):
            data, address, started, next_at, interval, on_timeout, give_up_after_s = item
            if now - started >= give_up_after_s:
                del self._items[key]
                if on_timeout is not None:
                    on_timeout()
            elif now >= next_at:
                item[4] = min(interval * 2, T2_S)
                item[3] = now + item[4]
                self._send(data, address)


@dataclass
class _ServerTransaction:
    method: str
    address: tuple[str, int]
    response: bytes | None = None
    final: int = 0  # the final status sent, 0 while none
    done_at: float = 0.0  # when the entry may be forgotten (set at the final response)


class ServerTransactions:
    """The requests we have seen and what we answered, so that a retransmitted request gets the
    last response again and nothing else (§17.2.1, §17.2.2): on a lossy link a caller sends its
    INVITE again until it hears from us, and a retransmission taken for a new request set up a
    second call on the same ports. An ACK to a non-2xx final ends its INVITE's Timer G."""

    def __init__(self, send: Callable[[bytes, tuple[str, int]], None], clock: Callable[[], float] = time.monotonic):
        self._send = send
        self._clock = clock
        self._table: dict[tuple[str, ...], _ServerTransaction] = {}
        self.retransmissions = Retransmissions(send, clock)
        self.absorbed = 0  # retransmitted requests answered from the table, for tests and metrics

    @staticmethod
    def key(message) -> tuple[str, ...]:  # message: telephony.sip_message.SipMessage
        """§17.2.3: the top Via's branch and sent-by and the method (an ACK or CANCEL is matched
        by the branch of the INVITE it is about, the CANCEL in a table of its own); for a request
        of an RFC 2543 element, without the magic cookie, the fields that identify it."""
        from telephony.sip_message import SipParseError, Via

        method = message.method
        kind = "INVITE" if method == "ACK" else method
        vias = message.headers_all("Via")
        try:
            via = Via.parse(vias[0]) if vias else None
        except SipParseError:
            via = None
        if via is not None and via.branch.startswith("z9hG4bK") and len(via.branch) > 7:
            return (via.branch, via.sent_by(), kind)
        number = message.cseq[0]
        return (message.call_id, str(number), kind, message.from_tag or "", vias[0] if vias else "")

    def seen(self, message) -> bool:
        """True when `message` belongs to a transaction we already have: a retransmitted request
        (its last response sent again) or the ACK of a non-2xx final. Such a message is handled
        here and goes no further."""
        key = self.key(message)
        entry = self._table.get(key)
        if entry is None:
            return False
        if message.method == "ACK":
            if entry.final >= 300:
                self.retransmissions.stop(key)
                return True
            return False  # the ACK of a 2xx is a transaction of its own, for the dialog
        if entry.response is not None:
            self._send(entry.response, entry.address)
        self.absorbed += 1
        return True

    def begin(self, message, address: tuple[str, int]) -> None:
        if message.method != "ACK":
            self._table[self.key(message)] = _ServerTransaction(message.method, address)

    def respond(self, message, response: bytes, status: int, address: tuple[str, int] | None = None,
                send: bool = True) -> None:
        """Send `response` to `message` and remember it for retransmissions of the request
        (`send` False: remember only, someone else sends it — a 2xx the dialog retransmits)."""
        key = self.key(message)
        entry = self._table.get(key)
        if entry is None:
            entry = self._table[key] = _ServerTransaction(message.method or "", address or ("", 0))
        entry.response = response
        target = address or entry.address
        if status >= 200:
            entry.final = status
            entry.done_at = self._clock() + TIMER_F_S
        if not send:
            return
        if message.method == "INVITE" and status >= 300:
            self.retransmissions.start(key, response, target)  # Timer G until the ACK
        else:
            self._send(response, target)

    def final_sent(self, message) -> int:
        entry = self._table.get(self.key(message))
        return entry.final if entry is not None else 0

    def tick(self) -> None:
        self.retransmissions.tick()
        if not self._table:
            return
        now = self._clock()
        for key in [k for k, e in self._table.items() if e.final and now >= e.done_at]:
            del self._table[key]

    def __len__(self) -> int:
        return len(self._table)
