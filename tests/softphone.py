"""Doctors' phones for tests: baresip as a real softphone, sipp as scripted doctors.

A `Softphone` is one baresip 1.0 process registered at the test Kamailio as extension EXT
(sip:EXT@127.0.0.1, no password). It speaks G.711, sends a sine tone as its voice (ausine) and
records what it hears to WAV (sndfile), so a test can prove audio crossed the hotline in both
directions. It is driven over ctrl_tcp (netstring-framed JSON), whose events — CALL_INCOMING,
CALL_ESTABLISHED, CALL_CLOSED... — a reader thread collects and reacts to:

- mode "answer": picks up every incoming call, after `answer_after` seconds;
- mode "ring":   never picks up; rings (180) until the caller CANCELs (487);
- mode "busy":   refuses every incoming call with 486 (baresip's reject of a ringing call;
                  baresip has sent 180 Ringing by then — for a bare 486, doctor_busy.xml).

`mode` and `answer_after` are read at each incoming call, so a test may change them between
calls (busy for the first attempt, answering the retry).

`modules` picks the module set: "tests" (the default here: only what a headless test phone
needs — no `uuid`, so no +sip.instance and an empty `Supported:` header in its INVITEs) or
"default" (the modules Debian's baresip 1.0 writes into a fresh config — uuid, stun, turn, ice,
contact, auloop, debug_cmd — with files instead of the sound card and ctrl_tcp instead of the
terminal). Both can dial (the resident's phone) and press keys (`send_digits`, RFC 4733).

The reactions run in the reader thread, not on the event loop, so a doctor answers even while
a test awaits something slow or blocks the loop for a moment.

A `SippDoctor` (start_sipp_doctor) is a sipp UAS scenario from tests/sipp/doctor_*.xml bound to
its own port, registered at the proxy as EXT with that port as Contact: busy (486), rings
forever (180 until CANCEL) or answers (200, then a 1 kHz tone as RTP until the caller's BYE).
Unlike the softphone it checks the SIP exchange itself: sipp exits non-zero on any deviation.

Everything listens on 127.0.0.1 on ports picked free at start; every wait is bounded; every
process gets SIGTERM when the test process dies (PR_SET_PDEATHSIG) and is stopped at teardown,
unregistering its extension so that a later test's INVITE is not forked to a dead binding.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.sip_peers import (
    SIPP_SCENARIOS,
    Kamailio,
    _die_with_parent,
    free_media_port,
    free_udp_port,
)
from tests.tones import ulaw_tone

BARESIP = shutil.which("baresip") or "/usr/bin/baresip"
BARESIP_MODULES = Path("/usr/lib/baresip/modules")
Mode = Literal["answer", "ring", "busy"]
MODES: tuple[Mode, ...] = ("answer", "ring", "busy")
Modules = Literal["tests", "default"]
# The modules of Debian baresip 1.0's generated config that a headless phone can load
# (stdio, alsa and vidloop need a terminal, a sound card and a camera: files and ctrl_tcp
# stand in for them). uuid gives the UA an instance id (+sip.instance, Supported: gruu...).
_DEFAULT_EXTRA_MODULES = """\
module			stun.so
module			turn.so
module			ice.so
module_tmp		uuid.so
module_app		auloop.so
module_app		contact.so
module_app		debug_cmd.so
"""
# what the fixtures yield: softphone("7101", mode=..., ...) / sipp_doctor("doctor_busy.xml", "7201")
SoftphoneFactory = Callable[..., Awaitable["Softphone"]]
SippDoctorFactory = Callable[..., Awaitable["SippDoctor"]]

# baresip prints this when the registrar accepted the REGISTER, e.g.
# "7101@127.0.0.1: {0/UDP/v4} 200 OK (kamailio (5.6.3 (x86_64/linux))) [1 binding]"
_REGISTERED = r"{ext}@127\.0\.0\.1: \{{\d+/UDP/v4\}} 200 OK"
# Short directories the dumps of baresip's sndfile go to (Softphone._short_recordings).
_SHORT_DIRS: list[Path] = []
atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _SHORT_DIRS])

# sndfile names its dumps by the local time the call's audio started, to the second
_DUMP = re.compile(r"dump-\d{4}(?:-\d\d){5}-(dec|enc)\.wav")


def _tcp_port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_baresip_sip_port() -> int:
    """A port P for baresip's sip_listen: it binds UDP and TCP on P and SIP/TLS on TCP P+1
    (no config turns TCP/TLS off in 1.0), so all three must be free."""
    for _ in range(50):  # bounded; a clash is rare
        port = free_udp_port()
        if port < 65535 and _tcp_port_free(port) and _tcp_port_free(port + 1):
            return port
    raise RuntimeError("no free port P with UDP P, TCP P and TCP P+1 on 127.0.0.1")


# --- plain SIP probes through the proxy ------------------------------------------------------

def _sip_transaction(proxy_port: int, request: Callable[[int, str], str],
                     timeout_s: float) -> int:
    """Send one request built by request(our_port, branch) to the proxy; its final status code,
    0 if none came in time (provisional responses are skipped)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        me = s.getsockname()[1]
        s.sendto(request(me, f"z9hG4bK{uuid.uuid4().hex}").encode(), ("127.0.0.1", proxy_port))
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                reply = s.recv(65535).decode(errors="replace")
            except TimeoutError:
                break
            match = re.match(r"SIP/2\.0 (\d{3})", reply)
            if match and int(match.group(1)) >= 200:
                return int(match.group(1))
    return 0


def sip_register(proxy_port: int, ext: str, contact_port: int, expires: int = 120,
                 timeout_s: float = 2.0) -> int:
    """REGISTER sip:EXT@127.0.0.1 with Contact sip:EXT@127.0.0.1:contact_port at the proxy
    (expires=0 removes that binding). Returns the registrar's status code (0: no answer).
    The Contact, not the source port, is what the proxy routes INVITEs to."""
    def request(me: int, branch: str) -> str:
        return (f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={branch}\r\n"
                f"From: <sip:{ext}@127.0.0.1>;tag={uuid.uuid4().hex[:10]}\r\n"
                f"To: <sip:{ext}@127.0.0.1>\r\n"
                f"Call-ID: reg-{uuid.uuid4().hex}\r\nCSeq: 1 REGISTER\r\n"
                f"Contact: <sip:{ext}@127.0.0.1:{contact_port}>;expires={expires}\r\n"
                f"Expires: {expires}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    return _sip_transaction(proxy_port, request, timeout_s)


def options_status(proxy_port: int, ext: str, timeout_s: float = 2.0) -> int:
    """Status of an OPTIONS for sip:EXT@127.0.0.1 through the proxy: 404 when the proxy knows
    no binding for EXT, else whatever the registered phone answers (baresip: 200). Do not
    probe a SippDoctor this way: its scenario would take the OPTIONS for a call and fail."""
    def request(me: int, branch: str) -> str:
        return (f"OPTIONS sip:{ext}@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={branch}\r\n"
                f"From: <sip:probe@127.0.0.1>;tag={uuid.uuid4().hex[:10]}\r\n"
                f"To: <sip:{ext}@127.0.0.1>\r\n"
                f"Call-ID: opt-{uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\n"
                f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    return _sip_transaction(proxy_port, request, timeout_s)


# --- baresip ---------------------------------------------------------------------------------

class _Control:
    """The one ctrl_tcp connection baresip allows (a second one replaces the first): commands
    out, responses and events in, read by a daemon thread until close() or EOF."""

    def __init__(self, port: int, on_event: Callable[[dict[str, Any]], None]) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=1)
        self._sock.settimeout(0.1)  # the reader wakes up this often to notice close()
        # baresip writes an event burst in small segments; with Nagle on its side and delayed
        # ACKs on ours, every second one would reach us 40 ms late (and so would "at").
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._quickack()
        self._on_event = on_event
        self._send_lock = threading.Lock()
        self._responses: dict[str, dict[str, Any]] = {}
        self._tokens = iter(range(1, 1 << 30))
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"baresip-ctrl-{port}",
                                        daemon=True)
        self._thread.start()

    def send(self, command: str, params: str | None = None) -> str:
        """Send a command without waiting; its token, to look the response up with."""
        with self._send_lock:
            token = f"t{next(self._tokens)}"
            message: dict[str, str] = {"command": command, "token": token}
            if params:
                message["params"] = params
            body = json.dumps(message).encode()
            self._sock.sendall(b"%d:%s," % (len(body), body))
        return token

    def response(self, token: str) -> dict[str, Any] | None:
        return self._responses.pop(token, None)

    def _quickack(self) -> None:
        # Linux turns quick ACKs off again after a while: re-armed after every read
        with contextlib.suppress(AttributeError, OSError):
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(2)
        self._sock.close()

    def _read(self) -> None:
        buffer = b""
        while not self._closed.is_set():
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return  # baresip exited
            self._quickack()
            buffer += chunk
            while (colon := buffer.find(b":")) > 0:  # netstrings: LEN ":" BODY ","
                length = int(buffer[:colon])
                if len(buffer) < colon + length + 2:
                    break
                message = json.loads(buffer[colon + 1:colon + 1 + length])
                buffer = buffer[colon + length + 2:]
                if message.get("response"):
                    self._responses[str(message.get("token"))] = message
                elif message.get("event"):
                    self._on_event(message)


@dataclass
class Softphone:
    """One baresip process as doctor EXT's softphone; see the module docstring. Use
    `async with Softphone(...) as phone` or the `softphone` fixture; both stop it after."""

    ext: str
    proxy_port: int
    workdir: Path
    mode: Mode = "answer"
    tone_hz: int = 1000  # what this doctor "says": a sine from baresip's ausine source
    answer_after: float = 0.0  # seconds of ringing before an "answer" phone picks up
    codecs: str | None = "pcmu"  # baresip audio_codecs, in order of preference; None: all loaded
    modules: Modules = "tests"
    auth_pass: str = ""  # the extension's digest password, when the proxy challenges
    # picked at start():
    sip_port: int = field(default=0, init=False)
    ctrl_port: int = field(default=0, init=False)
    rtp_ports: tuple[int, int] = field(default=(0, 0), init=False)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _control: _Control | None = field(default=None, init=False, repr=False)
    _events: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _timers: list[threading.Timer] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _closed_calls: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: one of {MODES}")
        if self.modules not in ("tests", "default"):
            raise ValueError(f"modules {self.modules!r}: 'tests' or 'default'")
        self.workdir = Path(self.workdir)

    @property
    def uri(self) -> str:
        return f"sip:{self.ext}@127.0.0.1"

    @property
    def log(self) -> Path:
        return self.workdir / "baresip.log"

    @property
    def recordings(self) -> Path:
        return self.workdir / "recordings"  # a link to a short directory: see _short_recordings

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- lifecycle --

    async def start(self, timeout_s: float = 10.0) -> Softphone:
        """Start baresip, connect ctrl_tcp and wait until the proxy accepted its REGISTER.
        Retried on a port clash (ports are picked free, then bound by baresip a moment later)."""
        deadline = time.monotonic() + timeout_s
        for attempt in range(3):
            self._spawn()
            try:
                await self._connect(deadline)
                await self.wait_registered(max(deadline - time.monotonic(), 0.1))
                return self
            except (RuntimeError, TimeoutError):
                clash = "Address already in use" in self.log_text()
                await self.stop()
                if not clash or attempt == 2 or time.monotonic() >= deadline:
                    raise
        raise AssertionError("unreachable")

    def _short_recordings(self) -> None:
        """baresip 1.0's sndfile builds each dump's path in a fixed 128-byte buffer: under
        pytest's default base (/tmp/pytest-of-root/pytest-N/<test>/…) the name was cut before
        "-dec.wav" and both dumps went to one file. The dumps go to a short directory of their
        own, linked from the work directory; removed when the test process ends."""
        if self.recordings.exists():
            return
        short = Path(tempfile.mkdtemp(prefix="bsr-"))
        _SHORT_DIRS.append(short)
        self.recordings.symlink_to(short, target_is_directory=True)

    def _spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._short_recordings()
        self.sip_port = free_baresip_sip_port()
        self.ctrl_port = free_tcp_port()
        rtp_low = free_udp_port() & ~1  # RTP on even ports, RTCP on the odd one above
        self.rtp_ports = (rtp_low, min(rtp_low + 19, 65535))
        self._write_config()
        self._events.clear()
        with self.log.open("wb") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [BARESIP, "-f", str(self.workdir)],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            )

    def _write_config(self) -> None:
        # Only the modules a headless test phone needs; what baresip 1.0 insists on:
        # - net_interface takes the address: "lo" fails ("could not get network address");
        # - ausine only runs at 48 kHz stereo (ausrc_srate/ausrc_channels), baresip resamples
        #   to the codec's 8 kHz mono;
        # - no audio player: received audio is decoded and passes the sndfile filter (which
        #   dumps it to snd_path) even without one;
        # - audio_path points nowhere, so the menu's ring/busy sounds fail to load (a log line
        #   each) instead of needing a sound card;
        # - statmode_default off: else the menu writes a call-status line to stdout 10 times
        #   a second.
        (self.workdir / "config").write_text(f"""\
poll_method		epoll
sip_listen		127.0.0.1:{self.sip_port}
net_interface		127.0.0.1
call_local_timeout	120
call_max_calls		4
audio_path		{self.workdir / "no-sounds"}
audio_source		ausine,{self.tone_hz}
ausrc_srate		48000
ausrc_channels		2
audio_buffer		20-160
rtp_ports		{self.rtp_ports[0]}-{self.rtp_ports[1]}
module_path		{BARESIP_MODULES}
module			g711.so
module			ausine.so
module			sndfile.so
{_DEFAULT_EXTRA_MODULES if self.modules == "default" else ""}\
module_tmp		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		127.0.0.1:{self.ctrl_port}
snd_path		{self.recordings.resolve()}
statmode_default	off
""")
        # answermode=manual for every mode: the reader thread answers or rejects, so incoming
        # calls are counted the same way whatever the mode (auto answer raises no CALL_INCOMING).
        (self.workdir / "accounts").write_text(
            f'<{self.uri}>;outbound="sip:127.0.0.1:{self.proxy_port}";answermode=manual;'
            + (f"audio_codecs={self.codecs};" if self.codecs else "") + "regint=120"
            + (f";auth_pass={self.auth_pass}" if self.auth_pass else "") + "\n")

    async def _connect(self, deadline: float) -> None:
        while True:
            self._check_running("starting")
            try:
                self._control = _Control(self.ctrl_port, self._on_event)
                return
            except OSError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"baresip ctrl_tcp on 127.0.0.1:{self.ctrl_port} "
                                       f"did not accept:\n{self.log_text()[-2000:]}") from None
                await asyncio.sleep(0.05)

    def _check_running(self, doing: str) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"baresip for {self.ext} is not running ({doing}):\n"
                               f"{self.log_text()[-2000:]}")

    async def wait_registered(self, timeout_s: float = 5.0) -> None:
        """Until the proxy has answered baresip's REGISTER with 200 OK (so Kamailio routes
        sip:EXT@127.0.0.1 here): seen in baresip's log or as a REGISTER_OK event."""
        pattern = re.compile(_REGISTERED.format(ext=re.escape(self.ext)))
        deadline = time.monotonic() + timeout_s
        while not (pattern.search(self.log_text()) or self.events("REGISTER_OK")):
            self._check_running("registering")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.ext} not registered in {timeout_s} s:\n"
                                   f"{self.log_text()[-2000:]}")
            await asyncio.sleep(0.05)

    async def known_to_proxy(self) -> bool:
        """Whether the proxy still has a binding for EXT (an OPTIONS through it is not 404).
        After stop() it must not: baresip unregisters on SIGTERM."""
        return await asyncio.to_thread(options_status, self.proxy_port, self.ext) != 404

    async def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (baresip then unregisters and exits), SIGKILL if it lingers."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(process.wait, timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await asyncio.to_thread(process.wait, 5)
        if self._control is not None:
            await asyncio.to_thread(self._control.close)
            self._control = None

    async def __aenter__(self) -> Softphone:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- control --

    async def command(self, command: str, params: str | None = None,
                      timeout_s: float = 3.0) -> dict[str, Any]:
        """Run a baresip command (as typed in its menu, e.g. "dial", "hangup", "reginfo") and
        return its response {"ok": bool, "data": str}; raises if baresip does not answer."""
        self._check_running(command)
        assert self._control is not None
        token = self._control.send(command, params)
        deadline = time.monotonic() + timeout_s
        while (response := self._control.response(token)) is None:
            if time.monotonic() >= deadline or not self._control.alive:
                raise TimeoutError(f"baresip {self.ext} did not answer {command!r}:\n"
                                   f"{self.log_text()[-2000:]}")
            await asyncio.sleep(0.02)
        return response

    async def dial(self, target: str) -> None:
        """Call an extension ("hotline") or a SIP URI, through the proxy."""
        uri = target if target.startswith("sip:") else f"sip:{target}@127.0.0.1"
        response = await self.command("dial", uri)
        assert response.get("ok"), f"dial {uri}: {response}"

    async def answer(self) -> None:
        """Pick up the ringing call now (for a "ring" phone that a test decides to answer)."""
        await self.command("accept")

    async def hangup(self) -> None:
        """End the current call: BYE when established, CANCEL when still calling out, 486 when
        an incoming call is still ringing."""
        await self.command("hangup")

    async def send_digits(self, keys: str) -> None:
        """Press keys in the current call (RFC 4733 telephone-events), one after another."""
        for key in keys:
            response = await self.command("sndcode", key)
            assert response.get("ok"), f"sndcode {key}: {response}"

    # -- what happened --

    def _on_event(self, event: dict[str, Any]) -> None:
        """In the reader thread: the doctor's reflexes, then the record."""
        kind = event.get("type")
        if kind == "CALL_INCOMING":
            if self.mode == "busy":
                self._send_soon("hangup", 0)  # an incoming call still ringing: 486
            elif self.mode == "answer":
                self._send_soon("accept", self.answer_after)
        elif kind == "CALL_CLOSED":
            self._keep_recordings()
        with self._lock:
            event["at"] = time.monotonic()
            self._events.append(event)

    def _send_soon(self, command: str, delay: float) -> None:
        control = self._control

        def send() -> None:
            if control is not None and control.alive:
                with contextlib.suppress(OSError):
                    control.send(command)

        if delay <= 0:
            send()
            return
        timer = threading.Timer(delay, send)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _keep_recordings(self) -> None:
        """sndfile names dumps by the second the call's audio started, so a second call in the
        same second would overwrite the first's. A closed call's dumps are therefore renamed
        call-NN-received.wav / call-NN-sent.wav (the file stays open to baresip until it is
        done: a rename keeps the inode)."""
        self._closed_calls += 1
        for path in sorted(self.recordings.glob("dump-*.wav")):
            match = _DUMP.fullmatch(path.name)
            if match:
                what = "received" if match.group(1) == "dec" else "sent"
                with contextlib.suppress(OSError):
                    path.rename(path.with_name(f"call-{self._closed_calls:02d}-{what}.wav"))

    def events(self, kind: str | None = None, direction: str | None = None
               ) -> list[dict[str, Any]]:
        """ctrl_tcp events so far (type e.g. CALL_INCOMING, CALL_ESTABLISHED, CALL_CLOSED;
        direction "incoming"/"outgoing"), oldest first; each with "at" (time.monotonic())."""
        with self._lock:
            return [e for e in self._events
                    if (kind is None or e.get("type") == kind)
                    and (direction is None or e.get("direction") == direction)]

    @property
    def incoming_calls(self) -> int:
        """Calls that reached this phone (rang), whatever became of them."""
        return len(self.events("CALL_INCOMING"))

    @property
    def answered_calls(self) -> int:
        """Incoming calls this phone picked up (established)."""
        return len(self.events("CALL_ESTABLISHED", "incoming"))

    @property
    def closed_calls(self) -> int:
        return len(self.events("CALL_CLOSED"))

    async def wait_event(self, kind: str, *, direction: str | None = None, count: int = 1,
                         timeout_s: float = 10.0) -> dict[str, Any]:
        """Until `count` events of this type (and direction) have come; the count-th."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.events(kind, direction)) < count:
            if time.monotonic() >= deadline:
                seen = [e.get("type") for e in self.events()]
                raise TimeoutError(f"{self.ext}: {count} x {kind} ({direction or 'any'}) not in "
                                   f"{timeout_s} s; events: {seen}\n{self.log_text()[-2000:]}")
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"baresip {self.ext} exited:\n{self.log_text()[-2000:]}")
            await asyncio.sleep(0.02)
        return found[count - 1]

    def received_wavs(self) -> list[Path]:
        """What this phone heard, one WAV per call (8 kHz mono 16-bit for G.711), oldest first;
        the current call's last, while it lasts (its header is filled in only at hang-up:
        tests.tones.read_wav reads such a file to its end)."""
        return self._wavs("received", "dec")

    def sent_wavs(self) -> list[Path]:
        """What this phone sent (its tone as encoded), one WAV per call, as received_wavs."""
        return self._wavs("sent", "enc")

    def received_wav(self) -> Path:
        """What this phone heard on its latest call."""
        wavs = self.received_wavs()
        if not wavs:
            raise FileNotFoundError(f"{self.ext} recorded nothing (no call with audio) in "
                                    f"{self.recordings}:\n{self.log_text()[-2000:]}")
        return wavs[-1]

    def _wavs(self, what: str, suffix: str) -> list[Path]:
        done = sorted(self.recordings.glob(f"call-*-{what}.wav"))
        live = sorted(self.recordings.glob(f"dump-*-{suffix}.wav"))
        return done + live


@pytest.fixture
async def softphone(kamailio: Kamailio, tmp_path: Path) -> AsyncIterator[SoftphoneFactory]:
    """Factory: `phone = await softphone("7101", mode="answer", tone_hz=1000)` starts a
    softphone registered at the test Kamailio; all are stopped (unregistered) at teardown."""
    phones: list[Softphone] = []

    async def start(ext: str, **options: Any) -> Softphone:
        phone = Softphone(ext, kamailio.port, tmp_path / f"softphone-{ext}-{len(phones)}",
                          **options)
        phones.append(phone)
        return await phone.start()

    yield start
    for phone in phones:
        await phone.stop()


# --- sipp doctors ----------------------------------------------------------------------------

@dataclass
class SippDoctor:
    """A running sipp UAS scenario registered as EXT; see start_sipp_doctor."""

    ext: str
    scenario: str
    port: int
    proxy_port: int
    workdir: Path
    process: asyncio.subprocess.Process

    @property
    def log(self) -> Path:
        return self.workdir / "sipp.log"

    def log_text(self) -> str:
        """sipp's screen output, then its errors and the SIP messages it traced."""
        parts = [self.log]
        parts += sorted(self.workdir.glob("*_errors.log")) + sorted(self.workdir.glob("*.msg"))
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    async def result(self, timeout_s: float = 30.0) -> tuple[int, str]:
        """Wait for sipp to finish its one call: (exit code, its output). 0 = the scenario
        ran exactly as written."""
        await asyncio.wait_for(self.process.wait(), timeout_s)
        return self.process.returncode or 0, self.log_text()

    async def stop(self) -> None:
        """Kill sipp if still running and remove its binding from the proxy."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), 5)
        await asyncio.to_thread(sip_register, self.proxy_port, self.ext, self.port, 0)

    async def __aenter__(self) -> SippDoctor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_sipp_doctor(scenario: str, kamailio_port: int, ext: str, *,
                            workdir: Path | None = None, timeout_s: float = 30,
                            tone_hz: int = 1000, port: int | None = None,
                            register: bool = True) -> SippDoctor:
    """Start tests/sipp/<scenario> (doctor_busy.xml, doctor_rings_forever.xml,
    doctor_answers.xml) as a UAS for one call on a free port (or `port`), then register
    sip:EXT@127.0.0.1 at the proxy with that port as Contact (unless not `register`: a PSTN
    trunk's stand-in, which the proxy reaches by its address); returns once INVITEs for EXT
    reach it. sipp gives up (non-zero exit) after timeout_s. doctor_answers.xml plays a
    tone_hz μ-law tone."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix=f"sipp-doctor-{ext}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # rtp_stream plays a raw payload file named in the scenario, relative to sipp's cwd.
    # One second of an integer-Hz tone loops without a click.
    (workdir / "doctor_tone.pcmu").write_bytes(ulaw_tone(tone_hz, 1.0))
    name = Path(scenario).stem
    port = port or free_udp_port()
    # sipp's screen goes to a file, not a pipe: nobody reads a pipe while the doctor waits,
    # and a full pipe would stall sipp mid-call.
    with (workdir / "sipp.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(SIPP_SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port),
            "-mi", "127.0.0.1", "-mp", str(free_media_port()), "-key", "ext", ext, "-m", "1",
            "-timeout", f"{int(timeout_s)}s", "-timeout_error", "-nostdin",
            "-trace_err", "-error_file", str(workdir / f"{name}_errors.log"),
            "-trace_msg", "-message_file", str(workdir / f"{name}.msg"),
            cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    doctor = SippDoctor(ext, scenario, port, kamailio_port, workdir, process)
    try:
        await _until_bound(doctor, deadline=time.monotonic() + 5)
        code = await asyncio.to_thread(sip_register, kamailio_port, ext, port) if register else 200
        if code != 200:
            raise RuntimeError(f"registering {ext} -> 127.0.0.1:{port} at the proxy: {code}")
    except BaseException:
        await doctor.stop()
        raise
    return doctor


async def _until_bound(doctor: SippDoctor, deadline: float) -> None:
    """Until sipp holds its SIP port (our own bind of it fails), so no INVITE goes unheard."""
    while True:
        if doctor.process.returncode is not None:
            raise RuntimeError(f"sipp {doctor.scenario} exited at start:\n{doctor.log_text()}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", doctor.port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return
                raise
        if time.monotonic() >= deadline:
            raise TimeoutError(f"sipp {doctor.scenario} did not bind 127.0.0.1:{doctor.port}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def sipp_doctor(kamailio: Kamailio, tmp_path: Path) -> AsyncIterator[SippDoctorFactory]:
    """Factory: `doctor = await sipp_doctor("doctor_busy.xml", "7201")` at the test Kamailio;
    all are killed and unregistered at teardown."""
    doctors: list[SippDoctor] = []

    async def start(scenario: str, ext: str, **options: Any) -> SippDoctor:
        workdir = tmp_path / f"sipp-doctor-{ext}-{len(doctors)}"
        doctor = await start_sipp_doctor(scenario, kamailio.port, ext, workdir=workdir,
                                         **options)
        doctors.append(doctor)
        return doctor

    yield start
    for doctor in doctors:
        await doctor.stop()
