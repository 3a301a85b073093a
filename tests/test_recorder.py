"""Stereo recordings on a real filesystem, including a writer killed with SIGKILL."""

from __future__ import annotations

import audioop
import hashlib
import math
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path

import pytest

from recordings.recorder import RecordingError, StereoRecorder, repair

ROOT = Path(__file__).resolve().parent.parent


def ulaw_tone(hz: float, seconds: float) -> bytes:
    n = int(8000 * seconds)
    pcm = struct.pack(f"<{n}h", *(int(12000 * math.sin(2 * math.pi * hz * i / 8000)) for i in range(n)))
    return audioop.lin2ulaw(pcm, 2)


def channel_rms(path: Path) -> tuple[float, float, wave.Wave_read]:
    w = wave.open(str(path), "rb")
    frames = w.readframes(w.getnframes())
    return (audioop.rms(audioop.tomono(frames, 2, 1, 0), 2),
            audioop.rms(audioop.tomono(frames, 2, 0, 1), 2), w)


def test_caller_left_staff_right_with_checksum(tmp_path: Path) -> None:
    recorder = StereoRecorder(tmp_path / "calls" / "c-1.wav")
    caller, staff = ulaw_tone(440, 1.0), ulaw_tone(1000, 1.0)
    for i in range(0, len(caller), 800):  # 100 ms at a time, as a call goes
        recorder.write(caller[i:i + 800], staff[i:i + 800], "PCMU")
        recorder.flush()
    # the caller keeps talking after staff went quiet: the right channel is padded with silence
    recorder.write(ulaw_tone(440, 0.5), b"", "PCMU")
    done = recorder.finalize()

    left, right, w = channel_rms(done.path)
    assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
    assert w.getnframes() == 12000 and done.seconds == pytest.approx(1.5)
    assert left > 5000 and right > 3000
    assert done.sha256 == hashlib.sha256(done.path.read_bytes()).hexdigest()
    # a recording is never overwritten
    with pytest.raises(RecordingError, match="cannot create recording"):
        StereoRecorder(done.path)


def test_a_writer_killed_mid_call_leaves_a_repairable_recording(tmp_path: Path) -> None:
    path = tmp_path / "crash.wav"
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from recordings.recorder import StereoRecorder
        r = StereoRecorder(__import__("pathlib").Path({str(path)!r}))
        frame = bytes([0x10]) * 800
        for i in range(1000):
            r.write(frame, frame, "PCMU")
            if i % 5 == 4:
                r.flush()
            if i == 24:
                print("flushed", flush=True)   # 2.5 s written, flushed
            time.sleep(0.01)
        """)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "flushed"
    time.sleep(0.05)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(10)

    size = path.stat().st_size
    fixed = repair(path)
    assert fixed.seconds >= 2.5  # everything flushed before the kill is there
    assert fixed.seconds == pytest.approx((min(size, path.stat().st_size) - 44) / 32000)
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == round(fixed.seconds * 8000)
    assert repair(path) == fixed  # idempotent, same checksum


def test_repair_refuses_what_is_not_a_recording(tmp_path: Path) -> None:
    other = tmp_path / "notes.wav"
    other.write_bytes(b"hello")
    with pytest.raises(RecordingError, match="is not a recording this service wrote"):
        repair(other)
    with pytest.raises(RecordingError, match="cannot repair recording"):
        repair(tmp_path / "missing.wav")
    with pytest.raises(RecordingError, match="cannot record codec G729"):
        StereoRecorder(tmp_path / "x.wav").write(b"", b"", "G729")
