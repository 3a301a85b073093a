"""telephony.sip_message: every header form RFC 3261 allows is read; what is not SIP says why."""

from __future__ import annotations

import pytest

from telephony.sip_message import (
    NameAddr,
    SipParseError,
    Via,
    build_response,
    parse,
    response_address,
    validate_request,
)


def request(*headers: str, start: str = "INVITE sip:hotline@127.0.0.1 SIP/2.0", body: str = "",
            line_end: str = "\r\n") -> bytes:
    base = [
        "Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK776asdhds;rport",
        "From: <sip:13800000001@pbx>;tag=1928301774",
        "To: <sip:hotline@pbx>",
        "Call-ID: a84b4c76e66710",
        "CSeq: 314159 INVITE",
        "Max-Forwards: 70",
        "Contact: <sip:13800000001@10.0.0.5:5062>",
    ]
    lines = [start, *base, *headers, f"Content-Length: {len(body.encode())}"]
    return (line_end.join(lines) + line_end + line_end + body).encode()


def test_an_empty_supported_header_is_legal_sip() -> None:
    # baresip 1.0 without its uuid module sends this; pyVoIP raised IndexError on it
    message = parse(request("Supported:"))
    assert message.headers_all("Supported") == []
    assert validate_request(message) is None


@pytest.mark.parametrize("compact,full", [
    ("i", "Call-ID"), ("f", "From"), ("t", "To"), ("v", "Via"), ("m", "Contact"),
    ("c", "Content-Type"), ("k", "Supported"), ("s", "Subject"), ("e", "Content-Encoding"),
])
def test_compact_names_are_the_long_ones(compact: str, full: str) -> None:
    message = parse(f"OPTIONS sip:x@y SIP/2.0\r\n{compact}: value-{compact}\r\nl: 0\r\n\r\n".encode())
    assert message.header(full) == f"value-{compact}"
    assert message.header("Content-Length") == "0"


def test_folded_lines_mixed_case_lws_around_colons_and_leading_zeros() -> None:
    raw = (b"INVITE sip:hotline@127.0.0.1 SIP/2.0\r\n"
           b"TO :\r\n sip:hotline@127.0.0.1 ;   tag    = 1918181833n\r\n"
           b"from   : \"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8\r\n"
           b"MaX-fOrWaRdS: 0068\r\nCall-ID: wsinv.ndaksdj@192.0.2.1\r\nContent-Length   : 0\r\n"
           b"cseq: 0009\r\n  INVITE\r\nVia  : SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;rport;branch=390skdjuw\r\n"
           b"s :\r\nNewFangledHeader:   newfangled value\r\n continued newfangled value\r\n"
           b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\nm: <sip:jdrosen@192.0.2.2>\r\n\r\n")
    message = parse(raw)
    assert message.cseq == (9, "INVITE")
    assert message.header("Max-Forwards") == "0068"
    assert message.header("NewFangledHeader") == "newfangled value continued newfangled value"
    assert message.header("Subject") == ""
    assert message.from_tag == "98asjd8" and message.to_tag == "1918181833n"
    assert Via.parse(message.header("Via") or "").host == "192.0.2.2"
    assert validate_request(message) is None


def test_several_values_in_one_header_and_one_header_repeated() -> None:
    message = parse(request("Via: SIP/2.0/UDP 10.0.0.6;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.7;branch=z9hG4bKb",
                            "Record-Route: <sip:p1;lr>, <sip:p2;lr>", "Record-Route: <sip:p3;lr>",
                            'Contact: "Doe, John" <sip:j@h>'))
    assert len(message.headers_all("Via")) == 3
    assert message.headers_all("Record-Route") == ["<sip:p1;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]
    # a comma in quotes is no split
    assert message.headers_all("Contact") == ["<sip:13800000001@10.0.0.5:5062>", '"Doe, John" <sip:j@h>']


def test_bare_lf_line_ends_are_read() -> None:
    message = parse(request(line_end="\n", body="v=0\n"))
    assert message.call_id == "a84b4c76e66710" and message.body == b"v=0\n"


def test_tel_uris_in_from_and_to() -> None:
    message = parse(request().replace(b"From: <sip:13800000001@pbx>", b"From: <tel:+8613800000001>"))
    assert NameAddr.parse(message.header("From") or "").user() == "+8613800000001"
    assert validate_request(message) is None


def test_the_body_is_cut_at_content_length_and_a_longer_one_is_refused() -> None:
    message = parse(request(body="v=0\r\n") + b"extra octets of the datagram")
    assert message.body == b"v=0\r\n"
    with pytest.raises(SipParseError) as error:
        parse(request(body="v=0\r\n").replace(b"Content-Length: 5", b"Content-Length: 500"))
    assert error.value.status == 400


@pytest.mark.parametrize("raw,status", [
    (b"INVITE sip:a@b SIP/2.0\r\nVia: x", 400),  # truncated: headers never end
    (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", 400),  # two spaces
    (b"INVITE sip:a@b SIP/2.0 \r\n\r\n", 400),  # trailing space
    (b"INVITE <sip:a@b> SIP/2.0\r\n\r\n", 400),  # <> around the Request-URI
    (b"INVITE sip:a@b SIP/7.0\r\n\r\n", 505),
    (b"IN VITE sip:a@b SIP/2.0\r\n\r\n", 400),
    (b"INVITE sip:a@b SIP/2.0\r\nno colon here\r\n\r\n", 400),
    (b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n", 400),
    (b"SIP/2.0 4294967301 Big\r\n\r\n", 400),  # a response: never answered, dropped by the edge
])
def test_what_cannot_be_parsed_says_which_status_it_earns(raw: bytes, status: int) -> None:
    with pytest.raises(SipParseError) as error:
        parse(raw)
    assert error.value.status == status


@pytest.mark.parametrize("change,status", [
    ((b"Call-ID: a84b4c76e66710\r\n", b""), 400),
    ((b"Contact: <sip:13800000001@10.0.0.5:5062>\r\n", b""), 400),  # an INVITE needs one
    ((b"CSeq: 314159 INVITE", b"CSeq: 314159 OPTIONS"), 400),  # method mismatch
    ((b"CSeq: 314159 INVITE", b"CSeq: 36893488147419103232 INVITE"), 400),
    ((b"Max-Forwards: 70", b"Max-Forwards: 300"), 400),
    ((b"To: <sip:hotline@pbx>", b"To: <sip:hotline@pbx>\r\nTo: <sip:other@pbx>"), 400),
    ((b"From: <sip:13800000001@pbx>;tag=1928301774", b'From: "unterminated <sip:a@b>;tag=1'), 400),
    ((b"To: <sip:hotline@pbx>", b"To: < sip:hotline@pbx >"), 400),
    ((b"To: <sip:hotline@pbx>", b"To: <sip:hotline@pbx>;;,;,,"), 400),
    ((b"INVITE sip:hotline@127.0.0.1 SIP", b"INVITE nobodyknowsthisscheme:totallyopaquecontent SIP"), 416),
])
def test_requests_a_uas_must_not_act_on(change: tuple[bytes, bytes], status: int) -> None:
    raw = request().replace(*change)
    assert validate_request(parse(raw))[0] == status  # type: ignore[index]


def test_a_response_copies_the_dialog_headers_and_adds_our_tag() -> None:
    message = parse(request("Record-Route: <sip:pbx;lr>"))
    raw = build_response(message, 180, to_tag="abc", record_route=True)
    response = parse(raw)
    assert response.status == 180 and response.reason == "Ringing"
    assert response.to_tag == "abc" and response.from_tag == "1928301774"
    assert response.headers_all("Record-Route") == ["<sip:pbx;lr>"]
    assert response.header("Content-Length") == "0"


def test_responses_go_to_the_top_via_corrected_by_received_and_rport() -> None:
    message = parse(request())
    # the Via says 10.0.0.5:5062 with rport: the response goes where the request came from
    assert response_address(message, ("192.0.2.9", 40000)) == ("192.0.2.9", 40000)
    plain = parse(request().replace(b";rport", b""))
    assert response_address(plain, ("10.0.0.5", 40000)) == ("10.0.0.5", 5062)
    assert response_address(plain, ("192.0.2.9", 40000)) == ("192.0.2.9", 5062)
