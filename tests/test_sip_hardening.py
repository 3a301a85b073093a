"""The SIP edge on a hostile or lossy network (issue: a call core safe on a real network).

Each test sends what an attacker, a broken peer or a lossy link would send straight to the
service's port on loopback, and checks the answer, and that nothing leaks or breaks."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import structlog.testing

from telephony.agent import SipAccount, SipAgent
from tests.raw_sip import ack_for, collect, exchange, header, invite, sdp, status_lines, status_of
from tests.sip_peers import Kamailio, answer_one_call, free_udp_port, start_kamailio

pytestmark = pytest.mark.sip


@asynccontextmanager
async def service_agent(registrar_port: int, **options) -> AsyncIterator[SipAgent]:
    port = free_udp_port()
    options.setdefault("rtp_port_low", port + 1000)
    options.setdefault("rtp_port_high", port + 1100)
    sip = SipAgent(SipAccount("127.0.0.1", registrar_port, "hotline", options.pop("password", ""),
                              sip_port=port, **options))
    await sip.start()
    try:
        yield sip
    finally:
        await sip.stop()


def bound_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


async def test_requests_from_outside_the_pbx_are_refused_and_counted_not_logged_each(kamailio: Kamailio) -> None:
    async with service_agent(kamailio.port) as agent:
        port = agent.account.sip_port
        with bound_socket("127.0.0.2") as spoofer, structlog.testing.capture_logs() as logs:
            me = spoofer.getsockname()[1]
            replies = await asyncio.to_thread(exchange, port, spoofer, invite(sdp("0"), call_id="spoof", port=me,
                                                                             host="127.0.0.2"))
            assert status_lines(replies) == ["SIP/2.0 403 Forbidden"]
            base = agent.ua.counters.untrusted  # the INVITE and its ACK
            assert base == 2
            for batch in range(20):  # a flood, paced so the kernel drops none: each one counted
                for i in range(10):
                    spoofer.sendto(invite(sdp("0"), call_id=f"flood{batch}-{i}", port=me, host="127.0.0.2"),
                                   ("127.0.0.1", port))
                for _ in range(100):  # bounded: 1 s
                    if agent.ua.counters.untrusted == base + 10 * (batch + 1):
                        break
                    await asyncio.sleep(0.01)
        assert agent.ua.counters.untrusted == 202
        assert sum(1 for e in logs if e["event"] == "sip.untrusted_source") == 1
        assert agent.calls_in_progress == 0 and agent.ports.in_use == 0
        assert await agent.wait_registered(1)

    async with service_agent(kamailio.port, untrusted_action="drop") as agent:
        with bound_socket("127.0.0.2") as spoofer:
            me = spoofer.getsockname()[1]
            replies = await asyncio.to_thread(exchange, agent.account.sip_port, spoofer,
                                              invite(sdp("0"), call_id="dropped", port=me, host="127.0.0.2"), wait=1.0)
        assert replies == [] and agent.ua.counters.untrusted == 1


async def test_a_retransmitted_invite_gets_the_same_answer_and_makes_one_call(kamailio: Kamailio) -> None:
    async with service_agent(kamailio.port) as agent:
        port = agent.account.sip_port
        with bound_socket() as phone:
            me = phone.getsockname()[1]
            request = invite(sdp("0 101", "a=rtpmap:101 telephone-event/8000\r\n"), call_id="lossy", port=me)
            first = await asyncio.to_thread(exchange, port, phone, request, wait=1.0)
            leg = await asyncio.wait_for(agent.next_call(), 2)
            again = [await asyncio.to_thread(exchange, port, phone, request, wait=0.5) for _ in range(3)]
            assert status_lines(first) == ["SIP/2.0 180 Ringing"]
            assert all(replies == first for replies in again)  # byte for byte the same 180
            assert agent.calls_in_progress == 1 and agent.ports.in_use == 1 and agent._calls.empty()
            await leg.answer()
            ok = await asyncio.to_thread(collect, phone, 0.3)
            assert status_of(ok[0]) == 200
            # after the 200, a retransmitted INVITE gets the 200 again, still one call
            replies = await asyncio.to_thread(exchange, port, phone, request, wait=0.5, ack=False)
            assert status_of(replies[0]) == 200 and header(replies[0], "To") == header(ok[0], "To")
            phone.sendto(ack_for(request, ok[0]) or b"", ("127.0.0.1", port))
            await asyncio.wait_for(leg.acked.wait(), 2)
            assert agent.ua.server_transactions.absorbed == 4
            await leg.hangup()
            bye = await asyncio.to_thread(collect, phone, 0.5)
            assert bye and bye[0].startswith(b"BYE sip:13800000009@127.0.0.1:")  # to the Contact: no route set


async def test_a_full_node_refuses_with_503_before_ringing(kamailio: Kamailio) -> None:
    async with service_agent(kamailio.port, max_calls=2) as agent:
        port = agent.account.sip_port
        with bound_socket() as phone:
            me = phone.getsockname()[1]
            for n in range(2):
                replies = await asyncio.to_thread(exchange, port, phone, invite(sdp("0"), call_id=f"c{n}", port=me), wait=0.5)
                assert status_lines(replies) == ["SIP/2.0 180 Ringing"]
            replies = await asyncio.to_thread(exchange, port, phone, invite(sdp("0"), call_id="c3", port=me))
            assert status_lines(replies) == ["SIP/2.0 503 Service Unavailable"]
            assert header(replies[0], "Retry-After") == "30"
        assert agent.ua.counters.overloaded == 1


async def test_running_out_of_rtp_ports_refuses_with_503_not_500(kamailio: Kamailio) -> None:
    port = free_udp_port()
    async with service_agent(kamailio.port, rtp_port_low=port + 2000, rtp_port_high=port + 2001) as agent:
        with bound_socket() as phone:
            me = phone.getsockname()[1]
            statuses = [status_lines(await asyncio.to_thread(exchange, agent.account.sip_port, phone,
                                                             invite(sdp("0"), call_id=f"p{n}", port=me), wait=0.5))
                        for n in range(3)]
        assert statuses == [["SIP/2.0 180 Ringing"]] * 2 + [["SIP/2.0 503 Service Unavailable"]]


@pytest.mark.parametrize("drop,status", [
    ("Contact", 400), ("From", 400), ("To", 400), ("CSeq", 400), ("Call-ID", 400), ("Via", None),
])
async def test_an_invite_missing_a_mandatory_header_gets_400(agent: SipAgent, drop: str, status: int | None) -> None:
    with bound_socket() as phone:
        me = phone.getsockname()[1]
        request = invite(sdp("0"), call_id=f"missing-{drop}", port=me)
        lines = [ln for ln in request.split(b"\r\n") if not ln.startswith(drop.encode() + b":")]
        replies = await asyncio.to_thread(exchange, agent.account.sip_port, phone, b"\r\n".join(lines), wait=0.8)
    # without a Via nobody can be answered: dropped, and counted
    assert [status_of(r) for r in replies] == ([status] if status else [])
    assert agent.calls_in_progress == 0 and agent.ports.in_use == 0


@pytest.mark.parametrize("body,status", [
    (sdp("0", port=65536), 488),
    (sdp("0", port=-4), 488),
    (sdp("0").replace("c=IN IP4 127.0.0.1", "c=IN IP4 999.1.1.1.1"), 488),
    ("v=0\r\nm=audio 4000 RTP/AVP " + "0 " * 5000 + "\r\n", 488),
    ("m=audio\r\n", 488),
])
async def test_absurd_sdp_gets_488_and_breaks_no_thread(agent: SipAgent, body: str, status: int) -> None:
    with bound_socket() as phone:
        me = phone.getsockname()[1]
        replies = await asyncio.to_thread(exchange, agent.account.sip_port, phone,
                                          invite(body, call_id="absurd", port=me), wait=0.8)
    assert [status_of(r) for r in replies] == [status]
    assert agent.calls_in_progress == 0 and agent.ports.in_use == 0


async def test_junk_at_full_rate_never_unregisters_the_hotline(tmp_path: Path) -> None:
    """pyVoIP read the socket itself while re-registering and took junk for the REGISTER's
    answer: the hotline fell off the PBX and callers got 404 (issue reproduction 9)."""
    proxy = start_kamailio(tmp_path / "auth", register_password="s3cret-pw")
    try:
        async with service_agent(proxy.port, password="s3cret-pw", register_expires_s=4) as agent:
            assert await agent.wait_registered(3)
            stop = threading.Event()

            def blast() -> int:
                rng = random.Random(9)
                sent = 0
                with bound_socket() as junk:
                    while not stop.is_set() and sent < 20_000:  # bounded in count and by the event
                        junk.sendto(rng.randbytes(1200), ("127.0.0.1", agent.account.sip_port))
                        sent += 1
                        if sent % 200 == 0:
                            stop.wait(0.02)
                return sent

            with structlog.testing.capture_logs() as logs:
                blasting = asyncio.create_task(asyncio.to_thread(blast))
                await asyncio.sleep(5)  # two re-registrations (every 2 s) under fire
                stop.set()
                sent = await blasting
            assert sent > 1000
            assert agent.ua.registration.failures == 0 and agent.registered
            assert agent.ua.counters.unparsable > 1000  # the kernel drops the rest when the buffer is full
            assert sum(1 for e in logs if e["event"] == "sip.unparsable") <= 2  # rate-limited
            await answer_one_call(agent, proxy, "13800000001")
    finally:
        proxy.stop()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _call_threads() -> int:
    """Threads other than the event loop's bounded executor pool (asyncio.to_thread workers
    stay idle for reuse; they are not per call)."""
    return sum(1 for t in threading.enumerate() if not t.name.startswith("asyncio_"))


async def test_a_burst_of_300_invites_gets_300_finals_and_leaks_nothing(kamailio: Kamailio) -> None:
    """300 INVITEs in 5 s straight at the service: every one gets a final response (answered
    and hung up, or 503 when the node is full) and afterwards threads and sockets are back."""
    async with service_agent(kamailio.port, max_calls=20) as agent:
        agent.forget_after_s = 0.5
        threads_before, fds_before = _call_threads(), _open_fds()

        async def take_calls() -> None:
            async def one(leg) -> None:
                await leg.answer()
                await asyncio.sleep(0.3)
                await leg.hangup()

            while True:
                leg = await agent.next_call()
                asyncio.create_task(one(leg))

        taking = asyncio.create_task(take_calls())
        finals: dict[str, int] = {}

        def burst() -> None:
            with bound_socket() as phone:
                me = phone.getsockname()[1]
                requests = {f"burst{n}": invite(sdp("0"), call_id=f"burst{n}", port=me) for n in range(300)}
                for n, request in enumerate(requests.values()):
                    phone.sendto(request, ("127.0.0.1", agent.account.sip_port))
                    if n % 6 == 5:
                        phone.settimeout(0.1)
                        _drain(phone, requests, finals, agent.account.sip_port)
                deadline = 100  # then at most 10 s more for the last answers
                while len(finals) < 300 and deadline:
                    phone.settimeout(0.1)
                    _drain(phone, requests, finals, agent.account.sip_port)
                    deadline -= 1

        await asyncio.to_thread(burst)
        assert len(finals) == 300, f"{300 - len(finals)} INVITEs got no final response"
        assert set(finals.values()) <= {200, 503} and 200 in finals.values()
        for _ in range(100):  # bounded: 5 s for the last calls to end and be forgotten
            if not agent.calls_in_progress and not agent.ports.in_use and not agent.ua.dialogs \
                    and _call_threads() <= threads_before:
                break
            await asyncio.sleep(0.05)
        taking.cancel()
        counts = {status: list(finals.values()).count(status) for status in sorted(set(finals.values()))}
        print(f"burst: 300 INVITEs, finals {counts}; threads {threads_before}->{_call_threads()}, "
              f"fds {fds_before}->{_open_fds()}")  # for the closing note (-s shows it)
        assert agent.calls_in_progress == 0 and agent.ports.in_use == 0 and agent.ua.dialogs == {}
        assert _call_threads() <= threads_before
        assert _open_fds() <= fds_before


def _drain(phone: socket.socket, requests: dict[str, bytes], finals: dict[str, int], port: int) -> None:
    while True:
        try:
            message = phone.recv(65536)
        except (TimeoutError, BlockingIOError):
            return
        call_id = header(message, "Call-ID")
        status = status_of(message)
        if status == 0:  # our BYE after the call: answer it
            if message.startswith(b"BYE "):
                head = message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                keep = [ln for ln in head[1:] if ln.split(b":", 1)[0] in (b"Via", b"From", b"To", b"Call-ID", b"CSeq")]
                phone.sendto(b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Content-Length: 0"]) + b"\r\n\r\n",
                             ("127.0.0.1", port))
            continue
        if status >= 200 and call_id in requests:
            finals.setdefault(call_id, status)
            ack = ack_for(requests[call_id], message)
            if ack is not None:
                phone.sendto(ack, ("127.0.0.1", port))
        phone.settimeout(0.01)
