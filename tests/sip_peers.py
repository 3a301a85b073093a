"""Real SIP peers for tests: Kamailio as the record-routing registrar, sipp as the resident.

Everything listens on 127.0.0.1 on ports picked free at start; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from telephony.agent import InboundLeg, SipAgent

ROOT = Path(__file__).resolve().parent.parent
KAMAILIO_CFG = ROOT / "docker" / "kamailio" / "kamailio.cfg"
KAMAILIO_PRODUCTION_CFG = ROOT / "docker" / "kamailio" / "kamailio-production.cfg"
SIPP_SCENARIOS = Path(__file__).resolve().parent / "sipp"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_media_port() -> int:
    """A base for sipp's `-mp`: sipp binds audio RTP there and video RTP two above (and each
    one's RTCP beside it), so all four must be free — a base free alone once met a video port in
    use ("Unable to bind video RTP socket … errno 98") and failed a call in CI."""
    for _ in range(100):
        base = free_udp_port() & ~1
        held: list[socket.socket] = []
        try:
            for port in range(base, base + 4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError("no four free UDP ports in a row for sipp's media")


def rtp_packet(seq: int, payload: bytes, ssrc: int = 0x1234) -> bytes:
    """A PCMU RTP packet as a resident's phone would send it."""
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + payload


def _answers_sip(port: int) -> bool:
    """Any reply to an OPTIONS means the proxy is up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.bind(("127.0.0.1", 0))
        me = s.getsockname()[1]
        s.sendto(
            (f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
             f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKping{me}\r\n"
             "From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:ping@127.0.0.1>\r\n"
             f"Call-ID: probe-{me}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
             "Content-Length: 0\r\n\r\n").encode(),
            ("127.0.0.1", port),
        )
        try:
            return s.recv(4096).startswith(b"SIP/2.0")
        except TimeoutError:
            return False


class LossyLink:
    """A UDP hop between one user agent and the proxy that loses chosen requests, as a real
    network does: the agent registers at `port` instead of the proxy's, everything it sends is
    passed on to the proxy and everything the proxy sends back is passed to it, except the first
    `drop` requests of each method in `lose` (counted in `dropped`). `seen` counts every request
    the agent sent through the link, by method."""

    def __init__(self, proxy_port: int, lose: dict[str, int]):
        self.proxy = ("127.0.0.1", proxy_port)
        self.lose = dict(lose)
        self.seen: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.agent: tuple[str, int] | None = None
        self._open = True
        self._thread = threading.Thread(target=self._pass, name="lossy-link", daemon=True)
        self._thread.start()

    def _pass(self) -> None:
        while self._open:
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if source == self.proxy:
                if self.agent is not None:
                    self.sock.sendto(data, self.agent)
                continue
            self.agent = source
            method = data.split(b" ", 1)[0].decode("ascii", "replace")
            if not method.startswith("SIP/"):
                self.seen[method] = self.seen.get(method, 0) + 1
                if self.lose.get(method, 0) > 0:
                    self.lose[method] -= 1
                    self.dropped[method] = self.dropped.get(method, 0) + 1
                    continue
            self.sock.sendto(data, self.proxy)

    def close(self) -> None:
        self._open = False
        self._thread.join(1)
        self.sock.close()


@dataclass
class Kamailio:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL or a CI
    timeout, so a killed run leaves no proxy behind (Kamailio then stops its own workers)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start_kamailio(rundir: Path, port: int | None = None, register_password: str | None = None,
                   *, config: Path = KAMAILIO_CFG, database_url: str | None = None,
                   defines: dict[str, str] | None = None) -> Kamailio:
    """Kamailio on 127.0.0.1:port; with `register_password`, REGISTER is digest-challenged.
    `database_url` (the test's database) is passed as DBURL: registrations are written there
    (and the production config reads its accounts there); `defines` adds -A NAME="value"."""
    from hotline.cli_sip import kamailio_database

    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    port = port or free_udp_port()
    defines = dict(defines or {})
    env = dict(os.environ)
    if database_url:
        defines["DBURL"], pg_env = kamailio_database(database_url)
        env.update(pg_env)
    args = ["-A", "WITH_AUTH", "-A", f'REGISTER_PASSWORD="{register_password}"'] if register_password else []
    for name, value in defines.items():
        args += ["-A", f'{name}="{value}"']
    rundir.mkdir(parents=True, exist_ok=True)
    log = rundir / "kamailio.log"
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [binary, "-f", str(config), "-l", f"udp:127.0.0.1:{port}", "-Y", str(rundir),
             "-P", str(rundir / "kamailio.pid"), "-D", "-E", *args],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            preexec_fn=_die_with_parent,
        )
    proxy = Kamailio(port, process, log)
    for _ in range(50):  # bounded: 5 s
        if process.poll() is not None:
            raise RuntimeError(f"kamailio exited at start:\n{proxy.log_text()[-2000:]}")
        if _answers_sip(port):
            return proxy
        time.sleep(0.1)
    proxy.stop()
    raise RuntimeError(f"kamailio did not answer on 127.0.0.1:{port}:\n{proxy.log_text()[-2000:]}")


@pytest.fixture(scope="session")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    proxy = start_kamailio(tmp_path_factory.mktemp("kamailio"))
    yield proxy
    proxy.stop()


async def run_sipp(scenario: str, proxy_port: int, *, service: str, caller: str,
                   timeout_s: float = 20, keys: dict[str, str] | None = None,
                   local_ip: str = "127.0.0.1") -> asyncio.subprocess.Process:
    """Start one sipp call of a scenario in tests/sipp/ through the proxy; await .wait() for it."""
    extra = [arg for key, value in (keys or {}).items() for arg in ("-key", key, value)]
    return await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{proxy_port}", "-sf", str(SIPP_SCENARIOS / scenario),
        "-i", local_ip, "-p", str(free_udp_port()), "-mp", str(free_media_port()),
        "-s", service, "-key", "caller", caller, *extra, "-m", "1",
        "-timeout", f"{int(timeout_s)}s", "-timeout_error", "-nostdin",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )


async def sipp_result(process: asyncio.subprocess.Process, timeout_s: float = 30) -> tuple[int, str]:
    out, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    return process.returncode or 0, out.decode(errors="replace")


async def answer_one_call(agent: SipAgent, proxy: Kamailio, caller: str) -> InboundLeg:
    """A resident calls through the proxy, we answer, the resident hangs up (BYE via the route
    set from our 200 OK's Record-Route); sipp fails unless every step happened."""
    sipp = await run_sipp("resident_hangs_up.xml", proxy.port, service="hotline", caller=caller)
    leg = await asyncio.wait_for(agent.next_call(), 10)
    await leg.answer()
    await asyncio.wait_for(leg.ended.wait(), 10)
    code, out = await sipp_result(sipp)
    assert code == 0, out + proxy.log_text()[-3000:]
    return leg


@pytest.fixture
async def agent(kamailio: Kamailio) -> AsyncIterator[SipAgent]:
    """The service's SIP agent, registered as `hotline` at the test Kamailio."""
    from telephony.agent import SipAccount, SipAgent

    port = free_udp_port()
    sip = SipAgent(SipAccount("127.0.0.1", kamailio.port, "hotline", "", sip_port=port,
                              rtp_port_low=port + 1000, rtp_port_high=port + 1100))
    await sip.start()
    yield sip
    await sip.stop()
