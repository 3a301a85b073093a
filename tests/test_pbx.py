"""The PBX: the production Kamailio config (digest per extension, accounts and registrations in
our PostgreSQL), GRUU off in both configs, and registrations learned from the PBX so a phone that
registers is ringable at once. Real Kamailio on the test database; raw SIP from a small digest
client where exact status codes matter, baresip and the service's own SIP agent otherwise."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from routing.presence import Kind, Presence, presence_client
from routing.seed import seed_demo
from routing.sip_accounts import SipAccountError, check_password, ha1, ha1b
from store.pii import PiiVault
from tests.conftest import ROOT, TEST_PII_KEY
from tests.hotline_peer import Earpiece, calls_done, hotline_at
from tests.rtp_pcap import ulaw_sine, write_rtp_pcap
from tests.sip_peers import (
    KAMAILIO_PRODUCTION_CFG,
    Kamailio,
    free_udp_port,
    run_sipp,
    sipp_result,
    start_kamailio,
)
from tests.softphone import Softphone

SH = ZoneInfo("Asia/Shanghai")
TUESDAY_10 = datetime(2026, 11, 24, 10, 0, tzinfo=SH)
REALM = "test-realm"
DOCTOR_PASSWORD = "Correct-Horse-Doc"
ASSISTANT_PASSWORD = "Battery-Staple-Asst"
SERVICE_PASSWORD = "Service-Account-Pw"


# --- a small digest SIP client: exact status codes -------------------------------------------

def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass
class RawPhone:
    """One UDP socket on 127.0.0.1 speaking to the proxy as extension `user`, answering digest
    challenges with `password` (auth user `auth_user`, default `user`)."""

    proxy_port: int
    user: str
    password: str = ""
    auth_user: str = ""
    host: str = "127.0.0.1"  # the address the phone sends from
    sock: socket.socket = field(init=False)
    port: int = field(init=False)
    last_sent: bytes = field(default=b"", init=False)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.host, 0))
        self.port = self.sock.getsockname()[1]
        self.auth_user = self.auth_user or self.user

    def close(self) -> None:
        self.sock.close()

    def _final(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                reply = self.sock.recv(65535).decode(errors="replace")
            except TimeoutError:
                break
            match = re.match(r"SIP/2\.0 (\d{3})", reply)
            if match and int(match.group(1)) >= 200:
                return reply
        return ""

    def _authorization(self, method: str, uri: str, challenge: str) -> tuple[str, str]:
        header = re.search(r"^(WWW|Proxy)-Authenticate: Digest (.*)$", challenge, re.M | re.I)
        assert header, challenge
        params = dict(re.findall(r'(\w+)="?([^",]*)"?', header.group(2)))
        ha2 = _md5(f"{method}:{uri}")
        key = _md5(f"{self.auth_user}:{params['realm']}:{self.password}")
        fields = (f'username="{self.auth_user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
                  f'uri="{uri}", algorithm=MD5')
        if "qop" in params:
            cnonce = uuid.uuid4().hex[:16]
            response = _md5(f"{key}:{params['nonce']}:00000001:{cnonce}:auth:{ha2}")
            fields += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
        else:
            response = _md5(f"{key}:{params['nonce']}:{ha2}")
        name = "Authorization" if header.group(1).lower() == "www" else "Proxy-Authorization"
        return name, f'Digest {fields}, response="{response}"'

    def next_reply(self, timeout_s: float = 3.0) -> str:
        """The next response of any kind ("" if none came)."""
        self.sock.settimeout(timeout_s)
        try:
            return self.sock.recv(65535).decode(errors="replace")
        except TimeoutError:
            return ""

    def request(self, method: str, uri: str, *, to_user: str, extra: str = "", body: str = "",
                authenticate: bool = True, timeout_s: float = 3.0) -> str:
        """Send one request (again with credentials when challenged and `authenticate`); the
        final response, "" if none came."""
        call_id, tag = f"{uuid.uuid4().hex}@127.0.0.1", uuid.uuid4().hex[:8]
        reply = ""
        contact = "" if "Contact:" in extra else f"Contact: <sip:{self.user}@{self.host}:{self.port}>\r\n"
        for cseq in (1, 2):
            auth = ""
            if cseq == 2:
                name, value = self._authorization(method, uri, reply)
                auth = f"{name}: {value}\r\n"
            message = (f"{method} {uri} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                       f"From: <sip:{self.user}@127.0.0.1>;tag={tag}\r\n"
                       f"To: <sip:{to_user}@127.0.0.1>\r\n"
                       f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n"
                       f"{contact}{auth}{extra}"
                       f"Content-Length: {len(body.encode())}\r\n\r\n{body}")
            self.sock.sendto(message.encode(), ("127.0.0.1", self.proxy_port))
            self.last_sent = message.encode()
            reply = self._final(timeout_s)
            if not (authenticate and status(reply) in (401, 407) and cseq == 1):
                return reply
        return reply

    def register(self, aor: str | None = None, *, expires: int = 120, extra: str = "",
                 authenticate: bool = True) -> int:
        reply = self.request("REGISTER", "sip:127.0.0.1", to_user=aor or self.user,
                             extra=f"Expires: {expires}\r\n{extra}", authenticate=authenticate)
        return status(reply)

    def invite(self, target: str, timeout_s: float = 3.0) -> int:
        sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {self.port + 2} RTP/AVP 0\r\n")
        return status(self.request("INVITE", f"sip:{target}@127.0.0.1", to_user=target,
                                   extra="Content-Type: application/sdp\r\n", body=sdp, timeout_s=timeout_s))


def status(reply: str) -> int:
    return int(reply[8:11]) if reply.startswith("SIP/2.0 ") else 0


def busy_callee(phone: RawPhone, timeout_s: float = 3.0) -> str:
    """Wait for one INVITE on this phone's socket, answer it 486; the INVITE's text ("" if none)."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        phone.sock.settimeout(left)
        try:
            data, source = phone.sock.recvfrom(65535)
        except TimeoutError:
            return ""
        text = data.decode(errors="replace")
        if text.startswith("INVITE "):
            heads = [h for h in text.split("\r\n") if h.split(":", 1)[0] in ("Via", "From", "To", "Call-ID", "CSeq")]
            heads = [h + ";tag=busy" if h.startswith("To:") else h for h in heads]
            phone.sock.sendto(("SIP/2.0 486 Busy Here\r\n" + "\r\n".join(heads) +
                               "\r\nContent-Length: 0\r\n\r\n").encode(), source)
            return text
    return ""


# --- fixtures ----------------------------------------------------------------------------------

def set_password_cli(database_url: str, tmp_path: Path, *args: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update(HOTLINE_DATABASE_URL=database_url, HOTLINE_PII_KEY=TEST_PII_KEY,
               HOTLINE_DATA_DIR=str(tmp_path / "data"), HOTLINE_LOG_FORMAT="json",
               HOTLINE_SIP_REALM=REALM)
    return subprocess.run([sys.executable, "-m", "hotline", *args, "--password-stdin"], input=password + "\n",
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


async def staff_no(pool: asyncpg.Pool, ext: str) -> str:
    return await pool.fetchval("SELECT staff_no FROM staff WHERE sip_uri = $1", f"sip:{ext}@127.0.0.1")


@pytest.fixture
async def seeded(pool: asyncpg.Pool, vault: PiiVault) -> asyncpg.Pool:
    await seed_demo(pool, vault, today=TUESDAY_10.date(), tz=SH)
    return pool


@pytest.fixture
async def accounts(seeded: asyncpg.Pool, database_url: str, tmp_path: Path) -> asyncpg.Pool:
    """Passwords for doctor 1001, assistant 2001 and the service, set with the real CLI."""
    for ext, password in (("1001", DOCTOR_PASSWORD), ("2001", ASSISTANT_PASSWORD)):
        done = await asyncio.to_thread(set_password_cli, database_url, tmp_path, "staff", "sip-password",
                                       await staff_no(seeded, ext), password=password)
        assert done.returncode == 0, done.stderr
    done = await asyncio.to_thread(set_password_cli, database_url, tmp_path, "sip-password", "hotline",
                                   password=SERVICE_PASSWORD)
    assert done.returncode == 0, done.stderr
    return seeded


@pytest.fixture
def production_pbx(accounts: asyncpg.Pool, database_url: str, tmp_path: Path) -> Iterator[Kamailio]:
    proxy = start_kamailio(tmp_path / "kamailio", config=KAMAILIO_PRODUCTION_CFG, database_url=database_url,
                           defines={"SIP_REALM": REALM})
    yield proxy
    proxy.stop()


@pytest.fixture
def phones() -> Iterator[list[RawPhone]]:
    made: list[RawPhone] = []
    yield made
    for phone in made:
        phone.close()


async def bindings(pool: asyncpg.Pool, user: str) -> list[str]:
    return [r["contact"] for r in await pool.fetch("SELECT contact FROM location WHERE username = $1", user)]


# --- the production config -------------------------------------------------------------------------

@pytest.mark.sip
async def test_a_phone_registers_and_calls_only_with_its_own_password(
    production_pbx: Kamailio, pool: asyncpg.Pool, phones: list[RawPhone]
) -> None:
    port = production_pbx.port
    doctor = RawPhone(port, "1001", DOCTOR_PASSWORD)
    impostor = RawPhone(port, "1001", "Wrong-Password-Doc")
    assistant = RawPhone(port, "2001", ASSISTANT_PASSWORD)
    phones += [doctor, impostor, assistant]

    assert await asyncio.to_thread(doctor.register, authenticate=False) == 401
    assert await asyncio.to_thread(impostor.register) == 401
    assert await bindings(pool, "1001") == []
    assert await asyncio.to_thread(doctor.register) == 200
    assert await bindings(pool, "1001") == [f"sip:1001@127.0.0.1:{doctor.port}"]

    # calling: the assistant's phone is registered and answers 486 to whatever reaches it
    assert await asyncio.to_thread(assistant.register) == 200
    assert await asyncio.to_thread(impostor.invite, "2001") == 407
    callee = asyncio.create_task(asyncio.to_thread(busy_callee, assistant))
    assert await asyncio.to_thread(doctor.invite, "2001") == 486
    assert "From: <sip:1001@127.0.0.1>" in await callee
    # and nobody calls as someone else: 1001's credentials with 2001 in From
    posing = RawPhone(port, "2001", DOCTOR_PASSWORD, auth_user="1001")
    phones.append(posing)
    assert await asyncio.to_thread(posing.invite, "1001") == 403
    # no password at all: challenged, never relayed
    anonymous = RawPhone(port, "13800000001")
    phones.append(anonymous)
    assert await asyncio.to_thread(anonymous.invite, "hotline") == 407


@pytest.mark.sip
async def test_a_retransmitted_invite_is_not_challenged_again(
    production_pbx: Kamailio, phones: list[RawPhone]
) -> None:
    """On a lossy link the caller resends its INVITE, credentials and all; the nonce is used up,
    so authenticating it again would answer 407 and end the call: the transaction answers."""
    doctor = RawPhone(production_pbx.port, "1001", DOCTOR_PASSWORD)
    silent = RawPhone(production_pbx.port, "2001", ASSISTANT_PASSWORD)  # registered, never answers
    phones += [doctor, silent]
    assert await asyncio.to_thread(silent.register) == 200
    # the INVITE goes out with credentials, reaches the silent phone: no final answer in time
    assert await asyncio.to_thread(doctor.invite, "2001", 0.5) == 0
    assert "Proxy-Authorization" in doctor.last_sent.decode()
    doctor.sock.sendto(doctor.last_sent, ("127.0.0.1", production_pbx.port))
    again = await asyncio.to_thread(doctor.next_reply)
    assert status(again) == 100, again


@pytest.mark.sip
async def test_the_hotline_account_takes_only_the_services_password(
    production_pbx: Kamailio, pool: asyncpg.Pool, phones: list[RawPhone]
) -> None:
    port = production_pbx.port
    hijacker = RawPhone(port, "hotline")
    doctor_as_hotline = RawPhone(port, "1001", DOCTOR_PASSWORD)
    service = RawPhone(port, "hotline", SERVICE_PASSWORD)
    phones += [hijacker, doctor_as_hotline, service]
    assert await asyncio.to_thread(hijacker.register, authenticate=False) == 401
    assert await asyncio.to_thread(hijacker.register) == 401  # an empty password
    # a doctor's valid credentials for someone else's AOR (To: hotline): refused
    assert await asyncio.to_thread(doctor_as_hotline.register, "hotline") == 403
    assert await bindings(pool, "hotline") == []
    assert await asyncio.to_thread(service.register) == 200
    assert await bindings(pool, "hotline") == [f"sip:hotline@127.0.0.1:{service.port}"]


@pytest.mark.sip
async def test_staff_who_left_can_no_longer_register(
    production_pbx: Kamailio, pool: asyncpg.Pool, phones: list[RawPhone]
) -> None:
    doctor = RawPhone(production_pbx.port, "1001", DOCTOR_PASSWORD)
    phones.append(doctor)
    await pool.execute("UPDATE staff SET left_on = $1 WHERE sip_uri = 'sip:1001@127.0.0.1'", date(2026, 1, 1))
    assert await asyncio.to_thread(doctor.register) == 401
    assert await bindings(pool, "1001") == []


@pytest.mark.sip
async def test_the_service_registers_and_is_called_through_the_production_pbx(
    production_pbx: Kamailio, pool: asyncpg.Pool, phones: list[RawPhone]
) -> None:
    from telephony.agent import SipAccount, SipAgent

    sip_port = free_udp_port()
    agent = SipAgent(SipAccount("127.0.0.1", production_pbx.port, "hotline", SERVICE_PASSWORD, sip_port=sip_port,
                                rtp_port_low=sip_port + 1000, rtp_port_high=sip_port + 1100))
    await agent.start()
    try:
        assert await agent.wait_registered(5), production_pbx.log_text()[-3000:]
        [contact] = await bindings(pool, "hotline")
        assert contact.startswith(f"sip:hotline@127.0.0.1:{sip_port}")
        doctor = RawPhone(production_pbx.port, "1001", DOCTOR_PASSWORD)
        phones.append(doctor)
        calling = asyncio.create_task(asyncio.to_thread(doctor.invite, "hotline"))
        leg = await asyncio.wait_for(agent.next_call(), 5)
        await leg.refuse(486, "Busy Here", "test")
        assert await calling == 486
    finally:
        await agent.stop()


# --- GRUU ---------------------------------------------------------------------------------------

GRUU_REGISTER = ('Supported: gruu, path\r\n'
                 'Contact: <sip:{user}@127.0.0.1:{port}>;+sip.instance="<urn:uuid:{uuid}>";expires=120\r\n')


@pytest.mark.sip
@pytest.mark.parametrize("config", ["demo", "production"])
async def test_no_gruu_is_handed_out(config: str, accounts: asyncpg.Pool, database_url: str, tmp_path: Path,
                                     phones: list[RawPhone]) -> None:
    """Linphone uses a public GRUU as its Contact when it gets one; requests to it were lost."""
    if config == "demo":
        proxy = start_kamailio(tmp_path / "kamailio")
        phone = RawPhone(0, "1001")
    else:
        proxy = start_kamailio(tmp_path / "kamailio", config=KAMAILIO_PRODUCTION_CFG, database_url=database_url,
                               defines={"SIP_REALM": REALM})
        phone = RawPhone(0, "1001", DOCTOR_PASSWORD)
    phones.append(phone)
    phone.proxy_port = proxy.port
    try:
        reply = await asyncio.to_thread(
            phone.request, "REGISTER", "sip:127.0.0.1", to_user="1001",
            extra=GRUU_REGISTER.format(user="1001", port=phone.port, uuid=uuid.uuid4()))
    finally:
        proxy.stop()
    assert status(reply) == 200, reply
    assert "gruu" not in reply.lower().replace("supported: gruu", ""), reply


# --- learning registrations ----------------------------------------------------------------------

def test_sip_passwords_are_stored_as_digest_hashes_and_weak_ones_refused() -> None:
    # RFC 2617 §3.2.2.2: HA1 = MD5(username:realm:password)
    assert ha1("1001", "r", "pw") == hashlib.md5(b"1001:r:pw").hexdigest()
    assert ha1b("1001", "r", "pw") == hashlib.md5(b"1001@r:r:pw").hexdigest()
    for weak, why in (("short-1", "at least"), ("my-1001-password", "extension"),
                      ("aaaaaaaaaaaaaaaa", "too few"), (" padded-password ", "spaces"),
                      ("tab\there-password", "control")):
        with pytest.raises(SipAccountError, match=why):
            check_password("1001", weak)
    check_password("1001", DOCTOR_PASSWORD)


async def test_sip_password_cli_keeps_only_hashes_and_refuses_what_it_cannot_set(
    seeded: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    number = await staff_no(seeded, "1001")
    done = await asyncio.to_thread(set_password_cli, database_url, tmp_path, "staff", "sip-password", number,
                                   password=DOCTOR_PASSWORD)
    assert done.returncode == 0, done.stderr
    assert DOCTOR_PASSWORD not in done.stdout + done.stderr
    row = await seeded.fetchrow("SELECT * FROM sip_credentials WHERE username = '1001'")
    assert row["ha1"] == ha1("1001", REALM, DOCTOR_PASSWORD) and row["domain"] == REALM
    dumped = "".join(str(v) for r in await seeded.fetch("SELECT * FROM sip_credentials") for v in r.values())
    assert DOCTOR_PASSWORD not in dumped
    audit = await seeded.fetchrow("SELECT * FROM audit_log WHERE action = 'sip_password.set'")
    assert audit["subject"] == "sip:1001"
    # errors: one line, exit 2, nothing changed
    for args, password, why in (
        (("staff", "sip-password", "XX9999"), DOCTOR_PASSWORD, "no staff member"),
        (("staff", "sip-password", number), "short", "at least 12"),
        (("sip-password", "1001"), DOCTOR_PASSWORD, "not the service's SIP user"),
    ):
        done = await asyncio.to_thread(set_password_cli, database_url, tmp_path, *args, password=password)
        assert done.returncode == 2 and why in done.stderr, done.stderr
    assert await seeded.fetchval("SELECT ha1 FROM sip_credentials WHERE username = '1001'") == row["ha1"]


@pytest.fixture
async def presence(redis_url: str, redis: object) -> Presence:
    client = presence_client(redis_url)
    yield Presence(client, tz=SH)
    await client.aclose()


async def test_a_registration_clears_only_the_unreachable_mark(presence: Presence) -> None:
    await presence.mark_offline(1)
    assert not (await presence.state(1)).ringable
    assert await presence.registered(1)
    assert (await presence.state(1)).ringable
    await presence.set_state(2, "offline")  # the console's: a person's decision stays
    await presence.set_state(3, "dnd")
    await presence.call_started(4, "call-a")
    for staff_id in (2, 3, 4):
        assert not await presence.registered(staff_id)
        assert not (await presence.state(staff_id)).ringable


@pytest.fixture
def registrar_with_db(database_url: str, tmp_path: Path) -> Iterator[Kamailio]:
    """The demo config writing its registrations to the test's database (as `make demo` does)."""
    proxy = start_kamailio(tmp_path / "kamailio", database_url=database_url)
    yield proxy
    proxy.stop()


@pytest.mark.sip
async def test_a_doctor_whose_phone_comes_back_is_rung_by_the_next_call(
    registrar_with_db: Kamailio, database_url: str, pool: asyncpg.Pool, vault: PiiVault, redis: object,
    redis_url: str, tmp_path: Path
) -> None:
    """Doctor 1001's phone is off: the first call finds her unreachable, marks her offline and
    the assistant answers. She turns the phone on: within 2 s of its REGISTER the mark is gone
    (learned from the PBX, not after OFFLINE_TTL_S), and the next call rings her."""
    kamailio = registrar_with_db
    voice = write_rtp_pcap(tmp_path / "440.pcap", ulaw_sine(440, 20))
    async with hotline_at(TUESDAY_10, kamailio=kamailio, database_url=database_url, pool=pool, vault=vault,
                          pii_key=TEST_PII_KEY, data_dir=tmp_path / "data", ring_timeout_s=4.0,
                          redis_url=redis_url) as hotline:
        registrations = hotline.service.registrations
        assert registrations is not None and registrations.listening
        presence = Presence(presence_client(redis_url), tz=SH)
        doctor_id = await pool.fetchval("SELECT id FROM staff WHERE sip_uri = 'sip:1001@127.0.0.1'")
        assistant = await Softphone("2001", kamailio.port, tmp_path / "phone-2001").start()
        doctor = Softphone("1001", kamailio.port, tmp_path / "phone-1001")
        try:
            code, out = await sipp_result(await talk(kamailio, voice), timeout_s=40)
            assert code == 0, out
            await calls_done(hotline)
            assert assistant.answered_calls == 1
            assert (await presence.state(doctor_id)).kind == Kind.OFFLINE

            await doctor.start()  # registered: the PBX said 200 OK
            await registrations.wait_handled("1001", timeout_s=2.0)
            assert (await presence.state(doctor_id)).ringable

            code, out = await sipp_result(await talk(kamailio, voice), timeout_s=40)
            assert code == 0, out
            await calls_done(hotline)
            assert doctor.answered_calls == 1
            assert assistant.incoming_calls == 1
        finally:
            await doctor.stop()
            await assistant.stop()
            await presence.client.aclose()
    attempts = await pool.fetch("SELECT sip_uri, outcome FROM dial_attempts ORDER BY call_record_id, seq")
    assert [(a["sip_uri"], a["outcome"]) for a in attempts] == [
        ("sip:1001@127.0.0.1", "unreachable"), ("sip:2001@127.0.0.1", "answered"),
        ("sip:1001@127.0.0.1", "answered")]


async def talk(kamailio: Kamailio, voice: Path) -> asyncio.subprocess.Process:
    """Zhang Guilan calls the hotline, presses 1 and talks for a few seconds."""
    ear = Earpiece()
    try:
        return await run_sipp("resident_talks_to_doctor.xml", kamailio.port, service="hotline",
                              caller="13800000001", timeout_s=40,
                              keys={"rtp_port": str(ear.port), "voice_pcap": str(voice)})
    finally:
        ear.close()


def test_kamailio_gets_the_database_as_its_url_parser_takes_it() -> None:
    from hotline.cli_sip import kamailio_database

    assert kamailio_database("postgresql://postgres:@/hotline?host=/run/pg") == (
        "postgres://postgres@/hotline", {"PGHOST": "/run/pg"})
    # the password stays out of the URL (and so out of Kamailio's command line): ~/.pgpass
    assert kamailio_database("postgresql://kam:s%40cret@db.example:6432/hotline") == (
        "postgres://kam@db.example:6432/hotline", {})
    with pytest.raises(SipAccountError):
        kamailio_database("mysql://x@y/z")


TRUNK = "127.0.0.2"  # the PSTN gateway: residents' calls come from this address


@pytest.mark.sip
async def test_a_residents_call_reaches_a_doctor_through_the_production_pbx(
    accounts: asyncpg.Pool, database_url: str, pool: asyncpg.Pool, vault: PiiVault, redis: object,
    redis_url: str, tmp_path: Path, phones: list[RawPhone]
) -> None:
    """The whole production path: the resident's call comes from the trunk unauthenticated, the
    service (registered with its password) dials the doctor and answers the PBX's 407 with its
    credentials, the doctor's baresip registered with hers answers. From elsewhere, an
    unauthenticated call is challenged; from the trunk, only the hotline's numbers are reached."""
    proxy = start_kamailio(tmp_path / "kamailio", config=KAMAILIO_PRODUCTION_CFG, database_url=database_url,
                           defines={"SIP_REALM": REALM, "TRUNK_NET": f"{TRUNK}/32"})
    voice = write_rtp_pcap(tmp_path / "440.pcap", ulaw_sine(440, 20))
    try:
        async with hotline_at(TUESDAY_10, kamailio=proxy, database_url=database_url, pool=pool, vault=vault,
                              pii_key=TEST_PII_KEY, data_dir=tmp_path / "data", ring_timeout_s=4.0,
                              redis_url=redis_url, sip_password=SERVICE_PASSWORD, seed=False) as hotline:
            doctor = await Softphone("1001", proxy.port, tmp_path / "phone-1001",
                                     auth_pass=DOCTOR_PASSWORD).start()
            try:
                ear = Earpiece()
                try:
                    sipp = await run_sipp("resident_talks_to_doctor.xml", proxy.port, service="hotline",
                                          caller="13800000001", timeout_s=40, local_ip=TRUNK,
                                          keys={"rtp_port": str(ear.port), "voice_pcap": str(voice)})
                finally:
                    ear.close()
                code, out = await sipp_result(sipp, timeout_s=40)
                assert code == 0, out + proxy.log_text()[-3000:]
                await calls_done(hotline)
                assert doctor.answered_calls == 1
            finally:
                await doctor.stop()
            # the trunk reaches the hotline only; anyone else must authenticate
            trunk = RawPhone(proxy.port, "13800000002", host=TRUNK)
            stranger = RawPhone(proxy.port, "13800000002")
            phones += [trunk, stranger]
            assert await asyncio.to_thread(trunk.invite, "1001") == 403
            assert await asyncio.to_thread(stranger.invite, "hotline") == 407
    finally:
        proxy.stop()


async def test_any_pbx_that_writes_its_registrations_makes_a_phone_ringable_at_once(
    seeded: asyncpg.Pool, database_url: str, presence: Presence
) -> None:
    """What another PBX (Asterisk, FreeSWITCH) must do: insert or update the binding in
    `location` (or NOTIFY sip_registrations, '<extension>' itself)."""
    from routing.registrations import RegistrationListener

    pool = seeded
    doctor_id = await pool.fetchval("SELECT id FROM staff WHERE sip_uri = 'sip:1001@127.0.0.1'")
    assistant_id = await pool.fetchval("SELECT id FROM staff WHERE sip_uri = 'sip:2001@127.0.0.1'")
    # registered before the service listened: counted when it starts
    await pool.execute("INSERT INTO location (ruid, username, contact) VALUES ('r0', '2001', 'sip:2001@pbx')")
    await presence.mark_offline(assistant_id)
    await presence.mark_offline(doctor_id)
    listener = RegistrationListener(pool, database_url, presence)
    assert await listener.start()
    try:
        await listener.wait_handled("2001", timeout_s=2.0)
        assert (await presence.state(assistant_id)).ringable
        assert not (await presence.state(doctor_id)).ringable
        await pool.execute("INSERT INTO location (ruid, username, contact) VALUES ('r1', '1001', 'sip:1001@pbx')")
        await listener.wait_handled("1001", timeout_s=2.0)
        assert (await presence.state(doctor_id)).ringable
        # a re-registration (UPDATE) counts too; unknown names are ignored
        await presence.mark_offline(doctor_id)
        listener.handled.clear()
        await pool.execute("INSERT INTO location (ruid, username, contact) VALUES ('r2', 'nobody', 'sip:x@pbx')")
        await pool.execute("UPDATE location SET cseq = cseq + 1 WHERE ruid = 'r1'")
        await listener.wait_handled("1001", timeout_s=2.0)
        assert (await presence.state(doctor_id)).ringable
        assert "nobody" in listener.handled
    finally:
        await listener.stop()


@pytest.mark.sip
async def test_kamailio_needs_only_the_documented_grants(
    accounts: asyncpg.Pool, database_url: str, pg_admin_url: str, tmp_path: Path, phones: list[RawPhone]
) -> None:
    """docker/kamailio/kamailio-grants.sql is enough for the production config: a role with just
    those rights authenticates phones and keeps registrations, and cannot read the staff table."""
    from urllib.parse import urlsplit, urlunsplit

    from store import db

    role = f"kamailio_test_{os.getpid()}"
    grants = (ROOT / "docker" / "kamailio" / "kamailio-grants.sql").read_text().replace("TO kamailio", f"TO {role}")
    async with db.connection(pg_admin_url) as admin:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        await accounts.execute(grants)
        parts = urlsplit(database_url)
        as_role = urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname or ''}"))
        async with db.connection(as_role) as conn:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch("SELECT * FROM staff")
        proxy = start_kamailio(tmp_path / "kamailio", config=KAMAILIO_PRODUCTION_CFG, database_url=as_role,
                               defines={"SIP_REALM": REALM})
        try:
            doctor = RawPhone(proxy.port, "1001", DOCTOR_PASSWORD)
            phones.append(doctor)
            assert await asyncio.to_thread(doctor.register) == 200, proxy.log_text()[-2000:]
            assert await asyncio.to_thread(doctor.register, expires=0) == 200
        finally:
            proxy.stop()
        assert "ERROR" not in proxy.log_text(), proxy.log_text()[-3000:]
    finally:
        await accounts.execute(f"REVOKE ALL ON sip_subscribers, version, location FROM {role}; "
                               f"REVOKE ALL ON SEQUENCE location_id_seq FROM {role}")
        async with db.connection(pg_admin_url) as admin:
            await admin.execute(f"DROP ROLE IF EXISTS {role}")
