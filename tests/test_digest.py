"""Digest answers as RFC 2617 defines them; against a challenging Kamailio in tests/test_dial.py."""

from __future__ import annotations

import hashlib

import pytest

from telephony.digest import Challenge, DigestError, authorization


def test_rfc_2617_worked_example_with_qop_auth() -> None:
    # RFC 2617 §3.5 (an HTTP request, the same arithmetic as SIP's)
    challenge = Challenge.parse('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                                'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
                                'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    value = authorization(challenge, method="GET", uri="/dir/index.html", username="Mufasa",
                          password="Circle Of Life", cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert "qop=auth" in value and "nc=00000001" in value and 'cnonce="0a4f113b"' in value
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value


def test_without_qop_the_rfc_2069_response() -> None:
    challenge = Challenge.parse('Digest realm="127.0.0.1", nonce="abc"')
    value = authorization(challenge, method="INVITE", uri="sip:1001@127.0.0.1", username="hotline",
                          password="pw")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    expected = md5(f"{md5('hotline:127.0.0.1:pw')}:abc:{md5('INVITE:sip:1001@127.0.0.1')}")
    assert f'response="{expected}"' in value and "qop" not in value and "opaque" not in value


def test_sha_256_is_answered_in_kind() -> None:
    challenge = Challenge.parse('Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth"')
    value = authorization(challenge, method="INVITE", uri="sip:x@r", username="u", password="p",
                          cnonce="c")

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    expected = sha(f"{sha('u:r:p')}:n:00000001:c:auth:{sha('INVITE:sip:x@r')}")
    assert f'response="{expected}"' in value and "algorithm=SHA-256" in value


@pytest.mark.parametrize(("header", "why"), [
    ('Basic realm="r"', "not Digest"),
    ('Digest nonce="n"', "no realm or nonce"),
    ('Digest realm="r", nonce="n", algorithm=MD5-sess', "MD5-SESS is not supported"),
    ('Digest realm="r", nonce="n", qop="auth-int"', "qop auth-int is not supported"),
])
def test_challenges_we_cannot_answer_say_why(header: str, why: str) -> None:
    with pytest.raises(DigestError, match=why):
        Challenge.parse(header)
