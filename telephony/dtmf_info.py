"""Keypad digits sent as SIP INFO instead of RTP events (RFC 2976 bodies as phones send them).

Two bodies are in use: `application/dtmf-relay` ("Signal=5\r\nDuration=160", Cisco's and most
PBXes') and `application/dtmf` (a bare digit). Anything else is not a key.
"""

from __future__ import annotations

KEYS = "0123456789*#ABCD"
# RFC 4733 event numbers, which some phones put in Signal= instead of the key itself.
_EVENTS = {str(i): KEYS[i] for i in range(16)}


def digit_from_info(content_type: str, body: bytes) -> str | None:
    """The key an INFO body carries, or None when it carries none we can read."""
    kind = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("ascii", "replace").strip()
    if kind == "application/dtmf-relay":
        for line in text.replace("\r\n", "\n").split("\n"):
            name, sep, value = line.partition("=")
            if sep and name.strip().lower() == "signal":
                return _key(value.strip())
        return None
    if kind == "application/dtmf":
        return _key(text)
    return None


def _key(value: str) -> str | None:
    if len(value) == 1 and value.upper() in KEYS:
        return value.upper()
    if value in _EVENTS and len(value) == 2:  # "10" … "15": * # A–D as event numbers
        return _EVENTS[value]
    return None
