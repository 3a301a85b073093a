"""Malformed and unacceptable SIP at the service's own port: the right answer or a logged drop,
and the next real call through the proxy is still answered."""

from __future__ import annotations

import asyncio
import socket

import pytest

from telephony.agent import SipAgent
from tests.raw_sip import exchange, invite, sdp, status_lines
from tests.sip_peers import Kamailio, answer_one_call

pytestmark = pytest.mark.sip


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
        assert b"Warning: 399 jiayi-hotline" in replies[0]  # the reason, for the PBX log
        # a BYE for a call that does not exist, and a method we do not handle
        bye = invite(None, call_id="ghost", port=me).replace(b"INVITE sip:", b"BYE sip:", 1)
        bye = bye.replace(b"CSeq: 1 INVITE", b"CSeq: 2 BYE")
        assert await asyncio.to_thread(send, bye) == ["SIP/2.0 481 Call/Transaction Does Not Exist"]
        message = bye.replace(b"BYE sip:", b"MESSAGE sip:", 1).replace(b"CSeq: 2 BYE", b"CSeq: 3 MESSAGE")
        replies = await asyncio.to_thread(exchange, service_port, sock, message)
        assert status_lines(replies) == ["SIP/2.0 405 Method Not Allowed"]
        assert b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE\r\n" in replies[0]
        options = bye.replace(b"BYE sip:", b"OPTIONS sip:", 1).replace(b"CSeq: 2 BYE", b"CSeq: 4 OPTIONS")
        assert await asyncio.to_thread(send, options) == ["SIP/2.0 200 OK"]

    # two unparsable datagrams dropped, one answered 400; the rest refused; nothing half-set-up
    assert agent.ua.counters.unparsable == 3
    assert agent.ua.counters.by_status == {400: 1, 488: 2, 481: 1, 405: 1}
    assert agent.calls_in_progress == 0 and agent.ports.in_use == 0

    # and the next real call through the proxy is answered and ends cleanly
    await answer_one_call(agent, kamailio, "13800000001")
