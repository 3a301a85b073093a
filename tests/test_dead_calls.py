"""No call lives forever, no doctor stays busy (issue 9 §3), over real SIP: sipp residents and
doctors through a fresh Kamailio.

- Both phones vanish without a BYE (sipp killed): the silent legs are hung up after
  HOTLINE_RTP_TIMEOUT_S, the record says 'media timeout', the recording is closed.
- The service is killed (-9) mid-bridge and restarted with the same clock: it starts, closes the
  record, frees the doctor in presence, and both phones get a BYE from the stored dialogs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from routing.presence import Presence, presence_client
from routing.seed import seed_demo
from store.pii import PiiVault
from telephony.sip_ua import stateless_response
from tests.conftest import TEST_PII_KEY
from tests.hotline_peer import (  # noqa: F401  (fresh_kamailio: this module's `kamailio` fixture)
    Earpiece,
    Hotline,
    calls_done,
    fresh_kamailio,
    hotline_fixture,
)
from tests.rtp_pcap import ulaw_sine, write_rtp_pcap
from tests.sip_peers import (
    ROOT,
    SIPP_SCENARIOS,
    Kamailio,
    free_media_port,
    free_udp_port,
    sipp_result,
)
from tests.softphone import start_sipp_doctor

pytestmark = pytest.mark.sip

SH = ZoneInfo("Asia/Shanghai")
TUESDAY_10 = datetime(2026, 11, 24, 10, 0, tzinfo=SH)
ZHANG_GUILAN = "13800000001"  # own doctor 1001
RTP_TIMEOUT_S = 4.0  # longer than any gap sipp leaves before its voice starts (pause, DTMF, pause)

short_timeout_hotline = hotline_fixture(TUESDAY_10, ring_timeout_s=4.0,
                                        env={"HOTLINE_RTP_TIMEOUT_S": str(RTP_TIMEOUT_S)})
MAX_CALL_S = 6.0  # past the pauses of resident_waits_for_doctor.xml (a BYE there is "unexpected")
short_calls_hotline = hotline_fixture(TUESDAY_10, ring_timeout_s=4.0, env={"HOTLINE_MAX_CALL_S": str(MAX_CALL_S)})


@pytest.fixture(scope="module")
def voice_440(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The resident's voice for a long call: 60 s of 440 Hz."""
    return write_rtp_pcap(tmp_path_factory.mktemp("voice") / "440.pcap", ulaw_sine(440, 60))


async def resident(scenario: str, kamailio: Kamailio, sip_port: int, rtp_port: int, voice: Path,
                   timeout_s: float = 90) -> asyncio.subprocess.Process:
    """sipp as 张桂兰's phone on a SIP port we know (to listen on it once sipp is dead)."""
    return await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{kamailio.port}", "-sf", str(SIPP_SCENARIOS / scenario),
        "-i", "127.0.0.1", "-p", str(sip_port), "-mp", str(free_media_port()), "-s", "hotline",
        "-key", "caller", ZHANG_GUILAN, "-key", "rtp_port", str(rtp_port), "-key", "voice_pcap", str(voice),
        "-m", "1", "-timeout", f"{int(timeout_s)}s", "-timeout_error", "-nostdin",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


class ByeCatcher:
    """A dead phone's SIP port taken over: every BYE that reaches it is noted and answered 200."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.1)
        self.byes: list[bytes] = []
        self.got_bye = threading.Event()
        self._open = True
        self._reader = threading.Thread(target=self._read, name=f"bye catcher {port}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while self._open:
            try:
                raw = self.sock.recv(8192)
            except TimeoutError:
                continue
            except OSError:
                return
            if raw.startswith(b"BYE "):
                self.byes.append(raw)
                response = stateless_response(raw, 200, "OK")
                if response is not None:
                    self.sock.sendto(*response)
                self.got_bye.set()

    async def wait(self, timeout_s: float) -> bool:
        return await asyncio.to_thread(self.got_bye.wait, timeout_s)

    def close(self) -> None:
        self._open = False
        self._reader.join(1)
        self.sock.close()


async def until(pool: asyncpg.Pool, query: str, timeout_s: float = 30) -> None:
    """Until `query` returns true (bounded)."""
    for _ in range(int(timeout_s / 0.05)):
        if await pool.fetchval(query):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never true within {timeout_s} s: {query}")


async def flushed(recording: Path, timeout_s: float = 30) -> None:
    """Until the recording has reached the disk with a second of audio (a flush: before it, the
    file a kill leaves is no recording yet, and recovery says so in the record's note)."""
    def enough() -> bool:
        return recording.exists() and recording.stat().st_size > 44 + 8000 * 4

    for _ in range(int(timeout_s / 0.05)):
        if await asyncio.to_thread(enough):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{recording} never held a second of audio")


async def killed(process: asyncio.subprocess.Process, group: bool = False) -> None:
    with_signal = os.killpg if group else os.kill
    with_signal(process.pid, signal.SIGKILL)
    await asyncio.wait_for(process.wait(), 5)


async def test_both_phones_vanishing_without_bye_end_the_call_as_a_media_timeout(
    short_timeout_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, voice_440: Path, tmp_path: Path
) -> None:
    doctor = await start_sipp_doctor("doctor_answers.xml", kamailio.port, "1001", workdir=tmp_path / "doctor",
                                     timeout_s=90)
    resident_port, ear = free_udp_port(), Earpiece()
    catchers: list[ByeCatcher] = []
    try:
        sipp = await resident("resident_waits_for_doctor.xml", kamailio, resident_port, ear.port, voice_440)
        await until(pool, "SELECT connected_at IS NOT NULL FROM call_records")
        await asyncio.sleep(1.0)  # they talk a little (the bridge relays; the watchdog sees RTP)
        assert short_timeout_hotline.service.calls, "the call ended while both phones were sending"
        # both phones die without a word: no BYE, no more RTP
        await killed(sipp)
        await killed(doctor.process, group=True)
        catchers = [ByeCatcher(resident_port), ByeCatcher(doctor.port)]
        await calls_done(short_timeout_hotline, timeout_s=RTP_TIMEOUT_S + 20)
        # each leg got its BYE, through the proxy, at the dead phone's address
        assert await catchers[0].wait(10), "the resident's leg got no BYE"
        assert await catchers[1].wait(10), "the doctor's leg got no BYE"
    finally:
        ear.close()
        for catcher in catchers:
            catcher.close()
        await doctor.stop()
    record = await pool.fetchrow("SELECT * FROM call_records")
    assert (record["disposition"], record["end_reason"]) == ("connected", "media timeout")
    assert record["recording_sha256"] is not None  # the recording was closed, not left growing
    assert float(record["recording_seconds"]) < 60
    assert len(json.loads(record["dialogs"])) == 2  # both legs' dialogs were kept as they came up


async def test_a_call_longer_than_the_maximum_is_hung_up_on_both_sides(
    short_calls_hotline: Hotline, kamailio: Kamailio, pool: asyncpg.Pool, voice_440: Path, tmp_path: Path
) -> None:
    doctor = await start_sipp_doctor("doctor_answers.xml", kamailio.port, "1001", workdir=tmp_path / "doctor",
                                     timeout_s=60)
    ear = Earpiece()
    try:
        # both keep talking: only the length ends the call, with a BYE to each (their scenarios
        # answer it 200 and end)
        sipp = await resident("resident_waits_for_doctor.xml", kamailio, free_udp_port(), ear.port, voice_440)
        code, out = await sipp_result(sipp, timeout_s=60)
        assert code == 0, out
        code, out = await doctor.result(timeout_s=10)
        assert code == 0, out
        await calls_done(short_calls_hotline)
    finally:
        ear.close()
        await doctor.stop()
    record = await pool.fetchrow("SELECT * FROM call_records")
    assert (record["disposition"], record["end_reason"]) == ("connected", "max call length")
    assert record["recording_sha256"] is not None
    assert float(record["recording_seconds"]) < 30  # not the minute of voice the resident had


def service_env(kamailio: Kamailio, database_url: str, redis_url: str, data_dir: Path, sip_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    return {**env, "HOTLINE_DATABASE_URL": database_url, "HOTLINE_PII_KEY": TEST_PII_KEY,
            "HOTLINE_DATA_DIR": str(data_dir), "HOTLINE_RECORDINGS_DIR": str(data_dir / "recordings"),
            "HOTLINE_SIP_REGISTRAR": f"127.0.0.1:{kamailio.port}", "HOTLINE_SIP_PORT": str(sip_port), "HOTLINE_WEB_PORT": "0",
            "HOTLINE_RTP_PORT_LOW": str(sip_port + 1000), "HOTLINE_RTP_PORT_HIGH": str(sip_port + 1200),
            "HOTLINE_RING_TIMEOUT_S": "4", "HOTLINE_MENU_TIMEOUT_S": "3", "HOTLINE_QUEUE_WAIT_S": "0",
            "HOTLINE_CLOCK_START": TUESDAY_10.isoformat(), "HOTLINE_LOG_FORMAT": "json",
            "HOTLINE_REDIS_URL": redis_url, "HOTLINE_NODE_NAME": "crash-test-node", "HOTLINE_DRAIN_S": "0"}


class Served:
    """`hotline serve` as a process of its own (it is to be killed -9), its log in a file."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process, self.log = process, log

    @classmethod
    async def start(cls, env: dict[str, str], log: Path) -> Served:
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hotline", "serve", env=env, cwd=ROOT,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT)
        served = cls(process, log)
        for _ in range(600):  # bounded: 30 s
            if process.returncode is not None:
                raise AssertionError(f"hotline serve exited ({process.returncode}):\n{served.text()[-3000:]}")
            if '"service.started"' in served.text():
                return served
            await asyncio.sleep(0.05)
        await served.stop()
        raise AssertionError(f"hotline serve did not start:\n{served.text()[-3000:]}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def figures(self) -> tuple[int, int]:
        """(threads, open file descriptors) of the process now."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        threads = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))
        return threads, len(os.listdir(f"/proc/{self.process.pid}/fd"))

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def test_a_node_killed_mid_bridge_restarts_hangs_up_both_phones_and_frees_the_doctor(
    kamailio: Kamailio, database_url: str, pool: asyncpg.Pool, vault: PiiVault, redis_url: str,
    voice_440: Path, tmp_path: Path
) -> None:
    await seed_demo(pool, vault, today=TUESDAY_10.date(), tz=SH)
    doctor_id = await pool.fetchval("SELECT id FROM staff WHERE sip_uri = 'sip:1001@127.0.0.1'")
    # the same clock both runs (repro 6): the restarted "now" precedes what the first run wrote
    env = service_env(kamailio, database_url, redis_url, tmp_path / "data", free_udp_port())
    doctor = await start_sipp_doctor("doctor_answers.xml", kamailio.port, "1001", workdir=tmp_path / "doctor",
                                     timeout_s=90)
    ear = Earpiece()
    redis = presence_client(redis_url)
    presence = Presence(redis, tz=SH)
    first = second = None
    try:
        first = await Served.start(env, tmp_path / "first.log")
        # a phone that takes a BYE at any moment (the other resident scenarios pause: sipp would
        # call a BYE in a pause unexpected)
        sipp = await resident("resident_waits_for_bye.xml", kamailio, free_udp_port(), ear.port, voice_440)
        await until(pool, "SELECT connected_at IS NOT NULL FROM call_records")
        await until(pool, "SELECT jsonb_array_length(dialogs) = 2 FROM call_records")
        await flushed(Path(await pool.fetchval("SELECT recording_path FROM call_records")))
        assert (await presence.state(doctor_id)).busy
        before = first.figures()
        await killed(first.process)  # kill -9 mid-bridge: no BYE to anyone, the record left open

        second = await Served.start(env, tmp_path / "second.log")
        # both phones are freed at once: each got a BYE (its scenario answers 200 and ends)
        code, out = await sipp_result(sipp, timeout_s=5)
        assert code == 0, out
        code, out = await doctor.result(timeout_s=5)
        assert code == 0, out
        after = second.figures()
        record = await pool.fetchrow("SELECT * FROM call_records")
        assert (record["disposition"], record["end_reason"]) == ("failed", "recovered")
        assert record["ended_at"] >= record["connected_at"] >= record["offered_at"]
        assert record["recording_sha256"] is not None  # the recording the kill cut, repaired
        assert record["recovery_note"] is None
        assert (await presence.state(doctor_id)).ringable  # repro 7: not on_call for an hour
        records = await pool.fetchval("SELECT count(*) FROM call_records")
        still_open = await pool.fetchval("SELECT count(*) FROM call_records WHERE ended_at IS NULL")
        print(f"\ncrash figures: 1 call bridged, {records} record(s), {still_open} open after restart;"
              f" threads/fds: killed run mid-call {before}, restarted run with the phones hung up {after}")
    finally:
        ear.close()
        await redis.aclose()
        await doctor.stop()
        for served in (first, second):
            if served is not None:
                await served.stop()
    log = second.text()
    assert "CheckViolationError" not in log and "Traceback" not in log, log[-3000:]
    assert ZHANG_GUILAN not in log
