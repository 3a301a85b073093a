"""The service killed mid-call: at the next start, recovery repairs the recordings it left, ends
the open records as 'failed', and keeps the 8 h promise to callers who were waiting for a human."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from handover.callbacks import Callbacks
from hotline.clock import Clock
from ivr.flow import CallFlow, FlowSettings
from recordings.call_records import CallerNumber, CallRecords
from routing.directory import Directory
from store.pii import PiiVault
from tests.district import build_district

OFFERED = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)

# A recording writer that is killed by SIGKILL after its first flush and a few more writes.
_WRITER = """
import sys, time
from recordings.recorder import StereoRecorder
rec = StereoRecorder(__import__("pathlib").Path(sys.argv[1]))
rec.write(b"\\x10" * 8000, b"\\x20" * 8000, "PCMU"); rec.flush()
rec.write(b"\\x30" * 4000, b"\\x40" * 4000, "PCMU")
print("ready", flush=True)
time.sleep(60)
"""


def killed_mid_recording(path: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE,
                              cwd=Path(__file__).resolve().parent.parent)
    assert writer.stdout is not None and writer.stdout.readline().strip() == b"ready"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(5)


async def test_recovery_after_a_kill(pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path) -> None:
    district = await build_district(pool, vault, week_of=OFFERED.date())
    doctor_id = district.doctor_id
    records = CallRecords(pool, vault, node="node-a")
    live_elsewhere = await CallRecords(pool, vault, node="node-b").open(
        "live@b", CallerNumber.of(vault, "13900000004"), OFFERED)
    # 1: the caller was being put through to a doctor when the service died
    waiting = await records.open("waiting@x", CallerNumber.of(vault, "13900000001"), OFFERED)
    path = tmp_path / "rec" / "waiting.wav"
    await records.recording_started(waiting, str(path))
    await records.routed(waiting, "day", "test", [{"staff_id": doctor_id, "name": "王医生"}])
    await records.dial_started(waiting, doctor_id, "sip:1001@127.0.0.1", OFFERED)
    await asyncio.to_thread(killed_mid_recording, path)
    # 2: the caller was still listening to the greeting
    await records.open("greeting@x", CallerNumber.of(vault, "13900000002"), OFFERED)
    # 3: a call that ended normally is left alone
    done = await records.open("done@x", CallerNumber.of(vault, "13900000003"), OFFERED)
    await records.ended(done, OFFERED + timedelta(minutes=1), "connected")

    now = OFFERED + timedelta(minutes=5)
    flow = CallFlow(records=records, callbacks=Callbacks(pool), directory=Directory(pool, vault),
                    routing=None, vault=vault, clock=Clock(now), dial=None,  # type: ignore[arg-type]
                    settings=FlowSettings(recordings_dir=tmp_path / "rec"))
    assert await flow.recover() == 2
    assert await flow.recover() == 0  # nothing left open: running it twice changes nothing

    rows = {r["call_id"]: r for r in await pool.fetch("SELECT * FROM call_records")}
    assert rows["waiting@x"]["disposition"] == "failed"
    assert rows["greeting@x"]["disposition"] == "failed"
    assert rows["done@x"]["disposition"] == "connected"
    # another node's call in progress is not touched
    assert rows["live@b"]["ended_at"] is None and rows["live@b"]["id"] == live_elsewhere
    assert all(r["ended_at"] is not None for k, r in rows.items() if k != "live@b")
    # the file the killed writer left is playable and checksummed, everything flushed is kept
    repaired = await asyncio.to_thread(path.read_bytes)
    assert rows["waiting@x"]["recording_sha256"] == hashlib.sha256(repaired).hexdigest()
    assert float(rows["waiting@x"]["recording_seconds"]) >= 1.0
    # the promise survives the crash: one callback for the caller who was waiting, owed by
    # the doctor being rung, none for the one still at the greeting
    tasks = await pool.fetch("SELECT * FROM callback_tasks")
    assert len(tasks) == 1
    assert tasks[0]["owner_staff_id"] == doctor_id
    assert tasks[0]["due_at"] == OFFERED + timedelta(hours=8)
    assert tasks[0]["caller_number_masked"] == rows["waiting@x"]["caller_number_masked"]
