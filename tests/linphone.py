"""Linphone as a real softphone in tests: Debian's `linphonec` (linphone-cli 5.1), as it comes.

A `Linphone` is one linphonec process registered at the test Kamailio as sip:EXT@127.0.0.1 (no
password), driven through its command line on stdin; a reader thread turns what it prints
("Receiving new incoming call from …", "Call 1 with … connected.", "… ended (…).", "Receiving
tone 1 from …") into events, like tests.softphone.Softphone's ctrl_tcp events (CALL_INCOMING,
CALL_RINGING, CALL_ESTABLISHED, CALL_CLOSED, DTMF) and reacts to them:

- mode "answer": picks up every incoming call, after `answer_after` seconds;
- mode "ring":   never picks up (Linphone itself declines after its inc_timeout, 30 s);
- mode "busy":   declines every incoming call at once.

Audio goes through files (`soundcard use files`): it "says" a sine of `tone_hz` (a WAV it plays
in a loop) and records what it hears, one WAV per call that had audio (48 kHz mono: Linphone's file recorder
runs at its mixer's rate; tests.tones reads any rate).

Only what `param` cannot set up before the first start goes in its configuration file
(~/.linphonerc in a HOME of its own under the test's tmp dir, so instances share nothing): the
SIP and RTP ports (picked free, on 127.0.0.1 only), the proxy account, and `dtmf` — how it sends
keys: "rfc2833" (Linphone's default: RFC 4733 events), "info" (SIP INFO dtmf-relay) or "inband"
(tones in the audio). Everything else is Linphone's default — GRUU, its codec list with opus and
speex first, its Supported header — because that is what residents and doctors will run.
`extra_config` adds or overrides sections for a test that wants something else.

Every wait is bounded and looks at what linphonec printed; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from tests.sip_peers import Kamailio, _die_with_parent, free_udp_port

LINPHONEC = shutil.which("linphonec") or "/usr/bin/linphonec"
Mode = Literal["answer", "ring", "busy"]
Dtmf = Literal["rfc2833", "info", "inband"]
LinphoneFactory = Callable[..., Awaitable["Linphone"]]

# What linphonec prints (linphonec.c), after its "linphonec> " prompt or on a line of its own
_INCOMING = re.compile(r"Receiving new incoming call from (.+), assigned id (\d+)")
_OUTGOING = re.compile(r"Establishing call id to (.+), assigned id (\d+)")
_RINGING = re.compile(r"Call (\d+) to (.+) ringing\.")
_CONNECTED = re.compile(r"Call (\d+) with (.+) connected\.")
_ENDED = re.compile(r"Call (\d+) with (.+) ended \((.*)\)\.")
_ERROR = re.compile(r"Call (\d+) with (.+) error\.")
_TONE = re.compile(r"Receiving tone (.) from (.+)")
_REGISTERED = re.compile(r"registered, identity=sip:(\S+)@")


def tone_wav(path: Path, freq: float, seconds: float = 4.0, amplitude: int = 8000) -> Path:
    """An 8 kHz mono 16-bit sine WAV (a whole number of cycles per second: it loops cleanly)."""
    frames = b"".join(struct.pack("<h", round(amplitude * math.sin(2 * math.pi * freq * i / 8000)))
                      for i in range(round(8000 * seconds)))
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(frames)
    return path


@dataclass
class Linphone:
    ext: str
    proxy_port: int
    workdir: Path
    mode: Mode = "answer"
    tone_hz: int = 1000
    answer_after: float = 0.0
    dtmf: Dtmf = "rfc2833"
    extra_config: dict[str, dict[str, str]] = field(default_factory=dict)
    sip_port: int = field(default=0, init=False)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _lines: list[str] = field(default_factory=list, init=False, repr=False)
    _events: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stdin_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _outgoing_ids: set[str] = field(default_factory=set, init=False, repr=False)
    _calls: int = field(default=0, init=False, repr=False)
    _timers: list[threading.Timer] = field(default_factory=list, init=False, repr=False)
    _reader: threading.Thread | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)

    @property
    def uri(self) -> str:
        return f"sip:{self.ext}@127.0.0.1"

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    @property
    def recordings(self) -> Path:
        return self.workdir / "recordings"

    @property
    def log(self) -> Path:
        return self.workdir / "linphonec.log"

    def log_text(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    # -- lifecycle --

    async def start(self, timeout_s: float = 15.0) -> Linphone:
        """Start linphonec, switch it to files, and wait until the proxy accepted its REGISTER."""
        deadline = time.monotonic() + timeout_s
        self._spawn()
        try:
            await self.command("soundcard use files", expect="Using wav files",
                               timeout_s=max(deadline - time.monotonic(), 0.1))
            tone = tone_wav(self.workdir / f"tone-{self.tone_hz}.wav", self.tone_hz)
            # in file mode, `play` names the capture file of every call from now on, and
            # `record` the file the next call's received audio goes to. linphonec 5.1 crashes
            # (NULL dereference in mediastreamer) on `record` while a call rings, so the next
            # call's file is named now and again each time a call has ended.
            await self.command(f"play {tone}")
            self._name_next_recording()
            await self.wait_registered(max(deadline - time.monotonic(), 0.1))
        except BaseException:
            await self.stop()
            raise
        return self

    def _spawn(self) -> None:
        (self.home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.recordings.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_udp_port()
        rtp = free_udp_port() & ~1
        sections: dict[str, dict[str, str]] = {
            "sip": {
                "sip_port": str(self.sip_port), "sip_tcp_port": "-1", "sip_tls_port": "-1",
                "bind_address": "127.0.0.1", "default_proxy": "0",
                "use_rfc2833": "1" if self.dtmf == "rfc2833" else "0",
                "use_info": "1" if self.dtmf == "info" else "0",
            },
            "rtp": {"audio_rtp_port": f"{rtp}-{min(rtp + 40, 65535)}"},
            "sound": {"echocancellation": "0"},
            "proxy_0": {
                "reg_proxy": f"<sip:127.0.0.1:{self.proxy_port}>", "reg_identity": self.uri,
                "reg_expires": "120", "reg_sendregister": "1",
            },
        }
        for name, values in self.extra_config.items():
            sections.setdefault(name, {}).update(values)
        (self.home / ".linphonerc").write_text("".join(
            f"[{name}]\n" + "".join(f"{k}={v}\n" for k, v in values.items()) + "\n"
            for name, values in sections.items()))
        with self._lock:
            self._lines.clear()
            self._events.clear()
        self.process = subprocess.Popen(
            [LINPHONEC], cwd=self.workdir, env={**os.environ, "HOME": str(self.home)},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        self._reader = threading.Thread(target=self._read, args=(self.process,),
                                        name=f"linphonec-{self.ext}", daemon=True)
        self._reader.start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with self.log.open("a", encoding="utf-8") as log:
            for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                log.write(line + "\n")
                log.flush()
                with self._lock:
                    self._lines.append(line)
                self._on_line(line)

    def _on_line(self, line: str) -> None:
        """In the reader thread: what linphonec printed as events, and the phone's reflexes."""
        if m := _INCOMING.search(line):
            call_id = m.group(2)
            self._event("CALL_INCOMING", call_id, "incoming", peer=m.group(1))
            if self.mode == "busy":
                self._write(f"terminate {call_id}")
            elif self.mode == "answer":
                self._later(self.answer_after, self._answer_now, call_id)
        elif m := _OUTGOING.search(line):
            self._outgoing_ids.add(m.group(2))
            self._event("CALL_OUTGOING", m.group(2), "outgoing", peer=m.group(1))
        elif m := _RINGING.search(line):
            self._event("CALL_RINGING", m.group(1), "outgoing", peer=m.group(2))
        elif m := _CONNECTED.search(line):
            self._event("CALL_ESTABLISHED", m.group(1), self._direction(m.group(1)),
                        peer=m.group(2))
        elif m := _ENDED.search(line):
            self._event("CALL_CLOSED", m.group(1), self._direction(m.group(1)),
                        peer=m.group(2), reason=m.group(3))
            self._name_next_recording()
        elif m := _ERROR.search(line):
            self._event("CALL_CLOSED", m.group(1), self._direction(m.group(1)),
                        peer=m.group(2), reason="error")
            self._name_next_recording()
        elif m := _TONE.search(line):
            self._event("DTMF", "", None, key=m.group(1), peer=m.group(2))

    def _direction(self, call_id: str) -> str:
        return "outgoing" if call_id in self._outgoing_ids else "incoming"

    def _event(self, kind: str, call_id: str, direction: str | None, **more: str) -> None:
        with self._lock:
            self._events.append({"type": kind, "id": call_id, "direction": direction,
                                 "at": time.monotonic(), **more})

    def _later(self, delay: float, action: Callable[..., None], *args: Any) -> None:
        if delay <= 0:
            action(*args)
            return
        timer = threading.Timer(delay, action, args)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _name_next_recording(self) -> None:
        self._calls += 1
        self._write(f"record {self.recordings / f'call-{self._calls:02d}-received.wav'}")

    def _answer_now(self, call_id: str) -> None:
        self._write(f"answer {call_id}")

    def _write(self, line: str) -> None:
        process = self.process
        if process is None or process.stdin is None or process.poll() is not None:
            return
        with self._stdin_lock, contextlib.suppress(OSError, ValueError):
            process.stdin.write(line.encode() + b"\n")
            process.stdin.flush()

    def _check_running(self, doing: str) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"linphonec for {self.ext} is not running ({doing}):\n"
                               f"{self.log_text()[-3000:]}")

    async def _until(self, what: str, ready: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            self._check_running(what)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"linphone {self.ext}: {what} not in {timeout_s} s:\n"
                                   f"{self.log_text()[-3000:]}")
            await asyncio.sleep(0.02)

    async def command(self, line: str, expect: str | None = None, timeout_s: float = 5.0) -> str:
        """Type a command; with `expect` (a regex), wait until linphonec prints a line matching
        it after the command, and return that line."""
        self._check_running(line)
        with self._lock:
            mark = len(self._lines)
        self._write(line)
        if expect is None:
            return ""
        pattern = re.compile(expect)
        found: list[str] = []

        def printed() -> bool:
            with self._lock:
                found.extend(x for x in self._lines[mark:] if pattern.search(x))
            return bool(found)

        await self._until(f"{expect!r} after {line!r}", printed, timeout_s)
        return found[0]

    async def wait_registered(self, timeout_s: float = 10.0) -> None:
        """Until the proxy has accepted the REGISTER (`status register` says registered)."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            with contextlib.suppress(TimeoutError):
                line = await self.command("status register", expect=r"registered", timeout_s=max(min(left, 1.0), 0.1))
                if _REGISTERED.search(line):
                    return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"linphone {self.ext} not registered in {timeout_s} s:\n"
                                   f"{self.log_text()[-3000:]}")
            await asyncio.sleep(0.1)

    async def stop(self, timeout_s: float = 5.0) -> None:
        """`quit` (Linphone unregisters and exits); SIGKILL if it lingers."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with self._stdin_lock, contextlib.suppress(OSError, ValueError):
                assert process.stdin is not None
                process.stdin.write(b"quit\n")
                process.stdin.flush()
            try:
                await asyncio.to_thread(process.wait, timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await asyncio.to_thread(process.wait, 5)
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 5)
        if process.stdout is not None:
            process.stdout.close()

    async def __aenter__(self) -> Linphone:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- calls --

    async def dial(self, target: str) -> None:
        """Call an extension ("hotline") or a SIP URI, through the proxy."""
        uri = target if target.startswith("sip:") else f"sip:{target}@127.0.0.1"
        await self.command(f"call {uri}", expect=r"Establishing call id|Call \d+ .*error")

    async def answer(self) -> None:
        """Pick up the ringing call now (a "ring" phone a test decides to answer)."""
        incoming = self.events("CALL_INCOMING")
        assert incoming, f"{self.ext}: no incoming call to answer"
        self._answer_now(incoming[-1]["id"])

    async def hangup(self) -> None:
        """End the current call (BYE, CANCEL or decline, as the call's state asks)."""
        await self.command("terminate")

    async def send_digits(self, keys: str) -> None:
        """Press keys during the call; sent as `dtmf` says (RFC 4733, INFO or in-band)."""
        for key in keys:
            await self.command(key)

    # -- what happened --

    def events(self, kind: str | None = None, direction: str | None = None
               ) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._events
                    if (kind is None or e["type"] == kind)
                    and (direction is None or e["direction"] == direction)]

    async def wait_event(self, kind: str, *, direction: str | None = None, count: int = 1,
                         timeout_s: float = 10.0) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            found[:] = self.events(kind, direction)
            return len(found) >= count

        await self._until(f"{count} x {kind} ({direction or 'any'})", arrived, timeout_s)
        return found[count - 1]

    @property
    def incoming_calls(self) -> int:
        return len(self.events("CALL_INCOMING"))

    @property
    def answered_calls(self) -> int:
        return len(self.events("CALL_ESTABLISHED", "incoming"))

    @property
    def closed_calls(self) -> int:
        return len(self.events("CALL_CLOSED"))

    def received_wavs(self) -> list[Path]:
        return sorted(p for p in self.recordings.glob("call-*-received.wav") if p.exists())

    def received_wav(self) -> Path:
        wavs = self.received_wavs()
        if not wavs:
            raise FileNotFoundError(f"{self.ext} recorded nothing in {self.recordings}:\n"
                                    f"{self.log_text()[-3000:]}")
        return wavs[-1]


@pytest.fixture
async def linphone(kamailio: Kamailio, tmp_path: Path) -> AsyncIterator[LinphoneFactory]:
    """Factory: `phone = await linphone("7301", mode="answer", tone_hz=1000)` starts a Linphone
    registered at the test Kamailio; all are stopped (unregistered) at teardown."""
    phones: list[Linphone] = []

    async def start(ext: str, **options: Any) -> Linphone:
        phone = Linphone(ext, kamailio.port, tmp_path / f"linphone-{ext}-{len(phones)}", **options)
        phones.append(phone)
        return await phone.start()

    yield start
    for phone in phones:
        await phone.stop()
