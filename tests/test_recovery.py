"""The service killed mid-call: at the next start, recovery repairs the recordings it left, ends
the open records as 'failed', and keeps the 8 h promise to callers who were waiting for a human."""

from __future__ import annotations

import asyncio
import audioop
import hashlib
import io
import os
import signal
import subprocess
import sys
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import structlog.testing

from handover.callbacks import Callbacks
from hotline.clock import Clock
from ivr.flow import CallFlow, FlowSettings
from recordings.call_records import CallerNumber, CallRecords
from recordings.recorder import RecordingError, StereoRecorder, cut_voicemail, write_voicemail
from routing.directory import Directory
from routing.presence import Presence, presence_client, presence_key
from store.pii import PiiVault
from telephony.dialog_state import DialogState
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


# A call's recording killed while the caller leaves a message, fed as ivr/flow.py feeds it (0.1 s
# ticks, a flush every 10). Before the beep: 1 s on both sides, the caller's side 100 samples
# ahead (RTP arrives before the service's own grid has sent the same span), so the message starts
# at 8100 samples (1.0125 s) although the recorder has written 8000. The message: `ticks` × 0.1 s.
# Every channel has bytes of its own: caller 0x10 then 0x30, what the caller heard 0x20 then 0x40.
_VOICEMAIL_WRITER = """
import sys, time
from pathlib import Path
from recordings.recorder import AlignedStereo, StereoRecorder
ticks = int(sys.argv[2])
stereo = AlignedStereo(StereoRecorder(Path(sys.argv[1])), "PCMU")
stereo.feed(b"\\x10" * 8100, b"\\x20" * 8000)
stereo.recorder.flush()
print(repr(stereo.left_seconds), flush=True)
for tick in range(1, ticks + 1):
    stereo.feed(b"\\x30" * 800, b"\\x40" * 800)
    if tick % 10 == 0:
        stereo.recorder.flush()
print("ready", flush=True)
time.sleep(60)
"""
BEFORE_THE_MESSAGE = 8100  # samples of the caller's channel before the message starts


def start_voicemail_writer(path: Path, ticks: int) -> tuple[subprocess.Popen, float]:
    """The writer, and where the message starts in its recording (what the flow stores)."""
    writer = subprocess.Popen([sys.executable, "-c", _VOICEMAIL_WRITER, str(path), str(ticks)],
                              stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
    assert writer.stdout is not None
    return writer, float(writer.stdout.readline())


def kill_when_ready(writer: subprocess.Popen) -> None:
    assert writer.stdout is not None and writer.stdout.readline().strip() == b"ready"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(5)


def recovering_flow(pool: asyncpg.Pool, vault: PiiVault, records: CallRecords, root: Path) -> CallFlow:
    return CallFlow(records=records, callbacks=Callbacks(pool), directory=Directory(pool, vault),
                    routing=None, vault=vault, clock=Clock(OFFERED + timedelta(minutes=5)),  # type: ignore[arg-type]
                    dial=None, settings=FlowSettings(recordings_dir=root))  # type: ignore[arg-type]


async def everyone_busy_call(records: CallRecords, vault: PiiVault, doctor_id: int, path: Path) -> int:
    """A call routed to a doctor on another call: nobody rung (no dial attempt), straight to the
    queue and then to voicemail, as in test_chain_calls."""
    record = await records.open("vm@x", CallerNumber.of(vault, "13900000005"), OFFERED)
    await records.recording_started(record, str(path))
    await records.routed(record, "day", "test", [{"staff_id": doctor_id, "name": "王医生"}])
    return record


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
    # 3: everyone was busy: the caller was waiting in the queue, nobody had been rung yet
    queued = await records.open("queued@x", CallerNumber.of(vault, "13900000005"), OFFERED)
    await records.routed(queued, "day", "test", [{"staff_id": doctor_id, "name": "王医生"}])
    # 4: a call that ended normally is left alone
    done = await records.open("done@x", CallerNumber.of(vault, "13900000003"), OFFERED)
    await records.ended(done, OFFERED + timedelta(minutes=1), "connected")

    now = OFFERED + timedelta(minutes=5)
    flow = CallFlow(records=records, callbacks=Callbacks(pool), directory=Directory(pool, vault),
                    routing=None, vault=vault, clock=Clock(now), dial=None,  # type: ignore[arg-type]
                    settings=FlowSettings(recordings_dir=tmp_path / "rec"))
    assert await flow.recover() == 3
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
    # the promise survives the crash: a callback for each caller who was waiting for a human
    # (being rung, or queued), none for the one at the greeting. Their owner is the flow's
    # (ivr.flow.callback_owner), not the doctor the call was being put through to: both callers
    # are unknown numbers, and issue 11 says a task belongs to "the resident's family doctor in
    # the day window of a working day; outside it the night duty doctor (roster); the duty desk
    # when neither exists" — the duty desk (owner NULL).
    tasks = await pool.fetch("SELECT * FROM tasks ORDER BY id")
    assert len(tasks) == 2
    assert {t["owner_staff_id"] for t in tasks} == {None}
    assert {t["due_at"] for t in tasks} == {OFFERED + timedelta(hours=8)}
    assert [t["caller_number_masked"] for t in tasks] == [
        rows["waiting@x"]["caller_number_masked"], rows["queued@x"]["caller_number_masked"]]


async def test_a_residents_recovered_callback_has_the_owner_the_rule_gives_not_the_route(
        pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path) -> None:
    """Recovery gives the callback the owner a live call's would have (ivr.flow.callback_owner):
    10:00 of a working day is the family doctor's window, whoever the call was being put
    through to when the service died (here the night doctor, as if the day team were busy)."""
    from handover.ownership import routing_source
    district = await build_district(pool, vault, week_of=OFFERED.date())
    records = CallRecords(pool, vault, node="node-a")
    record = await records.open("resident@x", CallerNumber.of(vault, "13800000001"), OFFERED)
    await records.identified(record, district.resident_id)
    await records.routed(record, "day", "test", [{"staff_id": district.night_id, "name": "赵医生"}])
    await records.dial_started(record, district.night_id, "sip:1009@127.0.0.1", OFFERED)
    flow = recovering_flow(pool, vault, records, tmp_path / "rec")
    flow.routing = routing_source(pool, ZoneInfo("Asia/Shanghai"))
    assert await flow.recover() == 1
    assert await pool.fetchval("SELECT owner_staff_id FROM tasks") == district.doctor_id


async def queued_call_in_a_district(pool: asyncpg.Pool, vault: PiiVault,
                                    tmp_path: Path) -> tuple[CallRecords, int, Path]:
    """The test district, and one call of node-a in it waiting for everyone busy (its records,
    the record id, where its recording goes)."""
    district = await build_district(pool, vault, week_of=OFFERED.date())
    records = CallRecords(pool, vault, node="node-a")
    path = tmp_path / "rec" / "vm.wav"
    return records, await everyone_busy_call(records, vault, district.doctor_id, path), path


async def test_a_voicemail_cut_by_a_kill_is_recovered_onto_the_callback_task(
        pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path) -> None:
    records, record, path = await queued_call_in_a_district(pool, vault, tmp_path)
    writer, offset_s = await asyncio.to_thread(start_voicemail_writer, path, 25)
    assert offset_s * 8000 == BEFORE_THE_MESSAGE
    await records.voicemail_started(record, offset_s)  # as _voicemail does right after the beep
    await asyncio.to_thread(kill_when_ready, writer)
    # What reached the disk: everything up to the last flush (20 ticks), and of the 5 ticks
    # after it what left the writer's buffer before the kill (SIGKILL loses no page cache).
    on_disk = (path.stat().st_size - 44) // 4
    message_frames = on_disk - BEFORE_THE_MESSAGE
    assert 8000 + 20 * 800 - BEFORE_THE_MESSAGE <= message_frames <= 8000 + 25 * 800 - BEFORE_THE_MESSAGE

    with structlog.testing.capture_logs() as logs:
        assert await recovering_flow(pool, vault, records, tmp_path / "rec").recover() == 1

    task = await pool.fetchrow("SELECT * FROM tasks")  # owed though nobody was rung
    assert task["status"] == "open" and task["due_at"] == OFFERED + timedelta(hours=8)
    voicemail = await pool.fetchrow("SELECT * FROM voicemails")
    assert voicemail["task_id"] == task["id"] and voicemail["call_record_id"] == record
    assert Path(voicemail["path"]) == tmp_path / "rec" / "vm-voicemail.wav"
    message = await asyncio.to_thread(Path(voicemail["path"]).read_bytes)
    assert voicemail["sha256"] == hashlib.sha256(message).hexdigest()
    with wave.open(io.BytesIO(message), "rb") as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (1, 8000, 2)
        assert w.getnframes() == message_frames
        samples = w.readframes(w.getnframes())
    # the caller's channel from the first sample of the message: none of what came before (0x10),
    # none of what the caller heard (0x40)
    assert samples == audioop.ulaw2lin(b"\x30" * message_frames, 2)
    assert float(voicemail["seconds"]) == pytest.approx(message_frames / 8000, abs=0.0005)
    record_row = await pool.fetchrow("SELECT * FROM call_records WHERE id = $1", record)
    assert record_row["disposition"] == "failed"
    assert float(record_row["recording_seconds"]) == pytest.approx(on_disk / 8000, abs=0.0005)
    assert voicemail["recorded_at"] == OFFERED + timedelta(seconds=on_disk / 8000)
    saved = [e for e in logs if e["event"] == "recovery.voicemail_saved"]
    assert saved == [{"event": "recovery.voicemail_saved", "log_level": "info", "record_id": record,
                      "seconds": round(message_frames / 8000, 1)}]
    assert not any("13900000005" in str(e) for e in logs)


@pytest.mark.parametrize("ticks", [0, 3], ids=["killed-before-the-message-reached-the-disk", "0.3s-said"])
async def test_a_kill_before_half_a_second_was_said_attaches_no_voicemail_but_owes_the_callback(
        pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path, ticks: int) -> None:
    records, record, path = await queued_call_in_a_district(pool, vault, tmp_path)
    writer, offset_s = await asyncio.to_thread(start_voicemail_writer, path, ticks)
    await records.voicemail_started(record, offset_s)
    await asyncio.to_thread(kill_when_ready, writer)
    # 0 ticks: the 100 samples ahead never left the writer, so the offset lies past the end

    assert await recovering_flow(pool, vault, records, tmp_path / "rec").recover() == 1

    assert await pool.fetchval("SELECT count(*) FROM voicemails") == 0
    assert not (tmp_path / "rec" / "vm-voicemail.wav").exists()
    task = await pool.fetchrow("SELECT * FROM tasks")
    assert task is not None and task["status"] == "open"
    assert await pool.fetchval("SELECT task_id FROM callback_calls WHERE call_record_id = $1", record) == task["id"]


async def test_a_message_written_before_the_kill_is_the_one_attached(
        pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path) -> None:
    # The caller pressed #: _voicemail wrote the message from memory, and the service was killed
    # before it was attached to the callback task. That file is complete (and may hold more than
    # the recording's flushed part): recovery attaches it as it is, and never overwrites it.
    records, record, path = await queued_call_in_a_district(pool, vault, tmp_path)
    writer, offset_s = await asyncio.to_thread(start_voicemail_writer, path, 25)
    await records.voicemail_started(record, offset_s)
    live = await asyncio.to_thread(write_voicemail, tmp_path / "rec" / "vm-voicemail.wav", b"\x30" * 20000, "PCMU")
    await asyncio.to_thread(kill_when_ready, writer)

    assert await recovering_flow(pool, vault, records, tmp_path / "rec").recover() == 1

    task_id = await pool.fetchval("SELECT id FROM tasks")
    rows = await pool.fetch("SELECT * FROM voicemails")
    assert [(r["task_id"], r["path"], r["sha256"], float(r["seconds"])) for r in rows] == [
        (task_id, str(live.path), live.sha256, 2.5)]
    assert hashlib.sha256(await asyncio.to_thread(live.path.read_bytes)).hexdigest() == live.sha256


def stereo_recording(path: Path, left: bytes, right: bytes, codec: str = "PCMU") -> Path:
    recorder = StereoRecorder(path)
    recorder.write(left, right, codec)
    recorder.finalize()
    return path


def test_cut_voicemail_is_the_caller_channel_from_the_offset_as_write_voicemail_writes_it(tmp_path: Path) -> None:
    caller = bytes(range(256)) * 40  # 10240 samples, every one telling where it is (mod 256)
    recording = stereo_recording(tmp_path / "call.wav", caller, b"\x40" * len(caller))
    cut = cut_voicemail(recording, 0.5, tmp_path / "call-voicemail.wav", min_seconds=0.5)
    assert cut is not None
    # byte for byte what _voicemail would have written for the same audio
    same = write_voicemail(tmp_path / "live.wav", caller[4000:], "PCMU")
    assert cut.path.read_bytes() == same.path.read_bytes()
    assert (cut.seconds, cut.sha256) == (same.seconds, same.sha256) == (6240 / 8000, same.sha256)
    # a message already there (the live path's, an earlier recovery's) is kept as it is
    assert cut_voicemail(recording, 0.0, cut.path, min_seconds=0.5) == cut
    assert cut.path.read_bytes() == same.path.read_bytes()


def test_cut_voicemail_returns_none_when_too_little_lies_past_the_offset(tmp_path: Path) -> None:
    recording = stereo_recording(tmp_path / "call.wav", b"\x30" * 8000, b"\x40" * 8000)  # 1 s
    target = tmp_path / "call-voicemail.wav"
    assert cut_voicemail(recording, 0.6, target, min_seconds=0.5) is None  # 0.4 s said
    assert cut_voicemail(recording, 1.0, target, min_seconds=0.0) is None  # nothing past the offset
    # past the end: the writer died before the start of the message reached the disk
    assert cut_voicemail(recording, 1.5, target, min_seconds=0.5) is None
    assert not target.exists()
    cut = cut_voicemail(recording, 0.5, target, min_seconds=0.5)  # exactly half a second is a message
    assert cut is not None and cut.seconds == 0.5


@pytest.mark.parametrize(("silence", "codec"), [(b"\xff", "PCMU"), (b"\xd5", "PCMA")])
def test_cut_voicemail_takes_padding_alone_for_nothing_said(tmp_path: Path, silence: bytes, codec: str) -> None:
    # the caller's phone sent nothing after the beep: the recorder padded their side with silence
    recording = stereo_recording(tmp_path / "call.wav", silence * 16000, b"\x40" * 16000, codec)
    assert cut_voicemail(recording, 0.5, tmp_path / "call-voicemail.wav", min_seconds=0.5) is None
    assert not (tmp_path / "call-voicemail.wav").exists()


def test_cut_voicemail_refuses_what_it_cannot_trust(tmp_path: Path) -> None:
    recording = stereo_recording(tmp_path / "call.wav", b"\x30" * 8000, b"\x40" * 8000)
    with pytest.raises(RecordingError, match="a voicemail cannot start at -0.1 s"):
        cut_voicemail(recording, -0.1, tmp_path / "a.wav", min_seconds=0.5)
    with pytest.raises(RecordingError, match="cannot start at nan"):
        cut_voicemail(recording, float("nan"), tmp_path / "a.wav", min_seconds=0.5)
    half_written = tmp_path / "b.wav"
    half_written.write_bytes(write_voicemail(tmp_path / "c.wav", b"\x30" * 8000, "PCMU").path.read_bytes()[:-10])
    with pytest.raises(RecordingError, match="exists and is not a complete voicemail"):
        cut_voicemail(recording, 0.0, half_written, min_seconds=0.5)
    notes = tmp_path / "notes.wav"
    notes.write_bytes(b"hello")
    with pytest.raises(RecordingError, match="is not a recording this service wrote"):
        cut_voicemail(notes, 0.0, tmp_path / "d.wav", min_seconds=0.5)
    with pytest.raises(RecordingError, match="is not a recording this service wrote"):
        cut_voicemail(tmp_path / "c.wav", 0.0, tmp_path / "e.wav", min_seconds=0.5)  # mono: a message
    with pytest.raises(RecordingError, match="cannot read recording"):
        cut_voicemail(tmp_path / "missing.wav", 0.0, tmp_path / "f.wav", min_seconds=0.5)
    assert not any((tmp_path / n).exists() for n in ("a.wav", "d.wav", "e.wav", "f.wav"))


# --- recovery that never blocks the start (issue 9 §3) -----------------------------------------

def a_dialog(call_id: str, side: str = "inbound") -> dict:
    return DialogState(call_id=call_id, local_tag="ours", remote_tag="theirs",
                       local_uri="<sip:hotline@127.0.0.1>", remote_uri="<sip:13900000001@127.0.0.1>",
                       remote_target="sip:13900000001@127.0.0.1:5999",
                       route_set=("<sip:127.0.0.1:5060;lr>",), local_cseq=101, side=side).to_json()


async def test_records_from_the_future_of_a_restarted_clock_are_closed_at_their_own_latest_time(
        pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path) -> None:
    # Restarted with the same HOTLINE_CLOCK_START: "now" precedes what the killed run wrote
    # (offered, answered, a dial attempt started and answered) — ended_at must not (the CHECK).
    district = await build_district(pool, vault, week_of=OFFERED.date())
    records = CallRecords(pool, vault, node="node-a")
    later = OFFERED + timedelta(minutes=30)
    bridged = await records.open("bridged@x", CallerNumber.of(vault, "13900000001"), later)
    await records.answered(bridged, later + timedelta(seconds=2))
    await records.routed(bridged, "day", "test", [{"staff_id": district.doctor_id, "name": "王医生"}])
    seq = await records.dial_started(bridged, district.doctor_id, "sip:1001@127.0.0.1", later + timedelta(seconds=9))
    await records.dial_ended(bridged, seq, "answered", later + timedelta(seconds=12))
    ringing = await records.open("ringing@x", CallerNumber.of(vault, "13900000002"), later)
    await records.dial_started(ringing, district.doctor_id, "sip:1001@127.0.0.1", later + timedelta(seconds=20))

    assert await recovering_flow(pool, vault, records, tmp_path / "rec").recover() == 2  # clock: OFFERED + 5 min

    rows = {r["call_id"]: r for r in await pool.fetch("SELECT * FROM call_records")}
    assert rows["bridged@x"]["ended_at"] == later + timedelta(seconds=12)
    assert rows["ringing@x"]["ended_at"] == later + timedelta(seconds=20)
    assert {(r["disposition"], r["end_reason"], r["recovery_note"]) for r in rows.values()} == {
        ("failed", "recovered", None)}
    attempt = await pool.fetchrow("SELECT * FROM dial_attempts WHERE call_record_id = $1", ringing)
    assert (attempt["outcome"], attempt["ended_at"]) == ("cancelled", later + timedelta(seconds=20))


async def test_a_call_that_cannot_be_recovered_is_closed_flagged_and_the_others_still_are(
        pool: asyncpg.Pool, vault: PiiVault, tmp_path: Path) -> None:
    district = await build_district(pool, vault, week_of=OFFERED.date())
    records = CallRecords(pool, vault, node="node-a")
    # a resident's call whose route names someone the directory no longer has, and no routing
    # data to apply the rule with (the route's first person is the owner then): the callback
    # task cannot be written
    broken = await records.open("broken@x", CallerNumber.of(vault, "13900000001"), OFFERED)
    await records.identified(broken, district.resident_id)
    await records.routed(broken, "day", "test", [{"staff_id": 987654, "name": "gone"}])
    await pool.execute("UPDATE call_records SET dialogs = $2::jsonb WHERE id = $1", broken,
                       '[{"sealed": "bm90IHNlYWxlZCBieSB1cw=="}, "junk"]')
    fine = await records.open("fine@x", CallerNumber.of(vault, "13900000002"), OFFERED)
    await records.routed(fine, "day", "test", [{"staff_id": district.doctor_id, "name": "王医生"}])
    await records.dialog_established(fine, a_dialog("fine@x"))
    await records.dialog_established(fine, a_dialog("fine-doctor@x", "outbound"))

    flow = recovering_flow(pool, vault, records, tmp_path / "rec")
    with structlog.testing.capture_logs() as logs:
        assert await flow.recover() == 2

    rows = {r["call_id"]: r for r in await pool.fetch("SELECT * FROM call_records")}
    assert all(r["ended_at"] is not None and r["disposition"] == "failed" for r in rows.values())
    note = rows["broken@x"]["recovery_note"]
    assert "a stored SIP dialog is unreadable" in note and "recovery failed: " in note
    assert rows["fine@x"]["recovery_note"] is None
    tasks = await pool.fetch("SELECT call_record_id FROM callback_calls")
    assert [t["call_record_id"] for t in tasks] == [fine]
    # the fine call's phones are to be hung up: both its dialogs, as stored
    assert [d.to_json() for d in flow.take_lost_dialogs()] == [a_dialog("fine@x"), a_dialog("fine-doctor@x", "outbound")]
    assert flow.take_lost_dialogs() == []
    assert not any("13900000001" in str(e) or "13900000002" in str(e) for e in logs)
    # stored sealed: neither the caller's number nor the phone's address in clear
    stored = await pool.fetchval("SELECT dialogs::text FROM call_records WHERE id = $1", fine)
    assert "13900000001" not in stored and "5999" not in stored


async def test_recovery_frees_the_staff_the_dead_call_held_and_no_one_else(
        pool: asyncpg.Pool, vault: PiiVault, redis_url: str, tmp_path: Path) -> None:
    district = await build_district(pool, vault, week_of=OFFERED.date())
    records = CallRecords(pool, vault, node="node-a")
    bridged = await records.open("bridged@x", CallerNumber.of(vault, "13900000001"), OFFERED)
    await records.routed(bridged, "day", "test", [{"staff_id": district.doctor_id, "name": "王医生"}])
    await records.dial_started(bridged, district.doctor_id, "sip:1001@127.0.0.1", OFFERED)
    client = presence_client(redis_url)
    try:
        presence = Presence(client)
        await presence.call_started(district.doctor_id, "bridged@x")  # repro 7: on_call for an hour
        other = await pool.fetchval("SELECT id FROM staff WHERE id <> $1 ORDER BY id LIMIT 1", district.doctor_id)
        await presence.call_started(other, "a-live-call@node-b")
        assert (await presence.state(district.doctor_id)).busy

        flow = recovering_flow(pool, vault, records, tmp_path / "rec")
        flow.presence = presence
        assert await flow.recover() == 1

        assert await client.get(presence_key(district.doctor_id)) is None
        assert (await presence.state(district.doctor_id)).ringable
        assert (await presence.state(other)).busy  # another call's state is not ours to clear
    finally:
        await client.aclose()
