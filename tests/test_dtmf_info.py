"""Digits from SIP INFO bodies (telephony.dtmf_info): every form phones send, and junk refused."""

from __future__ import annotations

import pytest

from telephony.dtmf_info import digit_from_info

RELAY = "application/dtmf-relay"


@pytest.mark.parametrize("key", list("0123456789*#ABCD"))
def test_every_key_in_a_dtmf_relay_body(key: str) -> None:
    assert digit_from_info(RELAY, f"Signal={key}\r\nDuration=160\r\n".encode()) == key


@pytest.mark.parametrize("key", list("0123456789*#ABCD"))
def test_every_key_as_a_bare_application_dtmf_body(key: str) -> None:
    assert digit_from_info("application/dtmf", key.encode()) == key


@pytest.mark.parametrize(("content_type", "body", "digit"), [
    (RELAY, b"Signal=5\r\nDuration=160\r\n", "5"),
    (RELAY, b"Signal=5\nDuration=160\n", "5"),  # bare LF
    (RELAY, b"signal=5\r\nduration=160", "5"),  # lower-case names
    (RELAY, b"SIGNAL = 7 \r\n", "7"),  # spaces around '='
    (RELAY, b"Duration=250\r\nSignal=9\r\n", "9"),  # order does not matter
    (RELAY, b"Signal=a\r\n", "A"),  # lower-case A-D
    (RELAY, b"Signal=d\r\n", "D"),
    (RELAY, b"Signal=10\r\n", "*"),  # RFC 4733 event codes
    (RELAY, b"Signal=11\r\n", "#"),
    (RELAY, b"Signal=15\r\n", "D"),
    ("Application/DTMF-Relay; charset=us-ascii", b"Signal=3\r\n", "3"),
    ("application/dtmf", b"1\r\n", "1"),
    ("application/dtmf", b" # ", "#"),
    ("APPLICATION/DTMF", b"b", "B"),
])
def test_the_forms_phones_send(content_type: str, body: bytes, digit: str) -> None:
    assert digit_from_info(content_type, body) == digit


@pytest.mark.parametrize(("content_type", "body"), [
    (RELAY, b""),
    (RELAY, b"Duration=160\r\n"),  # no Signal
    (RELAY, b"Signal=\r\n"),
    (RELAY, b"Signal=E\r\n"),  # not a key
    (RELAY, b"Signal=16\r\n"),  # flash and beyond: not a key
    (RELAY, b"Signal=12345\r\n"),
    (RELAY, b"Signal 5\r\n"),  # no '='
    (RELAY, b"Signals=5\r\n"),
    (RELAY, "Signal=\u4e00".encode()),  # not ASCII
    (RELAY, b"\xff\xfe"),
    (RELAY, b"Signal=5\r\n" + b"x" * 1000),  # too long to be a keypress
    ("application/dtmf", b""),
    ("application/dtmf", b"12"),
    ("application/dtmf", b"Signal=5"),
    ("application/sdp", b"Signal=5\r\n"),  # another body type
    ("text/plain", b"5"),
    ("", b"5"),
])
def test_junk_is_no_digit(content_type: str, body: bytes) -> None:
    assert digit_from_info(content_type, body) is None
