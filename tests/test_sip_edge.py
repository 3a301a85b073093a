"""The SIP edge through a real record-routing Kamailio, with sipp as the resident's phone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog
import structlog.testing

from telephony.agent import SipAccount, SipAgent
from telephony.sip_message import parse
from tests.sip_peers import (
    Kamailio,
    answer_one_call,
    free_udp_port,
    run_sipp,
    sipp_result,
    start_kamailio,
)

pytestmark = pytest.mark.sip


async def test_resident_bye_through_the_record_routing_proxy_ends_the_call(
    agent: SipAgent, kamailio: Kamailio
) -> None:
    leg = await answer_one_call(agent, kamailio, "13800000001")
    assert leg.calling_number == "13800000001"


async def test_our_bye_reaches_the_resident_through_the_proxy(
    agent: SipAgent, kamailio: Kamailio
) -> None:
    sipp = await run_sipp("service_hangs_up.xml", kamailio.port, service="hotline",
                          caller="13800000002")
    leg = await asyncio.wait_for(agent.next_call(), 10)
    await leg.answer()
    await asyncio.sleep(0.5)  # let the ACK arrive
    await leg.hangup()
    code, out = await sipp_result(sipp)
    assert code == 0, out + kamailio.log_text()[-3000:]


async def test_a_registrar_that_is_away_then_comes_and_restarts_is_followed(tmp_path: Path) -> None:
    proxy_port, port = free_udp_port(), free_udp_port()
    sip = SipAgent(SipAccount("127.0.0.1", proxy_port, "hotline", "", sip_port=port,
                              rtp_port_low=port + 1000, rtp_port_high=port + 1100,
                              register_timeout_s=1, register_expires_s=4))
    proxy = None
    try:
        # nobody answers at start: the service starts anyway, says why, and keeps trying
        with structlog.testing.capture_logs() as logs:
            await sip.start()
        assert not sip.registered
        failure = next(e for e in logs if e["event"] == "sip.register_failed")
        assert failure["registrar"] == f"127.0.0.1:{proxy_port}" and failure["retry_in_s"] == 1
        assert "TimeoutError" in failure["why"]
        proxy = start_kamailio(tmp_path / "first", port=proxy_port)
        assert await sip.wait_registered(15)
        await answer_one_call(sip, proxy, "13800000001")

        # the registrar restarts and forgets every binding; re-registration brings us back
        proxy.stop()
        proxy = start_kamailio(tmp_path / "second", port=proxy_port)
        await asyncio.sleep(3)  # one re-registration period (half of 4 s) and a little more
        await answer_one_call(sip, proxy, "13800000002")
    finally:
        await sip.stop()
        if proxy is not None:
            proxy.stop()


@pytest.mark.parametrize("password, registers", [("s3cret-pw", True), ("wrong", False)])
async def test_digest_challenge_from_the_registrar(tmp_path: Path, password: str, registers: bool) -> None:
    proxy = start_kamailio(tmp_path / "auth", register_password="s3cret-pw")
    port = free_udp_port()
    sip = SipAgent(SipAccount("127.0.0.1", proxy.port, "hotline", password, sip_port=port,
                              rtp_port_low=port + 1000, rtp_port_high=port + 1100,
                              register_timeout_s=2))
    try:
        with structlog.testing.capture_logs() as logs:
            await sip.start()
            assert await sip.wait_registered(3) is registers
        if registers:
            await answer_one_call(sip, proxy, "13800000001")  # the binding is really there
        else:
            failure = next(e for e in logs if e["event"] == "sip.register_failed")
            assert failure["retry_in_s"] == 1  # refused: logged, retried with backoff
    finally:
        await sip.stop()
        proxy.stop()


def test_record_routes_are_read_in_order_from_lines_and_commas() -> None:
    raw = (b"INVITE sip:hotline@127.0.0.1 SIP/2.0\r\n"
           b"Record-Route: <sip:10.0.0.1;lr;ftag=a,b>, <sip:10.0.0.2;lr>\r\n"
           b"record-route:<sip:10.0.0.3;lr>\r\n"
           b"Via: SIP/2.0/UDP 127.0.0.1\r\n\r\nRecord-Route: <sip:body-is-not-a-header>\r\n")
    assert parse(raw).headers_all("Record-Route") == ["<sip:10.0.0.1;lr;ftag=a,b>", "<sip:10.0.0.2;lr>", "<sip:10.0.0.3;lr>"]


async def test_keypad_digits_arrive_as_rfc2833_events(agent: SipAgent, kamailio: Kamailio) -> None:
    sipp = await run_sipp("resident_presses_1.xml", kamailio.port, service="hotline",
                          caller="13800000001")
    leg = await asyncio.wait_for(agent.next_call(), 10)
    await leg.answer()
    # the resident presses 1 then #: the terminator ends the input and is not part of it
    assert await leg.collect_digits(max_digits=4, timeout_s=5, terminator="#") == "1"
    # nothing more is pressed: an empty answer after the timeout, not a hang
    assert await leg.collect_digits(max_digits=1, timeout_s=0.3) == ""
    await asyncio.wait_for(leg.ended.wait(), 10)
    code, out = await sipp_result(sipp)
    assert code == 0, out


async def test_a_live_call_still_hears_its_bye_after_another_call_ended(
    agent: SipAgent, kamailio: Kamailio
) -> None:
    """pyVoIP forgot live calls whose 1 s offer Timer had ended whenever another call released
    its ports; their BYE then got 481 and the service never knew (found by bench/calls)."""
    first = await run_sipp("resident_presses_1.xml", kamailio.port, service="hotline", caller="13800000001")
    leg_a = await asyncio.wait_for(agent.next_call(), 10)
    await leg_a.answer()
    await asyncio.sleep(1.2)  # pyVoIP's offer Timer would be over by now
    await answer_one_call(agent, kamailio, "13800000002")  # a second call comes and goes
    code, out = await sipp_result(first)
    assert code == 0, out  # the first caller's BYE got its 200
    await asyncio.wait_for(leg_a.ended.wait(), 5)


async def test_a_caller_who_never_acks_is_hung_up_on(agent: SipAgent, kamailio: Kamailio) -> None:
    agent.ack_timeout_s = 1.5
    sipp = await run_sipp("resident_never_acks.xml", kamailio.port, service="hotline", caller="13800000001")
    leg = await asyncio.wait_for(agent.next_call(), 10)
    with structlog.testing.capture_logs() as logs:
        await leg.answer()
        await asyncio.wait_for(leg.ended.wait(), 5)
    assert any(e["event"] == "call.no_ack" for e in logs)
    code, out = await sipp_result(sipp)
    assert code == 0, out  # sipp got our BYE


async def test_ended_calls_are_forgotten(agent: SipAgent, kamailio: Kamailio) -> None:
    agent.forget_after_s = 0.2
    for number in ("13800000001", "13800000002", "13800000003"):
        await answer_one_call(agent, kamailio, number)
    for _ in range(50):  # bounded: 2.5 s
        if not agent.ua.dialogs and not agent.ports.in_use and not agent.calls_in_progress:
            break
        await asyncio.sleep(0.05)
    assert agent.ua.dialogs == {} and agent.calls_in_progress == 0
    assert agent.ports.in_use == 0
