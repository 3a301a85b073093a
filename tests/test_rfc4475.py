"""RFC 4475's torture messages (tests/rfc4475_cases.py) against our SIP, in two layers.

1. The parser (telephony/sip_message.py): `parse(data) -> SipMessage` reads every valid message
   (header lookup by any case and by compact name, folded lines, empty values, bodies framed by
   Content-Length) and refuses invalid ones with SipParseError(.status, .reason), or leaves them
   to `validate_request(msg) -> (status, reason) | None` for what is well-formed but wrong (CSeq
   and method disagree, overlarge scalars, missing or repeated required headers). No message, and
   no prefix of one, may raise anything else.
2. The service (marker `sip`): each message sent straight to a running SipAgent's port on
   loopback, the first final response checked against the table, every mismatch listed at once;
   then no thread exception, no logged traceback, and a real call through Kamailio still works.

Both layers also take EXTRA_CASES: a few messages of our own (tests/fixtures/sip-uas/) for what a
UAS must do that RFC 4475 has no message for (unknown Content-Encoding, a Require we lack, the
compact and empty headers real softphones send, multipart and bare-LF SDP).

Header values are compared after collapsing each run of whitespace (folding included) to one
space: RFC 3261 §7.3.1 lets a recipient replace LWS with a single SP before reading a value.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import itertools
import os
import re
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from telephony.sip_message import split_list
from tests.rfc4475_cases import (
    ACCEPTED,
    ALL_CASES,
    BY_NAME,
    CASES,
    EXTRA_CASES,
    FIXTURES,
    UAS_FIXTURES,
    Case,
)
from tests.sip_peers import Kamailio, run_sipp, sipp_result

if TYPE_CHECKING:
    from telephony.agent import InboundLeg, SipAgent

CASE_IDS = [case.name for case in ALL_CASES]
REQUESTS = [case for case in ALL_CASES if not case.is_response]


def norm(value: str | None) -> str | None:
    return None if value is None else " ".join(value.split())


def values(msg: Any, name: str) -> list[str]:
    """Every value of a header, whether the parser lists comma-joined values one by one or not."""
    return [norm(v) or "" for line in msg.headers_all(name) for v in split_list(line)]


# --- the fixtures themselves ----------------------------------------------------------------------

# sha256 over "name\0bytes\0" of every fixture in name order: a checkout that rewrote line ends
# or dropped an octet (NUL, BEL, DEL, the UTF-8, mpart01's binary part) is caught here.
FIXTURES_SHA256 = "640e1e179e48e561993797a89724a434c3d47146e1594f2a178ddbf3ef335270"


def fixtures_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(FIXTURES.glob("*.dat")):
        digest.update(path.stem.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def test_every_message_of_the_rfc_is_in_the_table_once_and_on_disk() -> None:
    assert sorted(case.name for case in CASES) == sorted(p.stem for p in FIXTURES.glob("*.dat"))
    assert sorted(case.name for case in EXTRA_CASES) == sorted(p.stem for p in UAS_FIXTURES.glob("*.dat"))
    assert len(CASES) == 49 and len(set(CASE_IDS)) == len(CASE_IDS)
    for case in ALL_CASES:
        assert case.answers and case.syntax in ("valid", "invalid", "either") and case.rfc, case
        assert case.silent == case.is_response, f"{case.name}: only responses go unanswered here"


def test_the_fixtures_are_the_rfc_octets() -> None:
    assert fixtures_digest() == FIXTURES_SHA256
    for case in ALL_CASES:
        head = case.data().split(b"\r\n\r\n", 1)[0]
        # CRLF line ends as on the wire: no bare CR or LF anywhere in the header section
        assert b"\n" not in head.replace(b"\r\n", b""), case.name
        assert b"\r" not in head.replace(b"\r\n", b""), case.name
    intmeth = BY_NAME["intmeth"].data()
    assert b'To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:' in intmeth
    assert ';fromParam\'\'~+*_!.-%="' + "работающий" + '";' in intmeth.decode()
    assert b"extensionHeader-!.%*+_`'~:" + "\ufeff大停電".encode() + b"\r\n" in intmeth
    reason = "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert BY_NAME["unreason"].data().startswith(f"SIP/2.0 200 {reason}\r\n".encode())
    assert BY_NAME["noreason"].data().startswith(b"SIP/2.0 100 \r\n")
    assert b" SIP/2.0  \r\n" in BY_NAME["trws"].data()
    # bodies the Content-Length describes exactly, where the RFC means it to
    framed_wrong = {"clerr", "ncl", "mcl01", "dblreq", "inv2543"}
    for case in ALL_CASES:
        if case.name in framed_wrong:
            continue
        head, _, body = case.data().partition(b"\r\n\r\n")
        lengths = re.findall(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)", head)
        assert [int(n) for n in lengths] == [len(body)], case.name
    mpart = BY_NAME["mpart01"].data().partition(b"\r\n\r\n")[2]
    assert len(mpart) == 553 and b"\x00" in mpart and mpart.endswith(b"--7a9cbec02ceef655--\r\n")


# --- layer 1: the parser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sip() -> ModuleType:
    """The parser under test. Until telephony/sip_message.py lands every parser test fails here
    with ModuleNotFoundError; the rest of this module does not depend on it."""
    return importlib.import_module("telephony.sip_message")


def parsed(sip: ModuleType, name: str) -> Any:
    return sip.parse(BY_NAME[name].data())


@pytest.mark.parametrize("case", ALL_CASES, ids=CASE_IDS)
def test_the_parser_takes_or_refuses_each_message_as_the_rfc_says(sip: ModuleType, case: Case) -> None:
    try:
        msg = sip.parse(case.data())
    except sip.SipParseError as exc:
        assert case.syntax != "valid", (
            f"{case.name} is valid ({case.rfc}) but was refused: {exc.status} {exc.reason}")
        assert isinstance(exc.status, int) and isinstance(exc.reason, str) and exc.reason.strip()
        if not case.is_response:
            assert exc.status in case.codes, (
                f"{case.name}: refused {exc.status} ({exc.reason}); the RFC says {case.expected()}")
        return
    if case.is_response:
        assert isinstance(msg.status, int) and isinstance(msg.reason, str)
        if case.name == "bigcode":  # read, it must stay out of range, never wrap to a small code
            assert msg.status == 4294967301, msg.status
        return
    assert isinstance(msg.method, str) and isinstance(msg.uri, str) and isinstance(msg.body, bytes)
    verdict = sip.validate_request(msg)
    if verdict is None:
        assert case.syntax != "invalid", (
            f"{case.name} was taken as a good request; the RFC says: {case.rfc}")
        return
    status, reason = verdict
    assert status in case.codes, (
        f"{case.name}: validate_request refused it {status} ({reason}); the RFC says {case.expected()}")
    assert isinstance(reason, str) and reason.strip()


@pytest.mark.parametrize("case", ALL_CASES, ids=CASE_IDS)
def test_no_prefix_of_any_message_breaks_the_parser(sip: ModuleType, case: Case) -> None:
    """A datagram cut anywhere (a truncated UDP read, an attacker's probe) is read or refused
    with SipParseError, never another exception; validate_request likewise never raises."""
    data = case.data()
    step = 1 if len(data) <= 1100 else 7
    for end in itertools.chain(range(0, len(data), step), [len(data)]):
        try:
            msg = sip.parse(data[:end])
        except sip.SipParseError:
            continue
        if msg.method is not None:
            sip.validate_request(msg)


def test_header_names_match_in_any_case_and_by_compact_form(sip: ModuleType) -> None:
    msg = parsed(sip, "wsinv")
    for name in ("Via", "via", "VIA", "v", "V"):
        assert norm(msg.header(name)) == "SIP / 2.0 /UDP 192.0.2.2;branch=390skdjuw", name
    for long, compact in (("Call-ID", "i"), ("Contact", "m"), ("Subject", "s"), ("To", "t"),
                          ("From", "f"), ("Content-Length", "l"), ("Content-Type", "c")):
        assert msg.header(long) == msg.header(compact) == msg.header(long.upper()), long
    assert msg.header("Supported") is None and msg.headers_all("Supported") == []


def test_wsinv_is_read_through_its_folding_spaces_and_mixed_names(sip: ModuleType) -> None:
    msg = parsed(sip, "wsinv")
    assert msg.method == "INVITE"
    assert msg.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert norm(msg.header("To")) == "sip:vivekg@chair-dnrc.example.com ; tag = 1918181833n"
    assert norm(msg.header("From")) == '"J Rosenberg \\\\\\"" <sip:jdrosen@example.com> ; tag = 98asjd8'
    assert msg.header("Max-Forwards") == "0068"
    assert norm(msg.header("CSeq")) == "0009 INVITE"
    assert msg.header("Call-ID") == "wsinv.ndaksdj@192.0.2.1"
    assert msg.header("Content-Length") == "150"
    assert msg.header("Subject") == ""  # empty, and present: "" is not None
    assert norm(msg.header("NewFangledHeader")) == "newfangled value continued newfangled value"
    assert msg.header("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert msg.header("Content-Type") == "application/sdp"
    assert norm(msg.header("Route")) == "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    assert values(msg, "Via") == [
        "SIP / 2.0 /UDP 192.0.2.2;branch=390skdjuw",
        "SIP / 2.0 / TCP spindle.example.com ; branch = z9hG4bK9ikj8",
        "SIP / 2.0 / UDP 192.168.255.111 ; branch= z9hG4bK30239",
    ]
    assert norm(msg.header("Contact")) == (
        '"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam = newvalue ; secondparam ; q = 0.33')
    assert msg.body == BY_NAME["wsinv"].data()[-150:]
    assert msg.body.startswith(b"v=0\r\n") and msg.body.endswith(b"a=rtpmap:31 LPC\r\n")


def test_intmeth_keeps_every_octet_of_its_odd_characters(sip: ModuleType) -> None:
    msg = parsed(sip, "intmeth")
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.uri == ("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,"
                       "weird!*pas$wo~d_too.(doesn't-it)@example.com")
    assert msg.header("To") == (
        '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f" <sip:1_unusual.URI~(to-be!sure)&isn\'t+it$/crazy?,/;;*@example.com>')
    assert msg.header("From") == (
        "token1~` token2'+_ token3*%!.- <sip:mundane@example.com>;fromParam''~+*_!.-%="
        "\"работающий\";tag=_token~1'+`*%!-.")
    assert msg.header("Call-ID") == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.header("CSeq") == "139122385 !interesting-Method0123456789_*+`.%indeed'~"
    assert msg.header("Via") == "SIP/2.0/TCP host1.example.com;branch=z9hG4bK-.!%66*_+`'~"
    assert msg.header("Max-Forwards") == "255"
    assert msg.header("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert msg.body == b""


def test_esc01_keeps_escapes_as_sent_and_reads_compact_c_and_i(sip: ModuleType) -> None:
    msg = parsed(sip, "esc01")
    assert msg.uri == "sip:sips%3Auser%40example.com@example.net"
    assert msg.header("To") == "sip:%75se%72@example.com"
    assert msg.header("From") == "<sip:I%20have%20spaces@example.net>;tag=938"
    assert msg.header("Call-ID") == "esc01.239409asdfakjkn23onasd0-3234"
    assert msg.header("Content-Type") == "application/sdp"
    assert norm(msg.header("Contact")) == "<sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>"
    assert len(msg.body) == 150


def test_escnull_registers_two_contacts_with_escaped_nulls(sip: ModuleType) -> None:
    msg = parsed(sip, "escnull")
    assert (msg.method, msg.uri) == ("REGISTER", "sip:example.com")
    assert msg.header("To") == "sip:null-%00-null@example.com"
    assert values(msg, "Contact") == ["<sip:%00@host5.example.com>", "<sip:%00%00@host5.example.com>"]
    assert msg.header("Content-Length") == "0" and msg.body == b""


def test_esc02_percent_is_not_an_escape_in_methods_or_header_names(sip: ModuleType) -> None:
    msg = parsed(sip, "esc02")
    assert msg.method == "RE%47IST%45R"
    assert msg.header("CSeq") == "29344 RE%47IST%45R"
    assert values(msg, "Contact") == ["<sip:alias1@host1.example.com>", "<sip:alias3@host3.example.com>"]
    assert msg.header("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert msg.header("To") == '"%Z%45" <sip:resource@example.com>'


def test_lwsdisp_display_name_right_against_the_bracket(sip: ModuleType) -> None:
    msg = parsed(sip, "lwsdisp")
    assert (msg.method, msg.uri) == ("OPTIONS", "sip:user@example.com")
    assert msg.header("From") == "caller<sip:caller@example.com>;tag=323"


def test_longreq_reads_34_vias_under_every_spelling_of_the_name(sip: ModuleType) -> None:
    msg = parsed(sip, "longreq")
    vias = values(msg, "Via")
    assert len(vias) == 34
    assert vias[0] == "SIP/2.0/TCP sip33.example.com"
    assert [v.split()[1] for v in vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    assert vias[33].startswith("SIP/2.0/TCP host.example.com;received=192.0.2.5;branch=verylong")
    assert msg.header("Call-ID") == "longreq.one" + "really" * 20 + "longcallid"
    assert msg.header("From").startswith("sip:" + "amazinglylongcallername" * 5 + "@example.net;tag=")
    assert msg.header("Content-Length") == "150" and len(msg.body) == 150


def test_dblreq_is_the_register_and_the_invite_after_it_is_ignored(sip: ModuleType) -> None:
    msg = parsed(sip, "dblreq")
    assert msg.method == "REGISTER"
    assert msg.header("Call-ID") == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"  # from "I:"
    assert msg.body == b""  # Content-Length: 0 ends the message; the rest is noise (§18.3)
    assert values(msg, "Via") == ["SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492"]


def test_semiuri_and_a_folded_accept_list(sip: ModuleType) -> None:
    msg = parsed(sip, "semiuri")
    assert msg.uri == "sip:user;par=u%40example.net@example.com"
    assert values(msg, "Accept") == ["application/sdp", "application/pkcs7-mime", "multipart/mixed",
                                     "multipart/signed", "message/sip", "message/sipfrag"]


def test_transports_of_every_kind_in_via(sip: ModuleType) -> None:
    msg = parsed(sip, "transports")
    assert [v.split()[0] for v in values(msg, "Via")] == [
        "SIP/2.0/UDP", "SIP/2.0/SCTP", "SIP/2.0/TLS", "SIP/2.0/UNKNOWN", "SIP/2.0/TCP"]
    assert msg.header("Call-ID") == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01_binary_body_is_framed_by_content_length(sip: ModuleType) -> None:
    msg = parsed(sip, "mpart01")
    assert msg.method == "MESSAGE"
    assert msg.body == BY_NAME["mpart01"].data().partition(b"\r\n\r\n")[2]
    assert len(msg.body) == 553 and b"\x00" in msg.body
    assert msg.header("Content-Type") == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert msg.header("Identity").startswith("r5mwreLuyDRYBi/0TiPwEsY3rEVsk/G2Wxh")


def test_unreason_and_noreason_responses(sip: ModuleType) -> None:
    msg = parsed(sip, "unreason")
    assert msg.status == 200
    assert msg.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert msg.header("CSeq") == "35 INVITE" and len(msg.body) == 154
    msg = parsed(sip, "noreason")
    assert (msg.status, msg.reason) == (100, "")
    msg = parsed(sip, "bcast")
    assert msg.status == 200 and len(values(msg, "Via")) == 2


def test_non_sip_uris_in_headers_and_unknown_extensions_are_read(sip: ModuleType) -> None:
    msg = parsed(sip, "unksm2")
    assert msg.header("To") == "isbn:2983792873"
    assert msg.header("From") == "<http://www.example.com>;tag=3234233"
    assert msg.header("Contact") == "<name:John_Smith>"
    msg = parsed(sip, "bext01")
    assert values(msg, "Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert values(msg, "Proxy-Require") == ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]
    msg = parsed(sip, "unkscm")
    assert msg.uri == "nobodyKnowsThisScheme:totallyopaquecontent"
    msg = parsed(sip, "novelsc")
    assert msg.uri == "soap.beep://192.0.2.103:3002"
    msg = parsed(sip, "zeromf")
    assert msg.header("Max-Forwards") == "0"
    msg = parsed(sip, "regescrt")
    assert msg.header("Contact") == "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>"
    assert msg.header("Content-Length") == "0"


def test_inv2543_without_content_length_has_the_rest_of_the_datagram_as_body(sip: ModuleType) -> None:
    msg = parsed(sip, "inv2543")
    assert msg.header("Content-Length") is None
    assert msg.body == BY_NAME["inv2543"].data().partition(b"\r\n\r\n")[2]
    assert msg.body.startswith(b"v=0\r\n") and msg.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    assert msg.header("Max-Forwards") is None


def test_our_own_uas_messages_are_read(sip: ModuleType) -> None:
    msg = parsed(sip, "compact01")
    assert msg.header("Supported") == msg.header("k") == ""  # empty and present (issue 8)
    assert msg.headers_all("Supported") == []  # present, with no option tags
    assert msg.header("From") == '"Resident" <tel:+8613800000009>;tag=compact01'
    assert values(msg, "Via") == ["SIP/2.0/UDP 192.0.2.33:5060;branch=z9hG4bKcompact01"]
    assert msg.header("Contact") == "<sip:13800000009@192.0.2.33:5060>"
    assert msg.header("Content-Type") == "application/sdp" and len(msg.body) == 193
    msg = parsed(sip, "cenc01")
    assert msg.header("Content-Encoding") == msg.header("e") == "x-nobody-knows-this"
    msg = parsed(sip, "require01")
    assert values(msg, "Require") == ["precondition"]
    msg = parsed(sip, "mpsdp01")
    assert msg.header("Content-Type") == "multipart/mixed;boundary=boundary42"
    assert msg.body.startswith(b"--boundary42\r\n") and msg.body.endswith(b"--boundary42--\r\n")
    msg = parsed(sip, "lfsdp01")
    assert msg.body.startswith(b"v=0\no=") and b"\r" not in msg.body and len(msg.body) == 184


def test_refusals_name_the_rfc_status(sip: ModuleType) -> None:
    """The refusals that have one right answer, through whichever layer the parser chooses."""
    for name, status in (("badvers", 505), ("mismatch01", 400), ("scalar02", 400), ("ncl", 400),
                         ("clerr", 400), ("mcl01", 400), ("multi01", 400), ("insuf", 400),
                         ("badinv01", 400)):
        try:
            verdict = sip.validate_request(sip.parse(BY_NAME[name].data()))
        except sip.SipParseError as exc:
            verdict = (exc.status, exc.reason)
        assert verdict is not None and verdict[0] == status, (name, verdict)


# --- layer 2: the service, over UDP on loopback ---------------------------------------------------

_LWS = r"(?:[ \t]*\r\n)?[ \t]+"
_SWS = rf"(?:{_LWS})?"
_TOKEN = r"[A-Za-z0-9.!%*_+`'~-]+"
_VIA_LINE = re.compile(r"(?im)^(?:via|v)[ \t]*:")
_SENT_BY = re.compile(
    rf"(?P<protocol>{_SWS}{_TOKEN}{_SWS}/{_SWS}{_TOKEN}{_SWS}/{_SWS})(?P<transport>{_TOKEN})"
    rf"(?P<gap>{_LWS})(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?P<port>{_SWS}:{_SWS}[0-9]+)?")
_FIELD_END = re.compile(r"\r\n(?![ \t])")


def route_replies_to(message: bytes, port: int) -> bytes:
    """The message with its top Via pointed at 127.0.0.1:`port` over UDP, with rport.

    The messages name hosts like 192.0.2.2 that do not exist here; a UAS answers to the top Via
    (RFC 3261 §18.2.2, RFC 3581), so that is the one field we change, and only in the first
    via-parm of the first Via header line: its transport becomes UDP (we send over UDP; a TCP Via
    would have the answer sent over TCP), its host[:port] becomes 127.0.0.1:port, and ";rport" is
    added right after it unless the via-parm has rport already. Everything else stays as the RFC
    wrote it: the protocol name and version (badvers keeps SIP/7.0), the LWS and folding around
    them (wsinv), the branch or its absence (badbranch, inv2543), the other Via values, every
    other header and the body (the Content-Length counts only the body)."""
    text = message.decode("latin-1")  # one char per octet: NUL, UTF-8 and binary pass unchanged
    head_end = text.find("\r\n\r\n")
    head_end = len(text) if head_end < 0 else head_end
    line = _VIA_LINE.search(text, 0, head_end)
    if line is None:
        raise ValueError("no Via to route replies by")
    sent_by = _SENT_BY.match(text, line.end())
    if sent_by is None:
        raise ValueError(f"unreadable top Via: {text[line.start():line.start() + 80]!r}")
    field_end = _FIELD_END.search(text, sent_by.end())
    rest = text[sent_by.end():field_end.start() if field_end else head_end]
    has_rport = re.search(r";[ \t\r\n]*rport\b", rest.split(",", 1)[0], re.IGNORECASE)
    new = (sent_by["protocol"] + "UDP" + sent_by["gap"] + f"127.0.0.1:{port}"
           + ("" if has_rport else ";rport"))
    return (text[:sent_by.start()] + new + text[sent_by.end():]).encode("latin-1")


def test_replies_are_routed_to_us_and_nothing_else_changes() -> None:
    """The one rewrite the end-to-end test makes, checked on every request it sends."""
    for case in REQUESTS:
        original = case.data()
        routed = route_replies_to(original, 40404)
        assert routed.count(b"127.0.0.1:40404") == 1, case.name
        # the difference is one contiguous stretch, inside the top Via's first line or fold
        prefix = len(os.path.commonprefix([original, routed]))
        suffix = len(os.path.commonprefix([original[::-1], routed[::-1]]))
        suffix = min(suffix, len(original) - prefix, len(routed) - prefix)
        changed_from, changed_to = original[prefix:len(original) - suffix], routed[prefix:len(routed) - suffix]
        assert b"\r\n" not in changed_from.strip() and b"\r\n" not in changed_to, case.name
        assert original.partition(b"\r\n\r\n")[2] == routed.partition(b"\r\n\r\n")[2], case.name
        top_via = _VIA_LINE.search(original.decode("latin-1")).start()
        assert prefix >= top_via, f"{case.name}: something before the top Via changed"
    wsinv = route_replies_to(BY_NAME["wsinv"].data(), 5)
    assert b"Via  : SIP  /   2.0\r\n /UDP\r\n    127.0.0.1:5;rport;branch=390skdjuw\r\n" in wsinv
    badvers = route_replies_to(BY_NAME["badvers"].data(), 5)
    assert b"Via:     SIP/7.0/UDP 127.0.0.1:5;rport;branch=z9hG4bKkdjuw\r\n" in badvers
    longreq = route_replies_to(BY_NAME["longreq"].data(), 5)
    assert b"Via: SIP/2.0/UDP 127.0.0.1:5;rport\r\nv: SIP/2.0/TCP sip32.example.com\r\n" in longreq
    mpart = route_replies_to(BY_NAME["mpart01"].data(), 5)
    assert b"Via: SIP/2.0/UDP 127.0.0.1:5;branch=z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-;rport\r\n" in mpart
    intmeth = route_replies_to(BY_NAME["intmeth"].data(), 5)
    assert b"Via: SIP/2.0/UDP 127.0.0.1:5;rport;branch=z9hG4bK-.!%66*_+`'~\r\n" in intmeth
    inv2543 = route_replies_to(BY_NAME["inv2543"].data(), 5)
    assert b"Via: SIP/2.0/UDP 127.0.0.1:5;rport\r\nFrom:" in inv2543


_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length",
            "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding"}


def reply_headers(raw: bytes) -> list[tuple[str, str]]:
    """A reply's header fields as (lower-case long name, unfolded value), in order. Only for
    what the service sends us; kept simple on purpose (it is not the parser under test)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    fields: list[tuple[str, str]] = []
    for line in re.sub(r"\r\n[ \t]+", " ", head).split("\r\n")[1:]:
        name, colon, value = line.partition(":")
        if colon:
            key = name.strip().lower()
            fields.append((_COMPACT.get(key, key), value.strip()))
    return fields


def first(fields: list[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in fields if key == name), None)


def status_of(raw: bytes) -> int | None:
    match = re.match(rb"SIP/2\.0 (\d{3}) ", raw)
    return int(match.group(1)) if match else None


@dataclass
class Exchange:
    replies: list[bytes] = field(default_factory=list)
    probe_answered: bool = False

    def final(self) -> bytes | None:
        """The first final response: the socket is the case's own, and what we send after it
        (ACK, BYE) is matched apart. Not by CSeq method: mismatch01's answer says INVITE."""
        return next((r for r in self.replies if (status_of(r) or 0) >= 200), None)


# How long to wait, once the service has answered the OPTIONS sent right behind a message (so the
# message has been read), for a response that may still come: one the service decides on its own
# thread at once, or a call the application answers. Bounded waits for an answer, not timing.
GRACE_S = 0.5
APPLICATION_S = 5.0
PROBE_S = 5.0
_probe_numbers = itertools.count(1)


def options_probe(port: int) -> tuple[bytes, bytes]:
    call_id = f"rfc4475-probe-{next(_probe_numbers)}".encode()
    return call_id, (
        b"OPTIONS sip:hotline@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s;rport\r\n"
        b"From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:hotline@127.0.0.1>\r\n"
        b"Call-ID: %s\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ) % (port, call_id, call_id)


def send_and_collect(sock: socket.socket, probe: socket.socket, service: tuple[str, int],
                     datagram: bytes, *, application: bool) -> Exchange:
    """Send one datagram and an OPTIONS right behind it; gather what comes back to `sock` until
    both a final response came and the OPTIONS was answered, or a short while after the OPTIONS
    was answered (no final response), or PROBE_S without an answer to the OPTIONS."""
    exchange = Exchange()
    sock.sendto(datagram, service)
    probe_id, probe_message = options_probe(probe.getsockname()[1])
    probe.sendto(probe_message, service)
    deadline = time.monotonic() + PROBE_S
    while not (exchange.final() is not None and exchange.probe_answered):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([sock, probe], [], [], left)
        for s in ready:
            data = s.recv(65535)
            if s is sock:
                exchange.replies.append(data)
            elif probe_id in data and status_of(data) == 200 and not exchange.probe_answered:
                exchange.probe_answered = True
                deadline = time.monotonic() + (APPLICATION_S if application else GRACE_S)
    return exchange


def ack_and_bye(sock: socket.socket, service: tuple[str, int], response: bytes,
                request_uri: str) -> int | None:
    """As the caller: ACK a final response to our INVITE; after a 2xx, hang up with BYE and
    return the BYE's final status (None: no answer)."""
    fields = reply_headers(response)
    me = sock.getsockname()[1]
    status = status_of(response) or 0
    cseq = (first(fields, "cseq") or "0 INVITE").split()[0]
    common = (f"From: {first(fields, 'from')}\r\nTo: {first(fields, 'to')}\r\n"
              f"Call-ID: {first(fields, 'call-id')}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n")
    if status >= 300:  # same transaction: the INVITE's Via (the response's top one), RFC 3261 §17.1.1.3
        sock.sendto((f"ACK {request_uri} SIP/2.0\r\nVia: {first(fields, 'via')}\r\n"
                     f"CSeq: {cseq} ACK\r\n" + common + "\r\n").encode(), service)
        return None
    target = re.search(r"<([^>]+)>", first(fields, "contact") or "")
    uri = target.group(1) if target else request_uri
    routes = [v for key, v in fields if key == "record-route"][::-1]
    route = "".join(f"Route: {r}\r\n" for r in routes)
    for method, number in (("ACK", cseq), ("BYE", str(int(cseq) + 1))):
        via = f"SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{method.lower()}{time.monotonic_ns()};rport"
        sock.sendto((f"{method} {uri} SIP/2.0\r\nVia: {via}\r\n{route}CSeq: {number} {method}\r\n"
                     + common + "\r\n").encode(), service)
    deadline = time.monotonic() + PROBE_S
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if ready:
            reply = sock.recv(65535)
            if (first(reply_headers(reply), "cseq") or "").endswith(" BYE") and (status_of(reply) or 0) >= 200:
                return status_of(reply)
    return None


def request_line(data: bytes) -> tuple[str, str]:
    """Method and Request-URI as well as a malformed start line allows (for our ACK)."""
    line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    method, _, rest = line.partition(" ")
    uri = rest.rsplit(" SIP/", 1)[0].strip().strip("<>").replace(" ", "")
    return method, uri or "sip:hotline@127.0.0.1"


def single(data: bytes, name: str) -> str | None:
    """A header's value when the message has exactly one, for checking what a response echoes."""
    fields = reply_headers(data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
    found = [value for key, value in fields if key == name]
    return found[0] if len(found) == 1 else None


def check_final(case: Case, data: bytes, final: bytes) -> list[str]:
    """What RFC 3261 requires of the refusal beyond its status code."""
    problems: list[str] = []
    status = status_of(final)
    fields = reply_headers(final)
    if status in (405, 501) and not first(fields, "allow"):
        problems.append(f"{case.name}: {status} without Allow (RFC 3261 §8.2.1, RFC 4475 §3.1.1.2)")
    request = reply_headers(data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
    if status == 420:
        required = sorted(v.strip() for key, value in request if key == "require" for v in value.split(","))
        listed = sorted(v.strip() for v in (first(fields, "unsupported") or "").split(","))
        if listed != required:
            problems.append(f"{case.name}: 420 with Unsupported: {listed}, not {required} (RFC 3261 §8.2.2.3)")
    if status == 415 and first(request, "content-encoding"):
        if first(fields, "accept-encoding") is None:
            problems.append(f"{case.name}: 415 without Accept-Encoding (RFC 3261 §8.2.3)")
    elif status == 415 and "application/sdp" not in (first(fields, "accept") or ""):
        problems.append(f"{case.name}: 415 without Accept: application/sdp (RFC 3261 §8.2.3)")
    call_id = single(data, "call-id")
    if call_id is not None and first(fields, "call-id") != call_id:
        problems.append(f"{case.name}: the {status} carries Call-ID {first(fields, 'call-id')!r}")
    if single(data, "to") is not None and ";tag=" not in (first(fields, "to") or "").replace(" ", ""):
        problems.append(f"{case.name}: the {status} has no To tag (RFC 3261 §8.2.6.2)")
    return problems


@dataclass
class CallTaker:
    """The application side for the test: every call the service offers is answered at once."""

    agent: SipAgent
    offered: list[InboundLeg] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            leg = await self.agent.next_call()
            self.offered.append(leg)
            try:
                await leg.answer()
            except Exception as exc:  # reported with the rest, not lost in a task
                self.problems.append(f"answering offered call {leg.call_id}: {exc!r}")


@pytest.fixture
def thread_exceptions(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    caught: list[str] = []

    def keep(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread else "?"
        caught.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")

    monkeypatch.setattr(threading, "excepthook", keep)
    yield caught


async def send_case(case: Case, service: tuple[str, int], probe: socket.socket) -> list[str]:
    """Send one message from a socket of its own, as the caller would, and say what was wrong
    with what came back (nothing: conformant)."""
    wrong: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        me = sock.getsockname()[1]
        data = case.data()
        method, uri = request_line(data)
        if case.is_response:
            datagram = data  # nothing may answer it, so where an answer would go does not matter
        else:
            datagram = route_replies_to(data, me)
            if case.name == "dblreq":  # the noise too, so that answering it would show here
                head, sep, noise = datagram.partition(b"\r\n\r\n")
                datagram = head + sep + route_replies_to(noise, me)
        # an INVITE may wait for the application (CallTaker) to answer the call it became
        exchange = await asyncio.to_thread(send_and_collect, sock, probe, service, datagram,
                                           application=method == "INVITE")
        heard = [r.split(b"\r\n", 1)[0].decode("utf-8", "replace") for r in exchange.replies]
        final = None if case.is_response else exchange.final()
        status = status_of(final) if final else None
        if case.silent:
            if heard:
                wrong.append(f"answered what the RFC says to discard: {heard}")
        elif not case.admits(status):
            got = "nothing" + (f" but {heard}" if heard else "") if status is None else str(status)
            wrong.append(f"got {got}, expected {case.expected()}")
        if final is not None:
            wrong += check_final(case, data, final)
            if method == "INVITE":
                bye = await asyncio.to_thread(ack_and_bye, sock, service, final, uri)
                if 200 <= (status or 0) < 300 and bye != 200:
                    wrong.append(f"the call it took could not be hung up (BYE got {bye or 'nothing'})")
        if case.name == "dblreq" and any(b"dblreq.0ha0isnda977644900765" in r for r in exchange.replies):
            wrong.append("the INVITE octets after the REGISTER were answered")
        if not exchange.probe_answered:
            wrong.append("the service stopped answering OPTIONS after it")
    return wrong


async def a_real_call_fails(agent: SipAgent, kamailio: Kamailio) -> str | None:
    """tests.sip_peers.answer_one_call, saying what went wrong instead of raising: a resident
    calls through the proxy, we answer, the resident hangs up. None when it all happened."""
    sipp = await run_sipp("resident_hangs_up.xml", kamailio.port, service="hotline", caller="13800000001")
    try:
        leg = await asyncio.wait_for(agent.next_call(), 10)
        await leg.answer()
        await asyncio.wait_for(leg.ended.wait(), 10)
    except Exception as exc:
        if sipp.returncode is None:
            sipp.kill()
        code, out = await sipp_result(sipp)
        return (f"{exc!r} (sipp exit {code}: {out[-600:]!r}; kamailio: "
                f"{kamailio.log_text()[-600:]!r})")
    code, out = await sipp_result(sipp)
    return None if code == 0 else f"sipp exit {code}: {out[-1500:]}"


@pytest.mark.sip
@pytest.mark.timeout(420)
async def test_the_service_answers_every_torture_message_as_the_rfc_says(
    agent: SipAgent, kamailio: Kamailio, thread_exceptions: list[str]
) -> None:
    """Every message of the table at the service's own port (each from a fresh socket, its top Via
    pointed back at it: route_replies_to), every wrong answer listed at once; then no thread
    exception, and a real call through Kamailio is still answered."""
    service = ("127.0.0.1", agent.account.sip_port)
    taker = CallTaker(agent)
    answering = asyncio.create_task(taker.run())
    problems: list[str] = []
    wrong_cases: set[str] = set()
    with structlog.testing.capture_logs() as logs, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        for case in ALL_CASES:
            offered, logged, raised = len(taker.offered), len(logs), len(thread_exceptions)
            wrong = await send_case(case, service, probe)
            taken = [leg.call_id for leg in taker.offered[offered:]]
            if taken and ACCEPTED not in case.answers:
                wrong.append(f"offered to the application as a call {taken}")
            wrong += [f"logged a traceback ({entry.get('event')})"
                      for entry in logs[logged:] if entry.get("exc_info")]
            wrong += [f"thread exception (around it): {t}" for t in thread_exceptions[raised:]]
            del thread_exceptions[raised:]  # reported here, not again below
            problems += [f"{case.name} ({case.section}): {text}" for text in wrong]
            if wrong:
                wrong_cases.add(case.name)
    answering.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await answering
    problems += taker.problems + [f"thread exception: {t}" for t in thread_exceptions]
    failed = await a_real_call_fails(agent, kamailio)  # and the service still takes real calls
    if failed:
        problems.append(f"a real call through the proxy after the torture messages failed: {failed}")
    assert not problems, (f"{len(wrong_cases)} of {len(ALL_CASES)} messages answered wrongly:\n"
                          + "\n".join(problems))
