"""Registering the hotline with the PBX: a REGISTER client transaction of our own (RFC 3261 §10).

pyVoIP read the SIP socket itself while it re-registered and took any datagram as the
REGISTER's reply, so 67 s of junk sent at the service port left the hotline unregistered for
63 s (callers got 404). Here a response counts only when its Call-ID, CSeq and top Via branch
are those of the REGISTER we sent; everything else goes on to the rest of the user agent.

The registration never gives up: after a success the next REGISTER goes at half the expiry the
registrar granted (a registrar that restarted and forgot us learns us again soon); after a
failure with backoff up to RETRY_MAX_S, forever. A 401/407 is answered once per attempt with
the account's digest credentials (telephony.digest).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import structlog

from telephony.dialog import new_branch, new_tag
from telephony.digest import Challenge, DigestError, authorization
from telephony.sip_message import NameAddr, SipMessage, SipParseError, Via, serialize
from telephony.transactions import T1_S, T2_S

log = structlog.get_logger("telephony.sip")

RETRY_MAX_S = 60  # longest wait between failed attempts


class Registration:
    def __init__(self, *, registrar: tuple[str, int], user: str, password: str, local: tuple[str, int],
                 send: Callable[[bytes, tuple[str, int]], None], expires_s: int = 120,
                 timeout_s: float = 10.0, on_change: Callable[[bool], None] | None = None):
        self.registrar = registrar
        self.user = user
        self.password = password
        self.local = local
        self._send = send
        self.expires_s = expires_s
        self.timeout_s = timeout_s
        self.on_change = on_change
        self.call_id = f"{secrets.token_hex(12)}@{local[0]}"
        self.tag = new_tag()
        self.cseq = 0
        self.failures = 0
        self.registered = False
        self._branch = ""
        self._responses: asyncio.Queue[SipMessage] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # --- driven by the user agent -------------------------------------------------------------

    def on_response(self, response: SipMessage) -> bool:
        """True when `response` answers our REGISTER in flight (it is then ours alone)."""
        if response.call_id != self.call_id or response.cseq != (self.cseq, "REGISTER"):
            return False
        vias = response.headers_all("Via")
        try:
            if not vias or Via.parse(vias[0]).branch != self._branch:
                return False
        except SipParseError:
            return False
        self._responses.put_nowait(response)
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="SIP registration")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def first_attempt(self) -> None:
        """Wait for the outcome of the first REGISTER (success or failure), bounded."""
        for _ in range(int(self.timeout_s * 2 / 0.05) + 20):
            if self.registered or self.failures:
                return
            await asyncio.sleep(0.05)

    async def withdraw(self) -> bool:
        """REGISTER with expiry 0 and no more re-registering; True when the registrar confirmed."""
        await self.stop()
        ok, why = await self.register_once(0)
        self._set(False)
        if ok:
            log.info("sip.unregistered", registrar=self._where(), user=self.user)
        else:
            log.warning("sip.unregister_failed", registrar=self._where(), why=why)
        return ok

    # --- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            ok, why = await self.register_once(self.expires_s)
            if ok:
                if self.failures:
                    log.info("sip.registered_again", registrar=self._where(), after_failures=self.failures)
                self.failures = 0
                self._set(True)
                # half the expiry (the shorter of ours and the granted one): a registrar that
                # restarted and forgot us learns us again soon
                delay: float = max(1, min(self.granted, self.expires_s) // 2)
            else:
                self.failures += 1
                self._set(False)
                delay = min(RETRY_MAX_S, 2 ** min(self.failures - 1, 6))
                log.warning("sip.register_failed", registrar=self._where(), user=self.user, why=why,
                            attempt=self.failures, retry_in_s=delay)
            await asyncio.sleep(delay)

    def _set(self, registered: bool) -> None:
        changed = registered != self.registered
        self.registered = registered
        if changed and self.on_change is not None:
            self.on_change(registered)

    def _where(self) -> str:
        return f"{self.registrar[0]}:{self.registrar[1]}"

    async def register_once(self, expires: int) -> tuple[bool, str]:
        """One REGISTER (and its digest retry): (accepted, why not)."""
        async with self._lock:
            credentials: tuple[str, str] | None = None
            for _ in range(2):
                response = await self._transaction(self._register(expires, credentials))
                if response is None:
                    return False, f"TimeoutError: no answer from the registrar within {self.timeout_s:g} s"
                status = response.status or 0
                if 200 <= status < 300:
                    self.granted = self._granted(response, expires)
                    return True, ""
                if status in (401, 407) and credentials is None:
                    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
                    challenge_text = response.header(name)
                    if not challenge_text:
                        return False, f"{status} without {name}"
                    if not self.password:
                        return False, f"the registrar asks for credentials ({status}) and the hotline has no SIP password"
                    try:
                        value = authorization(Challenge.parse(challenge_text), method="REGISTER",
                                              uri=self._request_uri(), username=self.user, password=self.password)
                    except DigestError as exc:
                        return False, f"DigestError: {exc}"
                    credentials = ("Proxy-Authorization" if status == 407 else "Authorization", value)
                    continue
                return False, f"{status} {response.reason}".strip()
            return False, "the registrar refused the hotline's SIP credentials"

    granted: int = 0

    def _granted(self, response: SipMessage, asked: int) -> int:
        """The expiry the registrar gave our binding (Contact expires=, else Expires, else ours)."""
        for contact in response.headers_all("Contact"):
            try:
                address = NameAddr.parse(contact)
            except SipParseError:
                continue
            if f"{self.local[0]}:{self.local[1]}" in address.uri and address.params.get("expires", "").isdigit():
                return int(address.params["expires"])
        expires = (response.header("Expires") or "").strip()
        return int(expires) if expires.isdigit() else asked

    def _request_uri(self) -> str:
        return f"sip:{self.registrar[0]}:{self.registrar[1]}"

    def _register(self, expires: int, credentials: tuple[str, str] | None) -> bytes:
        self.cseq += 1
        self._branch = new_branch()
        aor = f"<sip:{self.user}@{self.registrar[0]}:{self.registrar[1]}>"
        headers = [
            ("Via", f"SIP/2.0/UDP {self.local[0]}:{self.local[1]};branch={self._branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"{aor};tag={self.tag}"),
            ("To", aor),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
            ("Contact", f"<sip:{self.user}@{self.local[0]}:{self.local[1]}>"),
            ("Expires", str(expires)),
            ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE"),
            ("User-Agent", "jiayi-hotline"),
        ]
        if credentials is not None:
            headers.append(credentials)
        return serialize(f"REGISTER {self._request_uri()} SIP/2.0", headers)

    async def _transaction(self, request: bytes) -> SipMessage | None:
        """Send a REGISTER with Timer E retransmissions; its final response, or None by timeout."""
        while not self._responses.empty():  # answers of an earlier attempt
            self._responses.get_nowait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        interval = T1_S
        self._send(request, self.registrar)
        next_send = loop.time() + interval
        while True:
            now = loop.time()
            if now >= deadline:
                return None
            try:
                response = await asyncio.wait_for(self._responses.get(), min(deadline, next_send) - now)
            except TimeoutError:
                if loop.time() >= next_send and loop.time() < deadline:
                    self._send(request, self.registrar)
                    interval = min(interval * 2, T2_S)
                    next_send = loop.time() + interval
                continue
            if (response.status or 0) >= 200:
                return response
            interval, next_send = T2_S, loop.time() + T2_S  # provisional: keep going at T2
