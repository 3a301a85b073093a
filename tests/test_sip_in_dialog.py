"""Requests inside an answered call, as stock phones send them (issue 8: hold from the doctor
ended the call; our BYE answered 404 raised in pyVoIP's thread and left the caller up)."""

from __future__ import annotations

import asyncio
import socket

import pytest
import structlog.testing

from telephony.agent import InboundLeg, SipAgent
from tests.raw_sip import ack_for, collect, header, invite, sdp, status_of

pytestmark = pytest.mark.sip


def in_dialog(method: str, request: bytes, ok: bytes, cseq: int, body: str = "",
              content_type: str = "application/sdp") -> bytes:
    """A request of the caller inside the dialog our 200 OK `ok` set up."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    via = next(ln for ln in head if ln.startswith(b"Via:")).replace(b"branch=", b"branch=z9hG4bK" + method.encode() + str(cseq).encode())
    keep = [ln for ln in head[1:] if ln.split(b":", 1)[0] in (b"From", b"Call-ID", b"Contact", b"Max-Forwards")]
    lines = [f"{method} {header(ok, 'Contact').strip('<>')} SIP/2.0".encode(), via, *keep,
             b"To: " + header(ok, "To").encode(), f"CSeq: {cseq} {method}".encode()]
    if body:
        lines.append(f"Content-Type: {content_type}".encode())
    lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body.encode()


async def answered_call(agent: SipAgent, phone: socket.socket) -> tuple[InboundLeg, bytes, bytes]:
    me = phone.getsockname()[1]
    request = invite(sdp("0 101", "a=rtpmap:101 telephone-event/8000\r\n", port=me + 2), call_id=f"dlg{me}", port=me)
    phone.sendto(request, ("127.0.0.1", agent.account.sip_port))
    leg = await asyncio.wait_for(agent.next_call(), 3)
    await leg.answer()
    replies = await asyncio.to_thread(collect, phone, 0.4)
    ok = next(r for r in replies if status_of(r) == 200)
    phone.sendto(ack_for(request, ok) or b"", ("127.0.0.1", agent.account.sip_port))
    await asyncio.wait_for(leg.acked.wait(), 2)
    return leg, request, ok


async def send(agent: SipAgent, phone: socket.socket, message: bytes) -> list[bytes]:
    """The responses to `message` (by its CSeq) within 0.5 s; a late retransmission of an
    earlier final (Timer G sends a 488 again at T1 until its ACK) is not one of them."""
    phone.sendto(message, ("127.0.0.1", agent.account.sip_port))
    cseq = header(message, "CSeq")
    return [r for r in await asyncio.to_thread(collect, phone, 0.5) if status_of(r) and header(r, "CSeq") == cseq]


def sdp_direction(response: bytes) -> str:
    body = response.split(b"\r\n\r\n", 1)[1].decode()
    return next(line[2:] for line in body.split("\r\n")
                if line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"))


async def test_hold_and_resume_by_reinvite_and_update_never_end_the_call(agent: SipAgent) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        me = phone.getsockname()[1]
        leg, request, ok = await answered_call(agent, phone)
        held = []
        leg.on_hold_changed = held.append
        offer = sdp("0 101", "a=rtpmap:101 telephone-event/8000\r\n", port=me + 2)
        # hold with a re-INVITE (Linphone's "pause"): 200 with the mirrored direction, then ACK
        reinvite = in_dialog("INVITE", request, ok, 2, offer + "a=sendonly\r\n")
        replies = await send(agent, phone, reinvite)
        assert [status_of(r) for r in replies] == [200] and sdp_direction(replies[0]) == "recvonly"
        phone.sendto(ack_for(reinvite, replies[0]) or b"", ("127.0.0.1", agent.account.sip_port))
        assert leg.on_hold and held == [True] and not leg.ended.is_set()
        # resume with UPDATE, the media moved to another port meanwhile
        moved = sdp("0 101", "a=rtpmap:101 telephone-event/8000\r\n", port=me + 4)
        replies = await send(agent, phone, in_dialog("UPDATE", request, ok, 3, moved + "a=sendrecv\r\n"))
        assert [status_of(r) for r in replies] == [200] and sdp_direction(replies[0]) == "sendrecv"
        assert not leg.on_hold and held == [True, False] and leg._rtp().outPort == me + 4
        # an RFC 2543 hold (c=0.0.0.0), and an offer we cannot take: 488, the call goes on
        old_hold = in_dialog("INVITE", request, ok, 4, offer.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"))
        replies = await send(agent, phone, old_hold)
        assert [status_of(r) for r in replies] == [200] and leg.on_hold
        phone.sendto(ack_for(old_hold, replies[0]) or b"", ("127.0.0.1", agent.account.sip_port))
        g729 = in_dialog("INVITE", request, ok, 5, sdp("18", "a=rtpmap:18 G729/8000\r\n", port=me + 2))
        replies = await send(agent, phone, g729)
        assert [status_of(r) for r in replies][:1] == [488] and not leg.ended.is_set()
        phone.sendto(ack_for(g729, replies[0]) or b"", ("127.0.0.1", agent.account.sip_port))
        # keys by INFO, an out-of-order CSeq refused, OPTIONS in the dialog answered
        info = in_dialog("INFO", request, ok, 6, "Signal=5\r\nDuration=160\r\n", "application/dtmf-relay")
        assert [status_of(r) for r in await send(agent, phone, info)] == [200]
        assert await leg.collect_digits(1, 1.0) == "5"
        stale = in_dialog("INFO", request, ok, 3, "Signal=6\r\n", "application/dtmf-relay")
        assert [status_of(r) for r in await send(agent, phone, stale)] == [500]
        assert [status_of(r) for r in await send(agent, phone, in_dialog("OPTIONS", request, ok, 7))] == [200]
        # and the caller's BYE still ends it
        assert [status_of(r) for r in await send(agent, phone, in_dialog("BYE", request, ok, 8))] == [200]
        await asyncio.wait_for(leg.ended.wait(), 1)


async def test_our_bye_answered_404_ends_our_side_without_a_traceback(agent: SipAgent) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        leg, _request, _ok = await answered_call(agent, phone)
        with structlog.testing.capture_logs() as logs:
            await leg.hangup()
            bye = next(m for m in await asyncio.to_thread(collect, phone, 0.5) if m.startswith(b"BYE "))
            head = bye.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            keep = [ln for ln in head[1:] if ln.split(b":", 1)[0] in (b"Via", b"From", b"To", b"Call-ID", b"CSeq")]
            phone.sendto(b"\r\n".join([b"SIP/2.0 404 Not here", *keep, b"Content-Length: 0"]) + b"\r\n\r\n",
                         ("127.0.0.1", agent.account.sip_port))
            for _ in range(50):  # bounded: 1 s for the 404 to end the BYE's transaction
                if agent.ua.client_transactions.waiting() == 0:
                    break
                await asyncio.sleep(0.02)
        assert leg.ended.is_set() and agent.ua.client_transactions.waiting() == 0
        assert not [e for e in logs if e.get("log_level") in ("error", "critical")]
        assert agent.calls_in_progress == 0
