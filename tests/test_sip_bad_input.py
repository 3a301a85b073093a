"""Malformed and unacceptable SIP at the service's own port: the right answer or a logged drop,
and the next real call through the proxy is still answered."""

from __future__ import annotations

import asyncio
import socket

import pytest

from telephony.agent import SipAgent
from tests.sip_peers import Kamailio, answer_one_call

pytestmark = pytest.mark.sip


def invite(sdp: str | None, *, call_id: str, port: int, truncate_at: int | None = None) -> bytes:
    body = sdp or ""
    text = (
        f"INVITE sip:hotline@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:13800000009@127.0.0.1:{port}>;tag=from-{call_id}\r\n"
        f"To: <sip:hotline@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:13800000009@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n"
        + ("Content-Type: application/sdp\r\n" if sdp else "")
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()
    return text[:truncate_at] if truncate_at else text


def sdp(payloads: str, rtpmaps: str = "") -> str:
    return ("v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio 40000 RTP/AVP {payloads}\r\n{rtpmaps}")


def exchange(port: int, sock: socket.socket, datagram: bytes, *, wait: float = 1.5) -> list[bytes]:
    """Send one datagram to the service, return every reply that arrives within `wait`."""
    sock.sendto(datagram, ("127.0.0.1", port))
    replies, sock_deadline = [], wait
    sock.settimeout(sock_deadline)
    try:
        while True:
            replies.append(sock.recv(8192))
            sock.settimeout(0.3)
    except TimeoutError:
        return replies


def status_lines(replies: list[bytes]) -> list[str]:
    return [r.split(b"\r\n", 1)[0].decode() for r in replies]


async def test_a_burst_of_bad_sip_is_answered_or_dropped_and_calls_still_work(
    agent: SipAgent, kamailio: Kamailio
) -> None:
    service_port = agent.account.sip_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        me = sock.getsockname()[1]

        def send(datagram: bytes) -> list[str]:
            return status_lines(exchange(service_port, sock, datagram))

        # garbage: logged and dropped, nothing to answer
        assert await asyncio.to_thread(send, b"\x16\x03\x01\x02\x00garbage \xff\xfe") == []
        assert await asyncio.to_thread(send, b"HELLO\r\n\r\n") == []
        # a truncated INVITE (cut inside its headers): 400, addressed from its own Via
        cut = invite(sdp("0"), call_id="trunc", port=me, truncate_at=230)
        assert await asyncio.to_thread(send, cut) == ["SIP/2.0 400 Bad Request"]
        # no SDP offer, and an offer of codecs we do not speak: 488, with the reason
        replies = await asyncio.to_thread(exchange, service_port, sock,
                                          invite(None, call_id="nosdp", port=me))
        assert status_lines(replies) == ["SIP/2.0 488 Not Acceptable Here"]
        assert b'Warning: 399 jiayi-hotline "no SDP offer' in replies[0]
        assert b"To: <sip:hotline@127.0.0.1>;tag=" in replies[0]
        g729 = invite(sdp("18", "a=rtpmap:18 G729/8000\r\n"), call_id="g729", port=me)
        replies = await asyncio.to_thread(exchange, service_port, sock, g729)
        assert status_lines(replies) == ["SIP/2.0 488 Not Acceptable Here"]
        assert b"none of the offered codecs (G729)" in replies[0]
        # a BYE for a call that does not exist, and a method we do not handle
        bye = invite(None, call_id="ghost", port=me).replace(b"INVITE sip:", b"BYE sip:", 1)
        bye = bye.replace(b"CSeq: 1 INVITE", b"CSeq: 2 BYE")
        assert await asyncio.to_thread(send, bye) == ["SIP/2.0 481 Call/Transaction Does Not Exist"]
        info = bye.replace(b"BYE sip:", b"INFO sip:", 1).replace(b"CSeq: 2 BYE", b"CSeq: 3 INFO")
        replies = await asyncio.to_thread(exchange, service_port, sock, info)
        assert status_lines(replies) == ["SIP/2.0 405 Method Not Allowed"]
        assert b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS\r\n" in replies[0]
        options = bye.replace(b"BYE sip:", b"OPTIONS sip:", 1).replace(b"CSeq: 2 BYE", b"CSeq: 4 OPTIONS")
        assert await asyncio.to_thread(send, options) == ["SIP/2.0 200 OK"]

    assert agent._phone.sip.rejected == 7
    assert agent._phone.calls == {}  # nothing half-set-up

    # and the next real call through the proxy is answered and ends cleanly
    await answer_one_call(agent, kamailio, "13800000001")
