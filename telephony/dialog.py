"""A SIP dialog (RFC 3261 §12): what both ends must remember to send requests to each other.

Either side may have started the call — a resident calling in (we are the UAS) or the service
dialing a softphone (we are the UAC) — and once it is up the dialog is the same thing: Call-ID,
the two tags, our URI and theirs, their Contact (the remote target), the route set learnt from
Record-Route, and the CSeq counters. Requests we send inside it (BYE, and the ACK of a 2xx)
are built here. A leg gives its dialog as telephony.dialog_state.DialogState, plain validated
data a call record keeps so a node restarted after a crash can hang up the phones it lost.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from telephony.sip_message import NameAddr, SipMessage, SipParseError, serialize


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(10)


def new_tag() -> str:
    return secrets.token_hex(6)


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # our address as it stands in From of our requests (name-addr, no tag)
    remote_uri: str  # theirs, for To (name-addr, no tag)
    remote_target: str  # their Contact URI: where in-dialog requests are addressed
    route_set: list[str] = field(default_factory=list)  # Route values, in order
    local_cseq: int = 0
    remote_cseq: int = 0
    role: str = "uas"  # uas: the call came in; uac: we placed it

    @classmethod
    def as_uas(cls, invite: SipMessage, local_tag: str) -> Dialog:
        """The dialog an INVITE we answer creates (§12.1.1): route set = Record-Route as received."""
        remote = NameAddr.parse(invite.header("From") or "")
        local = NameAddr.parse(invite.header("To") or "")
        contacts = invite.headers_all("Contact")
        target = NameAddr.parse(contacts[0]).uri if contacts else remote.uri
        return cls(
            call_id=invite.call_id, local_tag=local_tag, remote_tag=remote.params.get("tag", ""),
            local_uri=_without_tag(local), remote_uri=_without_tag(remote), remote_target=target,
            route_set=invite.headers_all("Record-Route"), remote_cseq=invite.cseq[0], role="uas",
        )

    def next_cseq(self) -> int:
        self.local_cseq += 1
        return self.local_cseq

    def request(self, method: str, via: str, *, cseq: int | None = None, branch: str | None = None,
                contact: str | None = None, extra: list[tuple[str, str]] | None = None,
                body: bytes = b"") -> bytes:
        """A request inside the dialog (§12.2.1.1): to the remote target, through the route set.
        `via` is our sent-by (host:port); each request is a new transaction (new branch) unless
        `branch` says otherwise."""
        headers = [
            ("Via", f"SIP/2.0/UDP {via};branch={branch or new_branch()};rport"),
            *(("Route", r) for r in self.route_set),
            ("Max-Forwards", "70"),
            ("From", f"{self.local_uri};tag={self.local_tag}"),
            ("To", f"{self.remote_uri};tag={self.remote_tag}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq if cseq is not None else self.next_cseq()} {method}"),
        ]
        if contact:
            headers.append(("Contact", contact))
        headers += extra or []
        return serialize(f"{method} {self.remote_target} SIP/2.0", headers, body)

    def next_hop(self) -> tuple[str, int] | None:
        """Where a request in the dialog is sent (RFC 3261 §12.2.1.1, §8.1.2): with a route set,
        None — our outbound proxy (the registrar, which recorded the route through itself);
        without one (the peer reached us directly, no proxy in the path), the remote target."""
        if self.route_set:
            return None
        return uri_host_port(self.remote_target)

    def matches(self, message: SipMessage) -> bool:
        """A request of the far end in this dialog: its From tag is theirs, its To tag ours."""
        return message.from_tag == self.remote_tag and message.to_tag == self.local_tag


def _without_tag(address: NameAddr) -> str:
    params = {k: v for k, v in address.params.items() if k != "tag"}
    return str(NameAddr(address.display, address.uri, params))


def contact_uri(value: str | None, fallback: str) -> str:
    """The URI of a Contact header value, or `fallback` when there is none or it is unreadable."""
    if not value:
        return fallback
    try:
        return NameAddr.parse(value).uri
    except SipParseError:
        return fallback


def uri_host_port(uri: str) -> tuple[str, int] | None:
    """(host, port) of a sip: URI (5060 when none); None for any other URI."""
    scheme, _, rest = uri.partition(":")
    if scheme.lower() not in ("sip", "sips"):
        return None
    hostport = rest.split("@", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = tail.lstrip(":")
    else:
        host, _, port = hostport.partition(":")
    if not host or (port and not port.isdigit()) or (port and not 0 < int(port) < 65536):
        return None
    return host, int(port) if port else 5060
