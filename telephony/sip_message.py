"""SIP messages as RFC 3261 writes them (§7, §25), parsed and built by us.

pyVoIP's parser broke on legal SIP that real phones send (an empty `Supported:` from baresip,
compact header names, folded lines, several values in one header) and raised whatever it hit
(IndexError, KeyError) on the receive thread. This parser takes every form the grammar allows
and answers what it cannot take with the status a user agent owes (400, 505 …) in a
`SipParseError`, so the edge always knows what to say back.

Two layers, as a UAS needs them:
- `parse`: the syntax — start line, header fields (folded, compact, any case, LWS around the
  colon), the body cut at Content-Length (extra octets of a datagram are dropped, §18.3).
- `validate_request`: what a well-formed request must also be before a UAS acts on it — the
  mandatory headers, one From/To/Call-ID/CSeq, CSeq's method matching the request's, scalars in
  range, addresses that parse (RFC 4475 §3.1.2 and §3.3 list the ways requests get this wrong).

Header values are kept as text exactly as received (unfolded); `headers_all` splits the
comma-separated lists only for the headers the grammar defines as lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# RFC 3261 §7.3.3 and the later RFCs' compact forms.
COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via",
    "o": "Event", "r": "Refer-To", "u": "Allow-Events", "x": "Session-Expires", "b": "Referred-By",
    "a": "Accept-Contact", "j": "Reject-Contact", "d": "Request-Disposition", "y": "Identity",
    "n": "Identity-Info",
}
# How we spell the headers we write or read by name; any other keeps the sender's spelling.
_CANONICAL = {name.lower(): name for name in (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
    "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Expires",
    "From", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Organization", "Priority",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Record-Route", "Reply-To",
    "Require", "Retry-After", "Route", "Server", "Subject", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate", "Event", "Refer-To",
    "Allow-Events", "Session-Expires", "Min-SE", "RSeq", "RAck", "Info-Package", "Recv-Info",
    "P-Asserted-Identity", "Privacy", "Path", "Reason", *COMPACT.values(),
)}
# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1): these, and only these,
# may be split at top-level commas or appear several times.
LIST_HEADERS = frozenset(h.lower() for h in (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Call-Info", "Contact",
    "Content-Encoding", "Content-Language", "Error-Info", "In-Reply-To", "Proxy-Require",
    "Record-Route", "Require", "Route", "Supported", "Unsupported", "Via", "Warning", "Allow-Events",
    "Path", "Recv-Info", "P-Asserted-Identity", "Reason", "Privacy",
))
# Headers a request may carry once only (more than one is a 400, RFC 4475 §3.3.7).
SINGLE_HEADERS = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type")
REQUIRED_HEADERS = ("Via", "From", "To", "Call-ID", "CSeq")

_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_TOKEN_RE = re.compile(rf"^{_TOKEN}$")
_VERSION_RE = re.compile(r"^SIP/(\d+)\.(\d+)$", re.IGNORECASE)
_STATUS_LINE = re.compile(r"^SIP/(\d+)\.(\d+) (\d+) ?(.*)$", re.IGNORECASE)
_HEADER_LINE = re.compile(rf"^({_TOKEN})[ \t]*:[ \t]*(.*)$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+\-.]*):")
_CSEQ = re.compile(rf"^(\d+)\s+({_TOKEN})$")
_SENT_BY = re.compile(
    rf"^SIP\s*/\s*(\d+\.\d+)\s*/\s*({_TOKEN})\s+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:\s*:\s*(\d+))?\s*(.*)$",
    re.IGNORECASE | re.DOTALL)
MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5
MAX_EXPIRES = 2**32 - 1  # RFC 3261 §20.19: delta-seconds up to 2**32 - 1
KNOWN_SCHEMES = ("sip", "sips", "tel")


class SipParseError(ValueError):
    """A message we cannot take. `status` is the response a UAS owes for it when it is a request
    (responses are dropped); `reason` says why in a few words, for Warning and the log."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass
class SipMessage:
    method: str | None = None  # requests
    uri: str | None = None
    status: int | None = None  # responses
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)  # (name, value) in order
    body: bytes = b""
    raw: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def header(self, name: str) -> str | None:
        """The first value of a header (the whole field for a non-list header), any spelling;
        "" for a header that is there with no value (`Supported:`), None for one that is not."""
        values = self.headers_all(name)
        if values:
            return values[0]
        return "" if self.count(name) else None

    def headers_all(self, name: str) -> list[str]:
        """Every value of a header in order: repeated fields, and list headers split at their
        top-level commas (never inside <…> or quotes)."""
        key = canonical_name(name).lower()
        out: list[str] = []
        for header, value in self.headers:
            if header.lower() == key:
                out += split_list(value) if key in LIST_HEADERS else [value]
        return out

    def count(self, name: str) -> int:
        key = canonical_name(name).lower()
        return sum(1 for header, _ in self.headers if header.lower() == key)

    @property
    def call_id(self) -> str:
        return self.header("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method) of CSeq; (0, "") when absent or unreadable."""
        match = _CSEQ.match((self.header("CSeq") or "").strip())
        return (int(match.group(1)), match.group(2).upper()) if match else (0, "")

    @property
    def from_tag(self) -> str | None:
        return _tag_of(self.header("From"))

    @property
    def to_tag(self) -> str | None:
        return _tag_of(self.header("To"))

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters ("" when there is none)."""
        return (self.header("Content-Type") or "").split(";", 1)[0].strip().lower()


def canonical_name(name: str) -> str:
    name = name.strip()
    lower = name.lower()
    if lower in COMPACT:
        return COMPACT[lower]
    return _CANONICAL.get(lower, name)


def split_list(value: str) -> list[str]:
    """A comma-separated header value split at top-level commas; empty elements dropped (the
    grammar's `*(COMMA …)` allows none, and an empty `Supported:` is legal: no values)."""
    parts, depth, quoted, escaped, start = [], 0, False, False, 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and ch == ",":
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return [p for p in (p.strip() for p in parts) if p]


def _tag_of(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return NameAddr.parse(value).params.get("tag")
    except SipParseError:
        return None


def parse(data: bytes) -> SipMessage:
    """One SIP message from a datagram. SipParseError when it cannot be read as one."""
    data = data.lstrip(b"\r\n")  # §7.5: CRLFs before the start line are ignored
    end, sep_len = data.find(b"\r\n\r\n"), 4
    bare = data.find(b"\n\n")
    if bare != -1 and (end == -1 or bare < end):
        end, sep_len = bare, 2
    if end == -1:
        raise SipParseError("the header section does not end (no empty line): truncated?")
    head = data[:end].decode("utf-8", "surrogateescape")
    rest = data[end + sep_len:]
    lines = re.split(r"\r?\n", head)
    first = lines[0]
    message = _start_line(first)
    message.raw = data
    for line in _unfold(lines[1:]):
        match = _HEADER_LINE.match(line)
        if match is None:
            raise SipParseError(f"not a header field: {line[:40]!r}")
        message.headers.append((canonical_name(match.group(1)), match.group(2).strip(" \t")))
    message.body = _body(message, rest)
    return message


def _start_line(line: str) -> SipMessage:
    if line[:4].upper() == "SIP/":
        match = _STATUS_LINE.match(line)
        # (a response is never answered, whatever the status says: the edge drops it)
        if match is None or len(match.group(3)) != 3:
            raise SipParseError(f"bad status line {line[:40]!r}")
        code = int(match.group(3))
        if not 100 <= code <= 699:
            raise SipParseError(f"status code {code} out of range")
        if (match.group(1), match.group(2)) != ("2", "0"):
            raise SipParseError("not SIP/2.0", 505)
        return SipMessage(status=code, reason=match.group(4))
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):  # single SP between elements, none trailing (§25.1)
        raise SipParseError("the request line is not 'Method SP Request-URI SP SIP-Version'")
    method, uri, version = parts
    if not _TOKEN_RE.match(method):
        raise SipParseError(f"method {method[:20]!r} is not a token")
    version_match = _VERSION_RE.match(version)
    if version_match is None:
        raise SipParseError(f"bad SIP version {version[:20]!r}")
    if version_match.groups() != ("2", "0"):
        raise SipParseError(f"SIP version {version} is not supported", 505)
    if "<" in uri or ">" in uri or _SCHEME.match(uri) is None:
        raise SipParseError("the Request-URI is not an absolute URI")
    return SipMessage(method=method, uri=uri)


def _unfold(lines: list[str]) -> list[str]:
    """Join folded header lines (a line starting with SP or HT continues the previous one)."""
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not out:
                raise SipParseError("the first header line is a continuation")
            out[-1] = out[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            out.append(line)
    return out


def _body(message: SipMessage, rest: bytes) -> bytes:
    lengths = [v for name, v in message.headers if name == "Content-Length"]
    if not lengths:
        return rest  # over UDP the body is the rest of the datagram (§18.3)
    text = lengths[0].strip()
    if not text.isdigit():
        raise SipParseError(f"Content-Length {text[:20]!r} is not a number")
    length = int(text)
    if length > len(rest):
        raise SipParseError(f"Content-Length {length} is larger than the body ({len(rest)} octets)")
    return rest[:length]  # octets after it are not part of this message (§18.3)


# --- addresses ------------------------------------------------------------------------------

@dataclass
class NameAddr:
    """A From/To/Contact/Route value: display name, URI, header parameters."""

    display: str
    uri: str
    params: dict[str, str]
    bracketed: bool = True

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        text = value.strip()
        display = ""
        if text.startswith('"'):
            end = _closing_quote(text)
            display = text[1:end]
            text = text[end + 1:].lstrip()
            if not text.startswith("<"):
                raise SipParseError("a quoted display name must be followed by <URI>")
        elif "<" in text:
            display, _, rest = text.partition("<")
            display = display.strip()
            if display and not all(_TOKEN_RE.match(word) for word in display.split()):
                raise SipParseError("a display name with non-token characters must be quoted")
            text = "<" + rest
        if text.startswith("<"):
            end = text.find(">")
            if end == -1:
                raise SipParseError("unterminated <URI>")
            uri = text[1:end]
            if uri != uri.strip() or any(c in uri for c in " \t"):
                raise SipParseError("white space inside <URI>")
            params_text, bracketed = text[end + 1:], True
        else:
            # addr-spec: the URI ends at the first ';' (§20.10), so header params follow it
            uri, sep, params_text = text.partition(";")
            uri, params_text = uri.strip(), sep + params_text
            bracketed = False
            if any(c in uri for c in " \t,?"):
                raise SipParseError("an address with spaces, commas or '?' must be in <…>")
        if _SCHEME.match(uri) is None and uri != "*":
            raise SipParseError(f"not a URI: {uri[:40]!r}")
        return cls(display, uri, _params(params_text), bracketed)

    def user(self) -> str:
        """The user part of a sip:/sips: URI, or the number of a tel: URI ("" when none)."""
        scheme, _, rest = self.uri.partition(":")
        scheme = scheme.lower()
        if scheme == "tel":
            return rest.split(";", 1)[0]
        if scheme in ("sip", "sips") and "@" in rest:
            return rest.split("@", 1)[0].split(";", 1)[0].split(":", 1)[0]
        return ""

    def __str__(self) -> str:
        shown = f'"{self.display}" ' if self.display else ""
        params = "".join(f";{k}={v}" if v else f";{k}" for k, v in self.params.items())
        return f"{shown}<{self.uri}>{params}"


def _closing_quote(text: str) -> int:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    raise SipParseError("unterminated quoted string")


def _params(text: str) -> dict[str, str]:
    """';name=value;flag' header parameters; an empty one (';;') is a syntax error."""
    params: dict[str, str] = {}
    text = text.strip()
    if not text:
        return params
    if not text.startswith(";"):
        raise SipParseError(f"unexpected text after the address: {text[:30]!r}")
    for item in text[1:].split(";"):
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not _TOKEN_RE.match(name):
            raise SipParseError(f"bad header parameter {item[:30]!r}")
        params[name.lower()] = value
    return params


@dataclass(frozen=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str]

    @classmethod
    def parse(cls, value: str) -> Via:
        match = _SENT_BY.match(value.strip())
        if match is None:
            raise SipParseError(f"bad Via {value[:40]!r}")
        rest = match.group(5).strip()
        params: dict[str, str] = {}
        if rest:
            if not rest.startswith(";"):
                raise SipParseError(f"bad Via parameters {rest[:30]!r}")
            for item in rest[1:].split(";"):
                name, _, val = item.partition("=")
                if not name.strip():
                    raise SipParseError("empty Via parameter")
                params[name.strip().lower()] = val.strip()
        port = int(match.group(4)) if match.group(4) else None
        if port is not None and not 0 < port < 65536:
            raise SipParseError(f"Via port {port} out of range")
        return cls(match.group(2).upper(), match.group(3), port, params)

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")

    def sent_by(self) -> str:
        return f"{self.host}:{self.port or 5060}"


def response_address(request: SipMessage, source: tuple[str, int]) -> tuple[str, int]:
    """Where a response to `request` goes over UDP (RFC 3261 §18.2.2, RFC 3581): the source
    address when the top Via's host is not it (received=), the source port when the Via asks
    for rport, else the Via's sent-by."""
    try:
        via = Via.parse(request.headers_all("Via")[0])
    except (IndexError, SipParseError):
        return source
    host = via.params.get("received") or (source[0] if via.host.strip("[]") != source[0] else via.host)
    if "rport" in via.params:
        rport = via.params["rport"]
        return host, int(rport) if rport.isdigit() else source[1]
    return host, via.port or 5060


def validate_request(message: SipMessage) -> tuple[int, str] | None:
    """(status, why) when a parsed request must not be acted on; None when it is fine."""
    for name in REQUIRED_HEADERS:
        if not message.count(name):
            return 400, f"no {name} header"
    for name in SINGLE_HEADERS:
        if message.count(name) > 1 or (name in ("From", "To") and len(split_list(message.header(name) or "")) > 1):
            return 400, f"more than one {name}"
    if message.method == "INVITE" and not message.count("Contact"):
        return 400, "no Contact header (RFC 3261 §8.1.1.8)"
    cseq = (message.header("CSeq") or "").strip()
    match = _CSEQ.match(cseq)
    if match is None:
        return 400, "bad CSeq"
    if int(match.group(1)) > MAX_CSEQ:
        return 400, "CSeq number out of range"
    assert message.method is not None
    if match.group(2) != message.method:
        return 400, "CSeq method does not match the request method"
    max_forwards = message.header("Max-Forwards")
    if max_forwards is not None and (not max_forwards.strip().isdigit() or int(max_forwards) > 255):
        return 400, "bad Max-Forwards"
    expires = message.header("Expires")
    if expires is not None and (not expires.strip().isdigit() or int(expires) > MAX_EXPIRES):
        return 400, "bad Expires"
    if not message.call_id.strip() or any(c in message.call_id for c in " \t"):
        return 400, "bad Call-ID"
    try:
        for via in message.headers_all("Via"):
            Via.parse(via)
        for name in ("From", "To"):
            NameAddr.parse(message.header(name) or "")
        for contact in message.headers_all("Contact"):
            address = NameAddr.parse(contact)
            if not address.bracketed and "?" in address.uri:
                return 400, "a Contact with headers must be in <…>"
            if not address.params.get("expires", "0").isdigit() or int(address.params.get("expires", "0")) > MAX_EXPIRES:
                return 400, "bad Contact expires"
    except SipParseError as exc:
        return 400, exc.reason
    date = message.header("Date")
    if date is not None and not date.strip().endswith("GMT"):
        return 400, "Date must be in GMT"  # RFC 3261 §20.17
    scheme = _SCHEME.match(message.uri or "")
    if scheme is None or scheme.group(1).lower() not in KNOWN_SCHEMES:
        return 416, "unsupported URI scheme"
    if scheme.group(1).lower() in ("sip", "sips") and "?" in (message.uri or "").rsplit("@", 1)[-1]:
        return 400, "a Request-URI carries no headers (RFC 3261 §19.1.5)"
    return None


# --- building -------------------------------------------------------------------------------

def serialize(start_line: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """A message on the wire: CRLF line ends and a Content-Length that matches the body."""
    lines = [start_line, *(f"{name}: {value}" for name, value in headers if name != "Content-Length")]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


REASONS = {
    100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 400: "Bad Request",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 481: "Call/Transaction Does Not Exist",
    483: "Too Many Hops", 486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 505: "Version Not Supported",
}


def build_response(request: SipMessage, status: int, *, reason: str | None = None, to_tag: str | None = None,
                   extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                   record_route: bool = False) -> bytes:
    """A response to `request` (§8.2.6): its Vias, From, Call-ID and CSeq copied; To with our
    tag (added when the request's To has none and the status is not 100); Record-Route copied
    for a dialog-creating response (§12.1.1)."""
    headers: list[tuple[str, str]] = [("Via", v) for v in request.headers_all("Via")]
    if record_route:
        headers += [("Record-Route", v) for v in request.headers_all("Record-Route")]
    headers.append(("From", request.header("From") or ""))
    to = request.header("To") or ""
    if status != 100 and to_tag and request.to_tag is None:
        to = f"{to};tag={to_tag}"
    headers += [("To", to), ("Call-ID", request.call_id), ("CSeq", request.header("CSeq") or "")]
    if request.header("Timestamp") and status == 100:
        headers.append(("Timestamp", request.header("Timestamp") or ""))
    headers += extra or []
    return serialize(f"SIP/2.0 {status} {reason or REASONS.get(status, 'Unknown')}", headers, body)
