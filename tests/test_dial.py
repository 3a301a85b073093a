"""The service places calls through Kamailio with its own INVITE transaction: every outcome a
call center needs (answered, busy, no answer, unreachable), media both ways, BYE either way.

The far end here is a second SIP agent of ours (pyVoIP, registered at the same Kamailio), so
each outcome is one the far end really chose; tests/test_call_flow.py dials baresip and sipp.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telephony.agent import InboundLeg, SipAccount, SipAgent, TelephonyError
from telephony.dialer import DialOutcome, outcome_of_status
from tests.sip_peers import Kamailio, LossyLink, free_udp_port, start_kamailio

pytestmark = pytest.mark.sip


def test_sip_statuses_map_to_call_center_outcomes() -> None:
    assert outcome_of_status(486) is DialOutcome.BUSY
    assert outcome_of_status(600) is DialOutcome.BUSY
    assert outcome_of_status(487) is DialOutcome.NO_ANSWER
    for unreachable in (404, 408, 480, 503):
        assert outcome_of_status(unreachable) is DialOutcome.UNREACHABLE
    assert outcome_of_status(603) is DialOutcome.REJECTED
    assert outcome_of_status(488) is DialOutcome.REJECTED


def answer_next_call(callee: SipAgent) -> asyncio.Task[InboundLeg]:
    """The callee picks up the next call it is offered (start it before dialling)."""
    async def pick_up() -> InboundLeg:
        leg = await asyncio.wait_for(callee.next_call(), 10)
        await leg.answer()
        return leg

    return asyncio.create_task(pick_up())


async def _agent(user: str, registrar_port: int, register_timeout_s: int = 10) -> SipAgent:
    port = free_udp_port()
    sip = SipAgent(SipAccount("127.0.0.1", registrar_port, user, "", sip_port=port,
                              rtp_port_low=port + 1000, rtp_port_high=port + 1100,
                              register_timeout_s=register_timeout_s))
    await sip.start()
    return sip


@pytest.fixture
async def doctor(kamailio: Kamailio) -> AsyncIterator[SipAgent]:
    """A second user agent registered as extension 1001: the doctor's phone."""
    phone = await _agent("1001", kamailio.port)
    assert await phone.wait_registered(5)
    yield phone
    await phone.stop()


async def test_unregistered_extension_is_unreachable_at_once(agent: SipAgent) -> None:
    ringing: list[bool] = []
    dialed = await agent.dial("sip:1999@127.0.0.1", ring_timeout_s=10, on_ringing=lambda: ringing.append(True))
    assert dialed.outcome is DialOutcome.UNREACHABLE and not ringing
    assert dialed.status == 404 and dialed.leg is None
    assert dialed.seconds < 3


async def test_no_proxy_at_all_is_unreachable_after_retransmissions() -> None:
    lonely = await _agent("hotline", free_udp_port(), register_timeout_s=1)  # nothing listens at the registrar's port
    try:
        dialed = await lonely.dial("sip:1001@127.0.0.1", ring_timeout_s=10)
    finally:
        await lonely.stop()
    assert dialed.outcome is DialOutcome.UNREACHABLE and dialed.status is None
    assert "no response" in dialed.reason


async def test_busy_doctor(agent: SipAgent, doctor: SipAgent) -> None:
    async def refuse() -> None:
        leg = await asyncio.wait_for(doctor.next_call(), 10)
        await leg.refuse(486, "Busy Here", "on another call")

    refusing = asyncio.create_task(refuse())
    dialed = await agent.dial("sip:1001@127.0.0.1", ring_timeout_s=10)
    await refusing
    assert dialed.outcome is DialOutcome.BUSY and dialed.status == 486


async def test_ring_timeout_cancels(agent: SipAgent, doctor: SipAgent) -> None:
    loop = asyncio.get_running_loop()
    ringing_at: list[float] = []
    started = loop.time()
    dialed = await agent.dial("sip:1001@127.0.0.1", ring_timeout_s=2.5,
                              on_ringing=lambda: ringing_at.append(loop.time()))
    assert dialed.outcome is DialOutcome.NO_ANSWER and dialed.rang
    # told once, as soon as the phone said 180 (the IVR starts the caller's ringback then); the
    # phone's receive loop runs from start (pyVoIP's waited a second before reading anything)
    assert len(ringing_at) == 1 and ringing_at[0] - started < 0.5
    assert 2.5 <= dialed.seconds < 2.5 + 1
    # the doctor's phone was offered the call and then told it is over (CANCEL): the leg ends,
    # the INVITE got its 487 (else the proxy would keep ringing it), and it can't be answered
    offered = await asyncio.wait_for(doctor.next_call(), 5)
    await asyncio.wait_for(offered.ended.wait(), 3)
    with pytest.raises(TelephonyError, match="no longer ringing"):
        await offered.answer()


async def test_answered_call_carries_audio_both_ways_and_either_side_hangs_up(
    agent: SipAgent, doctor: SipAgent
) -> None:
    picking_up = answer_next_call(doctor)
    dialed = await agent.dial("sip:1001@127.0.0.1", ring_timeout_s=10, caller_display="13800000001")
    doctor_leg = await picking_up
    assert dialed.outcome is DialOutcome.ANSWERED and dialed.rang, dialed
    hotline_leg = dialed.leg
    assert hotline_leg is not None and hotline_leg.codec == doctor_leg.codec == "PCMA"

    to_doctor = bytes(range(1, 161)) * 10
    to_hotline = bytes(range(90, 250)) * 10
    hotline_leg.received_audio(), doctor_leg.received_audio()
    hotline_leg.send_audio(to_doctor)
    doctor_leg.send_audio(to_hotline)
    heard_by_doctor, heard_by_hotline = b"", b""
    for _ in range(100):  # bounded: 2 s
        await asyncio.sleep(0.02)
        heard_by_doctor += doctor_leg.received_audio()
        heard_by_hotline += hotline_leg.received_audio()
        if to_doctor in heard_by_doctor and to_hotline in heard_by_hotline:
            break
    assert to_doctor in heard_by_doctor
    assert to_hotline in heard_by_hotline

    # the doctor hangs up: the BYE reaches our dialog through the proxy
    await doctor_leg.hangup()
    await asyncio.wait_for(hotline_leg.ended.wait(), 5)


async def test_service_hangs_up_a_call_it_placed(agent: SipAgent, doctor: SipAgent) -> None:
    picking_up = answer_next_call(doctor)
    dialed = await agent.dial("sip:1001@127.0.0.1", ring_timeout_s=10)
    doctor_leg = await picking_up
    assert dialed.leg is not None
    await dialed.leg.hangup()  # BYE to the doctor's Contact through the route set
    await asyncio.wait_for(doctor_leg.ended.wait(), 5)


@pytest.fixture
async def lossy_agent(kamailio: Kamailio) -> AsyncIterator[tuple[SipAgent, LossyLink]]:
    """The hotline's agent behind a link to the proxy that loses its first BYE and first CANCEL."""
    link = LossyLink(kamailio.port, lose={"BYE": 1, "CANCEL": 1})
    sip = await _agent("hotline", link.port)
    try:
        assert await sip.wait_registered(5)
        yield sip, link
    finally:
        await sip.stop()
        link.close()


async def test_a_lost_bye_is_sent_again_until_answered(
    lossy_agent: tuple[SipAgent, LossyLink], doctor: SipAgent
) -> None:
    agent, link = lossy_agent

    picking_up = answer_next_call(doctor)
    dialed = await agent.dial("sip:1001@127.0.0.1", ring_timeout_s=10)
    doctor_leg = await picking_up
    assert dialed.leg is not None
    await dialed.leg.hangup()
    # the first BYE never reached the proxy; the one sent T1 later ends the doctor's call
    await asyncio.wait_for(doctor_leg.ended.wait(), 3)
    assert link.dropped == {"BYE": 1} and link.seen["BYE"] == 2
    for _ in range(50):  # bounded: 1 s for the 200 to come back and end the transaction
        if agent.ua.client_transactions.waiting() == 0:
            break
        await asyncio.sleep(0.02)
    assert agent.ua.client_transactions.waiting() == 0
    await asyncio.sleep(1.2)  # answered: no more retransmissions
    assert link.seen["BYE"] == 2


async def test_a_lost_cancel_is_sent_again_and_the_phone_stops_ringing(
    lossy_agent: tuple[SipAgent, LossyLink], doctor: SipAgent
) -> None:
    agent, link = lossy_agent
    dialed = await agent.dial("sip:1001@127.0.0.1", ring_timeout_s=1.5)
    assert dialed.outcome is DialOutcome.NO_ANSWER
    offered = await asyncio.wait_for(doctor.next_call(), 5)
    # without a second CANCEL the proxy would let the phone ring for minutes (its fr_inv_timer)
    await asyncio.wait_for(offered.ended.wait(), 3)
    assert link.dropped == {"CANCEL": 1} and link.seen["CANCEL"] >= 2


async def test_the_service_hanging_up_a_caller_resends_a_lost_bye(
    lossy_agent: tuple[SipAgent, LossyLink], doctor: SipAgent
) -> None:
    """The other direction: the call came in (pyVoIP's dialog), our BYE is lost once."""
    agent, link = lossy_agent

    answering = answer_next_call(agent)
    dialed = await doctor.dial("sip:hotline@127.0.0.1", ring_timeout_s=10)
    inbound = await answering
    assert dialed.outcome is DialOutcome.ANSWERED and dialed.leg is not None
    await inbound.hangup()
    await asyncio.wait_for(dialed.leg.ended.wait(), 3)
    assert link.dropped == {"BYE": 1} and link.seen["BYE"] == 2


@pytest.mark.parametrize("password, outcome", [("s3cret-pw", DialOutcome.ANSWERED), ("wrong", DialOutcome.REJECTED)])
async def test_a_pbx_that_challenges_our_invites_gets_digest_credentials(
    tmp_path: Path, password: str, outcome: DialOutcome
) -> None:
    proxy = start_kamailio(tmp_path / "auth", register_password="s3cret-pw")
    port = free_udp_port()
    hotline = SipAgent(SipAccount("127.0.0.1", proxy.port, "hotline", password, sip_port=port,
                                  rtp_port_low=port + 1000, rtp_port_high=port + 1100, register_timeout_s=2))
    port = free_udp_port()
    doctor = SipAgent(SipAccount("127.0.0.1", proxy.port, "1001", "s3cret-pw", sip_port=port,
                                 rtp_port_low=port + 1000, rtp_port_high=port + 1100, register_timeout_s=2))
    try:
        await hotline.start()
        await doctor.start()
        assert await doctor.wait_registered(3)
        # registered or not, the service's INVITE is challenged (407) because its From is an
        # account of this PBX; it answers the challenge once
        picking_up = answer_next_call(doctor)
        dialed = await hotline.dial("sip:1001@127.0.0.1", ring_timeout_s=5)
        assert dialed.outcome is outcome, dialed
        if outcome is DialOutcome.ANSWERED:
            doctor_leg = await picking_up
            assert dialed.leg is not None
            await dialed.leg.hangup()  # in the dialog the credentials are not asked again
            await asyncio.wait_for(doctor_leg.ended.wait(), 3)
        else:
            assert dialed.status == 407 and "refused the hotline's SIP credentials" in dialed.reason
            assert not picking_up.done()  # the doctor's phone never rang
            picking_up.cancel()
    finally:
        await hotline.stop()
        await doctor.stop()
        proxy.stop()
