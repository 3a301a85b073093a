"""SDP as the service reads and writes it (RFC 4566), and the offer/answer rules (RFC 3264).

Pure: text in, text out, no sockets and no pyVoIP. The SIP layer hands an INVITE's (or
UPDATE's) body to `sdp_from_body` and `parse`, then `answer`; the dialer sends `build_offer`.

What the service can carry is one G.711 audio stream (PCMA or PCMU, 8 kHz) over plain RTP, with
RFC 4733 telephone-event for keys. An offer is answered as RFC 3264 §6 says:

- the answer has exactly as many m= lines as the offer, in the same order;
- ONE audio stream is taken: the first m=audio on RTP/AVP or RTP/AVPF with a non-zero port, an
  address, and a codec we speak; every other stream (video, application, SRTP, unknown codecs,
  a second audio stream, a stream the offerer itself refused with port 0) is refused with port 0
  and the formats it was offered (§6: a refused stream still lists at least one format);
- the codec is the OFFERER's most preferred one among those we speak (§6.1: the answerer SHOULD
  keep the offer's order of preference), not ours; `codecs` only limits what we accept. Our own
  order counts where we are the offerer (`build_offer`);
- telephone-event is answered only at the chosen codec's clock rate (8000): Linphone offers it
  at 48000, 16000 and 8000 Hz, and only the 8000 one matches G.711;
- the direction mirrors the offer's (sendonly→recvonly, recvonly→sendonly, inactive→inactive),
  a media-level a= overriding the session-level one; `c=0.0.0.0` is RFC 2543's hold and counts
  as the offerer not wanting to receive;
- attributes we do not use (ICE, rtcp-mux, ssrc, mid, extmap, crypto, anything unknown) are kept
  as parsed and otherwise ignored; a media-level c= overrides the session-level one.

An offer we cannot take at all raises `OfferRejected` (SIP 488 with a Warning); SDP that cannot
be read raises `SdpError` (400); a body that is not SDP and carries none `UnsupportedBody` (415).
"""

from __future__ import annotations

import email.parser
import email.policy
import ipaddress
import re
from dataclasses import dataclass, field

AUDIO_CODECS = ("PCMA", "PCMU")
# RFC 3551 static payload types we speak; they may come without an rtpmap.
STATIC_PAYLOADS = {"0": ("PCMU", 8000, 1), "8": ("PCMA", 8000, 1)}
_G711_CLOCK = 8000
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
           "inactive": "inactive"}
# Plain RTP profiles; AVPF (RFC 4585) is AVP plus feedback we may simply not send.
_RTP_PROFILES = ("RTP/AVP", "RTP/AVPF")
# Secure profiles, refused: the service has no SRTP.
_SECURE = re.compile(r"(^|/)(SAVP|SAVPF)$", re.IGNORECASE)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+$")
_LINE = re.compile(r"^([a-z])=(.*)$")
# Bounded: int() of thousands of digits is slow and, past 4300, a ValueError of its own.
_DIGITS = re.compile(r"^[0-9]{1,20}$")
# A Warning header carries the rejection reason; a hostile offer must not make it huge.
_MAX_LISTED = 6


class SdpError(ValueError):
    """The SDP cannot be read; the message says where (for a 400 and the log)."""


class OfferRejected(Exception):
    """An offer we understand but cannot take at all: SIP `code` (488) with `reason`, short
    enough for a Warning header (RFC 3261 §20.43)."""

    def __init__(self, reason: str, code: int = 488):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class UnsupportedBody(ValueError):
    """A body that is not SDP and carries none: SIP 415 with `Accept: application/sdp`."""

    code = 415
    accept = "application/sdp"


@dataclass
class Origin:
    """The o= line (RFC 4566 §5.2)."""

    username: str
    session_id: int
    session_version: int
    nettype: str
    addrtype: str
    address: str


@dataclass
class Media:
    """One m= section (RFC 4566 §5.14) with what we read from its c= and a= lines."""

    kind: str  # audio, video, application, or anything else the offerer names
    port: int
    port_count: int
    proto: str
    formats: list[str]
    connection: str | None = None  # the media-level c= address (TTL and count stripped)
    connection_type: str | None = None  # its addrtype, IP4 or IP6
    rtpmap: dict[str, tuple[str, int, int | None]] = field(default_factory=dict)
    fmtp: dict[str, str] = field(default_factory=dict)
    direction: str | None = None  # the media-level direction attribute, if any
    attributes: list[tuple[str, str | None]] = field(default_factory=list)  # every a=, in order
    other: list[tuple[str, str]] = field(default_factory=list)  # i=, b=, k= and unknown lines

    def encoding(self, payload_type: str) -> tuple[str, int, int | None] | None:
        """(encoding name, clock rate, channels) of a format: its rtpmap, or for the static
        G.711 payload types without one, RFC 3551's table."""
        if payload_type in self.rtpmap:
            return self.rtpmap[payload_type]
        return STATIC_PAYLOADS.get(payload_type)


@dataclass
class Session:
    """A parsed session description."""

    origin: Origin
    name: str  # s=; may be empty, as in RFC 4317's examples
    connection: str | None = None  # session-level c= address
    connection_type: str | None = None
    direction: str | None = None  # session-level direction attribute, if any
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)  # i=, u=, e=, t=, b=…

    def address_of(self, media: Media) -> str:
        """Where the media goes: its own c= address, else the session's (RFC 4566 §5.7)."""
        address = media.connection or self.connection
        if address is None:
            raise SdpError(f"no c= line for the m={media.kind} stream or the session")
        return address

    def address_type_of(self, media: Media) -> str | None:
        return media.connection_type if media.connection else self.connection_type

    def direction_of(self, media: Media) -> str:
        """The stream's direction: media-level, else session-level, else sendrecv (§6.7)."""
        return media.direction or self.direction or "sendrecv"


# --- parsing ----------------------------------------------------------------------------------


def _decode(body: bytes | str) -> str:
    if isinstance(body, str):
        text = body
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # RFC 4566 §5 lets a=charset change the text fields' charset; what we read is ASCII
            # either way, so anything else is kept byte for byte and checked line by line.
            text = body.decode("latin-1")
    if "\x00" in text:
        raise SdpError("SDP contains a NUL byte")
    return text


def _connection(value: str, where: str) -> tuple[str, str]:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN":
        raise SdpError(f"{where}: c= is not 'IN <addrtype> <address>': {value[:60]!r}")
    # multicast IP4 carries /ttl[/count], IP6 /count (RFC 4566 §5.7): the address is the rest
    return parts[1], parts[2].split("/", 1)[0]


def _media_line(value: str, number: int) -> Media:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"line {number}: m= needs media, port, proto and a format: {value[:60]!r}")
    kind, port_text, proto, *formats = parts
    port_text, _, count_text = port_text.partition("/")
    if not _DIGITS.match(port_text) or int(port_text) > 65535:
        raise SdpError(f"line {number}: m= port {port_text[:12]!r} is not 0..65535")
    if count_text and (not _DIGITS.match(count_text) or int(count_text) < 1):
        raise SdpError(f"line {number}: m= port count {count_text[:12]!r} is not a number ≥ 1")
    return Media(kind=kind, port=int(port_text), port_count=int(count_text or 1), proto=proto,
                 formats=formats)


def _attribute(media: Media | None, session: dict, value: str) -> None:
    name, colon, rest = value.partition(":")
    attribute = (name, rest if colon else None)
    if media is None:
        session["attributes"].append(attribute)
        if name in DIRECTIONS and not colon:
            session["direction"] = name
        return
    media.attributes.append(attribute)
    if name in DIRECTIONS and not colon:
        media.direction = name
    elif name == "rtpmap" and colon:
        # "<pt> <encoding>/<clock>[/<channels>]"; one we cannot read leaves that format unknown
        payload_type, _, encoding = rest.strip().partition(" ")
        pieces = encoding.strip().split("/")
        if len(pieces) in (2, 3) and _DIGITS.match(pieces[1]) and \
                (len(pieces) == 2 or _DIGITS.match(pieces[2])):
            channels = int(pieces[2]) if len(pieces) == 3 else None
            media.rtpmap[payload_type] = (pieces[0], int(pieces[1]), channels)
    elif name == "fmtp" and colon:
        payload_type, _, parameters = rest.strip().partition(" ")
        media.fmtp[payload_type] = parameters.strip()


def parse(body: bytes | str) -> Session:
    """Read a session description. Lines end in CRLF or bare LF (RFC 4566 §5 says parsers SHOULD
    take both); v= must come first, o= and s= before the first m=; unknown lines and attributes
    are kept. Raises SdpError with the line that is wrong."""
    text = _decode(body)
    # numbered as sent, blank lines (a trailing one is common) skipped
    lines = [(number, line) for number, line in
             enumerate(text.replace("\r\n", "\n").split("\n"), 1) if line.strip()]
    if not lines:
        raise SdpError("empty SDP")
    session: dict = {"origin": None, "name": None, "connection": None, "connection_type": None,
                     "direction": None, "attributes": [], "other": []}
    media: list[Media] = []
    current: Media | None = None
    for position, (number, line) in enumerate(lines):
        match = _LINE.match(line.rstrip("\r"))
        if not match:
            raise SdpError(f"line {number} is not <letter>=<value>: {line[:40]!r}")
        kind, value = match.groups()
        if position == 0:
            if kind != "v" or value.strip() != "0":
                raise SdpError("SDP must start with v=0")
            continue
        if kind == "v":
            raise SdpError(f"line {number}: a second v= line")
        if kind == "m":
            if session["origin"] is None:
                raise SdpError("no o= line before the first m=")
            current = _media_line(value, number)
            media.append(current)
        elif kind == "a":
            _attribute(current, session, value)
        elif kind == "c":
            addrtype, address = _connection(value, f"line {number}")
            if current is None:
                session["connection"], session["connection_type"] = address, addrtype
            else:
                current.connection, current.connection_type = address, addrtype
        elif kind == "o" and current is None:
            if session["origin"] is not None:
                raise SdpError(f"line {number}: a second o= line")
            parts = value.split()
            if len(parts) != 6 or not _DIGITS.match(parts[1]) or not _DIGITS.match(parts[2]):
                raise SdpError(f"line {number}: o= is not '<username> <sess-id> <sess-version> "
                               f"<nettype> <addrtype> <address>': {value[:60]!r}")
            session["origin"] = Origin(parts[0], int(parts[1]), int(parts[2]), *parts[3:])
        elif kind == "s" and current is None and session["name"] is None:
            session["name"] = value
        elif current is None:
            session["other"].append((kind, value))
        else:
            current.other.append((kind, value))
    if session["origin"] is None:
        raise SdpError("no o= line")
    if session["name"] is None:
        raise SdpError("no s= line")
    return Session(media=media, **session)


# --- answering --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioChoice:
    """What the answer agreed: the stream, codec and peer address the RTP side needs."""

    index: int  # which m= line of the offer (and of the answer)
    payload_type: int
    codec: str  # "PCMA" or "PCMU"
    remote_ip: str  # "0.0.0.0" for an RFC 2543 hold: send nothing there
    remote_port: int
    dtmf_payload_type: int | None  # telephone-event/8000, when offered
    remote_direction: str  # the offer's, with c=0.0.0.0 taken as "does not receive"
    local_direction: str  # ours, as the answer says
    on_hold: bool  # the far end put the call on hold (RFC 3264 §8.4): it will not take our audio
    remote_address_type: str = "IP4"


def _payload_type(text: str) -> bool:
    """An RTP payload type: 0..127 (RFC 3550 §5.1)."""
    return bool(_DIGITS.match(text)) and int(text) <= 127


def _g711(media: Media, payload_type: str, codecs: tuple[str, ...]) -> str | None:
    if not _payload_type(payload_type):
        return None
    encoding = media.encoding(payload_type)
    if encoding is None:
        return None
    name, clock, channels = encoding
    name = name.upper()
    if name in codecs and clock == _G711_CLOCK and channels in (None, 1):
        return name
    return None


def _named(media: Media, payload_type: str) -> str:
    encoding = media.encoding(payload_type)
    return encoding[0] if encoding else payload_type


def _why_not(session: Session, media: Media, codecs: tuple[str, ...]) -> str | None:
    """Why an audio stream cannot be ours, or None when it can."""
    if media.port == 0:
        return "the audio stream is refused (port 0)"
    if _SECURE.search(media.proto):
        return f"audio only over SRTP ({media.proto}), which is not supported"
    if media.proto.upper() not in _RTP_PROFILES:
        return f"audio over {media.proto[:30]}, not RTP/AVP"
    if not any(_g711(media, pt, codecs) for pt in media.formats):
        names = list(dict.fromkeys(_named(media, pt) for pt in media.formats))
        listed = ", ".join(n[:20] for n in names[:_MAX_LISTED]) + (", …" if len(names) > _MAX_LISTED else "")
        return f"no common codec: offered {listed}; we take {' or '.join(codecs)}"
    if media.connection is None and session.connection is None:
        return "no c= address for the audio stream"
    if _multicast(session.address_of(media)):
        # RFC 3264 §5.2 would have us join the group and send to it: a consultation is not
        # for a whole network segment to hear
        return "multicast audio is not supported"
    return None


def _multicast(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_multicast
    except ValueError:
        return False  # a host name (RFC 4317's examples): for the RTP side to resolve


def _agreed(session: Session, index: int, codecs: tuple[str, ...], wanted: str) -> AudioChoice:
    """The AudioChoice for stream `index` of `session` (the far end's description), which
    _why_not found usable; `wanted` is the direction we want."""
    media = session.media[index]
    # the far end's most preferred format we speak (RFC 3264 §6.1)
    payload_type, codec = next((pt, c) for pt in media.formats
                               if (c := _g711(media, pt, codecs)) is not None)
    # telephone-event only at G.711's rate: one at 48000 or 16000 Hz (Linphone offers both)
    # would time its events on a clock our audio does not run
    dtmf = next((pt for pt in media.formats if (e := media.rtpmap.get(pt)) is not None
                 and e[0].lower() == "telephone-event" and e[1] == _G711_CLOCK
                 and _payload_type(pt)), None)
    remote_ip = session.address_of(media)
    remote_direction = session.direction_of(media)
    if remote_ip == "0.0.0.0":
        # RFC 2543 hold (RFC 3264 §8.4 still asks us to understand it): "do not send to me",
        # whatever the direction attribute says
        remote_direction = {"sendrecv": "sendonly", "recvonly": "inactive"}.get(
            remote_direction, remote_direction)
    return AudioChoice(
        index=index, payload_type=int(payload_type), codec=codec, remote_ip=remote_ip,
        remote_port=media.port, dtmf_payload_type=int(dtmf) if dtmf is not None else None,
        remote_direction=remote_direction,
        local_direction=_intersect(_MIRROR[remote_direction], wanted),
        on_hold=remote_direction in ("sendonly", "inactive"),
        remote_address_type=session.address_type_of(media) or "IP4",
    )


def _intersect(mirrored: str, wanted: str) -> str:
    """The direction both allow: send only if both say send, receive only if both receive."""
    sends = mirrored in ("sendrecv", "sendonly") and wanted in ("sendrecv", "sendonly")
    receives = mirrored in ("sendrecv", "recvonly") and wanted in ("sendrecv", "recvonly")
    return {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly",
            (False, False): "inactive"}[(sends, receives)]


def _address_line(ip: str) -> str:
    return f"IN {'IP6' if ':' in ip else 'IP4'} {ip}"


def _check_token(name: str, value: str) -> None:
    if not _TOKEN.match(value):
        raise ValueError(f"{name} {value!r} is not an SDP token")


def _check_common(local_ip: str, local_port: int, session_id: int, session_version: int,
                  codecs: tuple[str, ...], username: str) -> None:
    if not local_ip or any(c.isspace() for c in local_ip):
        raise ValueError(f"local_ip {local_ip!r} is not an address")
    if not 0 < local_port <= 65535:
        raise ValueError(f"local_port {local_port} is not 1..65535")
    if session_id < 0 or session_version < 0:
        raise ValueError("session id and version are non-negative")
    if not codecs or any(c not in AUDIO_CODECS for c in codecs):
        raise ValueError(f"codecs {codecs!r}: some of {AUDIO_CODECS}")
    _check_token("username", username)


def _session_head(local_ip: str, session_id: int, session_version: int, username: str) -> list[str]:
    return ["v=0", f"o={username} {session_id} {session_version} {_address_line(local_ip)}",
            "s=jiayi-hotline", f"c={_address_line(local_ip)}", "t=0 0"]


def answer(offer: Session, *, local_ip: str, local_port: int, session_id: int,
           session_version: int, codecs: tuple[str, ...] = AUDIO_CODECS,
           username: str = "hotline", direction: str = "sendrecv") -> tuple[str, AudioChoice]:
    """The answer to `offer` (CRLF line ends) and what it agreed.

    `direction` is what we want ourselves (sendonly or inactive while we hold the call); the
    answer's direction is what both ends allow. The o= line carries our `session_id` and
    `session_version`: a re-INVITE's answer keeps the id and the caller passes version + 1.
    Raises OfferRejected (488) when no stream can carry our audio."""
    codecs = tuple(c.upper() for c in codecs)
    _check_common(local_ip, local_port, session_id, session_version, codecs, username)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: one of {DIRECTIONS}")
    if not offer.media:
        raise OfferRejected("no media offered")
    chosen: int | None = None
    reasons: list[str] = []
    for index, media in enumerate(offer.media):
        if media.kind.lower() != "audio":
            continue
        why = _why_not(offer, media, codecs)
        if why is None:
            chosen = index
            break
        reasons.append(why)
    if chosen is None:
        raise OfferRejected(reasons[0] if reasons else "no audio stream offered")

    choice = _agreed(offer, chosen, codecs, direction)
    lines = _session_head(local_ip, session_id, session_version, username)
    for index, stream in enumerate(offer.media):
        if index != chosen:
            # refused: port 0, same media and proto, the formats as offered (RFC 3264 §6)
            lines.append(f"m={stream.kind} 0 {stream.proto} {' '.join(stream.formats)}")
            continue
        # the offer's own payload type numbers (RFC 3264 §6.1), only what we will use
        dtmf = choice.dtmf_payload_type
        formats = [str(choice.payload_type)] + ([str(dtmf)] if dtmf is not None else [])
        lines.append(f"m=audio {local_port} {stream.proto} {' '.join(formats)}")
        lines.append(f"a=rtpmap:{choice.payload_type} {choice.codec}/{_G711_CLOCK}")
        if dtmf is not None:
            lines.append(f"a=rtpmap:{dtmf} telephone-event/{_G711_CLOCK}")
            lines.append(f"a=fmtp:{dtmf} 0-15")
        lines.append("a=ptime:20")
        lines.append(f"a={choice.local_direction}")
    return "\r\n".join(lines) + "\r\n", choice


def build_offer(*, local_ip: str, local_port: int, session_id: int, session_version: int,
                codecs: tuple[str, ...] = AUDIO_CODECS, dtmf_payload_type: int | None = 101,
                direction: str = "sendrecv", username: str = "hotline") -> str:
    """Our offer: one audio stream, `codecs` in our order of preference (static payload types
    8 and 0), telephone-event/8000 on `dtmf_payload_type` (None: no DTMF offered)."""
    codecs = tuple(c.upper() for c in codecs)
    _check_common(local_ip, local_port, session_id, session_version, codecs, username)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: one of {DIRECTIONS}")
    if dtmf_payload_type is not None and not 96 <= dtmf_payload_type <= 127:
        raise ValueError(f"dtmf_payload_type {dtmf_payload_type} is not dynamic (96..127)")
    numbers = {name: number for number, (name, _, _) in STATIC_PAYLOADS.items()}
    formats = [numbers[c] for c in codecs]
    if dtmf_payload_type is not None:
        formats.append(str(dtmf_payload_type))
    lines = _session_head(local_ip, session_id, session_version, username)
    lines.append(f"m=audio {local_port} RTP/AVP {' '.join(formats)}")
    lines += [f"a=rtpmap:{numbers[c]} {c}/{_G711_CLOCK}" for c in codecs]
    if dtmf_payload_type is not None:
        lines.append(f"a=rtpmap:{dtmf_payload_type} telephone-event/{_G711_CLOCK}")
        lines.append(f"a=fmtp:{dtmf_payload_type} 0-15")
    lines += ["a=ptime:20", f"a={direction}"]
    return "\r\n".join(lines) + "\r\n"


def read_answer(answer_sdp: Session, *, codecs: tuple[str, ...] = AUDIO_CODECS,
                offered_direction: str = "sendrecv") -> AudioChoice:
    """What the far end agreed to in its answer to our `build_offer`: its first audio stream
    with a non-zero port, the first format in it that we offered (the answerer's preference),
    telephone-event/8000 if it kept it. Raises OfferRejected when it refused our audio (the
    dialer then ends the call, RFC 3264 §6: an answer may refuse every stream)."""
    codecs = tuple(c.upper() for c in codecs)
    for index, media in enumerate(answer_sdp.media):
        if media.kind.lower() != "audio":
            continue
        why = _why_not(answer_sdp, media, codecs)
        if why is not None:
            raise OfferRejected(f"the answer refuses our audio: {why}")
        return _agreed(answer_sdp, index, codecs, offered_direction)
    raise OfferRejected("the answer has no audio stream")


# --- bodies -----------------------------------------------------------------------------------


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def sdp_from_body(content_type: str, body: bytes) -> bytes:
    """The SDP a SIP body carries: the body itself for application/sdp, the application/sdp part
    of a multipart/mixed, alternative or related body (RFC 5621; nested multiparts searched
    too). An empty body is returned as is (no offer: the caller decides). Raises UnsupportedBody
    for any other type, for a multipart without SDP, or one with a part we do not understand
    marked handling=required (RFC 3204, RFC 5621 §9); SdpError for a multipart we cannot split."""
    if not body:
        return b""
    kind = _media_type(content_type)
    if kind == "application/sdp":
        return body
    if kind not in ("multipart/mixed", "multipart/alternative", "multipart/related"):
        raise UnsupportedBody(f"body of type {kind[:60] or '(none)'} carries no SDP")
    if "\r" in content_type or "\n" in content_type:
        raise SdpError("Content-Type spans lines")
    # The stdlib's MIME parser knows RFC 2046's delimiter rules (the CRLF before a boundary
    # belongs to it, preamble and epilogue, quoted boundaries, nesting, transfer encodings).
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body)
    if not message.is_multipart() or not message.get_boundary():
        raise SdpError("multipart body without a boundary")
    if f"--{message.get_boundary()}".encode("latin-1", "replace") not in body:
        raise SdpError("multipart body without its boundary")
    sdp: bytes | None = None
    for part in message.walk():
        if part.is_multipart():
            continue
        part_type = part.get_content_type().lower()
        if part_type == "application/sdp":
            if sdp is None:
                payload = part.get_payload(decode=True)
                sdp = payload if isinstance(payload, bytes) else b""
            continue
        disposition = str(part.get("Content-Disposition", "")).lower()
        if re.search(r";\s*handling\s*=\s*required\b", disposition):
            raise UnsupportedBody(f"a {part_type[:60]} part is required and not supported")
    if sdp is None:
        raise UnsupportedBody("multipart body without an application/sdp part")
    return sdp
