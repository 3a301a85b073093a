"""HTTP Digest credentials for SIP requests we send (RFC 3261 §22.2–22.4, RFC 2617, RFC 8760).

A PBX challenges the INVITEs of its own users (401 with WWW-Authenticate from a registrar-UAS,
407 with Proxy-Authenticate from a proxy); the INVITE is sent again, with a new branch and
CSeq, carrying the answer. pyVoIP answers challenges only for its REGISTER, so the service's
own INVITE transaction (telephony.dialer) needs this.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

_PARAM = re.compile(r'([A-Za-z-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]+))')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class DigestError(ValueError):
    """A challenge we cannot answer; the message says why, for the log and the dial outcome."""


@dataclass(frozen=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None

    @classmethod
    def parse(cls, header: str) -> Challenge:
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() != "digest":
            raise DigestError(f"the challenge is {scheme or 'empty'}, not Digest")
        params = {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
                  for m in _PARAM.finditer(rest)}
        if "realm" not in params or "nonce" not in params:
            raise DigestError("the challenge has no realm or nonce")
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in _HASHES:
            raise DigestError(f"digest algorithm {algorithm} is not supported (MD5, SHA-256 are)")
        qop = tuple(q.strip() for q in params.get("qop", "").split(",") if q.strip())
        if qop and "auth" not in qop:
            raise DigestError(f"qop {'/'.join(qop)} is not supported (auth is)")
        return cls(params["realm"], params["nonce"], algorithm, qop, params.get("opaque"))


def authorization(challenge: Challenge, *, method: str, uri: str, username: str, password: str,
                  cnonce: str | None = None, nonce_count: int = 1) -> str:
    """The value of the Authorization / Proxy-Authorization header answering `challenge`."""

    def h(text: str) -> str:
        return _HASHES[challenge.algorithm](text.encode("utf-8")).hexdigest()

    ha1 = h(f"{username}:{challenge.realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    fields = [f'username="{username}"', f'realm="{challenge.realm}"', f'nonce="{challenge.nonce}"',
              f'uri="{uri}"']
    if challenge.qop:
        cnonce = cnonce or secrets.token_hex(8)
        nc = f"{nonce_count:08x}"
        response = h(f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:auth:{ha2}")
        fields += [f'response="{response}"', f"algorithm={challenge.algorithm}", "qop=auth", f"nc={nc}",
                   f'cnonce="{cnonce}"']
    else:
        response = h(f"{ha1}:{challenge.nonce}:{ha2}")
        fields += [f'response="{response}"', f"algorithm={challenge.algorithm}"]
    if challenge.opaque is not None:
        fields.append(f'opaque="{challenge.opaque}"')
    return "Digest " + ", ".join(fields)
