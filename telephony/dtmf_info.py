"""Keypad digits carried in SIP INFO bodies, as some phones and gateways send them instead of
RFC 4733 events in the media.

Two body types are in use (neither is an RFC, both are de-facto standards):

- `application/dtmf-relay` (Cisco, Linphone, Asterisk): lines of `Name=Value`, e.g.
  `Signal=5\\r\\nDuration=160\\r\\n`. Only Signal matters; names are case-insensitive, lines may
  end in CRLF or a bare LF, and spaces may surround the `=`.
- `application/dtmf` (Asterisk, some gateways): the bare digit, e.g. `5`.

Digits are 0-9, *, #, A-D. Some senders write the RFC 4733 event code (10 for *, 11 for #,
12-15 for A-D) in Signal= instead of the character; those are read there. Anything else — another body
type, no Signal line, an unknown key, a body too long to be a keypress — gives None: an INFO is
attacker-controlled input and a wrong "digit" could steer the menu.
"""

from __future__ import annotations

DIGITS = frozenset("0123456789*#ABCD")
# RFC 4733 §3.2 event codes 10-15, which some dtmf-relay senders put in Signal=
_EVENT_CODES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}
# A dtmf-relay body is two short lines; anything much longer is not a keypress.
MAX_BODY_BYTES = 256


def _digit(value: str, event_codes: bool = False) -> str | None:
    value = value.strip()
    if event_codes and value in _EVENT_CODES:
        return _EVENT_CODES[value]
    value = value.upper()
    return value if len(value) == 1 and value in DIGITS else None


def digit_from_info(content_type: str, body: bytes) -> str | None:
    """The digit an INFO request carries, or None when it carries no (valid) digit.

    `content_type` is the Content-Type header value as received (parameters and case allowed:
    `Application/DTMF-Relay; charset=ascii`)."""
    if len(body) > MAX_BODY_BYTES:
        return None
    kind = content_type.split(";", 1)[0].strip().lower()
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    if kind == "application/dtmf":
        return _digit(text)
    if kind == "application/dtmf-relay":
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            name, sep, value = line.partition("=")
            if sep and name.strip().lower() == "signal":
                return _digit(value, event_codes=True)
        return None
    return None
