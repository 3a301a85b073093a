"""Timer E and Timer F of RFC 3261 §17.1.2.2 as pure logic, on a clock the test moves.

The same table against a real proxy and a link that loses packets: tests/test_dial.py
(test_a_lost_bye_is_sent_again_until_answered and its neighbours).
"""

from __future__ import annotations

from telephony.transactions import T2_S, TIMER_F_S, NonInviteTransactions, transaction_key


def request(method: str, branch: str = "z9hG4bKabc", cseq: int = 2) -> bytes:
    return (f"{method} sip:1001@127.0.0.1:5062 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n"
            "From: <sip:hotline@127.0.0.1>;tag=a\r\nTo: <sip:1001@127.0.0.1>;tag=b\r\n"
            f"Call-ID: call-1@127.0.0.1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode()


def response(code: int, method: str, branch: str = "z9hG4bKabc", cseq: int = 2) -> bytes:
    return (f"SIP/2.0 {code} Whatever\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport=5070;received=127.0.0.1\r\n"
            "From: <sip:hotline@127.0.0.1>;tag=a\r\nTo: <sip:1001@127.0.0.1>;tag=b\r\n"
            f"Call-ID: call-1@127.0.0.1\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def send_times(clock: Clock, table: NonInviteTransactions, sent: list[bytes], until: float) -> list[float]:
    """Tick every 10 ms (as the receive loop does) until `until`; when each send happened."""
    times, start = [], clock.now
    count = len(sent)
    while clock.now - start < until:
        clock.now = round(clock.now + 0.01, 2)
        table.tick()
        if len(sent) > count:
            times.append(round(clock.now - start, 2))
            count = len(sent)
    return times


def test_timer_e_doubles_from_t1_to_t2_and_a_final_response_stops_it() -> None:
    clock, sent = Clock(), []
    table = NonInviteTransactions(lambda message, _address=None: sent.append(message), clock)
    table.start(request("BYE"))
    assert len(sent) == 1
    assert send_times(clock, table, sent, 11.0) == [0.5, 1.5, 3.5, 7.5]  # +0.5, +1, +2, +4 (T2)
    assert table.on_response(response(200, "BYE")) is True
    assert table.waiting() == 0
    assert send_times(clock, table, sent, 10.0) == []


def test_a_provisional_response_stretches_retransmissions_to_t2() -> None:
    clock, sent = Clock(), []
    table = NonInviteTransactions(lambda message, _address=None: sent.append(message), clock)
    table.start(request("BYE"))
    clock.now += 0.1
    assert table.on_response(response(100, "BYE")) is True
    assert send_times(clock, table, sent, 8.5) == [T2_S, 2 * T2_S]
    assert table.waiting() == 1


def test_timer_f_gives_up_counts_and_stops() -> None:
    clock, sent = Clock(), []
    table = NonInviteTransactions(lambda message, _address=None: sent.append(message), clock)
    table.start(request("BYE"))
    times = send_times(clock, table, sent, TIMER_F_S + 5)
    assert times[-1] < TIMER_F_S and table.waiting() == 0
    assert table.timed_out == 1
    assert len(sent) == 1 + len(times) == 11  # 0, .5, 1.5, 3.5, 7.5, 11.5, … 31.5


def test_the_invites_final_response_ends_its_cancel() -> None:
    clock, sent = Clock(), []
    table = NonInviteTransactions(lambda message, _address=None: sent.append(message), clock)
    table.start(request("CANCEL", branch="z9hG4bKinv", cseq=1))
    # the 487 for the INVITE overtook the CANCEL's 200: the INVITE is over, and so is the CANCEL
    assert table.on_response(response(487, "INVITE", branch="z9hG4bKinv", cseq=1)) is False
    assert table.waiting() == 0


def test_responses_of_other_transactions_are_not_ours() -> None:
    clock, sent = Clock(), []
    table = NonInviteTransactions(lambda message, _address=None: sent.append(message), clock)
    table.start(request("BYE", branch="z9hG4bKone"))
    assert table.on_response(response(200, "BYE", branch="z9hG4bKtwo")) is False
    assert table.on_response(response(200, "INVITE", branch="z9hG4bKone")) is False  # method differs
    assert table.on_response(b"garbage") is False
    assert table.waiting() == 1


def test_transaction_key_reads_the_top_via_and_the_cseq_method() -> None:
    two_vias = request("BYE").replace(
        b"Via:", b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKtop\r\nVia:", 1)
    assert transaction_key(two_vias) == ("z9hG4bKtop", "BYE")
    compact = request("BYE").replace(b"Via:", b"v:")
    assert transaction_key(compact) == ("z9hG4bKabc", "BYE")
    assert transaction_key(b"BYE sip:x SIP/2.0\r\n\r\n") is None


# --- the server side: retransmitted requests, Timer G, the 2xx until its ACK --------------------

def test_a_retransmitted_request_gets_the_last_response_and_goes_no_further() -> None:
    from telephony.sip_message import parse
    from telephony.transactions import ServerTransactions

    clock, sent = Clock(), []
    table = ServerTransactions(lambda data, address: sent.append((data, address)), clock)
    invite = parse(request("INVITE", cseq=1))
    assert not table.seen(invite)
    table.begin(invite, ("127.0.0.1", 5070))
    assert table.seen(invite) and sent == []  # nothing answered yet: nothing to repeat
    table.respond(invite, b"SIP/2.0 180 Ringing\r\n\r\n", 180)
    assert table.seen(invite) and [d for d, _ in sent] == [b"SIP/2.0 180 Ringing\r\n\r\n"] * 2
    assert table.absorbed == 2
    # an error final is sent again on Timer G until the ACK (same branch) comes
    table.respond(invite, b"SIP/2.0 486 Busy Here\r\n\r\n", 486)
    times = []
    for step in range(1, 400):
        clock.now = round(100 + step * 0.01, 2)
        before = len(sent)
        table.tick()
        if len(sent) > before:
            times.append(round(clock.now - 100, 2))
    assert times[:3] == [0.5, 1.5, 3.5]
    assert table.seen(parse(request("ACK", cseq=1)))  # the ACK ends Timer G, absorbed here
    count = len(sent)
    clock.now += 10
    table.tick()
    assert len(sent) == count
    # after Timer J/H the transaction is forgotten
    clock.now += TIMER_F_S
    table.tick()
    assert len(table) == 0 and not table.seen(invite)


def test_a_cancel_and_an_rfc2543_request_have_transactions_of_their_own() -> None:
    from telephony.sip_message import parse
    from telephony.transactions import ServerTransactions

    invite = parse(request("INVITE", cseq=1))
    cancel = parse(request("CANCEL", cseq=1))
    ack = parse(request("ACK", cseq=1))
    key = ServerTransactions.key
    assert key(invite) == key(ack) != key(cancel)
    old = parse(request("INVITE", branch="1234", cseq=1))  # no magic cookie
    assert key(old)[0] == "call-1@127.0.0.1" and key(old) != key(parse(request("INVITE", branch="1234", cseq=2)))


def test_a_2xx_is_sent_again_until_its_ack_and_given_up_after_timer_h() -> None:
    from telephony.transactions import Retransmissions

    clock, sent, gone = Clock(), [], []
    retransmissions = Retransmissions(lambda data, address: sent.append(data), clock)
    retransmissions.start("call", b"200", ("127.0.0.1", 1), on_timeout=lambda: gone.append(True), give_up_after_s=4)
    for step in range(1, 500):
        clock.now = round(100 + step * 0.01, 2)
        retransmissions.tick()
    assert len(sent) == 4 and gone == [True]  # 0, 0.5, 1.5, 3.5 s, then gave up at 4 s
    retransmissions.start("other", b"200", ("127.0.0.1", 1))
    assert retransmissions.stop("other") and not retransmissions.stop("other")
