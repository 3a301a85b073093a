"""Hand-made SIP for the edge tests: requests as a (possibly hostile) peer sends them straight to
the service's port, and a socket that collects what comes back. Blocking; run in a thread."""

from __future__ import annotations

import socket
import time


def sdp(payloads: str, rtpmaps: str = "", port: int = 40000) -> str:
    return ("v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP {payloads}\r\n{rtpmaps}")


def invite(body: str | None, *, call_id: str, port: int, truncate_at: int | None = None,
           branch: str | None = None, host: str = "127.0.0.1") -> bytes:
    text = (
        f"INVITE sip:hotline@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch={branch or 'z9hG4bK' + call_id}\r\n"
        f"From: <sip:13800000009@{host}:{port}>;tag=from-{call_id}\r\n"
        f"To: <sip:hotline@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:13800000009@{host}:{port}>\r\nMax-Forwards: 70\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body or '')}\r\n\r\n{body or ''}"
    ).encode()
    return text[:truncate_at] if truncate_at else text


def header(message: bytes, name: str) -> str:
    for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower().encode():
            return value.strip().decode()
    return ""


def status_of(message: bytes) -> int:
    first = message.split(b"\r\n", 1)[0]
    return int(first.split()[1]) if first.startswith(b"SIP/2.0 ") else 0


def ack_for(request: bytes, response: bytes) -> bytes | None:
    """The ACK a caller owes a final response to its INVITE: for an error, in the INVITE's
    transaction (same branch); for a 2xx, a new one (any branch does here)."""
    if not request.startswith(b"INVITE ") or status_of(response) < 200:
        return None
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    to = b"To: " + header(response, "To").encode()
    keep = [ln for ln in head[1:] if ln.split(b":", 1)[0] in (b"Via", b"From", b"Call-ID", b"Max-Forwards")]
    if status_of(response) < 300:
        keep = [ln.replace(b"branch=", b"branch=z9hG4bKack") if ln.startswith(b"Via") else ln for ln in keep]
    cseq = next((ln for ln in head if ln.startswith(b"CSeq:")), None)
    if cseq is None or not header(response, "To"):
        return None  # a request so broken there is nothing to acknowledge with
    cseq = cseq.replace(b"INVITE", b"ACK")
    first = head[0].replace(b"INVITE ", b"ACK ", 1)
    return b"\r\n".join([first, *keep, to, cseq, b"Content-Length: 0"]) + b"\r\n\r\n"


def exchange(port: int, sock: socket.socket, datagram: bytes, *, wait: float = 1.5, ack: bool = True) -> list[bytes]:
    """Send one datagram to the service, return every reply that arrives within `wait` (an
    INVITE's final is ACKed as a caller would, or the service sends it again: Timer G)."""
    sock.sendto(datagram, ("127.0.0.1", port))
    replies: list[bytes] = []
    sock.settimeout(wait)
    try:
        while True:
            reply = sock.recv(65536)
            replies.append(reply)
            answer = ack_for(datagram, reply) if ack else None
            if answer is not None:
                sock.sendto(answer, ("127.0.0.1", port))
            sock.settimeout(0.8)
    except TimeoutError:
        return replies


def collect(sock: socket.socket, seconds: float) -> list[bytes]:
    """Everything that arrives on `sock` for `seconds` (bounded)."""
    out: list[bytes] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            out.append(sock.recv(65536))
        except TimeoutError:
            break
    return out


def status_lines(replies: list[bytes]) -> list[str]:
    return [r.split(b"\r\n", 1)[0].decode() for r in replies]
