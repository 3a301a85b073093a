"""What it takes to end a SIP dialog later, from another process: the state of one answered leg.

A node that dies mid-call leaves both phones in a call nobody is on (no BYE ever comes). The call
flow stores each leg's DialogState in the call record as the dialog is established; the node
restarted after the crash builds a BYE from it (RFC 3261 §15.1.1, §12.2.1.1): Request-URI the
remote target, Route the route set, From/To our and their URI with both tags, the dialog's
Call-ID, and a CSeq above the last one we used.

Kept as plain data with `to_json`/`from_json` so the SIP layer under it may change freely: only
the fields below are the interface.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

SIDES = ("inbound", "outbound")  # we answered the INVITE (UAS) / we sent it (UAC)
_MAX_FIELD = 2048  # far above any real header value: a stored state is not a place for novels
_CSEQ_MAX = 2**31 - 1  # RFC 3261 §8.1.1.5
# A value that goes into a header line as it is: no line breaks (header injection), printable.
_HEADER_SAFE = re.compile(r"^[^\r\n\x00]*$")


class DialogStateError(ValueError):
    """A stored dialog state that cannot be used to build a request."""


@dataclass(frozen=True)
class DialogState:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # our From (name-addr, e.g. '<sip:hotline@10.0.0.1>'), without the tag
    remote_uri: str  # their To, without the tag
    remote_target: str  # the far end's Contact URI: the Request-URI of in-dialog requests
    route_set: tuple[str, ...]  # Route header values in the order they are sent
    local_cseq: int  # the last CSeq we used in the dialog; the next request takes a higher one
    side: str  # 'inbound' or 'outbound'

    def __post_init__(self) -> None:
        if self.side not in SIDES:
            raise DialogStateError(f"side must be one of {SIDES}, not {self.side!r}")
        for name in ("call_id", "local_tag", "remote_tag", "local_uri", "remote_uri", "remote_target"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > _MAX_FIELD or not _HEADER_SAFE.match(value):
                raise DialogStateError(f"{name}: not a usable header value")
        if not self.remote_target.lower().startswith(("sip:", "sips:")):
            raise DialogStateError("remote_target: not a SIP URI")
        for route in self.route_set:
            if not isinstance(route, str) or len(route) > _MAX_FIELD or not _HEADER_SAFE.match(route):
                raise DialogStateError("route_set: not a usable header value")
        if isinstance(self.local_cseq, bool) or not isinstance(self.local_cseq, int) \
                or not 0 <= self.local_cseq < _CSEQ_MAX:
            raise DialogStateError(f"local_cseq: not a CSeq number: {self.local_cseq!r}")

    def to_json(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "local_tag": self.local_tag, "remote_tag": self.remote_tag,
                "local_uri": self.local_uri, "remote_uri": self.remote_uri,
                "remote_target": self.remote_target, "route_set": list(self.route_set),
                "local_cseq": self.local_cseq, "side": self.side}

    @classmethod
    def from_json(cls, data: Any) -> DialogState:
        """The state `to_json` wrote; DialogStateError for anything else."""
        if not isinstance(data, dict):
            raise DialogStateError("a dialog state is a JSON object")
        routes = data.get("route_set", [])
        if not isinstance(routes, list):
            raise DialogStateError("route_set: not a list")
        try:
            return cls(call_id=data["call_id"], local_tag=data["local_tag"], remote_tag=data["remote_tag"],
                       local_uri=data["local_uri"], remote_uri=data["remote_uri"],
                       remote_target=data["remote_target"], route_set=tuple(routes),
                       local_cseq=data["local_cseq"], side=data["side"])
        except KeyError as exc:
            raise DialogStateError(f"missing {exc.args[0]}") from None

    def bye(self, via_host: str, via_port: int, contact: str) -> bytes:
        """A BYE for this dialog (CSeq one above the last we used), from our address."""
        lines = [
            f"BYE {self.remote_target} SIP/2.0",
            f"Via: SIP/2.0/UDP {via_host}:{via_port};branch=z9hG4bK{secrets.token_hex(10)};rport",
            *(f"Route: {r}" for r in self.route_set),
            "Max-Forwards: 70",
            f"From: {self.local_uri};tag={self.local_tag}",
            f"To: {self.remote_uri};tag={self.remote_tag}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.local_cseq + 1} BYE",
            f"Contact: {contact}",
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()
