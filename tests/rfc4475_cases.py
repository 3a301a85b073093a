"""RFC 4475 ("SIP Torture Test Messages") as a table: each message, and what a conformant user
agent server answers to it.

The messages are in tests/fixtures/rfc4475/NAME.dat, byte for byte as the RFC's Appendix B
carries them: CRLF line ends, its "<allOneLine>" lines joined, its "<hex>" octets raw (the NUL,
BEL and DEL in intmeth's To, the UTF-8 in intmeth and unreason, mpart01's binary body). Each
case names its section, quotes the RFC's own words on what to do, and says which answers are
conformant. The first answer is the one we aim for; any others are what the RFC also allows
(it often lets a liberal element accept what a strict one refuses), and `note` says why.

We are a UAS (a user agent, not a proxy and not a registrar). Many messages are addressed to
example.com: the service still answers them, being the UAS they reached; nobody checks the
Request-URI's host. The RFC words many expectations for "an element"; where a UAS's answer differs
from a proxy's or a registrar's, the note says so.

Answers:
- a status code: the first final response must carry it (or another of the case's answers).
- ACCEPTED: an INVITE a UAS takes. Our service answers 100/180/200 (the test answers the call it
  is offered), or 488 when the SDP offer has no audio it can use; so any final response below 400,
  or 488, is conformant. A 488 is a refusal for the service's own reasons, not a parse failure.
- DROP: nothing goes back: a response nobody asked for, or one the RFC says to discard.
- PARSE_OK: a response that must parse without error; a UAS then discards it (no transaction of
  ours matches), so nothing goes back either.

`syntax` is the parser's side (telephony/sip_message.py): "valid" must parse, "invalid" must be
refused (parse() raises SipParseError, or validate_request() returns a refusal) with one of the
case's status codes, "either" may go both ways (a liberal parser may accept it) — but a refusal
must still carry one of the case's codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "rfc4475"
# Messages of our own for what a UAS must do that RFC 4475 has no message for (EXTRA_CASES).
UAS_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sip-uas"

ACCEPTED = "accepted"
DROP = "drop"
PARSE_OK = "parse-ok"

Answer = int | str


@dataclass(frozen=True)
class Case:
    name: str
    section: str
    title: str
    answers: tuple[Answer, ...]
    syntax: str  # "valid" | "invalid" | "either"
    rfc: str  # RFC 4475's words on what a receiver does (RFC 3261's, for EXTRA_CASES)
    note: str = ""
    directory: Path = FIXTURES

    @property
    def file(self) -> Path:
        return self.directory / f"{self.name}.dat"

    def data(self) -> bytes:
        return self.file.read_bytes()

    @property
    def is_response(self) -> bool:
        return self.data().startswith(b"SIP/")

    @property
    def codes(self) -> frozenset[int]:
        return frozenset(a for a in self.answers if isinstance(a, int))

    @property
    def silent(self) -> bool:
        """Nothing may go back (a response, or a message the RFC says to discard)."""
        return DROP in self.answers or PARSE_OK in self.answers

    def admits(self, status: int | None) -> bool:
        """Whether a final response with `status` (None: no response at all) is conformant."""
        if status is None:
            return self.silent
        if status in self.codes:
            return True
        return ACCEPTED in self.answers and (200 <= status < 400 or status == 488)

    def expected(self) -> str:
        """The answers, for a report: '400 or accepted (< 400 or 488)'."""
        words = {ACCEPTED: "accepted (final < 400, or 488)", DROP: "no response",
                 PARSE_OK: "no response (parse only)"}
        return " or ".join(words.get(a, str(a)) if isinstance(a, str) else str(a) for a in self.answers)


_REGISTER_AT_AN_ENDPOINT = (
    "A REGISTER reached a user agent that is no registrar: RFC 4475 §3.3.7 has 'Endpoints "
    "choosing not to act as registrars will simply reject the request. A 405 Method Not Allowed "
    "is appropriate', with the Allow RFC 3261 §8.2.1 requires.")

CASES: tuple[Case, ...] = (
    # --- §3.1.1 valid messages: every one parses, and gets a proper response ------------------
    Case("wsinv", "3.1.1.1", "A Short Tortuous INVITE", (481,), "valid",
         "All elements should treat this as a well-formed request.",
         "Folding, LWS around colons, compact and long names mixed, an empty Subject, leading "
         "zeros in Max-Forwards (0068) and CSeq (0009). Its To carries a tag (1918181833n) of no "
         "dialog we have: RFC 3261 §8.2.2.2/§12.2.2 — a UAS that does not recreate the dialog "
         "MUST answer 481 (issue 8 asks for 481). Without that tag its PCMU offer would be "
         "taken."),
    Case("intmeth", "3.1.1.2", "Wide Range of Valid Characters", (501, 405), "valid",
         "Endpoints will generate a 501 listing the methods they understand in an Allow header "
         "field.",
         "An unknown method of token characters; NUL/BEL/DEL quoted in To, UTF-8 in a From "
         "parameter and an extension header. Issue 8 accepts 405 with Allow as well; never "
         "silence."),
    Case("esc01", "3.1.1.3", "Valid Use of the % Escaping Mechanism", (ACCEPTED,), "valid",
         "A parser must accept this as a well-formed message.",
         "Offers PCMU (and a video stream, to be refused with port 0): the call is taken."),
    Case("escnull", "3.1.1.4", "Escaped Nulls in URIs", (405,), "valid",
         "The message is well formed - parsers must accept this message.",
         _REGISTER_AT_AN_ENDPOINT),
    Case("esc02", "3.1.1.5", "Use of % When It Is Not an Escape", (501, 405), "valid",
         "An endpoint would reject this message with a 501.",
         "RE%47IST%45R is an unknown method, not REGISTER; C%6Fntact is an unknown header, not "
         "Contact. Issue 8 accepts 405 with Allow as well."),
    Case("lwsdisp", "3.1.1.6", "Message with No LWS between Display Name and <", (200,), "valid",
         "Elements should accept this request as well formed.", "An OPTIONS: 200."),
    Case("longreq", "3.1.1.7", "Long Values in Header Fields", (ACCEPTED,), "valid",
         "This well-formed request contains header fields with many values and values that are "
         "very long.",
         "34 Via values (in every case of 'Via' and 'v'); offers PCMU, so the call is taken."),
    Case("dblreq", "3.1.1.8", "Extra Trailing Octets in a UDP Datagram", (405,), "valid",
         "A SIP element receiving this datagram would handle the REGISTER request normally and "
         "ignore the extra bits that look like an INVITE request.",
         _REGISTER_AT_AN_ENDPOINT + " The INVITE after Content-Length: 0 is noise: it must be "
         "neither answered nor offered as a call."),
    Case("semiuri", "3.1.1.9", "Semicolon-Separated Parameters in URI User Part", (200,), "valid",
         "Receiving elements will accept this as a well-formed message.", "An OPTIONS: 200."),
    Case("transports", "3.1.1.10", "Varied and Unknown Transport Types", (200,), "valid",
         "Parsers must accept this message as well formed.", "An OPTIONS: 200."),
    Case("mpart01", "3.1.1.11", "Multipart MIME Message", (405, 501), "valid",
         "Parsers must accept this message as well formed, even if the application above the "
         "parser does not support multipart/signed.",
         "A MESSAGE (RFC 3428) with a binary body holding NULs: framed by Content-Length. The "
         "service takes no instant messages: 405 with Allow (501 from a UA that does not know "
         "MESSAGE at all)."),
    Case("unreason", "3.1.1.12", "Unusual Reason Phrase", (PARSE_OK,), "valid",
         "This response is well formed. A parser must accept this message.",
         "A 200 to no request of ours: parsed, then discarded."),
    Case("noreason", "3.1.1.13", "Empty Reason Phrase", (PARSE_OK,), "valid",
         "This well-formed response contains no reason phrase. A parser must accept this "
         "message.", "A 100 to no request of ours: parsed, then discarded."),

    # --- §3.1.2 invalid messages: a 400 (or the response the RFC names), never silence ---------
    Case("badinv01", "3.1.2.1", "Extraneous Header Field Separators", (400,), "invalid",
         "An element receiving this request should respond with a 400 Bad Request error."),
    Case("clerr", "3.1.2.2", "Content Length Larger Than Message", (400,), "invalid",
         "When sent over UDP (as this message ostensibly was), the receiving element should "
         "respond with a 400 Bad Request error."),
    Case("ncl", "3.1.2.3", "Negative Content-Length", (400,), "invalid",
         "An element receiving this message should respond with an error.",
         "Content-Length: -999. The value must never be used as a count or an index."),
    Case("scalar02", "3.1.2.4", "Request Scalar Fields with Overlarge Values", (400,), "invalid",
         "An element receiving this request should respond with a 400 Bad Request due to the "
         "CSeq error.",
         "CSeq 36893488147419103232 (> 2**32-1), Max-Forwards 300, huge Expires. The 400 comes "
         "before the REGISTER's 405: the CSeq cannot even be echoed as a number."),
    Case("scalarlg", "3.1.2.5", "Response Scalar Fields with Overlarge Values", (DROP,), "either",
         "An element receiving this response will simply discard it.",
         "The parser may refuse it (SipParseError) or read it; either way nothing goes back."),
    Case("quotbal", "3.1.2.6", "Unterminated Quoted String in Display Name", (400, ACCEPTED),
         "either",
         "An element receiving this request should return a 400 Bad Request error.",
         "The RFC lets an element 'infer a terminating quote and accept the message'."),
    Case("ltgtruri", "3.1.2.7", "<> Enclosing Request-URI", (400, ACCEPTED), "either",
         "It is reasonable always to reject a request with this error with a 400 Bad Request.",
         "'Elements attempting to be liberal with what they accept may choose to ignore the "
         "brackets.'"),
    Case("lwsruri", "3.1.2.8", "Malformed SIP Request-URI (embedded LWS)", (400, 481), "either",
         "An element receiving this request should respond with a 400 Bad Request.",
         "An element may ignore the LWS; if it does, the To tag (3xfe-9921883-z9f) names no "
         "dialog of ours, so 481 (RFC 3261 §12.2.2)."),
    Case("lwsstart", "3.1.2.9", "Multiple SP Separating Request-Line Elements", (400, ACCEPTED),
         "either", "It is acceptable to reject this request as malformed.",
         "'An element that is liberal in what it accepts may ignore these extra SP characters.'"),
    Case("trws", "3.1.2.10", "SP Characters at End of Request-Line", (400, 200), "either",
         "It is acceptable to reject this request as malformed.",
         "A liberal element may ignore the trailing SP and answer the OPTIONS 200."),
    Case("escruri", "3.1.2.11", "Escaped Headers in SIP Request-URI", (400, ACCEPTED), "either",
         "It is acceptable for an element to reject this request with a 400 Bad Request.",
         "'An element could choose to be liberal in what it accepts and ignore the escaped "
         "headers' (never acting on the Route it names)."),
    Case("baddate", "3.1.2.12", "Invalid Time Zone in Date Header Field", (ACCEPTED, 400),
         "either",
         "It is acceptable to reject this request as malformed (though an element shouldn't do "
         "that unless the contents of the Date header field were actually important to its "
         "processing).",
         "We never use Date, so the call is taken; 400 is allowed."),
    Case("regbadct", "3.1.2.13", "Failure to Enclose name-addr URI in <>", (400, 405), "either",
         "It is reasonable for an element receiving this request to respond with a 400 Bad "
         "Request.",
         "A liberal element may infer the <>, and then this is a REGISTER at an endpoint: 405 "
         "(RFC 4475 §3.3.7)."),
    Case("badaspec", "3.1.2.14", "Spaces within addr-spec", (400, 200), "either",
         "It is reasonable to reject this request with a 400 Bad Request response.",
         "'Elements attempting to be liberal may ignore the spaces' (then the OPTIONS gets 200)."),
    Case("baddn", "3.1.2.15", "Non-token Characters in Display Name", (400, 200), "either",
         "It is reasonable always to reject this kind of error with a 400 Bad Request response.",
         "'An element may attempt to be liberal in what it receives and infer the missing "
         "quotes' (then the OPTIONS gets 200)."),
    Case("badvers", "3.1.2.16", "Unknown Protocol Version", (505,), "invalid",
         "The element should respond to the request with a 505 Version Not Supported error."),
    Case("mismatch01", "3.1.2.17", "Start Line and CSeq Method Mismatch", (400,), "invalid",
         "Any element receiving this request will respond with a 400 Bad Request."),
    Case("mismatch02", "3.1.2.18", "Unknown Method with CSeq Method Mismatch", (501, 400),
         "either",
         "Any element receiving this response should respond with a 501 Not Implemented. A 400 "
         "Bad Request is also acceptable.",
         "The parser may read it (the UA then answers the unknown method 501) or refuse the "
         "CSeq mismatch with 400."),
    Case("bigcode", "3.1.2.19", "Overlarge Response Code", (DROP,), "either",
         "An element receiving this response should simply drop it.",
         "Status 4294967301: the parser may refuse it; it must not wrap it to a small number."),

    # --- §3.2 transaction layer ----------------------------------------------------------------
    Case("badbranch", "3.2.1", "Missing Transaction Identifier", (400, 200), "either",
         "An element receiving this request could reject the request with a 400 Response "
         "(preferably statelessly ...), or it could fall back to the RFC 2543-style transaction "
         "identifier.", "branch=z9hG4bK and nothing after the cookie; an OPTIONS otherwise."),

    # --- §3.3 application layer semantics (those that apply to a UAS) -------------------------
    Case("insuf", "3.3.1", "Missing Required Header Fields", (400,), "invalid",
         "An element receiving this message must not break because of the missing information. "
         "Ideally, it will respond with a 400 Bad Request error.",
         "No Call-ID, From or To; it has a Via and a CSeq, which is all a response needs to be "
         "routed and matched, so it can be answered."),
    Case("unkscm", "3.3.2", "Request-URI with Unknown Scheme", (416,), "valid",
         "An element receiving this request will reject it with a 416 Unsupported URI Scheme "
         "response.", "The To is a plain sip: URI; it is not where the request goes."),
    Case("novelsc", "3.3.3", "Request-URI with Known but Atypical Scheme", (416,), "valid",
         "If an element will never accept this scheme as meaningful in a Request-URI, it is "
         "appropriate to treat it as unknown and return a 416 Unsupported URI Scheme response.",
         "A soap.beep: URI never reaches a hotline."),
    Case("unksm2", "3.3.4", "Unknown URI Schemes in Header Fields", (405,), "valid",
         "The message is syntactically valid. Parsers must not fail when receiving this "
         "message.",
         "isbn:/http:/name: URIs in To/From/Contact. 'A registrar would reject this request with "
         "a 400' — we are no registrar. " + _REGISTER_AT_AN_ENDPOINT),
    Case("bext01", "3.3.5", "Unknown Extensions in Require and Proxy-Require", (420,), "valid",
         "Any element receiving this request will respond with a 420 Bad Extension response, "
         "containing an Unsupported header field listing these features from either the Require "
         "or Proxy-Require header field, depending on the role in which the element is "
         "responding.",
         "As a UAS: Unsupported lists nothingSupportsThis and nothingSupportsThisEither (RFC "
         "3261 §8.2.2.3); Proxy-Require is a proxy's business."),
    Case("invut", "3.3.6", "Unknown Content-Type", (415,), "valid",
         "An endpoint receiving this request would reject it with a 415 Unsupported Media Type "
         "error.",
         "With an Accept listing what we read (application/sdp), RFC 3261 §8.2.3; not 488, which "
         "is about an SDP offer we read and cannot take."),
    Case("regaut01", "3.3.7", "Unknown Authorization Scheme", (405,), "valid",
         "Endpoints choosing not to act as registrars will simply reject the request. A 405 "
         "Method Not Allowed is appropriate."),
    Case("multi01", "3.3.8", "Multiple Values in Single Value Required Fields", (400,), "invalid",
         "An element receiving this request would respond with a 400 Bad Request error.",
         "Two each of Call-ID, To, From, CSeq and Max-Forwards."),
    Case("mcl01", "3.3.9", "Multiple Content-Length Values", (400,), "invalid",
         "An element receiving this message should respond with an error."),
    Case("bcast", "3.3.10", "200 OK Response with Broadcast Via Header Field Value", (PARSE_OK,),
         "valid",
         "The message is well formed; parsers must not fail when receiving it. An endpoint "
         "receiving this message should simply discard it.",
         "Nothing may be sent to 255.255.255.255 (its second Via)."),
    Case("zeromf", "3.3.11", "Max-Forwards of Zero", (200,), "valid",
         "An endpoint should process the request as if the Max-Forwards field value were still "
         "positive.", "483 is a proxy's answer, not a UAS's."),
    Case("cparam01", "3.3.12", "REGISTER with a Contact Header Parameter", (405,), "valid",
         "This REGISTER should succeed.",
         "At a registrar; 'unknownparam' is a contact-param. " + _REGISTER_AT_AN_ENDPOINT),
    Case("cparam02", "3.3.13", "REGISTER with a url-parameter", (405,), "valid",
         "The register should succeed.", "At a registrar. " + _REGISTER_AT_AN_ENDPOINT),
    Case("regescrt", "3.3.14", "REGISTER with a URL Escaped Header", (405,), "valid",
         "The register should succeed.",
         "At a registrar (compact 'M:' Contact, 'L:0'). " + _REGISTER_AT_AN_ENDPOINT),
    Case("sdp01", "3.3.15", "Unacceptable Accept Offering", (406, 400), "valid",
         "The recipient of this request could respond with a 406 Not Acceptable, with a "
         "Warning/399 ... It is also appropriate to respond with a 400 Bad Request, since all "
         "SIP UAs supporting INVITE are required to support application/sdp.",
         "Accept: text/nobodyKnowsThis leaves no form for our SDP answer."),

    # --- §3.4 backward compatibility ----------------------------------------------------------
    Case("inv2543", "3.4.1", "INVITE with RFC 2543 Syntax", (ACCEPTED, 400), "valid",
         "This is a legal message per RFC 2543 (and several bis versions) that should be accepted "
         "by RFC 3261 elements that want to maintain backwards compatibility.",
         "No branch, no From tag, no Max-Forwards, no Content-Length (the body runs to the end "
         "of the datagram, RFC 3261 §18.3). Offers PCMU: we take it; an element that keeps no "
         "RFC 2543 compatibility may answer 400."),
)

# What a UAS must do that RFC 4475 has no message for, from issue 8's list, in messages of our own
# (tests/fixtures/sip-uas/): each as a real phone or trunk would send it, one feature at a time.
EXTRA_CASES: tuple[Case, ...] = (
    Case("cenc01", "RFC 3261 §8.2.3", "Unknown Content-Encoding", (415,), "valid",
         "If the request contained content encodings not understood by the UAS, the response MUST "
         "contain an Accept-Encoding header field listing the encodings understood by the UAS.",
         "An SDP offer under Content-Encoding: x-nobody-knows-this: 415, with Accept-Encoding.",
         UAS_FIXTURES),
    Case("require01", "RFC 3261 §8.2.2.3", "Require of an extension we do not support", (420,),
         "valid",
         "If a UAS does not understand an option-tag listed in a Require header field, it MUST "
         "respond by generating a response with status code 420 (Bad Extension). The UAS MUST add "
         "an Unsupported header field.",
         "Require: precondition (RFC 3312 QoS preconditions), which the service does not do.",
         UAS_FIXTURES),
    Case("compact01", "RFC 3261 §7.3.3, §25", "Compact names, an empty Supported, a tel: From",
         (ACCEPTED,), "valid",
         "Supported = ( \"Supported\" / \"k\" ) HCOLON [option-tag *(COMMA option-tag)]",
         "The INVITE a stock softphone sends (issue 8: baresip without its uuid module sends an "
         "empty Supported, today answered 400 'unparsable SIP (IndexError)'); a trunk's tel: URI "
         "as caller. PCMU offered: the call is taken.", UAS_FIXTURES),
    Case("mpsdp01", "RFC 3261 §7.4, RFC 5621", "SDP offer inside multipart/mixed", (ACCEPTED, 415),
         "valid",
         "A UAS that does not understand a body type MUST respond 415 (RFC 3261 §8.2.3); RFC 5621 "
         "describes reading the SDP part of a multipart body.",
         "Issue 8: 'a multipart body carrying SDP is read, or refused with 415'.", UAS_FIXTURES),
    Case("lfsdp01", "RFC 4566 §5", "SDP with bare LF line ends", (ACCEPTED,), "valid",
         "The sequence CRLF (0x0d0a) is used to end a record, although parsers SHOULD be tolerant "
         "and also accept records terminated with a single newline character.",
         "SIP headers end in CRLF; only the SDP body uses LF. PCMU offered: the call is taken.",
         UAS_FIXTURES),
)

ALL_CASES = CASES + EXTRA_CASES
BY_NAME = {case.name: case for case in ALL_CASES}
